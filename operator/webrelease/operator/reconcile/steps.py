"""A step of a run: supersede the Jobs of another generation, create the step's Job and say so
in status, and fail a run that cannot go on."""

from __future__ import annotations

from dataclasses import replace

import kopf

from webrelease.copier.storage import Location
from webrelease.operator.api import JobRefused
from webrelease.operator.conditions import Outcome, Reason, finished, invalid
from webrelease.operator.constants import (
    ANNOTATION_RETRY,
    LABEL_GENERATION,
)
from webrelease.operator.events import EventReason
from webrelease.operator.jobs import Step, build_job
from webrelease.operator.metrics import RunOutcome
from webrelease.operator.reconcile.context import SUPERSEDE_POLL, Context, Obj, Release, _call, write_status
from webrelease.operator.runs import (
    before_run_status,
    started_status,
)
from webrelease.operator.status import (
    SnapshotStatus,
)


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


async def _before_run(ctx: Context, rel: Release, reason: Reason, message: str) -> Release:
    """Say at once what this generation waits for (:func:`.runs.before_run_status`); the release
    as it now is."""
    new = before_run_status(
        rel.status, generation=rel.generation, reason=reason, message=message, now=ctx.now()
    )
    await write_status(ctx, rel, new)
    return replace(rel, status=new)
