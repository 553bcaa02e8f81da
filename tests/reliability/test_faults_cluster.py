"""Faults during a cluster run of a few hundred customers: the real control plane, the test node agent
running every shard pod's ``webrelease shard`` as a process, the operator as a process of its own,
and versitygw. Each scenario ends like every other in this tier (``kit.check_outcome``): ``webrelease
verify`` is clean for every customer status calls succeeded, the failed ones are exactly the doomed
ones, the status counters equal the report's lines, and there is one Job.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.harness.cluster_fixtures import wait_until
from tests.harness.controlplane import ControlPlane, Kube
from tests.harness.nodeagent import NodeAgentConfig, NodeAgentProcess
from tests.harness.operator_harness import OperatorProcess, ended
from tests.harness.s3server import S3Endpoint
from tests.reliability.clusterkit import (
    ClusterRun,
    cond_reason,
    failed_then_succeeded,
    kill_pod_process,
    objects_by_customer,
    pod_index,
)
from tests.reliability.conftest import ReleaseFactory
from tests.reliability.kit import BUILD, BigRelease, RestartableS3, Tally, check_outcome, make_customers

pytestmark = [pytest.mark.reliability, pytest.mark.storage]

CUSTOMERS = 200
DOOMED = 3
PER_SHARD = 25
FILES = len(BUILD)


@dataclass(frozen=True)
class Cluster:
    """The control plane, a fresh namespace, and the operator (running)."""

    plane: ControlPlane
    kube: Kube
    namespace: str
    operator: OperatorProcess

    def start(self, rel: BigRelease) -> ClusterRun:
        return ClusterRun.start(self.plane, self.kube, self.namespace, rel, self.operator)


@pytest.fixture
def cluster(control_plane: ControlPlane, kube: Kube, namespace: str, operator: OperatorProcess) -> Cluster:
    if not operator.running():
        operator.start()
    return Cluster(control_plane, kube, namespace, operator)


def _shard_ids(index: int) -> list[str]:
    return [f"c{i:04d}" for i in range(index * PER_SHARD, min((index + 1) * PER_SHARD, CUSTOMERS))]


def _finish(run: ClusterRun, tmp_path: Path, tally: Tally, body: dict[str, Any]) -> None:
    """The common end: Degraded (the doomed are tolerated), one Job, exact accounting, verify."""
    rel = run.release
    tally.runs, tally.customers = 1, len(rel.ids)
    assert cond_reason(body, "Degraded") == ("True", "FailuresTolerated"), body["status"]["conditions"]
    assert [j["metadata"]["name"] for j in run.jobs()] == [body["status"]["run"]["job"]]
    run.check_monotonic()
    acct = run.accounting(body)
    check_outcome(rel, acct, tmp_path, tally)


def test_shard_pods_killed_mid_copy_are_retried(
    cluster: Cluster, s3_server: S3Endpoint, make_release: ReleaseFactory, tmp_path: Path, tally: Tally
) -> None:
    """Three shard pods, each of another index, are SIGKILLed while their customers' sites are half
    written: the Job controller retries those indexes, and the retries finish the sites."""
    rel = make_release(
        s3_server,
        make_customers(CUSTOMERS, DOOMED),
        customers_per_shard=PER_SHARD,
        objects_in_flight=4,
        retries_per_shard=2,
    )
    start = time.monotonic()
    run = cluster.start(rel)
    killed: dict[int, str] = {}

    def kill_one_mid_copy() -> bool:
        written = objects_by_customer(rel)
        for pod in run.pods():
            index = pod_index(pod)
            if index in killed or index * PER_SHARD >= CUSTOMERS:
                continue
            done = sum(written.get(cid, 0) for cid in _shard_ids(index))
            if 0 < done < len(_shard_ids(index)) * FILES and kill_pod_process(pod):
                killed[index] = pod["metadata"]["name"]
                return len(killed) >= 3
        return False

    wait_until("three shard pods killed mid-copy", kill_one_mid_copy, timeout_s=180, interval_s=0.05)
    body = run.wait_ended()
    tally.seconds = time.monotonic() - start
    tally.faults = len(killed)
    pods = run.pods()
    for index in killed:
        codes, succeeded = failed_then_succeeded(pods, index)
        assert codes == [137] and succeeded, (index, codes, succeeded)
    shard_status = {s["index"]: s for s in body["status"]["shardStatuses"]}
    for index in killed:
        assert shard_status[index]["attempts"] == 2, shard_status[index]
    _finish(run, tmp_path, tally, body)


def test_operator_killed_and_restarted_twice_mid_run(
    cluster: Cluster, s3_server: S3Endpoint, make_release: ReleaseFactory, tmp_path: Path, tally: Tally
) -> None:
    """The operator is SIGKILLed twice while shards run (after the first shard, then after two more
    finished) and started again each time: one Job, every customer counted once."""
    rel = make_release(
        s3_server,
        make_customers(CUSTOMERS, DOOMED),
        customers_per_shard=PER_SHARD,
        retries_per_shard=1,
        extra_spec={"sharding": {"parallelism": 2}},
    )
    start = time.monotonic()
    run = cluster.start(rel)

    def shards_done(n: int) -> Any:
        def probe(body: dict[str, Any]) -> bool:
            shards = (body.get("status") or {}).get("shards") or {}
            return int(shards.get("succeeded", 0)) >= n and not ended(body)

        return probe

    kills = 0
    for n in (1, 3):
        run.wait(f"{n} shard(s) succeeded", shards_done(n))
        cluster.operator.kill()
        kills += 1
        assert not ended(run.body())
        time.sleep(1.0)  # the Job goes on without an operator for a moment
        cluster.operator.start()
    body = run.wait_ended()
    tally.seconds = time.monotonic() - start
    tally.faults = kills
    assert cluster.operator.starts >= 3
    pods = run.pods()
    per_index: dict[int, int] = {}
    for p in pods:
        per_index[pod_index(p)] = per_index.get(pod_index(p), 0) + 1
    last = max(per_index)
    # one pod per index, but the doomed customers' shard (failing, retried once)
    assert {i: c for i, c in per_index.items() if i != last} == {i: 1 for i in range(last)}, per_index
    assert per_index[last] == 2
    _finish(run, tmp_path, tally, body)


def test_s3_server_down_for_seconds_mid_run(
    cluster: Cluster,
    restartable_s3: RestartableS3,
    make_release: ReleaseFactory,
    tmp_path: Path,
    tally: Tally,
) -> None:
    """The S3 server every shard, the operator and the reports use is SIGKILLed while sites are
    half written and started again 4 s later (same port, same data): requests are retried, shards
    that lost customers are retried by the Job, and the run ends exact."""
    s3 = restartable_s3
    rel = make_release(
        s3.endpoint, make_customers(CUSTOMERS, DOOMED), customers_per_shard=PER_SHARD, retries_per_shard=2
    )
    start = time.monotonic()
    run = cluster.start(rel)
    total = len(rel.good) * FILES
    at_kill = wait_until(
        "sites half written",
        lambda: (n := sum(objects_by_customer(rel).values())) >= total // 4 and n,
        timeout_s=180,
        interval_s=0.1,
    )
    s3.kill()
    body = run.body()
    assert not ended(body), "the run ended before the fault"
    time.sleep(4)  # the outage
    s3.start()
    body = run.wait_ended()
    tally.seconds = time.monotonic() - start
    tally.faults = 1
    tally.notes.append(f"killed with {at_kill} of {total} site objects written")
    assert at_kill < total
    _finish(run, tmp_path, tally, body)


def test_node_agent_paused_status_goes_stale_then_resumes(
    cluster: Cluster,
    s3_server: S3Endpoint,
    make_release: ReleaseFactory,
    tmp_path: Path,
    tally: Tally,
) -> None:
    """The node agent running the shard pods is paused (SIGSTOP: no heartbeats, no pod status) while
    every shard is running, for 12 s, long enough for the pods' processes to finish unseen. The run
    waits for it (nothing is counted that the API does not show), then counts every shard once."""
    node = f"paused-{uuid.uuid4().hex[:6]}"
    taint = {"key": "webrelease.dev/reliability", "value": node, "effect": "NoSchedule"}
    agent = NodeAgentProcess(
        NodeAgentConfig(
            kubeconfig=cluster.plane.kubeconfig,
            work_dir=tmp_path / "agent",
            node_name=node,
            concurrency=10,
            path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
            taints=(taint,),
            labels={"webrelease.dev/node": node},
            deregister_on_stop=True,
        ),
        tmp_path / "agent.log",
    )
    agent.start()
    try:
        rel = make_release(
            s3_server,
            make_customers(CUSTOMERS, DOOMED),
            customers_per_shard=PER_SHARD,
            retries_per_shard=0,
            extra_spec={
                "sharding": {"parallelism": 10},
                "worker": {
                    "nodeSelector": {"webrelease.dev/node": node},
                    "tolerations": [{"key": taint["key"], "operator": "Exists", "effect": "NoSchedule"}],
                },
            },
        )
        start = time.monotonic()
        run = cluster.start(rel)
        wait_until(
            "every shard pod running, and sites being written",
            lambda: (
                sum(1 for p in run.pods() if (p.get("status") or {}).get("phase") == "Running") == 9
                and sum(objects_by_customer(rel).values()) > 0
            ),
            timeout_s=180,
            interval_s=0.1,
        )
        agent.pause()
        paused_at = time.monotonic()
        try:
            # the pods' processes go on without their node: wait until they have all ended
            wait_until(
                "every site written while the agent is paused",
                lambda: sum(objects_by_customer(rel).values()) == len(rel.good) * FILES,
                timeout_s=120,
                interval_s=0.2,
            )
            while time.monotonic() < paused_at + 12:
                time.sleep(0.5)
            stale = run.body()
            phases = {(p.get("status") or {}).get("phase") for p in run.pods()}
        finally:
            agent.resume()
        assert phases == {"Running"}, phases  # the API still says so: nothing was reported
        assert not ended(stale)
        shards = stale["status"].get("shards") or {}
        assert int(shards.get("succeeded", 0)) == 0, shards
        body = run.wait_ended()
        tally.seconds = time.monotonic() - start
        tally.faults = 1
        tally.notes.append("node agent paused 12 s with 9 shard pods running")
        pods = run.pods()
        assert sorted(pod_index(p) for p in pods) == list(range(9)), "a shard ran twice"
        _finish(run, tmp_path, tally, body)
    finally:
        agent.stop()
