"""The WebRelease object stays under 256 KiB at 2,000 shards, whatever happens
(docs/design.md "The status contract").

The status is built the way the operator builds it (pods -> fold_step -> WebReleaseStatus) for the
worst case we can think of: every shard failed after three attempts, each naming as many failed
customers as its summary allows, with the longest ids and reasons; the longest condition messages
and URLs the models allow. The object around it carries a generous spec three times (spec,
kubectl's last-applied annotation, kopf's last-handled annotation), as it does in a cluster.
The spec itself is the user's: only its own limits bound it.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from webrelease.copier.results import CustomerResult, ShardResult
from webrelease.copier.runlayout import shard_layout
from webrelease.copier.spec import MAX_SHARDS, parse_spec
from webrelease.operator.aggregate import PodAttempt, fold_step, job_view, pod_attempt
from webrelease.operator.conditions import Outcome, Reason, finished
from webrelease.operator.status import (
    Carried,
    ReportRef,
    RunStatus,
    SnapshotStatus,
    StepKind,
    WebReleaseStatus,
)

BUDGET = 256 * 1024
#: what the status alone may take, leaving the rest of the budget to spec and metadata
STATUS_BUDGET = 200 * 1024
PER_SHARD = 50


def _id(n: int) -> str:
    head = f"customer-{n:07d}-"
    return head + "x" * (62 - len(head)) + "z"


def _failed_message(index: int) -> str:
    result = ShardResult(index, seconds=3600.0, results_url=f"s3://reports/{'p' * 200}/shards/{index}.jsonl")
    for k in range(PER_SHARD):
        cid = _id(index * PER_SHARD + k)
        ok = k >= 20  # 20 of 50 fail in every shard
        result.customers.append(CustomerResult(cid, ok, None if ok else "template error: " + "r" * 900))
    return result.summary().to_bytes().decode()


def _failed_pod(index: int, attempt: int, message: str) -> PodAttempt:
    pod: dict[str, Any] = {
        "metadata": {
            "name": f"release-g12-retry3-{index}-{attempt}",
            "creationTimestamp": f"2026-01-01T00:0{attempt}:00Z",
            "annotations": {"batch.kubernetes.io/job-completion-index": str(index)},
        },
        "status": {
            "phase": "Failed",
            "containerStatuses": [
                {
                    "name": "shard",
                    "state": {"terminated": {"exitCode": 3, "message": message}},
                }
            ],
        },
    }
    parsed = pod_attempt(pod)
    assert parsed is not None and parsed.summary is not None
    return parsed


def _succeeded_pod(index: int) -> PodAttempt:
    result = ShardResult(index, seconds=42.0)
    result.customers = [CustomerResult(_id(index * PER_SHARD + k), True) for k in range(PER_SHARD)]
    pod: dict[str, Any] = {
        "metadata": {
            "name": f"release-g1-main-{index}-0",
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "annotations": {"batch.kubernetes.io/job-completion-index": str(index)},
        },
        "status": {
            "phase": "Succeeded",
            "containerStatuses": [
                {
                    "name": "shard",
                    "state": {"terminated": {"exitCode": 0, "message": result.summary().to_bytes().decode()}},
                }
            ],
        },
    }
    parsed = pod_attempt(pod)
    assert parsed is not None
    return parsed


def _object(shards: int) -> dict[str, Any]:
    customers = shards * PER_SHARD
    plan = shard_layout(customers, PER_SHARD, 1000, max_shards=max(shards, MAX_SHARDS))
    assert plan.shards == shards
    pods: list[PodAttempt] = []
    for i in range(shards):
        message = _failed_message(i)
        pods.extend(_failed_pod(i, a, message) for a in range(3))
    failed = f"0-{shards - 1}"
    job = job_view(
        {"status": {"failedIndexes": failed, "conditions": [{"type": "Failed", "status": "True"}]}}
    )
    fold = fold_step(plan, total_customers=customers, carried=Carried(), pods=pods, job=job)
    long_url = "s3://reports/" + "r" * 2000 + "/"
    snap = SnapshotStatus(url=long_url + "customers.jsonl", sha256="f" * 64, count=customers)
    conditions = finished(
        [], Outcome.FAILED, Reason.TOO_MANY_FAILURES, "m" * 5000, generation=12, now="t" * 30
    )
    status = WebReleaseStatus(
        observed_generation=12,
        conditions=conditions,
        progress=fold.progress,
        start_time="2026-01-01T00:00:00Z",
        completion_time="2026-01-01T05:00:00Z",
        retry_token="t" * 253,
        run=RunStatus(
            generation=12,
            step=StepKind.RETRY,
            step_id="g12-retry3",
            job="x" * 63,
            snapshot=snap,
            customers_per_shard=PER_SHARD,
            shards=shards,
            retries=3,
            started="2026-01-01T00:00:00Z",
        ),
        customers=fold.customers,
        shards=fold.shards,
        objects=fold.objects,
        shard_statuses=fold.shard_statuses,
        shard_statuses_omitted=fold.shard_statuses_omitted,
        failed_customers=fold.failed_customers,
        snapshot=snap,
        report=ReportRef(url=long_url, index=long_url + "index.json"),
    )
    spec = parse_spec(
        {
            "source": {"url": "s3://builds/" + "b" * 200 + "/"},
            "target": {"url": "s3://sites/" + "s" * 200 + "/{id}/"},
            "customers": {"url": "s3://lists/" + "l" * 200 + ".jsonl"},
            "reports": {"url": "s3://reports/" + "r" * 200 + "/"},
            "templates": ["t" * 100] * 20,
            "overrides": {"url": "s3://overrides/" + "o" * 200 + "/{id}/"},
            "storage": {"endpointUrl": "https://" + "e" * 200, "secretRef": {"name": "n" * 253}},
        }
    ).model_dump(by_alias=True, exclude_none=True, mode="json")
    spec_json = json.dumps(spec)
    return {
        "apiVersion": "webrelease.dev/v1alpha1",
        "kind": "WebRelease",
        "metadata": {
            "name": "n" * 253,
            "namespace": "n" * 63,
            "uid": "0b6f8c1e-1111-2222-3333-444455556666",
            "generation": 12,
            "resourceVersion": "123456789",
            "annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": spec_json,
                "kopf.webrelease.dev/last-handled-configuration": spec_json,
                "webrelease.dev/retry": "t" * 253,
            },
        },
        "spec": spec,
        "status": status.to_k8s(),
    }


def _size(data: Any) -> int:
    return len(json.dumps(data, separators=(",", ":")).encode())


@pytest.mark.parametrize("shards", [2000, MAX_SHARDS])
def test_worst_case_object_stays_under_256_kib(shards: int) -> None:
    obj = _object(shards)
    size, status_size = _size(obj), _size(obj["status"])
    print(f"\n{shards} shards, all failed: object {size / 1024:.1f} KiB, status {status_size / 1024:.1f} KiB")
    assert status_size < STATUS_BUDGET
    assert size < BUDGET
    status = WebReleaseStatus.from_k8s(obj["status"])
    # bounded, yet exact where it matters
    assert status.customers.failed == shards * 20
    assert status.customers.succeeded == shards * 30
    assert status.failed_customers.total == shards * 20
    assert status.shards.failed == shards
    assert len(status.shard_statuses) + status.shard_statuses_omitted == shards
    assert sum(len(s.failed_ids) for s in status.shard_statuses) <= 200


def test_a_typical_2000_shard_run_lists_every_shard() -> None:
    shards = 2000
    plan = shard_layout(shards * PER_SHARD, PER_SHARD, 100)
    pods = [_succeeded_pod(i) for i in range(shards)]
    job = job_view({"status": {"completedIndexes": f"0-{shards - 1}"}})
    fold = fold_step(plan, total_customers=shards * PER_SHARD, carried=Carried(), pods=pods, job=job)
    status = WebReleaseStatus(
        customers=fold.customers, shards=fold.shards, shard_statuses=fold.shard_statuses
    )
    size = _size(status.to_k8s())
    print(f"\n{shards} shards, all succeeded: status {size / 1024:.1f} KiB")
    assert [s.index for s in status.shard_statuses] == list(range(shards))
    assert status.shard_statuses_omitted == 0
    assert status.customers.succeeded == 100_000
    assert size < STATUS_BUDGET
