"""Freezing a customer list of any size in bounded memory: validate, sort, write the snapshot.

``freeze_snapshot(source, store, folder, target_template=...)`` does what
``write_snapshot(store, folder, load_customers(source, target_template=...))`` does — the same
checks and messages, the same first 20 problems (by position in the list) and total, the same
snapshot bytes, sha256 and metadata — without ever holding the list: records are checked as they
stream from the source, encoded to their canonical snapshot line, and sorted externally (runs of at
most ``run_bytes`` sorted in memory, spilled to temporary files, merged). Duplicate ids are adjacent
after the sort, so they need no set of every id; two customers sharing a site are found the same
way, by a second sort on the rendered site (skipped when the target only uses ``{id}``, which makes
sites unique by construction). It also writes the snapshot's slice index
(``webrelease.copier.snapshot.slices``), so that each shard reads only its own byte range.

Optionally (``required_fields``) a record lacking a field that the target or overrides template
uses is a problem of the list rather than of that customer's release.

Memory: one run buffer plus the finished snapshot's bytes (``Store.put`` takes bytes), i.e. about
``run_bytes`` + the snapshot's size. Disk: about twice the snapshot's size under ``spool_dir``.
"""

from __future__ import annotations

import contextlib
import heapq
import tempfile
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import IO, Final

from webrelease.copier.customers import MAX_REPORTED_ERRORS, CustomerListError, id_problem
from webrelease.copier.places import Entry, SiteGuard, nesting_problems
from webrelease.copier.snapshot.files import SNAPSHOT_NAME, SnapshotRef, encode_line
from webrelease.copier.snapshot.slices import DEFAULT_STEP, SliceIndexBuilder, index_key
from webrelease.copier.sources.base import CustomerSource
from webrelease.copier.storage.base import Location, Store
from webrelease.copier.targets import TargetError, canonical_url, render_target, template_fields

#: Bytes of encoded lines sorted in memory at a time.
DEFAULT_RUN_BYTES: Final = 48 * 1024 * 1024
_OBJECT_OVERHEAD: Final = 41  # a bytes object's header plus its list slot
_ID_PREFIX: Final = b'{"id":"'


class _Problems:
    """The first ``keep`` problems by position in the list, and how many there were."""

    def __init__(self, keep: int = MAX_REPORTED_ERRORS) -> None:
        self._keep = keep
        self._heap: list[tuple[int, str]] = []  # (-position, message): the worst kept on top
        self.total = 0

    def add(self, position: int, message: str) -> None:
        self.total += 1
        item = (-position, message)
        if len(self._heap) < self._keep:
            heapq.heappush(self._heap, item)
        elif item > self._heap[0]:
            heapq.heapreplace(self._heap, item)

    def first(self) -> list[str]:
        return [message for _pos, message in sorted(self._heap, key=lambda i: -i[0])]


class _SortedRuns:
    """Lines (each ending in ``\\n``) sorted externally: runs sorted in memory, spilled, merged."""

    def __init__(self, directory: Path, run_bytes: int) -> None:
        self._dir = directory
        self._run_bytes = run_bytes
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._files: list[Path] = []
        self.count = 0

    def add(self, line: bytes) -> None:
        self._buffer.append(line)
        self._buffered += len(line) + _OBJECT_OVERHEAD
        self.count += 1
        if self._buffered >= self._run_bytes:
            self._spill()

    def _spill(self) -> None:
        self._buffer.sort()
        path = self._dir / f"run-{len(self._files):05d}"
        with path.open("wb", buffering=1024 * 1024) as f:
            f.writelines(self._buffer)
        self._files.append(path)
        self._buffer, self._buffered = [], 0

    def merged(self) -> Iterator[bytes]:
        if not self._files:  # it all fit in memory
            self._buffer.sort()
            buffer, self._buffer = self._buffer, []
            yield from buffer
            return
        if self._buffer:
            self._spill()
        with contextlib.ExitStack() as stack:
            files: list[IO[bytes]] = [
                stack.enter_context(p.open("rb", buffering=256 * 1024)) for p in self._files
            ]
            yield from heapq.merge(*files)


def _clean(where: str) -> bytes:
    return where.replace("\t", " ").replace("\n", " ").encode()


def fields_required_by(*templates: str | None) -> list[str]:
    """The customer fields that URL templates (target, overrides) use, ``id`` first, each once."""
    names: list[str] = []
    for template in templates:
        if template:
            names += [n for n in template_fields(template) if n not in names]
    return names


def freeze_snapshot(  # noqa: PLR0913 (keyword-only tuning knobs with defaults)
    source: CustomerSource,
    store: Store,
    folder: Location,
    *,
    target_template: str | None = None,
    required_fields: Collection[str] = (),
    allow_empty: bool = False,
    guard: SiteGuard | None = None,
    spool_dir: Path | None = None,
    run_bytes: int = DEFAULT_RUN_BYTES,
    block_lines: int = DEFAULT_STEP,
) -> SnapshotRef:
    """Validate ``source`` and write ``<folder>/customers.jsonl`` and its slice index.

    Raises CustomerListError (the first ``MAX_REPORTED_ERRORS`` problems in list order, and the
    total) before writing anything when the list is bad. ``guard``: the per-customer location
    checks (``customers.site_guard_for(spec)``; its target replaces ``target_template``), as in
    ``customers.validate``, the cross-customer one by the same second sort. ``spool_dir``: where
    the temporary runs go (default: the system's temporary folder). ``block_lines``: lines per
    block of the slice index.
    """
    with tempfile.TemporaryDirectory(prefix="webrelease-freeze-", dir=spool_dir) as tmp:
        work = Path(tmp)
        problems = _Problems()
        if guard is not None:
            target_template = guard.target
        cross = guard is not None and guard.cross
        check_sites = cross or (
            target_template is not None and set(template_fields(target_template)) != {"id"}
        )
        required = [f for f in required_fields if f != "id"]
        runs = _SortedRuns(work, run_bytes)
        position = 0
        for rec in source.records():
            position += 1
            if rec.error is not None:
                problems.add(position, f"{rec.where}: {rec.error}")
                continue
            value = rec.value
            if not isinstance(value, dict):
                problems.add(position, f"{rec.where}: expected an object, got {type(value).__name__}")
                continue
            cid = value.get("id")
            why = id_problem(cid)
            if why is not None:
                problems.add(position, f"{rec.where}: {why}")
                continue
            lacking = [f for f in required if value.get(f) is None or value.get(f) == ""]
            if lacking:
                names = ", ".join(repr(f) for f in lacking)
                problems.add(
                    position,
                    f"{rec.where}: customer {cid!r} has no {names} (used by the target or overrides)",
                )
                continue
            if guard is not None:
                why = guard.problem(value)
                if why is not None:
                    problems.add(position, f"{rec.where}: customer {cid!r}: {why}")
                    continue
            try:
                line = encode_line(value)
            except (TypeError, ValueError) as exc:
                problems.add(position, f"{rec.where}: customer {cid!r} cannot be written as JSON ({exc})")
                continue
            item = line[:-1] + b"\t%d\t" % position + _clean(rec.where)
            if check_sites:
                assert target_template is not None
                try:
                    site = canonical_url(render_target(target_template, value)).encode()
                except TargetError:
                    site = b""
                over = b""
                if cross:
                    assert guard is not None
                    over = (guard.places(value)[1] or "").encode()
                if b"\t" in site or b"\n" in site:
                    site = b""
                if b"\t" in over or b"\n" in over:
                    over = b""
                item += b"\t" + site + b"\t" + over
            runs.add(item + b"\n")

        sites: _SortedRuns | None = None
        if check_sites:
            (work / "sites").mkdir()
            sites = _SortedRuns(work / "sites", run_bytes)
        builder = SliceIndexBuilder(block_lines)
        out_path = work / SNAPSHOT_NAME
        with out_path.open("wb", buffering=1024 * 1024) as out:
            for group in _groups_by_id(runs.merged()):
                owner = group[0]
                if len(group) > 1:
                    group.sort(key=lambda g: g[1])
                    owner = group[0]
                    for _line, pos, where, _site, _over in group[1:]:
                        cid = _id_of(owner[0])
                        problems.add(pos, f"{where}: duplicate id {cid!r} (first at {owner[2]})")
                line, pos, where, site, over = owner
                if problems.total == 0:
                    builder.add(line + b"\n")
                    out.write(line + b"\n")
                if sites is not None:
                    cid_bytes = _id_of(line).encode()
                    for place, kind in ((site, b"s"), (over, b"o")):
                        if place:
                            sites.add(b"%s\t%d\t%s\t%s\t%s\n" % (place, pos, where.encode(), cid_bytes, kind))
        if sites is not None:
            _site_problems(sites, problems)
        if builder.count == 0 and problems.total == 0 and not allow_empty:
            problems.add(0, "the list is empty")
        if problems.total:
            raise CustomerListError(source.name, problems.first(), problems.total)
        data = out_path.read_bytes()
        out_path.unlink()
    digest = builder.sha256
    store.put(
        folder,
        SNAPSHOT_NAME,
        data,
        content_type="application/x-ndjson",
        metadata={"webrelease-sha256": digest, "webrelease-count": str(builder.count)},
    )
    del data
    store.put(
        folder, index_key(SNAPSHOT_NAME), builder.encode(SNAPSHOT_NAME), content_type="application/json"
    )
    return SnapshotRef(folder.url + SNAPSHOT_NAME, digest, builder.count)


Item = tuple[bytes, int, str, bytes, bytes]  # (snapshot line without \n, position, where, site, overrides)


def _parse(item: bytes) -> Item:
    parts = item.rstrip(b"\n").split(b"\t")
    site = parts[3] if len(parts) > 3 else b""
    over = parts[4] if len(parts) > 4 else b""
    return parts[0], int(parts[1]), parts[2].decode(), site, over


def _id_of(line: bytes) -> str:
    return line[len(_ID_PREFIX) : line.index(b'"', len(_ID_PREFIX))].decode()


def _groups_by_id(items: Iterator[bytes]) -> Iterator[list[Item]]:
    """Runs of items with the same id (adjacent once sorted: a line starts ``{"id":"<id>"``)."""
    group: list[Item] = []
    current = b""
    for raw in items:
        item = _parse(raw)
        key = item[0][: item[0].index(b'"', len(_ID_PREFIX)) + 1]
        if group and key != current:
            yield group
            group = []
        current = key
        group.append(item)
    if group:
        yield group


def _site_problems(sites: _SortedRuns, problems: _Problems) -> None:
    """Two customers with one site, and sites in or around other sites or overrides
    (``places.nesting_problems``), from one pass over the places sorted."""
    group: list[tuple[int, str, str]] = []
    current = b""

    def flush() -> None:
        if len(group) > 1:
            group.sort()
            _pos, owner_where, owner_id = group[0]
            for pos, where, cid in group[1:]:
                shared = current.decode()
                problems.add(
                    pos,
                    f"{where}: customer {cid!r} has the same site {shared} as {owner_id!r} ({owner_where})",
                )

    def entries() -> Iterator[Entry]:
        nonlocal group, current
        for raw in sites.merged():
            place, pos, where, cid, kind = raw.rstrip(b"\n").split(b"\t")
            if kind == b"s":
                if place != current:
                    flush()
                    group, current = [], place
                group.append((int(pos), where.decode(), cid.decode()))
            yield place.decode(), kind == b"s", cid.decode(), where.decode(), int(pos)
        flush()

    for pos, message in nesting_problems(entries()):
        problems.add(pos, message)
