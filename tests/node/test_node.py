"""The node itself: a pod from our image runs on the real kubelet, reaches the apiserver through the
``kubernetes`` Service with its ServiceAccount token and the S3 server on the pod network, its log is
served by ``kubectl logs``; and a whole start/stop cycle of the node leaves the machine as it was.
"""

from __future__ import annotations

import json
import time
from typing import Any

from tests.harness.controlplane import api_path
from tests.harness.node import host_state
from tests.harness.node_fixtures import NodeStack, RunningNode

PROBE = r"""
import json, os, urllib.error, urllib.request
from kubernetes import client, config
config.load_incluster_config()
version = client.VersionApi().get_code().git_version
me = client.CoreV1Api().read_namespaced_pod(os.environ["POD_NAME"], os.environ["POD_NAMESPACE"])
try:
    s3 = urllib.request.urlopen(os.environ["S3_URL"], timeout=10).status
except urllib.error.HTTPError as exc:  # an anonymous request: S3 answers 403
    s3 = exc.code
try:
    urllib.request.urlopen("http://192.0.2.1/", timeout=3)
    outside = "reached"
except OSError as exc:
    outside = type(exc).__name__
print(json.dumps({"version": version, "phase": me.status.phase, "s3": s3, "outside": outside}))
"""


def probe_pod(running: RunningNode, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "probe", "namespace": namespace},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "probe",
                    "image": running.images.webrelease,
                    "imagePullPolicy": "Never",
                    "command": ["python", "-c", PROBE],
                    "env": [
                        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                        {
                            "name": "POD_NAMESPACE",
                            "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
                        },
                        {"name": "S3_URL", "value": running.s3.endpoint_url + "/"},
                    ],
                }
            ],
        },
    }


def run_probe(running: RunningNode, namespace: str) -> dict[str, Any]:
    with running.kube() as kube:
        # the default ServiceAccount may read pods (the probe reads itself)
        kube.create(
            api_path("rbac.authorization.k8s.io/v1", "rolebindings", namespace=namespace),
            {
                "metadata": {"name": "probe-view"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
                "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": namespace}],
            },
        )
        kube.create(api_path("v1", "pods", namespace=namespace), probe_pod(running, namespace))
        path = api_path("v1", "pods", namespace=namespace, name="probe")
        deadline = time.monotonic() + 120
        while True:
            pod = kube.get(path)
            phase = pod.get("status", {}).get("phase")
            if phase in ("Succeeded", "Failed"):
                break
            assert time.monotonic() < deadline, (
                f"the probe pod did not finish: {json.dumps(pod.get('status'))}"
            )
            time.sleep(0.5)
    logs = running.plane.kubectl("logs", "-n", namespace, "probe", check=False)
    assert phase == "Succeeded", f"{json.dumps(pod['status'])}\n{logs.stdout}{logs.stderr}"
    result: dict[str, Any] = json.loads(logs.stdout.strip().splitlines()[-1])
    return result


def test_a_pod_of_our_image_reaches_the_apiserver_and_s3_and_nothing_else(
    node_stack: NodeStack, node_namespace: str
) -> None:
    running = node_stack.get()
    result = run_probe(running, node_namespace)
    assert result["version"] == f"v{running.plane.version}"
    assert result["phase"] == "Running"
    assert result["s3"] in (200, 403)
    assert result["outside"] != "reached"


def test_a_start_stop_cycle_leaves_the_machine_as_it_was(node_stack: NodeStack) -> None:
    node_stack.shutdown()
    before = host_state()
    running = node_stack.get()
    during = host_state()
    with running.kube() as kube:
        kube.create(api_path("v1", "namespaces"), {"metadata": {"name": "cycle"}})
        deadline = time.monotonic() + 60
        while kube.find(api_path("v1", "serviceaccounts", namespace="cycle", name="default")) is None:
            assert time.monotonic() < deadline
            time.sleep(0.2)
    run_probe(running, "cycle")
    during_pods = host_state()
    node_stack.shutdown()
    after = host_state()
    # the comparison can fail: a running node is visible in every part that is compared
    for part in ("processes", "links", "iptables", "cgroups"):
        assert during[part] != before[part], part
    for part in ("mounts", "var_log_containers"):
        assert during_pods[part] != before[part], part
    diff = {k: (before[k], after[k]) for k in before if before[k] != after[k]}
    assert not diff, json.dumps(diff, indent=1)[:6000]
