"""Markdown tables of the results (printed, and written to a file for bench/README.md)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from bench.copybench import SCENARIOS, CopyResults, Mode, Scenario

SCENARIO_TITLES: dict[Scenario, str] = {
    "fresh": "Fresh release (empty sites)",
    "noop": "Re-run, nothing changed",
    "changed": "Re-run, one file of the build changed",
}

_OP_SHORT = {
    "CopyObject": "Copy",
    "PutObject": "Put",
    "GetObject": "Get",
    "HeadObject": "Head",
    "ListObjectsV2": "List",
    "ListObjects": "ListV1",
    "HeadBucket": "HeadBucket",
    "DeleteObjects": "Delete",
    "CreateMultipartUpload": "MPU",
    "UploadPartCopy": "PartCopy",
    "CompleteMultipartUpload": "MPUDone",
}


def table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str = "") -> str:
    """A Markdown table; ``align`` is one letter per column (``l``/``r``), default left then right."""
    align = align or "l" * 2 + "r" * (len(header) - 2)
    sep = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


NA = "n/a"


def _num(x: float, digits: int = 0) -> str:
    if not math.isfinite(x):
        return NA
    return f"{x:,.{digits}f}"


def mode_label(mode: Mode, latency_ms: int) -> str:
    return "direct" if mode == "direct" else f"+{latency_ms} ms"


def copy_tables(
    results: CopyResults, tools: Sequence[str], latency_ms: int, reference: str = "webrelease"
) -> str:
    out: list[str] = []
    modes: list[Mode] = []
    for mode, _scenario, _tool in results.series:
        if mode not in modes:
            modes.append(mode)
    for scenario in SCENARIOS:
        rows: list[list[str]] = []
        for mode in modes:
            ref = results.series.get((mode, scenario, reference))
            for tool in tools:
                s = results.series.get((mode, scenario, tool))
                if s is None or not s.samples:
                    continue
                ratio = float("nan")
                if ref is not None and ref.samples and ref.wall_s > 0:
                    ratio = s.wall_s / ref.wall_s
                rows.append(
                    [
                        mode_label(mode, latency_ms),
                        tool,
                        _num(s.wall_s, 2),
                        _num(s.objects_per_s),
                        _num(s.requests),
                        _num(s.site_writes),
                        _num(s.cpu_per_1k, 2),
                        f"{ratio:.2f}x" if math.isfinite(ratio) else NA,
                    ]
                )
        if not rows:
            continue
        n = len(rows[0])
        out.append(f"### {SCENARIO_TITLES[scenario]}\n")
        out.append(
            table(
                [
                    "S3 latency",
                    "tool",
                    "wall s",
                    "objects/s",
                    "requests",
                    "writes to sites",
                    "client CPU s / 1k obj",
                    f"time / {reference}'s",
                ],
                rows,
                "ll" + "r" * (n - 2),
            )
        )
        out.append("")
    return "\n".join(out)


def ops_table(results: CopyResults, tools: Sequence[str], latency_ms: int) -> str:
    """Requests by operation (median of the runs), every scenario, mode and tool."""
    rows: list[list[str]] = []

    def order(key: tuple[Mode, Scenario, str]) -> tuple[int, str, int]:
        mode, scenario, tool = key
        return SCENARIOS.index(scenario), mode, tools.index(tool) if tool in tools else len(tools)

    for mode, scenario, tool in sorted(results.series, key=order):
        ops = results.series[(mode, scenario, tool)].ops()
        by_count = sorted(ops.items(), key=lambda x: -x[1])
        text = ", ".join(f"{_OP_SHORT.get(op, op)} {n:,.0f}" for op, n in by_count if n)
        rows.append([scenario, mode_label(mode, latency_ms), tool, text or "none"])
    return table(["scenario", "S3 latency", "tool", "requests by operation (median)"], rows, "llll")
