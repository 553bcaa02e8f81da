"""A progress bar over customers (tqdm on stderr; off when stderr is not a terminal unless forced)."""

from __future__ import annotations

import sys
from types import TracebackType

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
