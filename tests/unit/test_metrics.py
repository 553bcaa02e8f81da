"""The operator's metrics endpoint: what a scrape returns after the handlers report a run."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from webrelease.operator.metrics import OperatorMetrics, RunOutcome, ShardOutcome


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(
    scrape: dict[tuple[str, frozenset[tuple[str, str]]], float], metric: str, /, **labels: str
) -> float:
    return scrape[(metric, frozenset(labels.items()))]


@pytest.fixture
def served() -> Iterator[tuple[OperatorMetrics, str]]:
    metrics = OperatorMetrics()
    server = metrics.serve(0, addr="127.0.0.1")
    try:
        yield metrics, f"http://127.0.0.1:{server.server_port}/metrics"
    finally:
        server.shutdown()
        server.server_close()


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.status == 200
        return samples(resp.read().decode())


def test_a_run_as_the_endpoint_reports_it(served: tuple[OperatorMetrics, str]) -> None:
    metrics, url = served
    rel = {"namespace": "shop", "name": "spring"}

    metrics.run_started("shop", "spring")
    metrics.set_progress(
        "shop",
        "spring",
        customers={"total": 10, "succeeded": 0, "failed": 0, "pending": 10},
        shards={"total": 3, "succeeded": 0, "failed": 0, "active": 3},
    )
    during = scrape(url)
    assert value(during, "webrelease_run_in_progress", **rel) == 1
    assert value(during, "webrelease_runs_started_total", **rel) == 1
    assert value(during, "webrelease_run_customers", **rel, state="pending") == 10
    assert value(during, "webrelease_run_shards", **rel, state="active") == 3

    metrics.shard_finished("shop", "spring", ShardOutcome.SUCCEEDED, 12.5)
    metrics.shard_finished("shop", "spring", ShardOutcome.SUCCEEDED, 14.0)
    metrics.shard_finished("shop", "spring", ShardOutcome.FAILED, 3.0)
    metrics.set_progress("shop", "spring", customers={"total": 10, "succeeded": 8, "failed": 2, "pending": 0})
    metrics.run_finished("shop", "spring", RunOutcome.DEGRADED, succeeded=8, failed=2, duration_seconds=40)

    after = scrape(url)
    assert value(after, "webrelease_run_in_progress", **rel) == 0
    assert value(after, "webrelease_runs_finished_total", **rel, outcome="degraded") == 1
    assert value(after, "webrelease_customers_total", **rel, outcome="succeeded") == 8
    assert value(after, "webrelease_customers_total", **rel, outcome="failed") == 2
    assert value(after, "webrelease_run_customers", **rel, state="succeeded") == 8
    assert value(after, "webrelease_run_customers", **rel, state="failed") == 2
    assert value(after, "webrelease_shard_duration_seconds_count", **rel, outcome="succeeded") == 2
    assert value(after, "webrelease_shard_duration_seconds_sum", **rel, outcome="succeeded") == 26.5
    assert value(after, "webrelease_shard_duration_seconds_count", **rel, outcome="failed") == 1
    assert (
        value(after, "webrelease_shard_duration_seconds_bucket", **rel, outcome="succeeded", le="15.0") == 2
    )
    assert value(after, "webrelease_run_duration_seconds_count", **rel, outcome="degraded") == 1
    # the operator's own process metrics are served too
    names = {name for name, _labels in after}
    assert {"python_info", "process_cpu_seconds_total"} <= names


def test_a_resumed_run_is_in_progress_without_counting_a_new_start() -> None:
    metrics = OperatorMetrics(process_collectors=False)
    metrics.run_started("a", "r", resumed=True)
    got = samples(metrics.render().decode())
    assert value(got, "webrelease_run_in_progress", namespace="a", name="r") == 1
    assert ("webrelease_runs_started_total", frozenset({("namespace", "a"), ("name", "r")})) not in got


def test_runs_in_progress_sum_over_releases() -> None:
    metrics = OperatorMetrics(process_collectors=False)
    for name in ("one", "two", "three"):
        metrics.run_started("ns", name)
    metrics.run_finished("ns", "two", RunOutcome.COMPLETE, succeeded=5, failed=0)
    got = samples(metrics.render().decode())
    in_progress = sum(v for (n, _labels), v in got.items() if n == "webrelease_run_in_progress")
    assert in_progress == 2


def test_forget_release_drops_its_series_only() -> None:
    metrics = OperatorMetrics(process_collectors=False)
    for name in ("gone", "kept"):
        metrics.run_started("ns", name)
        metrics.set_progress("ns", name, customers={"total": 1, "pending": 1}, shards={"total": 1})
        metrics.shard_finished("ns", name, ShardOutcome.SUCCEEDED, 1)
        metrics.run_finished("ns", name, RunOutcome.COMPLETE, succeeded=1, failed=0, duration_seconds=2)
    metrics.forget_release("ns", "gone")
    text = metrics.render().decode()
    assert 'name="gone"' not in text
    assert 'name="kept"' in text
    assert metrics.releases == frozenset({("ns", "kept")})


def test_unknown_states_and_negative_counts_are_refused() -> None:
    metrics = OperatorMetrics(process_collectors=False)
    with pytest.raises(ValueError, match="unknown state"):
        metrics.set_progress("ns", "r", customers={"done": 1})
    with pytest.raises(ValueError, match="unknown state"):
        metrics.set_progress("ns", "r", customers={"total": 1}, shards={"pending": 1})
    with pytest.raises(ValueError, match="negative"):
        metrics.run_finished("ns", "r", RunOutcome.FAILED, succeeded=-1, failed=0)
