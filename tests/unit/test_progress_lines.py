"""A shard's progress as log lines (what `kubectl logs` of a shard pod shows)."""

from __future__ import annotations

import io

from webrelease.copier.progress import ProgressLines


def test_at_most_one_line_per_interval_and_always_the_last() -> None:
    now = [100.0]
    out = io.StringIO()
    lines = ProgressLines("shard 3", interval_s=5.0, out=out, clock=lambda: now[0])
    lines.start(4)
    for ok, t in [(True, 101.0), (False, 106.0), (True, 107.0), (True, 108.0)]:
        now[0] = t
        lines.advance(ok)
    assert out.getvalue().splitlines() == [
        "shard 3: 4 customers to release",
        "shard 3: 2/4 customers done (1 failed, 6 s)",
        "shard 3: 4/4 customers done (1 failed, 8 s)",
    ]


def test_an_empty_shard_says_so() -> None:
    out = io.StringIO()
    ProgressLines("shard 0", out=out).start(0)
    assert out.getvalue() == "shard 0: 0 customers to release\n"
