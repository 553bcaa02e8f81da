"""The run lifecycle step by step, in milliseconds: ``start_run`` and ``advance`` against an in-memory
fake of the operator's API protocol (tests/harness/fake_cluster.py) and an in-memory store.

Each test plays what the handlers and the Job controller do, in order, and asserts what a user
checks: the conditions and counters of the status, which Jobs exist, the Events, the report's
``index.json``. The same paths run for real in tests/cluster and tests/reliability (minutes).
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf
import pytest

from tests.harness.fake_cluster import FakeCluster, Outcome
from tests.harness.memstore import MemoryStore
from webrelease.copier.spec import WebReleaseSpec
from webrelease.copier.storage import Credentials, parse_url
from webrelease.copier.storage.storeset import StoreSet
from webrelease.operator.constants import ANNOTATION_RETRY
from webrelease.operator.metrics import OperatorMetrics
from webrelease.operator.reconcile import Context, advance, start_run
from webrelease.operator.reports import ReleaseStorage
from webrelease.operator.settings import OperatorSettings

NS, NAME = "shop", "spring"
IDS = [f"c{i:02d}" for i in range(10)]
WAIT = 60.0  # WEBRELEASE_WAIT_SECONDS


def spec(**extra: Any) -> dict[str, Any]:
    return {
        "source": {"url": "s3://builds/v1/"},
        "target": {"url": "s3://sites/{id}/"},
        "customers": {"url": "s3://lists/customers.jsonl"},
        "reports": {"url": "s3://reports/"},
        "sharding": {"customersPerShard": 3, "parallelism": 4},
        **extra,
    }


@dataclass
class World:
    """The fake cluster and store, the operator's context, and what it posted."""

    cluster: FakeCluster
    store: MemoryStore
    ctx: Context
    events: list[tuple[str, str]] = field(default_factory=list)

    def start(self, *, retry: int = 0, waited: float = 0.0) -> None:
        asyncio.run(start_run(self.ctx, self.cluster.release(NS, NAME), retry=retry, waited=waited))

    def advance(self) -> None:
        asyncio.run(advance(self.ctx, self.cluster.release(NS, NAME), relist=True))

    def status(self) -> dict[str, Any]:
        return self.cluster.status(NS, NAME)

    def reason(self, kind: str) -> str | None:
        cond = self.cluster.condition(NS, NAME, kind)
        return str(cond["reason"]) if cond is not None and cond["status"] == "True" else None

    def job(self) -> str:
        (name,) = self.cluster.live_jobs(NS)
        return name

    def run_job(self, fails: Outcome = lambda _id: None) -> dict[str, str]:
        return self.cluster.run_step(NS, self.job(), fails)

    def posted(self) -> list[str]:
        return [reason for reason, _ in self.events]

    def index(self) -> dict[str, Any]:
        url = self.status()["report"]["index"]
        loc = parse_url(url.rsplit("/", 1)[0] + "/")
        doc: dict[str, Any] = json.loads(self.store.get(loc, url.rsplit("/", 1)[1]))
        return doc


@pytest.fixture
def world() -> Iterator[World]:
    store = MemoryStore()
    lists = parse_url("s3://lists/")
    store.put(lists, "customers.jsonl", "".join(json.dumps({"id": i}) + "\n" for i in IDS).encode())
    for version in ("v1", "v2"):  # the operator checks the build before it starts a Job
        store.put(parse_url(f"s3://builds/{version}/"), "index.html", f"<p>{version}</p>".encode())
    cluster = FakeCluster(store)
    clock = itertools.count()

    def open_storage(spec: WebReleaseSpec, credentials: Credentials | None) -> ReleaseStorage:
        return ReleaseStorage(spec, StoreSet(spec.storage, max_in_flight=4, opener=lambda *_a, **_k: store))

    w = World(cluster, store, ctx=None)  # type: ignore[arg-type]
    w.ctx = Context(
        settings=OperatorSettings(wait_seconds=WAIT, leader_election=False),
        kube=cluster,
        metrics=OperatorMetrics(process_collectors=False),
        now=lambda: f"2026-01-01T00:{next(clock) % 60:02d}:00Z",
        post=lambda _body, reason, message: w.events.append((reason.value, message)),
        open_storage=open_storage,
    )
    yield w


def counters(status: Mapping[str, Any]) -> dict[str, int]:
    return {k: int(v) for k, v in status["customers"].items()}


def test_main_step_to_complete(world: World) -> None:
    world.cluster.apply(NS, NAME, spec())
    world.start()
    assert world.reason("Progressing") == "Running"
    job = world.job()
    assert job.endswith("-main")
    assert world.status()["snapshot"]["count"] == 10
    assert counters(world.status()) == {
        "total": 10,
        "succeeded": 0,
        "failed": 0,
        "pending": 10,
        "notReleased": 0,
    }

    world.run_job()
    world.advance()
    assert world.reason("Complete") == "AllCustomersSucceeded"
    assert counters(world.status()) == {
        "total": 10,
        "succeeded": 10,
        "failed": 0,
        "pending": 0,
        "notReleased": 0,
    }
    assert world.status()["shards"]["succeeded"] == 4
    assert world.index()["steps"][-1]["step"] == "main"
    assert world.posted() == ["SnapshotWritten", "JobCreated", "RunComplete"]
    writes = world.cluster.status_writes
    world.advance()  # nothing changed: no write, no Event
    assert world.cluster.status_writes == writes and len(world.events) == 3


def test_canary_then_rest_then_complete(world: World) -> None:
    world.cluster.apply(NS, NAME, spec(canary={"count": 2}))
    world.start()
    assert world.reason("Progressing") == "Canary"
    canary = world.job()
    assert canary.endswith("-canary")
    assert world.status()["run"]["snapshot"]["count"] == 2

    ran = world.run_job()
    assert ran == {}
    world.advance()
    rest = world.job()  # the canary's Job is deleted when the rest starts: one Job at a time
    assert rest.endswith("-rest") and rest != canary
    assert world.status()["run"]["snapshot"]["count"] == 8
    assert world.reason("Progressing") == "Running"
    assert counters(world.status())["succeeded"] == 2  # carried from the canary

    world.cluster.reap()
    world.run_job()
    world.advance()
    assert world.reason("Complete") == "AllCustomersSucceeded"
    assert counters(world.status()) == {
        "total": 10,
        "succeeded": 10,
        "failed": 0,
        "pending": 0,
        "notReleased": 0,
    }
    assert [s["step"] for s in world.index()["steps"]] == ["canary", "rest"]
    assert "CanarySucceeded" in world.posted() and world.posted()[-1] == "RunComplete"


def test_a_failed_canary_fails_the_run_and_leaves_the_rest_alone(world: World) -> None:
    world.cluster.apply(NS, NAME, spec(canary={"count": 2}, failurePolicy={"toleratedFailedCustomers": 5}))
    world.start()
    failed = world.run_job(lambda cid: "template error")
    canary_ids = set(failed)
    assert len(canary_ids) == 2
    world.advance()
    assert world.reason("Failed") == "CanaryFailed", "a failed canary is never tolerated"
    assert world.cluster.live_jobs(NS) == [world.status()["run"]["job"]]
    assert not any(j.endswith("-rest") for j in world.cluster.live_jobs(NS))
    status = world.status()
    assert counters(status) == {"total": 10, "succeeded": 0, "failed": 2, "pending": 0, "notReleased": 8}
    assert {f["id"] for f in status["failedCustomers"]["sample"]} == canary_ids
    assert world.posted()[-1] == "RunFailed"


def test_retry_releases_only_the_failed_customers(world: World) -> None:
    world.cluster.apply(NS, NAME, spec(failurePolicy={"toleratedFailedCustomers": 2}))
    world.start()
    world.run_job(lambda cid: "S3 said no" if cid in ("c03", "c07") else None)
    world.advance()
    assert world.reason("Degraded") == "FailuresTolerated"
    assert counters(world.status()) == {
        "total": 10,
        "succeeded": 8,
        "failed": 2,
        "pending": 0,
        "notReleased": 0,
    }

    world.cluster.annotate(NS, NAME, ANNOTATION_RETRY, "one")
    world.advance()
    retry = world.job()
    assert retry.endswith("-retry-1")
    assert world.status()["run"]["snapshot"]["count"] == 2
    assert world.reason("Progressing") == "Retrying"
    world.cluster.reap()
    world.run_job()
    world.advance()
    assert world.reason("Complete") == "AllCustomersSucceeded"
    assert counters(world.status()) == {
        "total": 10,
        "succeeded": 10,
        "failed": 0,
        "pending": 0,
        "notReleased": 0,
    }
    assert world.status()["retryToken"] == "one"
    assert [s["step"] for s in world.index()["steps"]] == ["main", "retry"]

    world.advance()  # the same token again: nothing to do
    assert world.cluster.live_jobs(NS) == [retry]
    world.cluster.annotate(NS, NAME, ANNOTATION_RETRY, "two")
    world.advance()
    assert world.posted()[-1] == "NothingToRetry"
    assert world.status()["retryToken"] == "two"


def test_a_new_generation_supersedes_the_running_one(world: World) -> None:
    world.cluster.apply(NS, NAME, spec())
    world.start()
    old = world.job()
    world.cluster.apply(NS, NAME, spec(source={"url": "s3://builds/v2/"}))
    with pytest.raises(kopf.TemporaryError, match="to be deleted"):
        world.start()
    assert world.reason("Progressing") == "Superseding"
    assert "Superseded" in world.posted()
    assert world.cluster.live_jobs(NS) == [], "the old Job is being deleted"

    world.advance()  # the daemon does nothing for a generation not started yet
    assert world.cluster.reap() == [old]
    world.start()
    new = world.job()
    assert new != old and "-g2-" in new
    assert world.status()["observedGeneration"] == 2
    world.run_job()
    world.advance()
    assert world.reason("Complete") == "AllCustomersSucceeded"


def test_a_refused_job_fails_the_run_and_leaves_nothing_behind(world: World) -> None:
    world.cluster.refuse_jobs = 'Job.batch "spring-g1-main" is invalid: spec.template...resources: quantities'
    world.cluster.apply(NS, NAME, spec())
    with pytest.raises(kopf.PermanentError):
        world.start()
    assert world.reason("Failed") == "InvalidSpec"
    message = world.cluster.condition(NS, NAME, "Failed")["message"]  # type: ignore[index]
    assert message.startswith("spec.worker: the Job was refused by the apiserver: Job.batch")
    assert world.cluster.jobs == {}
    assert world.store.keys("s3://reports/") == [], "the snapshot of a run that cannot start is removed"
    assert world.posted()[-1] == "InvalidSpec"
    world.start()  # the same generation again: refused for good, no retry
    assert world.posted().count("InvalidSpec") == 1


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (
            {"templates": ["index.html", "confg.js"]},
            "spec.templates.1: 'confg.js' matches no file of the build",
        ),
        ({"source": {"url": "s3://builds/v3/"}}, "source s3://builds/v3/ has no files"),
    ],
    ids=["a pattern matching nothing", "an empty build"],
)
def test_a_build_no_shard_can_release_fails_the_run_before_its_job(
    extra: dict[str, Any], says: str, world: World
) -> None:
    world.cluster.apply(NS, NAME, spec(**extra))
    with pytest.raises(kopf.PermanentError):
        world.start()
    assert world.reason("Failed") == "BuildUnusable"
    assert says in world.cluster.condition(NS, NAME, "Failed")["message"]  # type: ignore[index]
    assert world.cluster.jobs == {}
    assert world.store.keys("s3://reports/") == [], "the snapshot of a run that cannot start is removed"


def test_a_storage_outage_is_retried_then_fails_the_run(world: World) -> None:
    """The reports bucket is down while the snapshot is written: a passing problem, said at once
    (Progressing, StorageUnavailable, one Waiting Event) and retried within seconds, then, after
    WEBRELEASE_WAIT_SECONDS, SnapshotFailed; once storage is back, a retry token starts it again."""
    world.cluster.apply(NS, NAME, spec())
    world.store.down_buckets = {"reports"}
    for attempt, waited in enumerate((0.0, 3.0, WAIT - 1)):
        with pytest.raises(kopf.TemporaryError, match="unreachable") as raised:
            world.start(retry=attempt, waited=waited)
        assert raised.value.delay is not None and raised.value.delay <= 10
        assert world.reason("Failed") is None
        assert world.reason("Progressing") == "StorageUnavailable"
        assert world.status()["observedGeneration"] == 1
    assert world.posted() == ["Waiting"]  # said once, not on every look
    with pytest.raises(kopf.PermanentError):
        world.start(retry=3, waited=WAIT)
    assert world.reason("Failed") == "SnapshotFailed"
    assert "gave up after waiting 60 s" in world.cluster.condition(NS, NAME, "Failed")["message"]  # type: ignore[index]
    assert world.cluster.jobs == {}

    # the input is fixed: a new retry token starts the run from the snapshot
    world.store.down_buckets = set()
    world.cluster.annotate(NS, NAME, ANNOTATION_RETRY, "after-outage")
    world.advance()
    assert world.job().endswith("-main")
    world.run_job()
    world.advance()
    assert world.reason("Complete") == "AllCustomersSucceeded"


def test_an_outage_of_the_customer_list_is_waited_for_not_an_invalid_list(world: World) -> None:
    """The customer list's bucket is down while the list is read: the same passing problem as a
    reports outage (Progressing, StorageUnavailable, retried), never Failed / InvalidCustomerList;
    once the bucket is back the run starts by itself."""
    world.cluster.apply(NS, NAME, spec())
    world.store.down_buckets = {"lists"}
    with pytest.raises(kopf.TemporaryError, match="unreachable"):
        world.start()
    assert world.reason("Failed") is None
    assert world.reason("Progressing") == "StorageUnavailable"
    world.store.down_buckets = set()
    world.start(retry=1, waited=2.0)
    assert world.job().endswith("-main")
