"""The frozen list: written once, read back by slice, checked by sha256 — on both backends."""

from __future__ import annotations

import hashlib

import pytest

from tests.harness.s3_fixtures import StorageBackend
from webrelease.copier.customers import CustomerListError, load_customers
from webrelease.copier.runlayout import run_folder
from webrelease.copier.snapshot import SnapshotError, read_slice, write_snapshot
from webrelease.copier.sources import ObjectSource


def test_written_once_read_by_slice(storage_backend: StorageBackend) -> None:
    customers = [{"id": f"c{i:03d}", "n": i} for i in range(23)]
    report = run_folder(storage_backend.location("reports"), "default", "rel", "run-1")
    ref = write_snapshot(storage_backend.store, report, customers)
    assert ref.count == 23
    assert ref.url == report.url + "customers.jsonl"
    data = storage_backend.store.get(report, "customers.jsonl")
    assert hashlib.sha256(data).hexdigest() == ref.sha256
    slices = [read_slice(storage_backend.store, ref.url, ref.sha256, i, 10) for i in range(3)]
    assert [len(s) for s in slices] == [10, 10, 3]
    assert [c for s in slices for c in s] == customers
    with pytest.raises(SnapshotError, match="out of range"):
        read_slice(storage_backend.store, ref.url, ref.sha256, 3, 10)


def test_a_changed_snapshot_is_refused(storage_backend: StorageBackend) -> None:
    report = storage_backend.location("r")
    ref = write_snapshot(storage_backend.store, report, [{"id": "a"}, {"id": "b"}])
    storage_backend.store.put(report, "customers.jsonl", b'{"id":"a"}\n{"id":"evil"}\n')
    with pytest.raises(SnapshotError, match="expected " + ref.sha256):
        read_slice(storage_backend.store, ref.url, ref.sha256, 0, 10)
    # without a sha256 the list is taken as it is
    assert [c["id"] for c in read_slice(storage_backend.store, ref.url, None, 0, 10)] == ["a", "evil"]


def test_a_customer_list_object_is_read_and_validated(storage_backend: StorageBackend) -> None:
    lists = storage_backend.location("lists")
    storage_backend.store.put(lists, "c.csv", b"id,name\nzeta,Z\nalpha,A\n")
    out = load_customers(ObjectSource(lists.url + "c.csv", lambda _loc: storage_backend.store))
    assert out == [{"id": "alpha", "name": "A"}, {"id": "zeta", "name": "Z"}]
    with pytest.raises(CustomerListError, match=r"missing\.jsonl does not exist"):
        load_customers(ObjectSource(lists.url + "missing.jsonl", lambda _loc: storage_backend.store))
