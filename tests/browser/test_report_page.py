"""The report page in a real browser (headless Chromium): what a person sees.

Pages made by real runs (``webrelease run`` of the example release: one complete, one with failed
customers whose reason carries hostile markup) and one large synthetic page (100,000 customers in
2,000 shards, 5,000 failed, hostile ids among them). Each page: the counts shown equal the report
document's (the run's ``customers``, which is what ``status.customers`` says in a cluster: the
cluster tier checks that one against the status), every failed customer listed is there with its
reason, hostile text is shown as text and runs nothing, the page's own script works (filter, shard
details) under its Content-Security-Policy. Screenshots: out/test-browser/ (see tests/harness/browser.py).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.by import By

from tests.harness.browser import output_folder
from webrelease.copier.reportpage import PAGE_FAILED_MAX, render_page
from webrelease.copier.runreport import (
    Customers,
    FailedEntry,
    Objects,
    RunReport,
    ShardEntry,
    Shards,
    StepEntry,
    sum_objects,
)

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
WEBRELEASE = Path(sys.executable).parent / "webrelease"
HOSTILE = "<img src=x onerror=alert(1)>"
HOSTILE_SCRIPT = "<script>document.title='pwned'</script>"


@dataclass(frozen=True)
class Page:
    path: Path
    doc: dict[str, object]


def _run(release: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(WEBRELEASE), "run", str(release), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _newest_run(tmp: Path) -> Page:
    runs = sorted((tmp / "out" / "demo" / "reports" / "default" / "demo").iterdir())
    return Page(runs[-1] / "report.html", json.loads((runs[-1] / "index.json").read_text()))


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Page]]:
    """The example release run twice: as it is (complete), then with three customers that fail."""
    tmp = tmp_path_factory.mktemp("pages")
    shutil.copytree(ROOT / "examples", tmp / "examples")
    release = tmp / "examples" / "release.yaml"
    first = _run(release)
    assert first.returncode == 0, first.stdout + first.stderr
    complete = _newest_run(tmp)

    config = tmp / "examples" / "build" / "config.js"
    config.write_text("{% if hostile is defined %}{{ customer[hostile] }}{% endif %}\n" + config.read_text())
    with (tmp / "examples" / "customers.jsonl").open("a") as f:
        base = {"name": "Z", "locale": "en", "plan": "p", "brandColor": "#000"}
        f.write(json.dumps({"id": "zz-no-api", **base}) + "\n")
        f.write(json.dumps({"id": "zz-hostile", **base, "apiUrl": "https://z", "hostile": HOSTILE}) + "\n")
        f.write(
            json.dumps({"id": "zz-script", **base, "apiUrl": "https://z", "hostile": HOSTILE_SCRIPT}) + "\n"
        )
    second = _run(release)
    assert second.returncode == 3, second.stdout + second.stderr
    yield {"complete": complete, "failures": _newest_run(tmp)}


def _open(browser: webdriver.Chrome, path: Path, shot: str) -> float:
    """Open ``path``; the seconds until its load event; a screenshot in the output folder."""
    start = time.monotonic()
    browser.get(path.as_uri())
    seconds = time.monotonic() - start
    _no_alert(browser)
    browser.save_screenshot(str(output_folder() / f"{shot}.png"))
    return seconds


def _no_alert(browser: webdriver.Chrome) -> None:
    try:
        alert = browser.switch_to.alert
    except NoAlertPresentException:
        return
    text = alert.text
    alert.dismiss()
    pytest.fail(f"the page ran a script: alert({text!r})")


def _text(browser: webdriver.Chrome, element_id: str) -> str:
    return str(browser.find_element(By.ID, element_id).text)


def _counts(browser: webdriver.Chrome) -> dict[str, int]:
    return {
        k: int(_text(browser, f"customers-{k}").replace(",", ""))
        for k in ("total", "succeeded", "failed", "pending", "notReleased")
    }


def _failed_rows(browser: webdriver.Chrome) -> list[tuple[str, str]]:
    """Every failed customer row as shown: (id, reason) as text."""
    rows = browser.execute_script(
        "return Array.from(document.querySelectorAll('#failed tr')).slice(1)"
        ".map(r => [r.cells[0].textContent, r.cells[1].textContent]);"
    )
    return [(str(i), str(r)) for i, r in rows]


def _nothing_ran(browser: webdriver.Chrome, title: str) -> None:
    _no_alert(browser)
    assert browser.title == title
    assert browser.find_elements(By.TAG_NAME, "img") == []
    assert len(browser.find_elements(By.TAG_NAME, "script")) == 1


def test_a_complete_run_shows_its_counts_and_every_shard(
    browser: webdriver.Chrome, pages: dict[str, Page]
) -> None:
    page = pages["complete"]
    _open(browser, page.path, "complete-run")
    assert _counts(browser) == page.doc["customers"]
    assert _counts(browser) == {"total": 5, "succeeded": 5, "failed": 0, "pending": 0, "notReleased": 0}
    assert _text(browser, "outcome") == "Complete"
    cells = browser.find_elements(By.CSS_SELECTOR, ".grid a")
    assert [c.get_attribute("data-state") for c in cells] == ["Succeeded"] * 3
    assert _text(browser, "failed-none") == "None."
    # the page's own script runs under its policy: a shard's details on click
    cells[2].click()
    assert _text(browser, "shard-detail").startswith("shard 2 of step main: Succeeded, 1 customers")
    assert "webrelease verify release.yaml" in _text(browser, "next")
    _nothing_ran(browser, browser.title)


def test_a_run_with_failures_lists_each_with_its_reason_as_text(
    browser: webdriver.Chrome, pages: dict[str, Page]
) -> None:
    page = pages["failures"]
    _open(browser, page.path, "run-with-failures")
    title = browser.title
    assert _counts(browser) == page.doc["customers"]
    assert _counts(browser)["failed"] == 3
    rows = dict(_failed_rows(browser))
    assert set(rows) == {"zz-hostile", "zz-no-api", "zz-script"}
    assert rows["zz-no-api"] == "template config.js, line 5: 'apiUrl' is undefined"
    assert rows["zz-hostile"] == f"template config.js, line 1: 'dict object' has no attribute '{HOSTILE}'"
    assert rows["zz-script"].endswith(f'"{HOSTILE_SCRIPT}"')
    for failed in page.doc["failed"]:  # type: ignore[attr-defined]
        assert rows[failed["id"]] == failed["reason"]
    _nothing_ran(browser, title)
    # the failed shard is red and says why; the filter narrows the list
    states = [c.get_attribute("data-state") for c in browser.find_elements(By.CSS_SELECTOR, ".grid a")]
    assert states.count("Failed") >= 1
    box = browser.find_element(By.ID, "failed-filter")
    box.send_keys("apiUrl")
    visible = [r for r in browser.find_elements(By.CSS_SELECTOR, "#failed tr")[1:] if r.is_displayed()]
    assert [r.find_element(By.CSS_SELECTOR, "td.id").text for r in visible] == ["zz-no-api"]
    assert _text(browser, "failed-shown") == "showing 1 of 3"
    assert "config.js line 1: 2 customer(s)" in _text(browser, "next")
    browser.save_screenshot(str(output_folder() / "run-with-failures-filtered.png"))


def large_report(customers: int = 100_000, shards: int = 2_000, failed: int = 5_000) -> RunReport:
    """A synthetic finished cluster run: ``failed`` customers spread over the shards (hostile ids
    among them), durations spread with a few slow shards."""
    per = customers // shards
    bad_per_shard = failed // 100
    folder = "s3://reports/shop/big/g1-abcdef01/main/"
    entries = []
    failed_entries: list[FailedEntry] = []
    for i in range(shards):
        bad = bad_per_shard if i % (shards // 100) == 0 else 0
        entries.append(
            ShardEntry(
                index=i,
                state="Failed" if bad else "Succeeded",
                customers=per,
                succeeded=per - bad,
                failed=bad,
                attempts=3 if bad else 1,
                seconds=30.0 + (i * 7919 % 60) + (600.0 if i in (17, 1234) else 0.0),
                objects=Objects(copied=per * 40, rendered=per * 3, bytes=per * 2_000_000),
                results=f"{folder}shards/{i}.jsonl",
            )
        )
        for j in range(bad):
            cid = HOSTILE if (i, j) == (0, 0) else f"customer-{i:04d}-{j:03d}"
            reason = f"template config.js, line 4: 'apiUrl' is undefined {HOSTILE_SCRIPT if j == 1 else ''}"
            failed_entries.append(FailedEntry(id=cid, reason=reason.strip(), shard=i))
    count = customers - failed
    return RunReport(
        launcher="cluster",
        namespace="shop",
        release="big",
        generation=1,
        run_id="g1-abcdef01",
        source="s3://builds/v42/",
        target="s3://sites/{id}/",
        started_at="2026-12-03T10:00:00Z",
        updated_at="2026-12-03T10:21:40Z",
        finished_at="2026-12-03T10:21:40Z",
        outcome="Failed",
        reason="TooManyCustomersFailed",
        message=f"{failed}/{customers} customers failed",
        customers=Customers(total=customers, succeeded=count, failed=failed),
        shards=Shards(total=shards, succeeded=shards - 100, failed=100),
        objects=sum_objects(e.objects for e in entries),
        steps=[
            StepEntry(
                step="main",
                step_id="g1-main",
                job="big-g1-main",
                folder=folder,
                customers=customers,
                succeeded=count,
                failed=failed,
                shards=entries,
            )
        ],
        failed=failed_entries,
        failed_total=failed,
    )


def test_a_large_run_stays_small_and_opens_fast(browser: webdriver.Chrome, tmp_path: Path) -> None:
    doc = large_report()
    start = time.monotonic()
    html = render_page(doc)
    render_seconds = time.monotonic() - start
    path = tmp_path / "report.html"
    path.write_bytes(html)
    seconds = _open(browser, path, "large-synthetic-run")
    timing = browser.execute_script(
        "const t = performance.getEntriesByType('navigation')[0];"
        "return [t.domContentLoadedEventEnd, t.loadEventEnd];"
    )
    report = (
        f"\nreport.html at 100,000 customers / 2,000 shards / 5,000 failed: {len(html) / 1024:.0f} KiB, "
        f"rendered in {render_seconds:.2f} s; Chromium: DOMContentLoaded {timing[0]:.0f} ms, "
        f"load {timing[1]:.0f} ms, driver.get {seconds:.2f} s"
    )
    print(report)
    (output_folder() / "large-synthetic-run.txt").write_text(report.strip() + "\n")
    assert len(html) < 1_500_000, "the page must stay small"
    assert _counts(browser) == doc.customers.model_dump(by_alias=True)
    assert len(browser.find_elements(By.CSS_SELECTOR, ".grid a")) == 2_000
    rows = _failed_rows(browser)
    assert len(rows) == PAGE_FAILED_MAX
    assert rows == [(f.id, f.reason) for f in doc.failed[:PAGE_FAILED_MAX]]
    assert rows[0][0] == HOSTILE
    assert _text(browser, "failed-shown") == f"showing {PAGE_FAILED_MAX} of 5000"
    more = browser.find_element(By.ID, "failed-more")
    assert more.text.startswith("4000 more failed customer(s)")
    assert len(more.find_elements(By.TAG_NAME, "a")) == 100
    slow = _text(browser, "slowest")
    assert "main shard 17" in slow and "main shard 1234" in slow
    _nothing_ran(browser, "shop/big g1-abcdef01: Failed")
