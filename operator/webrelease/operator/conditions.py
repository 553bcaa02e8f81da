"""Conditions of a WebRelease: reasons as constants and one pure way to change them.

Semantics follow ``metav1.Condition`` (and JobSet's ``updateCondition``): ``lastTransitionTime``
changes only when a condition's ``status`` flips; a new reason or message keeps it.

At any time at most one of ``Progressing``, ``Complete``, ``Degraded``, ``Failed`` is ``True``
(the helpers :func:`running` and :func:`finished` set all four together). ``Progressing``'s
reason is the headline (``kubectl get wr`` shows it in the *Condition* column): while running it
says what is going on (``Running``, ``Canary``, ``Retrying``, ``Superseding``), afterwards the
outcome (``Complete``, ``Degraded``, ``Failed``).
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import Literal

from webrelease.operator.status import MAX_MESSAGE_CHARS, Condition, ConditionType, truncate

__all__ = [
    "RESTARTABLE",
    "ConditionType",
    "Outcome",
    "Reason",
    "finished",
    "invalid",
    "running",
    "set_condition",
]


class Reason(StrEnum):
    """Every reason the operator writes (CamelCase, as the API conventions ask)."""

    # Accepted
    VALID = "Valid"
    INVALID_SPEC = "InvalidSpec"
    # Progressing=True
    RUNNING = "Running"
    CANARY = "Canary"
    RETRYING = "Retrying"
    SUPERSEDING = "Superseding"
    STARTING = "Starting"
    # Progressing=True while waiting for something the run needs (it resumes by itself)
    SECRET_NOT_FOUND = "SecretNotFound"  # noqa: S105 - a reason, not a password
    CONFIG_MAP_NOT_FOUND = "ConfigMapNotFound"
    STORAGE_UNAVAILABLE = "StorageUnavailable"
    # Progressing=False: the outcome
    COMPLETE = "Complete"
    DEGRADED = "Degraded"
    FAILED = "Failed"
    # Complete / Degraded / Failed
    ALL_SUCCEEDED = "AllCustomersSucceeded"
    DRY_RUN_COMPLETE = "DryRunComplete"
    FAILURES_TOLERATED = "FailuresTolerated"
    TOO_MANY_FAILURES = "TooManyCustomersFailed"
    CANARY_FAILED = "CanaryFailed"
    INVALID_CUSTOMER_LIST = "InvalidCustomerList"
    SNAPSHOT_FAILED = "SnapshotFailed"
    BUILD_UNUSABLE = "BuildUnusable"
    NOT_FINISHED = "NotFinished"


#: A run that failed for one of these reasons, before its first Job, starts again on the retry
#: annotation once its input (the customer list, a Secret, storage, the build) is fixed; an invalid
#: spec needs a new generation.
RESTARTABLE: frozenset[str] = frozenset(
    {Reason.INVALID_CUSTOMER_LIST.value, Reason.SNAPSHOT_FAILED.value, Reason.BUILD_UNUSABLE.value}
)


class Outcome(StrEnum):
    """How a run ended: names the one terminal condition that is ``True``."""

    COMPLETE = "Complete"
    DEGRADED = "Degraded"
    FAILED = "Failed"


_TERMINAL = (ConditionType.COMPLETE, ConditionType.DEGRADED, ConditionType.FAILED)
_OUTCOME_TYPE = {
    Outcome.COMPLETE: ConditionType.COMPLETE,
    Outcome.DEGRADED: ConditionType.DEGRADED,
    Outcome.FAILED: ConditionType.FAILED,
}
#: The order conditions are listed in: the first one that is True says what the release is doing or
#: how it ended (``kubectl get wr``'s *Reason* column is the first True condition's reason);
#: ``Accepted`` comes last, so its ``Valid`` never hides it.
_ORDER = (ConditionType.PROGRESSING, *_TERMINAL, ConditionType.ACCEPTED)


def set_condition(
    conditions: Sequence[Condition],
    kind: ConditionType,
    status: Literal["True", "False", "Unknown"],
    reason: Reason | str,
    message: str,
    *,
    generation: int | None,
    now: str,
) -> list[Condition]:
    """``conditions`` with ``kind`` set; ``lastTransitionTime`` moves only if ``status`` changed."""
    old = next((c for c in conditions if c.type == kind), None)
    since = old.last_transition_time if old is not None and old.status == status else now
    new = Condition(
        type=kind,
        status=status,
        reason=str(reason),
        message=truncate(message, MAX_MESSAGE_CHARS),
        last_transition_time=since,
        observed_generation=generation,
    )
    rest = [c for c in conditions if c.type != kind]
    return sorted([*rest, new], key=lambda c: _ORDER.index(c.type))


def running(
    conditions: Sequence[Condition], reason: Reason, message: str, *, generation: int, now: str
) -> list[Condition]:
    """Accepted, Progressing=True, and no terminal condition true."""
    out = set_condition(
        conditions, ConditionType.ACCEPTED, "True", Reason.VALID, "", generation=generation, now=now
    )
    out = set_condition(
        out, ConditionType.PROGRESSING, "True", reason, message, generation=generation, now=now
    )
    for kind in _TERMINAL:
        out = set_condition(out, kind, "False", Reason.NOT_FINISHED, "", generation=generation, now=now)
    return out


def finished(
    conditions: Sequence[Condition],
    outcome: Outcome,
    reason: Reason,
    message: str,
    *,
    generation: int,
    now: str,
    accepted: bool = True,
) -> list[Condition]:
    """Progressing=False with the outcome as reason, the outcome's condition True, the others False."""
    out = list(conditions)
    if accepted:
        out = set_condition(
            out, ConditionType.ACCEPTED, "True", Reason.VALID, "", generation=generation, now=now
        )
    out = set_condition(
        out,
        ConditionType.PROGRESSING,
        "False",
        Reason(outcome.value),
        message,
        generation=generation,
        now=now,
    )
    for kind in _TERMINAL:
        if kind == _OUTCOME_TYPE[outcome]:
            out = set_condition(out, kind, "True", reason, message, generation=generation, now=now)
        else:
            out = set_condition(out, kind, "False", reason, "", generation=generation, now=now)
    return out


def invalid(conditions: Sequence[Condition], message: str, *, generation: int, now: str) -> list[Condition]:
    """The spec of ``generation`` is invalid: Accepted=False and Failed=True, both naming the field."""
    out = set_condition(
        conditions,
        ConditionType.ACCEPTED,
        "False",
        Reason.INVALID_SPEC,
        message,
        generation=generation,
        now=now,
    )
    return finished(
        out, Outcome.FAILED, Reason.INVALID_SPEC, message, generation=generation, now=now, accepted=False
    )
