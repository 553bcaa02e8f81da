"""``webrelease run``: a whole run on this machine, the way the operator runs it in a cluster.

1. check what every shard would find wrong alike (:func:`webrelease.copier.desired.check_build`:
   the build, the patterns, the buckets; exit 2, nothing written);
2. freeze the customer list into ``<reports>/<namespace>/<release>/<run-id>/customers.jsonl`` in
   bounded memory, as the operator does (:func:`webrelease.copier.snapshot.freeze.freeze_snapshot`;
   a bad list stops here: exit 2, nothing written);
3. cut it into shards as the operator does (:func:`webrelease.copier.runlayout.shard_layout`) and
   run every shard of the ``main`` step as a local worker process (``--workers`` at a time), each
   exactly what a Job pod runs (:func:`webrelease.copier.shard.run_shard`), with a progress bar;
4. write ``index.json`` and print where the sites and the report are.

The folders are those of a cluster run (:mod:`webrelease.copier.runlayout`); only the run id and
who launches the shards differ.

The exit code is the most severe of the shards' (:func:`webrelease.copier.exitcodes.combine`).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import queue as queue_mod
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from webrelease.copier.customers import (
    CustomerListError,
    Record,
    load_customers,
    site_guard_for,
    source_for,
)
from webrelease.copier.desired import BuildError, check_build
from webrelease.copier.exitcodes import EXIT_BAD_INPUT, EXIT_CRASH, EXIT_OK, combine
from webrelease.copier.progress import Progress
from webrelease.copier.reportpage import render_page
from webrelease.copier.results import ShardSummary, decode_results, fold
from webrelease.copier.runlayout import (
    LOCAL_NAMESPACE,
    MAIN_STEP,
    PAGE_NAME,
    ShardLayout,
    local_run_id,
    run_folder,
    shard_layout,
    step_folder_name,
)
from webrelease.copier.runreport import (
    FAILED_MAX,
    Customers,
    FailedEntry,
    RunReport,
    Snapshot,
    StepEntry,
    count_shards,
    local_outcome,
    shard_entry,
    sum_objects,
)
from webrelease.copier.shard import ShardJob, run_shard, store_set_for
from webrelease.copier.snapshot import INDEX_NAME, SnapshotError, SnapshotRef, read_slice, shard_results_key
from webrelease.copier.snapshot.freeze import freeze_snapshot
from webrelease.copier.spec import WebReleaseSpec
from webrelease.copier.storage import AccessDenied, Location, NotFound, StorageError, parse_url
from webrelease.copier.storage.storeset import StoreSet

log = logging.getLogger(__name__)

Echo = Callable[[str], None]


@dataclass
class LocalRunResult:
    exit_code: int
    #: the run's folder (``index.json``, ``customers.jsonl``)
    report: Location | None = None
    #: the folder of its one step (``shards/``)
    step: Location | None = None
    snapshot: SnapshotRef | None = None
    layout: ShardLayout | None = None
    summaries: list[ShardSummary] = field(default_factory=list)
    error: str | None = None
    namespace: str = LOCAL_NAMESPACE
    release: str = ""
    run_id: str = ""
    started: datetime | None = None
    #: the report document written as ``index.json``
    document: RunReport | None = None

    @property
    def totals(self) -> dict[str, Any]:
        return fold(self.summaries)


def load_run_customers(spec: WebReleaseSpec, stores: StoreSet) -> list[Record]:
    """The validated, sorted customer list of ``spec`` (CustomerListError when it is bad)."""
    return load_customers(source_for(spec.customers, stores), guard=site_guard_for(spec))


# -- worker processes -------------------------------------------------------------------------

_progress_queue: Any = None


def _init_worker(progress_queue: Any) -> None:
    global _progress_queue  # noqa: PLW0603 - one per worker process, set once at its start
    _progress_queue = progress_queue


def _shard_in_worker(job: ShardJob) -> bytes:
    stores = store_set_for(job.spec)
    q = _progress_queue

    def on_customer(result: Any) -> None:
        if q is not None:
            q.put(bool(result.ok))

    return run_shard(job, stores, on_customer=on_customer).summary().to_bytes()


def _crash_summary(index: int, exc: BaseException) -> ShardSummary:
    return ShardSummary(index=index, exitCode=EXIT_CRASH, error=f"{type(exc).__name__}: {exc}"[:1000])


def _run_in_processes(jobs: Sequence[ShardJob], workers: int, bar: Progress) -> list[ShardSummary]:
    ctx = multiprocessing.get_context("spawn")
    progress_queue = ctx.Queue()
    summaries: dict[int, ShardSummary] = {}

    def drain(block: bool) -> None:
        while True:
            try:
                ok = progress_queue.get(timeout=0.1) if block else progress_queue.get_nowait()
            except queue_mod.Empty:
                return
            bar.advance(ok)
            block = False

    with ProcessPoolExecutor(
        max_workers=workers, mp_context=ctx, initializer=_init_worker, initargs=(progress_queue,)
    ) as pool:
        futures: dict[Future[bytes], int] = {pool.submit(_shard_in_worker, job): job.index for job in jobs}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            for f in done:
                index = futures[f]
                try:
                    summaries[index] = ShardSummary.model_validate_json(f.result())
                except Exception as exc:  # a worker that died: that shard crashed, the others go on
                    summaries[index] = _crash_summary(index, exc)
            drain(block=not done)
    deadline = time.monotonic() + 2
    while bar.done < sum(s.customers for s in summaries.values()) and time.monotonic() < deadline:
        drain(block=True)
    return [summaries[j.index] for j in jobs]


def _run_in_process(jobs: Sequence[ShardJob], stores: StoreSet, bar: Progress) -> list[ShardSummary]:
    out = []
    for job in jobs:
        try:
            out.append(run_shard(job, stores, on_customer=lambda r: bar.advance(r.ok)).summary())
        except Exception as exc:
            log.exception("shard %d crashed", job.index)
            out.append(_crash_summary(job.index, exc))
    return out


# -- the run ----------------------------------------------------------------------------------


def default_workers(spec: WebReleaseSpec, shards: int) -> int:
    return max(1, min(spec.sharding.parallelism, os.cpu_count() or 1, shards))


def freeze_run_customers(spec: WebReleaseSpec, stores: StoreSet, folder: Location) -> SnapshotRef:
    """Validate the list and write ``<folder>/customers.jsonl`` (and its slice index) in bounded
    memory, through the operator's path. One difference is kept on purpose: a record that lacks a
    field the target uses fails that customer alone here (as ``plan`` and ``verify`` report it),
    where the operator refuses the whole list before any Job exists."""
    return freeze_snapshot(
        source_for(spec.customers, stores), stores(folder), folder, guard=site_guard_for(spec)
    )


def run_local(
    spec: WebReleaseSpec,
    release_name: str,
    *,
    namespace: str = LOCAL_NAMESPACE,
    workers: int | None = None,
    progress: bool | None = None,
    stores: StoreSet | None = None,
    run_id: str | None = None,
    echo: Echo = print,
) -> LocalRunResult:
    """A whole run. With ``stores`` the shards run one after another in this process with those
    stores (tests use it to watch every request); otherwise each shard is a worker process."""
    in_process = stores is not None
    stores = stores or store_set_for(spec)
    try:  # what would fail every shard alike fails the run once, before anything is written
        check_build(spec, stores)
    except BuildError as exc:
        return LocalRunResult(EXIT_BAD_INPUT, error=str(exc))
    started = datetime.now(UTC)
    run_id = run_id or local_run_id(started)
    report = run_folder(parse_url(spec.reports.url), namespace, release_name, run_id)
    try:
        snapshot = freeze_run_customers(spec, stores, report)
    except CustomerListError as exc:
        return LocalRunResult(EXIT_BAD_INPUT, error=str(exc))
    except NotFound as exc:
        return LocalRunResult(EXIT_BAD_INPUT, error=f"customer list: {exc}")
    except StorageError as exc:
        if isinstance(exc, AccessDenied):  # credentials refused (it names the object): bad input
            return LocalRunResult(EXIT_BAD_INPUT, error=str(exc))
        return LocalRunResult(EXIT_CRASH, error=f"freezing the customer list into {report.url}: {exc}")
    except ValueError as exc:
        return LocalRunResult(EXIT_BAD_INPUT, error=f"customer list: {exc}")
    layout = shard_layout(snapshot.count, spec.sharding.customers_per_shard, spec.sharding.parallelism)
    step = report.child(step_folder_name(MAIN_STEP))
    n = layout.shards
    jobs = [
        ShardJob(spec, release_name, snapshot.url, snapshot.sha256, i, layout.size, step) for i in range(n)
    ]
    workers = workers or default_workers(spec, n)
    note = f" ({layout.note})" if layout.note else ""
    echo(f"run {run_id}: {snapshot.count} customer(s) in {n} shard(s), {workers} worker(s){note}")
    with Progress(snapshot.count, enabled=progress, desc="customers") as bar:
        if in_process:
            summaries = _run_in_process(jobs, stores, bar)
        else:
            summaries = _run_in_processes(jobs, min(workers, n), bar)
    outcome = LocalRunResult(
        combine(s.exit_code for s in summaries),
        report,
        step,
        snapshot,
        layout,
        summaries,
        namespace=namespace,
        release=release_name,
        run_id=run_id,
        started=started,
    )
    try:
        outcome.document = write_index(stores, outcome, spec)
    except (StorageError, SnapshotError) as exc:
        # every shard's results are written; only the index is missing: say which write failed
        return LocalRunResult(EXIT_CRASH, error=f"writing {report.url}{INDEX_NAME}: {exc}")
    return outcome


def failed_customers(stores: StoreSet, outcome: LocalRunResult) -> tuple[list[FailedEntry], int]:
    """Every customer that did not succeed, with its reason, from the shards' files (at most
    :data:`FAILED_MAX`), and how many there were. A shard that wrote no results contributes its
    whole slice of the snapshot, with the shard's error as the reason."""
    assert outcome.step is not None and outcome.snapshot is not None and outcome.layout is not None
    out: list[FailedEntry] = []
    total = 0
    step = outcome.step
    for s in outcome.summaries:
        expected = outcome.layout.customers_in(s.index)
        if s.exit_code == EXIT_OK:
            continue
        rows: list[FailedEntry] | None = None
        with contextlib.suppress(NotFound):
            results = decode_results(stores(step).get(step, shard_results_key(s.index)))
            if len(results) == expected:
                rows = [
                    FailedEntry(id=r.id, reason=r.reason or "", shard=s.index) for r in results if not r.ok
                ]
        if rows is None:
            snapshot = outcome.snapshot
            records = read_slice(stores(step), snapshot.url, snapshot.sha256, s.index, outcome.layout.size)
            why = s.error or "the shard wrote no results"
            rows = [FailedEntry(id=str(r["id"]), reason=why, shard=s.index) for r in records]
        total += len(rows)
        out.extend(rows[: max(0, FAILED_MAX - len(out))])
    return out, total


def run_report(
    outcome: LocalRunResult, spec: WebReleaseSpec, failed: Sequence[FailedEntry], total: int
) -> RunReport:
    """The run's ``index.json`` (:mod:`webrelease.copier.runreport`: the operator's schema)."""
    assert outcome.step is not None and outcome.snapshot is not None and outcome.layout is not None
    step = outcome.step
    shards = [
        shard_entry(s, step.url + shard_results_key(s.index), outcome.layout.customers_in(s.index))
        for s in outcome.summaries
    ]
    snapshot = Snapshot.model_validate(outcome.snapshot.to_json())
    succeeded = sum(e.succeeded for e in shards)
    customers = Customers(total=snapshot.count, succeeded=succeeded, failed=snapshot.count - succeeded)
    errors = [f"shard {s.index}: {s.error}" for s in outcome.summaries if s.error]
    result, reason, message = local_outcome(outcome.exit_code, customers, spec.failure_policy, errors)
    now = _stamp(datetime.now(UTC))
    return RunReport(
        launcher="local",
        namespace=outcome.namespace,
        release=outcome.release,
        run_id=outcome.run_id,
        source=spec.source.url,
        target=spec.target.url,
        dry_run=spec.dry_run,
        started_at=_stamp(outcome.started) if outcome.started is not None else None,
        updated_at=now,
        finished_at=now,
        outcome=result,
        reason=reason,
        message=message,
        exit_code=outcome.exit_code,
        snapshot=snapshot,
        customers=customers,
        shards=count_shards(shards),
        objects=sum_objects(e.objects for e in shards),
        steps=[
            StepEntry(
                step=MAIN_STEP,
                step_id=MAIN_STEP,
                folder=step.url,
                snapshot=snapshot,
                customers=customers.total,
                succeeded=customers.succeeded,
                failed=customers.failed,
                shards=shards,
            )
        ],
        failed=list(failed),
        failed_total=total,
    )


def _stamp(when: datetime) -> str:
    return when.isoformat(timespec="seconds").replace("+00:00", "Z")


def write_index(stores: StoreSet, outcome: LocalRunResult, spec: WebReleaseSpec) -> RunReport:
    """Write the run's ``index.json`` and ``report.html``; the document written."""
    assert outcome.report is not None
    failed, total = failed_customers(stores, outcome)
    doc = run_report(outcome, spec, failed, total)
    store = stores(outcome.report)
    store.put(outcome.report, INDEX_NAME, doc.to_bytes(), content_type="application/json")
    store.put(outcome.report, PAGE_NAME, render_page(doc), content_type="text/html; charset=utf-8")
    return doc


def describe(outcome: LocalRunResult, spec: WebReleaseSpec, *, failed_max: int = 20) -> list[str]:
    """Lines telling a human how the run went and where everything is."""
    if outcome.report is None:
        return [f"error: {outcome.error}"]
    t = outcome.totals
    o = t["objects"]
    lines = [
        f"customers: {t['customers']} total, {t['succeeded']} succeeded, {t['failed']} failed",
        f"objects:   {o['copied']} copied, {o['rendered']} rendered, {o['unchanged']} unchanged, "
        f"{o['deleted']} deleted, {o['bytes']} bytes written",
        f"sites:     {spec.target.url}",
        f"report:    {outcome.report.url}  ({INDEX_NAME}, customers.jsonl, {MAIN_STEP}/shards/<index>.jsonl)",
        f"page:      {outcome.report.url}{PAGE_NAME}",
    ]
    shown = 0
    for s in outcome.summaries:
        if s.error:
            lines.append(f"shard {s.index}: exit {s.exit_code}: {s.error}")
        for f in s.failed_sample:
            if shown < failed_max:
                lines.append(f"failed {f.id}: {f.reason}")
            shown += 1
    if t["failed"] > shown:
        more = t["failed"] - shown
        lines.append(f"... {more} more failed customer(s): see {MAIN_STEP}/shards/<index>.jsonl")
    if outcome.exit_code == EXIT_OK:
        lines.append("ok: every customer got the release")
    return lines
