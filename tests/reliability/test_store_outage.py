"""One request against an S3 server that goes away: the store keeps trying for a while (a restart, a
network blip), then says it cannot reach it. botocore's own retries are switched off here
(``max_attempts=1``), as they effectively are once a burst of failures has drained its retry quota
(which is how a 4 s outage once crashed a shard of a local run)."""

from __future__ import annotations

import threading
import time

import pytest

from tests.reliability.kit import RestartableS3, client_for
from webrelease.copier.storage import StorageError, parse_url
from webrelease.copier.storage.s3 import S3Store

pytestmark = [pytest.mark.reliability, pytest.mark.storage]


def _store(s3: RestartableS3) -> S3Store:
    return S3Store.from_settings(
        s3.endpoint.storage_settings(), max_in_flight=4, credentials=s3.endpoint.credentials, max_attempts=1
    )


def test_a_write_rides_out_a_restart(restartable_s3: RestartableS3) -> None:
    s3 = restartable_s3
    client_for(s3.endpoint).create_bucket(Bucket="outage")
    store = _store(s3)
    loc = parse_url("s3://outage/report/")
    store.put(loc, "before.json", b"{}")
    s3.kill()
    outcome: list[BaseException | None] = []

    def write() -> None:
        try:
            store.put(loc, "shards/2.jsonl", b'{"id":"a"}\n')
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    writer = threading.Thread(target=write)
    writer.start()
    time.sleep(3)  # the outage
    assert not outcome, f"the write gave up while the server was down: {outcome}"
    s3.start()
    writer.join(60)
    assert outcome == [None]
    assert store.get(loc, "shards/2.jsonl") == b'{"id":"a"}\n'


def test_a_server_that_stays_away_is_named_after_the_deadline(restartable_s3: RestartableS3) -> None:
    s3 = restartable_s3
    store = S3Store.from_settings(
        s3.endpoint.storage_settings(),
        max_in_flight=4,
        credentials=s3.endpoint.credentials,
        max_attempts=1,
        unreachable_deadline=2.0,
    )
    s3.kill()
    start = time.monotonic()
    with pytest.raises(StorageError, match=r"cannot reach http://127\.0\.0\.1:\d+"):
        store.put(parse_url("s3://outage/report/"), "x.json", b"{}")
    assert 2.0 <= time.monotonic() - start < 30
