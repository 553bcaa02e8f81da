"""The frozen customer list of a run, and the names of the files around it.

The run's folder is laid out as :mod:`webrelease.copier.runlayout` says: ``customers.jsonl`` (the
snapshot: the validated list, sorted by id, one JSON object a line), ``<step>/shards/<index>.jsonl``
(one line per customer of the shard: ok/failed, reason, counts) and ``<step>/shards/<index>.summary.json``
(the shard's compact summary, the same JSON as its termination message), ``index.json``.

The snapshot's bytes are canonical (compact JSON, UTF-8, ``id`` first, ``\\n`` after every line),
so its sha256 identifies the list. A shard reads the whole object, checks the sha256 when given,
and takes lines ``[index * size, (index + 1) * size)``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from webrelease.copier.customers import Record
from webrelease.copier.snapshot.slices import SliceIndexError, read_indexed_lines
from webrelease.copier.storage import Location, NotFound, Store, object_url

SNAPSHOT_NAME: Final = "customers.jsonl"
SHARDS_DIR: Final = "shards"
INDEX_NAME: Final = "index.json"


class SnapshotError(ValueError):
    """A snapshot that cannot be used (missing, wrong sha256, malformed, index out of range): bad input."""


@dataclass(frozen=True, slots=True)
class SnapshotRef:
    """Where a frozen list is, its sha256 and how many customers it holds."""

    url: str
    sha256: str
    count: int

    def to_json(self) -> dict[str, Any]:
        return {"url": self.url, "sha256": self.sha256, "count": self.count}


def shard_results_key(index: int) -> str:
    return f"{SHARDS_DIR}/{index}.jsonl"


def shard_summary_key(index: int) -> str:
    return f"{SHARDS_DIR}/{index}.summary.json"


def encode_line(record: Record) -> bytes:
    """One canonical snapshot line."""
    ordered = {"id": record["id"], **{k: v for k, v in record.items() if k != "id"}}
    return json.dumps(ordered, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode() + b"\n"


def encode(customers: Sequence[Record]) -> bytes:
    return b"".join(encode_line(r) for r in customers)


def write_snapshot(store: Store, report: Location, customers: Sequence[Record]) -> SnapshotRef:
    """Write the frozen list as ``<report>/customers.jsonl``."""
    data = encode(customers)
    digest = hashlib.sha256(data).hexdigest()
    store.put(
        report,
        SNAPSHOT_NAME,
        data,
        content_type="application/x-ndjson",
        metadata={"webrelease-sha256": digest, "webrelease-count": str(len(customers))},
    )
    return SnapshotRef(report.url + SNAPSHOT_NAME, digest, len(customers))


def read_snapshot(store: Store, url: str, sha256: str | None = None) -> list[Record]:
    """The whole list; SnapshotError if it is missing, malformed or its sha256 differs."""
    loc, key = object_url(url)
    try:
        data = store.get(loc, key)
    except NotFound:
        raise SnapshotError(f"snapshot {url} not found") from None
    if sha256 is not None:
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256.lower():
            raise SnapshotError(
                f"snapshot {url} has sha256 {actual}, expected {sha256}: it changed since the run began"
            )
    out: list[Record] = []
    for n, line in enumerate(data.splitlines(), start=1):
        try:
            rec = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise SnapshotError(f"snapshot {url} line {n}: not valid JSON ({exc})") from None
        if not isinstance(rec, dict) or "id" not in rec:
            raise SnapshotError(f"snapshot {url} line {n}: not a customer record")
        out.append(rec)
    return out


def shard_count(count: int, size: int) -> int:
    return -(-count // size)


def read_slice(store: Store, url: str, sha256: str | None, index: int, size: int) -> list[Record]:
    """The customers of shard ``index`` (``size`` customers per shard)."""
    if index < 0 or size < 1:
        raise SnapshotError(f"shard index {index} / size {size} out of range")
    ranged = _read_indexed_slice(store, url, sha256, index, size)
    if ranged is not None:
        return ranged
    customers = read_snapshot(store, url, sha256)
    start = index * size
    if start >= len(customers):
        raise SnapshotError(
            f"shard index {index} is out of range: {len(customers)} customers make "
            f"{shard_count(len(customers), size)} shard(s) of {size}"
        )
    return customers[start : start + size]


def _read_indexed_slice(
    store: Store, url: str, sha256: str | None, index: int, size: int
) -> list[Record] | None:
    """The slice read by byte range through the snapshot's slice index (written by
    ``webrelease.copier.snapshot.freeze``); None when the snapshot has none."""
    loc, key = object_url(url)
    start = index * size
    try:
        found = read_indexed_lines(store, loc, key, sha256=sha256, start=start, stop=start + size)
    except SliceIndexError as exc:
        raise SnapshotError(str(exc)) from None
    if found is None:
        return None
    count, lines = found
    if not lines:
        raise SnapshotError(
            f"shard index {index} is out of range: {count} customers make "
            f"{shard_count(count, size)} shard(s) of {size}"
        )
    out: list[Record] = []
    for n, line in enumerate(lines, start=start + 1):
        try:
            rec = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise SnapshotError(f"snapshot {url} line {n}: not valid JSON ({exc})") from None
        if not isinstance(rec, dict) or "id" not in rec:
            raise SnapshotError(f"snapshot {url} line {n}: not a customer record")
        out.append(rec)
    return out
