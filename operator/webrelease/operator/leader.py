"""Leader election: one ``webrelease operator`` acts at a time, whatever the number of replicas.

The standard Kubernetes pattern (client-go's ``leaderelection``, as kube-controller-manager uses it)
on a ``coordination.k8s.io/v1`` Lease in the operator's own namespace:

- a replica that wants to lead reads the Lease. Free (no holder: released by a leader that stopped
  cleanly), expired, or absent, it writes itself in as the holder; held by someone else and still
  valid, it waits and looks again every ``renew_period_seconds``. Every write is a replace at the
  ``resourceVersion`` it read (or a create), so when two standbys race for the same expired Lease
  the apiserver lets exactly one of them win (409 Conflict for the other);
- the leader renews (rewrites ``renewTime``) every ``renew_period_seconds``. If it has not renewed for
  ``renew_deadline_seconds`` (shorter than the Lease's duration) or finds someone else holding the
  Lease, it stops acting at once: :meth:`LeaderElector.start`'s ``on_lost`` ends the process
  (``webrelease operator`` exits non-zero and Kubernetes restarts it, as a standby). A standby can
  only take over ``lease_duration_seconds`` after the last renewal it saw, by which time the old leader has
  given up: never two actors;
- a leader that stops cleanly (SIGTERM, once kopf has stopped) releases the Lease, so a standby
  takes over at its next look instead of waiting for the Lease to expire.

When is a Lease expired? ``renewTime + leaseDurationSeconds`` is judged on the holder's clock; a
holder whose clock runs behind would look expired early and two replicas would act. So a standby
also counts from the moment *it* first saw that renewal (client-go does only this): the Lease is
expired once both ``renewTime`` and that local observation are more than ``leaseDurationSeconds``
old. A standby that starts after a leader died therefore waits one full Lease duration.

:func:`decide_lease` is the whole decision, a pure function of the Lease, the time, this replica's
identity and when it first saw the Lease's current state; :class:`LeaderElector` does the API calls
(:class:`LeaseApi`, implemented by :class:`webrelease.operator.kube.Kube`) and the timing.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Final, Protocol

Obj = dict[str, Any]

LEASE_API_VERSION: Final = "coordination.k8s.io/v1"
#: ``leaseDurationSeconds`` of a released Lease (what client-go writes on release).
RELEASED_DURATION_SECONDS: Final = 1
#: A leader's API request never waits longer than this, nor past its renew deadline.
MIN_REQUEST_SECONDS: Final = 0.5
#: How often the watchdog checks the renew deadline, at most.
WATCHDOG_SECONDS: Final = 0.25

logger = logging.getLogger("webrelease.operator.leader")


class LeaseAction(StrEnum):
    """What a replica does with the Lease it read."""

    #: There is no Lease: create it, holding it.
    CREATE = "create"
    #: The Lease is free or expired: write ourselves in as the holder.
    ACQUIRE = "acquire"
    #: We hold it: renew.
    RENEW = "renew"
    #: Someone else holds a valid Lease: look again later.
    WAIT = "wait"


def format_time(moment: datetime) -> str:
    """A ``MicroTime`` as the API writes it: UTC, microseconds, ``Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class LeaseRecord:
    """The fields of a Lease that the election reads."""

    holder: str
    duration_seconds: int
    acquire_time: datetime | None
    renew_time: datetime | None
    transitions: int
    resource_version: str

    @classmethod
    def from_k8s(cls, body: Mapping[str, Any]) -> LeaseRecord:
        spec = body.get("spec") or {}
        return cls(
            holder=str(spec.get("holderIdentity") or ""),
            duration_seconds=int(spec.get("leaseDurationSeconds") or 0),
            acquire_time=parse_time(spec.get("acquireTime")),
            renew_time=parse_time(spec.get("renewTime")),
            transitions=int(spec.get("leaseTransitions") or 0),
            resource_version=str((body.get("metadata") or {}).get("resourceVersion") or ""),
        )


@dataclass(frozen=True)
class LeaseDecision:
    action: LeaseAction
    #: With WAIT: when the holder's Lease runs out, as this replica judges it.
    expires: datetime | None = None


def decide_lease(
    lease: LeaseRecord | None, *, identity: str, now: datetime, observed_at: datetime | None = None
) -> LeaseDecision:
    """What ``identity`` does at ``now`` with ``lease`` (None: there is none). ``observed_at`` is
    when this replica first saw the Lease in its current state (same resourceVersion), if it has
    looked before; the Lease is expired only when both its ``renewTime`` and that are more than
    ``leaseDurationSeconds`` old."""
    if lease is None:
        return LeaseDecision(LeaseAction.CREATE)
    if lease.holder == identity:
        return LeaseDecision(LeaseAction.RENEW)
    if not lease.holder:
        return LeaseDecision(LeaseAction.ACQUIRE)
    starts = [t for t in (lease.renew_time or lease.acquire_time, observed_at) if t is not None]
    if not starts:  # held, but never renewed, and never seen before: give it a full duration
        starts = [now]
    expires = max(starts) + timedelta(seconds=max(lease.duration_seconds, 0))
    if now >= expires:
        return LeaseDecision(LeaseAction.ACQUIRE)
    return LeaseDecision(LeaseAction.WAIT, expires)


def holding_spec(identity: str, now: datetime, duration_seconds: int, previous: LeaseRecord | None) -> Obj:
    """The Lease's spec once ``identity`` holds it at ``now`` (acquired or renewed)."""
    renewing = previous is not None and previous.holder == identity
    acquired = previous.acquire_time if renewing and previous is not None else None
    transitions = previous.transitions if previous is not None else 0
    if previous is not None and not renewing:
        transitions += 1
    return {
        "holderIdentity": identity,
        "leaseDurationSeconds": duration_seconds,
        "acquireTime": format_time(acquired or now),
        "renewTime": format_time(now),
        "leaseTransitions": transitions,
    }


def released_spec(now: datetime, previous: LeaseRecord) -> Obj:
    """The Lease's spec once its holder lets go: no holder, a standby may take it at once."""
    return {
        "leaseDurationSeconds": RELEASED_DURATION_SECONDS,
        "acquireTime": format_time(now),
        "renewTime": format_time(now),
        "leaseTransitions": previous.transitions,
    }


def new_lease(namespace: str, name: str, spec: Mapping[str, Any]) -> Obj:
    return {
        "apiVersion": LEASE_API_VERSION,
        "kind": "Lease",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/name": "webrelease", "app.kubernetes.io/component": "operator"},
        },
        "spec": dict(spec),
    }


def with_spec(body: Mapping[str, Any], spec: Mapping[str, Any]) -> Obj:
    """``body`` (as read: its metadata and resourceVersion kept) with a new spec."""
    out = copy.deepcopy(dict(body))
    out["spec"] = dict(spec)
    return out


class LeaseApi(Protocol):
    """The three calls the election makes (:class:`webrelease.operator.kube.Kube` has them)."""

    def get_lease(self, namespace: str, name: str, *, timeout: float = ...) -> Obj | None: ...

    def create_lease(self, lease: Mapping[str, Any], *, timeout: float = ...) -> Obj | None: ...

    def replace_lease(self, lease: Mapping[str, Any], *, timeout: float = ...) -> Obj | None: ...


@dataclass(frozen=True)
class ElectionConfig:
    namespace: str
    name: str
    identity: str
    lease_duration_seconds: int = 15
    renew_deadline_seconds: float = 10.0
    renew_period_seconds: float = 5.0

    def __post_init__(self) -> None:
        if not 0 < self.renew_period_seconds < self.renew_deadline_seconds < self.lease_duration_seconds:
            raise ValueError("leader election needs 0 < renew < renew deadline < lease duration")

    @property
    def where(self) -> str:
        return f"Lease {self.namespace}/{self.name}"


class LeaderElector:
    """Stands by until it holds the Lease (:meth:`acquire`), then keeps it (:meth:`start`) until
    :meth:`release`, or calls ``on_lost`` the moment it can no longer be sure it leads."""

    def __init__(
        self,
        api: LeaseApi,
        config: ElectionConfig,
        *,
        on_leadership: Callable[[bool], None] = lambda _leading: None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api = api
        self.config = config
        self._on_leadership = on_leadership
        self._clock = clock
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._body: Obj | None = None  # the Lease as we last read or wrote it
        self._observed: tuple[str, datetime] | None = None  # (resourceVersion, first seen at)
        self._leading = False
        self._renewed_at = 0.0  # monotonic time the last successful write was sent
        self._last_look = monotonic()  # monotonic time the last attempt ended, for liveness
        self._holder_logged: str | None = None
        self._stop = threading.Event()
        self._lost = False
        self._threads: list[threading.Thread] = []

    # -- what the process asks --------------------------------------------------------------------

    @property
    def leading(self) -> bool:
        with self._lock:
            return self._leading

    @property
    def holder(self) -> str:
        """The holder of the Lease when this replica last looked ("" if none)."""
        with self._lock:
            body = self._body
        return LeaseRecord.from_k8s(body).holder if body is not None else ""

    def looking(self, within: float) -> bool:
        """This replica has looked at the Lease in the last ``within`` seconds (liveness of a standby)."""
        return self._monotonic() - self._last_look < within

    # -- standing by --------------------------------------------------------------------------------

    def attempt(self) -> bool:
        """One look at the Lease, and the write :func:`decide_lease` asks for; True once we hold it.
        API errors propagate."""
        cfg = self.config
        timeout = max(cfg.renew_period_seconds, 5.0)
        try:
            body = self.api.get_lease(cfg.namespace, cfg.name, timeout=timeout)
            now = self._clock()
            record = LeaseRecord.from_k8s(body) if body is not None else None
            observed_at = self._observe(record, now)
            decision = decide_lease(record, identity=cfg.identity, now=now, observed_at=observed_at)
            if decision.action is LeaseAction.WAIT:
                with self._lock:
                    self._body = body
                self._log_holder(record, decision)
                return False
            spec = holding_spec(cfg.identity, now, cfg.lease_duration_seconds, record)
            sent = self._monotonic()
            if decision.action is LeaseAction.CREATE:
                written = self.api.create_lease(new_lease(cfg.namespace, cfg.name, spec), timeout=timeout)
            else:
                assert body is not None
                written = self.api.replace_lease(with_spec(body, spec), timeout=timeout)
            if written is None:  # someone else wrote it first: look again next time
                logger.info("%s changed while taking it; looking again", cfg.where)
                return False
            self._became_leader(written, record, sent)
            return True
        finally:
            self._last_look = self._monotonic()

    def acquire(self, stop: threading.Event) -> bool:
        """Look every ``renew_period_seconds`` until this replica holds the Lease (True) or until
        ``stop`` is set (False)."""
        while not stop.is_set():
            try:
                if self.attempt():
                    return True
            except Exception as exc:  # the API is down or refuses: a standby keeps looking
                logger.warning("standing by: cannot read or take %s: %s", self.config.where, _brief(exc))
            stop.wait(self.config.renew_period_seconds)
        return False

    # -- leading ------------------------------------------------------------------------------------

    def start(self, on_lost: Callable[[str], None]) -> None:
        """Renew in the background; call ``on_lost(reason)`` (once) when leadership cannot be kept."""
        if not self.leading:
            raise RuntimeError("start() before acquire(): this replica does not hold the Lease")
        self._stop.clear()
        self._threads = [
            threading.Thread(target=self._renew_loop, args=(on_lost,), name="lease-renew", daemon=True),
            threading.Thread(target=self._watchdog, args=(on_lost,), name="lease-watchdog", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def release(self) -> None:
        """Stop renewing and, if this replica still holds the Lease, let go of it (one attempt)."""
        self._stop.set()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=self.config.renew_deadline_seconds + 5.0)
        self._threads = []
        with self._lock:
            leading, body = self._leading and not self._lost, self._body
        if not leading or body is None:
            return
        self._set_leading(False)
        try:
            written = self.api.replace_lease(
                with_spec(body, released_spec(self._clock(), LeaseRecord.from_k8s(body))), timeout=5.0
            )
        except Exception as exc:
            logger.warning("could not release %s (it expires by itself): %s", self.config.where, _brief(exc))
            return
        if written is None:
            logger.warning("%s changed before it was released: left as it is", self.config.where)
        else:
            logger.info("released %s: a standby may take over now", self.config.where)

    def renew(self) -> str | None:
        """One renewal: None when renewed, else why not (someone else holds it: leadership lost,
        the caller must stop). API errors propagate; the Lease may still be ours."""
        cfg = self.config
        remaining = cfg.renew_deadline_seconds - (self._monotonic() - self._renewed_at)
        timeout = max(MIN_REQUEST_SECONDS, min(cfg.renew_period_seconds, remaining))
        with self._lock:
            body = self._body
        assert body is not None
        for _ in range(2):
            record = LeaseRecord.from_k8s(body)
            if record.holder != cfg.identity:
                return f"it is held by {record.holder or 'nobody'}"
            sent = self._monotonic()
            written = self.api.replace_lease(
                with_spec(
                    body, holding_spec(cfg.identity, self._clock(), cfg.lease_duration_seconds, record)
                ),
                timeout=timeout,
            )
            if written is not None:
                with self._lock:
                    self._body = written
                    self._renewed_at = sent
                return None
            # changed since we wrote it (or gone): read it and decide_lease again
            fresh = self.api.get_lease(cfg.namespace, cfg.name, timeout=timeout)
            if fresh is None:
                return "it was deleted"
            body = fresh
        return "it keeps changing under this replica"

    # -- inside -------------------------------------------------------------------------------------

    def _observe(self, record: LeaseRecord | None, now: datetime) -> datetime | None:
        if record is None:
            self._observed = None
            return None
        if self._observed is None or self._observed[0] != record.resource_version:
            self._observed = (record.resource_version, now)
        return self._observed[1]

    def _log_holder(self, record: LeaseRecord | None, decision: LeaseDecision) -> None:
        holder = record.holder if record is not None else ""
        if holder != self._holder_logged:
            self._holder_logged = holder
            expires = format_time(decision.expires) if decision.expires is not None else "?"
            logger.info(
                "standing by: %s is held by %s (this replica is %s; it may take over after %s)",
                self.config.where,
                holder,
                self.config.identity,
                expires,
            )

    def _became_leader(self, written: Obj, previous: LeaseRecord | None, sent: float) -> None:
        with self._lock:
            self._body = written
            self._renewed_at = sent
            self._lost = False
        self._holder_logged = None
        self._set_leading(True)
        before = f" from {previous.holder}" if previous is not None and previous.holder else ""
        logger.info("leading: %s acquired by %s%s", self.config.where, self.config.identity, before)

    def _set_leading(self, leading: bool) -> None:
        with self._lock:
            changed = self._leading != leading
            self._leading = leading
        if changed:
            self._on_leadership(leading)

    def _lose(self, on_lost: Callable[[str], None], reason: str) -> None:
        with self._lock:
            if self._lost or not self._leading:
                return
            self._lost = True
        self._stop.set()
        self._set_leading(False)
        logger.error("lost leadership of %s: %s", self.config.where, reason)
        on_lost(reason)

    def _renew_loop(self, on_lost: Callable[[str], None]) -> None:
        cfg = self.config
        delay = cfg.renew_period_seconds
        while not self._stop.wait(delay):
            try:
                lost = self.renew()
            except Exception as exc:
                logger.warning("could not renew %s: %s", cfg.where, _brief(exc))
                delay = max(MIN_REQUEST_SECONDS, cfg.renew_period_seconds / 5)
                continue
            if lost is not None:
                self._lose(on_lost, lost)
                return
            delay = cfg.renew_period_seconds

    def _watchdog(self, on_lost: Callable[[str], None]) -> None:
        cfg = self.config
        interval = min(WATCHDOG_SECONDS, cfg.renew_period_seconds / 4)
        while not self._stop.wait(interval):
            with self._lock:
                since = self._monotonic() - self._renewed_at
            if since >= cfg.renew_deadline_seconds:
                self._lose(
                    on_lost,
                    f"not renewed for {since:.1f}s (deadline {cfg.renew_deadline_seconds:g}s, "
                    f"the Lease lasts {cfg.lease_duration_seconds}s)",
                )
                return


def _brief(exc: BaseException) -> str:
    status = getattr(exc, "status", None)
    reason = getattr(exc, "reason", None)
    if status is not None:
        return f"HTTP {status} {reason or ''}".strip()
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:300]
