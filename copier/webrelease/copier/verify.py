"""An audit of every site against what the release should have produced (``webrelease verify``).

For each customer it recomputes the desired files (build, renders, overrides: the same
preparation a shard does, see :mod:`webrelease.copier.desired`) and compares them with what the
site holds, trusting nothing webrelease wrote earlier: no metadata is read. A site file whose
listing gives an MD5 is compared by it; any other is read back and hashed. It lists:

- ``missing``: a file the release has and the site does not;
- ``different``: a file whose bytes differ (size or MD5), or whose Content-Type / Content-Encoding
  is not the one the release gives it (one HEAD per file whose bytes are right);
- ``extra``: with ``prune``, a site file the release does not have;
- ``unverifiable``: the customer cannot be prepared (bad id, target, template error...).

It writes nothing in any site. For a site in which it finds a missing or different file it
deletes the site record (:mod:`webrelease.copier.siterecord`, beside the reports) so that the
next run HEADs every file of that site instead of trusting what it wrote last time.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass

from webrelease.copier.customers import Record
from webrelease.copier.desired import Build, CustomerError, prepare_build, prepare_customer
from webrelease.copier.plan import type_problem
from webrelease.copier.siterecord import forget_record
from webrelease.copier.spec import WebReleaseSpec
from webrelease.copier.storage import NotFound, ObjectInfo, StorageError
from webrelease.copier.storage.storeset import StoreSet

log = logging.getLogger(__name__)

MISSING = "missing"
DIFFERENT = "different"
EXTRA = "extra"
UNVERIFIABLE = "unverifiable"


@dataclass(frozen=True, slots=True)
class Difference:
    customer: str
    problem: str
    key: str = ""
    detail: str = ""

    def to_json(self) -> dict[str, str]:
        return {"id": self.customer, "problem": self.problem, "key": self.key, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class CustomerAudit:
    id: str
    site: str | None
    files: int
    differences: tuple[Difference, ...]


def audit_customer(
    spec: WebReleaseSpec, build: Build, record: Record, stores: StoreSet, pool: Executor
) -> CustomerAudit:
    cid = str(record.get("id"))
    try:
        work = prepare_customer(spec, build, record, stores, pool)
    except (CustomerError, StorageError, ValueError) as exc:
        return CustomerAudit(cid, None, 0, (Difference(cid, UNVERIFIABLE, detail=str(exc)),))
    store = stores(work.site)
    diffs: list[Difference] = []
    to_read: list[str] = []
    for key in sorted(work.desired):
        want = work.desired[key]
        have = work.site_listing.get(key)
        if have is None:
            diffs.append(Difference(cid, MISSING, key))
        elif have.size != want.size:
            diffs.append(Difference(cid, DIFFERENT, key, f"size {have.size}, expected {want.size}"))
        elif have.md5 is None or want.md5 is None:
            to_read.append(key)
        elif have.md5.lower() != want.md5:
            diffs.append(Difference(cid, DIFFERENT, key, f"md5 {have.md5}, expected {want.md5}"))

    def read_md5(key: str) -> str | None:
        try:
            return hashlib.md5(store.get(work.site, key), usedforsecurity=False).hexdigest()
        except NotFound:
            return None

    for key, md5 in zip(to_read, pool.map(read_md5, to_read), strict=True):
        want = work.desired[key]
        if md5 is None:
            diffs.append(Difference(cid, MISSING, key))
        elif want.md5 is not None and md5 != want.md5:
            diffs.append(Difference(cid, DIFFERENT, key, f"md5 {md5}, expected {want.md5}"))
    wrong = {d.key for d in diffs}
    right_bytes = [k for k in work.desired if k in work.site_listing and k not in wrong]

    def head(key: str) -> ObjectInfo | None:
        try:
            return store.head(work.site, key)
        except NotFound:
            return None

    for key, info in zip(right_bytes, pool.map(head, right_bytes), strict=True):
        problem = type_problem(key, work.desired[key], info) if info is not None else None
        if problem is not None:
            diffs.append(Difference(cid, DIFFERENT, key, problem))
    if spec.prune:
        diffs.extend(Difference(cid, EXTRA, k) for k in sorted(work.site_listing) if k not in work.desired)
    diffs.sort(key=lambda d: (d.key, d.problem))
    if any(d.problem in (MISSING, DIFFERENT) for d in diffs):
        try:
            forget_record(stores, spec.reports.url, work.site)
        except StorageError as exc:
            log.warning("site record of %s not deleted: %s", work.site.url, exc)
    return CustomerAudit(cid, work.site.url, len(work.desired), tuple(diffs))


def audit(
    spec: WebReleaseSpec,
    release_name: str,
    customers: Sequence[Record],
    stores: StoreSet,
    *,
    on_customer: Callable[[CustomerAudit], None] | None = None,
) -> list[CustomerAudit]:
    """Audit every customer's site; results in the order of ``customers``. BuildError if the build
    cannot be read."""
    inflight = spec.worker.objects_in_flight
    with ThreadPoolExecutor(max_workers=inflight, thread_name_prefix="verify") as pool:
        build = prepare_build(spec, release_name, stores, pool)
        with ThreadPoolExecutor(max_workers=max(2, min(16, inflight // 8))) as cp:

            def one(record: Record) -> CustomerAudit:
                result = audit_customer(spec, build, record, stores, pool)
                if on_customer is not None:
                    on_customer(result)
                return result

            return list(cp.map(one, customers))
