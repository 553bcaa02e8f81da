"""Bringing a run's status up to date (:func:`advance`): fold the step's pods, end the step
(the next one, or the run's outcome), act on a retry annotation."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from webrelease.copier.customers import CustomerListError
from webrelease.copier.runlayout import ShardLayout
from webrelease.copier.snapshot import SnapshotError
from webrelease.copier.sources import SourceError
from webrelease.copier.spec import WebReleaseSpec
from webrelease.copier.storage import Location, StorageError, parse_url
from webrelease.operator.aggregate import (
    Decision,
    PodAttempt,
    StepFold,
    decide,
    fold_step,
    job_view,
    run_ended,
)
from webrelease.operator.api import JobRefused, NamespacedReaders
from webrelease.operator.conditions import Outcome, Reason, finished, running
from webrelease.operator.constants import (
    ANNOTATION_RETRY,
)
from webrelease.operator.events import EventReason
from webrelease.operator.jobs import Step, build_job
from webrelease.operator.metrics import ShardOutcome
from webrelease.operator.reconcile.context import (
    _OUTCOME_EVENTS,
    _OUTCOME_METRIC,
    Context,
    Obj,
    Release,
    _call,
    _storage,
    cluster_spec,
    write_status,
)
from webrelease.operator.reconcile.start import restart, restart_wanted
from webrelease.operator.reconcile.steps import _create_step, _fail_run
from webrelease.operator.reports import (
    ReleaseStorage,
    failed_customers,
    index_document,
    page_url,
    step_entry,
)
from webrelease.operator.runs import (
    canary_ids,
    not_succeeded,
    progress_message,
    run_id,
    select,
    step_folder,
)
from webrelease.operator.status import (
    Carried,
    ReportRef,
    RunStatus,
    StepKind,
    WebReleaseStatus,
)


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
    layout = ShardLayout(
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
        layout,
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
