"""``dryRun``: every customer planned in the operator with read requests only; no Job."""

from __future__ import annotations

from typing import Final

import kopf

from webrelease.copier.desired import BuildError
from webrelease.copier.dryrun import encode_plan, plan_release
from webrelease.copier.runreport import FailedEntry, StepEntry
from webrelease.copier.spec import WebReleaseSpec
from webrelease.copier.storage import Location
from webrelease.operator.aggregate import (
    decide,
    dry_run_fold,
    run_ended,
)
from webrelease.operator.conditions import Reason, finished
from webrelease.operator.constants import (
    ANNOTATION_RETRY,
)
from webrelease.operator.events import EventReason
from webrelease.operator.jobs import step_id
from webrelease.operator.reconcile.context import (
    _OUTCOME_EVENTS,
    _OUTCOME_METRIC,
    Context,
    Release,
    _call,
    write_status,
)
from webrelease.operator.reconcile.steps import _fail_run
from webrelease.operator.reports import (
    ReleaseStorage,
    index_document,
    page_url,
)
from webrelease.operator.runs import (
    run_id,
    step_folder,
)
from webrelease.operator.status import (
    ReportRef,
    RunStatus,
    SnapshotStatus,
    StepKind,
)

PLAN_NAME: Final = "plan.jsonl"


async def _dry_run(
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
    fold = dry_run_fold(planned, total=run_snapshot.count)
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
