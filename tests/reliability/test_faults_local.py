"""Faults during a local run (``webrelease run``) of a few hundred customers on a real S3 server."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tests.harness.cluster_fixtures import wait_until
from tests.harness.s3server import S3Endpoint
from tests.harness.throttle import Stats, ThrottleProxy
from tests.reliability.conftest import ReleaseFactory
from tests.reliability.kit import (
    WEBRELEASE,
    BigRelease,
    RestartableS3,
    ShareThrottleProxy,
    Tally,
    accounting_from_results,
    check_outcome,
    clean_env,
    list_bucket,
    make_customers,
)

pytestmark = [pytest.mark.reliability, pytest.mark.storage]


def _popen_run(rel: BigRelease) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(WEBRELEASE), "run", str(rel.release_file), "--no-progress", "--workers", "2"],
        env=clean_env(rel.env()),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_s3_outage_mid_run(
    restartable_s3: RestartableS3, make_release: ReleaseFactory, tmp_path: Path, tally: Tally
) -> None:
    """The S3 server is killed mid-copy and started again 4 s later: requests in between are
    retried; whatever the run calls succeeded is exactly right, the rest is named, and a re-run
    makes every site right."""
    s3 = restartable_s3
    rel = make_release(s3.endpoint, make_customers(200, 3))
    total_objects = len(rel.good) * 7
    start = time.monotonic()
    proc = _popen_run(rel)
    at_kill = wait_until(
        "the run to be mid-copy",
        lambda: len(list_bucket(s3.endpoint, rel.sites_bucket, "sites/")) >= 300 or None,
        timeout_s=120,
        interval_s=0.1,
    )
    s3.kill()
    assert proc.poll() is None, "the run ended before the fault"
    time.sleep(4)  # the outage itself
    s3.start()
    out, err = proc.communicate(timeout=300)
    tally.seconds = time.monotonic() - start
    tally.faults, tally.runs, tally.customers = 1, 1, len(rel.ids)
    assert at_kill < total_objects
    assert proc.returncode == 3, out + err
    runs = rel.local_runs()
    acct = accounting_from_results(rel.results_under(runs[-1]))
    transient = set(acct.failed) - rel.doomed
    for cid in transient:
        assert "cannot reach" in acct.failed[cid] or "127.0.0.1" in acct.failed[cid], acct.failed[cid]
    check_outcome(rel, acct, tmp_path, tally, expect_failed=rel.doomed | transient)
    if transient:
        tally.notes.append(f"{len(transient)} customer(s) failed during the outage, fixed by a re-run")
        again = rel.run("--workers", "2")
        tally.runs += 1
        assert again.returncode == 3, again.stderr
        acct = accounting_from_results(rel.results_under(rel.local_runs()[-1]))
        check_outcome(rel, acct, tmp_path, tally)


def test_throttling_storm_mid_run(
    s3_server: S3Endpoint, make_release: ReleaseFactory, tmp_path: Path, tally: Tally
) -> None:
    """Mid-copy, a proxy in front of S3 answers 20 % of requests with 503 SlowDown until it has
    sent 20 of them: the clients slow down (the store's governor paces them: fewer requests per
    second during the storm), every throttled request is retried, nothing fails but the doomed
    customers. (A share of random SlowDowns is not a rate limit, so slowing down does not end
    it: the sustained rate-limited run is test_throttled_release_converges_on_the_limit.)"""
    with ShareThrottleProxy(s3_server, share=0.20) as proxy:
        rel = make_release(s3_server, make_customers(200, 3), spec_endpoint=proxy.endpoint)
        start = time.monotonic()
        proc = _popen_run(rel)
        wait_until(
            "the run to be mid-copy",
            lambda: len(list_bucket(s3_server, rel.sites_bucket, "sites/")) >= 300 or None,
            timeout_s=120,
            interval_s=0.1,
        )
        seen, t0 = proxy.seen, time.monotonic()
        time.sleep(1.0)  # a sample of the rate before the storm
        rate_before = (proxy.seen - seen) / (time.monotonic() - t0)
        seen, t0 = proxy.seen, time.monotonic()
        proxy.active = True
        wait_until("20 throttled requests", lambda: proxy.throttled >= 20, timeout_s=60, interval_s=0.05)
        proxy.active = False
        rate_during = (proxy.seen - seen) / (time.monotonic() - t0)
        assert proc.poll() is None, "the run ended before the storm was over"
        out, err = proc.communicate(timeout=300)
        tally.seconds = time.monotonic() - start
        tally.runs, tally.customers, tally.faults = 1, len(rel.ids), proxy.throttled
        tally.notes.append(
            f"{proxy.throttled} of {proxy.seen} requests answered 503 SlowDown; "
            f"{rate_before:.0f} requests/s before the storm, {rate_during:.0f} during"
        )
        assert proc.returncode == 3, out + err
        assert rate_during < rate_before, (rate_before, rate_during)
        acct = accounting_from_results(rel.results_under(rel.local_runs()[-1]))
        check_outcome(rel, acct, tmp_path, tally)


#: The sustained throttled run: writes per second the S3 front grants the sites' bucket.
THROTTLE_RATE = 80


def test_throttled_release_converges_on_the_limit(
    s3_server: S3Endpoint, make_release: ReleaseFactory, tmp_path: Path, tally: Tally
) -> None:
    """A whole release behind an S3 front that grants 80 writes/s per bucket (503 SlowDown above,
    like S3 per prefix), sustained for the whole run: two shard processes share the limit. The
    run completes within a bounded time (at most 2x the time the limit itself imposes, plus
    start-up), every good customer is exact, and there is no retry storm (requests sent per
    write at most 1.3)."""
    with ThrottleProxy(s3_server, rate=THROTTLE_RATE) as proxy:
        rel = make_release(s3_server, make_customers(240, 3), spec_endpoint=proxy.endpoint)
        writes = len(rel.good) * 7
        bound = 2 * writes / THROTTLE_RATE + 30
        start = time.monotonic()
        proc = _popen_run(rel)
        try:
            out, err = proc.communicate(timeout=bound)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"the throttled run took more than {bound:.0f} s:\n{err[-3000:]}")
        tally.seconds = time.monotonic() - start
        stats = proxy.stats()
        proxy.set_rate(10_000)  # the checks below read through the release's endpoint: the proxy
        _check_throttled(rel, stats, proc.returncode, out + err, writes, tmp_path, tally)


def _check_throttled(
    rel: BigRelease, stats: Stats, returncode: int, output: str, writes: int, tmp_path: Path, tally: Tally
) -> None:
    site_writes = stats.writes_ok.get(rel.sites_bucket, 0)
    steady = stats.write_span(rel.sites_bucket)
    sent_writes = stats.received.get("write", 0)
    all_writes = sum(stats.writes_ok.values())
    tally.runs, tally.customers, tally.faults = 1, len(rel.ids), stats.total_throttled
    tally.notes.append(
        f"{stats.total_throttled} of {stats.total} requests answered 503 SlowDown at {THROTTLE_RATE} "
        f"writes/s; {site_writes} site writes, {site_writes / max(steady, 1e-9):.0f} writes/s between the "
        f"first and the last; {sent_writes / max(all_writes, 1):.3f} write requests per write"
    )
    assert returncode == 3, output
    assert stats.throttled.get("write", 0) > 0, "the limit was reached (the test can fail)"
    assert site_writes >= writes, (site_writes, writes)
    assert sent_writes / all_writes <= 1.3, tally.notes[-1]
    acct = accounting_from_results(rel.results_under(rel.local_runs()[-1]))
    check_outcome(rel, acct, tmp_path, tally)
