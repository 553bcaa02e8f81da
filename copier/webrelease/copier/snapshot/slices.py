"""The slice index of a snapshot, so that a shard pod reads only its own byte range.

A snapshot (``customers.jsonl``: one customer a line, sorted) gets a sibling object,
``customers.slices``, made of fixed-width text lines so that any part of it can be fetched by
byte range::

    {"version":1,"snapshot":"customers.jsonl","sha256":"…","count":1000000,"bytes":…,"step":64,"blocks":15625}
    0000000000000000 <sha256 of block 0>
    0000000000002a17 <sha256 of block 1>
    …

The first line is a JSON header padded with spaces to ``HEADER_BYTES``; then one
``ENTRY_BYTES``-byte line per block: the block's byte offset in the snapshot (16 hex digits) and
the sha256 of its bytes. Block ``k`` holds lines ``[k*step, (k+1)*step)``.

A shard needing lines ``[start, stop)`` makes three ranged GETs — the header, the entries of its
blocks, the bytes of its blocks — checks the header's ``sha256`` against the run's and each
block's bytes against its entry, and parses only its own lines. What it reads and holds is its
slice plus at most two blocks, whatever the length of the list.

Integrity: the header binds the entries to the whole snapshot's sha256 (the one in the run's
status) and each entry binds a block's bytes, so a snapshot or index replaced after the run began
is detected, as a whole-file check would detect it; a snapshot without an index is read whole
(``webrelease.copier.snapshot.files.read_slice`` falls back).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Final

from webrelease.copier.storage.base import Location, NotFound, Store

INDEX_VERSION: Final = 1
HEADER_BYTES: Final = 256
ENTRY_BYTES: Final = 16 + 1 + 64 + 1
#: Lines per block unless told otherwise.
DEFAULT_STEP: Final = 64


class SliceIndexError(ValueError):
    """The index or the bytes it describes do not match (changed, torn, or not ours)."""


def index_key(snapshot_key: str) -> str:
    """``customers.jsonl`` → ``customers.slices``."""
    return snapshot_key.removesuffix(".jsonl") + ".slices"


@dataclass
class SliceIndexBuilder:
    """Fed every snapshot line in order (``add``); builds the index and the whole sha256."""

    step: int = DEFAULT_STEP
    entries: list[bytes] = field(default_factory=list)
    count: int = 0
    size: int = 0
    _whole: Any = field(default_factory=hashlib.sha256)
    _block: Any = None
    _block_start: int = 0

    def add(self, line: bytes) -> None:
        if self.count % self.step == 0:
            self._close_block()
            self._block, self._block_start = hashlib.sha256(), self.size
        self._block.update(line)
        self._whole.update(line)
        self.count += 1
        self.size += len(line)

    def _close_block(self) -> None:
        if self._block is not None:
            self.entries.append(b"%016x %s\n" % (self._block_start, self._block.hexdigest().encode()))
            self._block = None

    @property
    def sha256(self) -> str:
        return str(self._whole.hexdigest())

    def encode(self, snapshot_key: str) -> bytes:
        self._close_block()
        header = {
            "version": INDEX_VERSION,
            "snapshot": snapshot_key,
            "sha256": self.sha256,
            "count": self.count,
            "bytes": self.size,
            "step": self.step,
            "blocks": len(self.entries),
        }
        text = json.dumps(header, separators=(",", ":")).encode()
        if len(text) >= HEADER_BYTES:
            raise ValueError(f"slice index header of {snapshot_key} is too long")
        return text.ljust(HEADER_BYTES - 1) + b"\n" + b"".join(self.entries)


@dataclass(frozen=True)
class _Header:
    sha256: str
    count: int
    size: int
    step: int
    blocks: int


def _header(raw: bytes, snapshot_key: str) -> _Header:
    try:
        doc = json.loads(raw)
        header = _Header(
            str(doc["sha256"]), int(doc["count"]), int(doc["bytes"]), int(doc["step"]), int(doc["blocks"])
        )
        ok = doc["version"] == INDEX_VERSION and doc["snapshot"] == snapshot_key
    except (ValueError, KeyError, TypeError) as exc:
        raise SliceIndexError(f"slice index of {snapshot_key} is malformed ({exc})") from None
    if not ok or header.step < 1 or header.blocks != -(-header.count // header.step):
        raise SliceIndexError(f"slice index of {snapshot_key} is not a version {INDEX_VERSION} index of it")
    return header


def read_indexed_lines(
    store: Store, loc: Location, key: str, *, sha256: str | None, start: int, stop: int
) -> tuple[int, list[bytes]] | None:
    """Lines ``[start, stop)`` of the snapshot ``key`` (fewer at its end) read by range through
    its slice index, as ``(count, lines)``; None when the snapshot has no index.

    Raises SliceIndexError when the index is not for the snapshot with ``sha256`` or a block's
    bytes do not match it.
    """
    ikey = index_key(key)
    try:
        head = store.get_range(loc, ikey, 0, HEADER_BYTES - 1)
    except NotFound:
        return None
    header = _header(head, key)
    where = f"snapshot {loc.url}{key}"
    if sha256 is not None and header.sha256 != sha256.lower():
        raise SliceIndexError(
            f"{where}: its slice index is for sha256 {header.sha256}, expected {sha256}:"
            " it changed since the run began"
        )
    stop = min(stop, header.count)
    if start >= stop:
        return header.count, []
    first, last = start // header.step, (stop - 1) // header.step
    upto = min(last + 2, header.blocks)  # the next block's entry gives this one's end
    raw = store.get_range(
        loc, ikey, HEADER_BYTES + first * ENTRY_BYTES, HEADER_BYTES + upto * ENTRY_BYTES - 1
    )
    try:
        entries = [(int(e[:16], 16), e[17:81].decode()) for e in raw.splitlines()]
    except (ValueError, UnicodeDecodeError):
        raise SliceIndexError(f"{where}: its slice index is torn") from None
    if len(entries) != upto - first:
        raise SliceIndexError(f"{where}: its slice index is torn")
    offsets = [offset for offset, _ in entries]
    if upto == header.blocks:
        offsets.append(header.size)
    begin, end = offsets[0], offsets[last - first + 1]
    data = store.get_range(loc, key, begin, end - 1) if end > begin else b""
    if len(data) != end - begin:
        raise SliceIndexError(f"{where}: got {len(data)} of its {end - begin} bytes")
    for i in range(last - first + 1):
        lo, hi = offsets[i] - begin, offsets[i + 1] - begin
        if hashlib.sha256(data[lo:hi]).hexdigest() != entries[i][1]:
            block = first + i
            raise SliceIndexError(
                f"{where}: lines {block * header.step + 1}-{(block + 1) * header.step} do not match its slice"
                " index: it changed since the run began"
            )
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    skip = start - first * header.step
    return header.count, lines[skip : skip + (stop - start)]
