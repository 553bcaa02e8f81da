"""Kubernetes Events on a WebRelease's milestones (``kubectl describe wr NAME`` shows them).

One reason per milestone, CamelCase; messages are short, name customers only by id and never
carry a secret (URLs of the spec are fine: credentials are never part of them).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any, cast

import kopf

from webrelease.operator.status import MAX_MESSAGE_CHARS, truncate


class EventReason(StrEnum):
    INVALID_SPEC = "InvalidSpec"
    INVALID_CUSTOMER_LIST = "InvalidCustomerList"
    SUPERSEDED = "Superseded"
    SNAPSHOT_WRITTEN = "SnapshotWritten"
    STEP_STARTED = "JobCreated"
    JOB_RECREATED = "JobRecreated"
    CANARY_SUCCEEDED = "CanarySucceeded"
    RUN_COMPLETE = "RunComplete"
    RUN_DEGRADED = "RunDegraded"
    RUN_FAILED = "RunFailed"
    RETRY_STARTED = "RetryStarted"
    NOTHING_TO_RETRY = "NothingToRetry"
    STORAGE_PROBLEM = "StorageProblem"
    WAITING = "Waiting"
    CANARY_COVERS_ALL = "CanaryCoversEveryone"


_WARNINGS = frozenset(
    {
        EventReason.INVALID_SPEC,
        EventReason.INVALID_CUSTOMER_LIST,
        EventReason.RUN_DEGRADED,
        EventReason.RUN_FAILED,
        EventReason.STORAGE_PROBLEM,
        EventReason.WAITING,
        EventReason.CANARY_COVERS_ALL,
    }
)


def post(body: Mapping[str, Any], reason: EventReason, message: str) -> None:
    """Post an Event about ``body`` (a WebRelease as the API serves it). Never raises: an Event
    that cannot be posted is logged by kopf and otherwise ignored."""
    kopf.event(
        kopf.Body(cast(kopf.RawBody, dict(body))),
        type="Warning" if reason in _WARNINGS else "Normal",
        reason=reason.value,
        message=truncate(message, MAX_MESSAGE_CHARS),
    )
