"""The Grafana dashboard: valid for Grafana, and every query reads only what the operator exports
(here from the metrics registry; the cluster tier scrapes a real operator the same way)."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.harness.dashboard import DASHBOARD, load, metric_names, queries
from tests.harness.helm import template
from webrelease.operator.metrics import OperatorMetrics, RunOutcome, ShardOutcome

#: Grafana's dashboard JSON schemaVersion: 36 (Grafana 9.0) up to 41 (Grafana 12), the versions
#: whose migrations every supported Grafana knows; a higher one would be refused by older ones.
GRAFANA_SCHEMA_VERSIONS = range(36, 42)


def exported() -> set[str]:
    """Every sample name the operator's registry exposes once each metric has a value."""
    m = OperatorMetrics(process_collectors=False)
    m.set_leader(True)
    m.run_started("shop", "spring")
    m.set_progress("shop", "spring", customers={"total": 2, "succeeded": 1}, shards={"total": 1})
    m.shard_finished("shop", "spring", ShardOutcome.SUCCEEDED, 3.0)
    m.run_finished("shop", "spring", RunOutcome.COMPLETE, succeeded=1, failed=1, duration_seconds=9.0)
    text = generate_latest(m.registry).decode()
    return {s.name for f in text_string_to_metric_families(text) for s in f.samples}


def test_the_dashboard_is_a_grafana_dashboard() -> None:
    doc = load()
    assert isinstance(doc["schemaVersion"], int) and doc["schemaVersion"] in GRAFANA_SCHEMA_VERSIONS
    assert doc["uid"] and doc["title"] == "webrelease"
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for p in doc["panels"]:
        assert {"x", "y", "w", "h"} <= set(p["gridPos"]) and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24
        assert p["targets"] and all(t["refId"] and t["expr"] for t in p["targets"])
    titles = " ".join(p["title"].lower() for p in doc["panels"])
    for what in ("in progress", "customers per state", "shard duration", "by outcome", "per release"):
        assert what in titles


def test_every_query_reads_only_metrics_the_operator_exports() -> None:
    names = exported()
    used = {n for expr in queries(load()) for n in metric_names(expr)}
    assert used, "the dashboard queries something"
    assert used <= names, f"not exported: {sorted(used - names)}"
    assert {
        "webrelease_run_in_progress",
        "webrelease_run_customers",
        "webrelease_shard_duration_seconds_bucket",
    } <= used


def test_metric_names_are_read_from_expressions() -> None:
    expr = 'histogram_quantile(0.9, sum by (le) (rate(webrelease_x_bucket{name=~"a|b"}[$__rate_interval])))'
    assert metric_names(expr) == {"webrelease_x_bucket"}
    assert metric_names('label_values(webrelease_y{namespace=~"$namespace"}, name)') == {"webrelease_y"}
    assert metric_names("sum(a) / on (x) group_left b offset 5m") == {"a", "b"}


def test_the_chart_ships_it_only_when_asked(tmp_path: Path) -> None:
    assert not [o for o in template(tmp_path) if o["kind"] == "ConfigMap"]
    values = {"grafanaDashboard": {"enabled": True, "annotations": {"grafana_folder": "webrelease"}}}
    (cm,) = [o for o in template(tmp_path, values) if o["kind"] == "ConfigMap"]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "webrelease"}
    assert cm["data"]["webrelease.json"].strip() == DASHBOARD.read_text().strip()
