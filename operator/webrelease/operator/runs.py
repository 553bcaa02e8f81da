"""Runs and steps: names, report folders, which customers go in which step, and the status a step
starts with. Pure.

A *run* is one generation of a WebRelease. It has one or more *steps*, each one Indexed Job:

- ``main`` (every customer);
- ``plan`` when ``dryRun``: the operator plans every customer itself, with read requests only, and
  writes the plan as the report (no Job: nothing that can write a site runs at all);
- ``canary`` then ``rest`` when ``canary`` is set (``rest`` only after every canary succeeded);
- ``retry-<n>``: the customers of the previous step that did not succeed, started by the retry
  annotation after the run ended.

Everything of a run goes to one report folder, laid out as :mod:`webrelease.copier.runlayout`
says (the same layout as ``webrelease run``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from webrelease.copier.runlayout import ShardPlan, cluster_run_id, plan_shards, step_folder_name
from webrelease.copier.spec import Canary, WebReleaseSpec
from webrelease.operator.aggregate import fold_step
from webrelease.operator.conditions import Reason, running
from webrelease.operator.status import (
    Carried,
    ReportRef,
    RunStatus,
    SnapshotStatus,
    StepKind,
    WebReleaseStatus,
)

Record = dict[str, Any]


def run_id(generation: int, uid: str) -> str:
    """The run id of a generation (:func:`webrelease.copier.runlayout.cluster_run_id`)."""
    return cluster_run_id(generation, uid)


def step_folder(kind: StepKind, retry_number: int = 0) -> str:
    return step_folder_name(kind.value, retry_number)


def step_id(generation: int, kind: StepKind, retry_number: int = 0) -> str:
    """``g3-main``, ``g3-canary``, ``g3-retry-2``: names the Job and labels its pods."""
    return f"g{generation}-{step_folder(kind, retry_number)}"


def first_step(spec: WebReleaseSpec) -> tuple[StepKind, bool]:
    """The first step of a run, and whether other customers wait for it (a canary)."""
    if spec.dry_run:
        return StepKind.PLAN, False
    if spec.canary is not None:
        return StepKind.CANARY, True
    return StepKind.MAIN, False


class CanaryError(ValueError):
    """``canary.ids`` names customers that are not in the list."""


def _spread(cid: str) -> str:
    return hashlib.sha256(cid.encode()).hexdigest()


def canary_ids(ids: Sequence[str], canary: Canary) -> frozenset[str]:
    """Which customers are canaries: the ``ids`` given (all must exist), or ``count`` of them
    chosen by a hash of their id (deterministic, spread over the list, stable as it grows)."""
    if canary.ids is not None:
        known = set(ids)
        missing = [c for c in canary.ids if c not in known]
        if missing:
            shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
            raise CanaryError(f"spec.canary.ids: not in the customer list: {shown}")
        return frozenset(canary.ids)
    assert canary.count is not None
    return frozenset(sorted(ids, key=_spread)[: canary.count])


def select(records: Iterable[Record], ids: frozenset[str], *, keep: bool = True) -> list[Record]:
    """The records whose id is (``keep``) or is not in ``ids``, in their order."""
    return [r for r in records if (str(r["id"]) in ids) == keep]


def not_succeeded(records: Iterable[Record], succeeded: frozenset[str]) -> list[Record]:
    """The records of a step that did not succeed: what a retry releases again."""
    return [r for r in records if str(r["id"]) not in succeeded]


@dataclass(frozen=True, slots=True)
class StepStart:
    """What is known when a step's Job is created."""

    generation: int
    kind: StepKind
    step_id: str
    job: str
    snapshot: SnapshotStatus
    plan: ShardPlan
    carried: Carried
    rest_pending: bool
    retry_token: str | None
    retries: int
    now: str


def plan_step(spec: WebReleaseSpec, customers: int) -> ShardPlan:
    return plan_shards(customers, spec.sharding.customers_per_shard, spec.sharding.parallelism)


def progress_message(step: StepKind, shards_done: int, shards: int, done: int, total: int) -> str:
    what = {StepKind.CANARY: "canary: ", StepKind.RETRY: "retry: ", StepKind.PLAN: "dry run: "}.get(step, "")
    return f"{what}{shards_done}/{shards} shards done, {done}/{total} customers"


_REASONS = {StepKind.CANARY: Reason.CANARY, StepKind.RETRY: Reason.RETRYING}


def started_status(
    previous: WebReleaseStatus,
    start: StepStart,
    *,
    total_customers: int,
    run_snapshot: SnapshotStatus,
    report_url: str,
    new_run: bool,
) -> WebReleaseStatus:
    """The status when a step's Job has just been created: its shards pending, earlier steps' results
    carried, Progressing. ``new_run`` starts the run's clock."""
    fold = fold_step(start.plan, total_customers=total_customers, carried=start.carried, pods=(), job=None)
    done = fold.customers.succeeded + fold.customers.failed
    message = progress_message(start.kind, 0, start.plan.shards, done, total_customers)
    if start.plan.note:
        message += f" ({start.plan.note})"
    conditions = running(
        previous.conditions,
        _REASONS.get(start.kind, Reason.RUNNING),
        message,
        generation=start.generation,
        now=start.now,
    )
    return previous.model_copy(
        update={
            "observed_generation": start.generation,
            "conditions": conditions,
            "progress": fold.progress,
            "start_time": start.now if new_run or previous.start_time is None else previous.start_time,
            "completion_time": None,
            "retry_token": start.retry_token,
            "run": RunStatus(
                generation=start.generation,
                step=start.kind,
                step_id=start.step_id,
                job=start.job,
                snapshot=start.snapshot,
                customers_per_shard=start.plan.size,
                shards=start.plan.shards,
                carried=start.carried,
                rest_pending=start.rest_pending,
                retries=start.retries,
                started=start.now,
            ),
            "customers": fold.customers,
            "shards": fold.shards,
            "objects": fold.objects,
            "shard_statuses": fold.shard_statuses,
            "shard_statuses_omitted": fold.shard_statuses_omitted,
            "failed_customers": fold.failed_customers,
            "snapshot": run_snapshot,
            # the index of an earlier step stays valid until this step's replaces it
            "report": ReportRef(url=report_url)
            if new_run or previous.report is None
            else ReportRef(url=report_url, index=previous.report.index, page=previous.report.page),
        }
    )
