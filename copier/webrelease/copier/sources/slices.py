"""The slice index of a snapshot, so that a shard pod reads only its own byte range.

A snapshot (``customers.jsonl``: one customer a line, sorted) gets a small sibling object,
``customers.slices.json``::

    {"version": 1, "snapshot": "customers.jsonl", "sha256": "<sha256 of the whole snapshot>",
     "count": 1000000, "bytes": 87654321, "step": 489,
     "offsets": [0, 42791, ...],           # byte offset of line k*step, then the total size
     "blocks": ["<sha256 of block 0>", ...]}  # block k = lines [k*step, (k+1)*step)

A shard needing lines ``[start, end)`` fetches the blocks that hold them with one ranged GET,
checks each block's sha256 against the index and the index's ``sha256`` against the run's, and
parses only its lines: its memory and its reads are bounded by its slice plus two blocks, whatever
the size of the list. There are at most ``MAX_BLOCKS`` blocks, so the index stays small (about
150 KiB) however long the list.

Integrity: the index binds block hashes to the whole snapshot's sha256 (the one in the run's
status), so a snapshot or an index replaced after the run began is detected, as a whole-file check
would; a snapshot without an index is read whole (``webrelease.copier.snapshot.read_slice``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from webrelease.copier.storage.base import Location, NotFound, Store

INDEX_VERSION: Final = 1
#: Lines per block at least; blocks at most.
MIN_STEP: Final = 64
MAX_BLOCKS: Final = 2048


class SliceIndexError(ValueError):
    """The index or the bytes it describes do not match (changed, torn, or not ours)."""


def index_key(snapshot_key: str) -> str:
    """``customers.jsonl`` → ``customers.slices.json``."""
    return snapshot_key.removesuffix(".jsonl") + ".slices.json"


def step_for(count: int) -> int:
    """Lines per block for a list of ``count``: at least MIN_STEP, at most MAX_BLOCKS blocks."""
    return max(MIN_STEP, -(-count // MAX_BLOCKS))


@dataclass
class SliceIndexBuilder:
    """Fed every snapshot line in order (``add``), builds the index and the whole sha256."""

    step: int
    offsets: list[int] = field(default_factory=list)
    blocks: list[str] = field(default_factory=list)
    count: int = 0
    size: int = 0
    _whole: Any = field(default_factory=hashlib.sha256)
    _block: Any = None

    def add(self, line: bytes) -> None:
        if self.count % self.step == 0:
            self._close_block()
            self.offsets.append(self.size)
            self._block = hashlib.sha256()
        self._block.update(line)
        self._whole.update(line)
        self.count += 1
        self.size += len(line)

    def _close_block(self) -> None:
        if self._block is not None:
            self.blocks.append(self._block.hexdigest())
            self._block = None

    @property
    def sha256(self) -> str:
        return str(self._whole.hexdigest())

    def document(self, snapshot_key: str) -> dict[str, Any]:
        self._close_block()
        return {
            "version": INDEX_VERSION,
            "snapshot": snapshot_key,
            "sha256": self.sha256,
            "count": self.count,
            "bytes": self.size,
            "step": self.step,
            "offsets": [*self.offsets, self.size],
            "blocks": self.blocks,
        }

    def encode(self, snapshot_key: str) -> bytes:
        return json.dumps(self.document(snapshot_key), separators=(",", ":")).encode() + b"\n"


@dataclass(frozen=True)
class SliceIndex:
    sha256: str
    count: int
    size: int
    step: int
    offsets: Sequence[int]
    blocks: Sequence[str]

    @classmethod
    def parse(cls, data: bytes, snapshot_key: str) -> SliceIndex:
        try:
            doc = json.loads(data)
            index = cls(
                sha256=str(doc["sha256"]),
                count=int(doc["count"]),
                size=int(doc["bytes"]),
                step=int(doc["step"]),
                offsets=[int(o) for o in doc["offsets"]],
                blocks=[str(b) for b in doc["blocks"]],
            )
            version, named = doc["version"], doc["snapshot"]
        except (ValueError, KeyError, TypeError) as exc:
            raise SliceIndexError(f"slice index of {snapshot_key} is malformed ({exc})") from None
        blocks = -(-index.count // index.step) if index.step > 0 else -1
        if (
            version != INDEX_VERSION
            or named != snapshot_key
            or index.step < 1
            or len(index.blocks) != blocks
            or len(index.offsets) != blocks + 1
            or index.offsets[-1] != index.size
            or any(b > a for a, b in zip(index.offsets[1:], index.offsets, strict=False))
        ):
            raise SliceIndexError(f"slice index of {snapshot_key} is inconsistent")
        return index


def read_indexed_lines(
    store: Store, loc: Location, key: str, *, sha256: str | None, start: int, stop: int
) -> tuple[int, list[bytes]] | None:
    """Lines ``[start, stop)`` of the snapshot ``key`` (fewer at the end), read by range through
    its slice index, as ``(count, lines)``; None when the snapshot has no index.

    Raises SliceIndexError when the index is not for the snapshot with ``sha256`` or a block's
    bytes do not match the index.
    """
    try:
        raw = store.get(loc, index_key(key))
    except NotFound:
        return None
    index = SliceIndex.parse(raw, key)
    if sha256 is not None and index.sha256 != sha256.lower():
        raise SliceIndexError(
            f"snapshot {loc.url}{key}: its slice index is for sha256 {index.sha256}, expected {sha256}:"
            " it changed since the run began"
        )
    stop = min(stop, index.count)
    if start >= stop:
        return index.count, []
    first, last = start // index.step, (stop - 1) // index.step
    begin, end = index.offsets[first], index.offsets[last + 1]
    data = store.get_range(loc, key, begin, end - 1) if end > begin else b""
    if len(data) != end - begin:
        raise SliceIndexError(f"snapshot {loc.url}{key}: got {len(data)} bytes of {end - begin}")
    for block in range(first, last + 1):
        lo, hi = index.offsets[block] - begin, index.offsets[block + 1] - begin
        if hashlib.sha256(data[lo:hi]).hexdigest() != index.blocks[block]:
            raise SliceIndexError(
                f"snapshot {loc.url}{key}: lines {block * index.step + 1}-{(block + 1) * index.step} do not"
                " match its slice index: it changed since the run began"
            )
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    skip = start - first * index.step
    return index.count, lines[skip : skip + (stop - start)]
