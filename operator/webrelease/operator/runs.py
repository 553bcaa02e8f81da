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
from datetime import datetime, timedelta
from typing import Any, Final

from webrelease.copier.runlayout import cluster_run_id, step_folder_name
from webrelease.copier.spec import Canary, SpecError, WebReleaseSpec
from webrelease.operator.aggregate import fold_step
from webrelease.operator.conditions import Reason, running
from webrelease.operator.constants import MAX_RELEASE_NAME
from webrelease.operator.jobs import Step
from webrelease.operator.status import (
    MAX_CANARY_IDS,
    CanaryStatus,
    ReportRef,
    RunStatus,
    SnapshotStatus,
    StepKind,
    WebReleaseStatus,
)

Record = dict[str, Any]


NAME_FIELD = "metadata.name"


def check_release_name(name: str) -> None:
    """Raise SpecError unless every Job, pod and label made from ``name`` can exist (the CRD's CEL
    rule says the same at apply time; this catches objects made before it was installed)."""
    if len(name) > MAX_RELEASE_NAME:
        raise SpecError(
            NAME_FIELD,
            f"{len(name)} characters; at most {MAX_RELEASE_NAME}: the name is a label value on every "
            "Job and pod of the release. Use a shorter name.",
        )


def run_id(generation: int, uid: str) -> str:
    """The run id of a generation (:func:`webrelease.copier.runlayout.cluster_run_id`)."""
    return cluster_run_id(generation, uid)


def step_folder(kind: StepKind, retry_number: int = 0) -> str:
    return step_folder_name(kind.value, retry_number)


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


def canary_status(ids: frozenset[str]) -> CanaryStatus:
    """``status.canary``: how many, and the first ids in order."""
    return CanaryStatus(count=len(ids), ids=sorted(ids)[:MAX_CANARY_IDS])


def canary_covers_all(canary: Canary, customers: int) -> str:
    """What a run says when its canary would be every customer: there is no canary step."""
    asked = (
        f"spec.canary.count is {canary.count} and the customer list has {customers} customer(s)"
        if canary.count is not None
        else f"spec.canary.ids names every one of the list's {customers} customer(s)"
    )
    return f"{asked}: every customer would be a canary, so there is no canary step; all are released at once"


def select(records: Iterable[Record], ids: frozenset[str], *, keep: bool = True) -> list[Record]:
    """The records whose id is (``keep``) or is not in ``ids``, in their order."""
    return [r for r in records if (str(r["id"]) in ids) == keep]


def not_succeeded(records: Iterable[Record], succeeded: frozenset[str]) -> list[Record]:
    """The records of a step that did not succeed: what a retry releases again."""
    return [r for r in records if str(r["id"]) not in succeeded]


def progress_message(step: StepKind, shards_done: int, shards: int, done: int, total: int) -> str:
    what = {StepKind.CANARY: "canary: ", StepKind.RETRY: "retry: ", StepKind.PLAN: "dry run: "}.get(step, "")
    return f"{what}{shards_done}/{shards} shards done, {done}/{total} customers"


_REASONS = {StepKind.CANARY: Reason.CANARY, StepKind.RETRY: Reason.RETRYING}


def started_status(
    previous: WebReleaseStatus,
    step: Step,
    *,
    now: str,
    total_customers: int,
    run_snapshot: SnapshotStatus,
    report_url: str,
    new_run: bool,
) -> WebReleaseStatus:
    """The status when a step's Job has just been created: its shards pending, earlier steps' results
    carried, Progressing. ``new_run`` starts the run's clock."""
    fold = fold_step(step.layout, total_customers=total_customers, carried=step.carried, pods=(), job=None)
    done = fold.customers.succeeded + fold.customers.failed
    message = progress_message(step.kind, 0, step.layout.shards, done, total_customers)
    if step.layout.note:
        message += f" ({step.layout.note})"
    if step.note:
        message += f"; {step.note}"
    conditions = running(
        previous.conditions,
        _REASONS.get(step.kind, Reason.RUNNING),
        message,
        generation=step.generation,
        now=now,
    )
    run = RunStatus(
        generation=step.generation,
        step=step.kind,
        step_id=step.step_id,
        job=step.job,
        snapshot=step.snapshot,
        customers_per_shard=step.layout.size,
        shards=step.layout.shards,
        carried=step.carried,
        rest_pending=step.rest_pending,
        retries=step.retries,
        started=now,
    )
    # the index of an earlier step stays valid until this step's replaces it
    earlier = None if new_run else previous.report
    report = ReportRef(
        url=report_url,
        index=earlier.index if earlier is not None else None,
        page=earlier.page if earlier is not None else None,
    )
    return previous.started(
        run,
        fold,
        conditions,
        snapshot=run_snapshot,
        report=report,
        retry_token=step.retry_token,
        new_run=new_run,
        canary=step.canary if new_run else previous.canary,
    )


def before_run_status(
    previous: WebReleaseStatus, *, generation: int, reason: Reason, message: str, now: str
) -> WebReleaseStatus:
    """The status of a generation the operator has taken up but whose first Job does not exist yet
    (an old Job going away, the customer list being frozen, a Secret, ConfigMap or storage waited
    for): this generation observed, Progressing with ``reason`` and ``message``, no terminal
    condition true, and nothing of an earlier generation's run shown as if it were this one's.
    (``run`` stays: it names the earlier run until this one starts.)"""
    conditions = running(previous.conditions, reason, message, generation=generation, now=now)
    return previous.before_run(generation, conditions)


#: Longest pause between two looks at something a run waits for (a Secret, a ConfigMap, storage).
MAX_RETRY_DELAY: Final = 10.0


def retry_delay(retry: int) -> float:
    """Seconds before the next look: 1, 2, 3 ... then every :data:`MAX_RETRY_DELAY` seconds, so a
    Secret created while the run waits is found within seconds."""
    return min(MAX_RETRY_DELAY, 1.0 + retry)


def waiting_message(problem: str, *, now: str, waited: float, wait_seconds: float) -> str:
    """What a waiting run says: the problem, that it resumes by itself, and when it gives up."""
    start = datetime.fromisoformat(now.replace("Z", "+00:00")) - timedelta(seconds=round(waited))
    deadline = (start + timedelta(seconds=wait_seconds)).isoformat(timespec="seconds").replace("+00:00", "Z")
    return (
        f"{problem}; waiting for it: the run starts by itself within {MAX_RETRY_DELAY:g} s of it being "
        f"there; gives up at {deadline}"
    )


def describe_source(spec: WebReleaseSpec) -> str:
    """The customer source, in a few words."""
    c = spec.customers
    if c.url is not None:
        return c.url
    if c.config_map_ref is not None:
        return f"ConfigMap {c.config_map_ref.name}, key {c.config_map_ref.key}"
    if c.sql is not None:
        return f"SQL, Secret {c.sql.secret_ref.name}"
    return f"{len(c.inline or [])} inline records"
