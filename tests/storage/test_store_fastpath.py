"""The S3 store's lean fast path (storage/fastpath.py) against the real server: it writes and lists
exactly what boto3 does, and anything but a success falls back to boto3."""

from __future__ import annotations

import contextlib
import hashlib
import select
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import botocore.auth
import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import ReadOnlyCredentials

from tests.harness.s3server import FaultProxy, S3Endpoint
from webrelease.copier.storage import Location, RequestEvent, StorageError, open_store, parse_url
from webrelease.copier.storage.fastpath import FastPath, sign, signing_key
from webrelease.copier.storage.s3 import S3Store

pytestmark = pytest.mark.storage

KEYS = ["index.html", "a b+c%d&e~f.txt", "assets/\u00fcber.css", "deep/er/x(1)=[2];.js", "plain"]


def s3_store(endpoint: S3Endpoint, events: list[RequestEvent] | None = None, **kwargs: Any) -> S3Store:
    kwargs.setdefault("max_in_flight", 8)
    kwargs.setdefault("credentials", endpoint.credentials)
    return S3Store.from_settings(
        endpoint.storage_settings(), on_request=None if events is None else events.append, **kwargs
    )


def fast_of(store: S3Store) -> FastPath:
    fast = store.fast_path
    assert fast is not None, "the fast path is on by default"
    return fast


@pytest.fixture
def bucket_loc(s3_bucket: str) -> Location:
    return parse_url(f"s3://{s3_bucket}/")


def snapshot(endpoint: S3Endpoint, loc: Location) -> dict[str, tuple[bytes, str, dict[str, str], str]]:
    """Every object under ``loc`` as boto3 reads it back: bytes, content type, metadata, ETag."""
    client = endpoint.client()
    found: dict[str, tuple[bytes, str, dict[str, str], str]] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=loc.bucket, Prefix=loc.prefix):
        for obj in page.get("Contents", []):
            got = client.get_object(Bucket=loc.bucket, Key=obj["Key"])
            found[obj["Key"][len(loc.prefix) :]] = (
                got["Body"].read(),
                got["ContentType"],
                dict(got["Metadata"]),
                got["ETag"],
            )
    return found


def write_everything(store: S3Store, src: Location, dst: Location) -> None:
    for i, key in enumerate(KEYS):
        store.put(dst, f"put/{key}", f"body {i} {key}".encode(), metadata={"sha256": f"{i:064x}"})
        store.put(dst, f"typed/{key}", b"<p>typed</p>", content_type="text/html; charset=utf-8")
        store.copy(src, key, dst, f"copy/{key}", size=1, metadata={"webrelease-sha256": "ab" * 32})
        store.copy(src, key, dst, f"same/{key}", size=1)  # metadata and content type copied
        store.copy(src, key, dst, f"ctype/{key}", size=1, content_type="application/json")


def test_fast_path_writes_exactly_what_boto3_writes(s3_server: S3Endpoint, bucket_loc: Location) -> None:
    src = bucket_loc.child("src")
    client = s3_server.client()
    for key in KEYS:
        client.put_object(
            Bucket=src.bucket,
            Key=src.prefix + key,
            Body=f"source {key}".encode(),
            ContentType="text/x-source",
            Metadata={"origin": "build"},
        )
    fast_events: list[RequestEvent] = []
    fast_store = s3_store(s3_server, fast_events)
    slow_store = s3_store(s3_server, fast_path=False)
    assert slow_store.fast_path is None
    assert list(fast_store.list(bucket_loc.child("nothing-yet"))) == []  # boto3: learns the route

    write_everything(fast_store, src, bucket_loc.child("fast"))
    write_everything(slow_store, src, bucket_loc.child("slow"))

    fast = fast_of(fast_store)
    writes = 5 * len(KEYS)
    assert (fast.completed, fast.fell_back) == (writes, 0), "every write took the fast path"
    assert [e.operation for e in fast_events].count("CopyObject") == 3 * len(KEYS)
    assert [e.operation for e in fast_events].count("PutObject") == 2 * len(KEYS)
    assert RequestEvent("PutObject", bucket_loc.bucket, "fast/put/a b+c%d&e~f.txt") in fast_events

    fast_objects = snapshot(s3_server, bucket_loc.child("fast"))
    slow_objects = snapshot(s3_server, bucket_loc.child("slow"))
    assert len(fast_objects) == writes
    assert fast_objects == slow_objects
    assert fast_objects["same/plain"][1:3] == ("text/x-source", {"origin": "build"})
    assert fast_objects["copy/index.html"][1:3] == ("text/html", {"webrelease-sha256": "ab" * 32})
    assert fast_objects["typed/plain"][1] == "text/html; charset=utf-8"


def test_fast_path_lists_exactly_what_boto3_lists(s3_server: S3Endpoint, bucket_loc: Location) -> None:
    """Over two pages (S3 returns at most 1,000 keys per page), odd keys and folder markers."""
    site = bucket_loc.child("site")
    events: list[RequestEvent] = []
    store = s3_store(s3_server, events, max_in_flight=16)
    slow = s3_store(s3_server, fast_path=False)
    assert list(store.list(site)) == []  # boto3: learns the route
    names = [f"p/{i:04d}.html" for i in range(1_010)] + KEYS
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: store.put(site, k, k.encode() * 3), names))
    client = s3_server.client()
    client.put_object(Bucket=site.bucket, Key=site.prefix, Body=b"")
    client.put_object(Bucket=site.bucket, Key=site.prefix + "assets/", Body=b"")
    big = bytes(range(256)) * 100
    client.put_object(Bucket=site.bucket, Key=site.prefix + "big.bin", Body=big)

    events.clear()
    before = fast_of(store).completed
    listed = list(store.list(site))
    assert [e.operation for e in events] == ["ListObjectsV2"] * 2
    assert fast_of(store).completed - before == 2, "both pages came through the fast path"
    assert listed == list(slow.list(site))
    assert sorted(o.key for o in listed) == sorted([*names, "big.bin"])
    by_key = {o.key: o for o in listed}
    assert by_key["a b+c%d&e~f.txt"].size == len(b"a b+c%d&e~f.txt") * 3
    assert by_key["big.bin"].md5 is not None and by_key["big.bin"].size == len(big)


@pytest.fixture
def proxy(s3_server: S3Endpoint) -> Iterator[FaultProxy]:
    with FaultProxy(s3_server) as p:
        yield p


def test_throttled_fast_requests_are_sent_again_on_the_fast_path(
    proxy: FaultProxy, bucket_loc: Location
) -> None:
    """A SlowDown on the fast path is the governor's: paced, and sent again on the fast path (boto3
    would only add CPU per request while S3 is the limit)."""
    events: list[RequestEvent] = []
    store = s3_store(proxy.endpoint, events, throttle_backoff=0.005)
    fast = fast_of(store)
    store.put(bucket_loc, "src.txt", b"source")  # boto3: learns the route
    assert fast.knows(bucket_loc.bucket)
    events.clear()

    proxy.throttle(1)
    store.copy(bucket_loc, "src.txt", bucket_loc, "dst.txt", size=6, metadata={"k": "v"})
    assert [e.operation for e in events] == ["CopyObject", "CopyObject"], "fast 503, then fast again"
    proxy.throttle(1)
    store.put(bucket_loc, "put.txt", b"put", metadata={"k": "v"})
    proxy.throttle(1)
    listed = {o.key for o in store.list(bucket_loc)}
    assert proxy.throttled == 3
    assert (fast.throttled, fast.fell_back) == (3, 0)
    assert store.governor.stats().throttled == 3
    assert [e.operation for e in events] == ["CopyObject"] * 2 + ["PutObject"] * 2 + ["ListObjectsV2"] * 2
    assert listed == {"src.txt", "dst.txt", "put.txt"}
    assert store.get(bucket_loc, "dst.txt") == b"source"
    assert store.head(bucket_loc, "put.txt").metadata == {"k": "v"}


def test_fast_path_does_not_pause_while_s3_throttles(proxy: FaultProxy, bucket_loc: Location) -> None:
    """Throttling is not an outage: the fast path stays on (only the pace changes)."""
    events: list[RequestEvent] = []
    store = s3_store(proxy.endpoint, events, throttle_backoff=0.005)
    store.put(bucket_loc, "a.txt", b"a")
    events.clear()
    proxy.throttle(3)
    for key in ("b.txt", "c.txt"):
        store.put(bucket_loc, key, key.encode())
    # b: three 503s then success, c: success; all on the fast path.
    assert [e.operation for e in events] == ["PutObject"] * 5
    assert (fast_of(store).throttled, fast_of(store).fell_back, fast_of(store).completed) == (3, 0, 2)
    assert {o.key for o in store.list(bucket_loc)} == {"a.txt", "b.txt", "c.txt"}


def test_endless_throttling_still_fails_with_boto3s_message(proxy: FaultProxy, bucket_loc: Location) -> None:
    store = s3_store(proxy.endpoint, max_attempts=2, throttle_deadline=0.5, throttle_backoff=0.05)
    store.put(bucket_loc, "a.txt", b"a")
    proxy.throttle(None)
    with pytest.raises(StorageError, match="kept throttling") as info:
        store.copy(bucket_loc, "a.txt", bucket_loc, "b.txt", size=1)
    text = f"{info.value} {info.value!r}"
    assert proxy.endpoint.secret_key not in text and proxy.endpoint.access_key not in text


def test_fast_path_can_be_turned_off(s3_server: S3Endpoint, bucket_loc: Location) -> None:
    events: list[RequestEvent] = []
    store = open_store(
        "s3",
        s3_server.storage_settings(),
        max_in_flight=4,
        credentials=s3_server.credentials,
        on_request=events.append,
        fast_path=False,
    )
    assert isinstance(store, S3Store) and store.fast_path is None
    store.put(bucket_loc, "a.txt", b"a")
    store.copy(bucket_loc, "a.txt", bucket_loc, "b.txt", size=1)
    assert [e.operation for e in events] == ["PutObject", "CopyObject"]
    assert store.get(bucket_loc, "b.txt") == b"a"


#: (method, path as sent, canonical query, body, headers besides host/dates/length)
SIGNED = [
    ("PUT", "/bkt/a%20b%2Bc/%C3%BC.txt", "", b"hello", {"content-type": "text/plain", "x-amz-meta-k": "v"}),
    (
        "PUT",
        "/bkt/dst/x.js",
        "",
        b"",
        {"x-amz-copy-source": "src/a%20b.js", "x-amz-metadata-directive": "COPY"},
    ),
    ("GET", "/bkt", "continuation-token=1%2Fa%3D&encoding-type=url&list-type=2&prefix=p%2Fq%20r", b"", {}),
]


@pytest.mark.parametrize("token", [None, "FwoGZXIvYXdzEXAMPLE/TOKEN+=="])
@pytest.mark.parametrize("case", SIGNED, ids=["put", "copy", "list"])
def test_signature_is_botocores(
    monkeypatch: pytest.MonkeyPatch, token: str | None, case: tuple[str, str, str, bytes, dict[str, str]]
) -> None:
    """The hand-made SigV4 equals botocore's S3 signer on the same request, session token included
    (versitygw cannot check tokens: it rejects every one)."""
    method, path, query, body, extra = case
    when = datetime(2026, 11, 28, 16, 45, 7, tzinfo=UTC)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: when)
    sent = dict(extra)
    if method == "PUT":
        sent["content-length"] = str(len(body))
    ours = {"host": "127.0.0.1:9000", **sent}
    sign(
        method=method,
        path=path,
        query=query,
        headers=ours,
        payload=hashlib.sha256(body).hexdigest(),
        access_key="AKIDEXAMPLE",
        token=token,
        region="eu-west-3",
        amz_date="20261128T164507Z",
        signing_key=signing_key("wJalrXUtnFEMI/K7MDENG", "20261128", "eu-west-3"),
    )
    url = f"http://127.0.0.1:9000{path}" + (f"?{query}" if query else "")
    theirs = AWSRequest(method=method, url=url, data=body, headers=sent)
    creds = ReadOnlyCredentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG", token)
    S3SigV4Auth(creds, "s3", "eu-west-3").add_auth(theirs)
    assert ours["authorization"] == theirs.headers["Authorization"]
    assert ours.get("x-amz-security-token") == token


class TlsRelay:
    """TLS in front of the plain-HTTP test server: a byte relay on 127.0.0.1 with a throwaway
    self-signed certificate (the Host header is relayed unchanged, so signatures still verify)."""

    def __init__(self, upstream: S3Endpoint, cert: Path, key: Path) -> None:
        target = urlsplit(upstream.endpoint_url)
        self._upstream = (target.hostname or "127.0.0.1", target.port or 80)
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(cert, key)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"https://127.0.0.1:{self._listener.getsockname()[1]}"
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(conn,), daemon=True).start()

    def _relay(self, conn: socket.socket) -> None:
        with (
            contextlib.suppress(OSError),
            self._context.wrap_socket(conn, server_side=True) as tls,
            socket.create_connection(self._upstream) as up,
        ):
            while not self._closed:
                ready = [tls] if tls.pending() else select.select([tls, up], [], [], 1.0)[0]
                for source in ready:
                    data = source.recv(65536)
                    if not data:
                        return
                    (up if source is tls else tls).sendall(data)

    def close(self) -> None:
        self._closed = True
        self._listener.close()


@pytest.fixture
def tls_relay(s3_server: S3Endpoint, tmp_path: Path) -> Iterator[tuple[TlsRelay, Path]]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    relay = TlsRelay(s3_server, cert, key)
    yield relay, cert
    relay.close()


def test_fast_path_over_https_with_the_clients_ca_bundle(
    s3_server: S3Endpoint, tls_relay: tuple[TlsRelay, Path], bucket_loc: Location
) -> None:
    relay, cert = tls_relay
    client = boto3.session.Session().client(
        "s3",
        endpoint_url=relay.url,
        region_name=s3_server.region,
        aws_access_key_id=s3_server.access_key,
        aws_secret_access_key=s3_server.secret_key,
        verify=str(cert),
        config=Config(s3={"addressing_style": "path"}, retries={"mode": "standard", "max_attempts": 2}),
    )
    store = S3Store(client)
    assert list(store.list(bucket_loc)) == []  # boto3 over TLS: learns the https route
    store.put(bucket_loc, "a.txt", b"over TLS", metadata={"k": "v"})
    store.copy(bucket_loc, "a.txt", bucket_loc, "b.txt", size=8, content_type="text/plain")
    assert [o.key for o in store.list(bucket_loc)] == ["a.txt", "b.txt"]
    assert (fast_of(store).completed, fast_of(store).fell_back) == (3, 0)
    got = s3_server.client().get_object(Bucket=bucket_loc.bucket, Key="b.txt")
    assert (got["Body"].read(), got["ContentType"]) == (b"over TLS", "text/plain")
