"""What the run lifecycle shares: the handlers' context (the API, storage, Events, metrics,
the clock, in-memory pod state), a release as read, the spec as a cluster checks it, and the one
way status is written."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import kopf

from webrelease.copier.sources import MissingReference
from webrelease.copier.spec import SpecError, WebReleaseSpec, parse_spec
from webrelease.copier.storage import Credentials, InvalidUrl, parse_url
from webrelease.operator.aggregate import (
    PodAttempt,
    pod_attempt,
)
from webrelease.operator.api import ReleaseApi
from webrelease.operator.conditions import Outcome, Reason
from webrelease.operator.constants import (
    LABEL_RELEASE,
    LABEL_STEP,
)
from webrelease.operator.events import EventReason, post
from webrelease.operator.jobs import Owner
from webrelease.operator.metrics import OperatorMetrics, RunOutcome
from webrelease.operator.reports import (
    CredentialsError,
    ReleaseStorage,
    credentials_from_secret,
)
from webrelease.operator.runs import (
    check_release_name,
    retry_delay,
)
from webrelease.operator.settings import OperatorSettings, WorkerDefaults
from webrelease.operator.status import (
    WebReleaseStatus,
)

log = logging.getLogger("webrelease.operator.reconcile")


Obj = dict[str, Any]


#: Seconds between checks while an old Job is being deleted.
SUPERSEDE_POLL: Final = 2.0


_OUTCOME_EVENTS: Final = {
    Outcome.COMPLETE: EventReason.RUN_COMPLETE,
    Outcome.DEGRADED: EventReason.RUN_DEGRADED,
    Outcome.FAILED: EventReason.RUN_FAILED,
}


_OUTCOME_METRIC: Final = {
    Outcome.COMPLETE: RunOutcome.COMPLETE,
    Outcome.DEGRADED: RunOutcome.DEGRADED,
    Outcome.FAILED: RunOutcome.FAILED,
}


def utcnow() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class PodBook:
    """The latest state of every shard pod the watch has shown, by release and step (in memory;
    a restarted operator lists the pods again)."""

    def __init__(self) -> None:
        self._steps: dict[tuple[str, str, str], dict[str, PodAttempt]] = {}

    @staticmethod
    def _key(pod: Mapping[str, Any]) -> tuple[str, str, str] | None:
        meta = pod.get("metadata") or {}
        labels = meta.get("labels") or {}
        release, step = labels.get(LABEL_RELEASE), labels.get(LABEL_STEP)
        if not release or not step:
            return None
        return str(meta.get("namespace", "")), str(release), str(step)

    def observe(self, pod: Mapping[str, Any]) -> tuple[tuple[str, str], PodAttempt | None, bool]:
        """Record a pod; returns ``((namespace, release), attempt, just_finished)``."""
        key = self._key(pod)
        attempt = pod_attempt(pod)
        if key is None or attempt is None:
            return ("", ""), None, False
        pods = self._steps.setdefault(key, {})
        before = pods.get(attempt.name)
        pods[attempt.name] = attempt
        return (key[0], key[1]), attempt, attempt.terminal and (before is None or not before.terminal)

    def replace(self, namespace: str, release: str, step: str, pods: Sequence[Mapping[str, Any]]) -> None:
        """What a fresh list says (pods no longer listed keep their last known state)."""
        known = self._steps.setdefault((namespace, release, step), {})
        for pod in pods:
            attempt = pod_attempt(pod)
            if attempt is not None:
                known[attempt.name] = attempt

    def attempts(self, namespace: str, release: str, step: str) -> list[PodAttempt]:
        return list(self._steps.get((namespace, release, step), {}).values())

    def forget(self, namespace: str, release: str, keep: str | None = None) -> None:
        for key in [k for k in self._steps if k[:2] == (namespace, release) and k[2] != keep]:
            del self._steps[key]


@dataclass
class Context:
    """What every handler shares (kopf ``memo``): settings, the API, metrics, in-memory state.

    What the run lifecycle reaches outside itself is here: the API (``kube``), object storage
    (``open_storage``), Events (``post``), metrics and the clock; tests pass fakes of each."""

    settings: OperatorSettings
    kube: ReleaseApi
    metrics: OperatorMetrics
    pods: PodBook = field(default_factory=PodBook)
    now: Callable[[], str] = utcnow
    post: Callable[[Mapping[str, Any], EventReason, str], None] = post
    open_storage: Callable[[WebReleaseSpec, Credentials | None], ReleaseStorage] = ReleaseStorage.open
    _locks: dict[tuple[str, str], asyncio.Lock] = field(default_factory=dict)
    _wakers: dict[tuple[str, str], asyncio.Event] = field(default_factory=dict)

    def lock(self, namespace: str, name: str) -> asyncio.Lock:
        return self._locks.setdefault((namespace, name), asyncio.Lock())

    def waker(self, namespace: str, name: str) -> asyncio.Event:
        return self._wakers.setdefault((namespace, name), asyncio.Event())

    def wake(self, namespace: str, name: str) -> None:
        self.waker(namespace, name).set()

    def forget(self, namespace: str, name: str) -> None:
        self._locks.pop((namespace, name), None)
        self._wakers.pop((namespace, name), None)
        self.pods.forget(namespace, name)

    def worker_defaults(self) -> WorkerDefaults:
        return self.settings.worker_defaults()


@dataclass(frozen=True)
class Release:
    """A WebRelease as read from the API, with the parts every step needs."""

    body: Obj
    namespace: str
    name: str
    uid: str
    generation: int
    status: WebReleaseStatus

    @classmethod
    def of(cls, body: Obj) -> Release:
        meta = body.get("metadata") or {}
        try:
            status = WebReleaseStatus.from_k8s(body.get("status"))
        except ValueError:
            log.warning(
                "status of %s/%s is unreadable; starting from scratch",
                meta.get("namespace"),
                meta.get("name"),
            )
            status = WebReleaseStatus()
        return cls(
            body=body,
            namespace=str(meta["namespace"]),
            name=str(meta["name"]),
            uid=str(meta["uid"]),
            generation=int(meta.get("generation") or 1),
            status=status,
        )

    @property
    def owner(self) -> Owner:
        return Owner(self.name, self.namespace, self.uid)

    @property
    def annotations(self) -> Mapping[str, str]:
        annotations: Mapping[str, str] = (self.body.get("metadata") or {}).get("annotations") or {}
        return annotations


async def _call(fn: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.to_thread(fn, *args)


async def write_status(ctx: Context, rel: Release, new: WebReleaseStatus) -> None:
    """Write ``new`` as the whole status, unless it is what is there already."""
    if new == rel.status:
        return
    await _call(ctx.kube.patch_release_status, rel.namespace, rel.name, new.to_patch())


def cluster_spec(body: Mapping[str, Any]) -> WebReleaseSpec:
    """The spec, re-validated with the same models as the CRD, plus what a cluster needs.
    SpecError names the field."""
    check_release_name(str((body.get("metadata") or {}).get("name") or ""))
    spec = parse_spec(body.get("spec") or {})
    for field_name, url in (
        ("spec.source.url", spec.source.url),
        ("spec.target.url", spec.target.url),
        ("spec.customers.url", spec.customers.url),
        ("spec.overrides.url", spec.overrides.url if spec.overrides else None),
        ("spec.reports.url", spec.reports.url),
    ):
        if url is None:
            continue
        if not url.startswith("s3://"):
            raise SpecError(field_name, f"{url!r}: a cluster needs s3:// (file:// is for local runs)")
        try:
            parse_url(url[: url.index("{")] if "{" in url else url.rsplit("/", 1)[0] + "/")
        except InvalidUrl as exc:
            raise SpecError(field_name, str(exc)) from None
    return spec


def waiting_reason(exc: Exception) -> Reason:
    """What a run waits for, by the error that stopped it: a Secret, a ConfigMap, or storage."""
    if isinstance(exc, CredentialsError):
        return Reason.SECRET_NOT_FOUND
    if isinstance(exc, MissingReference):
        return Reason.CONFIG_MAP_NOT_FOUND if exc.where == "ConfigMap" else Reason.SECRET_NOT_FOUND
    return Reason.STORAGE_UNAVAILABLE


async def _credentials(ctx: Context, rel: Release, spec: WebReleaseSpec) -> Credentials | None:
    ref = spec.storage.secret_ref
    if ref is None:
        return None
    values = await _call(ctx.kube.secret_values, rel.namespace, ref.name)
    return credentials_from_secret(ref.name, values)


async def _storage(ctx: Context, rel: Release, spec: WebReleaseSpec) -> ReleaseStorage:
    return ctx.open_storage(spec, await _credentials(ctx, rel, spec))


def _temporary(ctx: Context, retry: int, message: str) -> kopf.TemporaryError:
    return kopf.TemporaryError(message, delay=retry_delay(retry))
