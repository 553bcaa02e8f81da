"""The report page made from the report document: escaped, self-contained, capped, relative links.
(What a person sees in a real browser is tests/browser.)"""

from __future__ import annotations

import base64
import hashlib
import re

from webrelease.copier.reportpage import PAGE_FAILED_MAX, SCRIPT, failing_templates, render_page
from webrelease.copier.runreport import Customers, FailedEntry, RunReport, ShardEntry, StepEntry

HOSTILE = "<img src=x onerror=alert(1)>\"'&"
RUN = "s3://reports/shop/spring/g1-abc/"


def _doc(failed: int = 2, shards: int = 3, **changes: object) -> RunReport:
    entries = [
        ShardEntry(
            index=i,
            state="Failed" if i == 1 else "Succeeded",
            customers=10,
            succeeded=10 - (failed if i == 1 else 0),
            failed=failed if i == 1 else 0,
            attempts=1,
            seconds=float(i + 1),
            results=f"{RUN}main/shards/{i}.jsonl",
        )
        for i in range(shards)
    ]
    bad = [FailedEntry(id=HOSTILE, reason=f"template config.js, line 4: {HOSTILE}", shard=1)] + [
        FailedEntry(id=f"c{i:05d}", reason="template index.html, line 9: 'x' is undefined", shard=1)
        for i in range(failed - 1)
    ]
    base: dict[str, object] = {
        "launcher": "cluster",
        "namespace": "shop",
        "release": "spring",
        "run_id": "g1-abc",
        "source": "s3://builds/v1/",
        "target": "s3://sites/{id}/",
        "updated_at": "2026-12-03T10:05:00Z",
        "started_at": "2026-12-03T10:00:00Z",
        "finished_at": "2026-12-03T10:05:00Z",
        "outcome": "Failed",
        "reason": "TooManyCustomersFailed",
        "message": HOSTILE,
        "customers": Customers(total=10 * shards, succeeded=10 * shards - failed, failed=failed),
        "steps": [
            StepEntry(step="main", step_id="g1-main", folder=f"{RUN}main/", customers=30, shards=entries)
        ],
        "failed": bad,
        "failed_total": failed,
    }
    return RunReport.model_validate({**base, **changes})


def test_user_data_is_escaped_everywhere() -> None:
    page = render_page(_doc()).decode()
    assert "<img" not in page
    assert page.count("&lt;img src=x onerror=alert(1)&gt;") >= 3  # id, reason, message
    # one script, ours; the policy allows only it
    assert len(re.findall(r"<script\b", page)) == 1
    digest = base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in page
    assert f"<script>{SCRIPT}</script>" in page
    assert "default-src 'none'" in page


def test_self_contained_with_links_relative_to_the_run() -> None:
    page = render_page(_doc()).decode()
    assert not re.search(r"""(src|href)=["']?(https?:|//|s3:)""", page)
    assert 'href="main/shards/1.jsonl"' in page and 'href="index.json"' in page
    assert "webrelease retry spring -n shop" in page
    assert "<code>config.js</code> line 4: 1 customer(s)" in page


def test_failed_customers_are_capped_with_links_to_the_shard_files() -> None:
    doc = _doc(failed=PAGE_FAILED_MAX + 50, shards=2000)
    page = render_page(doc).decode()
    assert page.count('<td class="id">') == PAGE_FAILED_MAX
    assert f"showing {PAGE_FAILED_MAX} of {PAGE_FAILED_MAX + 50}" in page
    assert 'id="failed-more"' in page and '<a href="main/shards/1.jsonl">shard 1</a> (1050)' in page
    assert page.count('data-index="') == 2000


def test_failing_templates_are_grouped_by_file_and_line() -> None:
    failed = [
        FailedEntry(id="a", reason="template a.js, line 3: boom"),
        FailedEntry(id="b", reason="template a.js, line 3: boom"),
        FailedEntry(id="c", reason="template b.html: does not compile"),
        FailedEntry(id="d", reason="writing x: throttled"),
    ]
    assert [(t["file"], t["line"], t["count"]) for t in failing_templates(failed)] == [
        ("a.js", "3", 2),
        ("b.html", "", 1),
    ]
