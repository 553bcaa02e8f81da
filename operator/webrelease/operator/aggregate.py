"""Fold what the cluster says about a step's pods and Job into status, and decide how it ended. Pure.

Inputs are plain API objects (dicts as the Kubernetes API returns them), read with
:func:`pod_attempt` and :func:`job_view`; the result of :func:`fold_step` is everything status
says about the step, bounded in size (see :mod:`.status`).

How a shard's state is read (one shard = one Job index; one pod = one attempt):

- ``Succeeded``: the Job lists the index as completed, or one of its pods succeeded;
- ``Failed``: the Job lists the index as failed (retries used up, or bad input), or the Job has
  ended without the index succeeding (it stopped after too many failed shards);
- ``Active``: a pod of the index is pending or running, or an attempt failed and the Job will retry;
- ``Pending``: no pod yet.

Customer counts come from the termination summary of a shard's final attempt (exit 0 means every
customer of the shard succeeded even if the summary is missing; a failed shard without a usable
summary counts all its customers as failed). While a shard is active its customers are pending:
a customer is counted once, when its shard's outcome is final.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from pydantic import ValidationError

from webrelease.copier.exitcodes import EXIT_BAD_INPUT, EXIT_OK
from webrelease.copier.plan import Op
from webrelease.copier.results import ShardSummary, parse_summary
from webrelease.copier.runlayout import ShardLayout
from webrelease.copier.runreport import tolerated_failures
from webrelease.copier.spec import FailurePolicy
from webrelease.operator.conditions import Outcome, Reason
from webrelease.operator.constants import CONTAINER_NAME, JOB_INDEX_ANNOTATION
from webrelease.operator.status import (
    MAX_FAILED_IDS_PER_SHARD,
    MAX_FAILED_SAMPLE,
    MAX_REASON_CHARS,
    MAX_SHARD_ENTRIES,
    MAX_SHARD_FAILED_IDS,
    SHARD_ENTRIES_BUDGET,
    Carried,
    CustomerCounts,
    FailedCustomer,
    FailedCustomers,
    ObjectTotals,
    ShardCounts,
    ShardState,
    ShardStatus,
    StepKind,
    truncate,
)

#: Shard-level errors named in a condition message.
MAX_ERRORS_IN_MESSAGE: Final = 3
_TERMINAL_PHASES: Final = frozenset({"Succeeded", "Failed"})


# ------------------------------------------------------------------------------------- reading


@dataclass(frozen=True, slots=True)
class PodAttempt:
    """One pod of a step's Job: one attempt of one shard."""

    name: str
    index: int
    created: str
    phase: str
    exit_code: int | None = None
    #: the container's terminated reason (``Completed``, ``Error``, ``OOMKilled``, ...) or the pod's
    reason: str | None = None
    summary: ShardSummary | None = None
    #: why the termination message is not a usable summary (when there is one)
    message_error: str | None = None
    started_at: str | None = None
    finished_at: str | None = None

    @property
    def terminal(self) -> bool:
        return self.phase in _TERMINAL_PHASES


def _container_state(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    for cs in pod.get("status", {}).get("containerStatuses") or []:
        if cs.get("name") == CONTAINER_NAME:
            state: Mapping[str, Any] = cs.get("state") or {}
            return state
    return {}


def pod_attempt(pod: Mapping[str, Any]) -> PodAttempt | None:
    """What one pod says, or None if it is not a pod of an Indexed Job."""
    meta = pod.get("metadata") or {}
    raw_index = (meta.get("annotations") or {}).get(JOB_INDEX_ANNOTATION)
    if raw_index is None:
        raw_index = (meta.get("labels") or {}).get(JOB_INDEX_ANNOTATION)
    if raw_index is None:
        return None
    try:
        index = int(str(raw_index))
    except ValueError:
        return None
    status = pod.get("status") or {}
    state = _container_state(pod)
    terminated = state.get("terminated") or {}
    running = state.get("running") or {}
    summary: ShardSummary | None = None
    message_error: str | None = None
    message = terminated.get("message")
    if message:
        try:
            summary = parse_summary(message)
        except (ValidationError, ValueError) as exc:
            message_error = f"the termination message is not a shard summary ({type(exc).__name__})"
        if summary is not None and summary.index != index:
            message_error = f"the termination message is the summary of shard {summary.index}, not {index}"
            summary = None
    exit_code = terminated.get("exitCode")
    return PodAttempt(
        name=str(meta.get("name", "")),
        index=index,
        created=str(meta.get("creationTimestamp") or ""),
        phase=str(status.get("phase") or "Pending"),
        exit_code=int(exit_code) if exit_code is not None else None,
        reason=terminated.get("reason") or status.get("reason"),
        summary=summary,
        message_error=message_error,
        started_at=terminated.get("startedAt") or running.get("startedAt"),
        finished_at=terminated.get("finishedAt"),
    )


def parse_indexes(text: str | None) -> frozenset[int]:
    """``"1,3-5,7"`` (the Job's ``completedIndexes`` / ``failedIndexes``) as a set."""
    out: set[int] = set()
    for raw in (text or "").split(","):
        part = raw.strip()
        if not part:
            continue
        lo, _, hi = part.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return frozenset(out)


@dataclass(frozen=True, slots=True)
class JobView:
    """What a step's Job says: which indexes are done, and whether it has ended."""

    completed: frozenset[int] = frozenset()
    failed: frozenset[int] = frozenset()
    finished: bool = False
    failed_job: bool = False
    reason: str = ""
    message: str = ""


def job_view(job: Mapping[str, Any]) -> JobView:
    status = job.get("status") or {}
    finished = failed_job = False
    reason = message = ""
    for cond in status.get("conditions") or []:
        if cond.get("status") != "True":
            continue
        if cond.get("type") == "Complete":
            finished = True
        elif cond.get("type") == "Failed":
            finished = failed_job = True
            reason, message = str(cond.get("reason") or ""), str(cond.get("message") or "")
    return JobView(
        completed=parse_indexes(status.get("completedIndexes")),
        failed=parse_indexes(status.get("failedIndexes")),
        finished=finished,
        failed_job=failed_job,
        reason=reason,
        message=message,
    )


# ------------------------------------------------------------------------------------- shards


@dataclass(frozen=True, slots=True)
class Sample:
    id: str
    reason: str


@dataclass(frozen=True, slots=True)
class ShardView:
    """One shard, folded from its attempts and the Job."""

    index: int
    state: ShardState
    customers: int
    succeeded: int = 0
    failed: int = 0
    attempts: int = 0
    duration_seconds: int | None = None
    failed_sample: tuple[Sample, ...] = ()
    #: why the whole shard failed (bad input, a crash, never ran)
    error: str | None = None
    objects: ObjectTotals = field(default_factory=ObjectTotals)
    summary: ShardSummary | None = None

    @property
    def final(self) -> bool:
        return self.state in (ShardState.SUCCEEDED, ShardState.FAILED)


def _seconds(start: str | None, end: str | None) -> int | None:
    if not start or not end:
        return None
    try:
        delta = datetime.fromisoformat(end.replace("Z", "+00:00")) - datetime.fromisoformat(
            start.replace("Z", "+00:00")
        )
    except ValueError:
        return None
    return max(0, round(delta.total_seconds()))


def _duration(attempt: PodAttempt) -> int | None:
    if attempt.summary is not None and attempt.summary.seconds:
        return max(0, round(attempt.summary.seconds))
    return _seconds(attempt.started_at, attempt.finished_at)


def _objects(summary: ShardSummary | None) -> ObjectTotals:
    if summary is None:
        return ObjectTotals()
    return ObjectTotals.model_validate(summary.objects.model_dump())


def _written(attempts: Sequence[PodAttempt], final: ShardSummary | None) -> ObjectTotals:
    """What every attempt of a shard wrote (an attempt that failed half-way wrote something too),
    and what its final attempt found unchanged."""
    copied = rendered = deleted = written = 0
    for attempt in attempts:
        o = _objects(attempt.summary)
        copied, rendered, deleted, written = (
            copied + o.copied,
            rendered + o.rendered,
            deleted + o.deleted,
            written + o.bytes,
        )
    return ObjectTotals(
        copied=copied, rendered=rendered, unchanged=_objects(final).unchanged, deleted=deleted, bytes=written
    )


def _attempt_error(attempt: PodAttempt) -> str:
    if attempt.summary is not None and attempt.summary.error:
        kind = "bad input" if attempt.summary.exit_code == EXIT_BAD_INPUT else "error"
        return f"{kind}: {attempt.summary.error}"
    parts = [f"exit code {attempt.exit_code}" if attempt.exit_code is not None else "no exit code"]
    if attempt.reason:
        parts.append(attempt.reason)
    if attempt.message_error:
        parts.append(attempt.message_error)
    if attempt.reason == "OOMKilled":
        # the kernel killed it at its memory limit: say so in words, and what to change
        return (
            "out of memory: the shard pod was killed at its memory limit (" + ", ".join(parts) + "); "
            "raise spec.worker.resources.limits.memory"
        )
    return "shard pod failed (" + ", ".join(parts) + ")"


def shard_view(index: int, customers: int, attempts: Sequence[PodAttempt], job: JobView | None) -> ShardView:
    """The state of shard ``index`` (``customers`` customers) from its pods and the Job."""
    ordered = sorted(attempts, key=lambda a: (a.created, a.name))
    n = len(ordered)
    succeeded_pod = next((a for a in reversed(ordered) if a.phase == "Succeeded"), None)
    last_done = next((a for a in reversed(ordered) if a.terminal), None)
    running = any(not a.terminal for a in ordered)
    completed = job is not None and index in job.completed
    if succeeded_pod is not None or completed:
        summary = succeeded_pod.summary if succeeded_pod is not None else None
        ok = summary.succeeded if summary is not None and summary.exit_code == EXIT_OK else customers
        return ShardView(
            index,
            ShardState.SUCCEEDED,
            customers,
            succeeded=min(ok, customers),
            failed=customers - min(ok, customers),
            attempts=n,
            duration_seconds=_duration(succeeded_pod) if succeeded_pod is not None else None,
            objects=_written(ordered, summary),
            summary=summary,
        )
    failed_index = job is not None and index in job.failed
    job_over = job is not None and job.finished
    if failed_index or (job_over and not running):
        if last_done is None:
            why = "did not run: the Job stopped"
            if job is not None and job.reason:
                why += f" ({job.reason})"
            return ShardView(index, ShardState.FAILED, customers, failed=customers, attempts=n, error=why)
        summary = last_done.summary
        usable = summary is not None and summary.error is None and summary.customers == customers
        if usable and summary is not None:
            ok = min(summary.succeeded, customers)
            sample = tuple(Sample(s.id, s.reason) for s in summary.failed_sample)
            error = None if summary.failed else _attempt_error(last_done)
        else:
            ok = 0
            sample = ()
            error = _attempt_error(last_done)
        return ShardView(
            index,
            ShardState.FAILED,
            customers,
            succeeded=ok,
            failed=customers - ok,
            attempts=n,
            duration_seconds=_duration(last_done),
            failed_sample=sample,
            error=error,
            objects=_written(ordered, summary),
            summary=summary,
        )
    if n:
        return ShardView(index, ShardState.ACTIVE, customers, attempts=n)
    return ShardView(index, ShardState.PENDING, customers)


# --------------------------------------------------------------------------------------- step


@dataclass(frozen=True, slots=True)
class StepFold:
    """Everything status says about a step at one moment."""

    customers: CustomerCounts
    shards: ShardCounts
    objects: ObjectTotals
    shard_statuses: list[ShardStatus]
    shard_statuses_omitted: int
    failed_customers: FailedCustomers
    progress: str
    #: the Job has ended: every shard is Succeeded or Failed
    finished: bool
    #: customers of this step that did not succeed (failed, or never ran)
    step_failed: int
    step_succeeded: int
    errors: tuple[str, ...]
    views: tuple[ShardView, ...]


def _add(a: ObjectTotals, b: ObjectTotals) -> ObjectTotals:
    return ObjectTotals(
        copied=a.copied + b.copied,
        rendered=a.rendered + b.rendered,
        unchanged=a.unchanged + b.unchanged,
        deleted=a.deleted + b.deleted,
        bytes=a.bytes + b.bytes,
    )


_PRIORITY: Final = {
    ShardState.FAILED: 0,
    ShardState.ACTIVE: 1,
    ShardState.PENDING: 2,
    ShardState.SUCCEEDED: 3,
}


def _entries(views: Sequence[ShardView]) -> tuple[list[ShardStatus], int]:
    """Per-shard entries, the most interesting first, within the count and byte budgets."""
    ids_left = MAX_SHARD_FAILED_IDS
    bytes_left = SHARD_ENTRIES_BUDGET
    chosen: list[ShardStatus] = []
    for v in sorted(views, key=lambda v: (_PRIORITY[v.state], v.index)):
        if len(chosen) == MAX_SHARD_ENTRIES:
            break
        ids = [s.id for s in v.failed_sample[: min(MAX_FAILED_IDS_PER_SHARD, ids_left)]]
        entry = ShardStatus(
            index=v.index,
            state=v.state,
            customers=v.customers,
            succeeded=v.succeeded,
            failed=v.failed,
            attempts=v.attempts,
            seconds=v.duration_seconds,
            failed_ids=ids,
        )
        size = len(json.dumps(entry.to_k8s(), separators=(",", ":"))) + 1
        if size > bytes_left:
            break
        bytes_left -= size
        ids_left -= len(ids)
        chosen.append(entry)
    chosen.sort(key=lambda e: e.index)
    return chosen, len(views) - len(chosen)


def fold_step(
    layout: ShardLayout,
    *,
    total_customers: int,
    carried: Carried,
    pods: Iterable[PodAttempt],
    job: JobView | None,
) -> StepFold:
    """Status of a step of ``layout.shards`` shards, given its pods and its Job (None: not seen yet)."""
    by_index: dict[int, list[PodAttempt]] = {}
    for p in pods:
        if 0 <= p.index < layout.shards:
            by_index.setdefault(p.index, []).append(p)
    views = tuple(
        shard_view(i, layout.customers_in(i), by_index.get(i, ()), job) for i in range(layout.shards)
    )
    step_ok = sum(v.succeeded for v in views if v.final)
    step_failed = sum(v.failed for v in views if v.final)
    succeeded = carried.succeeded + step_ok
    failed = step_failed
    pending = max(0, total_customers - succeeded - failed)
    objects = carried.objects
    for v in views:
        objects = _add(objects, v.objects)
    shards = ShardCounts(
        total=layout.shards,
        succeeded=sum(v.state == ShardState.SUCCEEDED for v in views),
        failed=sum(v.state == ShardState.FAILED for v in views),
        active=sum(v.state == ShardState.ACTIVE for v in views),
        pending=sum(v.state == ShardState.PENDING for v in views),
    )
    sample: list[FailedCustomer] = []
    for v in views:
        if v.state != ShardState.FAILED:
            continue
        for s in v.failed_sample:
            if len(sample) < MAX_FAILED_SAMPLE:
                sample.append(
                    FailedCustomer(id=s.id, reason=truncate(s.reason, MAX_REASON_CHARS), shard=v.index)
                )
    errors = tuple(f"shard {v.index}: {v.error}" for v in views if v.state == ShardState.FAILED and v.error)
    entries, omitted = _entries(views)
    return StepFold(
        customers=CustomerCounts(total=total_customers, succeeded=succeeded, failed=failed, pending=pending),
        shards=shards,
        objects=objects,
        shard_statuses=entries,
        shard_statuses_omitted=omitted,
        failed_customers=FailedCustomers(total=failed, sample=sample),
        progress=f"{succeeded + failed}/{total_customers}",
        finished=all(v.final for v in views),
        step_failed=step_failed,
        step_succeeded=step_ok,
        errors=errors,
        views=views,
    )


def run_ended(counts: CustomerCounts) -> CustomerCounts:
    """The counts of a run that has ended: nobody is pending any more; who was is not released."""
    return CustomerCounts(
        total=counts.total,
        succeeded=counts.succeeded,
        failed=counts.failed,
        pending=0,
        not_released=counts.not_released + counts.pending,
    )


def dry_run_fold(planned: Sequence[Any], *, total: int) -> StepFold:
    """A dry run as a finished step: customers whose plan could be made succeeded; objects are
    what a release would write (copy, render, override), leave unchanged and delete.
    ``planned``: the copier's ``PlannedCustomer`` list."""
    ok = [p for p in planned if p.plan is not None]
    bad = [p for p in planned if p.plan is None]
    objects = ObjectTotals(
        copied=sum(p.plan.count(Op.COPY) + p.plan.count(Op.OVERRIDE) for p in ok),
        rendered=sum(p.plan.count(Op.RENDER) for p in ok),
        unchanged=sum(p.plan.count(Op.UNCHANGED) for p in ok),
        deleted=sum(p.plan.count(Op.DELETE) for p in ok),
        bytes=sum(p.plan.bytes_to_write for p in ok),
    )
    sample = [
        FailedCustomer(id=p.id, reason=truncate(p.error or "", MAX_REASON_CHARS))
        for p in bad[:MAX_FAILED_SAMPLE]
    ]
    return StepFold(
        customers=CustomerCounts(
            total=total, succeeded=len(ok), failed=len(bad), pending=max(0, total - len(planned))
        ),
        shards=ShardCounts(),
        objects=objects,
        shard_statuses=[],
        shard_statuses_omitted=0,
        failed_customers=FailedCustomers(total=len(bad), sample=sample),
        progress=f"{len(planned)}/{total}",
        finished=True,
        step_failed=len(bad),
        step_succeeded=len(ok),
        errors=(),
        views=(),
    )


# ------------------------------------------------------------------------------------ outcome


@dataclass(frozen=True, slots=True)
class Decision:
    """What follows a finished step: another step (``next_step``), or the run's ``outcome``."""

    next_step: StepKind | None
    outcome: Outcome | None
    reason: Reason
    message: str


def _failed_message(fold: StepFold, tolerated: int | None) -> str:
    c = fold.customers
    text = f"{c.succeeded}/{c.total} customers succeeded, {c.failed} failed"
    if c.pending:
        text += f", {c.pending} not released"
    if tolerated is not None:
        text += f" (tolerated: {tolerated})"
    ids = [f.id for f in fold.failed_customers.sample[:5]]
    if ids:
        more = c.failed - len(ids)
        text += ": " + ", ".join(ids) + (f" and {more} more" if more > 0 else "")
    if fold.errors:
        text += "; " + "; ".join(fold.errors[:MAX_ERRORS_IN_MESSAGE])
        if len(fold.errors) > MAX_ERRORS_IN_MESSAGE:
            text += f"; and {len(fold.errors) - MAX_ERRORS_IN_MESSAGE} more failed shard(s)"
    return text


def decide(step: StepKind, fold: StepFold, *, rest_pending: bool, policy: FailurePolicy) -> Decision:
    """The outcome of a finished step (``failurePolicy`` and ``canary``: docs/operator.md "A run")."""
    c = fold.customers
    if rest_pending:
        # the canary (or a retry of it): every canary must succeed before the rest is released
        if fold.step_failed == 0:
            return Decision(
                StepKind.REST, None, Reason.RUNNING, f"{fold.step_succeeded} canary customers succeeded"
            )
        canaries = fold.step_failed + fold.step_succeeded
        message = (
            f"canary: {fold.step_failed} of {canaries} canary customers failed; "
            f"the other {c.pending} customers were not released. " + _failed_message(fold, None)
        )
        return Decision(None, Outcome.FAILED, Reason.CANARY_FAILED, message)
    failures = c.failed + c.pending
    if failures == 0:
        reason = Reason.DRY_RUN_COMPLETE if step == StepKind.PLAN else Reason.ALL_SUCCEEDED
        what = "planned" if step == StepKind.PLAN else "succeeded"
        return Decision(None, Outcome.COMPLETE, reason, f"{c.succeeded}/{c.total} customers {what}")
    tolerated = tolerated_failures(policy, c.total)
    if failures <= tolerated:
        return Decision(None, Outcome.DEGRADED, Reason.FAILURES_TOLERATED, _failed_message(fold, tolerated))
    return Decision(None, Outcome.FAILED, Reason.TOO_MANY_FAILURES, _failed_message(fold, tolerated))
