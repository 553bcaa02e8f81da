"""Customer lists read from objects on both backends: in ranges, gzip, BOMs, missing objects; and
Secrets from a folder laid out like mounted Secret volumes."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from tests.harness.customer_lists import as_csv, as_jsonl, encodings, make_customers
from tests.harness.s3_fixtures import StorageBackend
from webrelease.copier.sources import DirectorySecrets, MissingReference, ObjectSource
from webrelease.copier.sources.base import READ_CHUNK_BYTES
from webrelease.copier.storage.storeset import StoreSet


def stores_of(backend: StorageBackend) -> StoreSet:
    return StoreSet(
        backend.settings, max_in_flight=8, credentials=backend.credentials, on_request=backend.events.append
    )


def operations(backend: StorageBackend, key: str) -> list[str]:
    return [e.operation for e in backend.events if e.key.endswith(key)]


def test_a_large_list_is_read_in_ranged_gets_without_a_head(storage_backend: StorageBackend) -> None:
    rows = make_customers(60_000)
    body = as_jsonl(rows)
    assert len(body) > 2 * READ_CHUNK_BYTES
    lists = storage_backend.location("lists")
    storage_backend.store.put(lists, "big.jsonl", body)
    storage_backend.events.clear()
    recs = list(ObjectSource(lists.url + "big.jsonl", stores_of(storage_backend)).records())
    assert [r.value for r in recs] == rows
    assert recs[-1].where == "line 60000"
    gets = -(-len(body) // READ_CHUNK_BYTES)
    assert operations(storage_backend, "big.jsonl") == ["GetObject"] * gets


def test_a_list_of_exactly_one_chunk_ends_cleanly(storage_backend: StorageBackend) -> None:
    line = b'{"id":"a","pad":"' + b"x" * 100 + b'"}\n'
    body = line * (READ_CHUNK_BYTES // len(line))
    body += b" " * (READ_CHUNK_BYTES - len(body) - 1) + b"\n"  # blanks, then exactly one chunk
    assert len(body) == READ_CHUNK_BYTES
    lists = storage_backend.location("lists")
    storage_backend.store.put(lists, "exact.jsonl", body)
    storage_backend.events.clear()
    recs = list(ObjectSource(lists.url + "exact.jsonl", stores_of(storage_backend)).records())
    assert len(recs) == READ_CHUNK_BYTES // len(line)
    assert all(r.error is None for r in recs)
    # the second range is past the end: one HeadObject tells the end from an error
    assert operations(storage_backend, "exact.jsonl") == ["GetObject", "GetObject", "HeadObject"]


def test_every_encoding_of_an_object_reads_the_same(storage_backend: StorageBackend) -> None:
    rows = make_customers(300)
    lists = storage_backend.location("lists")
    for name, body in encodings(rows).items():
        storage_backend.store.put(lists, name, body)
    # a gzip'd list without the extension is found by its content
    storage_backend.store.put(lists, "customers-csv-gzip", gzip.compress(as_csv(rows)))
    stores = stores_of(storage_backend)
    for name in [*encodings(rows), "customers-csv-gzip"]:
        fmt = "csv" if name == "customers-csv-gzip" else "auto"
        recs = list(ObjectSource(lists.url + name, stores, fmt).records())
        assert [r.error for r in recs if r.error] == [], name
        assert [r.value for r in recs] == rows, name


def test_missing_and_empty_objects(storage_backend: StorageBackend) -> None:
    lists = storage_backend.location("lists")
    storage_backend.store.put(lists, "empty.jsonl", b"")
    stores = stores_of(storage_backend)
    missing = list(ObjectSource(lists.url + "nope.jsonl", stores).records())
    assert [(r.where, r.error) for r in missing] == [("object", f"{lists.url}nope.jsonl does not exist")]
    assert list(ObjectSource(lists.url + "empty.jsonl", stores).records()) == []
    folder = list(ObjectSource(lists.url, stores).records())
    assert folder[0].where == "object" and "must name an object" in str(folder[0].error)


def test_records_stream_from_the_first_range(storage_backend: StorageBackend) -> None:
    """The first record comes before the rest of the object is fetched."""
    rows = make_customers(60_000)
    lists = storage_backend.location("lists")
    storage_backend.store.put(lists, "big.jsonl", as_jsonl(rows))
    storage_backend.events.clear()
    records = ObjectSource(lists.url + "big.jsonl", stores_of(storage_backend)).records()
    assert next(records).value == rows[0]
    assert operations(storage_backend, "big.jsonl") == ["GetObject"]


def test_directory_secrets_read_mounted_secret_files(tmp_path: Path) -> None:
    (tmp_path / "shop-db").mkdir()
    (tmp_path / "shop-db" / "url").write_text("postgresql+psycopg://u:p@h/db\n")
    (tmp_path / "shop-db" / "user").write_text("u")
    secrets = DirectorySecrets(tmp_path)
    assert secrets.secret_value("shop-db", "url") == "postgresql+psycopg://u:p@h/db"
    for name, key, message in [
        ("other", "url", "Secret 'other' not found"),
        ("shop-db", "password", "Secret 'shop-db' has no key 'password' (its keys: url, user)"),
        ("../etc", "passwd", "Secret '../etc' key 'passwd': not a valid name"),
    ]:
        with pytest.raises(MissingReference) as info:
            secrets.secret_value(name, key)
        assert (info.value.where, info.value.message) == ("Secret", message)
