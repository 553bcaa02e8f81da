"""The report document (``index.json``): one schema for the local run and the operator."""

from __future__ import annotations

import json

from webrelease.copier.exitcodes import EXIT_BAD_INPUT, EXIT_CRASH, EXIT_CUSTOMERS_FAILED, EXIT_OK
from webrelease.copier.results import ShardSummary
from webrelease.copier.runreport import (
    Customers,
    FailedEntry,
    RunReport,
    StepEntry,
    count_shards,
    local_outcome,
    shard_entry,
)
from webrelease.copier.spec import FailurePolicy


def _report(**changes: object) -> RunReport:
    base: dict[str, object] = {
        "launcher": "local",
        "namespace": "default",
        "release": "demo",
        "run_id": "r1",
        "source": "file:///b/",
        "target": "file:///s/{id}/",
        "updated_at": "2026-12-03T00:00:00Z",
    }
    return RunReport.model_validate({**base, **changes})


def test_the_document_is_camel_case_versioned_and_round_trips() -> None:
    doc = _report(failed=[FailedEntry(id="<img src=x onerror=alert(1)>", reason="bad\u2028", shard=3)])
    data = json.loads(doc.to_bytes())
    assert (data["apiVersion"], data["kind"], data["runId"], data["failedTotal"]) == (
        "webrelease.dev/v1alpha1",
        "WebReleaseReport",
        "r1",
        0,
    )
    assert "run_id" not in data and "dryRun" in data and "exitCode" in data
    assert RunReport.from_bytes(doc.to_bytes()) == doc
    # a newer writer's extra fields are ignored, not refused
    assert RunReport.model_validate({**data, "futureField": 1}) == doc


def test_a_step_replaces_the_earlier_entry_of_the_same_id() -> None:
    first = StepEntry(step="canary", step_id="g1-canary", folder="s3://r/canary/", customers=2)
    again = first.model_copy(update={"succeeded": 2})
    rest = StepEntry(step="rest", step_id="g1-rest", folder="s3://r/rest/", customers=8)
    doc = _report(steps=[first])
    assert doc.with_step(again) == [again]
    assert _report(steps=[first]).with_step(rest) == [first, rest]


def test_a_shard_that_could_not_run_fails_all_its_customers() -> None:
    crashed = ShardSummary(index=4, exitCode=EXIT_CRASH, error="OSError: gone")
    entry = shard_entry(crashed, "file:///r/main/shards/4.jsonl", 7)
    assert (entry.state, entry.customers, entry.succeeded, entry.failed, entry.error) == (
        "Failed",
        7,
        0,
        7,
        "OSError: gone",
    )
    ok = shard_entry(ShardSummary(index=0, exitCode=EXIT_OK, customers=7, succeeded=7), "u", 7)
    assert (ok.state, ok.failed, ok.attempts) == ("Succeeded", 0, 1)
    assert count_shards([entry, ok]).model_dump() == {
        "total": 2,
        "succeeded": 1,
        "failed": 1,
        "active": 0,
        "pending": 0,
    }


def test_local_outcomes_use_the_cluster_words() -> None:
    c = Customers(total=100, succeeded=98, failed=2)
    none_tolerated = FailurePolicy()
    assert local_outcome(EXIT_OK, Customers(total=3, succeeded=3), none_tolerated, [])[:2] == (
        "Complete",
        "AllCustomersSucceeded",
    )
    assert local_outcome(EXIT_CUSTOMERS_FAILED, c, none_tolerated, [])[:2] == (
        "Failed",
        "TooManyCustomersFailed",
    )
    tolerant = FailurePolicy(tolerated_failed_percent=2)
    assert local_outcome(EXIT_CUSTOMERS_FAILED, c, tolerant, [])[:2] == ("Degraded", "FailuresTolerated")
    outcome, reason, message = local_outcome(EXIT_BAD_INPUT, c, tolerant, ["shard 1: snapshot changed"])
    assert (outcome, reason) == ("Failed", "BadInput") and "snapshot changed" in message
