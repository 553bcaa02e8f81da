"""Folding shard pods and the Job into status, and deciding how a step ended."""

from __future__ import annotations

from typing import Any

import pytest

from webrelease.copier.exitcodes import EXIT_BAD_INPUT
from webrelease.copier.results import CustomerResult, ShardResult, Tally
from webrelease.copier.runlayout import shard_layout
from webrelease.copier.spec import FailurePolicy
from webrelease.operator.aggregate import (
    JobView,
    PodAttempt,
    decide,
    fold_step,
    job_view,
    parse_indexes,
    pod_attempt,
)
from webrelease.operator.conditions import Outcome, Reason
from webrelease.operator.status import MAX_SHARD_ENTRIES, Carried, ObjectTotals, ShardState, StepKind

PLAN = shard_layout(50, 10, 10)


def _ids(index: int, size: int = 10) -> list[str]:
    return [f"c{index * size + i:03d}" for i in range(size)]


def _summary(index: int, failed: dict[str, str] | None = None, *, size: int = 10) -> str:
    failed = failed or {}
    result = ShardResult(index, seconds=4.2, results_url=f"s3://reports/x/shards/{index}.jsonl")
    for cid in _ids(index, size):
        counts = Tally(copied=3, rendered=1, unchanged=2, bytes=1000) if cid not in failed else Tally()
        result.customers.append(CustomerResult(cid, cid not in failed, failed.get(cid), counts=counts))
    return result.summary().to_bytes().decode()


def _pod(
    index: int,
    phase: str,
    *,
    n: int = 0,
    exit_code: int | None = None,
    message: str | None = None,
    reason: str | None = None,
) -> dict[str, Any]:
    state: dict[str, Any]
    if phase in ("Succeeded", "Failed"):
        state = {
            "terminated": {
                "exitCode": exit_code if exit_code is not None else (0 if phase == "Succeeded" else 3),
                "reason": reason or ("Completed" if phase == "Succeeded" else "Error"),
                "startedAt": "2026-01-01T00:00:00Z",
                "finishedAt": "2026-01-01T00:00:07Z",
                **({"message": message} if message is not None else {}),
            }
        }
    elif phase == "Running":
        state = {"running": {"startedAt": "2026-01-01T00:00:00Z"}}
    else:
        state = {"waiting": {"reason": "ContainerCreating"}}
    return {
        "metadata": {
            "name": f"spring-g1-main-{index}-{n}",
            "creationTimestamp": f"2026-01-01T00:0{n}:00Z",
            "annotations": {"batch.kubernetes.io/job-completion-index": str(index)},
        },
        "status": {"phase": phase, "containerStatuses": [{"name": "shard", "state": state}]},
    }


def _attempts(*pods: dict[str, Any]) -> list[PodAttempt]:
    out = [pod_attempt(p) for p in pods]
    assert all(a is not None for a in out)
    return [a for a in out if a is not None]


def _job(completed: str = "", failed: str = "", condition: str | None = None, reason: str = "") -> JobView:
    conds = [{"type": condition, "status": "True", "reason": reason, "message": "m"}] if condition else []
    return job_view({"status": {"completedIndexes": completed, "failedIndexes": failed, "conditions": conds}})


def test_parse_indexes() -> None:
    assert parse_indexes("1,3-5,7") == frozenset({1, 3, 4, 5, 7})
    assert parse_indexes("") == frozenset() and parse_indexes(None) == frozenset()


def test_all_shards_succeed() -> None:
    pods = _attempts(*(_pod(i, "Succeeded", message=_summary(i)) for i in range(5)))
    fold = fold_step(
        PLAN, total_customers=50, carried=Carried(), pods=pods, job=_job("0-4", condition="Complete")
    )
    assert fold.finished
    assert fold.customers.model_dump() == {
        "total": 50,
        "succeeded": 50,
        "failed": 0,
        "pending": 0,
        "not_released": 0,
    }
    assert fold.shards.model_dump() == {"total": 5, "succeeded": 5, "failed": 0, "active": 0, "pending": 0}
    assert fold.objects == ObjectTotals(copied=150, rendered=50, unchanged=100, deleted=0, bytes=50_000)
    assert fold.progress == "50/50"
    assert [(s.index, s.state, s.succeeded, s.attempts, s.seconds) for s in fold.shard_statuses] == [
        (i, ShardState.SUCCEEDED, 10, 1, 4) for i in range(5)
    ]
    decision = decide(StepKind.MAIN, fold, rest_pending=False, policy=FailurePolicy())
    assert (decision.outcome, decision.reason, decision.next_step) == (
        Outcome.COMPLETE,
        Reason.ALL_SUCCEEDED,
        None,
    )


def test_running_shards_count_as_pending() -> None:
    pods = _attempts(_pod(0, "Succeeded", message=_summary(0)), _pod(1, "Running"), _pod(2, "Pending"))
    fold = fold_step(PLAN, total_customers=50, carried=Carried(), pods=pods, job=_job("0"))
    assert not fold.finished
    assert fold.customers.model_dump() == {
        "total": 50,
        "succeeded": 10,
        "failed": 0,
        "pending": 40,
        "not_released": 0,
    }
    assert fold.shards.model_dump() == {"total": 5, "succeeded": 1, "failed": 0, "active": 2, "pending": 2}
    assert fold.progress == "10/50"


def test_a_failed_attempt_being_retried_is_active_not_failed() -> None:
    pods = _attempts(_pod(1, "Failed", message=_summary(1, {"c012": "template error"})))
    fold = fold_step(PLAN, total_customers=50, carried=Carried(), pods=pods, job=_job())
    assert fold.shard_statuses[1].state == ShardState.ACTIVE
    assert fold.customers.failed == 0 and fold.customers.pending == 50


def test_two_failed_customers_are_named_and_counted_exactly() -> None:
    fail1 = {"c012": "config.js: 'brand' is undefined"}
    fail3 = {"c034": "config.js: 'brand' is undefined"}
    pods = _attempts(
        _pod(0, "Succeeded", message=_summary(0)),
        _pod(1, "Failed", n=0, message=_summary(1, fail1)),
        _pod(1, "Failed", n=1, message=_summary(1, fail1)),
        _pod(2, "Succeeded", message=_summary(2)),
        _pod(3, "Failed", message=_summary(3, fail3)),
        _pod(4, "Succeeded", message=_summary(4)),
    )
    job = _job("0,2,4", "1,3", condition="Failed", reason="FailedIndexes")
    fold = fold_step(PLAN, total_customers=50, carried=Carried(), pods=pods, job=job)
    assert fold.finished
    assert fold.customers.model_dump() == {
        "total": 50,
        "succeeded": 48,
        "failed": 2,
        "pending": 0,
        "not_released": 0,
    }
    assert fold.shards.succeeded == 3 and fold.shards.failed == 2
    assert fold.failed_customers.total == 2
    assert [(f.id, f.shard) for f in fold.failed_customers.sample] == [("c012", 1), ("c034", 3)]
    assert "brand" in fold.failed_customers.sample[0].reason
    s1 = fold.shard_statuses[1]
    assert (s1.state, s1.succeeded, s1.failed, s1.attempts, s1.failed_ids) == (
        ShardState.FAILED,
        9,
        1,
        2,
        ["c012"],
    )
    assert fold.errors == ()

    failed = decide(StepKind.MAIN, fold, rest_pending=False, policy=FailurePolicy())
    assert (failed.outcome, failed.reason) == (Outcome.FAILED, Reason.TOO_MANY_FAILURES)
    assert "48/50 customers succeeded, 2 failed" in failed.message and "c012, c034" in failed.message
    degraded = decide(
        StepKind.MAIN, fold, rest_pending=False, policy=FailurePolicy(tolerated_failed_customers=2)
    )
    assert (degraded.outcome, degraded.reason) == (Outcome.DEGRADED, Reason.FAILURES_TOLERATED)
    by_percent = decide(
        StepKind.MAIN, fold, rest_pending=False, policy=FailurePolicy(tolerated_failed_percent=4)
    )
    assert by_percent.outcome == Outcome.DEGRADED
    too_few = decide(
        StepKind.MAIN, fold, rest_pending=False, policy=FailurePolicy(tolerated_failed_percent=3.9)
    )
    assert too_few.outcome == Outcome.FAILED


def test_bad_input_fails_every_customer_of_the_shard_and_says_why() -> None:
    bad = ShardResult(
        2, error="snapshot s3://r/customers.jsonl has sha256 x, expected y", error_code=EXIT_BAD_INPUT
    )
    pods = _attempts(_pod(2, "Failed", exit_code=EXIT_BAD_INPUT, message=bad.summary().to_bytes().decode()))
    fold = fold_step(PLAN, total_customers=50, carried=Carried(), pods=pods, job=_job(failed="2"))
    s2 = fold.shard_statuses[2]
    assert (s2.state, s2.succeeded, s2.failed) == (ShardState.FAILED, 0, 10)
    assert fold.customers.failed == 10
    assert fold.errors and "bad input: snapshot" in fold.errors[0] and fold.errors[0].startswith("shard 2:")


@pytest.mark.parametrize(
    ("message", "reason", "expected"),
    [
        (None, "OOMKilled", "OOMKilled"),
        ("Traceback (most recent call last): ...", "Error", "not a shard summary"),
    ],
)
def test_crashed_shard_without_a_summary(message: str | None, reason: str, expected: str) -> None:
    pods = _attempts(_pod(0, "Failed", exit_code=137, message=message, reason=reason))
    fold = fold_step(PLAN, total_customers=50, carried=Carried(), pods=pods, job=_job(failed="0"))
    assert fold.shard_statuses[0].failed == 10
    assert expected in fold.errors[0] and "exit code 137" in fold.errors[0]


def test_an_oom_killed_shard_says_out_of_memory_and_what_to_change() -> None:
    pods = _attempts(_pod(2, "Failed", exit_code=137, reason="OOMKilled"))
    fold = fold_step(PLAN, total_customers=50, carried=Carried(), pods=pods, job=_job(failed="2"))
    (error,) = fold.errors
    assert error.startswith("shard 2: out of memory")
    assert "spec.worker.resources.limits.memory" in error


def test_summary_of_another_shard_is_not_trusted() -> None:
    (attempt,) = _attempts(_pod(1, "Failed", message=_summary(3)))
    assert attempt.summary is None and attempt.message_error is not None


def test_a_job_that_stopped_early_fails_its_unstarted_shards() -> None:
    pods = _attempts(
        _pod(0, "Failed", message=_summary(0, {"c001": "x"})), _pod(1, "Succeeded", message=_summary(1))
    )
    job = _job("1", "0", condition="Failed", reason="MaxFailedIndexesExceeded")
    fold = fold_step(PLAN, total_customers=50, carried=Carried(), pods=pods, job=job)
    assert fold.finished
    assert [s.state for s in fold.shard_statuses] == [ShardState.FAILED, ShardState.SUCCEEDED] + [
        ShardState.FAILED
    ] * 3
    assert fold.customers.model_dump() == {
        "total": 50,
        "succeeded": 19,
        "failed": 31,
        "pending": 0,
        "not_released": 0,
    }
    assert any("did not run" in e and "MaxFailedIndexesExceeded" in e for e in fold.errors)


def test_a_retry_step_adds_to_what_was_carried() -> None:
    plan = shard_layout(2, 10, 10)
    result = ShardResult(0, seconds=1.0)
    result.customers = [CustomerResult("c012", True), CustomerResult("c034", True)]
    pods = _attempts(_pod(0, "Succeeded", message=result.summary().to_bytes().decode()))
    carried = Carried(succeeded=48, objects=ObjectTotals(copied=480))
    fold = fold_step(
        plan, total_customers=50, carried=carried, pods=pods, job=_job("0", condition="Complete")
    )
    assert fold.customers.model_dump() == {
        "total": 50,
        "succeeded": 50,
        "failed": 0,
        "pending": 0,
        "not_released": 0,
    }
    assert fold.objects.copied == 480
    assert (
        decide(StepKind.RETRY, fold, rest_pending=False, policy=FailurePolicy()).outcome == Outcome.COMPLETE
    )


def test_canary_success_releases_the_rest_and_failure_stops_it() -> None:
    plan = shard_layout(10, 10, 1)
    ok = _attempts(_pod(0, "Succeeded", message=_summary(0)))
    fold = fold_step(
        plan, total_customers=50, carried=Carried(), pods=ok, job=_job("0", condition="Complete")
    )
    assert fold.customers.pending == 40
    nxt = decide(StepKind.CANARY, fold, rest_pending=True, policy=FailurePolicy(tolerated_failed_customers=5))
    assert (nxt.next_step, nxt.outcome) == (StepKind.REST, None)

    bad = _attempts(_pod(0, "Failed", message=_summary(0, {"c003": "boom"})))
    fold = fold_step(
        plan, total_customers=50, carried=Carried(), pods=bad, job=_job(failed="0", condition="Failed")
    )
    stop = decide(
        StepKind.CANARY, fold, rest_pending=True, policy=FailurePolicy(tolerated_failed_customers=5)
    )
    assert (stop.next_step, stop.outcome, stop.reason) == (None, Outcome.FAILED, Reason.CANARY_FAILED)
    assert "40 customers were not released" in stop.message and "c003" in stop.message


def test_dry_run_completes_as_a_plan() -> None:
    pods = _attempts(*(_pod(i, "Succeeded", message=_summary(i)) for i in range(5)))
    fold = fold_step(
        PLAN, total_customers=50, carried=Carried(), pods=pods, job=_job("0-4", condition="Complete")
    )
    decision = decide(StepKind.PLAN, fold, rest_pending=False, policy=FailurePolicy())
    assert (decision.outcome, decision.reason) == (Outcome.COMPLETE, Reason.DRY_RUN_COMPLETE)


def test_shard_entries_are_capped_with_the_interesting_ones_first() -> None:
    shards = MAX_SHARD_ENTRIES + 500
    plan = shard_layout(shards, 1, 100)
    failing = {shards - 1, shards - 2}
    pods = []
    for i in range(shards):
        if i in failing:
            pods.append(_pod(i, "Failed", exit_code=137, reason="OOMKilled"))
        elif i < shards - 100:
            pods.append(_pod(i, "Succeeded"))
    job = _job(failed=",".join(map(str, sorted(failing))))
    fold = fold_step(plan, total_customers=shards, carried=Carried(), pods=_attempts(*pods), job=job)
    assert len(fold.shard_statuses) == MAX_SHARD_ENTRIES
    assert fold.shard_statuses_omitted == 500
    kept = {s.index for s in fold.shard_statuses}
    assert failing <= kept
    assert set(range(shards - 100, shards)) <= kept  # pending ones before succeeded ones
    assert [s.index for s in fold.shard_statuses] == sorted(kept)
    assert fold.shards.total == shards and fold.shards.pending == 98
