"""Condition changes: transition times, exclusivity of the terminal conditions, invalid specs."""

from __future__ import annotations

from webrelease.operator.conditions import Outcome, Reason, finished, invalid, running, set_condition
from webrelease.operator.status import Condition, ConditionType, WebReleaseStatus

T0 = "2026-01-01T00:00:00Z"
T1 = "2026-01-01T00:01:00Z"
T2 = "2026-01-01T00:02:00Z"


def _by_type(conds: list[Condition]) -> dict[str, Condition]:
    return {c.type.value: c for c in conds}


def test_transition_time_moves_only_when_status_flips() -> None:
    conds = set_condition(
        [], ConditionType.PROGRESSING, "True", Reason.RUNNING, "0/5 shards", generation=1, now=T0
    )
    conds = set_condition(
        conds, ConditionType.PROGRESSING, "True", Reason.RUNNING, "3/5 shards", generation=1, now=T1
    )
    (cond,) = conds
    assert (cond.message, cond.last_transition_time) == ("3/5 shards", T0)
    conds = set_condition(
        conds, ConditionType.PROGRESSING, "False", Reason.COMPLETE, "done", generation=1, now=T2
    )
    assert conds[0].last_transition_time == T2


def test_running_then_complete() -> None:
    conds = running([], Reason.RUNNING, "0/50 customers", generation=2, now=T0)
    by = _by_type(conds)
    assert [c.type.value for c in conds] == ["Progressing", "Complete", "Degraded", "Failed", "Accepted"]
    assert by["Progressing"].status == "True"
    assert all(by[t].status == "False" for t in ("Complete", "Degraded", "Failed"))
    assert all(c.observed_generation == 2 for c in conds)
    conds = finished(conds, Outcome.COMPLETE, Reason.ALL_SUCCEEDED, "50/50 customers", generation=2, now=T1)
    by = _by_type(conds)
    assert (by["Progressing"].status, by["Progressing"].reason) == ("False", "Complete")
    assert (by["Complete"].status, by["Complete"].reason, by["Complete"].last_transition_time) == (
        "True",
        "AllCustomersSucceeded",
        T1,
    )
    assert by["Accepted"].last_transition_time == T0
    true = [c.type for c in conds if c.status == "True"]
    assert true == [ConditionType.COMPLETE, ConditionType.ACCEPTED]


def test_degraded_after_complete_flips_both() -> None:
    conds = finished([], Outcome.COMPLETE, Reason.ALL_SUCCEEDED, "", generation=1, now=T0)
    conds = finished(conds, Outcome.DEGRADED, Reason.FAILURES_TOLERATED, "2 failed", generation=2, now=T1)
    by = _by_type(conds)
    assert by["Complete"].status == "False" and by["Complete"].last_transition_time == T1
    assert by["Degraded"].status == "True" and by["Degraded"].message == "2 failed"
    assert by["Progressing"].reason == "Degraded"


def test_invalid_spec_names_the_field_in_accepted_and_failed() -> None:
    msg = "spec.sharding.customersPerShard: Input should be greater than or equal to 1"
    conds = invalid(running([], Reason.RUNNING, "", generation=1, now=T0), msg, generation=2, now=T1)
    by = _by_type(conds)
    assert (by["Accepted"].status, by["Accepted"].reason) == ("False", "InvalidSpec")
    assert (by["Failed"].status, by["Failed"].reason) == ("True", "InvalidSpec")
    assert "customersPerShard" in by["Failed"].message and "customersPerShard" in by["Accepted"].message
    assert by["Progressing"].status == "False"
    assert all(c.observed_generation == 2 for c in conds)


def test_long_messages_are_truncated_and_status_reads_back() -> None:
    conds = running([], Reason.RUNNING, "x" * 5000, generation=1, now=T0)
    status = WebReleaseStatus(conditions=conds)
    again = WebReleaseStatus.from_k8s(status.to_k8s())
    assert again == status
    cond = again.condition(ConditionType.PROGRESSING)
    assert cond is not None and len(cond.message) == 1024 and cond.message.endswith("…")
    assert again.is_true(ConditionType.PROGRESSING) and not again.is_true(ConditionType.COMPLETE)
