"""Operator availability: two replicas of ``webrelease operator`` on one cluster, competing for one
leader-election Lease (docs/operator.md, "High availability"). One acts; the other stands by with
kopf not even started. The acting one is killed mid-run, the standby takes the Lease over once it
expires, resumes the run, and the run ends exact with one Job.

What is checked, each from what a user can see:

- the run: one Job, every customer counted once, every site the status calls succeeded exactly right
  (verify and the independent oracle of ``check_outcome``);
- the Lease: held by replica A, then by replica B, one transition, within the Lease duration plus a
  look after the kill;
- who acted: before the kill only A handled anything (kopf logs each handling; B's log has no line
  of kopf at all), ``webrelease_leader`` was 1 on A and 0 on B, and B's liveness endpoint answered
  while it stood by; after it, B leads (``webrelease_leader`` 1) and resumed the run;
- a leader stopped cleanly lets go of the Lease: the standby takes over at its next look, not after
  the Lease expires; a leader that finds its Lease taken exits at once (exit code 3).
"""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.harness.cluster_fixtures import wait_until
from tests.harness.controlplane import ControlPlane, Kube, api_path
from tests.harness.nodeagent import NodeAgent
from tests.harness.operator_harness import OperatorProcess, ended, free_port, install_crd
from tests.harness.s3server import S3Endpoint
from tests.reliability.clusterkit import ClusterRun, cond_reason
from tests.reliability.kit import BigRelease, Tally, check_outcome, make_customers

pytestmark = [pytest.mark.reliability, pytest.mark.storage]

#: The operator's defaults (the chart's too): a dead leader is replaced within LEASE + RENEW seconds.
LEASE_SECONDS = 15
RENEW_SECONDS = 5
#: kopf lines that only an acting operator writes.
KOPF_ACTING = ("Handler '", "Activity 'startup'", "webrelease operator started", "Daemon '")


def lease_path(namespace: str, name: str) -> str:
    return api_path("coordination.k8s.io/v1", "leases", namespace=namespace, name=name)


def replica(plane: ControlPlane, work: Path, name: str, lease: str, **env: str) -> OperatorProcess:
    """An operator replica with its metrics on a free port, competing for ``lease``."""
    port = free_port()
    return OperatorProcess(
        plane,
        work,
        extra_env={"WEBRELEASE_METRICS_PORT": str(port), "WEBRELEASE_METRICS_HOST": "127.0.0.1", **env},
        identity=f"{name}-{uuid.uuid4().hex[:6]}",
        lease=lease,
    )


def leader_gauge(op: OperatorProcess) -> float:
    url = f"http://127.0.0.1:{op.extra_env['WEBRELEASE_METRICS_PORT']}/metrics"
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    (value,) = [
        s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "webrelease_leader"
    ]
    return float(value)


def liveness(op: OperatorProcess) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{op.port}/healthz", timeout=5) as resp:
        assert resp.status == 200
        body: dict[str, Any] = json.loads(resp.read())
        return body


@dataclass
class Snapshot:
    """What each replica said at one moment."""

    logs: tuple[str, str]
    leader: tuple[float, float]
    lease: dict[str, Any]


@dataclass
class HandOff:
    run: ClusterRun
    body: dict[str, Any]
    replicas: tuple[OperatorProcess, OperatorProcess]
    before_kill: Snapshot
    standby_liveness: dict[str, Any]
    #: Seconds from the kill to B holding the Lease; None if it never did.
    takeover_seconds: float | None
    after: Snapshot
    tmp: Path
    seconds: float


def snapshot(kube: Kube, replicas: tuple[OperatorProcess, OperatorProcess], lease: str) -> Snapshot:
    logs = (replicas[0].log_tail(10_000_000), replicas[1].log_tail(10_000_000))
    gauges = tuple(leader_gauge(r) if r.running() else -1.0 for r in replicas)
    spec = (kube.find(lease_path(replicas[0].lease_namespace, lease)) or {}).get("spec") or {}
    return Snapshot(logs, (gauges[0], gauges[1]), spec)


@pytest.fixture(scope="module")
def hand_off(
    control_plane: ControlPlane,
    kube: Kube,
    node_agent: NodeAgent | None,
    s3_server: S3Endpoint,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[HandOff]:
    install_crd(control_plane, kube)
    lease = f"ha-{uuid.uuid4().hex[:6]}"
    replicas = (
        replica(control_plane, tmp_path_factory.mktemp("replica-a"), "replica-a", lease),
        replica(control_plane, tmp_path_factory.mktemp("replica-b"), "replica-b", lease),
    )
    a, b = replicas
    tmp = tmp_path_factory.mktemp("handoff")
    ns = f"ha-{uuid.uuid4().hex[:6]}"
    kube.create(api_path("v1", "namespaces"), {"metadata": {"name": ns}})
    rel = BigRelease(s3_server, tmp / "release", make_customers(200, 3), retries_per_shard=1)
    rel.extra_spec["sharding"] = {"parallelism": 2}
    try:
        a.start()
        # A acts (kopf's startup ran: with leader election, once it holds the Lease)
        wait_until("replica A to act", lambda: "webrelease operator started" in a.log_tail(), timeout_s=90)
        b.start()  # returns once its liveness endpoint answers
        # whatever B makes of the Lease (standing by, or acting: what the tests check), it has
        # made it before the WebRelease exists
        wait_until(
            "replica B to stand by or act",
            lambda: any(m in b.log_tail() for m in ("standing by", *KOPF_ACTING)),
            timeout_s=60,
        )
        standby = liveness(b)
        sa = api_path("v1", "serviceaccounts", namespace=ns, name="default")
        wait_until("the default ServiceAccount", lambda: kube.find(sa))
        rel.setup()
        start = time.monotonic()
        run = ClusterRun.start(control_plane, kube, ns, rel, None)

        def going(body: dict[str, Any]) -> bool:
            shards = (body.get("status") or {}).get("shards") or {}
            return int(shards.get("succeeded", 0)) >= 1 and not ended(body)

        run.wait("a shard has succeeded", going)
        before = snapshot(kube, replicas, lease)
        a.kill()
        killed = time.monotonic()
        try:
            b.wait_leading(kube, timeout_s=LEASE_SECONDS + RENEW_SECONDS + 30)
            takeover: float | None = time.monotonic() - killed
        except AssertionError:
            takeover = None  # the tests say what went wrong
        body = run.wait_ended()
        after = snapshot(kube, replicas, lease)
        yield HandOff(run, body, replicas, before, standby, takeover, after, tmp, time.monotonic() - start)
    finally:
        for r in replicas:
            r.stop()
        kube.delete(api_path("v1", "namespaces", name=ns), {"propagationPolicy": "Background"})
        rel.teardown()


def test_killing_one_replica_hands_the_run_to_the_other(hand_off: HandOff, tally: Tally) -> None:
    run, body = hand_off.run, hand_off.body
    a, b = hand_off.replicas
    assert b.running(), "the surviving replica exited"
    tally.runs, tally.customers, tally.faults = 1, len(run.release.ids), 1
    tally.seconds = hand_off.seconds
    # the Lease went from A to B, once
    assert hand_off.before_kill.lease.get("holderIdentity") == a.identity
    assert hand_off.after.lease.get("holderIdentity") == b.identity
    assert hand_off.after.lease["leaseTransitions"] == hand_off.before_kill.lease["leaseTransitions"] + 1
    assert hand_off.takeover_seconds is not None
    assert hand_off.takeover_seconds <= LEASE_SECONDS + RENEW_SECONDS + 5, hand_off.takeover_seconds
    tally.notes.append(
        f"two replicas, the leader SIGKILLed after the first shard; the standby led "
        f"{hand_off.takeover_seconds:.1f}s later (Lease {LEASE_SECONDS}s, looks every {RENEW_SECONDS}s)"
    )
    # and the run: one Job, exact counts, every site right
    assert cond_reason(body, "Degraded") == ("True", "FailuresTolerated"), body["status"]["conditions"]
    assert [j["metadata"]["name"] for j in run.jobs()] == [body["status"]["run"]["job"]]
    run.check_monotonic()
    acct = run.accounting(body)
    check_outcome(run.release, acct, hand_off.tmp, tally)


def test_only_one_replica_acts(hand_off: HandOff) -> None:
    """Before the kill only A acted; B, standing by, had not even started kopf; after it, B acts."""
    before, after = hand_off.before_kill, hand_off.after
    a_log, b_log = before.logs
    assert "Handler 'run' succeeded" in a_log, "replica A handled the new WebRelease"
    assert [m for m in KOPF_ACTING if m in b_log] == [], "replica B did nothing while standing by"
    assert "standing by" in b_log
    assert before.leader == (1.0, 0.0), "webrelease_leader on A and B"
    assert hand_off.standby_liveness == {
        "leader": False,
        "identity": hand_off.replicas[1].identity,
        "holder": hand_off.replicas[0].identity,
    }
    # after the kill: B leads, and it is B that carried the run on
    assert after.leader[1] == 1.0
    b_after = after.logs[1][len(b_log) :]
    assert "leading: Lease" in b_after
    assert "Handler 'run' succeeded" in b_after, "replica B resumed the WebRelease"
    assert "Handler 'run' succeeded" not in after.logs[0][len(a_log) :], "replica A is dead"


def test_stopping_the_leader_hands_over_at_the_next_look(
    control_plane: ControlPlane, kube: Kube, tmp_path: Path
) -> None:
    install_crd(control_plane, kube)
    lease = f"stop-{uuid.uuid4().hex[:6]}"
    a = replica(control_plane, tmp_path / "a", "replica-a", lease)
    b = replica(control_plane, tmp_path / "b", "replica-b", lease)
    try:
        a.start()
        a.wait_leading(kube)
        b.start()
        wait_until("replica B to stand by", lambda: liveness(b).get("holder") == a.identity, timeout_s=60)
        stopped = time.monotonic()
        a.stop()  # SIGTERM: kopf stops, then the Lease is released
        assert a.process is not None and a.process.returncode == 0, a.log_tail()
        assert "released Lease" in a.log_tail()
        b.wait_leading(kube, timeout_s=LEASE_SECONDS + RENEW_SECONDS + 30)
        handed = time.monotonic() - stopped
        assert handed < RENEW_SECONDS + 5, (
            f"{handed:.1f}s: not at the next look (the Lease is {LEASE_SECONDS}s)"
        )
        wait_until("replica B to report itself leader", lambda: leader_gauge(b) == 1.0, timeout_s=30)
    finally:
        a.stop()
        b.stop()


def test_a_leader_whose_lease_is_taken_stops_at_once(
    control_plane: ControlPlane, kube: Kube, tmp_path: Path
) -> None:
    install_crd(control_plane, kube)
    lease = f"taken-{uuid.uuid4().hex[:6]}"
    op = replica(
        control_plane,
        tmp_path / "op",
        "replica",
        lease,
        WEBRELEASE_LEADER_ELECTION_RENEW_PERIOD_SECONDS="1",
    )
    try:
        op.start()
        op.wait_leading(kube)
        wait_until("kopf to start", lambda: "webrelease operator started" in op.log_tail(), timeout_s=60)
        path = lease_path(op.lease_namespace, lease)
        body = kube.get(path)
        body["spec"]["holderIdentity"] = "someone-else"
        kube.replace(path, body)  # e.g. a standby that judged the Lease expired
        taken = time.monotonic()
        assert op.process is not None
        wait_until("the operator to exit", lambda: op.process is not None and op.process.poll() is not None)
        assert time.monotonic() - taken < 1 + 5, "at its next renewal"
        assert op.process.returncode == 3, op.log_tail()
        assert "lost leadership" in op.log_tail() and "held by someone-else" in op.log_tail()
        assert op.lease_holder(kube) == "someone-else", "a leader that lost the Lease leaves it alone"
    finally:
        op.stop()
