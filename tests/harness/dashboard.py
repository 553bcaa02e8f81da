"""The Grafana dashboard of the chart (charts/webrelease/dashboards/webrelease.json): its queries
and the metric names they read."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DASHBOARD = Path(__file__).resolve().parents[2] / "charts" / "webrelease" / "dashboards" / "webrelease.json"

#: What may appear in a PromQL expression besides metric names (functions, aggregations, keywords).
PROMQL_WORDS = frozenset(
    {
        "sum", "max", "min", "avg", "count", "by", "without", "rate", "irate", "increase",
        "histogram_quantile", "label_values", "le", "bool", "on", "ignoring", "group_left",
        "group_right", "and", "or", "unless", "offset", "topk", "bottomk",
    }
)  # fmt: skip


def load() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return doc


def queries(doc: dict[str, Any]) -> Iterator[str]:
    """Every PromQL expression: the panels' targets and the template variables' queries."""
    for panel in doc.get("panels", []):
        for target in panel.get("targets", []):
            yield str(target["expr"])
    for var in doc.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            query = var["query"]
            yield str(query["query"] if isinstance(query, dict) else query)


def metric_names(expr: str) -> set[str]:
    """The metric names an expression reads (label matchers, ranges, strings and durations removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # strings
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges
    text = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", " ", text)  # grouping labels
    text = re.sub(r"label_values\(([^,()]*),\s*\w+\s*\)", r"\1", text)  # a variable's label
    text = re.sub(r"\b\d+(\.\d+)?([smhdwy]|ms)?\b", " ", text)  # numbers and durations
    names = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", text))
    return {n for n in names if n not in PROMQL_WORDS and not n.startswith("$")}
