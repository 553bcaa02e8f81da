"""The Store contract, run on both backends: a real S3 server (versitygw) and local folders.

Every test reads back what it wrote through the store (and, for the local backend, what is on
disk), so a backend that silently drops bytes, metadata or content types fails here.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.harness.s3_fixtures import ExternalS3, StorageBackend
from webrelease.copier.storage import (
    InvalidKey,
    Location,
    NotFound,
    ObjectInfo,
    RequestEvent,
    StorageError,
)

BINARY = bytes(range(256)) * 41 + b"\x00\xff\x00"


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def listing(backend: StorageBackend, loc: Location) -> dict[str, ObjectInfo]:
    return {o.key: o for o in backend.store.list(loc)}


def ops(events: list[RequestEvent]) -> list[str]:
    return [e.operation for e in events]


def test_put_get_list_nested_and_binary(storage_backend: StorageBackend) -> None:
    store, loc = storage_backend.store, storage_backend.location("site")
    files = {
        "index.html": b"<html>hello</html>",
        "assets/app.js": b"console.log('x')\n",
        "assets/img/logo.png": BINARY,
        "deep/a/b/c/d/e.txt": b"",
        "unicode/caf\u00e9 \u2603.txt": "d\u00e9j\u00e0 vu".encode(),
    }
    for key, body in files.items():
        store.put(loc, key, body)

    listed = listing(storage_backend, loc)
    assert sorted(listed) == sorted(files)
    assert [o.key for o in store.list(loc)] == sorted(files), "listing is in key order"
    for key, body in files.items():
        assert listed[key].size == len(body)
        assert listed[key].md5 == md5(body)
        assert store.get(loc, key) == body
    # A sub-location sees only its own objects, keys relative to it.
    assert {o.key for o in store.list(loc.child("assets"))} == {"app.js", "img/logo.png"}
    # An empty or missing location lists nothing.
    assert list(store.list(storage_backend.location("nothing-here"))) == []


def test_prefix_is_not_a_string_prefix(storage_backend: StorageBackend) -> None:
    store = storage_backend.store
    a, a2 = storage_backend.location("site"), storage_backend.location("site2")
    store.put(a, "x.txt", b"a")
    store.put(a2, "y.txt", b"b")
    assert [o.key for o in store.list(a)] == ["x.txt"]


def test_put_overwrites_and_keeps_content_type_and_metadata(storage_backend: StorageBackend) -> None:
    store, loc = storage_backend.store, storage_backend.location("site")
    store.put(loc, "config.json", b'{"a":1}', content_type="application/json", metadata={"sha256": "aa"})
    store.put(loc, "config.json", b'{"a":2}', content_type="application/json", metadata={"sha256": "bb"})
    info = store.head(loc, "config.json")
    assert info.size == 7
    assert info.md5 == md5(b'{"a":2}')
    assert info.metadata == {"sha256": "bb"}
    assert info.content_type == "application/json"
    assert store.get(loc, "config.json") == b'{"a":2}'


def test_default_content_type_is_guessed_from_the_key(storage_backend: StorageBackend) -> None:
    store, loc = storage_backend.store, storage_backend.location("site")
    expected = {
        "index.html": "text/html",
        "app.js": "text/javascript",
        "style.css": "text/css",
        "logo.svg": "image/svg+xml",
        "font.woff2": "font/woff2",
        "blob.unknownext": "application/octet-stream",
    }
    for key in expected:
        store.put(loc, key, b"x")
    assert {k: store.head(loc, k).content_type for k in expected} == expected


def test_get_range(storage_backend: StorageBackend) -> None:
    store, loc = storage_backend.store, storage_backend.location("site")
    store.put(loc, "bin/data", BINARY)
    assert store.get_range(loc, "bin/data", 0, 0) == BINARY[:1]
    assert store.get_range(loc, "bin/data", 10, 299) == BINARY[10:300]
    assert store.get_range(loc, "bin/data", len(BINARY) - 3, len(BINARY) + 100) == BINARY[-3:]
    with pytest.raises(NotFound):
        store.get_range(loc, "bin/missing", 0, 10)
    with pytest.raises(StorageError):
        store.get_range(loc, "bin/data", len(BINARY) + 5, len(BINARY) + 10)


def test_copy_replaces_metadata_and_content_type(storage_backend: StorageBackend) -> None:
    store = storage_backend.store
    src, dst = storage_backend.location("build"), storage_backend.location("sites/acme")
    store.put(src, "assets/logo.png", BINARY, content_type="image/png", metadata={"origin": "ci"})
    store.copy(
        src,
        "assets/logo.png",
        dst,
        "assets/logo.png",
        size=len(BINARY),
        content_type="image/png",
        metadata={"webrelease-sha256": hashlib.sha256(BINARY).hexdigest()},
    )
    info = store.head(dst, "assets/logo.png")
    assert info.metadata == {"webrelease-sha256": hashlib.sha256(BINARY).hexdigest()}
    assert info.content_type == "image/png"
    assert info.md5 == md5(BINARY)
    assert store.get(dst, "assets/logo.png") == BINARY
    listed = listing(storage_backend, dst)
    assert listed["assets/logo.png"].md5 == md5(BINARY), "a copied object's listed md5 is its content's"
    # The source is untouched.
    assert store.head(src, "assets/logo.png").metadata == {"origin": "ci"}


def test_copy_without_metadata_keeps_the_sources(storage_backend: StorageBackend) -> None:
    store = storage_backend.store
    src, dst = storage_backend.location("build"), storage_backend.location("sites/acme")
    store.put(src, "a.css", b"body{}", content_type="text/css", metadata={"k": "v"})
    store.copy(src, "a.css", dst, "b.css", size=6)
    info = store.head(dst, "b.css")
    assert (info.content_type, info.metadata, store.get(dst, "b.css")) == ("text/css", {"k": "v"}, b"body{}")


def test_copy_onto_itself_with_new_metadata(storage_backend: StorageBackend) -> None:
    store, loc = storage_backend.store, storage_backend.location("site")
    store.put(loc, "a.txt", b"same bytes", metadata={"v": "1"})
    store.copy(loc, "a.txt", loc, "a.txt", size=10, content_type="text/plain", metadata={"v": "2"})
    info = store.head(loc, "a.txt")
    assert (info.metadata, store.get(loc, "a.txt")) == ({"v": "2"}, b"same bytes")


def test_missing_objects_raise_not_found(storage_backend: StorageBackend) -> None:
    store, loc = storage_backend.store, storage_backend.location("site")
    store.put(loc, "dir/present.txt", b"x")
    for call in (
        lambda: store.get(loc, "absent.txt"),
        lambda: store.head(loc, "absent.txt"),
        lambda: store.get(loc, "dir"),  # a "folder" is not an object
        lambda: store.copy(loc, "absent.txt", loc, "copy.txt", size=1),
    ):
        with pytest.raises(NotFound):
            call()
    assert [o.key for o in store.list(loc)] == ["dir/present.txt"], "a failed copy writes nothing"


def test_delete_in_batches_of_1000(storage_backend: StorageBackend) -> None:
    store, loc = storage_backend.store, storage_backend.location("site")
    keys = [f"d{i % 7}/f{i:05d}.txt" for i in range(2100)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: store.put(loc, k, k.encode()), keys))
    store.put(loc, "keep/me.txt", b"keep")
    assert len(listing(storage_backend, loc)) == 2101

    storage_backend.events.clear()
    store.delete(loc, [*keys, "never/existed.txt"])
    assert ops(storage_backend.events) == ["DeleteObjects"] * 3, "2101 keys go in 3 batches of <= 1000"
    assert [(o.key, store.get(loc, o.key)) for o in store.list(loc)] == [("keep/me.txt", b"keep")]
    store.delete(loc, [])  # nothing to do, no request
    assert ops(storage_backend.events).count("DeleteObjects") == 3


def test_request_events_are_counted_and_ordered(storage_backend: StorageBackend) -> None:
    store = storage_backend.store
    src, dst = storage_backend.location("build"), storage_backend.location("site")
    store.put(src, "a.js", b"a")
    store.copy(src, "a.js", dst, "a.js", size=1, content_type="text/javascript", metadata={})
    store.put(dst, "index.html", b"<html>")
    list(store.list(dst))
    store.head(dst, "index.html")
    store.get(dst, "index.html")
    store.get_range(dst, "a.js", 0, 0)
    store.delete(dst, ["a.js"])
    b = storage_backend.bucket
    assert storage_backend.events == [
        RequestEvent("PutObject", b, src.prefix + "a.js"),
        RequestEvent("CopyObject", b, dst.prefix + "a.js"),
        RequestEvent("PutObject", b, dst.prefix + "index.html"),
        RequestEvent("ListObjectsV2", b, dst.prefix),
        RequestEvent("HeadObject", b, dst.prefix + "index.html"),
        RequestEvent("GetObject", b, dst.prefix + "index.html"),
        RequestEvent("GetObject", b, dst.prefix + "a.js"),
        RequestEvent("DeleteObjects", b, ""),
    ]


def test_listing_pages_are_requests(storage_backend: StorageBackend) -> None:
    store, loc = storage_backend.store, storage_backend.location("site")
    keys = [f"k{i:04d}" for i in range(1001)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: store.put(loc, k, b"."), keys))
    storage_backend.events.clear()
    assert [o.key for o in store.list(loc)] == keys
    assert ops(storage_backend.events) == ["ListObjectsV2", "ListObjectsV2"]


@pytest.mark.parametrize(
    "key",
    ["../escape.txt", "a/../../escape.txt", "/etc/passwd", "a\\..\\b", "a//b", "./a", "a/./b", "", "a/"],
)
def test_keys_that_leave_the_location_are_refused(storage_backend: StorageBackend, key: str) -> None:
    store, loc = storage_backend.store, storage_backend.location("site")
    store.put(loc, "ok.txt", b"ok")
    for call in (
        lambda: store.put(loc, key, b"evil"),
        lambda: store.get(loc, key),
        lambda: store.head(loc, key),
        lambda: store.get_range(loc, key, 0, 1),
        lambda: store.copy(loc, "ok.txt", loc, key, size=2),
        lambda: store.copy(loc, key, loc, "ok2.txt", size=2),
        lambda: store.delete(loc, ["ok.txt", key]),
    ):
        with pytest.raises(InvalidKey):
            call()
    assert [o.key for o in store.list(loc)] == ["ok.txt"], "nothing was written or deleted"
    assert storage_backend.events == [
        RequestEvent("PutObject", storage_backend.bucket, loc.prefix + "ok.txt"),
        RequestEvent("ListObjectsV2", storage_backend.bucket, loc.prefix),
    ]


def test_concurrent_writers_of_one_key_leave_one_whole_object(storage_backend: StorageBackend) -> None:
    store, loc = storage_backend.store, storage_backend.location("site")
    bodies = [bytes([i]) * (64 * 1024 + i) for i in range(24)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda b: store.put(loc, "hot.bin", b, metadata={"n": str(len(b))}), bodies))
    data = store.get(loc, "hot.bin")
    assert data in bodies
    [info] = store.list(loc)
    assert (info.size, info.md5) == (len(data), md5(data))


# -- local backend only: what is on disk ------------------------------------------------------


def test_local_sidecar_is_hidden_and_stale_sidecars_are_ignored(tmp_path: Path) -> None:
    from webrelease.copier.storage import LocalStore, parse_url

    store = LocalStore()
    loc = parse_url(tmp_path.as_uri())
    store.put(loc, "a/b.txt", b"one", metadata={"h": "1"}, content_type="text/plain")
    assert (tmp_path / "a" / "b.txt").read_bytes() == b"one"
    assert [o.key for o in store.list(loc)] == ["a/b.txt"]
    assert {p.name for p in (tmp_path / "a").iterdir()} == {"b.txt", ".webrelease-meta"}
    with pytest.raises(InvalidKey):
        store.put(loc, "a/.webrelease-meta/b.txt.json", b"{}")

    # Someone edits the file behind our back: its old metadata (and md5) must not be trusted.
    path = tmp_path / "a" / "b.txt"
    path.write_bytes(b"two!")
    os.utime(path, ns=(1, 1))
    info = store.head(loc, "a/b.txt")
    assert (info.metadata, info.md5) == ({}, md5(b"two!"))
    assert [(o.key, o.md5) for o in store.list(loc)] == [("a/b.txt", md5(b"two!"))]

    store.delete(loc, ["a/b.txt"])
    assert list(tmp_path.iterdir()) == [], "a delete leaves no empty folder or sidecar behind"


def test_local_symlink_out_of_the_location_is_refused(tmp_path: Path) -> None:
    from webrelease.copier.storage import LocalStore, parse_url

    outside = tmp_path / "outside"
    outside.mkdir()
    site = tmp_path / "site"
    site.mkdir()
    (site / "link").symlink_to(outside)
    store = LocalStore()
    with pytest.raises(InvalidKey):
        store.put(parse_url(site.as_uri()), "link/evil.txt", b"x")
    assert list(outside.iterdir()) == []


def test_a_key_cannot_be_an_object_and_a_folder(storage_backend: StorageBackend) -> None:
    """Both backends keep objects as files (versitygw's POSIX backend too): ``a`` and ``a/b``
    cannot coexist. The write fails clearly and the existing object is untouched."""
    if storage_backend.scheme == "s3" and ExternalS3.from_env().endpoint:
        pytest.skip("an external S3 endpoint may well allow 'a' and 'a/b' side by side (AWS does)")
    store, loc = storage_backend.store, storage_backend.location("site")
    store.put(loc, "a", b"file")
    store.put(loc, "x/y", b"nested")
    with pytest.raises(StorageError):
        store.put(loc, "a/b", b"under a file")
    with pytest.raises(StorageError):
        store.put(loc, "x", b"over a folder")
    assert {o.key: store.get(loc, o.key) for o in store.list(loc)} == {"a": b"file", "x/y": b"nested"}
