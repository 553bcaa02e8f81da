"""Where a run's files go and how its customers are cut into shards. Pure; shared by both
launchers (``webrelease run`` on this machine and the operator in a cluster).

A run's report folder is ``<reports.url>/<namespace>/<release>/<run-id>/`` (a local run uses the
release file's ``metadata.namespace``, else ``default``, as ``kubectl apply`` would)::

    customers.jsonl            the frozen list of the run (and its slice index)
    <step>/customers.jsonl     a step's own list when it holds a subset (canary, rest, retry-<n>)
    <step>/shards/<i>.jsonl    one line per customer of shard i of that step
    <step>/shards/<i>.summary.json
    index.json                 the report document (:mod:`webrelease.copier.runreport`)
    report.html                the report page made from it (:mod:`webrelease.copier.reportpage`)

Steps: ``main`` (every customer), ``plan`` (a dry run), ``canary`` then ``rest``, ``retry-<n>``.
Only the run id differs between the launchers: a local run's is the time it started plus random
hex, a cluster run's is the release's generation plus its uid.

Shard ``i`` holds customers ``[i * size, (i + 1) * size)`` of the step's frozen, sorted list (the
shard takes exactly that slice: ``webrelease.copier.snapshot.read_slice``). The spec asks for
``customersPerShard``; when that would make more than :data:`MAX_SHARDS` shards, the size grows
until the shards fit (and the layout says so in :attr:`ShardLayout.note`).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from webrelease.copier.spec import MAX_SHARDS
from webrelease.copier.storage import Location

#: The namespace of a local run whose release file names none (what ``kubectl apply`` would use).
LOCAL_NAMESPACE: Final = "default"
#: The report page, next to ``index.json``.
PAGE_NAME: Final = "report.html"
#: The step that holds every customer.
MAIN_STEP: Final = "main"
RETRY_STEP: Final = "retry"


@dataclass(frozen=True, slots=True)
class ShardLayout:
    """``customers`` customers in ``shards`` shards of ``size`` (the last one may be smaller)."""

    customers: int
    size: int
    shards: int
    parallelism: int
    note: str = ""

    def customers_in(self, index: int) -> int:
        """How many customers shard ``index`` holds."""
        if not 0 <= index < self.shards:
            raise IndexError(f"shard {index} is out of range (0..{self.shards - 1})")
        return min(self.size, self.customers - index * self.size)

    def bounds(self, index: int) -> tuple[int, int]:
        """Positions ``[start, stop)`` of shard ``index`` in the step's list."""
        start = index * self.size
        return start, start + self.customers_in(index)

    def shard_of(self, position: int) -> int:
        """The shard holding the customer at ``position`` of the list."""
        if not 0 <= position < self.customers:
            raise IndexError(f"position {position} is out of range (0..{self.customers - 1})")
        return position // self.size


def shard_layout(
    customers: int, customers_per_shard: int, parallelism: int, *, max_shards: int = MAX_SHARDS
) -> ShardLayout:
    """The layout for ``customers`` customers: ``ceil(customers / size)`` shards, at most
    ``max_shards``. ``parallelism`` (shards at once) is capped at the number of shards. No
    customers, no shards."""
    if customers < 0:
        raise ValueError(f"customers must not be negative, got {customers}")
    if customers_per_shard < 1:
        raise ValueError(f"customersPerShard must be at least 1, got {customers_per_shard}")
    if parallelism < 1:
        raise ValueError(f"parallelism must be at least 1, got {parallelism}")
    if max_shards < 1:
        raise ValueError(f"max_shards must be at least 1, got {max_shards}")
    size = customers_per_shard
    note = ""
    if -(-customers // size) > max_shards:
        size = -(-customers // max_shards)
        note = (
            f"{customers} customers at {customers_per_shard} per shard would make more than "
            f"{max_shards} shards; using {size} per shard"
        )
    shards = -(-customers // size)
    return ShardLayout(
        customers=customers, size=size, shards=shards, parallelism=min(parallelism, shards), note=note
    )


# ------------------------------------------------------------------------------------- names


def local_run_id(now: datetime | None = None) -> str:
    """A sortable, unique run id for a local run: ``20250101T120000Z-3f9a1c``."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{secrets.token_hex(3)}"


def cluster_run_id(generation: int, uid: str) -> str:
    """``g<generation>-<first 8 characters of the uid>``: unique across re-creations of a name."""
    return f"g{generation}-{uid.replace('-', '')[:8]}"


def run_folder(reports: Location, namespace: str, release: str, run_id: str) -> Location:
    """``<reports>/<namespace>/<release>/<run-id>/``."""
    return reports.child(namespace).child(release).child(run_id)


def step_folder_name(step: str, retry_number: int = 0) -> str:
    """The folder of a step inside its run's folder: the step's name, ``retry-<n>`` for retries."""
    return f"{RETRY_STEP}-{retry_number}" if step == RETRY_STEP else step
