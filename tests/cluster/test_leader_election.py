"""Leader election against the real apiserver: replicas (``LeaderElector``s in this process, with
short timings) competing for one ``coordination.k8s.io/v1`` Lease, and what the Lease says after
each step. The whole operator, two processes and a run, is in tests/reliability/test_availability.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.harness.cluster_fixtures import wait_until
from tests.harness.controlplane import ControlPlane, Kube, api_path
from webrelease.operator.kube import Kube as OperatorKube
from webrelease.operator.kube import api_client
from webrelease.operator.leader import ElectionConfig, LeaderElector, format_time

LEASE = "webrelease-operator"
FAST = {"lease_duration_seconds": 3, "renew_deadline_seconds": 2.0, "renew_period_seconds": 0.5}


@pytest.fixture
def api(control_plane: ControlPlane) -> Iterator[OperatorKube]:
    client = api_client(str(control_plane.kubeconfig))
    try:
        yield OperatorKube(client)
    finally:
        client.close()  # type: ignore[no-untyped-call]


class SwitchableApi:
    """The operator's Lease calls, that can be cut off (a partition between one replica and the
    apiserver): while ``down``, every call fails as a dropped connection would."""

    def __init__(self, api: OperatorKube) -> None:
        self.api = api
        self.down = threading.Event()

    def _check(self) -> None:
        if self.down.is_set():
            raise ConnectionError("connection to the apiserver refused (test partition)")

    def get_lease(self, namespace: str, name: str, *, timeout: float = 30) -> dict[str, Any] | None:
        self._check()
        return self.api.get_lease(namespace, name, timeout=timeout)

    def create_lease(self, lease: Mapping[str, Any], *, timeout: float = 30) -> dict[str, Any] | None:
        self._check()
        return self.api.create_lease(lease, timeout=timeout)

    def replace_lease(self, lease: Mapping[str, Any], *, timeout: float = 30) -> dict[str, Any] | None:
        self._check()
        return self.api.replace_lease(lease, timeout=timeout)


@dataclass
class Replica:
    """One elector and what happened to it, with monotonic times."""

    elector: LeaderElector
    lost: list[tuple[float, str]] = field(default_factory=list)
    acquired_at: float | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def on_lost(self, reason: str) -> None:
        self.lost.append((time.monotonic(), reason))

    def lead(self) -> None:
        assert self.elector.attempt(), "expected to take the Lease at once"
        self.acquired_at = time.monotonic()
        self.elector.start(self.on_lost)

    def stand_by(self) -> None:
        """Look at the Lease in the background until it holds it."""

        def run() -> None:
            if self.elector.acquire(self.stop):
                self.acquired_at = time.monotonic()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=10)
        self.elector.release()


@pytest.fixture
def replicas(api: OperatorKube, namespace: str) -> Iterator[Any]:
    made: list[Replica] = []

    def make(identity: str, *, lease_api: Any = None, **timing: Any) -> Replica:
        cfg = ElectionConfig(namespace, LEASE, identity, **{**FAST, **timing})
        replica = Replica(LeaderElector(lease_api or api, cfg))
        made.append(replica)
        return replica

    try:
        yield make
    finally:
        for replica in made:
            replica.close()


def lease_spec(kube: Kube, namespace: str) -> dict[str, Any]:
    body = kube.get(api_path("coordination.k8s.io/v1", "leases", namespace=namespace, name=LEASE))
    spec: dict[str, Any] = body["spec"]
    return spec


def test_the_first_replica_creates_the_lease_and_the_next_stands_by(
    replicas: Any, kube: Kube, namespace: str
) -> None:
    a, b = replicas("replica-a"), replicas("replica-b")
    assert a.elector.attempt() and a.elector.leading
    before = kube.get(api_path("coordination.k8s.io/v1", "leases", namespace=namespace, name=LEASE))
    assert before["spec"]["holderIdentity"] == "replica-a"
    assert before["spec"]["leaseDurationSeconds"] == 3
    assert before["spec"]["leaseTransitions"] == 0
    assert not b.elector.attempt() and not b.elector.leading
    assert b.elector.holder == "replica-a"
    after = kube.get(api_path("coordination.k8s.io/v1", "leases", namespace=namespace, name=LEASE))
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"], (
        "a standby writes nothing"
    )


def test_standbys_racing_for_a_free_lease_leave_exactly_one_holder(
    replicas: Any, kube: Kube, namespace: str
) -> None:
    kube.create(
        api_path("coordination.k8s.io/v1", "leases", namespace=namespace),
        {
            "metadata": {"name": LEASE},
            # released by a leader that stopped: anyone may take it at once
            "spec": {"leaseDurationSeconds": 1, "renewTime": format_time_now(), "leaseTransitions": 4},
        },
    )
    racers = [replicas(f"replica-{n}") for n in range(6)]
    barrier = threading.Barrier(len(racers))
    won: list[str] = []
    lock = threading.Lock()

    def race(replica: Replica) -> None:
        barrier.wait(timeout=30)
        if replica.elector.attempt():
            with lock:
                won.append(replica.elector.config.identity)

    threads = [threading.Thread(target=race, args=(r,)) for r in racers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(won) == 1, f"winners: {won}"
    spec = lease_spec(kube, namespace)
    assert spec["holderIdentity"] == won[0]
    assert spec["leaseTransitions"] == 5, "one transition, whoever won"
    assert [r.elector.leading for r in racers].count(True) == 1


def test_a_leader_cut_off_from_the_apiserver_stops_before_a_standby_takes_over(
    replicas: Any, api: OperatorKube, kube: Kube, namespace: str
) -> None:
    link = SwitchableApi(api)
    a = replicas("replica-a", lease_api=link)
    b = replicas("replica-b")
    a.lead()
    b.stand_by()
    wait_renewals(kube, namespace, 3)  # b sees a live Lease
    assert not a.lost and not b.elector.leading
    cut = time.monotonic()
    link.down.set()
    wait_until("replica-b to take over", lambda: b.acquired_at, timeout_s=30)
    assert b.acquired_at is not None
    (lost_at, reason), *more = a.lost
    assert not more, "on_lost is called once"
    assert "not renewed for" in reason
    assert lost_at - cut <= 2.0 + 0.5, "the leader gives up within its renew deadline"
    assert b.acquired_at > lost_at, "the standby took over only after the leader had stopped"
    assert b.acquired_at - cut <= 3 + 0.5 + 2.0, "within the Lease duration and a look"
    assert not a.elector.leading and b.elector.leading
    spec = lease_spec(kube, namespace)
    assert spec["holderIdentity"] == "replica-b" and spec["leaseTransitions"] == 1
    link.down.clear()
    a.elector.release()
    assert lease_spec(kube, namespace)["holderIdentity"] == "replica-b", "a lost leader releases nothing"


def test_a_leader_that_finds_its_lease_taken_stops_at_its_next_renewal(
    replicas: Any, kube: Kube, namespace: str
) -> None:
    a = replicas("replica-a")
    a.lead()
    path = api_path("coordination.k8s.io/v1", "leases", namespace=namespace, name=LEASE)
    lease = kube.get(path)
    lease["spec"]["holderIdentity"] = "intruder"
    lease["spec"]["renewTime"] = format_time_now()
    kube.replace(path, lease)
    taken = time.monotonic()
    wait_until("replica-a to notice", lambda: a.lost, timeout_s=10)
    (lost_at, reason), *_ = a.lost
    assert reason == "it is held by intruder"
    assert lost_at - taken <= 0.5 + 1.0, "at its next renewal"
    assert not a.elector.leading
    a.elector.release()
    assert lease_spec(kube, namespace)["holderIdentity"] == "intruder"


def test_a_released_lease_is_taken_at_the_next_look_not_after_expiry(
    replicas: Any, kube: Kube, namespace: str
) -> None:
    timing = {"lease_duration_seconds": 30, "renew_deadline_seconds": 20.0, "renew_period_seconds": 0.5}
    a, b = replicas("replica-a", **timing), replicas("replica-b", **timing)
    a.lead()
    b.stand_by()
    wait_until("replica-b to stand by", lambda: b.elector.holder == "replica-a", timeout_s=10)
    released = time.monotonic()
    a.elector.release()
    spec = lease_spec(kube, namespace)
    assert "holderIdentity" not in spec or spec["holderIdentity"] in {"", "replica-b"}
    wait_until("replica-b to take over", lambda: b.acquired_at, timeout_s=10)
    assert b.acquired_at is not None
    assert b.acquired_at - released < 0.5 + 1.5, "the next look, not the 30 s Lease"
    assert not a.lost, "releasing is not losing"
    assert lease_spec(kube, namespace)["holderIdentity"] == "replica-b"


def test_a_restarted_replica_with_the_same_identity_leads_again_at_once(
    replicas: Any, kube: Kube, namespace: str
) -> None:
    first = replicas("webrelease-5c9d8-x2x7q", lease_duration_seconds=30, renew_deadline_seconds=20.0)
    assert first.elector.attempt()
    # the process is gone without releasing (SIGKILL); its container restarts in the same pod
    again = replicas("webrelease-5c9d8-x2x7q", lease_duration_seconds=30, renew_deadline_seconds=20.0)
    assert again.elector.attempt(), "the pod's own Lease: no need to wait 30 s"
    assert lease_spec(kube, namespace)["leaseTransitions"] == 0


def format_time_now() -> str:
    return format_time(datetime.now(UTC))


def wait_renewals(kube: Kube, namespace: str, count: int) -> None:
    """Until the Lease has been written ``count`` more times (renewals going through)."""
    path = api_path("coordination.k8s.io/v1", "leases", namespace=namespace, name=LEASE)
    seen = {kube.get(path)["metadata"]["resourceVersion"]}

    def renewed() -> bool:
        seen.add(kube.get(path)["metadata"]["resourceVersion"])
        return len(seen) > count

    wait_until(f"{count} renewals", renewed, timeout_s=30, interval_s=0.1)
