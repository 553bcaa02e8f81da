"""How fast one store sends: a paced send rate with additive-increase / multiplicative-decrease
driven by S3's ``503 SlowDown``, under a cap on requests in flight.

S3 enforces a request rate per prefix partition (about 3,500 writes per second) and answers
what goes above it with SlowDown at once. Several shard processes share that one limit, and none
of them knows the others. Each store therefore runs a rule that lets independent senders settle
on a shared rate without talking to each other:

- **unpaced until S3 objects**: requests are sent as fast as they come, at most ``window`` in
  flight: the window starts at 8 and grows by one per success (doubling per round trip, TCP's
  slow start) up to ``ceiling`` (the store's ``max_in_flight``), so that a store that meets a
  limit at once does not meet it with its whole ceiling of requests.
- **decrease**: the first SlowDown sets a *pace*: requests start no closer together than
  ``1 / rate``, with ``rate`` = ``decrease`` (0.9) x the rate at which this store's requests
  *succeeded* over the last second (what S3 granted it; half the rate it sent at, if nothing
  succeeded yet). A later SlowDown cuts the rate again the same way, at most once per round
  trip and only for a request sent after the last cut (answers to requests already in flight
  at a cut say nothing new).
- **increase**: each success adds 1/4 request per second to the rate (so the rate grows by about
  a quarter per second: it finds capacity that others released within seconds), never above
  twice the rate it actually sent at; far above that, the pace is dropped.

Why pace rather than only shrink the number in flight: a SlowDown answer comes back in a
fraction of the time a copy takes, so a throttled request frees its slot at once and, sent again
straight away, meets the same empty bucket. On a local S3 front limited to 200 writes/s, a
window-only AIMD sent 1.55 requests per object and four stores sharing the limit reached
0.79 of it (docs/storage.md has the numbers); a paced rate sends each retry only when the
granted rate has room for it.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

#: Requests in flight before the first success (slow start).
START_WINDOW = 8
#: Multiplicative decrease: the new rate is this share of the rate that succeeded.
DECREASE = 0.9
#: Each success adds this many requests per second to the rate.
INCREASE = 0.25
#: The lowest pace, requests per second.
FLOOR = 1.0
#: The rate measurement's span, seconds.
SPAN_S = 1.0
#: A paced store that fell behind (a late wake-up) may send this much time's worth at once.
CATCH_UP_S = 0.05
#: Weight of the newest sample in the round-trip average.
RTT_GAIN = 0.125
#: The first round-trip estimate, until a request has succeeded.
INITIAL_RTT_S = 0.05


@dataclass(frozen=True)
class GovernorStats:
    #: the pace in requests per second (None: unpaced)
    rate: float | None
    in_flight: int
    rtt_s: float
    throttled: int
    cuts: int
    succeeded: int


class Governor:
    """The send rate and requests in flight of one store. Thread-safe."""

    def __init__(
        self,
        ceiling: int,
        *,
        decrease: float = DECREASE,
        floor: float = FLOOR,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """``clock`` and ``sleep`` are the time source (tests give a virtual one)."""
        if ceiling < 1:
            raise ValueError("ceiling must be at least 1")
        if not 0 < decrease < 1:
            raise ValueError("decrease must be between 0 and 1")
        self.ceiling = ceiling
        self.decrease = decrease
        self.floor = floor
        self._clock = clock
        self._sleep = sleep
        self._rate: float | None = None
        self._window = min(ceiling, START_WINDOW)
        self._in_flight = 0
        self._rtt = INITIAL_RTT_S
        self._rtt_known = False
        self._cut_at = float("-inf")
        self._next_start = 0.0
        self._ok_times: collections.deque[float] = collections.deque()
        self._sent_times: collections.deque[float] = collections.deque()
        self._throttled = 0
        self._cuts = 0
        self._succeeded = 0
        self._cond = threading.Condition()
        self._turn = threading.Lock()

    @property
    def rate(self) -> float | None:
        return self._rate

    def stats(self) -> GovernorStats:
        with self._cond:
            return GovernorStats(
                self._rate, self._in_flight, self._rtt, self._throttled, self._cuts, self._succeeded
            )

    def acquire(self) -> float:
        """Wait for a slot and the pace; the time the request starts (give it to :meth:`release`)."""
        with self._turn:  # one thread at a time waits for the pace; the others queue here
            with self._cond:
                while self._in_flight >= self._window:
                    self._cond.wait()
                delay = 0.0 if self._rate is None else self._next_start - self._clock()
            if delay > 0:
                self._sleep(delay)
            with self._cond:
                now = self._clock()
                self._in_flight += 1
                if self._rate is not None:
                    self._next_start = max(now - CATCH_UP_S, self._next_start) + 1.0 / self._rate
                _push(self._sent_times, now)
                return now

    def release(self, started: float, *, ok: bool = False, throttled: bool = False) -> None:
        """The request that started at ``started`` ended: succeeded (``ok``), was answered
        SlowDown (``throttled``), or neither (an error that says nothing about the rate)."""
        with self._cond:
            self._in_flight -= 1
            now = self._clock()
            if throttled:
                self._throttled += 1
                if started > self._cut_at and now - self._cut_at >= self._rtt:
                    self._cut(now)
            elif ok:
                self._succeeded += 1
                _push(self._ok_times, now)
                rtt = now - started
                if self._rtt_known:
                    self._rtt += RTT_GAIN * (rtt - self._rtt)
                else:
                    self._rtt, self._rtt_known = rtt, True
                if self._window < self.ceiling:
                    self._window += 1
                if self._rate is not None:
                    sent = _per_second(self._sent_times, now)
                    if self._rate > 4 * sent + self.ceiling / max(self._rtt, 1e-3):
                        self._rate = None  # far above what this store sends: the pace no longer matters
                    else:
                        self._rate = min(self._rate + INCREASE, 2 * sent + self.floor)
            self._cond.notify()

    def _cut(self, now: float) -> None:
        granted = _per_second(self._ok_times, now)
        if len(self._ok_times) >= 4:
            rate = self.decrease * granted
        else:
            rate = 0.5 * _per_second(self._sent_times, now)
        if self._rate is not None:
            rate = min(rate, self._rate * self.decrease)
        self._rate = max(self.floor, rate)
        self._window = self.ceiling  # the pace governs from now on
        self._next_start = now + 1.0 / self._rate
        self._cut_at = now
        self._cuts += 1


def _push(times: collections.deque[float], now: float) -> None:
    times.append(now)
    while times and times[0] < now - SPAN_S:
        times.popleft()


def _per_second(times: collections.deque[float], now: float) -> float:
    """Events per second over the span (or since the first event, if it is younger)."""
    while times and times[0] < now - SPAN_S:
        times.popleft()
    if not times:
        return 0.0
    return len(times) / max(now - times[0], SPAN_S / 10)
