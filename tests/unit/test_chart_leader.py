"""The chart's side of leader election: the Lease Role (one Lease, in the release namespace, in both
RBAC modes), the pod's own namespace and name from the downward API, the settings the operator reads
from them, ``replicaCount`` and the rollout strategy, and what the chart refuses."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.harness.helm import CHART, by_kind, helm, template, values_args
from webrelease.cli import build_parser
from webrelease.operator.main import election_config
from webrelease.operator.settings import OperatorSettings

NAMESPACED = {"watchNamespaces": ["shop", "outlet"]}


def deployment(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (dep,) = by_kind(objects, "Deployment")
    return dict(dep)


def container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (c,) = deployment(objects)["spec"]["template"]["spec"]["containers"]
    return dict(c)


def lease_roles(objects: list[dict[str, Any]]) -> list[Mapping[str, Any]]:
    return [r for r in by_kind(objects, "Role") if r["metadata"]["name"].endswith("-leader-election")]


def pod_env(objects: list[dict[str, Any]], *, namespace: str, pod: str) -> dict[str, str]:
    """The container's environment as the kubelet gives it to a pod ``namespace/pod``."""
    fields = {"metadata.namespace": namespace, "metadata.name": pod}
    env: dict[str, str] = {}
    for e in container(objects)["env"]:
        if "value" in e:
            env[e["name"]] = e["value"]
        else:
            env[e["name"]] = fields[e["valueFrom"]["fieldRef"]["fieldPath"]]
    return env


@pytest.mark.parametrize("values", [None, NAMESPACED], ids=["cluster-wide", "namespaced"])
def test_one_lease_in_the_release_namespace_and_nothing_more(
    values: dict[str, Any] | None, tmp_path: Path
) -> None:
    objs = template(tmp_path, values)
    (role,) = lease_roles(objs)
    assert role["metadata"]["namespace"] == "webrelease-system"
    assert role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": ["webrelease-operator"],
            "verbs": ["get", "update"],
        },
    ]
    (binding,) = [b for b in by_kind(objs, "RoleBinding") if b["roleRef"]["name"] == role["metadata"]["name"]]
    assert binding["metadata"]["namespace"] == "webrelease-system"
    (sa,) = by_kind(objs, "ServiceAccount")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": "webrelease-system"}
    ]
    # no lease permission anywhere else
    others = [r for r in [*by_kind(objs, "Role"), *by_kind(objs, "ClusterRole")] if r is not role]
    assert not [r for o in others for r in o["rules"] if "coordination.k8s.io" in r["apiGroups"]]


def test_the_operator_finds_the_lease_the_role_allows(tmp_path: Path) -> None:
    objs = template(tmp_path, release="shop", namespace="ops")
    (role,) = lease_roles(objs)
    (named,) = [r for r in role["rules"] if "resourceNames" in r]
    env = pod_env(objs, namespace="ops", pod="shop-webrelease-5c9d8-x2x7q")
    cfg = election_config(OperatorSettings.from_env(env))
    assert (cfg.namespace, cfg.name) == (role["metadata"]["namespace"], named["resourceNames"][0])
    assert (cfg.namespace, cfg.name) == ("ops", "shop-webrelease-operator")
    assert cfg.identity == "shop-webrelease-5c9d8-x2x7q", "each pod holds the Lease under its own name"
    assert (cfg.lease_duration_seconds, cfg.renew_deadline_seconds, cfg.renew_period_seconds) == (15, 10, 5)
    args = build_parser().parse_args(container(objs)["args"])
    assert args.leader_elect is None, "the environment decides (WEBRELEASE_LEADER_ELECTION)"


def test_every_leader_election_value_reaches_the_operator(tmp_path: Path) -> None:
    values = {
        "replicaCount": 3,
        "leaderElection": {
            "leaseName": "wr-lock",
            "leaseDurationSeconds": 30,
            "renewDeadlineSeconds": 20,
            "renewPeriodSeconds": 2.5,
        },
    }
    objs = template(tmp_path, values)
    assert deployment(objs)["spec"]["replicas"] == 3
    s = OperatorSettings.from_env(pod_env(objs, namespace="webrelease-system", pod="p"))
    assert s.leader_election is True
    assert s.leader_election_lease_name == "wr-lock"
    assert s.leader_election_lease_duration_seconds == 30
    assert s.leader_election_renew_deadline_seconds == 20
    assert s.leader_election_renew_period_seconds == 2.5
    (role,) = lease_roles(objs)
    assert role["rules"][1]["resourceNames"] == ["wr-lock"]


def test_rollout_keeps_a_leader_until_the_new_pod_stands_by(tmp_path: Path) -> None:
    strategy = deployment(template(tmp_path))["spec"]["strategy"]
    assert strategy == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}


def test_without_leader_election_one_pod_recreated_and_no_lease_role(tmp_path: Path) -> None:
    objs = template(tmp_path, {"leaderElection": {"enabled": False}})
    assert not lease_roles(objs)
    assert deployment(objs)["spec"]["strategy"] == {"type": "Recreate"}
    s = OperatorSettings.from_env(pod_env(objs, namespace="webrelease-system", pod="p"))
    assert s.leader_election is False


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        (
            {"replicaCount": 2, "leaderElection": {"enabled": False}},
            "replicaCount > 1 needs leaderElection.enabled",
        ),
        (
            {"leaderElection": {"renewDeadlineSeconds": 20}},
            "renewPeriodSeconds < renewDeadlineSeconds < leaseDurationSeconds",
        ),
        (
            {"leaderElection": {"renewPeriodSeconds": 10}},
            "renewPeriodSeconds < renewDeadlineSeconds < leaseDurationSeconds",
        ),
    ],
)
def test_the_chart_refuses_settings_that_would_let_two_pods_act(
    values: dict[str, Any], complaint: str, tmp_path: Path
) -> None:
    result = helm("template", "x", str(CHART), *values_args(values, tmp_path), check=False)
    assert result.returncode != 0
    assert complaint in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"replicaCount": "2"}, "/replicaCount"),
        ({"replicaCount": -1}, "/replicaCount"),
        ({"leaderElection": {"enabled": "yes"}}, "/leaderElection/enabled"),
        ({"leaderElection": {"leaseDurationSeconds": "15s"}}, "/leaderElection/leaseDurationSeconds"),
        ({"leaderElection": {"leaseName": "Not_A_Name"}}, "/leaderElection/leaseName"),
        ({"leaderElection": {"renewPeriod": 5}}, "renewPeriod"),
    ],
)
def test_schema_rejects_wrong_leader_election_values(
    values: dict[str, Any], complaint: str, tmp_path: Path
) -> None:
    result = helm("template", "x", str(CHART), *values_args(values, tmp_path), check=False)
    assert result.returncode != 0
    assert "don't meet the specifications of the schema" in result.stderr
    assert complaint in result.stderr, result.stderr
