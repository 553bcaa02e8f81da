"""The snapshot: a run's frozen customer list, in three parts.

- :mod:`.files` — the snapshot object (``customers.jsonl``: canonical bytes, its sha256), the
  names of the files around it, reading it whole or one shard's slice;
- :mod:`.freeze` — validating, sorting and writing a list of any size in bounded memory;
- :mod:`.slices` — the slice index next to the snapshot, so that a shard reads only its byte range.

Where a list comes from (an object, a ConfigMap, inline, SQL) is :mod:`webrelease.copier.sources`;
the checks every record goes through are :mod:`webrelease.copier.customers`.
"""

from __future__ import annotations

from webrelease.copier.snapshot.files import (
    INDEX_NAME,
    SHARDS_DIR,
    SNAPSHOT_NAME,
    SnapshotError,
    SnapshotRef,
    encode,
    encode_line,
    read_slice,
    read_snapshot,
    shard_count,
    shard_results_key,
    shard_summary_key,
    write_snapshot,
)
from webrelease.copier.snapshot.freeze import fields_required_by, freeze_snapshot
from webrelease.copier.snapshot.slices import SliceIndexError, index_key

__all__ = [
    "INDEX_NAME",
    "SHARDS_DIR",
    "SNAPSHOT_NAME",
    "SliceIndexError",
    "SnapshotError",
    "SnapshotRef",
    "encode",
    "encode_line",
    "fields_required_by",
    "freeze_snapshot",
    "index_key",
    "read_slice",
    "read_snapshot",
    "shard_count",
    "shard_results_key",
    "shard_summary_key",
    "write_snapshot",
]
