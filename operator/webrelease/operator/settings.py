"""Operator settings: environment variables ``WEBRELEASE_*``, parsed and validated once at startup.

The chart sets them (``charts/webrelease/templates/deployment.yaml``); everything has a default
that works for a local run. Nothing else in the operator reads the environment: the parsed
:class:`OperatorSettings` is handed to the handlers through kopf's ``memo``.

=========================================  ================================================
variable                                   meaning
=========================================  ================================================
``WEBRELEASE_WORKER_IMAGE``                image of the shard pods (``spec.worker.image`` wins)
``WEBRELEASE_WORKER_IMAGE_PULL_POLICY``    their pull policy
``WEBRELEASE_WORKER_COMMAND``              their command, JSON list (default ``["webrelease", "shard"]``)
``WEBRELEASE_WORKER_SERVICE_ACCOUNT_NAME`` their ServiceAccount (``spec.worker.serviceAccountName`` wins)
``WEBRELEASE_WORKER_RESOURCES``            JSON ``{"requests": {...}, "limits": {...}}``
``WEBRELEASE_WORKER_NODE_SELECTOR``        JSON object
``WEBRELEASE_WORKER_TOLERATIONS``          JSON list
``WEBRELEASE_WORKER_TTL_SECONDS_AFTER_FINISHED``  ``ttlSecondsAfterFinished`` of the Jobs (empty: none)
``WEBRELEASE_WORKER_UID`` / ``_GID``       numeric user and group of the shard pods (65532)
``WEBRELEASE_METRICS_PORT``                Prometheus ``/metrics`` port (0: off)
``WEBRELEASE_METRICS_HOST``                its address (``0.0.0.0``)
``WEBRELEASE_BATCH_SECONDS``               status is written at most this often per release (2)
``WEBRELEASE_RESYNC_SECONDS``              a release is re-read at least this often (30)
``WEBRELEASE_WAIT_SECONDS``                how long a missing Secret or ConfigMap, or storage
                                           out of reach, is waited for before Failed (600)
``WEBRELEASE_LEADER_ELECTION``             one replica acts at a time, by a Lease (``true``)
``WEBRELEASE_LEADER_ELECTION_LEASE_NAME``  the Lease's name (``webrelease-operator``)
``WEBRELEASE_LEADER_ELECTION_NAMESPACE``   its namespace (default: ``POD_NAMESPACE``, see below)
``WEBRELEASE_LEADER_ELECTION_IDENTITY``    this replica's holder identity (default: ``POD_NAME``)
``WEBRELEASE_LEADER_ELECTION_*``           ``LEASE_DURATION_SECONDS`` (15): a Lease not renewed for
                                           this long is taken over; ``RENEW_DEADLINE_SECONDS``
                                           (10): a leader that could not renew for this long
                                           exits at once; ``RENEW_PERIOD_SECONDS`` (5): the
                                           leader renews, a standby looks, this often
``POD_NAMESPACE`` / ``POD_NAME``           the pod's namespace and name (the downward API)
=========================================  ================================================

Leader election (:mod:`.leader`) needs ``period < deadline < duration``: the leader gives up
before any standby may take over. Without ``POD_NAMESPACE`` the Lease goes to the in-cluster
namespace or the kubeconfig's; without ``POD_NAME`` the identity is ``<hostname>-<pid>``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from webrelease.copier.spec import Toleration

PREFIX: Final = "WEBRELEASE_"
DEFAULT_WORKER_IMAGE: Final = "webrelease:0.1.0"
DEFAULT_LEASE_NAME: Final = "webrelease-operator"
#: Variables read without the prefix (the names every Kubernetes example gives the downward API).
UNPREFIXED: Final = {"POD_NAMESPACE": "pod_namespace", "POD_NAME": "pod_name"}
#: A DNS-1123 subdomain (Lease names) and label (namespaces).
DNS_SUBDOMAIN: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNS_LABEL: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


class SettingsError(ValueError):
    """The operator's environment is invalid; the message names the variable."""


@dataclass(frozen=True, slots=True)
class WorkerDefaults:
    """What shard pods get unless ``spec.worker`` says otherwise: the one place these defaults are
    written (the ``WEBRELEASE_WORKER_*`` variables and the chart only override them)."""

    image: str = DEFAULT_WORKER_IMAGE
    command: Sequence[str] = ("webrelease", "shard")
    image_pull_policy: str = "IfNotPresent"
    run_as_user: int = 65532
    run_as_group: int = 65532
    requests: Mapping[str, str] = field(default_factory=lambda: {"cpu": "250m", "memory": "256Mi"})
    limits: Mapping[str, str] = field(default_factory=lambda: {"memory": "1Gi"})
    service_account_name: str | None = None
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: Sequence[Mapping[str, Any]] = ()
    #: ``ttlSecondsAfterFinished`` of the Job (None: kept until superseded or the release is deleted)
    ttl_seconds_after_finished: int | None = None


_WORKER: Final = WorkerDefaults()


class WorkerResources(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    requests: dict[str, str] = dict(_WORKER.requests)
    limits: dict[str, str] = dict(_WORKER.limits)


def _json(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not valid JSON: {exc.msg}") from None
    return value


class OperatorSettings(BaseModel):
    """Everything the operator is told by its environment (see the module doc)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    worker_image: Annotated[str, Field(min_length=1)] = _WORKER.image
    worker_image_pull_policy: Annotated[str, Field(pattern=r"^(Always|IfNotPresent|Never)$")] = (
        _WORKER.image_pull_policy
    )
    worker_command: Annotated[list[str], Field(min_length=1)] = list(_WORKER.command)
    worker_service_account_name: str | None = _WORKER.service_account_name
    worker_resources: WorkerResources = WorkerResources()
    worker_node_selector: dict[str, str] = dict(_WORKER.node_selector)
    worker_tolerations: list[Toleration] = []
    worker_ttl_seconds_after_finished: Annotated[int, Field(ge=0)] | None = _WORKER.ttl_seconds_after_finished
    worker_uid: Annotated[int, Field(ge=1)] = _WORKER.run_as_user
    worker_gid: Annotated[int, Field(ge=1)] = _WORKER.run_as_group
    metrics_port: Annotated[int, Field(ge=0, le=65535)] = 0
    metrics_host: str = "0.0.0.0"  # noqa: S104 - a pod's metrics port
    batch_seconds: Annotated[float, Field(ge=0.0, le=60.0)] = 2.0
    resync_seconds: Annotated[float, Field(gt=0.0, le=3600.0)] = 30.0
    wait_seconds: Annotated[float, Field(ge=0.0, le=86400.0)] = 600.0
    leader_election: bool = True
    leader_election_lease_name: Annotated[str, Field(max_length=253, pattern=DNS_SUBDOMAIN)] = (
        DEFAULT_LEASE_NAME
    )
    leader_election_namespace: Annotated[str, Field(max_length=63, pattern=DNS_LABEL)] | None = None
    leader_election_identity: Annotated[str, Field(min_length=1, max_length=253)] | None = None
    leader_election_lease_duration_seconds: Annotated[int, Field(ge=1, le=3600)] = 15
    leader_election_renew_deadline_seconds: Annotated[float, Field(gt=0.0, le=3600.0)] = 10.0
    leader_election_renew_period_seconds: Annotated[float, Field(gt=0.0, le=3600.0)] = 5.0
    pod_namespace: Annotated[str, Field(max_length=63, pattern=DNS_LABEL)] | None = None
    pod_name: Annotated[str, Field(min_length=1, max_length=253)] | None = None

    @field_validator(
        "worker_command", "worker_resources", "worker_node_selector", "worker_tolerations", mode="before"
    )
    @classmethod
    def _from_json(cls, value: Any) -> Any:
        return _json(value)

    @model_validator(mode="after")
    def _leader_election_timing(self) -> OperatorSettings:
        renew = self.leader_election_renew_period_seconds
        deadline = self.leader_election_renew_deadline_seconds
        lease = self.leader_election_lease_duration_seconds
        if not renew < deadline < lease:
            raise ValueError(
                f"{PREFIX}LEADER_ELECTION_RENEW_PERIOD_SECONDS ({renew:g}) < "
                f"{PREFIX}LEADER_ELECTION_RENEW_DEADLINE_SECONDS ({deadline:g}) < "
                f"{PREFIX}LEADER_ELECTION_LEASE_DURATION_SECONDS ({lease}) does not hold: "
                "a leader must give up before a standby may take its Lease over"
            )
        return self

    def worker_defaults(self) -> WorkerDefaults:
        """The shard pods' defaults, as these settings make them."""
        return WorkerDefaults(
            image=self.worker_image,
            command=tuple(self.worker_command),
            image_pull_policy=self.worker_image_pull_policy,
            run_as_user=self.worker_uid,
            run_as_group=self.worker_gid,
            requests=dict(self.worker_resources.requests),
            limits=dict(self.worker_resources.limits),
            service_account_name=self.worker_service_account_name,
            node_selector=dict(self.worker_node_selector),
            tolerations=tuple(
                t.model_dump(by_alias=True, exclude_none=True) for t in self.worker_tolerations
            ),
            ttl_seconds_after_finished=self.worker_ttl_seconds_after_finished,
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> OperatorSettings:
        """Read ``WEBRELEASE_*`` from ``environ``; SettingsError names every bad variable."""
        # only our own names (WEBRELEASE_CACHE and friends belong to other tools); empty means default
        variables = {
            field: key
            for key in environ
            if key.startswith(PREFIX)
            and (field := key[len(PREFIX) :].lower()) in cls.model_fields
            and field not in UNPREFIXED.values()
        }
        variables |= {field: key for key, field in UNPREFIXED.items() if key in environ}
        values = {field: environ[key] for field, key in variables.items() if environ[key].strip() != ""}
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            problems = []
            for err in exc.errors():
                if not err["loc"]:  # a rule across variables: its message names them
                    problems.append(err["msg"].removeprefix("Value error, "))
                    continue
                name, *inner = (str(p) for p in err["loc"])
                where = variables.get(name, PREFIX + name.upper()) + "".join(f"[{p}]" for p in inner)
                problems.append(f"{where}: {err['msg']}")
            raise SettingsError("invalid operator settings: " + "; ".join(problems)) from None
