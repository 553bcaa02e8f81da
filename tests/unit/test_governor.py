"""The store's governor: paced AIMD on SlowDown (copier/webrelease/copier/storage/governor.py)."""

from __future__ import annotations

import itertools
import threading
import time

import pytest

from webrelease.copier.storage.governor import CATCH_UP_S, FLOOR, Governor


def succeed(gov: Governor, n: int) -> None:
    for _ in range(n):
        gov.release(gov.acquire(), ok=True)


def test_unpaced_until_the_first_slowdown() -> None:
    gov = Governor(8)
    succeed(gov, 50)
    assert gov.rate is None
    stats = gov.stats()
    assert (stats.succeeded, stats.throttled, stats.cuts, stats.in_flight) == (50, 0, 0, 0)


def test_a_slowdown_sets_a_pace_below_the_granted_rate() -> None:
    gov = Governor(8)
    started = time.monotonic()
    succeed(gov, 200)
    granted = 200 / max(time.monotonic() - started, 0.1)
    gov.release(gov.acquire(), throttled=True)
    assert gov.rate is not None
    assert gov.rate <= 0.9 * granted * 1.05
    assert gov.stats().cuts == 1


def test_answers_to_requests_already_in_flight_do_not_cut_again() -> None:
    gov = Governor(8)
    succeed(gov, 20)
    tickets = [gov.acquire() for _ in range(5)]
    for t in tickets:
        gov.release(t, throttled=True)
    stats = gov.stats()
    assert (stats.throttled, stats.cuts) == (5, 1), "one cut for one round trip's worth of SlowDowns"


class VirtualTime:
    """A clock that moves only when the governor sleeps, or when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_the_pace_is_kept() -> None:
    vt = VirtualTime()
    gov = Governor(8, clock=vt.clock, sleep=vt.sleep)
    gov.release(gov.acquire(), throttled=True)  # nothing succeeded: half the sent rate, floored
    rate = gov.rate
    assert rate is not None and rate >= FLOOR
    gov._rate = 50.0  # a known pace: 20 ms apart
    starts = []
    for _ in range(6):
        t = gov.acquire()
        starts.append(t)
        gov.release(t)  # neither ok nor throttled: the rate stays
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert gaps[1:] == pytest.approx([0.02] * 4), gaps


def test_a_late_sender_catches_up_by_at_most_the_catch_up_span() -> None:
    """A thread that comes late (the machine was busy) may start its next requests closer
    together, but never more than CATCH_UP_S worth of them early: no burst after a pause."""
    vt = VirtualTime()
    gov = Governor(8, clock=vt.clock, sleep=vt.sleep)
    gov.release(gov.acquire(), throttled=True)
    gov._rate = 50.0
    gov.release(gov.acquire())
    vt.now += 1.0  # a second late: 50 slots missed
    starts = []
    for _ in range(10):
        t = gov.acquire()
        starts.append(t)
        gov.release(t)
    early = sum(1 for a, b in itertools.pairwise(starts) if b - a < 0.02 - 1e-9)
    assert early <= round(CATCH_UP_S * 50) + 1, starts
    assert starts[-1] - starts[0] >= 9 * 0.02 - CATCH_UP_S - 1e-9


def test_successes_raise_the_pace_again() -> None:
    gov = Governor(8)
    succeed(gov, 50)
    gov.release(gov.acquire(), throttled=True)
    assert gov.rate is not None
    low = gov.rate
    gov._rate = max(low, 100.0)
    before = gov.rate
    assert before is not None
    succeed(gov, 40)
    assert gov.rate is None or gov.rate > before


def test_never_more_in_flight_than_the_ceiling() -> None:
    gov = Governor(3)
    peak = 0
    lock = threading.Lock()
    now_in = 0

    def worker() -> None:
        nonlocal peak, now_in
        for _ in range(20):
            t = gov.acquire()
            with lock:
                now_in += 1
                peak = max(peak, now_in)
            time.sleep(0.001)
            with lock:
                now_in -= 1
            gov.release(t, ok=True)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert peak == 3
    assert gov.stats().in_flight == 0


def test_bad_settings() -> None:
    with pytest.raises(ValueError):
        Governor(0)
    with pytest.raises(ValueError):
        Governor(4, decrease=1.0)
