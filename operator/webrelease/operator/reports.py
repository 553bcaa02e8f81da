"""What the operator reads and writes in object storage: the customer list, snapshots, the shards'
results and the run's report index (``index.json``).

Credentials: ``spec.storage.secretRef`` names a Secret in the release's namespace (keys
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, optional ``AWS_SESSION_TOKEN``), read through the
API; without it the operator's own identity is used (environment, web identity, instance role),
as the shard pods use theirs. Calls are synchronous; handlers run them in a thread.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from webrelease.copier.customers import load_customers, site_guard_for, source_for
from webrelease.copier.reportpage import render_page
from webrelease.copier.results import CustomerResult, decode_results
from webrelease.copier.runlayout import PAGE_NAME, run_folder
from webrelease.copier.runreport import (
    FAILED_MAX,
    Customers,
    FailedEntry,
    Objects,
    RunReport,
    ShardEntry,
    Shards,
    Snapshot,
    StepEntry,
)
from webrelease.copier.snapshot import (
    INDEX_NAME,
    SNAPSHOT_NAME,
    SnapshotRef,
    read_snapshot,
    shard_results_key,
    write_snapshot,
)
from webrelease.copier.snapshot.freeze import fields_required_by, freeze_snapshot
from webrelease.copier.snapshot.slices import index_key
from webrelease.copier.sources import ConfigMapReader, SecretReader
from webrelease.copier.spec import WebReleaseSpec
from webrelease.copier.storage import Credentials, Location, NotFound, parse_url
from webrelease.copier.storage.storeset import StoreSet
from webrelease.operator.aggregate import StepFold
from webrelease.operator.constants import STORAGE_SECRET_KEYS
from webrelease.operator.status import RunStatus, SnapshotStatus, WebReleaseStatus

Record = dict[str, Any]
_KEY_ID, _KEY_SECRET, _KEY_TOKEN = STORAGE_SECRET_KEYS
#: Requests in flight when reading many shard results at once.
READ_PARALLELISM: Final = 16


class CredentialsError(ValueError):
    """``spec.storage.secretRef`` names a Secret that is missing or lacks a key."""


def credentials_from_secret(name: str, values: Mapping[str, str] | None) -> Credentials:
    """Credentials from the Secret's decoded values (None: no such Secret). Names keys, never values."""
    if values is None:
        raise CredentialsError(f"spec.storage.secretRef: Secret {name!r} not found")
    missing = [k for k in (_KEY_ID, _KEY_SECRET) if not values.get(k)]
    if missing:
        raise CredentialsError(f"spec.storage.secretRef: Secret {name!r} has no {' or '.join(missing)}")
    return Credentials(
        access_key_id=values[_KEY_ID],
        secret_access_key=values[_KEY_SECRET],
        session_token=values.get(_KEY_TOKEN) or None,
    )


def _ref(ref: SnapshotRef) -> SnapshotStatus:
    return SnapshotStatus(url=ref.url, sha256=ref.sha256, count=ref.count)


def run_location(spec: WebReleaseSpec, namespace: str, name: str, run: str) -> Location:
    """The run's report folder (:func:`webrelease.copier.runlayout.run_folder`)."""
    return run_folder(parse_url(spec.reports.url), namespace, name, run)


@dataclass
class ReleaseStorage:
    """Object storage as one release sees it."""

    spec: WebReleaseSpec
    stores: StoreSet

    @classmethod
    def open(cls, spec: WebReleaseSpec, credentials: Credentials | None) -> ReleaseStorage:
        return cls(spec, StoreSet(spec.storage, max_in_flight=READ_PARALLELISM, credentials=credentials))

    def load_customers(self, *, secrets: SecretReader, config_maps: ConfigMapReader) -> list[Record]:
        """The validated, sorted list (CustomerListError naming lines; StorageError if unreadable)."""
        source = source_for(self.spec.customers, self.stores, secrets=secrets, config_maps=config_maps)
        return load_customers(source, guard=site_guard_for(self.spec))

    def freeze_customers(
        self, folder: Location, *, secrets: SecretReader, config_maps: ConfigMapReader
    ) -> SnapshotStatus:
        """Read the customer source once, validate every record, sort, and write
        ``<folder>/customers.jsonl`` (and its slice index) in bounded memory. CustomerListError
        naming the lines, before anything is written, when the list is bad."""
        source = source_for(self.spec.customers, self.stores, secrets=secrets, config_maps=config_maps)
        overrides = self.spec.overrides.url if self.spec.overrides is not None else None
        return _ref(
            freeze_snapshot(
                source,
                self.stores(folder),
                folder,
                guard=site_guard_for(self.spec),
                required_fields=fields_required_by(self.spec.target.url, overrides),
            )
        )

    def write_snapshot(self, folder: Location, records: Sequence[Record]) -> SnapshotStatus:
        """``<folder>/customers.jsonl``: canonical bytes, so the same list gives the same sha256."""
        return _ref(write_snapshot(self.stores(folder), folder, records))

    def remove_snapshot(self, folder: Location) -> None:
        """Delete ``<folder>/customers.jsonl`` and its slice index (a run that could not start
        leaves nothing behind)."""
        self.stores(folder).delete(folder, [SNAPSHOT_NAME, index_key(SNAPSHOT_NAME)])

    def read_snapshot(self, ref: SnapshotStatus) -> list[Record]:
        return read_snapshot(self.stores(parse_url(ref.url.rsplit("/", 1)[0] + "/")), ref.url, ref.sha256)

    def shard_results(self, folder: Location, index: int) -> list[CustomerResult] | None:
        """One shard's per-customer results, or None if it wrote none (it never got that far)."""
        try:
            data = self.stores(folder).get(folder, shard_results_key(index))
        except NotFound:
            return None
        return decode_results(data)

    def step_results(
        self, folder: Location, indexes: Sequence[int]
    ) -> dict[int, list[CustomerResult] | None]:
        with ThreadPoolExecutor(max_workers=READ_PARALLELISM, thread_name_prefix="results") as pool:
            return dict(zip(indexes, pool.map(lambda i: self.shard_results(folder, i), indexes), strict=True))

    def succeeded_ids(self, folder: Location, shards: int) -> frozenset[str]:
        """Every customer of the step whose latest result is ``ok``."""
        ok: set[str] = set()
        for results in self.step_results(folder, range(shards)).values():
            ok.update(r.id for r in results or () if r.ok)
        return frozenset(ok)

    def write_plan(self, folder: Location, name: str, body: bytes) -> str:
        self.stores(folder).put(folder, name, body, content_type="application/x-ndjson")
        return folder.url + name

    def read_index(self, run: Location) -> RunReport | None:
        try:
            return RunReport.from_bytes(self.stores(run).get(run, INDEX_NAME))
        except NotFound:
            return None
        except ValueError:
            return None  # not ours, or torn: it is rewritten whole below

    def write_index(self, run: Location, doc: RunReport) -> str:
        """Write ``index.json`` and the page made from it, ``report.html``; the index's URL."""
        store = self.stores(run)
        store.put(run, INDEX_NAME, doc.to_bytes(), content_type="application/json")
        store.put(run, PAGE_NAME, render_page(doc), content_type="text/html; charset=utf-8")
        return run.url + INDEX_NAME


def page_url(index_url: str) -> str:
    """The report page next to an ``index.json``."""
    return index_url.rsplit("/", 1)[0] + "/" + PAGE_NAME


# ----------------------------------------------------------------------------------- the index


def step_entry(run: RunStatus, fold: StepFold, folder: Location) -> StepEntry:
    """One step of the run in ``index.json``: its Job, its customers and every shard's result file."""
    shards = [
        ShardEntry(
            index=v.index,
            state=v.state.value,
            customers=v.customers,
            succeeded=v.succeeded,
            failed=v.failed,
            attempts=v.attempts,
            seconds=v.duration_seconds,
            error=v.error or None,
            objects=Objects.model_validate(v.summary.objects.model_dump()) if v.summary is not None else None,
            results=folder.url + shard_results_key(v.index),
        )
        for v in fold.views
    ]
    return StepEntry(
        step=run.step.value,
        step_id=run.step_id,
        job=run.job,
        folder=folder.url,
        snapshot=Snapshot.model_validate(run.snapshot.model_dump()),
        customers=run.snapshot.count,
        succeeded=fold.step_succeeded,
        failed=fold.step_failed,
        shards=shards,
    )


def failed_customers(
    storage: ReleaseStorage,
    folder: Location,
    fold: StepFold,
    size: int,
    step_records: Sequence[Record] | None,
) -> list[FailedEntry]:
    """Every customer of the step that did not succeed, with its reason (from the shards' files;
    a shard that wrote none contributes its whole slice, with the shard's error as the reason)."""
    failed_views = [v for v in fold.views if v.failed]
    results = storage.step_results(folder, [v.index for v in failed_views])
    out: list[FailedEntry] = []
    for v in failed_views:
        rows = results.get(v.index)
        if rows is not None:
            out.extend(FailedEntry(id=r.id, reason=r.reason or "", shard=v.index) for r in rows if not r.ok)
        elif step_records is not None:
            start = v.index * size
            reason = v.error or "the shard wrote no results"
            out.extend(
                FailedEntry(id=str(r["id"]), reason=reason, shard=v.index)
                for r in step_records[start : start + v.customers]
            )
        if len(out) >= FAILED_MAX:
            break
    return out[:FAILED_MAX]


def index_document(  # noqa: PLR0913 (keyword-only parts of one document)
    previous: RunReport | None,
    *,
    namespace: str,
    name: str,
    generation: int,
    run_id: str,
    spec: WebReleaseSpec,
    status: WebReleaseStatus,
    step: StepEntry,
    failed: Sequence[FailedEntry],
    outcome: str | None,
    reason: str,
    message: str,
    now: datetime | None = None,
) -> RunReport:
    """The run's ``index.json``: the steps so far (``step`` replaces an earlier entry of the same id),
    the totals, and every failed customer of the latest step. ``outcome`` None: the run goes on."""
    steps = previous.with_step(step) if previous is not None else [step]
    stamp = (now or datetime.now(UTC)).isoformat(timespec="seconds").replace("+00:00", "Z")
    return RunReport(
        launcher="cluster",
        namespace=namespace,
        release=name,
        generation=generation,
        run_id=run_id,
        source=spec.source.url,
        target=spec.target.url,
        dry_run=spec.dry_run,
        started_at=status.start_time,
        updated_at=stamp,
        finished_at=status.completion_time if outcome is not None else None,
        outcome=outcome,
        reason=reason,
        message=message,
        snapshot=Snapshot.model_validate(status.snapshot.model_dump())
        if status.snapshot is not None
        else None,
        customers=Customers.model_validate(status.customers.model_dump()),
        shards=Shards.model_validate(status.shards.model_dump()),
        objects=Objects.model_validate(status.objects.model_dump()),
        steps=steps,
        failed=list(failed),
        failed_total=step.failed,
    )
