"""What only the S3 backend does, against the real server: ETags, multipart copy, throttling,
credentials and connection handling."""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.harness.s3server import FaultProxy, S3Endpoint, free_port
from webrelease.copier.spec import Storage
from webrelease.copier.storage import (
    Credentials,
    Location,
    NotFound,
    RequestEvent,
    StorageError,
    Store,
    open_store,
    parse_url,
)
from webrelease.copier.storage.s3 import MIN_PART_SIZE, S3Store

pytestmark = pytest.mark.storage

MiB = 1 << 20


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def s3_store(endpoint: S3Endpoint, events: list[RequestEvent] | None = None, **kwargs: object) -> S3Store:
    kwargs.setdefault("max_in_flight", 8)
    kwargs.setdefault("credentials", endpoint.credentials)
    return S3Store.from_settings(
        endpoint.storage_settings(),
        on_request=None if events is None else events.append,
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.fixture
def bucket_loc(s3_bucket: str) -> Location:
    return parse_url(f"s3://{s3_bucket}/")


def test_server_etag_is_the_md5_for_put_and_copy(s3_server: S3Endpoint, s3_bucket: str) -> None:
    """The copier's no-HEAD change detection relies on this (as on AWS S3)."""
    client = s3_server.client()
    body = os.urandom(200_000)
    client.put_object(Bucket=s3_bucket, Key="src/a.bin", Body=body)
    client.copy_object(
        Bucket=s3_bucket,
        Key="dst/a.bin",
        CopySource={"Bucket": s3_bucket, "Key": "src/a.bin"},
        MetadataDirective="REPLACE",
        Metadata={"x": "1"},
        ContentType="application/octet-stream",
    )
    # A multipart source has a "-N" ETag; a CopyObject of it gets the plain MD5 again (as on AWS).
    upload = client.create_multipart_upload(Bucket=s3_bucket, Key="src/mp.bin")
    part1, part2 = os.urandom(MIN_PART_SIZE), b"tail"
    etags = [
        client.upload_part(
            Bucket=s3_bucket, Key="src/mp.bin", UploadId=upload["UploadId"], PartNumber=n, Body=b
        )["ETag"]
        for n, b in ((1, part1), (2, part2))
    ]
    client.complete_multipart_upload(
        Bucket=s3_bucket,
        Key="src/mp.bin",
        UploadId=upload["UploadId"],
        MultipartUpload={"Parts": [{"ETag": e, "PartNumber": n} for n, e in enumerate(etags, start=1)]},
    )
    client.copy_object(
        Bucket=s3_bucket, Key="dst/mp.bin", CopySource={"Bucket": s3_bucket, "Key": "src/mp.bin"}
    )

    listed = {o["Key"]: o["ETag"].strip('"') for o in client.list_objects_v2(Bucket=s3_bucket)["Contents"]}
    assert listed["src/a.bin"] == md5(body)
    assert listed["dst/a.bin"] == md5(body)
    assert listed["src/mp.bin"].endswith("-2")
    assert listed["dst/mp.bin"] == md5(part1 + part2)


def test_multipart_copy_above_the_threshold(s3_server: S3Endpoint, bucket_loc: Location) -> None:
    events: list[RequestEvent] = []
    store = s3_store(s3_server, events, multipart_threshold=6 * MiB)
    src, dst = bucket_loc.child("build"), bucket_loc.child("site")
    big = os.urandom(13 * MiB + 123)
    small = os.urandom(6 * MiB - 1)
    store.put(src, "big.bin", big, content_type="application/x-big", metadata={"origin": "ci"})
    store.put(src, "small.bin", small)
    events.clear()

    store.copy(src, "big.bin", dst, "big.bin", size=len(big), content_type="video/mp4", metadata={"h": "1"})
    assert [e.operation for e in events] == [
        "HeadObject",
        "CreateMultipartUpload",
        "UploadPartCopy",
        "UploadPartCopy",
        "UploadPartCopy",
        "CompleteMultipartUpload",
    ], "13 MiB in 6 MiB parts: 3 parts, copied server-side"
    info = store.head(dst, "big.bin")
    assert (info.size, info.content_type, dict(info.metadata)) == (len(big), "video/mp4", {"h": "1"})
    assert info.md5 is None, "a multipart ETag is not an MD5"
    assert store.get(dst, "big.bin") == big

    # Without new metadata the source's is kept, as with CopyObject.
    store.copy(src, "big.bin", dst, "big2.bin", size=len(big))
    info = store.head(dst, "big2.bin")
    assert (info.content_type, dict(info.metadata)) == ("application/x-big", {"origin": "ci"})
    assert hashlib.sha256(store.get(dst, "big2.bin")).digest() == hashlib.sha256(big).digest()

    events.clear()
    store.copy(src, "small.bin", dst, "small.bin", size=len(small), content_type="a/b", metadata={})
    assert [e.operation for e in events] == ["CopyObject"], "below the threshold: one CopyObject"
    assert store.get(dst, "small.bin") == small
    uploads = s3_server.client().list_multipart_uploads(Bucket=bucket_loc.bucket).get("Uploads", [])
    assert uploads == [], "no multipart upload left behind"


def test_failed_multipart_copy_is_aborted(s3_server: S3Endpoint, bucket_loc: Location) -> None:
    store = s3_store(s3_server, multipart_threshold=6 * MiB)
    with pytest.raises(NotFound):
        store.copy(bucket_loc, "missing.bin", bucket_loc, "dst.bin", size=20 * MiB)
    assert list(store.list(bucket_loc)) == []
    assert s3_server.client().list_multipart_uploads(Bucket=bucket_loc.bucket).get("Uploads", []) == []


@pytest.fixture
def proxy(s3_server: S3Endpoint) -> Iterator[FaultProxy]:
    with FaultProxy(s3_server) as p:
        yield p


def test_slowdown_slows_down_and_succeeds(proxy: FaultProxy, bucket_loc: Location) -> None:
    """503 SlowDown answers are retried (each retry is a request on the wire) and nothing fails."""
    events: list[RequestEvent] = []
    store = s3_store(proxy.endpoint, events, throttle_backoff=0.005)
    keys = [f"f{i:02d}.txt" for i in range(40)]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda k: store.put(bucket_loc, k, b"warm-up"), keys[:20]))
        proxy.throttle(10)
        list(pool.map(lambda k: store.put(bucket_loc, k, k.encode()), keys))
    assert proxy.throttled == 10
    assert [e.operation for e in events].count("PutObject") == 20 + 40 + 10, (
        "every retry was sent and counted"
    )
    assert store.governor.stats().throttled == 10, "the governor saw every SlowDown"
    assert store.governor.rate is not None, "and paces the store since"
    assert {o.key: store.get(bucket_loc, o.key) for o in store.list(bucket_loc)} == {
        k: k.encode() for k in keys
    }


def test_the_store_owns_the_retries(proxy: FaultProxy, bucket_loc: Location) -> None:
    """botocore sends each request once: with the store's own throttling retries off, one
    SlowDown fails the request after exactly one request on the wire."""
    events: list[RequestEvent] = []
    store = s3_store(proxy.endpoint, events, throttle_deadline=0.0, fast_path=False)
    proxy.throttle(1)
    with pytest.raises(StorageError, match="kept throttling"):
        store.put(bucket_loc, "a.txt", b"a")
    assert [e.operation for e in events] == ["PutObject"]
    proxy.throttle(0)
    store.put(bucket_loc, "a.txt", b"a")
    assert store.get(bucket_loc, "a.txt") == b"a"


def test_endless_slowdown_fails_with_a_clear_message(proxy: FaultProxy, bucket_loc: Location) -> None:
    store = s3_store(proxy.endpoint, max_attempts=2, throttle_deadline=1.0, throttle_backoff=0.05)
    proxy.throttle(None)
    started = time.monotonic()
    with pytest.raises(StorageError, match="kept throttling") as info:
        store.put(bucket_loc, "a.txt", b"a")
    assert time.monotonic() - started >= 1.0, "it kept trying for the whole deadline"
    assert "slow down" in str(info.value) and f"{bucket_loc.url}a.txt" in str(info.value)
    assert proxy.throttled >= 4


def _every_call_fails(store: Store, loc: Location) -> list[StorageError]:
    failures: list[StorageError] = []
    for call in (
        lambda: list(store.list(loc)),
        lambda: store.put(loc, "a.txt", b"x"),
        lambda: store.get(loc, "a.txt"),
        lambda: store.head(loc, "a.txt"),
        lambda: store.copy(loc, "a.txt", loc, "b.txt", size=1),
        lambda: store.delete(loc, ["a.txt"]),
    ):
        with pytest.raises(StorageError) as info:
            call()
        failures.append(info.value)
    return failures


def test_credentials_never_appear_in_errors(s3_server: S3Endpoint, bucket_loc: Location) -> None:
    secret = "Sup3rSecretValue-" + os.urandom(8).hex()
    access = "AKIAWEBRELEASETEST42"
    token = "SessionTokenValue-" + os.urandom(8).hex()
    for creds in (Credentials(access, secret), Credentials(access, secret, token)):
        assert secret not in repr(creds) and access not in repr(creds) and token not in repr(creds)
        store = s3_store(s3_server, credentials=creds)
        failures = _every_call_fails(store, bucket_loc)
        for exc in failures:
            text = f"{exc} {exc!r} {exc.args}"
            assert secret not in text and access not in text and token not in text
            assert bucket_loc.url in str(exc), "the error names what failed"
        assert "check the credentials" in str(failures[0])

    # Right access key, wrong secret: the signature does not match.
    wrong = open_store(
        "s3",
        s3_server.storage_settings(),
        max_in_flight=4,
        credentials=Credentials(s3_server.access_key, secret),
    )
    for exc in _every_call_fails(wrong, bucket_loc):
        assert secret not in f"{exc} {exc!r}"
    with pytest.raises(StorageError, match="access denied"):
        wrong.put(bucket_loc, "a.txt", b"x")


def test_credentials_from_the_standard_chain(
    s3_server: S3Endpoint, bucket_loc: Location, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    store = open_store("s3", s3_server.storage_settings(), max_in_flight=4)
    store.put(bucket_loc, "env.txt", b"from the environment")
    assert s3_server.client().get_object(Bucket=bucket_loc.bucket, Key="env.txt")["Body"].read() == (
        b"from the environment"
    )


def test_no_credentials_at_all(
    s3_server: S3Endpoint, bucket_loc: Location, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    store = open_store("s3", s3_server.storage_settings(), max_in_flight=4)
    with pytest.raises(StorageError, match="no S3 credentials"):
        list(store.list(bucket_loc))


def test_unreachable_endpoint_names_it_without_secrets(bucket_loc: Location) -> None:
    port = free_port()  # nothing listens there
    settings = Storage(endpoint_url=f"http://127.0.0.1:{port}")
    store = S3Store.from_settings(
        settings,
        max_in_flight=2,
        credentials=Credentials("AKIAXXXXXXXXXXXXXXXX", "s3cr3t-value"),
        max_attempts=2,
        unreachable_deadline=1.0,
    )
    with pytest.raises(StorageError) as info:
        store.put(bucket_loc, "a.txt", b"x")
    assert f"cannot reach http://127.0.0.1:{port}" in str(info.value)
    assert "s3cr3t-value" not in str(info.value)


def test_missing_bucket_is_not_found(s3_server: S3Endpoint) -> None:
    store = s3_store(s3_server)
    loc = parse_url("s3://no-such-bucket-webrelease/site/")
    with pytest.raises(NotFound):
        list(store.list(loc))
    with pytest.raises(NotFound):
        store.put(loc, "a.txt", b"x")


def test_pool_is_sized_to_requests_in_flight(
    s3_server: S3Endpoint, bucket_loc: Location, caplog: pytest.LogCaptureFixture
) -> None:
    """32 threads on a store sized for 32 in flight never wait for or discard a connection; nor
    on a store sized for 1 (its governor holds the threads back to the pool's size); a store
    whose governor lets more requests go than its client's pool holds does (the check can fail)."""

    def load(store: S3Store) -> list[str]:
        caplog.clear()
        with (
            caplog.at_level(logging.WARNING, logger="urllib3.connectionpool"),
            ThreadPoolExecutor(32) as pool,
        ):
            list(pool.map(lambda i: store.put(bucket_loc, f"k{i % 50}", b"x"), range(400)))
        return [r.getMessage() for r in caplog.records if "Connection pool is full" in r.getMessage()]

    assert load(s3_store(s3_server, max_in_flight=32, fast_path=False)) == []
    assert load(s3_store(s3_server, max_in_flight=1, fast_path=False)) == []
    small_pool = s3_store(s3_server, max_in_flight=1, fast_path=False).client
    assert load(S3Store(small_pool, max_in_flight=32, fast_path=False)) != []


def test_listing_skips_folder_markers_and_decodes_keys(s3_server: S3Endpoint, bucket_loc: Location) -> None:
    client = s3_server.client()
    client.put_object(Bucket=bucket_loc.bucket, Key="site/", Body=b"")
    client.put_object(Bucket=bucket_loc.bucket, Key="site/assets/", Body=b"")
    client.put_object(Bucket=bucket_loc.bucket, Key="site/a b+c%d&e.txt", Body=b"1")
    client.put_object(Bucket=bucket_loc.bucket, Key="site/assets/\u00fc.css", Body=b"22")
    store = s3_store(s3_server)
    assert [(o.key, o.size) for o in store.list(bucket_loc.child("site"))] == [
        ("a b+c%d&e.txt", 1),
        ("assets/\u00fc.css", 2),
    ]
