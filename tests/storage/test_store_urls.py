"""Location URLs, keys and content types: pure logic, no I/O."""

from __future__ import annotations

from pathlib import Path

import pytest

from webrelease.copier.storage import (
    InvalidKey,
    InvalidUrl,
    Location,
    StorageError,
    check_key,
    guess_content_type,
    parse_url,
)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("s3://bucket/prefix/", Location("s3", "bucket", "prefix/")),
        ("s3://bucket/prefix", Location("s3", "bucket", "prefix/")),
        ("s3://my.bucket-1/a/b/c/", Location("s3", "my.bucket-1", "a/b/c/")),
        ("s3://bucket", Location("s3", "bucket", "")),
        ("s3://bucket/", Location("s3", "bucket", "")),
        ("file:///abs/path/", Location("file", "", "/abs/path/")),
        ("file:///abs/path", Location("file", "", "/abs/path/")),
        ("file:///", Location("file", "", "/")),
        ("file://localhost/srv/x", Location("file", "", "/srv/x/")),
        ("file:///with%20space/caf%C3%A9", Location("file", "", "/with space/caf\u00e9/")),
    ],
)
def test_parse_url(url: str, expected: Location) -> None:
    loc = parse_url(url)
    assert loc == expected
    assert parse_url(loc.url) == loc, "a location's url parses back to itself"


def test_relative_file_url_needs_a_base(tmp_path: Path) -> None:
    assert parse_url("file://out/sites/", base=tmp_path) == Location(
        "file", "", f"{tmp_path.resolve()}/out/sites/"
    )
    with pytest.raises(InvalidUrl, match="absolute"):
        parse_url("file://out/sites/")


@pytest.mark.parametrize(
    "url",
    [
        "http://bucket/x",
        "s3://",
        "s3://B/x",
        "s3://ab/x",
        "s3://bucket/a/../b/",
        "s3://bucket/./a",
        "s3://bucket/a//b/",
        "s3://bucket/a\\b",
        "s3://bucket/a?x=1",
        "file://",
        "file:///a/../b",
        "file:///a//b",
        "bucket/prefix",
    ],
)
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(InvalidUrl) as info:
        parse_url(url)
    assert isinstance(info.value, StorageError) and isinstance(info.value, ValueError)


def test_location_child() -> None:
    site = parse_url("s3://sites/").child("acme")
    assert site == Location("s3", "sites", "acme/")
    assert site.child("assets/img").url == "s3://sites/acme/assets/img/"
    with pytest.raises(InvalidKey):
        site.child("../other")


@pytest.mark.parametrize("key", ["a", "a/b.txt", "caf\u00e9/\u2603", "x" * 1000, ".hidden", "a..b", "..a"])
def test_good_keys(key: str) -> None:
    assert check_key(key) == key


@pytest.mark.parametrize("key", ["", "/a", "a/", "a//b", "..", "a/../b", ".", "a\\b", "a\x00b", "x" * 1025])
def test_bad_keys(key: str) -> None:
    with pytest.raises(InvalidKey):
        check_key(key)


def test_key_length_counts_the_prefix() -> None:
    check_key("k" * 1000, "p" * 24)
    with pytest.raises(InvalidKey):
        check_key("k" * 1000, "p" * 25)


@pytest.mark.parametrize(
    ("key", "content_type"),
    [
        ("index.html", "text/html"),
        ("a/b/app.js", "text/javascript"),
        ("m.mjs", "text/javascript"),
        ("s.css", "text/css"),
        ("c.json", "application/json"),
        ("app.js.map", "application/json"),
        ("i.svg", "image/svg+xml"),
        ("i.png", "image/png"),
        ("i.webp", "image/webp"),
        ("f.woff2", "font/woff2"),
        ("m.wasm", "application/wasm"),
        ("site.webmanifest", "application/manifest+json"),
        ("README", "application/octet-stream"),
        ("x.unknownext", "application/octet-stream"),
    ],
)
def test_guess_content_type(key: str, content_type: str) -> None:
    assert guess_content_type(key) == content_type
