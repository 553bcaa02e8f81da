"""The operator's glue without a cluster: spec checks, settings, the pod book, steps, the CLI's view."""

from __future__ import annotations

import io
from typing import Any

import pytest

from webrelease.copier.spec import Canary, SpecError, parse_spec
from webrelease.operator.commands import (
    EXIT_COMPLETE,
    EXIT_FAILED_CUSTOMERS,
    EXIT_IN_PROGRESS,
    EXIT_NOT_FOUND,
    exit_code,
    status_command,
)
from webrelease.operator.conditions import Outcome, Reason, finished, invalid
from webrelease.operator.jobs import Owner, Step, step_id
from webrelease.operator.reconcile import PodBook, cluster_spec
from webrelease.operator.runs import (
    CanaryError,
    canary_ids,
    first_step,
    not_succeeded,
    run_id,
    select,
    started_status,
)
from webrelease.operator.settings import OperatorSettings, SettingsError
from webrelease.operator.status import (
    Carried,
    ConditionType,
    ReportRef,
    ShardState,
    SnapshotStatus,
    StepKind,
    WebReleaseStatus,
)

SPEC: dict[str, Any] = {
    "source": {"url": "s3://builds/web/1/"},
    "target": {"url": "s3://sites/{id}/"},
    "customers": {"url": "s3://lists/customers.jsonl"},
    "reports": {"url": "s3://reports/"},
}
NOW = "2026-01-01T00:10:00Z"
SNAP = SnapshotStatus(url="s3://reports/ns/r/g1-abc/customers.jsonl", sha256="a" * 64, count=50)


def _body(spec: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": "r", "namespace": "ns", "uid": "u", "generation": 1}, "spec": spec}


# -- cluster_spec ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"source": {"url": "file:///builds/web/"}}, "spec.source.url"),
        ({"target": {"url": "file:///sites/{id}/"}}, "spec.target.url"),
        ({"reports": {"url": "file:///reports/"}}, "spec.reports.url"),
        ({"customers": {"url": "file:///lists/c.jsonl"}}, "spec.customers.url"),
        ({"overrides": {"url": "file:///o/{id}/"}}, "spec.overrides.url"),
        ({"source": {"url": "s3://builds/a//b/"}}, "spec.source.url"),
    ],
)
def test_a_cluster_spec_needs_s3_urls(change: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as err:
        cluster_spec(_body({**SPEC, **change}))
    assert err.value.field == field


def test_model_errors_name_the_field_once() -> None:
    with pytest.raises(SpecError) as err:
        cluster_spec(_body({**SPEC, "sharding": {"customersPerShard": -5}}))
    text = str(err.value)
    assert text.startswith("spec.sharding.customersPerShard: ")
    assert text.count("spec.sharding.customersPerShard") == 1
    with pytest.raises(SpecError) as err:
        cluster_spec(_body({**SPEC, "source": {"url": "file:///b/"}}))
    assert str(err.value).startswith("spec.source.url: 'file:///b/': a cluster needs s3://")


def test_a_valid_spec_passes() -> None:
    assert cluster_spec(_body(SPEC)).target.url == "s3://sites/{id}/"


# -- settings ---------------------------------------------------------------------------------


def test_settings_from_the_environment() -> None:
    settings = OperatorSettings.from_env(
        {
            "WEBRELEASE_WORKER_IMAGE": "registry/webrelease:1",
            "WEBRELEASE_WORKER_RESOURCES": '{"requests": {"cpu": "1"}, "limits": {"memory": "2Gi"}}',
            "WEBRELEASE_WORKER_TOLERATIONS": '[{"key": "batch", "operator": "Exists"}]',
            "WEBRELEASE_WORKER_NODE_SELECTOR": "{}",
            "WEBRELEASE_WORKER_COMMAND": '["/venv/bin/webrelease", "shard"]',
            "WEBRELEASE_WORKER_TTL_SECONDS_AFTER_FINISHED": "86400",
            "WEBRELEASE_WORKER_SERVICE_ACCOUNT_NAME": "",
            "WEBRELEASE_METRICS_PORT": "9090",
            "WEBRELEASE_CACHE": "/root/.cache/webrelease",  # another tool's: ignored
            "HOME": "/root",
        }
    )
    assert settings.worker_image == "registry/webrelease:1"
    assert settings.worker_resources.requests == {"cpu": "1"}
    assert settings.worker_tolerations[0].key == "batch"
    assert settings.worker_command == ["/venv/bin/webrelease", "shard"]
    assert settings.worker_ttl_seconds_after_finished == 86400
    assert settings.worker_service_account_name is None
    assert settings.metrics_port == 9090


@pytest.mark.parametrize(
    ("key", "value", "named"),
    [
        ("WEBRELEASE_WORKER_RESOURCES", "{not json", "WEBRELEASE_WORKER_RESOURCES"),
        ("WEBRELEASE_METRICS_PORT", "99999", "WEBRELEASE_METRICS_PORT"),
        ("WEBRELEASE_WORKER_IMAGE_PULL_POLICY", "Sometimes", "WEBRELEASE_WORKER_IMAGE_PULL_POLICY"),
        ("WEBRELEASE_BATCH_SECONDS", "-1", "WEBRELEASE_BATCH_SECONDS"),
    ],
)
def test_bad_settings_name_the_variable(key: str, value: str, named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        OperatorSettings.from_env({key: value})


# -- the pod book -----------------------------------------------------------------------------


def _pod(name: str, index: int, phase: str, step: str = "g1-main") -> dict[str, Any]:
    terminated = (
        {"terminated": {"exitCode": 0 if phase == "Succeeded" else 3}}
        if phase in ("Succeeded", "Failed")
        else {}
    )
    return {
        "metadata": {
            "name": name,
            "namespace": "ns",
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "labels": {"webrelease.dev/release": "r", "webrelease.dev/step": step},
            "annotations": {"batch.kubernetes.io/job-completion-index": str(index)},
        },
        "status": {"phase": phase, "containerStatuses": [{"name": "shard", "state": terminated}]},
    }


def test_pod_book_tells_when_a_pod_has_just_finished() -> None:
    book = PodBook()
    (where, attempt, done) = book.observe(_pod("p0", 0, "Running"))
    assert where == ("ns", "r") and attempt is not None and not done
    assert book.observe(_pod("p0", 0, "Succeeded"))[2] is True
    assert book.observe(_pod("p0", 0, "Succeeded"))[2] is False  # seen already
    assert book.observe({"metadata": {"name": "other", "labels": {}}})[1] is None
    book.replace("ns", "r", "g1-main", [_pod("p1", 1, "Failed")])
    assert sorted(a.name for a in book.attempts("ns", "r", "g1-main")) == ["p0", "p1"]
    book.observe(_pod("q0", 0, "Running", step="g1-retry-1"))
    book.forget("ns", "r", keep="g1-retry-1")
    assert book.attempts("ns", "r", "g1-main") == []
    assert [a.name for a in book.attempts("ns", "r", "g1-retry-1")] == ["q0"]


# -- steps ------------------------------------------------------------------------------------


def test_names_of_runs_and_steps() -> None:
    assert run_id(3, "f21c3a97-65c0-4465-bc8d-5f4a82b67f23") == "g3-f21c3a97"
    assert step_id(3, StepKind.MAIN) == "g3-main"
    assert step_id(3, StepKind.RETRY, 2) == "g3-retry-2"


def test_first_step() -> None:
    assert first_step(parse_spec(SPEC)) == (StepKind.MAIN, False)
    assert first_step(parse_spec({**SPEC, "canary": {"count": 2}})) == (StepKind.CANARY, True)
    assert first_step(parse_spec({**SPEC, "canary": {"count": 2}, "dryRun": True})) == (StepKind.PLAN, False)


def test_canary_by_ids_and_by_count() -> None:
    ids = [f"c{i:03d}" for i in range(50)]
    assert canary_ids(ids, Canary(ids=["c007", "c042"])) == {"c007", "c042"}
    with pytest.raises(CanaryError, match=r"spec\.canary\.ids: not in the customer list: nope"):
        canary_ids(ids, Canary(ids=["c001", "nope"]))
    picked = canary_ids(ids, Canary(count=5))
    assert len(picked) == 5 and picked == canary_ids(list(reversed(ids)), Canary(count=5))
    assert picked != set(ids[:5])  # spread over the list, not its first five
    assert canary_ids(ids, Canary(count=500)) == set(ids)


def test_selecting_customers_keeps_their_order() -> None:
    records = [{"id": f"c{i}"} for i in range(5)]
    assert select(records, frozenset({"c3", "c1"})) == [{"id": "c1"}, {"id": "c3"}]
    assert select(records, frozenset({"c3", "c1"}), keep=False) == [{"id": "c0"}, {"id": "c2"}, {"id": "c4"}]
    assert not_succeeded(records, frozenset({"c0", "c2", "c4"})) == [{"id": "c1"}, {"id": "c3"}]


def _start(kind: StepKind, count: int, carried: Carried, *, retries: int = 0) -> Step:
    spec = parse_spec({**SPEC, "sharding": {"customersPerShard": 10, "parallelism": 2}})
    return Step(
        owner=Owner("r", "ns", "uid-1"),
        spec=spec,
        generation=1,
        kind=kind,
        snapshot=SNAP.model_copy(update={"count": count}),
        folder="s3://reports/ns/r/g1-abc/main/",
        retries=retries,
        carried=carried,
        rest_pending=kind == StepKind.CANARY,
    )


def test_a_new_run_starts_with_every_customer_pending() -> None:
    previous = WebReleaseStatus(
        conditions=finished([], Outcome.COMPLETE, Reason.ALL_SUCCEEDED, "", generation=0, now="t0"),
        completion_time="t0",
        start_time="t-1",
    )
    status = started_status(
        previous,
        _start(StepKind.MAIN, 50, Carried()),
        total_customers=50,
        run_snapshot=SNAP,
        report_url="s3://reports/ns/r/g1-abc/",
        new_run=True,
        now=NOW,
    )
    assert status.customers.model_dump() == {
        "total": 50,
        "succeeded": 0,
        "failed": 0,
        "pending": 50,
        "not_released": 0,
    }
    assert status.shards.total == 5 and status.shards.pending == 5
    assert [s.state for s in status.shard_statuses] == [ShardState.PENDING] * 5
    assert status.progress == "0/50"
    assert status.completion_time is None and status.start_time == "2026-01-01T00:10:00Z"
    assert status.is_true(ConditionType.PROGRESSING) and not status.is_true(ConditionType.COMPLETE)
    assert status.report == ReportRef(url="s3://reports/ns/r/g1-abc/")
    assert status.run is not None and status.run.job == "r-g1-main"


def test_a_retry_step_carries_what_succeeded() -> None:
    done = WebReleaseStatus(start_time="t0", report=ReportRef(url="s3://r/", index="s3://r/index.json"))
    status = started_status(
        done,
        _start(StepKind.RETRY, 2, Carried(succeeded=48), retries=1),
        total_customers=50,
        run_snapshot=SNAP,
        report_url="s3://r/",
        new_run=False,
        now=NOW,
    )
    assert status.customers.model_dump() == {
        "total": 50,
        "succeeded": 48,
        "failed": 0,
        "pending": 2,
        "not_released": 0,
    }
    assert status.start_time == "t0"
    assert status.report is not None and status.report.index == "s3://r/index.json"
    progressing = status.condition(ConditionType.PROGRESSING)
    assert progressing is not None and progressing.reason == "Retrying"


# -- webrelease status ------------------------------------------------------------------------


def _release(status: WebReleaseStatus, generation: int = 1) -> dict[str, Any]:
    return {"metadata": {"name": "r", "namespace": "ns", "generation": generation}, "status": status.to_k8s()}


def _running() -> WebReleaseStatus:
    return started_status(
        WebReleaseStatus(),
        _start(StepKind.MAIN, 50, Carried()),
        total_customers=50,
        run_snapshot=SNAP,
        report_url="s3://r/",
        new_run=True,
        now=NOW,
    )


def test_exit_codes_a_script_can_trust() -> None:
    running = _running()
    assert exit_code(_release(running)) == EXIT_IN_PROGRESS
    assert exit_code(_release(running, generation=2)) == EXIT_IN_PROGRESS  # not observed yet
    done = running.model_copy(
        update={
            "completion_time": "t1",
            "conditions": finished(
                running.conditions, Outcome.COMPLETE, Reason.ALL_SUCCEEDED, "", generation=1, now="t1"
            ),
        }
    )
    assert exit_code(_release(done)) == EXIT_COMPLETE
    degraded = done.model_copy(
        update={
            "conditions": finished(
                done.conditions, Outcome.DEGRADED, Reason.FAILURES_TOLERATED, "", generation=1, now="t1"
            )
        }
    )
    assert exit_code(_release(degraded)) == EXIT_FAILED_CUSTOMERS
    bad = WebReleaseStatus(
        observed_generation=1, conditions=invalid([], "spec.x: bad", generation=1, now="t")
    )
    assert exit_code(_release(bad)) == EXIT_NOT_FOUND


class _Reader:
    def __init__(self, bodies: list[dict[str, Any] | None]) -> None:
        self.bodies = bodies

    def get_release(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.bodies.pop(0) if len(self.bodies) > 1 else self.bodies[0]


def test_status_prints_every_shard_and_waits_for_the_end() -> None:
    running = _running()
    done = running.model_copy(
        update={
            "completion_time": "t1",
            "conditions": finished(
                running.conditions, Outcome.COMPLETE, Reason.ALL_SUCCEEDED, "50/50", generation=1, now="t1"
            ),
        }
    )
    out = io.StringIO()
    clock = iter(float(i) for i in range(100))
    code = status_command(
        _Reader([_release(running), _release(running), _release(done)]),
        "ns",
        "r",
        out,
        wait=60,
        clock=lambda: next(clock),
        sleep=lambda _s: None,
    )
    text = out.getvalue()
    assert code == EXIT_COMPLETE
    assert "state:      Complete" in text
    assert "customers:  50 total, 0 succeeded" in text
    assert sum(1 for line in text.splitlines() if "Pending" in line) == 5
    missing = io.StringIO()
    assert status_command(_Reader([None]), "ns", "nope", missing) == EXIT_NOT_FOUND
    assert "not found" in missing.getvalue()
