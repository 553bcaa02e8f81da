"""The run lifecycle (docs/design.md "The run flow"): what the handlers do, in plain async functions.

- :func:`start_run` (a new generation: create, spec change, operator start): check the spec, supersede the
  previous run, snapshot the customer list, create the first step's Job.
- :func:`advance` (the per-release daemon, in batches): fold the step's pods into status; when the
  Job has ended, start the next step or finish the run (report index, final condition, Event);
  after the run, act on a new retry annotation.

Every decision is a pure function (:mod:`.runs`, :mod:`.aggregate`, :mod:`.conditions`,
:mod:`.jobs`); this module sequences them with the API (:mod:`.kube`) and storage
(:mod:`.reports`). Both entry points run under the release's lock and start from a fresh read of
the object, so they never act on stale status. Status is written whole (:meth:`to_patch`), once per
pass, and only when it changed.

Idempotency: Job names are deterministic per step, snapshots are canonical (same list, same
bytes, same sha256), and status is written after the Job exists. A restart at any point re-does
at most a snapshot and finds the Job already there (``create_job`` returns it): never a second Job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Final

import kopf

from webrelease.copier.customers import CustomerListError
from webrelease.copier.desired import BuildError, check_build
from webrelease.copier.dryrun import encode_plan, plan_release
from webrelease.copier.runlayout import ShardPlan
from webrelease.copier.runreport import FailedEntry, StepEntry
from webrelease.copier.snapshot import SnapshotError
from webrelease.copier.sources import MissingReference, SourceError
from webrelease.copier.spec import SpecError, WebReleaseSpec, parse_spec
from webrelease.copier.storage import Credentials, InvalidUrl, Location, StorageError, parse_url
from webrelease.operator.aggregate import (
    Decision,
    PodAttempt,
    StepFold,
    decide,
    fold_step,
    job_view,
    plan_fold,
    pod_attempt,
    run_ended,
)
from webrelease.operator.api import JobRefused, NamespacedReaders, ReleaseApi
from webrelease.operator.conditions import RESTARTABLE, Outcome, Reason, finished, invalid, running
from webrelease.operator.constants import (
    ANNOTATION_RETRY,
    LABEL_GENERATION,
    LABEL_RELEASE,
    LABEL_STEP,
)
from webrelease.operator.events import EventReason, post
from webrelease.operator.jobs import Owner, Step, build_job, job_name, step_id
from webrelease.operator.metrics import OperatorMetrics, RunOutcome, ShardOutcome
from webrelease.operator.reports import (
    CredentialsError,
    ReleaseStorage,
    credentials_from_secret,
    failed_customers,
    index_document,
    page_url,
    run_location,
    step_entry,
)
from webrelease.operator.runs import (
    NAME_FIELD,
    CanaryError,
    before_run_status,
    canary_covers_all,
    canary_ids,
    canary_status,
    check_release_name,
    describe_source,
    first_step,
    not_succeeded,
    progress_message,
    retry_delay,
    run_id,
    select,
    started_status,
    step_folder,
    waiting_message,
)
from webrelease.operator.settings import OperatorSettings, WorkerDefaults
from webrelease.operator.status import (
    CanaryStatus,
    Carried,
    ConditionType,
    ReportRef,
    RunStatus,
    SnapshotStatus,
    StepKind,
    WebReleaseStatus,
)

log = logging.getLogger(__name__)

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


# ------------------------------------------------------------------------------------- context


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


# ------------------------------------------------------------------------------------- helpers


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


async def _fail_run(
    ctx: Context, rel: Release, reason: Reason, message: str, event: EventReason, *, accepted: bool = True
) -> None:
    """The run of this generation cannot go on: Failed with ``reason``; no Job is left running.
    ``InvalidSpec`` also makes ``Accepted`` False."""
    if reason == Reason.INVALID_SPEC:
        conditions = invalid(rel.status.conditions, message, generation=rel.generation, now=ctx.now())
    else:
        conditions = finished(
            rel.status.conditions,
            Outcome.FAILED,
            reason,
            message,
            generation=rel.generation,
            now=ctx.now(),
            accepted=accepted,
        )
    # a retry annotation set before this failure has been acted on: this was the try
    new = rel.status.failed(
        rel.generation, conditions, now=ctx.now(), retry_token=rel.annotations.get(ANNOTATION_RETRY)
    )
    await write_status(ctx, rel, new)
    ctx.post(rel.body, event, message)


async def _supersede(ctx: Context, rel: Release) -> list[str]:
    """Delete every Job of this release made for another generation; the names still going away."""
    jobs: list[Obj] = await _call(ctx.kube.list_jobs, rel.namespace, rel.name)
    going: list[str] = []
    deleted = False
    for job in jobs:
        meta = job.get("metadata") or {}
        if (meta.get("labels") or {}).get(LABEL_GENERATION) == str(rel.generation):
            continue
        going.append(str(meta["name"]))
        if not meta.get("deletionTimestamp"):
            deleted = await _call(ctx.kube.delete_job, rel.namespace, meta["name"]) or deleted
    run = rel.status.run
    # said once: when the deletion is asked for, not on every check while the Job goes away
    if (
        deleted
        and run is not None
        and run.generation != rel.generation
        and rel.status.completion_time is None
    ):
        ctx.metrics.run_finished(
            rel.namespace,
            rel.name,
            RunOutcome.SUPERSEDED,
            succeeded=rel.status.customers.succeeded,
            failed=rel.status.customers.failed,
        )
        ctx.post(
            rel.body,
            EventReason.SUPERSEDED,
            f"generation {rel.generation} supersedes the run of generation "
            f"{run.generation}: deleting Job {run.job}",
        )
    return going


async def _delete_other_jobs(ctx: Context, rel: Release, keep: str) -> None:
    jobs: list[Obj] = await _call(ctx.kube.list_jobs, rel.namespace, rel.name)
    for job in jobs:
        name = job["metadata"]["name"]
        if name != keep and not job["metadata"].get("deletionTimestamp"):
            await _call(ctx.kube.delete_job, rel.namespace, name)


async def _create_step(
    ctx: Context,
    rel: Release,
    step: Step,
    *,
    run_snapshot: SnapshotStatus,
    run_folder: Location,
    new_run: bool,
    reason: EventReason,
) -> None:
    """Create ``step``'s Job (or find it), then say in status that the step has started."""
    manifest = build_job(step, ctx.worker_defaults())
    try:
        job, created = await _call(ctx.kube.create_job, manifest)
    except JobRefused as exc:
        raise JobRefused(f"spec.worker: the Job was refused by the apiserver: {exc}") from None
    owners = [o.get("uid") for o in (job.get("metadata") or {}).get("ownerReferences") or []]
    if rel.uid not in owners:
        raise kopf.TemporaryError(
            f"Job {step.job} belongs to another (deleted) WebRelease; waiting for it to go",
            delay=SUPERSEDE_POLL,
        )
    new = started_status(
        rel.status,
        step,
        now=ctx.now(),
        total_customers=run_snapshot.count,
        run_snapshot=run_snapshot,
        report_url=run_folder.url,
        new_run=new_run,
    )
    await write_status(ctx, rel, new)
    ctx.pods.forget(rel.namespace, rel.name, keep=step.step_id)
    await _delete_other_jobs(ctx, rel, keep=step.job)
    ctx.metrics.run_started(rel.namespace, rel.name, resumed=not created)
    ctx.metrics.set_progress(
        rel.namespace,
        rel.name,
        customers=new.customers.model_dump(exclude={"not_released"}),
        shards=new.shards.model_dump(exclude={"pending"}),
    )
    what = f"{step.snapshot.count} customer(s) in {step.layout.shards} shard(s)"
    verb = "created" if created else "found"
    ctx.post(rel.body, reason, f"Job {step.job} {verb}: {step.kind.value} step, {what}")


# ---------------------------------------------------------------------------------- start_run


async def _before_run(ctx: Context, rel: Release, reason: Reason, message: str) -> Release:
    """Say at once what this generation waits for (:func:`.runs.before_run_status`); the release
    as it now is."""
    new = before_run_status(
        rel.status, generation=rel.generation, reason=reason, message=message, now=ctx.now()
    )
    await write_status(ctx, rel, new)
    return replace(rel, status=new)


async def _referenced_objects(readers: NamespacedReaders, spec: WebReleaseSpec) -> None:
    """The ConfigMap or SQL Secret the customer source names exists and has its key (else
    MissingReference): both may well appear a moment after the WebRelease (one ``kubectl apply -f``
    of a folder, an Argo CD sync), so they are waited for, not a bad customer list."""
    cm = spec.customers.config_map_ref
    if cm is not None:
        try:
            await _call(readers.config_map_value, cm.name, cm.key)
        except MissingReference as exc:
            raise MissingReference(f"spec.customers.configMapRef: {exc.message}", exc.where) from None
    sql = spec.customers.sql
    if sql is not None:
        try:
            await _call(readers.secret_value, sql.secret_ref.name, sql.secret_ref.key)
        except MissingReference as exc:
            raise MissingReference(f"spec.customers.sql.secretRef: {exc.message}", exc.where) from None


async def _wait_or_give_up(
    ctx: Context, rel: Release, exc: Exception, *, waited: float | None, again: bool, retry: int
) -> None:
    """Something the run needs is not there (yet): say so at once (condition and Event) and try
    again soon, or, after ``WEBRELEASE_WAIT_SECONDS``, end the run Failed. Always raises."""
    problem = exc.message if isinstance(exc, MissingReference) else str(exc)
    reason = waiting_reason(exc)
    if again or waited is None or waited >= ctx.settings.wait_seconds:
        message = (
            problem
            if again or waited is None
            else f"{problem} (gave up after waiting {ctx.settings.wait_seconds:g} s)"
        )
        message += f"; once fixed: webrelease retry {rel.name} -n {rel.namespace}"
        await _fail_run(ctx, rel, Reason.SNAPSHOT_FAILED, message, EventReason.STORAGE_PROBLEM)
        raise kopf.PermanentError(message)
    delay = retry_delay(retry)
    message = waiting_message(problem, now=ctx.now(), waited=waited, wait_seconds=ctx.settings.wait_seconds)
    before = rel.status.condition(ConditionType.PROGRESSING)
    await _before_run(ctx, rel, reason, message)
    if before is None or before.reason != reason.value or before.observed_generation != rel.generation:
        ctx.post(rel.body, EventReason.WAITING, message)
    raise kopf.TemporaryError(problem, delay=delay)


async def start_run(
    ctx: Context, body: Obj, *, retry: int = 0, waited: float | None = 0.0, again: bool = False
) -> None:
    """Start the run of the object's generation, unless it has started already.

    ``again``: start it although it failed before its first Job (the retry annotation, after the
    customer list or a Secret was fixed). Raises ``kopf.PermanentError`` (after writing a Failed
    condition) when the spec or the customer list is invalid, and ``kopf.TemporaryError`` while an
    old Job is going away or a passing problem (a missing Secret, storage unreachable) lasts:
    ``waited`` says how long it has lasted (the handler's runtime); after ``wait_seconds`` the run
    fails. Without ``waited`` (None) or with ``again``, such a problem fails the run at once.
    """
    rel = Release.of(body)
    status = rel.status
    try:
        spec = cluster_spec(body)
    except SpecError as exc:
        if exc.field != NAME_FIELD:  # no Job can carry a longer name in its label: none to delete
            await _supersede(ctx, rel)
        message = str(exc)
        if status.observed_generation != rel.generation or not status.is_true(ConditionType.FAILED):
            conditions = invalid(status.conditions, message, generation=rel.generation, now=ctx.now())
            new = status.observed(rel.generation, conditions)
            await write_status(ctx, rel, new)
            ctx.post(rel.body, EventReason.INVALID_SPEC, message)
        raise kopf.PermanentError(message) from None
    run = status.run
    if run is not None and run.generation == rel.generation:
        return  # started already (an operator restart, or a repeated event)
    if status.observed_generation == rel.generation and status.is_true(ConditionType.FAILED) and not again:
        return  # this generation failed before its first Job (e.g. a bad customer list); see advance

    going = await _supersede(ctx, rel)
    if going:
        message = f"waiting for Job(s) {', '.join(going)} of an earlier generation to be deleted"
        await _before_run(ctx, rel, Reason.SUPERSEDING, message)
        raise kopf.TemporaryError(message, delay=SUPERSEDE_POLL)

    rid = run_id(rel.generation, rel.uid)
    run_folder = run_location(spec, rel.namespace, rel.name, rid)
    readers = NamespacedReaders(ctx.kube, rel.namespace)
    try:
        await _referenced_objects(readers, spec)
        storage = await _storage(ctx, rel, spec)
        if not status.is_true(ConditionType.PROGRESSING) or status.observed_generation != rel.generation:
            rel = await _before_run(
                ctx, rel, Reason.STARTING, f"freezing the customer list ({describe_source(spec)})"
            )
        run_snapshot = await _call(
            lambda: storage.freeze_customers(run_folder, secrets=readers, config_maps=readers)
        )
    except (CredentialsError, MissingReference, StorageError) as exc:
        await _wait_or_give_up(ctx, rel, exc, waited=waited, again=again, retry=retry)
        raise AssertionError("unreachable") from None  # _wait_or_give_up always raises
    except (CustomerListError, SourceError) as exc:
        await _fail_run(ctx, rel, Reason.INVALID_CUSTOMER_LIST, str(exc), EventReason.INVALID_CUSTOMER_LIST)
        raise kopf.PermanentError(str(exc)) from None
    try:  # what would fail every shard alike (the build, a pattern, the sites' bucket): Failed now
        await _call(check_build, spec, storage.stores)
    except BuildError as exc:
        await _call(storage.remove_snapshot, run_folder)
        await _fail_run(ctx, rel, Reason.BUILD_UNUSABLE, str(exc), EventReason.RUN_FAILED)
        raise kopf.PermanentError(str(exc)) from None
    except StorageError as exc:
        await _wait_or_give_up(ctx, rel, exc, waited=waited, again=again, retry=retry)
        raise AssertionError("unreachable") from None  # _wait_or_give_up always raises

    kind, rest_pending = first_step(spec)
    if kind == StepKind.PLAN:
        await _plan_run(ctx, rel, spec, storage=storage, run_snapshot=run_snapshot, run_folder=run_folder)
        return
    snapshot = run_snapshot
    folder = run_folder.child(step_folder(kind))
    canary: CanaryStatus | None = None
    note: str | None = None
    if kind == StepKind.CANARY:
        assert spec.canary is not None
        try:
            records = await _call(storage.read_snapshot, run_snapshot)
            canaries = canary_ids([str(r["id"]) for r in records], spec.canary)
            step_records = select(records, canaries)
            if len(step_records) == len(records):
                kind, rest_pending = StepKind.MAIN, False
                folder = run_folder.child(step_folder(kind))
                note = canary_covers_all(spec.canary, len(records))
                ctx.post(rel.body, EventReason.CANARY_COVERS_ALL, note)
            else:
                canary = canary_status(canaries)
                snapshot = await _call(storage.write_snapshot, folder, step_records)
        except CanaryError as exc:
            await _call(storage.remove_snapshot, run_folder)
            await _fail_run(
                ctx, rel, Reason.INVALID_CUSTOMER_LIST, str(exc), EventReason.INVALID_CUSTOMER_LIST
            )
            raise kopf.PermanentError(str(exc)) from None
        except (StorageError, SnapshotError) as exc:
            raise _temporary(ctx, retry, f"writing the canary snapshot to {folder.url}: {exc}") from None
    ctx.post(
        rel.body, EventReason.SNAPSHOT_WRITTEN, f"{run_snapshot.count} customers frozen in {run_snapshot.url}"
    )
    try:
        step = Step(
            owner=rel.owner,
            spec=spec,
            generation=rel.generation,
            kind=kind,
            snapshot=snapshot,
            folder=folder.url,
            rest_pending=rest_pending,
            retry_token=rel.annotations.get(ANNOTATION_RETRY),
            canary=canary,
            note=note,
        )
        await _create_step(
            ctx,
            rel,
            step,
            run_snapshot=run_snapshot,
            run_folder=run_folder,
            new_run=True,
            reason=EventReason.STEP_STARTED,
        )
    except JobRefused as exc:
        # nothing of a run that cannot start stays behind
        await _call(storage.remove_snapshot, run_folder)
        if folder != run_folder:
            await _call(storage.remove_snapshot, folder)
        await _fail_run(ctx, rel, Reason.INVALID_SPEC, str(exc), EventReason.INVALID_SPEC)
        raise kopf.PermanentError(str(exc)) from None


def restart_wanted(status: WebReleaseStatus, token: str | None) -> bool:
    """The run of the observed generation failed before its first Job because of its input (the
    customer list, a Secret or storage, the build) and the retry annotation has a new value."""
    failed = status.condition(ConditionType.FAILED)
    fresh = bool(token) and token != status.retry_token
    return fresh and failed is not None and failed.reason in RESTARTABLE


async def restart(ctx: Context, body: Obj) -> None:
    """Start again, from the snapshot, the run of this generation that failed before its first Job
    (:func:`restart_wanted`): the user says its input is fixed. A problem that is still there fails
    it again at once, naming the problem; nothing is waited for (the user is there to retry)."""
    with contextlib.suppress(kopf.PermanentError, kopf.TemporaryError):
        await start_run(ctx, body, again=True)


# ------------------------------------------------------------------------------------- dry run


PLAN_NAME: Final = "plan.jsonl"


async def _plan_run(
    ctx: Context,
    rel: Release,
    spec: WebReleaseSpec,
    *,
    storage: ReleaseStorage,
    run_snapshot: SnapshotStatus,
    run_folder: Location,
) -> None:
    """``dryRun``: plan every customer in this process with read requests only (list, get, head)
    and write the plan as the run's report; no Job, nothing written to any site."""
    now = ctx.now()
    folder = run_folder.child(step_folder(StepKind.PLAN))
    ctx.metrics.run_started(rel.namespace, rel.name)
    try:
        records = await _call(storage.read_snapshot, run_snapshot)
        planned = await _call(plan_release, spec, rel.name, records, storage.stores)
    except BuildError as exc:
        await _fail_run(ctx, rel, Reason.BUILD_UNUSABLE, f"spec.source.url: {exc}", EventReason.RUN_FAILED)
        raise kopf.PermanentError(str(exc)) from None
    plan_url = await _call(storage.write_plan, folder, PLAN_NAME, encode_plan(planned))
    fold = plan_fold(planned, total=run_snapshot.count)
    decision = decide(StepKind.PLAN, fold, rest_pending=False, policy=spec.failure_policy)
    assert decision.outcome is not None
    conditions = finished(
        rel.status.conditions,
        decision.outcome,
        decision.reason,
        decision.message,
        generation=rel.generation,
        now=now,
    )
    run = RunStatus(
        generation=rel.generation,
        step=StepKind.PLAN,
        step_id=step_id(rel.generation, StepKind.PLAN),
        job="",
        snapshot=run_snapshot,
        customers_per_shard=max(1, run_snapshot.count),
        shards=0,
        started=now,
    )
    status = rel.status.started(
        run,
        fold,
        conditions,
        snapshot=run_snapshot,
        report=ReportRef(url=run_folder.url),
        retry_token=rel.annotations.get(ANNOTATION_RETRY),
        new_run=True,
        canary=None,
    ).finished(now, customers=run_ended(fold.customers))
    failed = [FailedEntry(id=p.id, reason=p.error or "") for p in planned if p.plan is None]
    doc = index_document(
        None,
        namespace=rel.namespace,
        name=rel.name,
        generation=rel.generation,
        run_id=run_id(rel.generation, rel.uid),
        spec=spec,
        status=status,
        step=StepEntry(
            step=StepKind.PLAN.value,
            step_id=run.step_id,
            folder=folder.url,
            plan=plan_url,
            customers=len(planned),
            succeeded=len(planned) - len(failed),
            failed=len(failed),
        ),
        failed=failed,
        outcome=decision.outcome.value,
        reason=decision.reason.value,
        message=decision.message,
    )
    index = await _call(storage.write_index, run_folder, doc)
    report = ReportRef(url=run_folder.url, index=index, page=page_url(index))
    status = status.with_report(report)
    await write_status(ctx, rel, status)
    ctx.post(
        rel.body,
        _OUTCOME_EVENTS[decision.outcome],
        f"dry run: {decision.message}; plan: {plan_url}; report: {report.page}",
    )
    ctx.metrics.run_finished(
        rel.namespace,
        rel.name,
        _OUTCOME_METRIC[decision.outcome],
        succeeded=fold.customers.succeeded,
        failed=fold.customers.failed,
        duration_seconds=0.0,
    )


# ------------------------------------------------------------------------------------- advance


async def advance(ctx: Context, body: Obj, *, relist: bool = False) -> None:
    """Bring the status of the current run up to date; end the step or the run when its Job has ended;
    start a retry when the annotation asks for one. Does nothing for a generation :func:`start_run`
    has not started yet."""
    try:
        await _advance(ctx, body, relist=relist)
    except JobRefused as exc:
        await _fail_run(ctx, Release.of(body), Reason.INVALID_SPEC, str(exc), EventReason.INVALID_SPEC)


async def _advance(ctx: Context, body: Obj, *, relist: bool) -> None:
    rel = Release.of(body)
    status, run = rel.status, rel.status.run
    token = rel.annotations.get(ANNOTATION_RETRY)
    if status.observed_generation != rel.generation:
        return
    if run is None or run.generation != rel.generation:
        if restart_wanted(status, token):
            await restart(ctx, body)
        return
    spec = cluster_spec(body)
    if status.completion_time is not None:
        if token and token != status.retry_token:
            await _retry(ctx, rel, spec, token)
        return
    if status.report is None or status.snapshot is None:
        return

    job: Obj | None = await _call(ctx.kube.get_job, rel.namespace, run.job)
    plan = ShardPlan(
        customers=run.snapshot.count,
        size=run.customers_per_shard,
        shards=run.shards,
        parallelism=min(spec.sharding.parallelism, run.shards),
    )
    run_folder = parse_url(status.report.url)
    folder = run_folder.child(step_folder(run.step, run.retries))
    if job is None:
        await _recreate_job(ctx, rel, _current_step(rel, spec, run, folder))
        return
    view = job_view(job)
    if relist or view.finished:
        pods: list[Obj] = await _call(ctx.kube.list_step_pods, rel.namespace, rel.name, run.step_id)
        ctx.pods.replace(rel.namespace, rel.name, run.step_id, pods)
    fold = fold_step(
        plan,
        total_customers=status.snapshot.count,
        carried=run.carried,
        pods=ctx.pods.attempts(rel.namespace, rel.name, run.step_id),
        job=view,
    )
    ctx.metrics.set_progress(
        rel.namespace,
        rel.name,
        customers=fold.customers.model_dump(exclude={"not_released"}),
        shards=fold.shards.model_dump(exclude={"pending"}),
    )
    if not fold.finished:
        message = progress_message(
            run.step,
            fold.shards.succeeded + fold.shards.failed,
            fold.shards.total,
            fold.customers.succeeded + fold.customers.failed,
            fold.customers.total,
        )
        reason = {StepKind.CANARY: Reason.CANARY, StepKind.RETRY: Reason.RETRYING}.get(
            run.step, Reason.RUNNING
        )
        conditions = running(status.conditions, reason, message, generation=rel.generation, now=ctx.now())
        await write_status(ctx, rel, status.with_fold(fold, conditions))
        return

    decision = decide(run.step, fold, rest_pending=run.rest_pending, policy=spec.failure_policy)
    storage = await _storage(ctx, rel, spec)
    end = StepEnd(rel, spec, storage, fold, run_folder, folder)
    if decision.next_step == StepKind.REST:
        await _start_rest(ctx, end)
        return
    await _finish(ctx, end, decision)


def _current_step(rel: Release, spec: WebReleaseSpec, run: RunStatus, folder: Location) -> Step:
    """The step ``run`` says is going, as it was started."""
    return Step(
        owner=rel.owner,
        spec=spec,
        generation=rel.generation,
        kind=run.step,
        snapshot=run.snapshot,
        folder=folder.url,
        retries=run.retries,
        carried=run.carried,
        rest_pending=run.rest_pending,
        retry_token=rel.status.retry_token,
    )


async def _recreate_job(ctx: Context, rel: Release, step: Step) -> None:
    """The step's Job is gone before the step ended (deleted by hand): make it again (same name;
    shards redo only what differs)."""
    _job, created = await _call(ctx.kube.create_job, build_job(step, ctx.worker_defaults()))
    if created:
        ctx.pods.forget(rel.namespace, rel.name)
        ctx.post(
            rel.body,
            EventReason.JOB_RECREATED,
            f"Job {step.job} was deleted before the step ended; created again",
        )


@dataclass(frozen=True)
class StepEnd:
    """A step whose Job has ended, and where its results are."""

    rel: Release
    spec: WebReleaseSpec
    storage: ReleaseStorage
    fold: StepFold
    run_folder: Location
    folder: Location


async def _start_rest(ctx: Context, end: StepEnd) -> None:
    rel, spec, fold = end.rel, end.spec, end.fold
    status, run = rel.status, rel.status.run
    assert run is not None and status.snapshot is not None and spec.canary is not None
    records = await _call(end.storage.read_snapshot, status.snapshot)
    canaries = canary_ids([str(r["id"]) for r in records], spec.canary)
    rest = select(records, canaries, keep=False)
    if run.retries:
        # the canary was retried (its customers read again from the source): the rest are released
        # as their records are now too, not as they were frozen before the user fixed the source
        rest = await _refreshed(ctx, rel, end.storage, rest)
    rest_folder = end.run_folder.child(step_folder(StepKind.REST))
    await _write_index(end, final=None, outcome=None, reason=Reason.RUNNING, message="canary done")
    snapshot = await _call(end.storage.write_snapshot, rest_folder, rest)
    ctx.post(rel.body, EventReason.CANARY_SUCCEEDED, f"all {fold.step_succeeded} canary customers succeeded")
    step = Step(
        owner=rel.owner,
        spec=spec,
        generation=rel.generation,
        kind=StepKind.REST,
        snapshot=snapshot,
        folder=rest_folder.url,
        retries=run.retries,
        carried=Carried(succeeded=fold.customers.succeeded, objects=fold.objects),
        retry_token=status.retry_token,
    )
    await _create_step(
        ctx,
        rel,
        step,
        run_snapshot=status.snapshot,
        run_folder=end.run_folder,
        new_run=False,
        reason=EventReason.STEP_STARTED,
    )


async def _write_index(
    end: StepEnd, *, final: WebReleaseStatus | None, outcome: Outcome | None, reason: Reason, message: str
) -> str:
    """Add the ended step to the run's ``index.json`` (with every failed customer); its URL."""
    rel, fold, storage = end.rel, end.fold, end.storage
    run = rel.status.run
    assert run is not None
    step_records = None
    if any(v.failed and v.summary is None for v in fold.views):
        step_records = await _call(storage.read_snapshot, run.snapshot)
    failed = await _call(failed_customers, storage, end.folder, fold, run.customers_per_shard, step_records)
    previous = await _call(storage.read_index, end.run_folder)
    doc = index_document(
        previous,
        namespace=rel.namespace,
        name=rel.name,
        generation=rel.generation,
        run_id=run_id(rel.generation, rel.uid),
        spec=end.spec,
        status=final or rel.status.with_fold(fold, list(rel.status.conditions)),
        step=step_entry(run, fold, end.folder),
        failed=failed,
        outcome=outcome.value if outcome is not None else None,
        reason=reason.value,
        message=message,
    )
    url: str = await _call(storage.write_index, end.run_folder, doc)
    return url


async def _finish(ctx: Context, end: StepEnd, decision: Decision) -> None:
    rel, fold = end.rel, end.fold
    status = rel.status
    assert decision.outcome is not None and status.report is not None
    now = ctx.now()
    conditions = finished(
        status.conditions,
        decision.outcome,
        decision.reason,
        decision.message,
        generation=rel.generation,
        now=now,
    )
    final = status.with_fold(fold, conditions).finished(now, customers=run_ended(fold.customers))
    try:
        index = await _write_index(
            end, final=final, outcome=decision.outcome, reason=decision.reason, message=decision.message
        )
    except StorageError as exc:
        ctx.post(
            rel.body, EventReason.STORAGE_PROBLEM, f"writing the report index to {end.run_folder.url}: {exc}"
        )
        raise
    page = page_url(index)
    final = final.with_report(ReportRef(url=status.report.url, index=index, page=page))
    await write_status(ctx, rel, final)
    ctx.post(rel.body, _OUTCOME_EVENTS[decision.outcome], f"{decision.message}; report: {page}")
    ctx.metrics.run_finished(
        rel.namespace,
        rel.name,
        _OUTCOME_METRIC[decision.outcome],
        succeeded=fold.customers.succeeded,
        failed=fold.customers.failed + fold.customers.pending,
        duration_seconds=_seconds_between(status.start_time, now),
    )


def _seconds_between(start: str | None, end: str) -> float | None:
    if start is None:
        return None
    try:
        a = datetime.fromisoformat(start.replace("Z", "+00:00"))
        b = datetime.fromisoformat(end.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (b - a).total_seconds()


async def _retry(ctx: Context, rel: Release, spec: WebReleaseSpec, token: str) -> None:
    """The retry annotation has a new value: re-run the customers of the last step that did not succeed."""
    status, run = rel.status, rel.status.run
    assert run is not None and status.report is not None and status.snapshot is not None
    record_only = status.retry_seen(token)
    if spec.dry_run:
        await write_status(ctx, rel, record_only)
        ctx.post(
            rel.body, EventReason.NOTHING_TO_RETRY, "a dry run writes nothing: there is nothing to retry"
        )
        return
    storage = await _storage(ctx, rel, spec)
    run_folder = parse_url(status.report.url)
    previous = run_folder.child(step_folder(run.step, run.retries))
    try:
        records = await _call(storage.read_snapshot, run.snapshot)
        succeeded = await _call(storage.succeeded_ids, previous, run.shards)
    except (StorageError, SnapshotError) as exc:
        ctx.post(rel.body, EventReason.STORAGE_PROBLEM, f"retry: reading the last step's results: {exc}")
        return
    again = not_succeeded(records, succeeded)
    if again:
        again = await _refreshed(ctx, rel, storage, again)
    if not again:
        await write_status(ctx, rel, record_only)
        ctx.post(rel.body, EventReason.NOTHING_TO_RETRY, "every customer of the last run succeeded")
        return
    retries = run.retries + 1
    folder = run_folder.child(step_folder(StepKind.RETRY, retries))
    snapshot = await _call(storage.write_snapshot, folder, again)
    step = Step(
        owner=rel.owner,
        spec=spec,
        generation=rel.generation,
        kind=StepKind.RETRY,
        snapshot=snapshot,
        folder=folder.url,
        retries=retries,
        carried=Carried(succeeded=status.customers.succeeded, objects=status.objects),
        rest_pending=run.rest_pending,
        retry_token=token,
    )
    await _create_step(
        ctx,
        rel,
        step,
        run_snapshot=status.snapshot,
        run_folder=run_folder,
        new_run=False,
        reason=EventReason.RETRY_STARTED,
    )


async def _refreshed(
    ctx: Context, rel: Release, storage: ReleaseStorage, records: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The current records of these customers from the customer source (a record fixed since the
    run is released as it is now); the frozen record when the source lacks it or cannot be read."""
    readers = NamespacedReaders(ctx.kube, rel.namespace)
    try:
        fresh = await _call(lambda: storage.load_customers(secrets=readers, config_maps=readers))
    except (CustomerListError, SourceError, StorageError) as exc:
        ctx.post(
            rel.body,
            EventReason.STORAGE_PROBLEM,
            f"retry: the customer list cannot be read again ({exc}); retrying with the records of the run",
        )
        return records
    by_id = {str(r["id"]): r for r in fresh}
    return [by_id.get(str(r["id"]), r) for r in records]


def shard_finished(ctx: Context, namespace: str, release: str, attempt: PodAttempt) -> None:
    """Metrics for one shard pod that has just ended."""
    seconds = attempt.summary.seconds if attempt.summary is not None else 0.0
    outcome = ShardOutcome.SUCCEEDED if attempt.phase == "Succeeded" else ShardOutcome.FAILED
    ctx.metrics.shard_finished(namespace, release, outcome, seconds)


__all__ = ["Context", "PodBook", "advance", "cluster_spec", "job_name", "shard_finished", "start_run"]
