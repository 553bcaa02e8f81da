"""Starting the run of a generation (:func:`start_run`), and starting again a run that failed
before its first Job once its input is fixed (:func:`restart`)."""

from __future__ import annotations

import contextlib

import kopf

from webrelease.copier.customers import CustomerListError
from webrelease.copier.desired import BuildError, check_build
from webrelease.copier.snapshot import SnapshotError
from webrelease.copier.sources import MissingReference, SourceError
from webrelease.copier.spec import SpecError, WebReleaseSpec
from webrelease.copier.storage import StorageError
from webrelease.operator.api import JobRefused, NamespacedReaders
from webrelease.operator.conditions import RESTARTABLE, Reason, invalid
from webrelease.operator.constants import (
    ANNOTATION_RETRY,
)
from webrelease.operator.events import EventReason
from webrelease.operator.jobs import Step
from webrelease.operator.reconcile.context import (
    SUPERSEDE_POLL,
    Context,
    Obj,
    Release,
    _call,
    _storage,
    _temporary,
    cluster_spec,
    waiting_reason,
    write_status,
)
from webrelease.operator.reconcile.dry_run import _dry_run
from webrelease.operator.reconcile.steps import _before_run, _create_step, _fail_run, _supersede
from webrelease.operator.reports import (
    CredentialsError,
    run_location,
)
from webrelease.operator.runs import (
    NAME_FIELD,
    CanaryError,
    canary_covers_all,
    canary_ids,
    canary_status,
    describe_source,
    first_step,
    retry_delay,
    run_id,
    select,
    step_folder,
    waiting_message,
)
from webrelease.operator.status import (
    CanaryStatus,
    ConditionType,
    StepKind,
    WebReleaseStatus,
)


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
        await _dry_run(ctx, rel, spec, storage=storage, run_snapshot=run_snapshot, run_folder=run_folder)
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
