"""Prometheus metrics of the operator: what a dashboard needs to watch releases.

One :class:`OperatorMetrics` per operator process, created at startup and handed to the handlers
(kopf ``memo``). It owns its own registry, so tests can make as many as they like; the process,
platform and GC collectors are added to it so the endpoint also reports the operator's own health.

Every release metric carries the labels ``namespace`` and ``name`` of the WebRelease (the number
of WebRelease objects is small and bounded; customer ids never become labels). Names and meaning
are documented in docs/install.md ("Metrics"); keep the two in step.

The API the handlers call, in the order a run goes:

- :meth:`OperatorMetrics.run_started` when a run's Job is created (``resumed=True`` when a restarted
  operator picks up a run that was already going: the gauge is set, the counter is not bumped);
- :meth:`OperatorMetrics.set_progress` whenever the status counters are written (mirrors
  ``status.customers`` and ``status.shards``);
- :meth:`OperatorMetrics.shard_finished` once per shard pod (attempt) that ends, with its duration;
- :meth:`OperatorMetrics.run_finished` with the run's outcome, final customer counts and duration;
- :meth:`OperatorMetrics.forget_release` when a WebRelease is deleted (drops its label sets).

And one per process: :meth:`OperatorMetrics.set_leader` when this replica starts or stops acting
(leader election, :mod:`.leader`): ``webrelease_leader`` is 1 on the replica that acts, 0 on a
standby, so ``sum(webrelease_leader)`` is 1 when all is well.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Mapping
from enum import StrEnum
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)

#: Prefix of every metric name.
NAMESPACE = "webrelease"

#: Shard durations: a shard is seconds to an hour or more.
SHARD_DURATION_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0)
#: Run durations: minutes to hours.
RUN_DURATION_BUCKETS = (10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, 14400.0)

CUSTOMER_STATES = ("total", "succeeded", "failed", "pending")
SHARD_STATES = ("total", "succeeded", "failed", "active")


class RunOutcome(StrEnum):
    """How a run ended (label ``outcome`` of the run metrics)."""

    #: Every customer succeeded (condition ``Complete``).
    COMPLETE = "complete"
    #: Some customers failed, within ``failurePolicy`` tolerance (condition ``Degraded``).
    DEGRADED = "degraded"
    #: More failures than tolerated, an invalid spec or a bad customer list (condition ``Failed``).
    FAILED = "failed"
    #: A new generation replaced the run before it ended.
    SUPERSEDED = "superseded"


class ShardOutcome(StrEnum):
    """How one shard pod (one attempt of one Job index) ended."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"


class OperatorMetrics:
    """The operator's metrics and the small API its handlers call. Thread-safe."""

    def __init__(self, registry: CollectorRegistry | None = None, *, process_collectors: bool = True) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        if process_collectors:
            for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
                self.registry.register(collector)
        release = ["namespace", "name"]
        self.runs_started = Counter(
            "runs_started",
            "Runs started (a Job created for a new generation or a retry of failed customers).",
            release,
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self.runs_finished = Counter(
            "runs_finished",
            "Runs finished, by outcome: complete, degraded, failed, superseded.",
            [*release, "outcome"],
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self.run_in_progress = Gauge(
            "run_in_progress",
            "1 while a run of this WebRelease is going, else 0; sum() is the number of runs in progress.",
            release,
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self.run_duration = Histogram(
            "run_duration_seconds",
            "Wall-clock duration of finished runs, by outcome.",
            [*release, "outcome"],
            namespace=NAMESPACE,
            registry=self.registry,
            buckets=RUN_DURATION_BUCKETS,
        )
        self.customers = Counter(
            "customers",
            "Customers of finished runs, by outcome: succeeded, failed.",
            [*release, "outcome"],
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self.run_customers = Gauge(
            "run_customers",
            "Customers of the current (or last) run by state: total, succeeded, failed, pending "
            "(the same numbers as status.customers).",
            [*release, "state"],
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self.run_shards = Gauge(
            "run_shards",
            "Shards of the current (or last) run by state: total, succeeded, failed, active "
            "(the same numbers as status.shards).",
            [*release, "state"],
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self.shard_duration = Histogram(
            "shard_duration_seconds",
            "Duration of finished shard pods (one observation per attempt), by outcome: succeeded, failed.",
            [*release, "outcome"],
            namespace=NAMESPACE,
            registry=self.registry,
            buckets=SHARD_DURATION_BUCKETS,
        )
        self.leader = Gauge(
            "leader",
            "1 while this operator replica holds the leader-election Lease and acts, 0 while it "
            "stands by; sum() over the replicas is 1.",
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self._lock = threading.Lock()
        self._known: set[tuple[str, str]] = set()

    def set_leader(self, leading: bool) -> None:
        """This replica started (True) or stopped (False) acting."""
        self.leader.set(1 if leading else 0)

    # -- the API the handlers call ------------------------------------------------------------

    def run_started(self, namespace: str, name: str, *, resumed: bool = False) -> None:
        """A run's Job was created (or, with ``resumed``, a running run was picked up after a restart)."""
        self._remember(namespace, name)
        if not resumed:
            self.runs_started.labels(namespace, name).inc()
        self.run_in_progress.labels(namespace, name).set(1)

    def set_progress(
        self,
        namespace: str,
        name: str,
        *,
        customers: Mapping[str, int],
        shards: Mapping[str, int] | None = None,
    ) -> None:
        """Mirror the status counters: ``customers`` keys among total/succeeded/failed/pending,
        ``shards`` keys among total/succeeded/failed/active. Unknown keys are a programming error."""
        self._remember(namespace, name)
        _set_states(self.run_customers, namespace, name, customers, CUSTOMER_STATES)
        if shards is not None:
            _set_states(self.run_shards, namespace, name, shards, SHARD_STATES)

    def shard_finished(
        self, namespace: str, name: str, outcome: ShardOutcome, duration_seconds: float
    ) -> None:
        """One shard pod (one attempt of one Job index) ended after ``duration_seconds``."""
        self._remember(namespace, name)
        self.shard_duration.labels(namespace, name, ShardOutcome(outcome).value).observe(
            max(0.0, duration_seconds)
        )

    def run_finished(
        self,
        namespace: str,
        name: str,
        outcome: RunOutcome,
        *,
        succeeded: int,
        failed: int,
        duration_seconds: float | None = None,
    ) -> None:
        """A run ended. ``succeeded``/``failed`` are its final customer counts (status.customers)."""
        if succeeded < 0 or failed < 0:
            raise ValueError(f"customer counts must not be negative (succeeded={succeeded}, failed={failed})")
        self._remember(namespace, name)
        value = RunOutcome(outcome).value
        self.runs_finished.labels(namespace, name, value).inc()
        self.run_in_progress.labels(namespace, name).set(0)
        self.customers.labels(namespace, name, "succeeded").inc(succeeded)
        self.customers.labels(namespace, name, "failed").inc(failed)
        if duration_seconds is not None:
            self.run_duration.labels(namespace, name, value).observe(max(0.0, duration_seconds))

    def forget_release(self, namespace: str, name: str) -> None:
        """The WebRelease was deleted: drop every label set it had, so the endpoint stays bounded."""
        with self._lock:
            self._known.discard((namespace, name))
        per_release: tuple[Counter | Gauge | Histogram, ...] = (self.runs_started, self.run_in_progress)
        per_run_outcome: tuple[Counter | Gauge | Histogram, ...] = (self.runs_finished, self.run_duration)
        per_shard_outcome: tuple[Counter | Gauge | Histogram, ...] = (self.customers, self.shard_duration)
        for metric in per_release:
            _remove(metric, (namespace, name))
        for metric in per_run_outcome:
            for outcome in RunOutcome:
                _remove(metric, (namespace, name, outcome.value))
        for metric in per_shard_outcome:
            for shard_outcome in ShardOutcome:
                _remove(metric, (namespace, name, shard_outcome.value))
        for state in CUSTOMER_STATES:
            _remove(self.run_customers, (namespace, name, state))
        for state in SHARD_STATES:
            _remove(self.run_shards, (namespace, name, state))

    # -- exposition -----------------------------------------------------------------------------

    def render(self) -> bytes:
        """The text exposition format, as the endpoint serves it."""
        return generate_latest(self.registry)

    def serve(self, port: int, addr: str = "0.0.0.0") -> WSGIServer:  # noqa: S104 - a pod's metrics port
        """Serve ``/metrics`` on ``addr:port`` in a daemon thread; ``shutdown()`` the result to stop it."""
        server, _thread = start_http_server(port, addr=addr, registry=self.registry)
        return server

    def _remember(self, namespace: str, name: str) -> None:
        with self._lock:
            self._known.add((namespace, name))

    @property
    def releases(self) -> frozenset[tuple[str, str]]:
        """(namespace, name) of every WebRelease that currently has label sets."""
        with self._lock:
            return frozenset(self._known)


def _set_states(
    gauge: Gauge, namespace: str, name: str, values: Mapping[str, int], allowed: tuple[str, ...]
) -> None:
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise ValueError(f"unknown state(s) {unknown}; expected some of {list(allowed)}")
    for state, value in values.items():
        gauge.labels(namespace, name, state).set(value)


def _remove(metric: Counter | Gauge | Histogram, labels: tuple[str, ...]) -> None:
    with contextlib.suppress(KeyError):
        metric.remove(*labels)
