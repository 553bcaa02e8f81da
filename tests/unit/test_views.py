"""``webrelease status --watch`` and ``webrelease report`` over an in-memory release (the cluster
tier runs both against a real apiserver)."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from webrelease.copier.spec import Storage
from webrelease.copier.storage import parse_url
from webrelease.operator.views import (
    PageSource,
    Rate,
    frame,
    report_command,
    run_folder_of,
    watch_command,
)


def _body(done: int, failed: int = 0, *, ended: str | None = None, total: int = 100) -> dict[str, Any]:
    cond_reason = ended or "Running"
    conditions = [
        {
            "type": "Progressing",
            "status": "False" if ended else "True",
            "reason": cond_reason,
            "message": f"{done}/{total}",
            "lastTransitionTime": "2026-12-03T10:00:00Z",
            "observedGeneration": 1,
        }
    ]
    if ended:
        conditions.append(
            {
                "type": "Complete" if ended == "Complete" else "Failed",
                "status": "True",
                "reason": "AllCustomersSucceeded" if ended == "Complete" else "TooManyCustomersFailed",
                "message": "m",
                "lastTransitionTime": "2026-12-03T10:00:00Z",
                "observedGeneration": 1,
            }
        )
    shards = [
        {"index": i, "state": "Succeeded" if i * 10 < done else "Active", "customers": 10} for i in range(10)
    ]
    return {
        "metadata": {"namespace": "shop", "name": "spring", "generation": 1},
        "status": {
            "observedGeneration": 1,
            "conditions": conditions,
            "completionTime": "2026-12-03T10:09:00Z" if ended else None,
            "run": {
                "generation": 1,
                "step": "main",
                "stepId": "g1-main",
                "job": "spring-g1-main",
                "snapshot": {"url": "s3://r/c.jsonl", "sha256": "0" * 64, "count": total},
                "customersPerShard": 10,
                "shards": 10,
            },
            "customers": {
                "total": total,
                "succeeded": done - failed,
                "failed": failed,
                "pending": total - done,
            },
            "shards": {"total": 10, "succeeded": done // 10, "active": 10 - done // 10},
            "shardStatuses": shards,
            "failedCustomers": {
                "total": failed,
                "sample": [{"id": f"c{i}", "reason": "<b>boom</b>", "shard": 0} for i in range(failed)],
            },
            "report": {"url": "s3://r/shop/spring/g1-x/", "page": "s3://r/shop/spring/g1-x/report.html"},
        },
    }


class FakeWatch:
    """A release that changes once per watch event."""

    def __init__(self, bodies: list[dict[str, Any] | None]) -> None:
        self.bodies = bodies
        self.watches = 0

    def get_release(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.bodies[0]

    def watch_release(
        self, namespace: str, name: str, *, seconds: int = 60
    ) -> Iterator[dict[str, Any] | None]:
        self.watches += 1
        yield from self.bodies[1:]


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        self.t += 5.0
        return self.t


def test_plain_output_prints_a_line_per_change_and_ends_with_the_status_exit_code() -> None:
    out = io.StringIO()
    kube = FakeWatch([_body(0), _body(30), _body(30), _body(70, 2), _body(100, 2, ended="Failed")])
    code = watch_command(kube, "shop", "spring", out, tty=False, clock=Clock())
    assert code == 3
    text = out.getvalue()
    assert "\x1b[" not in text
    lines = [line for line in text.splitlines() if re.match(r"\d\d:\d\d:\d\d ", line)]
    assert [line.split(" ", 2)[2].split(",")[0] for line in lines] == [
        "0/100 customers (0 failed)",
        "30/100 customers (0 failed)",
        "70/100 customers (2 failed)",
        "100/100 customers (2 failed)",
    ]
    assert "customers/s" in lines[1]
    assert "customers:  100 total, 98 succeeded, 2 failed, 0 pending" in text  # the full status, once


def test_tty_frames_redraw_with_bar_rate_eta_shards_and_failures() -> None:
    out = io.StringIO()
    kube = FakeWatch([_body(10), _body(40, 1), _body(100, ended="Complete")])
    assert watch_command(kube, "shop", "spring", out, tty=True, clock=Clock()) == 0
    frames = out.getvalue().split("\x1b[H\x1b[2J")
    second = frames[2]
    # 30 more customers in the 5 s between two frames: 6 a second, 60 left: 10 s
    assert "40/100 customers 40%  6.0/s  ETA 0:10" in second
    assert "latest failures (1):" in second and "c0 (shard 0): <b>boom</b>" in second
    assert "report: s3://r/shop/spring/g1-x/report.html" in second


def test_a_missing_or_deleted_release_is_exit_2() -> None:
    out = io.StringIO()
    assert watch_command(FakeWatch([None]), "shop", "nope", out, tty=False) == 2
    assert watch_command(FakeWatch([_body(0), None]), "shop", "spring", io.StringIO(), tty=False) == 2


def test_the_rate_restarts_when_the_count_goes_back() -> None:
    rate = Rate()
    for t, done in ((0.0, 0), (10.0, 50), (20.0, 100)):
        rate.add(t, done)
    assert rate.per_second() == 5.0
    rate.add(30.0, 3)  # a retry step counts from zero again
    assert rate.per_second() is None
    lines = frame(_body(50), rate, color=False)
    assert lines[1].startswith("[" + "#" * 20 + "-" * 20 + "] 50/100 customers 50%")


def test_report_finds_the_page_of_a_run_folder(tmp_path: Path) -> None:
    run = tmp_path / "reports" / "default" / "demo" / "r1"
    run.mkdir(parents=True)
    (run / "report.html").write_text("<!doctype html>")
    for url in (f"file://{run}/", f"file://{run}", f"file://{run}/index.json", f"file://{run}/report.html"):
        assert run_folder_of(url).url == f"file://{run}/"
    out = io.StringIO()
    opened: list[str] = []
    source = PageSource(parse_url(f"file://{run}/"), Storage())

    def no_browser(url: str) -> bool:
        opened.append(url)
        return False

    assert report_command(source, out, out_dir=tmp_path, open_it=True, opener=no_browser) == 0
    page = run / "report.html"
    assert out.getvalue().splitlines() == [str(page), f"no browser found here: open {page} in one"]
    assert opened == [page.as_uri()]
    missing = PageSource(parse_url(f"file://{tmp_path}/none/"), Storage())
    assert report_command(missing, io.StringIO(), out_dir=tmp_path, open_it=False, opener=no_browser) == 2
    gone = "WebRelease shop/x not found"
    assert report_command(gone, io.StringIO(), out_dir=tmp_path, open_it=False, opener=no_browser) == 2
