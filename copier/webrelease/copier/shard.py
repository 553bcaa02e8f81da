"""One shard: release a contiguous slice of the frozen customer list (docs/design.md "The run flow", step 5).

:func:`run_shard` reads the snapshot and takes its slice, prepares the build once (one listing,
templates compiled once), then releases several customers at a time. For each customer:

1. check its id, render its site and overrides locations (the fixed-prefix rule), list its
   overrides once, render every template for it, list its site once — all before the first write,
   so that a customer failing here has nothing written;
2. plan (:mod:`webrelease.copier.plan`): unchanged files cost nothing; keys the listing cannot
   decide (multipart ETags) are HEADed;
3. write every non-entrypoint file (server-side ``CopyObject`` when build and site are on the same
   store, GET + PUT otherwise; rendered files are PUT), then the entrypoints, then — with
   ``prune`` — delete what the release no longer has. A failed write stops that customer (its
   entrypoints are not written and nothing is pruned).

Every object request of the shard goes through one thread pool of ``worker.objectsInFlight``
threads shared by all customers, so that many requests are in flight but never more than that.
A customer fails alone; its reason is recorded. The results go to ``<report>/shards/<index>.jsonl``
and the compact summary to ``<report>/shards/<index>.summary.json``.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Executor, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from webrelease.copier.customers import Record
from webrelease.copier.desired import (
    Build,
    BuildError,
    CustomerError,
    CustomerWork,
    prepare_build,
    prepare_customer,
)
from webrelease.copier.exitcodes import EXIT_BAD_INPUT
from webrelease.copier.plan import (
    META_MD5,
    META_RELEASE,
    META_SHA256,
    Action,
    CustomerPlan,
    Op,
    Want,
    plan_customer,
    undecided,
)
from webrelease.copier.results import CustomerResult, ShardResult, encode_results
from webrelease.copier.siterecord import SiteRecord, read_record, write_record, written_files
from webrelease.copier.snapshot import SnapshotError, read_slice, shard_results_key, shard_summary_key
from webrelease.copier.spec import WebReleaseSpec
from webrelease.copier.storage import (
    DELETE_BATCH,
    AccessDenied,
    Location,
    ObjectInfo,
    StorageError,
    guess_content_type,
    object_url,
)
from webrelease.copier.storage.storeset import StoreSet

log = logging.getLogger(__name__)

#: A reason in the report is cut to this many characters.
REASON_MAX = 1000


@dataclass(frozen=True)
class ShardJob:
    """Everything a shard needs to know (the CLI builds it from flags and environment)."""

    spec: WebReleaseSpec
    release_name: str
    snapshot_url: str
    snapshot_sha256: str | None
    index: int
    shard_size: int
    #: the run's report folder (``shards/<index>.jsonl`` goes below it)
    report: Location


def customers_in_flight(objects_in_flight: int) -> int:
    """How many customers a shard works on at once: enough to keep the object pool busy while
    some customers wait at their entrypoint barrier or list their site."""
    return max(2, min(32, objects_in_flight // 8))


CustomerCallback = Callable[[CustomerResult], None]


@dataclass
class _Tally:
    """Tally of one customer, updated from pool threads."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    result: CustomerResult = field(default_factory=lambda: CustomerResult("", True))

    def done(self, action: Action) -> None:
        with self.lock:
            c = self.result.counts
            if action.op in (Op.COPY, Op.OVERRIDE):
                c.copied += 1
            elif action.op is Op.RENDER:
                c.rendered += 1
            c.bytes += action.size

    def deleted(self, n: int) -> None:
        with self.lock:
            self.result.counts.deleted += n


class Releaser:
    """Releases customers of one run; shared by every customer thread of a shard."""

    def __init__(
        self, spec: WebReleaseSpec, release_name: str, stores: StoreSet, build: Build, pool: Executor
    ) -> None:
        self.spec = spec
        self.release_name = release_name
        self.stores = stores
        self.build = build
        self.pool = pool

    # -- one object ------------------------------------------------------------------------

    def _metadata(self, want: Want, sha256: str | None = None) -> dict[str, str]:
        meta = {META_RELEASE: self.release_name}
        if want.md5 is not None:
            meta[META_MD5] = want.md5
        if sha256 or want.sha256:
            meta[META_SHA256] = str(sha256 or want.sha256)
        return meta

    def _write(self, work: CustomerWork, action: Action) -> None:
        want = action.want
        assert want is not None
        site_store = self.stores(work.site)
        if action.op is Op.RENDER:
            assert want.body is not None
            site_store.put(
                work.site,
                action.key,
                want.body,
                content_type=want.content_type,
                metadata=self._metadata(want),
            )
            return
        src = self.build.location if action.op is Op.COPY else work.overrides
        assert src is not None
        ctype = guess_content_type(action.key)
        if StoreSet.same_store(src, work.site):
            site_store.copy(
                src,
                action.key,
                work.site,
                action.key,
                size=want.size,
                content_type=ctype,
                metadata=self._metadata(want),
            )
            return
        body = self.stores(src).get(src, action.key)
        if want.md5 is not None and hashlib.md5(body, usedforsecurity=False).hexdigest() != want.md5:
            raise StorageError(f"{src.url}{action.key} changed while the release was running")
        sha = hashlib.sha256(body).hexdigest()
        site_store.put(work.site, action.key, body, content_type=ctype, metadata=self._metadata(want, sha))

    def _run_all(self, work: CustomerWork, actions: Sequence[Action], tally: _Tally) -> None:
        """Run ``actions`` concurrently on the pool; on the first failure cancel what has not started,
        wait for what has, and raise CustomerError naming the object."""
        if not actions:
            return

        def one(action: Action) -> None:
            try:
                self._write(work, action)
            except Exception as exc:
                raise CustomerError(f"{action.op.value} {action.key}: {exc}") from exc
            tally.done(action)

        futures: list[Future[None]] = [self.pool.submit(one, a) for a in actions]
        done, pending = wait(futures, return_when=FIRST_EXCEPTION)
        failed = [f for f in done if f.exception() is not None]
        if failed:
            for f in pending:
                f.cancel()
            wait(pending)
            exc = failed[0].exception()
            assert exc is not None
            raise exc

    def _delete(self, work: CustomerWork, actions: Sequence[Action], tally: _Tally) -> None:
        keys = [a.key for a in actions]
        store = self.stores(work.site)

        def batch(chunk: list[str]) -> None:
            try:
                store.delete(work.site, chunk)
            except Exception as exc:
                raise CustomerError(f"delete: {exc}") from exc

        futures = [
            self.pool.submit(batch, keys[i : i + DELETE_BATCH]) for i in range(0, len(keys), DELETE_BATCH)
        ]
        for f in futures:
            f.result()
        # Count only what is gone: S3 answers "deleted" for a key it does not have, and a key it
        # lists differently from how it parses it back (a carriage return, say) is never deleted.
        # One more listing of the site, only for a customer that deleted something.
        try:
            left = {i.key for i in store.list(work.site)} & set(keys)
        except StorageError as exc:
            raise CustomerError(f"delete: checking the site afterwards: {exc}") from exc
        tally.deleted(len(keys) - len(left))
        if left:
            sample = ", ".join(repr(k) for k in sorted(left)[:5])
            raise CustomerError(
                f"delete: {len(left)} object(s) still there after the server confirmed deleting them: "
                f"{sample}; the server does not take their keys back as it lists them: delete them "
                "with another tool"
            )

    # -- one customer ----------------------------------------------------------------------

    def read_record(self, work: CustomerWork) -> SiteRecord:
        return read_record(self.stores, self.spec.reports.url, work.site)

    def plan(self, work: CustomerWork, record: SiteRecord | None = None) -> CustomerPlan:
        """The customer's plan; keys the listing cannot decide, and those whose type the site
        record does not vouch for, are HEADed (concurrently)."""
        if record is None:
            record = self.read_record(work)
        keys = undecided(work.desired, work.site_listing, record=record.files)
        store = self.stores(work.site)
        heads: dict[str, ObjectInfo] = dict(
            zip(keys, self.pool.map(lambda k: store.head(work.site, k), keys), strict=True)
        )
        return plan_customer(
            work.desired,
            work.site_listing,
            is_entrypoint=self.build.is_entrypoint,
            prune=self.spec.prune,
            heads=heads,
        )

    def _forget_writes(self, record: SiteRecord, plan: CustomerPlan) -> bool:
        """Before writing, drop from the site record every key about to be written: a write that
        fails half-way (or a customer failing later) must not leave the record vouching for a
        type the object may no longer have."""
        written = {a.key for a in (*plan.writes, *plan.entrypoints)} & set(record.files)
        if not written:
            return False
        try:
            write_record(self.stores, record, {k: v for k, v in record.files.items() if k not in written})
        except StorageError as exc:
            raise CustomerError(f"site record {record.folder.url}{record.key}: {exc}") from exc
        return True

    def _keep_record(self, record: SiteRecord, work: CustomerWork, *, changed: bool) -> None:
        """After every write succeeded the site holds the desired files: record them (one PUT,
        only when the record changes). A failure here leaves the site right; the next run HEADs."""
        files = written_files(work.desired)
        if record.files == files and record.exists and not changed:
            return
        try:
            write_record(self.stores, record, files)
        except StorageError as exc:
            where = record.folder.url + record.key
            log.warning("site record %s not written (the next run HEADs): %s", where, exc)

    def prepare(self, record: Record) -> CustomerWork:
        return prepare_customer(self.spec, self.build, record, self.stores, self.pool)

    def release(self, record: Record) -> CustomerResult:
        """Release one customer; never raises (a failure is the result)."""
        start = time.monotonic()
        tally = _Tally()
        result = tally.result
        result.id = str(record.get("id"))
        try:
            work = self.prepare(record)
            result.site = work.site.url
            kept = self.read_record(work)
            plan = self.plan(work, kept)
            result.counts.unchanged = len(plan.unchanged)
            forgot = self._forget_writes(kept, plan)
            self._run_all(work, plan.writes, tally)
            self._run_all(work, plan.entrypoints, tally)
            if plan.deletes:
                self._delete(work, plan.deletes, tally)
            self._keep_record(kept, work, changed=forgot)
        except (CustomerError, StorageError, ValueError) as exc:
            result.ok = False
            result.reason = _reason(exc)
        except Exception as exc:  # a bug must not take the other customers down; it is logged in full
            log.exception("customer %s: unexpected error", result.id)
            result.ok = False
            result.reason = _reason(exc, unexpected=True)
        result.seconds = time.monotonic() - start
        return result


def _reason(exc: BaseException, *, unexpected: bool = False) -> str:
    text = str(exc) or type(exc).__name__
    if unexpected:
        text = f"unexpected error: {type(exc).__name__}: {text}"
    return text if len(text) <= REASON_MAX else text[: REASON_MAX - 1] + "…"


def release_customers(
    releaser: Releaser, customers: Sequence[Record], *, on_customer: CustomerCallback | None = None
) -> list[CustomerResult]:
    """Release ``customers`` several at a time; results in the order of ``customers``."""
    workers = customers_in_flight(releaser.spec.worker.objects_in_flight)

    def one(record: Record) -> CustomerResult:
        r = releaser.release(record)
        if on_customer is not None:
            on_customer(r)
        return r

    with ThreadPoolExecutor(
        max_workers=min(workers, max(1, len(customers))), thread_name_prefix="customer"
    ) as cp:
        return list(cp.map(one, customers))


def store_set_for(spec: WebReleaseSpec, **kwargs: object) -> StoreSet:
    """A StoreSet sized for ``spec``: the object pool plus the customer threads' listings."""
    inflight = spec.worker.objects_in_flight + customers_in_flight(spec.worker.objects_in_flight)
    return StoreSet(spec.storage, max_in_flight=inflight, **kwargs)  # type: ignore[arg-type]


def run_shard(
    job: ShardJob,
    stores: StoreSet,
    *,
    on_customer: CustomerCallback | None = None,
    on_start: Callable[[int], None] | None = None,
) -> ShardResult:
    """Release the customers of shard ``job.index`` and write its results to the report.

    Bad input (snapshot missing or changed, index out of range, credentials refused, what
    :func:`~webrelease.copier.desired.check_build` refuses) is returned as a result with
    ``error`` set and exit code 2, and nothing is written. A storage failure outside any one
    customer (reading the snapshot, writing the report) raises.
    """
    start = time.monotonic()
    result = ShardResult(job.index)
    try:
        snap_loc, _ = object_url(job.snapshot_url)
        customers = read_slice(
            stores(snap_loc), job.snapshot_url, job.snapshot_sha256, job.index, job.shard_size
        )
    except (SnapshotError, ValueError, AccessDenied) as exc:  # credentials refused: no retry helps
        return _bad_input(result, str(exc), start)
    if on_start is not None:
        on_start(len(customers))
    with ThreadPoolExecutor(
        max_workers=job.spec.worker.objects_in_flight, thread_name_prefix="object"
    ) as pool:
        try:
            build = prepare_build(job.spec, job.release_name, stores, pool)
        except BuildError as exc:
            return _bad_input(result, str(exc), start)
        releaser = Releaser(job.spec, job.release_name, stores, build, pool)
        result.customers = release_customers(releaser, customers, on_customer=on_customer)
    result.seconds = time.monotonic() - start
    write_results(stores, job.report, result)
    return result


def _bad_input(result: ShardResult, error: str, start: float) -> ShardResult:
    result.error = error
    result.error_code = EXIT_BAD_INPUT
    result.seconds = time.monotonic() - start
    return result


def write_results(stores: StoreSet, report: Location, result: ShardResult) -> None:
    """``shards/<index>.jsonl`` (every customer) and ``shards/<index>.summary.json``."""
    store = stores(report)
    key = shard_results_key(result.index)
    result.results_url = report.url + key
    store.put(report, key, encode_results(result.customers), content_type="application/x-ndjson")
    store.put(
        report, shard_summary_key(result.index), result.summary().to_bytes(), content_type="application/json"
    )
