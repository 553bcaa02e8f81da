"""charts/webrelease: lint, what it renders in both RBAC modes, and what its schema refuses."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness.helm import CHART, by_kind, helm, template, values_args
from webrelease.operator.settings import OperatorSettings, WorkerDefaults

NAMESPACED = {"watchNamespaces": ["shop", "outlet"]}


def deployment(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (dep,) = by_kind(objects, "Deployment")
    return dict(dep)


def container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (c,) = deployment(objects)["spec"]["template"]["spec"]["containers"]
    return dict(c)


def env_of(objects: list[dict[str, Any]]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container(objects)["env"]}


@pytest.mark.parametrize("values", [None, NAMESPACED], ids=["cluster-wide", "namespaced"])
def test_helm_lint_passes_strict(values: dict[str, Any] | None, tmp_path: Path) -> None:
    result = helm("lint", "--strict", str(CHART), *values_args(values, tmp_path))
    assert "0 chart(s) failed" in result.stdout


def test_cluster_wide_renders_clusterrole_and_nothing_namespaced_for_rbac(tmp_path: Path) -> None:
    objs = template(tmp_path)
    kinds = sorted(o["kind"] for o in objs)
    assert kinds == [
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "Role",  # the leader-election Lease (tests/unit/test_chart_leader.py)
        "RoleBinding",
        "Service",
        "ServiceAccount",
    ]
    (binding,) = by_kind(objs, "ClusterRoleBinding")
    (sa,) = by_kind(objs, "ServiceAccount")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": "webrelease-system"}
    ]
    args = container(objs)["args"]
    assert args[0] == "operator"
    assert "--all-namespaces" in args
    assert not [a for a in args if a.startswith("--namespace")]


def test_namespaced_mode_has_roles_per_namespace_and_no_cluster_permission(tmp_path: Path) -> None:
    objs = template(tmp_path, NAMESPACED)
    assert not by_kind(objs, "ClusterRole") and not by_kind(objs, "ClusterRoleBinding")
    roles = {r["metadata"]["namespace"]: r for r in watching(by_kind(objs, "Role"))}
    bindings = {b["metadata"]["namespace"]: b for b in watching(by_kind(objs, "RoleBinding"))}
    assert set(roles) == set(bindings) == {"shop", "outlet"}
    for ns, binding in bindings.items():
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": roles[ns]["metadata"]["name"],
        }
        assert binding["subjects"][0]["namespace"] == "webrelease-system"
    args = container(objs)["args"]
    assert "--all-namespaces" not in args
    assert [a for a in args if a.startswith("--namespace")] == ["--namespace=shop", "--namespace=outlet"]


def watching(objects: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The Roles/RoleBindings of watched namespaces (not the leader-election one)."""
    return [o for o in objects if not o["metadata"]["name"].endswith("-leader-election")]


def rules_set(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {
        (g, r, v)
        for rule in rules
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }


def test_rbac_is_the_operators_needs_only(tmp_path: Path) -> None:
    (cluster_role,) = by_kind(template(tmp_path), "ClusterRole")
    roles = watching(by_kind(template(tmp_path, NAMESPACED), "Role"))
    cluster = rules_set(cluster_role["rules"])
    for role in roles:
        # the same rules in a namespace, minus the cluster-scoped CRD watch
        assert rules_set(role["rules"]) == {r for r in cluster if r[0] != "apiextensions.k8s.io"}
    # nothing broad: no wildcards, no writes beyond what the operator does
    assert not [r for r in cluster if "*" in r]
    writes = {r for r in cluster if r[2] in {"create", "update", "patch", "delete", "deletecollection"}}
    assert writes == {
        ("webrelease.dev", "webreleases", "patch"),
        ("webrelease.dev", "webreleases/status", "patch"),
        ("", "events", "create"),
        ("batch", "jobs", "create"),
        ("batch", "jobs", "delete"),
    }
    assert ("", "secrets", "get") in cluster
    assert ("", "pods", "watch") in cluster and ("batch", "jobs", "watch") not in cluster, (
        "kopf watches pods only"
    )
    assert ("", "secrets", "list") not in cluster, "secrets are read by name only"
    assert not [r for r in cluster if r[1] in {"namespaces", "nodes", "clusterroles", "roles"}]


def test_operator_pod_is_hardened(tmp_path: Path) -> None:
    objs = template(tmp_path)
    pod = deployment(objs)["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    c = container(objs)
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    (tmp_mount,) = c["volumeMounts"]
    assert tmp_mount["mountPath"] == "/tmp"
    (vol,) = pod["volumes"]
    assert vol["name"] == tmp_mount["name"] and "emptyDir" in vol
    assert deployment(objs)["spec"]["replicas"] == 1
    # leader election: the new pod stands by until the old one lets go (test_chart_leader.py)
    assert deployment(objs)["spec"]["strategy"]["type"] == "RollingUpdate"


def test_liveness_json_logs_and_metrics(tmp_path: Path) -> None:
    objs = template(tmp_path)
    c = container(objs)
    assert "--log-format=json" in c["args"]
    assert "--liveness=http://0.0.0.0:8080/healthz" in c["args"]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "liveness"}
    # the startup probe holds the liveness probe back until /healthz first answers (a slow start on
    # a busy node is not a failure), for up to 2 minutes; readiness follows health
    assert c["startupProbe"]["httpGet"] == c["readinessProbe"]["httpGet"] == c["livenessProbe"]["httpGet"]
    assert c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"] == 120
    assert "initialDelaySeconds" not in c["livenessProbe"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"liveness": 8080, "metrics": 9090}
    assert env_of(objs)["WEBRELEASE_METRICS_PORT"] == "9090"
    (svc,) = by_kind(objs, "Service")
    assert svc["spec"]["ports"] == [
        {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}
    ]
    assert svc["spec"]["selector"] == deployment(objs)["spec"]["selector"]["matchLabels"]

    off = template(tmp_path, {"metrics": {"enabled": False}})
    assert not by_kind(off, "Service")
    assert {p["name"] for p in container(off)["ports"]} == {"liveness"}
    assert env_of(off)["WEBRELEASE_METRICS_PORT"] == "0"


def test_worker_defaults_reach_the_operator(tmp_path: Path) -> None:
    env = env_of(template(tmp_path))
    assert env["WEBRELEASE_WORKER_IMAGE"] == "webrelease:0.1.0", "defaults to the operator's image"
    # one set of defaults: what the chart gives the operator by default makes exactly the operator's
    # own defaults, but for the image (the chart's) and the Job TTL (a day, so finished Jobs go)
    made = OperatorSettings.from_env(env).worker_defaults()
    assert made == replace(WorkerDefaults(), image="webrelease:0.1.0", ttl_seconds_after_finished=86400)
    assert "WEBRELEASE_WORKER_RESOURCES" not in env
    sized = {"requests": {"cpu": "1"}, "limits": {"memory": "2Gi"}}
    resources = env_of(template(tmp_path, {"worker": {"resources": sized}}))["WEBRELEASE_WORKER_RESOURCES"]
    assert OperatorSettings.from_env({"WEBRELEASE_WORKER_RESOURCES": resources}).worker_defaults().limits == {
        "memory": "2Gi"
    }

    values = {
        "image": {"repository": "registry.example/webrelease", "digest": "sha256:" + "a" * 64},
        "worker": {
            "serviceAccountName": "s3-writer",
            "nodeSelector": {"pool": "batch"},
            "tolerations": [{"key": "batch", "operator": "Exists", "effect": "NoSchedule"}],
        },
    }
    objs = template(tmp_path, values)
    env = env_of(objs)
    assert container(objs)["image"] == "registry.example/webrelease@sha256:" + "a" * 64
    assert env["WEBRELEASE_WORKER_IMAGE"] == container(objs)["image"]
    assert env["WEBRELEASE_WORKER_SERVICE_ACCOUNT_NAME"] == "s3-writer"
    assert json.loads(env["WEBRELEASE_WORKER_NODE_SELECTOR"]) == {"pool": "batch"}
    assert json.loads(env["WEBRELEASE_WORKER_TOLERATIONS"])[0]["key"] == "batch"

    assert (env["WEBRELEASE_WORKER_UID"], env["WEBRELEASE_WORKER_GID"]) == ("65532", "65532")

    explicit = env_of(template(tmp_path, {"worker": {"image": "other/worker:1"}}))
    assert explicit["WEBRELEASE_WORKER_IMAGE"] == "other/worker:1"


def test_existing_service_account(tmp_path: Path) -> None:
    objs = template(tmp_path, {"serviceAccount": {"create": False, "name": "ops"}})
    assert not by_kind(objs, "ServiceAccount")
    assert deployment(objs)["spec"]["template"]["spec"]["serviceAccountName"] == "ops"
    (binding,) = by_kind(objs, "ClusterRoleBinding")
    assert binding["subjects"][0]["name"] == "ops"
    failed = helm(
        "template",
        "x",
        str(CHART),
        *values_args({"serviceAccount": {"create": False}}, tmp_path),
        check=False,
    )
    assert failed.returncode != 0
    assert "serviceAccount.name is required" in failed.stderr


def test_rbac_create_false_renders_no_rbac(tmp_path: Path) -> None:
    kinds = {o["kind"] for o in template(tmp_path, {"rbac": {"create": False}})}
    assert not kinds & {"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"operator": {"livenessPort": "8080"}}, "/operator/livenessPort"),
        ({"metrics": {"port": 70000}}, "/metrics/port"),
        ({"metrics": {"enabled": "yes"}}, "/metrics/enabled"),
        ({"watchNamespaces": "shop"}, "/watchNamespaces"),
        ({"watchNamespaces": ["Not_A_Namespace"]}, "/watchNamespaces/0"),
        ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
        ({"image": {"digest": "latest"}}, "/image/digest"),
        ({"operator": {"logFormat": "xml"}}, "/operator/logFormat"),
        ({"worker": {"resources": {"limits": ["1Gi"]}}}, "/worker/resources/limits"),
        ({"worker": {"ttlSecondsAfterFinished": "1d"}}, "/worker/ttlSecondsAfterFinished"),
        ({"worker": {"resources": {"requests": {"cpu": 1}}}}, "/worker/resources/requests/cpu"),
        ({"worker": {"runAsUser": 0}}, "/worker/runAsUser"),
        ({"rbac": {"create": 1}}, "/rbac/create"),
        ({"replicas": 2}, "replicas"),
        ({"operator": {"resouces": {}}}, "resouces"),
    ],
)
def test_schema_rejects_wrong_values(values: dict[str, Any], complaint: str, tmp_path: Path) -> None:
    result = helm("template", "x", str(CHART), *values_args(values, tmp_path), check=False)
    assert result.returncode != 0
    assert "don't meet the specifications of the schema" in result.stderr
    assert complaint in result.stderr, result.stderr


#: Values that are whole Kubernetes objects: documented and typed as one value.
OPAQUE_VALUES = {"resources", "podSecurityContext", "securityContext"}


def walk_values(values: dict[str, Any], path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every value's key path in values.yaml; a non-empty mapping is a section, not a value."""
    out: list[tuple[str, ...]] = []
    for key, sub in values.items():
        child = (*path, key)
        if isinstance(sub, dict) and sub and key not in OPAQUE_VALUES:
            out += walk_values(sub, child)
        else:
            out.append(child)
    return out


def test_every_value_is_documented_and_in_the_schema() -> None:
    text = (CHART / "values.yaml").read_text(encoding="utf-8")
    values = yaml.safe_load(text)
    schema = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
    lines = text.splitlines()
    documented: set[tuple[str, ...]] = set()
    stack: list[tuple[int, str]] = []
    for i, line in enumerate(lines):
        m = re.match(r"^( *)([A-Za-z][\w]*):", line)
        if not m:
            continue
        indent = len(m.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, m.group(2)))
        # a `# --` comment block right above the key documents it
        j = i - 1
        while j >= 0 and lines[j].strip().startswith("#") and not lines[j].strip().startswith("# --"):
            j -= 1
        if j >= 0 and lines[j].strip().startswith("# --") and j >= i - 4:
            documented.add(tuple(k for _, k in stack))
    leaves = walk_values(values)
    assert leaves, "values.yaml has values"
    missing_docs = [".".join(p) for p in leaves if p not in documented]
    assert not missing_docs, f"undocumented values: {missing_docs}"

    def in_schema(path: tuple[str, ...]) -> bool:
        node = schema
        for key in path:
            props = node.get("properties", {})
            if key not in props:
                return False
            node = props[key]
        return "type" in node and bool(node.get("description"))

    missing_schema = [".".join(p) for p in leaves if not in_schema(p)]
    assert not missing_schema, f"values without a described schema entry: {missing_schema}"


def render_notes(tmp_path: Path, values: dict[str, Any] | None) -> str:
    """NOTES.txt as `helm install` prints it (helm renders NOTES only when installing; this renders
    the same file through `tpl` in a copy of the chart, with the same values and built-ins)."""
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    shutil.copy(chart / "templates" / "NOTES.txt", chart / "notes-under-test.txt")
    (chart / "templates" / "zz-notes-under-test.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\n"
        'data: {notes: {{ tpl (.Files.Get "notes-under-test.txt") . | quote }}}\n',
        encoding="utf-8",
    )
    out = helm(
        "template",
        "webrelease",
        str(chart),
        "--namespace",
        "webrelease-system",
        *values_args(values, tmp_path),
    ).stdout
    (cm,) = [d for d in yaml.safe_load_all(out) if d and d["kind"] == "ConfigMap"]
    notes: str = cm["data"]["notes"]
    return notes


def test_notes_tell_how_to_check_and_apply_the_example(tmp_path: Path) -> None:
    for values, expect in ((None, "kubectl apply -n <namespace>"), (NAMESPACED, "kubectl apply -n shop")):
        notes = render_notes(tmp_path / str(bool(values)), values)
        assert "kubectl get crd webreleases.webrelease.dev" in notes
        assert "rollout status deployment/webrelease" in notes
        assert f"{expect} -f manifests/examples/release.yaml" in notes
        assert "kubectl apply --server-side --force-conflicts -f charts/webrelease/crds/" in notes
        assert "curl -s localhost:9090/metrics" in notes
    assert "shop, outlet (and nowhere else)" in render_notes(tmp_path / "ns", NAMESPACED)


def test_crd_ships_with_the_chart(tmp_path: Path) -> None:
    objs = template(tmp_path, extra=["--include-crds"])
    (crd,) = by_kind(objs, "CustomResourceDefinition")
    assert crd["metadata"]["name"] == "webreleases.webrelease.dev"
    assert not [o for o in template(tmp_path) if o["kind"] == "CustomResourceDefinition"]
