"""What the node tier's chart tests share: the chart's operator on the real node (`Installed`), and
checks of the pods as containerd ran them."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from dataclasses import dataclass
from typing import Any

from tests.harness.controlplane import Kube, api_path
from tests.harness.node_fixtures import RunningNode
from tests.harness.operator_harness import ended

OPERATOR_NS = "webrelease-helm"
RELEASE = "wr"
LEASE = f"{RELEASE}-webrelease-operator"
UID = 65532
#: Where a pod's ServiceAccount token would be mounted.
TOKEN_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


@dataclass
class Installed:
    running: RunningNode
    kube: Kube

    def operator_pod(self) -> dict[str, Any]:
        """The chart's one operator pod, Running (waits for it)."""
        deadline = time.monotonic() + 180
        while True:
            pods = [
                p
                for p in self.kube.items(
                    api_path("v1", "pods", namespace=OPERATOR_NS),
                    labelSelector="app.kubernetes.io/name=webrelease",
                )
                if not p["metadata"].get("deletionTimestamp")
            ]
            ready = [
                p
                for p in pods
                if any(
                    c["type"] == "Ready" and c["status"] == "True"
                    for c in p.get("status", {}).get("conditions") or []
                )
            ]
            if len(ready) == 1:
                return ready[0]
            assert time.monotonic() < deadline, json.dumps([p.get("status") for p in pods], indent=1)[:4000]
            time.sleep(0.5)

    def lease_holder(self) -> str:
        lease = self.kube.find(
            api_path("coordination.k8s.io/v1", "leases", namespace=OPERATOR_NS, name=LEASE)
        )
        return str(((lease or {}).get("spec") or {}).get("holderIdentity") or "")

    def wait_leader(self) -> dict[str, Any]:
        """The operator pod, once it holds the chart's Lease."""
        deadline = time.monotonic() + 120
        while True:
            pod = self.operator_pod()
            if self.lease_holder() == pod["metadata"]["name"]:
                return pod
            assert time.monotonic() < deadline, f"no leader: Lease held by {self.lease_holder()!r}"
            time.sleep(0.5)

    def ended_with_operator_up(self, body: dict[str, Any]) -> bool:
        """`ended`, failing at once when the operator container has restarted (it crashed)."""
        for pod in self.kube.items(
            api_path("v1", "pods", namespace=OPERATOR_NS), labelSelector="app.kubernetes.io/name=webrelease"
        ):
            for cs in pod.get("status", {}).get("containerStatuses") or []:
                assert cs.get("restartCount", 0) == 0, (
                    f"the operator restarted:\n{self.operator_log(previous=True)}"
                )
        return ended(body)

    def operator_log(self, *, previous: bool = False) -> str:
        out = self.running.plane.kubectl(
            "logs",
            "-n",
            OPERATOR_NS,
            "deployment/wr-webrelease",
            "--tail=80",
            f"--previous={previous}",
            check=False,
        )
        return out.stdout + out.stderr


def image_values(running: RunningNode) -> dict[str, Any]:
    repository, _, tag = running.images.webrelease.rpartition(":")
    return {"image": {"repository": repository, "tag": tag}}


def new_bucket(running: RunningNode) -> str:
    name = f"n-{uuid.uuid4().hex[:10]}"
    running.s3.client().create_bucket(Bucket=name)
    return name


def container_spec(running: RunningNode, pod: dict[str, Any]) -> dict[str, Any]:
    """The OCI runtime spec containerd gave runc for the pod's first container."""
    (status,) = pod["status"]["containerStatuses"]
    cid = status["containerID"].removeprefix("containerd://")
    out = subprocess.run(
        ["ctr", "--address", str(running.node.socket), "--namespace", "k8s.io", "containers", "info", cid],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    spec: dict[str, Any] = json.loads(out.stdout)["Spec"]
    return spec


#: What the kubelet and the runtime mount writable into every container (not the image's filesystem).
RUNTIME_MOUNTS = {
    "/dev",
    "/dev/pts",
    "/dev/mqueue",
    "/dev/shm",
    "/etc/hosts",
    "/etc/hostname",
    "/etc/resolv.conf",
}


def assert_locked_down(spec: dict[str, Any], *, token: bool) -> None:
    """Read-only root, UID/GID 65532, /tmp the one writable volume, an API token only if ``token``."""
    assert spec["root"].get("readonly") is True, spec["root"]
    user = spec["process"]["user"]
    assert (user["uid"], user["gid"]) == (UID, UID), user
    assert spec["process"].get("noNewPrivileges") is True
    caps = spec["process"].get("capabilities") or {}
    assert not any(caps.get(kind) for kind in ("bounding", "effective", "permitted")), caps
    mounts = {m["destination"]: m for m in spec["mounts"]}
    writable = {
        dest
        for dest, m in mounts.items()
        if "ro" not in (m.get("options") or []) and m.get("type") in ("bind", None, "tmpfs")
    }
    writable -= RUNTIME_MOUNTS
    assert writable == {"/tmp", "/dev/termination-log"}, sorted(writable)
    assert (TOKEN_DIR in mounts) is token, sorted(mounts)
