"""Progress over customers: a bar (tqdm on stderr; off when stderr is not a terminal unless forced),
or plain lines for a log (a shard pod's, read with ``kubectl logs``)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import TextIO

from tqdm import tqdm


class Progress:
    """Customers done / total, with the number failed so far."""

    def __init__(self, total: int, *, enabled: bool | None = None, desc: str = "customers") -> None:
        on = sys.stderr.isatty() if enabled is None else enabled
        self.failed = 0
        self.done = 0
        self._bar = tqdm(
            total=total, disable=not on, unit="customer", desc=desc, file=sys.stderr, dynamic_ncols=True
        )

    def advance(self, ok: bool = True) -> None:
        self.done += 1
        if not ok:
            self.failed += 1
            self._bar.set_postfix(failed=self.failed, refresh=False)
        self._bar.update(1)

    def close(self) -> None:
        self._bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class ProgressLines:
    """Progress as log lines: ``<label>: 5/15 customers done (0 failed, 3 s)``, at most one every
    ``interval_s`` and always the last; plus one line when the total is known."""

    def __init__(
        self,
        label: str,
        *,
        interval_s: float = 5.0,
        out: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label = label
        self.interval_s = interval_s
        self.out = out
        self.clock = clock
        self.total = 0
        self.done = 0
        self.failed = 0
        self._started = clock()
        self._last = self._started

    def _line(self, text: str) -> None:
        print(f"{self.label}: {text}", file=self.out if self.out is not None else sys.stderr, flush=True)

    def start(self, total: int) -> None:
        self.total = total
        self._line(f"{total} customers to release")

    def advance(self, ok: bool = True) -> None:
        self.done += 1
        self.failed += 0 if ok else 1
        now = self.clock()
        if now - self._last >= self.interval_s or self.done == self.total:
            self._last = now
            elapsed = now - self._started
            self._line(f"{self.done}/{self.total} customers done ({self.failed} failed, {elapsed:.0f} s)")
