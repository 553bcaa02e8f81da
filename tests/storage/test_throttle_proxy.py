"""The throttling S3 front (tests/harness/throttle.py) and the S3 store's governor behind it: the
proxy forwards S3 requests unchanged, answers 503 SlowDown with S3's body above its rate per
prefix, counts what it saw; several stores sharing one limit all finish, exactly, without a
retry storm."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from botocore.exceptions import ClientError

from tests.harness.s3server import REPO, S3Endpoint
from tests.harness.throttle import SLOWDOWN_BODY, ThrottleProxy, fetch_stats, partition, request_class
from webrelease.copier.storage import open_store, parse_url
from webrelease.copier.storage.s3 import S3Store

pytestmark = pytest.mark.storage


@pytest.fixture
def proxy(s3_server: S3Endpoint) -> Iterator[ThrottleProxy]:
    with ThrottleProxy(s3_server, rate=10_000) as p:
        yield p


def test_partition_and_class() -> None:
    assert partition("/bkt/a/b/c.txt?x=1", 0) == ("bkt", "")
    assert partition("/bkt/a/b/c.txt", 1) == ("bkt", "a")
    assert partition("/bkt/a/b/c.txt", 2) == ("bkt", "a/b")
    assert partition("/bkt?list-type=2&prefix=a/", 1) == ("bkt", "")
    assert [request_class(m) for m in ("PUT", "POST", "DELETE", "GET", "HEAD")] == ["write"] * 3 + [
        "read"
    ] * 2


def test_forwards_s3_requests_unchanged(proxy: ThrottleProxy, s3_bucket: str) -> None:
    """Signatures made for the proxy verify upstream; odd keys, metadata, HEAD sizes, listings,
    copies and deletes come through as they are."""
    c = proxy.endpoint.client()
    key = "dir/a b+c%d&e~f ü.txt"
    c.put_object(Bucket=s3_bucket, Key=key, Body=b"hello", Metadata={"k": "v"}, ContentType="text/x-test")
    head = c.head_object(Bucket=s3_bucket, Key=key)
    assert (head["ContentLength"], head["Metadata"], head["ContentType"]) == (5, {"k": "v"}, "text/x-test")
    assert c.get_object(Bucket=s3_bucket, Key=key)["Body"].read() == b"hello"
    c.copy_object(Bucket=s3_bucket, Key="copy.txt", CopySource={"Bucket": s3_bucket, "Key": key})
    listed = [o["Key"] for o in c.list_objects_v2(Bucket=s3_bucket)["Contents"]]
    assert sorted(listed) == sorted([key, "copy.txt"])
    c.delete_objects(Bucket=s3_bucket, Delete={"Objects": [{"Key": key}]})
    with pytest.raises(ClientError) as info:
        c.head_object(Bucket=s3_bucket, Key=key)
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    stats = proxy.stats()
    assert stats.total_throttled == 0
    assert stats.writes_ok == {s3_bucket: 3}, "put, copy, delete"
    assert stats.received == {"write": 3, "read": 4}, "head, get, list, head"


def test_above_the_rate_it_answers_slowdown_like_s3(s3_server: S3Endpoint, s3_bucket: str) -> None:
    with ThrottleProxy(s3_server, rate=5, burst_s=1.0) as proxy:
        c = proxy.endpoint.client(retries={"mode": "standard", "total_max_attempts": 1})
        codes = []
        for i in range(12):
            try:
                c.put_object(Bucket=s3_bucket, Key=f"k{i}", Body=b"x")
                codes.append("ok")
            except ClientError as exc:
                codes.append(exc.response["Error"]["Code"])
                assert exc.response["ResponseMetadata"]["HTTPStatusCode"] == 503
        assert codes[:5] == ["ok"] * 5, "the bucket starts full: a burst of rate x burst_s"
        assert "SlowDown" in codes[5:]
        stats = proxy.stats()
        assert stats.throttled["write"] == codes.count("SlowDown")
        assert stats.writes_ok[s3_bucket] == codes.count("ok")
        # reads have their own bucket (S3's read rate is higher): not throttled by the writes
        c.list_objects_v2(Bucket=s3_bucket)
        # the body is S3's
        req = urllib.request.Request(
            f"{proxy.endpoint.endpoint_url}/{s3_bucket}/raw", method="PUT", data=b"x"
        )
        for _ in range(20):
            try:
                urllib.request.urlopen(req, timeout=5).read()
            except urllib.error.HTTPError as exc:
                if exc.code == 503:
                    assert exc.read() == SLOWDOWN_BODY
                    break
        else:
            pytest.fail("no 503 in 20 quick requests at 5/s")


def test_each_prefix_has_its_own_limit(s3_server: S3Endpoint, s3_bucket: str) -> None:
    with ThrottleProxy(s3_server, rate=2, burst_s=1.0, prefix_depth=1) as proxy:
        c = proxy.endpoint.client(retries={"mode": "standard", "total_max_attempts": 1})
        for prefix in ("a", "b", "c"):
            for i in range(2):
                c.put_object(Bucket=s3_bucket, Key=f"{prefix}/{i}", Body=b"x")  # 2 per prefix: no 503
        with pytest.raises(ClientError, match="SlowDown"):
            c.put_object(Bucket=s3_bucket, Key="a/third", Body=b"x")
        assert proxy.stats().writes_ok[s3_bucket] == 6
        proxy.set_rate(1000)
        c.put_object(Bucket=s3_bucket, Key="a/third", Body=b"x")


def test_runs_as_a_process_with_a_stats_page(s3_server: S3Endpoint, s3_bucket: str) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.harness.throttle",
            "--upstream",
            s3_server.endpoint_url,
            "--rate",
            "1000",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = json.loads(proc.stdout.readline())["endpoint_url"]
        ep = S3Endpoint(url, s3_server.access_key, s3_server.secret_key, s3_server.region)
        ep.client().put_object(Bucket=s3_bucket, Key="p.txt", Body=b"p")
        stats = fetch_stats(url)
        assert stats.writes_ok == {s3_bucket: 1} and stats.received == {"write": 1}
    finally:
        proc.terminate()
        proc.wait(10)


def test_stores_sharing_one_limit_all_finish_without_a_retry_storm(
    s3_server: S3Endpoint, s3_bucket: str
) -> None:
    """Four stores (four shard processes' worth of clients, 32 in flight each) copy into one
    bucket limited to 150 writes/s: every object arrives with its bytes, every store was
    throttled and paced, and the requests sent stay within 1.2 per object written."""
    loc = parse_url(f"s3://{s3_bucket}/")
    per_store = 150
    with ThrottleProxy(s3_server, rate=150) as proxy:
        stores = [
            open_store(
                "s3",
                proxy.endpoint.storage_settings(),
                credentials=proxy.endpoint.credentials,
                max_in_flight=32,
            )
            for _ in range(4)
        ]
        stores[0].put(loc, "src.txt", b"source bytes")
        proxy.reset()

        def run(n: int) -> None:
            store = stores[n]
            with ThreadPoolExecutor(32) as pool:
                list(
                    pool.map(
                        lambda i: store.copy(loc, "src.txt", loc, f"s{n}/{i:04d}.txt", size=12),
                        range(per_store),
                    )
                )

        threads = [threading.Thread(target=run, args=(n,)) for n in range(4)]
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        took = time.monotonic() - started
        stats = proxy.stats()
    check = s3_server.client()
    keys = [
        o["Key"]
        for p in check.get_paginator("list_objects_v2").paginate(Bucket=s3_bucket)
        for o in p.get("Contents", [])
    ]
    assert len(keys) == 4 * per_store + 1
    assert check.get_object(Bucket=s3_bucket, Key="s3/0149.txt")["Body"].read() == b"source bytes"
    written = stats.writes_ok[s3_bucket]
    assert written == 4 * per_store
    assert stats.total_throttled > 0, "the limit was reached (the test can fail)"
    assert stats.total / written <= 1.2, f"{stats.total} requests for {written} writes in {took:.1f} s"
    for store in stores:
        assert isinstance(store, S3Store)
        assert store.governor.stats().cuts >= 1
