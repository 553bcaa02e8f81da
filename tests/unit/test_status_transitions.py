"""The typed status transitions: the only ways the operator changes a WebRelease's status."""

from __future__ import annotations

from typing import get_type_hints

import pytest

from webrelease.copier.runlayout import shard_layout
from webrelease.operator.aggregate import StepFold, fold_step, run_ended
from webrelease.operator.conditions import Outcome, Reason, finished, running
from webrelease.operator.status import (
    Carried,
    ConditionType,
    ReportRef,
    RunStatus,
    SnapshotStatus,
    StatusChange,
    StepKind,
    WebReleaseStatus,
)

SNAP = SnapshotStatus(url="s3://reports/shop/spring/g1-abc/customers.jsonl", sha256="a" * 64, count=50)
T0, T1, T2 = "2026-01-01T00:00:00Z", "2026-01-01T00:05:00Z", "2026-01-01T00:09:00Z"


def _run(step: StepKind = StepKind.MAIN, *, started: str = T0, generation: int = 1) -> RunStatus:
    return RunStatus(
        generation=generation,
        step=step,
        step_id=f"g{generation}-{step.value}",
        job=f"spring-g{generation}-{step.value}",
        snapshot=SNAP,
        customers_per_shard=10,
        shards=5,
        started=started,
    )


def _fold(carried: Carried | None = None) -> StepFold:
    return fold_step(
        shard_layout(50, 10, 5), total_customers=50, carried=carried or Carried(), pods=(), job=None
    )


def test_status_change_names_every_field_of_the_model() -> None:
    assert set(get_type_hints(StatusChange)) == set(WebReleaseStatus.model_fields)


def test_changed_checks_names_at_runtime_too() -> None:
    status = WebReleaseStatus()
    assert status.changed(retry_token="x").retry_token == "x"
    assert status.retry_token is None, "frozen: a transition makes a copy"


def test_started_then_a_later_step_keeps_the_clock_and_the_report_url() -> None:
    conditions = running([], Reason.RUNNING, "starting", generation=1, now=T0)
    report = ReportRef(url="s3://reports/shop/spring/g1-abc/")
    first = WebReleaseStatus().started(
        _run(), _fold(), conditions, snapshot=SNAP, report=report, retry_token=None, new_run=True, canary=None
    )
    assert first.observed_generation == 1 and first.start_time == T0 and first.completion_time is None
    assert first.customers.total == 50 and first.customers.pending == 50
    assert first.shards.pending == 5 and first.snapshot == SNAP and first.report == report

    rest = first.with_report(ReportRef(url=report.url, index=report.url + "index.json")).started(
        _run(StepKind.REST, started=T1),
        _fold(Carried(succeeded=2)),
        conditions,
        snapshot=SNAP,
        report=ReportRef(url=report.url, index=report.url + "index.json"),
        retry_token="t",
        new_run=False,
        canary=None,
    )
    assert rest.start_time == T0, "the run's clock started with its first step"
    assert rest.run is not None and rest.run.step == StepKind.REST and rest.retry_token == "t"
    assert rest.customers.succeeded == 2


def test_finished_failed_observed() -> None:
    status = WebReleaseStatus().started(
        _run(),
        _fold(),
        running([], Reason.RUNNING, "go", generation=1, now=T0),
        snapshot=SNAP,
        report=ReportRef(url="s3://r/"),
        retry_token=None,
        new_run=True,
        canary=None,
    )
    done = status.with_conditions(
        finished(status.conditions, Outcome.COMPLETE, Reason.ALL_SUCCEEDED, "all", generation=1, now=T2)
    ).finished(T2, customers=run_ended(status.customers))
    assert done.completion_time == T2 and done.is_true(ConditionType.COMPLETE)
    assert done.customers.pending == 0 and done.customers.not_released == 50
    assert done.start_time == T0

    conditions = finished([], Outcome.FAILED, Reason.SNAPSHOT_FAILED, "down", generation=2, now=T2)
    failed = done.failed(2, conditions, now=T2, retry_token="r1")
    assert (failed.observed_generation, failed.retry_token, failed.completion_time) == (2, "r1", T2)
    assert failed.is_true(ConditionType.FAILED)

    waiting = failed.before_run(3, running(conditions, Reason.SUPERSEDING, "old Job", generation=3, now=T2))
    assert waiting.observed_generation == 3 and waiting.completion_time is None
    assert waiting.customers.total == 0 and waiting.snapshot is None and waiting.report is None
    assert waiting.run == failed.run, "run names the earlier run until this one starts"

    seen = WebReleaseStatus().observed(3, conditions)
    assert seen.observed_generation == 3 and seen.run is None
    assert seen.retry_seen("again").retry_token == "again"


@pytest.mark.parametrize("field", sorted(WebReleaseStatus.model_fields))
def test_every_field_can_be_changed_alone(field: str) -> None:
    """A change sets exactly the fields it names."""
    full = WebReleaseStatus().started(
        _run(),
        _fold(),
        running([], Reason.RUNNING, "go", generation=1, now=T0),
        snapshot=SNAP,
        report=ReportRef(url="s3://r/"),
        retry_token="t",
        new_run=True,
        canary=None,
    )
    other = WebReleaseStatus()
    changed = full.changed(**{field: getattr(other, field)})
    for name in WebReleaseStatus.model_fields:
        expected = getattr(other if name == field else full, name)
        assert getattr(changed, name) == expected, name
