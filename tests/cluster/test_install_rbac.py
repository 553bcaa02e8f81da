"""The chart's RBAC is enough: the operator, authenticated as the chart's ServiceAccount and nothing
else, runs a complete release on the real cluster, in both modes; and its metrics endpoint, scraped
after the run, reports the customers succeeded and failed that the status reports.

The operator runs here as a local process (the test node agent runs pods without their
ServiceAccount token, so the chart's own operator pod is kept Pending): the exact command line and
environment of the chart's Deployment (WEBRELEASE_*, and POD_NAMESPACE/POD_NAME as the downward API
would give them), with a kubeconfig holding a TokenRequest token of the chart's ServiceAccount, and
the liveness and metrics endpoints moved to free ports on 127.0.0.1. Leader election is on, as
installed: the operator acts only once it holds the chart's Lease, so the run ending proves the
Lease RBAC is enough. The shard pods of its Job run through the node agent against the real S3 server.

Against an external cluster (make e2e-kind) the chart's operator runs in a real pod as that
ServiceAccount already; this module is skipped there.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s_client
from prometheus_client.parser import text_string_to_metric_families

from tests.cluster.test_install import (
    NOT_SCHEDULED,
    can_i,
    cluster_helm,
    create,
    extra_namespaces,
    get,
    service_account_kubeconfig,
)
from tests.harness.cluster_fixtures import wait_until
from tests.harness.controlplane import ControlPlane
from tests.harness.dashboard import load as load_dashboard
from tests.harness.dashboard import metric_names
from tests.harness.dashboard import queries as dashboard_queries
from tests.harness.helm import CHART, template, values_args
from tests.harness.s3server import S3Endpoint

BUILD = {
    "index.html": "<!doctype html><title>{{ name }}</title>\n",
    "config.js": "window.API = {{ apiUrl|json }};\n",
    "assets/app.js": "console.log('app');\n",
}
#: d has no apiUrl: config.js cannot be rendered for it, so it fails alone.
CUSTOMERS = [
    {"id": "a", "name": "Alpha", "apiUrl": "https://a.example"},
    {"id": "b", "name": "Beta", "apiUrl": "https://b.example"},
    {"id": "c", "name": "Gamma", "apiUrl": "https://c.example"},
    {"id": "d", "name": "Delta"},
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class RunningOperator:
    process: subprocess.Popen[bytes]
    log: Path
    liveness_url: str
    metrics_url: str
    #: The pod name it was given (POD_NAME): its leader-election identity.
    pod: str

    def log_tail(self, chars: int = 6000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


@contextlib.contextmanager
def operator_as_chart_service_account(
    plane: ControlPlane,
    api: k8s_client.ApiClient,
    tmp_path: Path,
    *,
    release: str,
    namespace: str,
    values: dict[str, Any],
) -> Iterator[RunningOperator]:
    """`helm install` the chart, then run its operator's command line as its ServiceAccount."""
    cluster_helm(
        plane, tmp_path, "install", release, str(CHART), "-n", namespace, *values_args(values, tmp_path)
    )
    (dep,) = [
        o
        for o in template(tmp_path, values, release=release, namespace=namespace)
        if o["kind"] == "Deployment"
    ]
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    sa_name = dep["spec"]["template"]["spec"]["serviceAccountName"]
    kubeconfig = service_account_kubeconfig(plane, api, namespace, sa_name, tmp_path / "operator.kubeconfig")

    liveness_port, metrics_port = free_port(), free_port()
    args = [
        f"--liveness=http://127.0.0.1:{liveness_port}/healthz" if a.startswith("--liveness=") else a
        for a in container["args"]
    ]
    pod = f"{dep['metadata']['name']}-7f9c6d-test1"
    fields = {"metadata.namespace": namespace, "metadata.name": pod}
    env = {
        e["name"]: e["value"] if "value" in e else fields[e["valueFrom"]["fieldRef"]["fieldPath"]]
        for e in container["env"]
    }
    env |= {"WEBRELEASE_METRICS_PORT": str(metrics_port), "WEBRELEASE_METRICS_HOST": "127.0.0.1"}
    home = tmp_path / "home"
    home.mkdir()
    env |= {
        "KUBECONFIG": str(kubeconfig),  # the ServiceAccount's token, nothing else
        "HOME": str(home),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "WEBRELEASE_BATCH_SECONDS": "0.5",
    }
    exe = Path(sys.executable).with_name(container["command"][0])
    log = tmp_path / "operator.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(exe), *args], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    running = RunningOperator(
        process,
        log,
        f"http://127.0.0.1:{liveness_port}/healthz",
        f"http://127.0.0.1:{metrics_port}/metrics",
        pod,
    )
    try:

        def alive() -> bool:
            assert process.poll() is None, (
                f"the operator exited ({process.returncode}):\n{running.log_tail()}"
            )
            try:
                with urllib.request.urlopen(running.liveness_url, timeout=2) as resp:
                    return bool(resp.status == 200)
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                return False

        wait_until("the operator's liveness endpoint", alive, timeout_s=60)
        yield running
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def put_build_and_customers(
    plane: ControlPlane, s3: S3Endpoint, bucket: str, namespace: str
) -> dict[str, Any]:
    """The build in S3, the customers in a ConfigMap, the credentials in a Secret; the WebRelease."""
    client = s3.client()
    for key, body in BUILD.items():
        client.put_object(Bucket=bucket, Key=f"build/{key}", Body=body.encode())
    create(
        plane,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "customers", "namespace": namespace},
            "data": {"customers.jsonl": "".join(json.dumps(c) + "\n" for c in CUSTOMERS)},
        },
    )
    create(
        plane,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "s3", "namespace": namespace},
            "stringData": {"AWS_ACCESS_KEY_ID": s3.access_key, "AWS_SECRET_ACCESS_KEY": s3.secret_key},
        },
    )
    return {
        "apiVersion": "webrelease.dev/v1alpha1",
        "kind": "WebRelease",
        "metadata": {"name": "spring", "namespace": namespace},
        "spec": {
            "source": {"url": f"s3://{bucket}/build/"},
            "target": {"url": f"s3://{bucket}/sites/{{id}}/"},
            "customers": {"configMapRef": {"name": "customers", "key": "customers.jsonl"}},
            "reports": {"url": f"s3://{bucket}/reports/"},
            "templates": ["index.html", "config.js"],
            "sharding": {"customersPerShard": 2, "parallelism": 2},
            "failurePolicy": {"retriesPerShard": 0, "toleratedFailedCustomers": 1},
            "storage": {"endpointUrl": s3.endpoint_url, "region": s3.region, "secretRef": {"name": "s3"}},
        },
    }


def release_and_check(
    plane: ControlPlane, s3: S3Endpoint, bucket: str, namespace: str, operator: RunningOperator
) -> None:
    manifest = put_build_and_customers(plane, s3, bucket, namespace)
    plane.kubectl("apply", "--server-side", "-f", "-", stdin=yaml.safe_dump(manifest))

    def ended() -> dict[str, Any] | None:
        assert operator.process.poll() is None, f"the operator exited:\n{operator.log_tail()}"
        obj = get(plane, "webrelease", "spring", namespace)
        status: dict[str, Any] = (obj or {}).get("status", {})
        progressing = [c for c in status.get("conditions", []) if c["type"] == "Progressing"]
        if progressing and progressing[0]["status"] == "False":
            return status
        return None

    try:
        status = wait_until("the release to end", ended, timeout_s=240, interval_s=1.0)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- operator log ---\n{operator.log_tail()}") from None
    # no request refused by RBAC (a namespace of an earlier test still being deleted refuses new
    # Events to anyone: "forbidden ... because it is being terminated" is not about permissions)
    refused = [
        line
        for line in operator.log.read_text(errors="replace").lower().splitlines()
        if "forbidden" in line and "because it is being terminated" not in line
    ]
    assert not refused, "\n".join(refused[:5])

    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Degraded"]["status"] == "True", status["conditions"]
    assert status["customers"] == {"total": 4, "succeeded": 3, "failed": 1, "pending": 0, "notReleased": 0}
    assert [f["id"] for f in status["failedCustomers"]["sample"]] == ["d"]

    client = s3.client()
    for c in CUSTOMERS[:3]:
        page = client.get_object(Bucket=bucket, Key=f"sites/{c['id']}/index.html")["Body"].read().decode()
        assert f"<title>{c['name']}</title>" in page
    listed = client.list_objects_v2(Bucket=bucket, Prefix="sites/d/")
    assert listed.get("KeyCount", 0) == 0, "nothing is written for a customer that failed"

    metrics = scrape(operator.metrics_url)
    rel = {("namespace", namespace), ("name", "spring")}

    def metric(name: str, **labels: str) -> float:
        return metrics[(name, frozenset(rel | set(labels.items())))]

    assert metric("webrelease_run_customers", state="succeeded") == status["customers"]["succeeded"]
    assert metric("webrelease_run_customers", state="failed") == status["customers"]["failed"]
    assert metric("webrelease_customers_total", outcome="succeeded") == 3
    assert metric("webrelease_customers_total", outcome="failed") == 1
    assert metric("webrelease_runs_finished_total", outcome="degraded") == 1
    assert metric("webrelease_run_in_progress") == 0
    assert metrics[("webrelease_leader", frozenset())] == 1
    # the chart's Grafana dashboard reads only what this real operator exports
    used = {n for expr in dashboard_queries(load_dashboard()) for n in metric_names(expr)}
    scraped = {name for name, _labels in metrics}
    assert used and used <= scraped, (
        f"the dashboard reads metrics the operator does not export: {used - scraped}"
    )


def assert_holds_the_chart_lease(plane: ControlPlane, release: str, namespace: str, pod: str) -> None:
    """The operator acted as the holder of the chart's Lease, in its own namespace."""
    lease = get(plane, "lease", f"{release}-webrelease-operator", namespace)
    assert lease is not None, "the operator created the chart's Lease"
    assert lease["spec"]["holderIdentity"] == pod
    assert lease["spec"]["leaseDurationSeconds"] == 15


@pytest.fixture(autouse=True)
def _local_cluster_only(control_plane: ControlPlane) -> None:
    if control_plane.external:
        pytest.skip("against an external cluster the chart's operator already runs as its ServiceAccount")


def test_cluster_wide_operator_releases_as_the_chart_service_account(
    control_plane: ControlPlane,
    k8s_api: k8s_client.ApiClient,
    namespace: str,
    s3_server: S3Endpoint,
    s3_bucket: str,
    tmp_path: Path,
) -> None:
    release = f"wr-{namespace[-6:]}"
    with (
        extra_namespaces(control_plane, f"{namespace}-shop") as (shop,),
        operator_as_chart_service_account(
            control_plane, k8s_api, tmp_path, release=release, namespace=namespace, values=NOT_SCHEDULED
        ) as operator,
    ):
        release_and_check(control_plane, s3_server, s3_bucket, shop, operator)
        assert_holds_the_chart_lease(control_plane, release, namespace, operator.pod)
        sa = tmp_path / "operator.kubeconfig"
        assert not can_i(control_plane, sa, "delete", "namespaces")
        assert not can_i(control_plane, sa, "list", "secrets", "-n", shop)
        # the WebRelease is deleted while the operator runs: its finalizer is removed, the Job goes with it
        control_plane.kubectl("delete", "webrelease", "spring", "-n", shop, "--wait=false")
        wait_until(
            "the WebRelease to be deleted",
            lambda: get(control_plane, "webrelease", "spring", shop) is None,
            timeout_s=60,
        )


def test_namespaced_operator_releases_as_the_chart_service_account(
    control_plane: ControlPlane,
    k8s_api: k8s_client.ApiClient,
    namespace: str,
    s3_server: S3Endpoint,
    s3_bucket: str,
    tmp_path: Path,
) -> None:
    release = f"wr-{namespace[-6:]}"
    with extra_namespaces(control_plane, f"{namespace}-shop", f"{namespace}-other") as (shop, other):
        values = {**NOT_SCHEDULED, "watchNamespaces": [shop]}
        with operator_as_chart_service_account(
            control_plane, k8s_api, tmp_path, release=release, namespace=namespace, values=values
        ) as operator:
            release_and_check(control_plane, s3_server, s3_bucket, shop, operator)
            assert_holds_the_chart_lease(control_plane, release, namespace, operator.pod)
            sa = tmp_path / "operator.kubeconfig"
            # the same identity, in a namespace it does not watch
            secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3", "namespace": other}}
            create(control_plane, {**secret, "stringData": {"AWS_SECRET_ACCESS_KEY": "not-for-you"}})
            refused = subprocess.run(
                [
                    str(control_plane.bin_dir / "kubectl") if control_plane.bin_dir else "kubectl",
                    f"--kubeconfig={sa}",
                    "-n",
                    other,
                    "get",
                    "secret",
                    "s3",
                ],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert refused.returncode != 0 and "forbidden" in refused.stderr.lower(), refused.stderr
            assert not can_i(control_plane, sa, "create", "jobs.batch", "-n", other)
            assert not can_i(control_plane, sa, "delete", "namespaces")
            control_plane.kubectl("delete", "webrelease", "spring", "-n", shop, "--wait=false")
            wait_until(
                "the WebRelease to be deleted",
                lambda: get(control_plane, "webrelease", "spring", shop) is None,
                timeout_s=60,
            )
