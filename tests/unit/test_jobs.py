"""The Indexed Job builder: a pure function, checked against what the shard pod will read."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from webrelease.copier.exitcodes import EXIT_BAD_INPUT
from webrelease.copier.invocation import ENV_INDEX, shard_settings
from webrelease.copier.spec import MAX_SHARDS, RELEASE_NAME_PATTERN, WebReleaseSpec, parse_spec
from webrelease.operator.constants import MAX_RELEASE_NAME
from webrelease.operator.jobs import (
    MAX_JOB_NAME,
    Owner,
    Step,
    build_job,
    job_name,
    max_failed_indexes,
    step_id,
)
from webrelease.operator.settings import WorkerDefaults
from webrelease.operator.status import SnapshotStatus, StepKind

OWNER = Owner(name="spring", namespace="shop", uid="0b6f8c1e-1111-2222-3333-444455556666")
SHA = "ab" * 32
DEFAULTS = WorkerDefaults(image="ghcr.io/example/webrelease:1.0")


def _spec(**extra: Any) -> WebReleaseSpec:
    data: dict[str, Any] = {
        "source": {"url": "s3://builds/web/1.2.3/"},
        "target": {"url": "s3://sites/{id}/"},
        "customers": {"url": "s3://lists/customers.jsonl"},
        "reports": {"url": "s3://reports/"},
        "sharding": {"customersPerShard": 10, "parallelism": 3},
        "failurePolicy": {"retriesPerShard": 1},
        "templates": ["config.js"],
    }
    data.update(extra)
    return parse_spec(data)


def _step(spec: WebReleaseSpec | None = None, customers: int = 50) -> Step:
    return Step(
        owner=OWNER,
        spec=spec or _spec(),
        generation=3,
        kind=StepKind.MAIN,
        snapshot=SnapshotStatus(
            url="s3://reports/shop/spring/g3-0b6f8c1e/customers.jsonl", sha256=SHA, count=customers
        ),
        folder="s3://reports/shop/spring/g3-0b6f8c1e/main/",
    )


def _env(job: dict[str, Any]) -> dict[str, Any]:
    container = job["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_indexed_job_shape() -> None:
    job = build_job(_step(), DEFAULTS)
    assert job["apiVersion"] == "batch/v1" and job["kind"] == "Job"
    meta = job["metadata"]
    assert (meta["name"], meta["namespace"]) == ("spring-g3-main", "shop")
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "webrelease.dev/v1alpha1",
            "kind": "WebRelease",
            "name": "spring",
            "uid": OWNER.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert (spec["completions"], spec["parallelism"]) == (5, 3)
    assert spec["backoffLimitPerIndex"] == 1
    assert spec["maxFailedIndexes"] == 2
    assert spec["podReplacementPolicy"] == "Failed"
    fail_index, ignore = spec["podFailurePolicy"]["rules"]
    assert fail_index == {
        "action": "FailIndex",
        "onExitCodes": {"containerName": "shard", "operator": "In", "values": [EXIT_BAD_INPUT]},
    }
    assert ignore["action"] == "Ignore" and ignore["onPodConditions"][0]["type"] == "DisruptionTarget"
    labels = spec["template"]["metadata"]["labels"]
    assert labels["webrelease.dev/release"] == "spring"
    assert labels["webrelease.dev/step"] == "g3-main"
    assert labels["webrelease.dev/generation"] == "3"
    assert meta["labels"] == labels


def test_pod_is_locked_down() -> None:
    pod = build_job(_step(), DEFAULTS)["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert isinstance(pod["securityContext"]["runAsUser"], int) and pod["securityContext"]["runAsUser"] > 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert container["terminationMessagePath"] == "/dev/termination-log"
    assert container["terminationMessagePolicy"] == "File"
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {}} in pod["volumes"]
    assert container["image"] == DEFAULTS.image
    assert container["command"] == ["webrelease", "shard"]


@pytest.mark.parametrize("index", [0, 4])
def test_the_shard_pod_reads_back_exactly_what_the_operator_meant(index: int) -> None:
    """The pod's environment, parsed by the copier's own settings code, is the step."""
    step = _step()
    env = _env(build_job(step, DEFAULTS))
    environ = {k: v for k, v in env.items() if isinstance(v, str)}
    environ[ENV_INDEX] = str(index)  # the Job controller sets it
    settings = shard_settings({}, environ)
    assert settings.spec == step.spec
    assert settings.release_name == "spring"
    assert (settings.snapshot_url, settings.snapshot_sha256) == (step.snapshot.url, SHA)
    assert settings.shard_size == 10
    assert settings.report_url == step.folder
    assert settings.index == index


def test_storage_secret_becomes_secret_key_refs_and_nothing_else_is_secret() -> None:
    env = _env(build_job(_step(_spec(storage={"secretRef": {"name": "s3-creds"}})), DEFAULTS))
    assert env["AWS_ACCESS_KEY_ID"] == {"secretKeyRef": {"name": "s3-creds", "key": "AWS_ACCESS_KEY_ID"}}
    secret = {"secretKeyRef": {"name": "s3-creds", "key": "AWS_SECRET_ACCESS_KEY"}}
    assert env["AWS_SECRET_ACCESS_KEY"] == secret
    assert env["AWS_SESSION_TOKEN"] == {
        "secretKeyRef": {"name": "s3-creds", "key": "AWS_SESSION_TOKEN", "optional": True}
    }
    without = _env(build_job(_step(), DEFAULTS))
    assert not any(k.startswith("AWS_") for k in without)


def test_worker_settings_from_the_spec() -> None:
    spec = _spec(
        worker={
            "image": "registry.local/webrelease:dev",
            "resources": {"requests": {"cpu": "1"}, "limits": {"memory": "2Gi"}},
            "serviceAccountName": "webrelease-shard",
            "nodeSelector": {"pool": "batch"},
            "tolerations": [{"key": "batch", "operator": "Exists", "effect": "NoSchedule"}],
        }
    )
    pod = build_job(_step(spec), DEFAULTS)["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == "registry.local/webrelease:dev"
    assert container["resources"] == {"requests": {"cpu": "1"}, "limits": {"memory": "2Gi"}}
    assert pod["serviceAccountName"] == "webrelease-shard"
    assert pod["automountServiceAccountToken"] is False
    assert pod["nodeSelector"] == {"pool": "batch"}
    assert pod["tolerations"] == [{"key": "batch", "operator": "Exists", "effect": "NoSchedule"}]
    default_pod = build_job(_step(), DEFAULTS)["spec"]["template"]["spec"]
    assert default_pod["containers"][0]["resources"] == {
        "requests": dict(DEFAULTS.requests),
        "limits": dict(DEFAULTS.limits),
    }
    assert "serviceAccountName" not in default_pod and "nodeSelector" not in default_pod


def test_the_spec_travels_as_json_without_nulls() -> None:
    env = _env(build_job(_step(), DEFAULTS))
    data = json.loads(env["WEBRELEASE_SPEC"])
    assert data["source"] == {"url": "s3://builds/web/1.2.3/"}
    assert "null" not in env["WEBRELEASE_SPEC"]


def test_job_names_are_deterministic_and_bounded() -> None:
    assert job_name("spring", "g3-main") == "spring-g3-main"
    long_a = "a" * 60 + "-one"
    long_b = "a" * 60 + "-two"
    a, b = job_name(long_a, "g12-retry3"), job_name(long_b, "g12-retry3")
    assert len(a) <= MAX_JOB_NAME and len(b) <= MAX_JOB_NAME
    assert a != b
    assert a == job_name(long_a, "g12-retry3")
    assert a.endswith("-g12-retry3")


DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


@given(
    name=st.from_regex(RELEASE_NAME_PATTERN, fullmatch=True).filter(lambda n: len(n) <= MAX_RELEASE_NAME),
    generation=st.integers(1, 10**9),
    kind=st.sampled_from([StepKind.MAIN, StepKind.CANARY, StepKind.REST, StepKind.RETRY]),
    retries=st.integers(0, 10**6),
)
def test_every_job_and_pod_hostname_of_any_allowed_name_fits(
    name: str, generation: int, kind: StepKind, retries: int
) -> None:
    """Every release name the CRD admits, at any generation and retry number: the Job name is a
    label value (<= 63) and its pods' hostname ``<job>-<largest index>`` a DNS label (<= 63)."""
    job = job_name(name, step_id(generation, kind, retries))
    hostname = f"{job}-{MAX_SHARDS - 1}"
    assert len(job) <= MAX_JOB_NAME and len(hostname) <= 63, hostname
    assert DNS_LABEL.fullmatch(hostname), hostname


def test_a_dotted_name_gets_a_hostname_safe_job_name() -> None:
    a, b = job_name("web.shop", "g1-main"), job_name("web-shop", "g1-main")
    assert "." not in a and a != b
    assert b == "web-shop-g1-main"


@pytest.mark.parametrize(
    ("shards", "tolerated", "expected"), [(1, 0, 0), (5, 0, 2), (5, 4, 4), (5, 100, 5), (2000, 3, 1000)]
)
def test_max_failed_indexes(shards: int, tolerated: int, expected: int) -> None:
    assert max_failed_indexes(shards, tolerated) == expected


def test_percent_tolerance_raises_max_failed_indexes() -> None:
    one_each = {"customersPerShard": 1, "parallelism": 5}
    spec = _spec(failurePolicy={"toleratedFailedPercent": 10}, sharding=one_each)
    job = build_job(_step(spec, customers=100), DEFAULTS)
    assert job["spec"]["completions"] == 100
    assert job["spec"]["maxFailedIndexes"] == 50
    spec = _spec(failurePolicy={"toleratedFailedPercent": 80}, sharding=one_each)
    assert build_job(_step(spec, customers=100), DEFAULTS)["spec"]["maxFailedIndexes"] == 80


def test_a_step_without_customers_has_no_job() -> None:
    with pytest.raises(ValueError, match="no shards"):
        build_job(_step(customers=0), DEFAULTS)


def test_the_operators_fast_path_switch_reaches_the_shards(monkeypatch: pytest.MonkeyPatch) -> None:
    """``WEBRELEASE_S3_FAST_PATH=0`` on the operator turns the S3 fast path off in every shard pod
    it starts; ``spec.storage.fastPath: false`` reaches them with the spec."""
    monkeypatch.delenv("WEBRELEASE_S3_FAST_PATH", raising=False)
    assert "WEBRELEASE_S3_FAST_PATH" not in _env(build_job(_step(), DEFAULTS))
    off = _spec(storage={"fastPath": False})
    assert (
        json.loads(_env(build_job(_step(off), DEFAULTS))["WEBRELEASE_SPEC"])["storage"]["fastPath"] is False
    )
    monkeypatch.setenv("WEBRELEASE_S3_FAST_PATH", "off")
    assert _env(build_job(_step(), DEFAULTS))["WEBRELEASE_S3_FAST_PATH"] == "0"
