"""Installing webrelease into a real apiserver: `helm install` in both RBAC modes, `helm uninstall`,
the documented CRD upgrade, and `kubectl apply --server-side -f manifests/` followed by the example
release.

The operator pod itself is kept from running here (a nodeSelector no node has, or a zero pod quota):
these tests are about what an install creates and what the apiserver lets the chart's
ServiceAccount do, asked as that ServiceAccount (a TokenRequest token). tests/cluster/
test_install_rbac.py runs real releases with the operator authenticated as that ServiceAccount.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client as k8s_client

from tests.harness.cluster_fixtures import wait_until
from tests.harness.controlplane import ControlPlane
from tests.harness.helm import CHART, MANIFESTS, helm, helm_env, values_args

CRD_NAME = "webreleases.webrelease.dev"
#: Keeps the operator pod Pending: no node has this label.
NOT_SCHEDULED = {"operator": {"nodeSelector": {"webrelease.dev/test-never-scheduled": "true"}}}


def cluster_helm(plane: ControlPlane, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return helm(*args, "--kubeconfig", str(plane.kubeconfig), env=helm_env(tmp_path))


def kubectl_exe(plane: ControlPlane) -> str:
    return str(plane.bin_dir / "kubectl") if plane.bin_dir is not None else "kubectl"


def get(plane: ControlPlane, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
    """The object as JSON, or None when it does not exist."""
    where = ["-n", namespace] if namespace else []
    out = plane.kubectl("get", kind, name, *where, "-o", "json", "--ignore-not-found")
    if not out.stdout.strip():
        return None
    obj: dict[str, Any] = json.loads(out.stdout)
    return obj


def create(plane: ControlPlane, obj: dict[str, Any]) -> None:
    plane.kubectl("create", "-f", "-", stdin=json.dumps(obj))


def crd_established(plane: ControlPlane) -> bool:
    crd = get(plane, "customresourcedefinition", CRD_NAME)
    conditions = (crd or {}).get("status", {}).get("conditions", [])
    return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)


@contextlib.contextmanager
def extra_namespaces(plane: ControlPlane, *names: str) -> Iterator[list[str]]:
    for name in names:
        create(
            plane,
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": name, "labels": {"webrelease.dev/test": "true"}},
            },
        )
    try:
        yield list(names)
    finally:
        for name in names:
            plane.kubectl("delete", "namespace", name, "--ignore-not-found", "--wait=false", check=False)


def service_account_kubeconfig(
    plane: ControlPlane, api: k8s_client.ApiClient, namespace: str, name: str, path: Path
) -> Path:
    """A kubeconfig that authenticates as ServiceAccount ``namespace/name`` (a TokenRequest token)."""
    request = k8s_client.AuthenticationV1TokenRequest(
        spec=k8s_client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)
    )
    token = k8s_client.CoreV1Api(api).create_namespaced_service_account_token(name, namespace, body=request)
    assert token.status is not None and token.status.token
    return plane.kubeconfig_for_token(
        token.status.token, path, user=f"system:serviceaccount:{namespace}:{name}"
    )


def as_identity(plane: ControlPlane, kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [kubectl_exe(plane), f"--kubeconfig={kubeconfig}", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def can_i(plane: ControlPlane, kubeconfig: Path, verb: str, resource: str, *where: str) -> bool:
    """`kubectl auth can-i` as the identity of ``kubeconfig`` (a SelfSubjectAccessReview)."""
    result = as_identity(plane, kubeconfig, "auth", "can-i", verb, resource, *where)
    answer = result.stdout.strip()
    assert answer in {"yes", "no"}, result.stdout + result.stderr
    return answer == "yes"


#: What the operator does in every namespace it serves.
OPERATOR_NEEDS = [
    ("list", "webreleases.webrelease.dev"),
    ("watch", "webreleases.webrelease.dev"),
    ("patch", "webreleases.webrelease.dev"),
    ("patch", "webreleases.webrelease.dev/status"),
    ("create", "jobs.batch"),
    ("delete", "jobs.batch"),
    ("list", "jobs.batch"),
    ("list", "pods"),
    ("watch", "pods"),
    ("create", "events"),
    ("get", "configmaps"),
    ("get", "secrets"),
]
#: What it must not be able to do anywhere.
NEVER = [
    ("delete", "namespaces"),
    ("create", "pods"),
    ("list", "secrets"),
    ("update", "webreleases.webrelease.dev"),
    ("delete", "webreleases.webrelease.dev"),
    ("create", "clusterrolebindings"),
    ("patch", "customresourcedefinitions"),
    ("create", "serviceaccounts/token"),
]


def assert_never(plane: ControlPlane, kubeconfig: Path) -> None:
    for verb, resource in NEVER:
        assert not can_i(plane, kubeconfig, verb, resource, "--all-namespaces"), (verb, resource)


def assert_lease_rbac(plane: ControlPlane, kubeconfig: Path, namespace: str, lease: str) -> None:
    """Leader election: create a Lease, and read and renew the chart's one, in the release namespace
    only; nothing else about Leases."""
    for verb in ("get", "update"):
        assert can_i(plane, kubeconfig, verb, f"leases.coordination.k8s.io/{lease}", "-n", namespace), verb
        assert not can_i(plane, kubeconfig, verb, "leases.coordination.k8s.io/other", "-n", namespace), verb
    assert can_i(plane, kubeconfig, "create", "leases.coordination.k8s.io", "-n", namespace)
    for verb in ("create", "get", "update"):
        assert not can_i(plane, kubeconfig, verb, "leases.coordination.k8s.io", "-n", "default"), verb
    for verb in ("list", "watch", "delete", "patch"):
        assert not can_i(plane, kubeconfig, verb, "leases.coordination.k8s.io", "-n", namespace), verb


def test_helm_install_cluster_wide_then_uninstall(
    control_plane: ControlPlane, k8s_api: k8s_client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    release = f"wr-{namespace[-6:]}"
    fullname = f"{release}-webrelease"
    values = values_args(NOT_SCHEDULED, tmp_path)
    cluster_helm(control_plane, tmp_path, "install", release, str(CHART), "-n", namespace, *values)

    wait_until("the WebRelease CRD to be established", lambda: crd_established(control_plane), timeout_s=60)
    dep = get(control_plane, "deployment", fullname, namespace)
    assert dep is not None
    pod = dep["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == fullname
    assert pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    assert get(control_plane, "serviceaccount", fullname, namespace) is not None
    assert get(control_plane, "service", f"{fullname}-metrics", namespace) is not None
    assert get(control_plane, "clusterrole", fullname) is not None
    binding = get(control_plane, "clusterrolebinding", fullname)
    assert binding is not None
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": fullname, "namespace": namespace}]

    sa = service_account_kubeconfig(control_plane, k8s_api, namespace, fullname, tmp_path / "sa.kubeconfig")
    for verb, resource in OPERATOR_NEEDS:
        assert can_i(control_plane, sa, verb, resource, "--all-namespaces"), (verb, resource)
    assert_never(control_plane, sa)
    assert_lease_rbac(control_plane, sa, namespace, f"{fullname}-operator")

    # the documented CRD upgrade works on a CRD that helm installed
    upgrade = control_plane.kubectl(
        "apply", "--server-side", "--force-conflicts", "-f", str(CHART / "crds"), check=False
    )
    assert upgrade.returncode == 0, upgrade.stderr
    assert crd_established(control_plane)

    cluster_helm(control_plane, tmp_path, "uninstall", release, "-n", namespace, "--wait")
    for kind, name, ns in (
        ("deployment", fullname, namespace),
        ("serviceaccount", fullname, namespace),
        ("service", f"{fullname}-metrics", namespace),
        ("clusterrole", fullname, None),
        ("clusterrolebinding", fullname, None),
    ):
        wait_until(
            f"helm uninstall to remove {kind}/{name}",
            lambda kind=kind, name=name, ns=ns: get(control_plane, kind, name, ns) is None,  # type: ignore[misc]
            timeout_s=60,
        )
    # CRDs stay (deleting one would delete every WebRelease in the cluster): docs/install.md
    assert crd_established(control_plane)


def test_helm_install_namespaced_only_grants_the_watched_namespaces(
    control_plane: ControlPlane, k8s_api: k8s_client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    release = f"wr-{namespace[-6:]}"
    fullname = f"{release}-webrelease"
    with extra_namespaces(control_plane, f"{namespace}-a", f"{namespace}-b", f"{namespace}-c") as names:
        a, b, other = names
        values = values_args({**NOT_SCHEDULED, "watchNamespaces": [a, b]}, tmp_path)
        cluster_helm(control_plane, tmp_path, "install", release, str(CHART), "-n", namespace, *values)
        for ns in (a, b):
            assert get(control_plane, "role", fullname, ns) is not None
            assert get(control_plane, "rolebinding", fullname, ns) is not None
        assert get(control_plane, "role", fullname, other) is None
        assert get(control_plane, "clusterrole", fullname) is None
        assert get(control_plane, "clusterrolebinding", fullname) is None
        dep = get(control_plane, "deployment", fullname, namespace)
        assert dep is not None
        args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
        assert f"--namespace={a}" in args and f"--namespace={b}" in args and "--all-namespaces" not in args

        sa = service_account_kubeconfig(
            control_plane, k8s_api, namespace, fullname, tmp_path / "sa.kubeconfig"
        )
        for verb, resource in OPERATOR_NEEDS:
            for ns in (a, b):
                assert can_i(control_plane, sa, verb, resource, "-n", ns), (verb, resource, ns)
            assert not can_i(control_plane, sa, verb, resource, "-n", other), (verb, resource, other)
            assert not can_i(control_plane, sa, verb, resource, "--all-namespaces"), (verb, resource)
        assert_never(control_plane, sa)
        assert_lease_rbac(control_plane, sa, namespace, f"{fullname}-operator")
        assert not can_i(control_plane, sa, "list", "customresourcedefinitions")
        assert not can_i(control_plane, sa, "list", "namespaces")

        # and a real attempt: reading a Secret in a namespace it does not watch is refused
        secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "not-yours", "namespace": other}}
        create(control_plane, {**secret, "stringData": {"password": "hunter2"}})
        attempt = as_identity(control_plane, sa, "-n", other, "get", "secret", "not-yours", "-o", "json")
        assert attempt.returncode != 0
        assert "forbidden" in attempt.stderr.lower(), attempt.stderr
        assert "hunter2" not in attempt.stdout and "aHVudGVyMg" not in attempt.stdout
        # nor may it delete a namespace
        attempt = as_identity(control_plane, sa, "delete", "namespace", other, "--wait=false")
        assert attempt.returncode != 0 and "forbidden" in attempt.stderr.lower(), attempt.stderr
        ns_obj = get(control_plane, "namespace", other)
        assert ns_obj is not None and "deletionTimestamp" not in ns_obj["metadata"]

        cluster_helm(control_plane, tmp_path, "uninstall", release, "-n", namespace, "--wait")
        for ns in (a, b):
            wait_until(
                f"helm uninstall to remove the Role in {ns}",
                lambda ns=ns: get(control_plane, "role", fullname, ns) is None,  # type: ignore[misc]
                timeout_s=60,
            )


def lost_fields(expected: Any, actual: Any, path: str = "spec") -> list[str]:
    """Paths of ``expected`` that the stored object lost or changed (the apiserver prunes fields
    its schema does not know)."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [path]
        return [p for k, v in expected.items() for p in lost_fields(v, actual.get(k), f"{path}.{k}")]
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            return [path]
        return [
            p
            for i, (e, a) in enumerate(zip(expected, actual, strict=True))
            for p in lost_fields(e, a, f"{path}[{i}]")
        ]
    return [] if expected == actual else [path]


def test_kubectl_apply_manifests_then_the_example_release(
    control_plane: ControlPlane, namespace: str
) -> None:
    docs = [d for f in sorted(MANIFESTS.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]
    (ns_doc,) = [d for d in docs if d["kind"] == "Namespace"]
    operator_ns = ns_doc["metadata"]["name"]
    # An external cluster (make e2e-kind) already runs webrelease from the chart in that namespace:
    # there the manifests are checked with a server-side dry run instead of replacing it.
    dry_run = ["--dry-run=server"] if control_plane.external else []
    created_ns = False
    # The CRD may already be there, installed by helm or by another test: --force-conflicts takes over
    # its fields, as docs/install.md says for that case. A fresh cluster needs no flag.
    apply = ["apply", "--server-side", "--force-conflicts", *dry_run]
    if not control_plane.external:
        if get(control_plane, "namespace", operator_ns) is None:
            create(
                control_plane, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": operator_ns}}
            )
            created_ns = True
        # the operator Deployment's pod must not start here: it would run without its ServiceAccount token
        quota = {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": "no-pods", "namespace": operator_ns},
        }
        create(control_plane, {**quota, "spec": {"hard": {"pods": "0"}}})
    try:
        out = control_plane.kubectl(*apply, "-f", str(MANIFESTS), check=False)
        assert out.returncode == 0, out.stdout + out.stderr
        for d in docs:
            group = d["apiVersion"].split("/")[0] if "/" in d["apiVersion"] else ""
            ref = d["kind"].lower() + (f".{group}" if group else "") + "/" + d["metadata"]["name"]
            assert ref in out.stdout, (ref, out.stdout)
        if dry_run:
            return
        wait_until(
            "the WebRelease CRD to be established", lambda: crd_established(control_plane), timeout_s=60
        )
        (dep_doc,) = [d for d in docs if d["kind"] == "Deployment"]
        dep = get(control_plane, "deployment", dep_doc["metadata"]["name"], operator_ns)
        assert dep is not None
        assert dep["spec"]["template"]["spec"] == {
            **dep["spec"]["template"]["spec"],
            **{k: v for k, v in dep_doc["spec"]["template"]["spec"].items() if k != "containers"},
        }

        example = MANIFESTS / "examples" / "release.yaml"
        out = control_plane.kubectl(
            "apply", "--server-side", "-n", namespace, "-f", str(example), check=False
        )
        assert out.returncode == 0, out.stdout + out.stderr
        wanted = yaml.safe_load(example.read_text())
        stored = get(control_plane, "webrelease", wanted["metadata"]["name"], namespace)
        assert stored is not None
        assert lost_fields(wanted["spec"], stored["spec"]) == [], (
            "the CRD schema keeps every field of the example"
        )
    finally:
        if not control_plane.external:
            for f in sorted(MANIFESTS.glob("*.yaml")):
                if f.name not in {"00-crd.yaml", "10-namespace.yaml"}:
                    control_plane.kubectl(
                        "delete", "--ignore-not-found", "--wait=false", "-f", str(f), check=False
                    )
            control_plane.kubectl(
                "delete", "resourcequota", "no-pods", "-n", operator_ns, "--ignore-not-found", check=False
            )
            if created_ns:
                control_plane.kubectl("delete", "namespace", operator_ns, "--wait=false", check=False)
