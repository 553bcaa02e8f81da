"""The report document of a run: ``index.json``, one schema for both launchers.

``webrelease run`` and the operator write the same document (:class:`RunReport`, ``apiVersion``
``webrelease.dev/v1alpha1``, ``kind`` ``WebReleaseReport``) next to the run's files
(:mod:`webrelease.copier.runlayout`): the release and its run, the outcome and why, the counters,
every step with every shard (state, customers, attempts, duration, result file), and every
customer of the latest step that did not succeed with its reason (at most :data:`FAILED_MAX`;
``failedTotal`` says how many there were, the shards' JSON Lines have them all). The report page
(``report.html``) is made from this document alone.

A cluster run rewrites it when a step ends (``outcome`` null while the run goes on); a local run
writes it once at the end. Fields a launcher does not know are null (a local run has no Job and no
generation; a cluster run has no single exit code).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from typing import Final, Literal

from pydantic import AliasGenerator, BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from webrelease.copier.exitcodes import EXIT_BAD_INPUT, EXIT_CRASH, EXIT_OK
from webrelease.copier.results import ShardSummary
from webrelease.copier.spec import FailurePolicy

API_VERSION: Final = "webrelease.dev/v1alpha1"
KIND: Final = "WebReleaseReport"
#: Failed customers listed in full in ``index.json`` (beyond this, the shard files have them).
FAILED_MAX: Final = 100_000

Launcher = Literal["local", "cluster"]
ShardStateName = Literal["Pending", "Active", "Succeeded", "Failed"]

#: What a run's outcome and reason are called (the same words as the WebRelease's conditions).
COMPLETE: Final = "Complete"
DEGRADED: Final = "Degraded"
FAILED: Final = "Failed"
ALL_SUCCEEDED: Final = "AllCustomersSucceeded"
FAILURES_TOLERATED: Final = "FailuresTolerated"
TOO_MANY_FAILURES: Final = "TooManyCustomersFailed"
SHARDS_FAILED: Final = "ShardsFailed"
BAD_INPUT: Final = "BadInput"


class _Model(BaseModel):
    """camelCase on the wire; unknown fields ignored on read (a newer writer may add some)."""

    model_config = ConfigDict(
        populate_by_name=True,
        extra="ignore",
        alias_generator=AliasGenerator(validation_alias=to_camel, serialization_alias=to_camel),
    )


class Objects(_Model):
    copied: int = 0
    rendered: int = 0
    unchanged: int = 0
    deleted: int = 0
    bytes: int = 0


class Customers(_Model):
    total: int = 0
    succeeded: int = 0
    failed: int = 0
    pending: int = 0
    #: left out by a run that has ended (the rest after a failed canary, shards the Job stopped)
    not_released: int = 0


class Shards(_Model):
    total: int = 0
    succeeded: int = 0
    failed: int = 0
    active: int = 0
    pending: int = 0


class Snapshot(_Model):
    url: str
    sha256: str
    count: int


class ShardEntry(_Model):
    """One shard of a step."""

    index: int
    state: ShardStateName
    customers: int
    succeeded: int = 0
    failed: int = 0
    attempts: int = 0
    #: how long its final attempt took
    seconds: float | None = None
    #: why the whole shard failed (bad input, a crash, never ran)
    error: str | None = None
    objects: Objects | None = None
    #: its ``shards/<index>.jsonl``: one line per customer
    results: str


class StepEntry(_Model):
    """One step (one Job in a cluster, the whole run locally)."""

    step: str
    step_id: str
    job: str | None = None
    folder: str
    snapshot: Snapshot | None = None
    customers: int
    succeeded: int = 0
    failed: int = 0
    #: a dry run's plan (JSON Lines), instead of shards
    plan: str | None = None
    shards: list[ShardEntry] = []


class FailedEntry(_Model):
    id: str
    reason: str = ""
    shard: int | None = None


class RunReport(_Model):
    """``index.json``."""

    api_version: Literal["webrelease.dev/v1alpha1"] = API_VERSION
    kind: Literal["WebReleaseReport"] = KIND
    launcher: Launcher
    namespace: str
    release: str
    generation: int | None = None
    run_id: str
    source: str
    target: str
    dry_run: bool = False
    started_at: str | None = None
    updated_at: str
    #: set once the run has ended
    finished_at: str | None = None
    #: ``Complete``, ``Degraded``, ``Failed``; null while the run goes on
    outcome: str | None = None
    reason: str = ""
    message: str = ""
    #: the local run's exit code (null in a cluster: each shard has its own)
    exit_code: int | None = None
    snapshot: Snapshot | None = None
    customers: Customers = Customers()
    shards: Shards = Shards()
    objects: Objects = Objects()
    steps: list[StepEntry] = []
    failed: list[FailedEntry] = []
    #: every customer that did not succeed, also those beyond :data:`FAILED_MAX`
    failed_total: int = 0

    def to_bytes(self) -> bytes:
        doc = self.model_dump(mode="json", by_alias=True)
        return json.dumps(doc, indent=2, ensure_ascii=False).encode() + b"\n"

    @classmethod
    def from_bytes(cls, data: bytes | str) -> RunReport:
        return cls.model_validate_json(data)

    def with_step(self, step: StepEntry) -> list[StepEntry]:
        """The steps with ``step`` added (replacing an earlier entry of the same id)."""
        return [s for s in self.steps if s.step_id != step.step_id] + [step]


def shard_entry(summary: ShardSummary, results: str, customers: int) -> ShardEntry:
    """A shard of ``customers`` customers in a local run, from its summary (it ran once, to its
    end; one that could not run at all failed every customer)."""
    ok = summary.exit_code == EXIT_OK
    succeeded = min(summary.succeeded, customers) if summary.error is None else 0
    return ShardEntry(
        index=summary.index,
        state="Succeeded" if ok else "Failed",
        customers=customers,
        succeeded=succeeded,
        failed=customers - succeeded,
        attempts=1,
        seconds=summary.seconds,
        error=summary.error,
        objects=Objects.model_validate(summary.objects.model_dump()),
        results=results,
    )


def count_shards(entries: Iterable[ShardEntry]) -> Shards:
    out = Shards()
    for e in entries:
        out.total += 1
        if e.state == "Succeeded":
            out.succeeded += 1
        elif e.state == "Failed":
            out.failed += 1
        elif e.state == "Active":
            out.active += 1
        else:
            out.pending += 1
    return out


def sum_objects(entries: Iterable[Objects | None]) -> Objects:
    out = Objects()
    for o in entries:
        if o is not None:
            out.copied += o.copied
            out.rendered += o.rendered
            out.unchanged += o.unchanged
            out.deleted += o.deleted
            out.bytes += o.bytes
    return out


def tolerated_failures(policy: FailurePolicy, total: int) -> int:
    """How many failed customers of ``total`` still make the run Degraded rather than Failed."""
    tolerated = policy.tolerated_failed_customers
    if policy.tolerated_failed_percent is not None:
        tolerated = max(tolerated, math.floor(total * policy.tolerated_failed_percent / 100))
    return tolerated


def local_outcome(
    exit_code: int, customers: Customers, policy: FailurePolicy, shard_errors: Sequence[str]
) -> tuple[str, str, str]:
    """``(outcome, reason, message)`` of a local run, in the words a cluster run uses."""
    c = customers
    if exit_code == EXIT_OK:
        return COMPLETE, ALL_SUCCEEDED, f"{c.succeeded}/{c.total} customers succeeded"
    if exit_code in (EXIT_BAD_INPUT, EXIT_CRASH):
        why = BAD_INPUT if exit_code == EXIT_BAD_INPUT else SHARDS_FAILED
        first = f": {shard_errors[0]}" if shard_errors else ""
        return FAILED, why, f"{len(shard_errors)} shard(s) could not run{first}"
    tolerated = tolerated_failures(policy, c.total)
    message = f"{c.failed}/{c.total} customers failed (tolerated: {tolerated})"
    if c.failed <= tolerated:
        return DEGRADED, FAILURES_TOLERATED, message
    return FAILED, TOO_MANY_FAILURES, message
