"""The report page (``report.html``): the run at a glance, made from the report document alone.

One self-contained HTML file next to ``index.json`` (no external script, style, font or image, so
it opens from a bucket, a file or behind a proxy; every link is relative to the run's folder):
release, build, steps, start/end, outcome and reason, the counters, a grid of every shard coloured
by state (point or click for its customers, attempts, duration and results file), the spread of
shard durations with the slowest shards, the failed customers with their reasons (filterable; at
most :data:`PAGE_FAILED_MAX`, then links to the shards' JSON Lines), and what to do next (the
failing templates' files and lines, ``webrelease retry``).

Rendered by Jinja2 with autoescaping on: customer ids, reasons, URLs and names are user data and
always appear as text. The page's own script is a constant; a Content-Security-Policy allows only
that script (by its hash) and inline styles, so even markup that slipped through could run nothing.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.resources
import re
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any, Final

import jinja2

from webrelease.copier.runreport import FailedEntry, RunReport, ShardEntry
from webrelease.copier.snapshot import shard_results_key

#: Failed customers listed on the page (the rest are in the shards' JSON Lines).
PAGE_FAILED_MAX: Final = 1000
#: Bars of the duration histogram, and slowest shards named.
HISTOGRAM_BUCKETS: Final = 24
SLOWEST: Final = 10
#: Failing templates named under "what to do next".
TEMPLATES_MAX: Final = 5

#: "template config.js, line 4: ..." (the renderer's reason for a template error)
_TEMPLATE_REASON = re.compile(r"template (?P<file>[^,:]+?)(?:, line (?P<line>\d+))?:")

SCRIPT: Final = """(function () {
  "use strict";
  var detail = document.getElementById("shard-detail");
  function show(a) {
    var d = a.dataset;
    var text = "shard " + d.index + " of step " + a.parentNode.dataset.step + ": " + d.state + ", " +
      d.customers + " customers, " + d.succeeded + " succeeded, " + d.failed + " failed, " +
      d.attempts + " attempt(s)" + (d.seconds ? ", " + Number(d.seconds).toFixed(1) + " s" : "") +
      (d.error ? ". Error: " + d.error : "") + ". ";
    detail.textContent = text;
    var link = document.createElement("a");
    link.href = a.getAttribute("href");
    link.textContent = "results (JSON Lines)";
    detail.appendChild(link);
    detail.className = "";
  }
  function onCell(handler) {
    return function (e) {
      var t = e.target;
      if (t && t.tagName === "A" && t.parentNode.className === "grid") { handler(t, e); }
    };
  }
  var grids = document.querySelectorAll(".grid");
  for (var i = 0; i < grids.length; i++) {
    grids[i].addEventListener("mouseover", onCell(show));
    grids[i].addEventListener("focusin", onCell(show));
    grids[i].addEventListener("click", onCell(function (t, e) {
      if (!e.ctrlKey && !e.metaKey && !e.shiftKey) { e.preventDefault(); show(t); }
    }));
  }
  var input = document.getElementById("failed-filter");
  if (input) {
    var rows = Array.prototype.slice.call(document.querySelectorAll("#failed tr"), 1);
    var texts = rows.map(function (r) { return r.textContent.toLowerCase(); });
    var shown = document.getElementById("failed-shown");
    var total = document.getElementById("failed-count").textContent.replace(/[()]/g, "");
    input.addEventListener("input", function () {
      var q = input.value.toLowerCase();
      var n = 0;
      for (var j = 0; j < rows.length; j++) {
        var hit = texts[j].indexOf(q) !== -1;
        rows[j].hidden = !hit;
        if (hit) { n++; }
      }
      shown.textContent = "showing " + n + " of " + total;
    });
  }
})();
"""


@dataclass(frozen=True, slots=True)
class NextStep:
    text: str
    command: str = ""


@cache
def _template() -> jinja2.Template:
    source = importlib.resources.files("webrelease.copier").joinpath("reportpage.html.j2").read_text("utf-8")
    env = jinja2.Environment(
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=False, keep_trailing_newline=True
    )
    return env.from_string(source)


def script_hash() -> str:
    """The CSP source of the page's script: ``'sha256-<base64>'`` without the quotes."""
    return "sha256-" + base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{n} bytes" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _elapsed(start: str | None, end: str | None) -> str:
    if not start or not end:
        return ""
    try:
        seconds = (
            datetime.fromisoformat(end.replace("Z", "+00:00"))
            - datetime.fromisoformat(start.replace("Z", "+00:00"))
        ).total_seconds()
    except ValueError:
        return ""
    minutes, secs = divmod(max(0, round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min {secs} s" if minutes else f"{secs} s"


def _percent(part: int, total: int) -> float:
    return round(100 * part / total, 3) if total else 0.0


def _spread(doc: RunReport) -> dict[str, Any] | None:
    timed = [(s.step, sh) for s in doc.steps for sh in s.shards if sh.seconds is not None]
    if not timed:
        return None
    seconds = sorted(float(sh.seconds or 0.0) for _, sh in timed)
    low, high = seconds[0], seconds[-1]
    width = (high - low) / HISTOGRAM_BUCKETS or 1.0
    counts = [0] * HISTOGRAM_BUCKETS
    for value in seconds:
        counts[min(HISTOGRAM_BUCKETS - 1, int((value - low) / width))] += 1
    peak = max(counts)
    buckets = [
        {
            "low": round(low + i * width, 1),
            "high": round(low + (i + 1) * width, 1),
            "count": c,
            "height": _percent(c, peak),
        }
        for i, c in enumerate(counts)
    ]
    slowest = sorted(timed, key=lambda t: -float(t[1].seconds or 0.0))[:SLOWEST]
    top = float(slowest[0][1].seconds or 0.0) or 1.0
    return {
        "count": len(seconds),
        "low": round(low, 1),
        "max": round(high, 1),
        "median": round(statistics.median(seconds), 1),
        "p90": round(seconds[min(len(seconds) - 1, int(0.9 * len(seconds)))], 1),
        "buckets": buckets,
        "slowest": [
            {
                "step": step,
                "index": sh.index,
                "seconds": float(sh.seconds or 0.0),
                "width": _percent(round(1000 * float(sh.seconds or 0.0)), round(1000 * top)),
            }
            for step, sh in slowest
        ],
    }


def failing_templates(failed: Sequence[FailedEntry]) -> list[dict[str, Any]]:
    """The templates named in failure reasons, most customers first: file, line, count, an example."""
    counts: Counter[tuple[str, str]] = Counter()
    example: dict[tuple[str, str], str] = {}
    for f in failed:
        m = _TEMPLATE_REASON.match(f.reason)
        if m is None:
            continue
        key = (m.group("file"), m.group("line") or "")
        counts[key] += 1
        example.setdefault(key, f.reason[:300])
    return [
        {"file": file, "line": line, "count": n, "example": example[(file, line)]}
        for (file, line), n in counts.most_common(TEMPLATES_MAX)
    ]


def next_steps(doc: RunReport) -> list[NextStep]:
    """What a person can do about this run, in commands."""
    ns = f" -n {doc.namespace}"
    out: list[NextStep] = []
    if doc.outcome is None:
        out.append(
            NextStep("The run is still going; watch it:", f"webrelease status {doc.release}{ns} --watch")
        )
        return out
    if doc.failed_total or doc.customers.failed or doc.customers.pending:
        if doc.launcher == "cluster":
            out.append(
                NextStep(
                    "Once the cause is fixed, release again only the customers that did not succeed:",
                    f"webrelease retry {doc.release}{ns}",
                )
            )
        else:
            out.append(
                NextStep(
                    "Once the cause is fixed, run again: sites already right are left as they are",
                    "webrelease run release.yaml",
                )
            )
    if any(sh.error for s in doc.steps for sh in s.shards):
        out.append(NextStep("Some shards could not run at all: their error is on the shard (click it)."))
    if doc.launcher == "cluster":
        out.append(
            NextStep("The release's status and events:", f"kubectl describe webrelease {doc.release}{ns}")
        )
    if doc.outcome == "Complete":
        out.append(
            NextStep(
                "Every customer got the release. Audit every site byte for byte:",
                "webrelease verify release.yaml",
            )
        )
    return out


def _failed_shards(doc: RunReport) -> list[ShardEntry]:
    latest = doc.steps[-1] if doc.steps else None
    return [sh for sh in latest.shards if sh.failed] if latest is not None else []


def page_context(doc: RunReport) -> dict[str, Any]:
    """What the template shows, derived from ``doc`` only."""
    c = doc.customers
    folder = _run_folder(doc)
    latest = doc.steps[-1].folder if doc.steps else folder

    def rel(url: str) -> str:
        """A URL of the run as a link relative to the run's folder (where the page is)."""
        return url[len(folder) :] if folder and url.startswith(folder) else url

    shards = sum(len(s.shards) for s in doc.steps)
    return {
        "doc": doc,
        "script": SCRIPT,
        "script_hash": script_hash(),
        "elapsed": _elapsed(doc.started_at, doc.finished_at or doc.updated_at),
        "bytes": _human_bytes(doc.objects.bytes),
        "pct": {
            "succeeded": _percent(c.succeeded, c.total),
            "failed": _percent(c.failed, c.total),
            "pending": _percent(c.pending, c.total),
        },
        "cell": 14 if shards <= 500 else 10 if shards <= 2000 else 7,
        "spread": _spread(doc),
        "shown": doc.failed[:PAGE_FAILED_MAX],
        "failed_shards": _failed_shards(doc),
        "templates": failing_templates(doc.failed),
        "next_steps": next_steps(doc),
        "rel": rel,
        "shard_file": lambda index: rel(latest + shard_results_key(index)),
    }


def _run_folder(doc: RunReport) -> str:
    """The run's folder URL: the part of its first step's folder before the step's name."""
    if not doc.steps:
        return ""
    folder = doc.steps[0].folder
    return folder.rstrip("/").rsplit("/", 1)[0] + "/"


def render_page(doc: RunReport) -> bytes:
    """``report.html`` for ``doc``."""
    return _template().render(page_context(doc)).encode()
