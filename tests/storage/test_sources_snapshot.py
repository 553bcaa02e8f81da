"""The frozen list at scale, on both backends: ``freeze_snapshot`` writes the same bytes and reports
the same problems as ``load_customers`` + ``write_snapshot``, whatever the source's format; the
same customers give the same release; a shard reads only its byte range of the snapshot."""

from __future__ import annotations

import gzip
import json
import random
import tracemalloc
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.harness.customer_lists import (
    BAD_LISTS,
    BadList,
    InMemoryConfigMaps,
    Row,
    as_jsonl,
    encodings,
    make_customers,
    release_from,
)
from tests.harness.s3_fixtures import StorageBackend
from webrelease.copier.customers import CustomerListError, load_customers
from webrelease.copier.snapshot import (
    SNAPSHOT_NAME,
    SnapshotError,
    SnapshotRef,
    read_slice,
    shard_count,
    write_snapshot,
)
from webrelease.copier.snapshot.freeze import fields_required_by, freeze_snapshot
from webrelease.copier.snapshot.slices import index_key
from webrelease.copier.sources import ConfigMapSource, CustomerSource, ObjectSource, TextSource
from webrelease.copier.spec import Storage
from webrelease.copier.storage import LocalStore, Location, ObjectInfo, Store, parse_url
from webrelease.copier.storage.storeset import StoreSet

TARGET = "s3://sites/{id}/"


def stores_of(backend: StorageBackend) -> StoreSet:
    return StoreSet(
        backend.settings, max_in_flight=16, credentials=backend.credentials, on_request=backend.events.append
    )


def folder_listing(store: Store, loc: Location) -> dict[str, ObjectInfo]:
    return {o.key: o for o in store.list(loc)}


# --- the corpus, through the snapshot writer ---------------------------------------------------------


@pytest.mark.parametrize("case", BAD_LISTS, ids=[c.name for c in BAD_LISTS])
def test_every_bad_list_stops_before_anything_is_written(case: BadList, tmp_path: Path) -> None:
    store, folder = LocalStore(), parse_url((tmp_path / "run").as_uri())
    source = case.make()
    required = fields_required_by(case.target) if case.needs_required_fields else []
    with pytest.raises(CustomerListError) as info:
        freeze_snapshot(source, store, folder, target_template=case.target, required_fields=required)
    message = str(info.value)
    for fragment in case.expected:
        assert fragment in message, message
    if not case.needs_required_fields:  # the same message as the in-memory validator's
        with pytest.raises(CustomerListError) as again:
            load_customers(case.make(), target_template=case.target)
        assert str(again.value) == message
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


# --- the same bytes and problems as the in-memory path -------------------------------------------------


def random_list(rnd: random.Random) -> str:
    """Half the time a good list (unique ids and sites), else one with a few problems of each kind."""
    clean = rnd.random() < 0.5
    ids = rnd.sample(range(10_000), 120)
    lines = []
    for n in range(rnd.randint(0, 120)):
        roll = 1.0 if clean else rnd.random()
        if roll < 0.03:
            lines.append('{"id": broken')
        elif roll < 0.06:
            lines.append(json.dumps({"id": f"Bad{rnd.randint(0, 9)}"}))
        else:
            cid = f"c{ids[n] if clean or roll > 0.2 else rnd.randint(0, 5)}"
            site = f"s{ids[n] if clean or roll > 0.2 else rnd.randint(0, 5)}"
            lines.append(json.dumps({"id": cid, "d": site, "x": rnd.random(), "é": "✓"}))
    return "\n".join(lines)


@pytest.mark.parametrize("seed", range(6))
def test_freeze_matches_load_and_write_on_random_lists(storage_backend: StorageBackend, seed: int) -> None:
    rnd = random.Random(seed)
    store = storage_backend.store
    outcomes = {"ok": 0, "bad": 0}
    for trial in range(25):
        text = random_list(rnd)
        target = rnd.choice([None, TARGET, "s3://sites/{d}/"])
        expected: tuple[bytes, dict[str, str]] | str
        try:
            customers = load_customers(TextSource(text, "l.jsonl", key="l.jsonl"), target_template=target)
            ref = write_snapshot(store, storage_backend.location(f"a{trial}"), customers)
            head = store.head(storage_backend.location(f"a{trial}"), SNAPSHOT_NAME)
            expected = (store.get(storage_backend.location(f"a{trial}"), SNAPSHOT_NAME), dict(head.metadata))
            outcomes["ok"] += 1
        except CustomerListError as exc:
            expected = str(exc)
            outcomes["bad"] += 1
        folder = storage_backend.location(f"b{trial}")
        got: tuple[bytes, dict[str, str]] | str
        try:
            # tiny runs: even a short list is sorted through files and merged
            ref = freeze_snapshot(
                TextSource(text, "l.jsonl", key="l.jsonl"),
                store,
                folder,
                target_template=target,
                run_bytes=300,
            )
            got = (store.get(folder, SNAPSHOT_NAME), dict(store.head(folder, SNAPSHOT_NAME).metadata))
            assert ref.count == len(got[0].splitlines())
        except CustomerListError as exc:
            got = str(exc)
        assert got == expected, (seed, trial, text)
    assert outcomes["ok"] and outcomes["bad"]


# --- 1,000 customers in every format: one snapshot, one release -------------------------------------------

N = 1000


def every_source(backend: StorageBackend, rows: Sequence[Row]) -> dict[str, CustomerSource]:
    lists = backend.location("lists")
    stores = stores_of(backend)
    sources: dict[str, CustomerSource] = {}
    for name, body in encodings(rows).items():
        backend.store.put(lists, name, body)
        sources[f"object {name}"] = ObjectSource(lists.url + name, stores)
    maps = InMemoryConfigMaps(
        {
            "shop": {
                "customers.csv": as_text(encodings(rows)["customers.csv"]),
                "customers.jsonl": as_text(as_jsonl(rows)),
                "customers.json.gz": gzip.compress(encodings(rows)["customers.json"], mtime=0),
            }
        }
    )
    for key in maps.maps["shop"]:
        sources[f"ConfigMap {key}"] = ConfigMapSource(maps, "shop", key)
    return sources


def as_text(data: bytes) -> str:
    return data.decode("utf-8")


def test_the_same_customers_in_every_format_freeze_to_the_same_snapshot(
    storage_backend: StorageBackend,
) -> None:
    rows = make_customers(N)
    store = storage_backend.store
    reference_folder = storage_backend.location("reference")
    reference = write_snapshot(store, reference_folder, load_customers(TextSource(as_jsonl(rows), "l.jsonl")))
    reference_bytes = store.get(reference_folder, SNAPSHOT_NAME)
    assert reference.count == N
    assert [json.loads(line)["id"] for line in reference_bytes.splitlines()] == sorted(r["id"] for r in rows)
    for name, source in every_source(storage_backend, rows).items():
        folder = storage_backend.location(f"frozen/{name.replace(' ', '-')}")
        ref = freeze_snapshot(source, store, folder, target_template=TARGET)
        assert (ref.sha256, ref.count) == (reference.sha256, N), name
        assert store.get(folder, SNAPSHOT_NAME) == reference_bytes, name
        assert set(folder_listing(store, folder)) == {SNAPSHOT_NAME, index_key(SNAPSHOT_NAME)}


def test_the_same_customers_in_every_format_make_the_same_release(tmp_path: Path) -> None:
    rows = make_customers(N)
    files = encodings(rows)
    maps = InMemoryConfigMaps({"shop": {"customers.csv": as_text(files["customers.csv"])}})
    lists = tmp_path / "lists"
    lists.mkdir()
    for name, body in files.items():
        (lists / name).write_bytes(body)
    local = StoreSet(Storage(), max_in_flight=4)
    sources: dict[str, CustomerSource] = {
        "jsonl": ObjectSource((lists / "customers.jsonl").as_uri(), local),
        "json-array-gz": ObjectSource((lists / "customers.json.gz").as_uri(), local),
        "csv-bom": ObjectSource((lists / "customers-bom.csv").as_uri(), local),
        "configmap-csv": ConfigMapSource(maps, "shop", "customers.csv"),
    }
    releases = {name: release_from(source, tmp_path, name) for name, source in sources.items()}
    reference = releases.pop("jsonl")
    assert len(reference) == 3 * N
    one = rows[0]
    assert reference[f"{one['id']}/config.js"] == (
        f'window.API = "{one["apiUrl"]}";\n'.encode(),
        "text/javascript; charset=utf-8",
    )
    for name, files_of in releases.items():
        assert files_of == reference, name


# --- a shard reads only its slice ---------------------------------------------------------------------


class CountingStore:
    """A store that counts the bytes it hands out (wrapping a real one)."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.bytes_read = 0
        self.whole_reads: list[str] = []

    def get(self, loc: Location, key: str) -> bytes:
        data = self.inner.get(loc, key)
        self.bytes_read += len(data)
        self.whole_reads.append(key)
        return data

    def get_range(self, loc: Location, key: str, start: int, end: int) -> bytes:
        data = self.inner.get_range(loc, key, start, end)
        self.bytes_read += len(data)
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def frozen(
    backend: StorageBackend, n: int, name: str = "run", **kwargs: Any
) -> tuple[SnapshotRef, list[dict[str, Any]]]:
    rows = make_customers(n)
    folder = backend.location(name)
    ref = freeze_snapshot(TextSource(as_jsonl(rows), "l.jsonl"), backend.store, folder, **kwargs)
    return ref, sorted(({"id": r["id"], **r} for r in rows), key=lambda r: r["id"])


def test_shards_read_their_slices_by_range(storage_backend: StorageBackend) -> None:
    ref, customers = frozen(storage_backend, 20_000)
    size = 50
    counting = CountingStore(storage_backend.store)
    snapshot_bytes = len(storage_backend.store.get(storage_backend.location("run"), SNAPSHOT_NAME))
    for index in (0, 1, 137, shard_count(ref.count, size) - 1):
        counting.bytes_read = 0
        got = read_slice(counting, ref.url, ref.sha256, index, size)
        assert got == customers[index * size : (index + 1) * size]
        assert counting.bytes_read < snapshot_bytes / 20, counting.bytes_read
    assert SNAPSHOT_NAME not in counting.whole_reads  # only ranges of the snapshot itself
    with pytest.raises(SnapshotError, match="out of range: 20000 customers make 400 shard"):
        read_slice(storage_backend.store, ref.url, ref.sha256, 400, size)


def test_a_changed_snapshot_or_index_is_refused(storage_backend: StorageBackend) -> None:
    ref, customers = frozen(storage_backend, 3000)
    folder = storage_backend.location("run")
    data = bytearray(storage_backend.store.get(folder, SNAPSHOT_NAME))
    at = data.index(b"cust-0002000")
    data[at + 5] = ord("9")  # one customer's id changes
    storage_backend.store.put(folder, SNAPSHOT_NAME, bytes(data))
    size = 100
    changed = 2000 // size
    with pytest.raises(SnapshotError, match="do not match its slice index: it changed since the run began"):
        read_slice(storage_backend.store, ref.url, ref.sha256, changed, size)
    assert read_slice(storage_backend.store, ref.url, ref.sha256, 0, size) == customers[:size]
    # an index written for another list
    frozen(storage_backend, 10, "other")
    storage_backend.store.put(
        folder,
        index_key(SNAPSHOT_NAME),
        storage_backend.store.get(storage_backend.location("other"), index_key(SNAPSHOT_NAME)),
    )
    with pytest.raises(SnapshotError, match="it changed since the run began"):
        read_slice(storage_backend.store, ref.url, ref.sha256, 0, size)


def test_a_shard_reading_its_slice_does_not_grow_with_the_list(tmp_path: Path) -> None:
    """Twenty-five times the customers cost a shard no more memory."""
    store = LocalStore()
    peaks: dict[int, int] = {}
    for n in (4_000, 100_000):
        folder = parse_url((tmp_path / str(n)).as_uri())
        ref = freeze_snapshot(TextSource(as_jsonl(make_customers(n)), "l.jsonl"), store, folder)
        tracemalloc.start()
        read_slice(store, ref.url, ref.sha256, 7, 50)
        peaks[n] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peaks[100_000] < 1.2 * peaks[4_000], peaks
