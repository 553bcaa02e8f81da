"""``status`` of a WebRelease: pydantic models, bounded at any customer count
(docs/design.md "The status contract").

These models are the single source of the status schema in the CRD (:mod:`.crd`) and of what the
operator writes. Everything that grows with the number of customers is capped here:

- per-shard entries (:class:`ShardStatus`) are compact (default values are left out when
  written); at most :data:`MAX_SHARD_ENTRIES` of them, and at most
  :data:`SHARD_ENTRIES_BUDGET` bytes, are kept (failed, active and pending shards first), the
  others only counted (``shardStatusesOmitted``);
- each shard names at most :data:`MAX_FAILED_IDS_PER_SHARD` failed customers, and all shards
  together at most :data:`MAX_SHARD_FAILED_IDS`;
- failed customers are a sample of :data:`MAX_FAILED_SAMPLE` ids with reasons, plus the total;
- messages and reasons are truncated.

The full per-customer results live in the report location (``status.report.url``).
``tests/unit/test_status_size.py`` measures a 2,000-shard object against the 256 KiB budget.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import Annotated, Any, Final, Literal, Protocol, TypedDict, Unpack

from pydantic import AliasGenerator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from webrelease.copier.spec import CUSTOMER_ID_PATTERN

#: Per-shard entries kept in status; beyond this the least interesting are left out (and counted).
MAX_SHARD_ENTRIES: Final = 2000
#: Bytes (compact JSON) all per-shard entries together may take: 2,000 typical entries fit.
SHARD_ENTRIES_BUDGET: Final = 160 * 1024
#: Failed customer ids named in one shard's entry.
MAX_FAILED_IDS_PER_SHARD: Final = 3
#: Failed customer ids named across all shard entries together.
MAX_SHARD_FAILED_IDS: Final = 200
#: Failed customers (with reasons) in ``status.failedCustomers.sample``.
MAX_FAILED_SAMPLE: Final = 20
#: Canary customer ids listed in ``status.canary.ids``.
MAX_CANARY_IDS: Final = 20
#: Longest reason kept for one failed customer.
MAX_REASON_CHARS: Final = 200
#: Longest condition message.
MAX_MESSAGE_CHARS: Final = 1024


def truncate(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, with an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


class StatusModel(BaseModel):
    """Base of the status models: frozen, camelCase on the wire, unknown fields ignored on read
    (a newer operator may have written fields this one does not know)."""

    model_config = ConfigDict(
        frozen=True,
        extra="ignore",
        populate_by_name=True,
        alias_generator=AliasGenerator(validation_alias=to_camel, serialization_alias=to_camel),
        # the string under each field is its description in the CRD (`kubectl explain`)
        use_attribute_docstrings=True,
    )


NonNegative = Annotated[int, Field(ge=0)]
CustomerId = Annotated[str, Field(pattern=CUSTOMER_ID_PATTERN, max_length=63)]


class ConditionType(StrEnum):
    """The condition types of a WebRelease."""

    #: The spec is valid (``False``: it is not; the message names the field).
    ACCEPTED = "Accepted"
    #: A run is going (``False`` when it has ended; its reason is then the outcome).
    PROGRESSING = "Progressing"
    #: The run of the current generation released every customer.
    COMPLETE = "Complete"
    #: The run ended with failed customers, within ``failurePolicy`` tolerance.
    DEGRADED = "Degraded"
    #: The run ended with more failures than tolerated, or could not run (bad spec, bad list).
    FAILED = "Failed"


class Condition(StatusModel):
    """One condition, shaped like ``metav1.Condition``."""

    type: ConditionType
    """Accepted, Progressing, Complete, Degraded or Failed."""
    status: Literal["True", "False", "Unknown"]
    """Whether the condition holds."""
    reason: Annotated[
        str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
    ]
    """Why, in one CamelCase word (e.g. `SecretNotFound`, `CanaryFailed`)."""
    message: Annotated[str, Field(max_length=MAX_MESSAGE_CHARS)] = ""
    """What happened, for a human: names the field, object or customers concerned."""
    last_transition_time: Annotated[str, Field(description="RFC 3339 time the status last changed.")]
    observed_generation: NonNegative | None = None
    """The generation this condition describes."""


class CustomerCounts(StatusModel):
    """Customers of the current generation's run: every customer is in exactly one of
    succeeded, failed, pending or notReleased."""

    total: NonNegative = 0
    """Customers of the run."""
    succeeded: NonNegative = 0
    """Released, and checked by their shard."""
    failed: NonNegative = 0
    """Failed; the report names each with its reason."""
    pending: Annotated[int, Field(ge=0, description="Still to be released by the run that is going.")] = 0
    not_released: Annotated[
        int,
        Field(
            ge=0,
            description="Left out by a run that has ended (the rest after a failed canary, shards "
            "the Job stopped): a retry releases them.",
        ),
    ] = 0


class ShardCounts(StatusModel):
    """Shards (Job indexes) of the current step's Job."""

    total: NonNegative = 0
    """Shards of the step."""
    succeeded: NonNegative = 0
    """Ended with every customer released."""
    failed: NonNegative = 0
    """Ended with failed customers, or could not run."""
    active: NonNegative = 0
    """A pod is running, or a retry of it is coming."""
    pending: NonNegative = 0
    """Not started yet."""


class ObjectTotals(StatusModel):
    """Objects of the run's sites, summed over shards and every attempt of each (``unchanged``:
    what each shard's final attempt found already right)."""

    copied: NonNegative = 0
    """Build or override files copied to a site."""
    rendered: NonNegative = 0
    """Template files rendered for a customer and written."""
    unchanged: NonNegative = 0
    """Objects already right, not written."""
    deleted: NonNegative = 0
    """Objects removed from sites (`prune`)."""
    bytes: Annotated[int, Field(ge=0, description="Bytes written (copied server-side or uploaded).")] = 0


class ShardState(StrEnum):
    PENDING = "Pending"
    ACTIVE = "Active"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class ShardStatus(StatusModel):
    """One shard (Job index) of the current step. Written compactly: zero counts, one attempt,
    an empty ``failedIds`` and an unknown duration are left out."""

    index: NonNegative
    """The Job index."""
    state: ShardState
    """Pending, Active, Succeeded or Failed."""
    customers: NonNegative
    """Customers of the shard."""
    succeeded: NonNegative = 0
    """Of them released (0 when left out)."""
    failed: NonNegative = 0
    """Of them failed (0 when left out)."""
    attempts: Annotated[int, Field(ge=0, description="Pods started for this shard (1 when left out).")] = 1
    seconds: Annotated[int, Field(ge=0, description="How long its final attempt took.")] | None = None
    failed_ids: Annotated[list[CustomerId], Field(max_length=MAX_FAILED_IDS_PER_SHARD)] = []
    """Up to 3 of its failed customers."""

    def to_k8s(self) -> dict[str, Any]:
        out: dict[str, Any] = {"index": self.index, "state": self.state.value, "customers": self.customers}
        if self.succeeded:
            out["succeeded"] = self.succeeded
        if self.failed:
            out["failed"] = self.failed
        if self.attempts != 1:
            out["attempts"] = self.attempts
        if self.seconds is not None:
            out["seconds"] = self.seconds
        if self.failed_ids:
            out["failedIds"] = list(self.failed_ids)
        return out


class FailedCustomer(StatusModel):
    """A customer that did not get the release."""

    id: CustomerId
    """The customer's id."""
    reason: Annotated[str, Field(max_length=MAX_REASON_CHARS)] = ""
    """Why (cut to 200 characters; the report has it whole)."""
    shard: NonNegative | None = None
    """Its shard."""


class FailedCustomers(StatusModel):
    """Customers that did not get the release: how many, and a sample with reasons. The full
    list is in the report."""

    total: NonNegative = 0
    """How many customers failed."""
    sample: Annotated[list[FailedCustomer], Field(max_length=MAX_FAILED_SAMPLE)] = []
    """Up to 20 of them, with reasons."""


class SnapshotStatus(StatusModel):
    """A frozen customer list in the report location."""

    url: Annotated[str, Field(max_length=2048)]
    """Where the list is (JSON lines, sorted by id)."""
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    """The sha256 of its bytes: every shard checks it."""
    count: NonNegative
    """Customers in it."""


class ReportRef(StatusModel):
    """Where the run's report is: ``url`` is the run's folder, ``index`` its ``index.json``,
    ``page`` its ``report.html`` (both once a step has ended)."""

    url: Annotated[str, Field(max_length=2048)]
    """The run's report folder."""
    index: Annotated[str, Field(max_length=2048)] | None = None
    """Its `index.json` (every step, shard and failed customer), once a step has ended."""
    page: Annotated[str, Field(max_length=2048)] | None = None
    """Its `report.html`, a page for a browser."""


class StepKind(StrEnum):
    """What a step (one Job) of a run does."""

    #: Every customer (no canary).
    MAIN = "main"
    #: The canary customers, first.
    CANARY = "canary"
    #: The customers that were not canaries, after every canary succeeded.
    REST = "rest"
    #: The customers of the previous step that did not succeed (the retry annotation).
    RETRY = "retry"
    #: ``dryRun``: every customer's plan, no writes.
    PLAN = "plan"


class Carried(StatusModel):
    """What earlier steps of this run achieved for customers that are not in the current step."""

    succeeded: NonNegative = 0
    """Customers released by earlier steps."""
    objects: ObjectTotals = ObjectTotals()
    """What earlier steps wrote."""


class RunStatus(StatusModel):
    """The current run (one generation) and its current step (one Job)."""

    generation: Annotated[int, Field(ge=1)]
    """The generation of the run."""
    step: StepKind
    """main, canary, rest, retry or plan (a dry run)."""
    step_id: Annotated[
        str, Field(max_length=63, description="Unique id of the step; names its report folder.")
    ]
    job: Annotated[str, Field(max_length=63, description="The step's Job (empty for a dry run: no Job).")]
    snapshot: SnapshotStatus = Field(description="The customers of this step.")
    customers_per_shard: Annotated[int, Field(ge=1)]
    """Customers per shard of this step."""
    shards: NonNegative
    """Shards (Job indexes) of this step."""
    carried: Carried = Carried()
    """What earlier steps of the run achieved."""
    rest_pending: bool = False
    """The other customers follow once every canary succeeded."""
    retries: NonNegative = 0
    """Retries of the run so far."""
    started: Annotated[str, Field(description="RFC 3339 time this step's Job was created.")] | None = None


class CanaryStatus(StatusModel):
    """Which customers were the canary of the current run (the first 20 ids)."""

    count: NonNegative
    """How many customers were the canary."""
    ids: Annotated[list[CustomerId], Field(max_length=MAX_CANARY_IDS)] = []
    """Their ids, in order (the first 20)."""


class StatusChange(TypedDict, total=False):
    """Fields of :class:`WebReleaseStatus` a transition may set, with their types: mypy checks every
    change's names and values (``tests/unit/test_status_transitions.py`` keeps this in step with
    the model)."""

    observed_generation: int | None
    conditions: list[Condition]
    progress: str | None
    start_time: str | None
    completion_time: str | None
    run: RunStatus | None
    retry_token: str | None
    customers: CustomerCounts
    shards: ShardCounts
    objects: ObjectTotals
    shard_statuses: list[ShardStatus]
    shard_statuses_omitted: int
    failed_customers: FailedCustomers
    snapshot: SnapshotStatus | None
    report: ReportRef | None
    canary: CanaryStatus | None


class Folded(Protocol):
    """What a fold of a step's pods says (``aggregate.StepFold`` is one)."""

    @property
    def progress(self) -> str: ...
    @property
    def customers(self) -> CustomerCounts: ...
    @property
    def shards(self) -> ShardCounts: ...
    @property
    def objects(self) -> ObjectTotals: ...
    @property
    def shard_statuses(self) -> Sequence[ShardStatus]: ...
    @property
    def shard_statuses_omitted(self) -> int: ...
    @property
    def failed_customers(self) -> FailedCustomers: ...


class WebReleaseStatus(StatusModel):
    """``status`` of a WebRelease."""

    observed_generation: NonNegative | None = None
    """The generation this status describes; less than `metadata.generation`: not taken up yet."""
    conditions: Annotated[
        list[Condition],
        Field(
            max_length=8,
            json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
        ),
    ] = []
    """Accepted, Progressing, Complete, Degraded, Failed; the first true one says what is going on."""
    progress: (
        Annotated[str, Field(max_length=64, description="Customers done/total, for kubectl get.")] | None
    ) = None
    start_time: str | None = None
    """RFC 3339 time the run's first Job was created."""
    completion_time: str | None = None
    """RFC 3339 time the run ended."""
    run: RunStatus | None = None
    retry_token: Annotated[str, Field(max_length=253)] | None = Field(
        default=None, description="The last webrelease.dev/retry annotation value acted on."
    )
    customers: CustomerCounts = CustomerCounts()
    shards: ShardCounts = ShardCounts()
    objects: ObjectTotals = ObjectTotals()
    shard_statuses: Annotated[
        list[ShardStatus],
        Field(max_length=MAX_SHARD_ENTRIES, json_schema_extra={"x-kubernetes-list-type": "atomic"}),
    ] = []
    """One entry per shard of the current step (at most 2,000: failed, active and pending first)."""
    shard_statuses_omitted: NonNegative = 0
    """Shards left out of `shardStatuses` (every shard is in the report)."""
    failed_customers: FailedCustomers = FailedCustomers()
    snapshot: SnapshotStatus | None = None
    """The run's frozen customer list."""
    report: ReportRef | None = None
    canary: CanaryStatus | None = None

    def condition(self, kind: ConditionType) -> Condition | None:
        return next((c for c in self.conditions if c.type == kind), None)

    def is_true(self, kind: ConditionType) -> bool:
        cond = self.condition(kind)
        return cond is not None and cond.status == "True"

    # -- transitions: the only ways the operator changes a status ----------------------------------

    def changed(self, **change: Unpack[StatusChange]) -> WebReleaseStatus:
        """A copy with ``change`` applied (names and types checked by mypy)."""
        return self.model_copy(update=change)

    def with_conditions(self, conditions: list[Condition]) -> WebReleaseStatus:
        return self.changed(conditions=conditions)

    def with_fold(self, fold: Folded, conditions: list[Condition]) -> WebReleaseStatus:
        """The counters, shards and failed customers of ``fold``, and ``conditions``."""
        return self.changed(
            conditions=conditions,
            progress=fold.progress,
            customers=fold.customers,
            shards=fold.shards,
            objects=fold.objects,
            shard_statuses=list(fold.shard_statuses),
            shard_statuses_omitted=fold.shard_statuses_omitted,
            failed_customers=fold.failed_customers,
        )

    def observed(self, generation: int, conditions: list[Condition]) -> WebReleaseStatus:
        """``generation`` has been looked at (e.g. found invalid); nothing else changes."""
        return self.changed(observed_generation=generation, conditions=conditions)

    def started(
        self,
        run: RunStatus,
        fold: Folded,
        conditions: list[Condition],
        *,
        snapshot: SnapshotStatus,
        report: ReportRef,
        retry_token: str | None,
        new_run: bool,
        canary: CanaryStatus | None,
    ) -> WebReleaseStatus:
        """A step has started (its Job exists): the run's step, its fold, the run's snapshot,
        report and canary; ``new_run`` starts the run's clock, a later step keeps it."""
        keep_clock = not new_run and self.start_time is not None
        return self.with_fold(fold, conditions).changed(
            observed_generation=run.generation,
            start_time=self.start_time if keep_clock else run.started,
            completion_time=None,
            retry_token=retry_token,
            run=run,
            snapshot=snapshot,
            report=report,
            canary=canary,
        )

    def before_run(self, generation: int, conditions: list[Condition]) -> WebReleaseStatus:
        """``generation`` is taken up but its first Job does not exist yet: observed, ``conditions``,
        and nothing of an earlier run's counters, snapshot or report shown as if they were this
        one's (``run`` stays: it names the earlier run until this one starts)."""
        return self.changed(
            observed_generation=generation,
            conditions=conditions,
            progress=None,
            start_time=None,
            completion_time=None,
            customers=CustomerCounts(),
            shards=ShardCounts(),
            objects=ObjectTotals(),
            shard_statuses=[],
            shard_statuses_omitted=0,
            failed_customers=FailedCustomers(),
            snapshot=None,
            report=None,
        )

    def finished(self, now: str, *, customers: CustomerCounts) -> WebReleaseStatus:
        """The run has ended (the final condition is set with it): its clock stops, and
        ``customers`` are its final counts (nobody pending)."""
        return self.changed(completion_time=now, customers=customers)

    def failed(
        self, generation: int, conditions: list[Condition], *, now: str, retry_token: str | None
    ) -> WebReleaseStatus:
        """The run of ``generation`` cannot go on (``conditions`` say why); ``retry_token`` is the
        retry annotation this failure answers."""
        return self.changed(
            observed_generation=generation,
            conditions=conditions,
            completion_time=now,
            retry_token=retry_token,
        )

    def with_report(self, report: ReportRef) -> WebReleaseStatus:
        return self.changed(report=report)

    def retry_seen(self, token: str) -> WebReleaseStatus:
        """The retry annotation ``token`` has been acted on (or found nothing to do)."""
        return self.changed(retry_token=token)

    def to_k8s(self) -> dict[str, Any]:
        """The JSON written to the API: camelCase, ``None`` left out, shard entries compact."""
        out = self.model_dump(by_alias=True, exclude_none=True, mode="json", exclude={"shard_statuses"})
        out["shardStatuses"] = [s.to_k8s() for s in self.shard_statuses]
        return out

    def to_patch(self) -> dict[str, Any]:
        """A JSON merge patch that makes ``status`` exactly this: every field of the models is
        present, ``None`` as ``null`` (which deletes it); lists are written whole and compact."""
        patch = _patch_of(self)
        patch["shardStatuses"] = [s.to_k8s() for s in self.shard_statuses]
        return patch

    @classmethod
    def from_k8s(cls, data: Any) -> WebReleaseStatus:
        """Read ``status`` as found on the object (``None`` or ``{}`` when new)."""
        if not data:
            return cls()
        return cls.model_validate(data)


def _patch_of(model: BaseModel) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, info in type(model).model_fields.items():
        key = info.serialization_alias or name
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            out[key] = _patch_of(value)
        elif isinstance(value, list):
            out[key] = [
                v.model_dump(by_alias=True, exclude_none=True, mode="json") if isinstance(v, BaseModel) else v
                for v in value
            ]
        elif isinstance(value, StrEnum):
            out[key] = value.value
        else:
            out[key] = value
    return out
