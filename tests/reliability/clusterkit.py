"""What the cluster-side reliability scenarios share: a release applied to the real control plane, the
accounting read back from its status and report, and the ways to hurt a running shard.

The operator process, the CRD, the storage Secret and the waits are the operator tests' own
(``tests/harness/operator_harness.py``), imported, not copied.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tests.harness.controlplane import ControlPlane, Kube, api_path
from tests.harness.operator_harness import (
    SECRET,
    OperatorProcess,
    apply,
    condition,
    create_storage_secret,
    ended,
    jobs_of,
    read_json,
    read_jsonl,
    release_path,
    wait_release,
)
from tests.reliability.kit import Accounting, BigRelease, accounting_from_results, list_bucket

Obj = dict[str, Any]


@dataclass
class ClusterRun:
    """One BigRelease applied as a WebRelease in ``namespace``."""

    plane: ControlPlane
    kube: Kube
    namespace: str
    release: BigRelease
    operator: OperatorProcess | None = None
    #: every status seen while waiting (for monotonicity checks)
    seen: list[Obj] = field(default_factory=list)

    @classmethod
    def start(
        cls,
        plane: ControlPlane,
        kube: Kube,
        namespace: str,
        release: BigRelease,
        operator: OperatorProcess | None = None,
    ) -> ClusterRun:
        release.extra_spec.setdefault("storage", {})["secretRef"] = {"name": SECRET}
        release.write()
        create_storage_secret(kube, namespace, release.endpoint)
        done = apply(plane, namespace, release.manifest())
        assert done.returncode == 0, done.stderr
        return cls(plane, kube, namespace, release, operator)

    @property
    def name(self) -> str:
        return self.release.name

    def body(self) -> Obj:
        return self.kube.get(release_path(self.namespace, self.name))

    def wait(self, what: str, predicate: Any, timeout_s: float = 240) -> Obj:
        def recording(body: Obj) -> bool:
            if body.get("status"):
                self.seen.append(body["status"])
            return bool(predicate(body))

        return wait_release(
            self.kube, self.namespace, self.name, what, recording, operator=self.operator, timeout_s=timeout_s
        )

    def wait_ended(self, timeout_s: float = 240) -> Obj:
        return self.wait("the run has ended", ended, timeout_s=timeout_s)

    def jobs(self) -> list[Obj]:
        return jobs_of(self.kube, self.namespace, self.name)

    def pods(self) -> list[Obj]:
        return self.kube.items(
            api_path("v1", "pods", namespace=self.namespace),
            labelSelector=f"webrelease.dev/release={self.name}",
        )

    def events(self) -> list[Obj]:
        return self.kube.items(api_path("v1", "events", namespace=self.namespace))

    def accounting(self, body: Obj) -> Accounting:
        """Every customer line of every shard result file of the run's last step (the report
        index names them), checked against status and the index's list of failed customers."""
        status = body["status"]
        index = read_json(self.release.endpoint, status["report"]["index"])
        (step,) = index["steps"]
        lines = [
            line for shard in step["shards"] for line in read_jsonl(self.release.endpoint, shard["results"])
        ]
        acct = accounting_from_results(lines)
        customers = status["customers"]
        assert customers == {
            "total": len(self.release.ids),
            "succeeded": len(acct.succeeded),
            "failed": len(acct.failed),
            "pending": 0,
            "notReleased": 0,
        }, (customers, len(acct.succeeded), len(acct.failed))
        assert status["failedCustomers"]["total"] == len(acct.failed)
        assert {f["id"] for f in status["failedCustomers"]["sample"]} <= set(acct.failed)
        assert sorted(f["id"] for f in index["failed"]) == sorted(acct.failed)
        return acct

    def check_monotonic(self) -> None:
        """Counters never went backwards and never added up to more than the total."""
        last = (0, 0)
        for status in self.seen:
            c = status.get("customers") or {}
            now = (int(c.get("succeeded", 0)), int(c.get("failed", 0)))
            assert now[0] >= last[0] and now[0] + now[1] >= sum(last), (
                f"status went backwards: {last} -> {now}"
            )
            assert sum(now) <= len(self.release.ids), f"more customers counted than exist: {c}"
            last = now


def pod_index(pod: Mapping[str, Any]) -> int:
    return int(pod["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"])


def pod_pid(pod: Mapping[str, Any]) -> int | None:
    """The process the test node agent runs for a running pod (its container id is ``nodeagent://<pid>``)."""
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        cid = str(cs.get("containerID") or "")
        if cid.startswith("nodeagent://") and "running" in (cs.get("state") or {}):
            return int(cid.removeprefix("nodeagent://"))
    return None


def kill_pod_process(pod: Mapping[str, Any]) -> bool:
    """SIGKILL the process group of a running pod (as an OOM kill would); False if it already ended."""
    pid = pod_pid(pod)
    if pid is None:
        return False
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    return True


def objects_by_customer(release: BigRelease) -> dict[str, int]:
    """How many objects each site holds now (one listing)."""
    out: dict[str, int] = {}
    for key in list_bucket(release.endpoint, release.sites_bucket, "sites/"):
        cid = key.split("/", 2)[1]
        out[cid] = out.get(cid, 0) + 1
    return out


def failed_then_succeeded(pods: list[Obj], index: int) -> tuple[list[int], bool]:
    """Exit codes of the failed pods of ``index`` and whether a later one succeeded."""
    mine = sorted(
        (p for p in pods if pod_index(p) == index), key=lambda p: p["metadata"]["creationTimestamp"]
    )
    codes: list[int] = []
    for p in mine:
        for cs in (p.get("status") or {}).get("containerStatuses") or []:
            term = (cs.get("state") or {}).get("terminated")
            if term and term.get("exitCode", 0) != 0:
                codes.append(int(term["exitCode"]))
    return codes, any((p.get("status") or {}).get("phase") == "Succeeded" for p in mine)


def cond_reason(body: Obj, kind: str) -> tuple[str, str] | None:
    c = condition(body, kind)
    return None if c is None else (str(c.get("status")), str(c.get("reason")))
