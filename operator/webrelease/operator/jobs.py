"""The Indexed Job of one step of a run, as a pure function of its inputs
(docs/design.md "The run flow", step 4).

:func:`build_job` returns the ``batch/v1`` Job manifest; :mod:`.kube` creates it. One Job index is
one shard: the pod runs ``webrelease shard`` (``webrelease.copier.invocation`` describes its
settings), which reads ``JOB_COMPLETION_INDEX`` (set by the Job controller), takes its slice of the
step's snapshot, writes its per-customer results next to the snapshot and its compact summary to
the termination message.

Failure handling, all by the Job controller:

- a pod that exits non-zero (some customers failed, or a crash) is retried up to
  ``failurePolicy.retriesPerShard`` times for that index alone (``backoffLimitPerIndex``); a retry
  redoes only what differs;
- bad input (exit code 2: spec, snapshot or build unusable) fails the index at once
  (``podFailurePolicy`` ``FailIndex``): no retry can fix it;
- a pod disrupted by the cluster (eviction, preemption) is retried without counting
  (``Ignore`` on ``DisruptionTarget``);
- more than :func:`max_failed_indexes` failed shards stop the whole Job: at that point the failure
  is systemic (credentials, bucket, build) or the run is already beyond its tolerance.

Pods get no Kubernetes API token, run as a non-root numeric user with a read-only root
filesystem, no capabilities and the runtime's default seccomp profile; ``/tmp`` is an emptyDir.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Final

from webrelease.copier.exitcodes import EXIT_BAD_INPUT
from webrelease.copier.invocation import (
    ENV_RELEASE_NAME,
    ENV_REPORT_URL,
    ENV_SHARD_SIZE,
    ENV_SNAPSHOT_SHA256,
    ENV_SNAPSHOT_URL,
    ENV_SPEC,
)
from webrelease.copier.runlayout import ShardLayout, shard_layout, step_folder_name
from webrelease.copier.runreport import tolerated_failures
from webrelease.copier.spec import MAX_SHARDS, WebReleaseSpec
from webrelease.copier.storage.storeset import ENV_FAST_PATH, fast_path_wanted
from webrelease.operator.constants import (
    ANNOTATION_REPORT_URL,
    ANNOTATION_SNAPSHOT_SHA256,
    API_VERSION_FULL,
    CONTAINER_NAME,
    KIND,
    LABEL_COMPONENT,
    LABEL_GENERATION,
    LABEL_MANAGED_BY,
    LABEL_NAME,
    LABEL_RELEASE,
    LABEL_STEP,
    MANAGED_BY,
    STORAGE_SECRET_KEYS,
)
from webrelease.operator.settings import WorkerDefaults
from webrelease.operator.status import CanaryStatus, Carried, SnapshotStatus, StepKind

#: Longest Job name. The Job controller puts it in a label value on every pod (at most 63
#: characters), and a pod of an Indexed Job gets the hostname ``<job>-<index>``, a DNS label of at
#: most 63 characters: room is kept for the largest index (``-4999``).
MAX_JOB_NAME: Final = 63 - len(f"-{MAX_SHARDS - 1}")
TERMINATION_MESSAGE_PATH: Final = "/dev/termination-log"


@dataclass(frozen=True, slots=True)
class Owner:
    """The WebRelease a Job belongs to."""

    name: str
    namespace: str
    uid: str


def step_id(generation: int, kind: StepKind, retry_number: int = 0) -> str:
    """``g3-main``, ``g3-canary``, ``g3-retry-2``: names the Job and labels its pods."""
    return f"g{generation}-{step_folder_name(kind.value, retry_number)}"


def step_layout(spec: WebReleaseSpec, customers: int) -> ShardLayout:
    """How a step's customers are cut into shards (``spec.sharding``, at most ``MAX_SHARDS``)."""
    return shard_layout(customers, spec.sharding.customers_per_shard, spec.sharding.parallelism)


@dataclass(frozen=True)
class Step:
    """One step of a run (one Indexed Job), as decided before its Job exists. The Job is built
    from it (:func:`build_job`) and the status says it (``runs.started_status``)."""

    owner: Owner
    spec: WebReleaseSpec
    generation: int
    kind: StepKind
    #: the customers of this step (the run's snapshot, or a subset of it)
    snapshot: SnapshotStatus
    #: this step's report folder (URL)
    folder: str
    retries: int = 0
    #: what earlier steps of the run achieved
    carried: Carried = field(default_factory=Carried)
    #: the canary succeeded and the other customers are still to be released
    rest_pending: bool = False
    #: the retry annotation this step answers
    retry_token: str | None = None
    #: a new run's canary customers
    canary: CanaryStatus | None = None
    #: something the user should know about this step (said in the Progressing message)
    note: str | None = None

    @property
    def step_id(self) -> str:
        return step_id(self.generation, self.kind, self.retries)

    @property
    def job(self) -> str:
        return job_name(self.owner.name, self.step_id)

    @property
    def layout(self) -> ShardLayout:
        return step_layout(self.spec, self.snapshot.count)


def _short_hash(*parts: str, length: int = 5) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:length]


def job_name(release: str, step_id: str) -> str:
    """``<release>-<step-id>``, deterministic, at most :data:`MAX_JOB_NAME` characters for every
    release name the CRD allows, every generation and every retry number.

    A long release name (or one with a dot) is cut (dots become dashes) and a hash of the whole name
    added, so two names that share their beginning still get different Jobs.
    """
    name = f"{release}-{step_id}"
    # a dot is fine in a Job name but not in the pods' hostname (a DNS label)
    if len(name) <= MAX_JOB_NAME and "." not in release:
        return name
    digest = _short_hash(release)
    keep = MAX_JOB_NAME - len(step_id) - len(digest) - 2
    base = release.replace(".", "-")[: max(0, keep)].rstrip("-")
    return f"{base}-{digest}-{step_id}" if base else f"{digest}-{step_id}"


def max_failed_indexes(shards: int, tolerated_customers: int) -> int:
    """How many failed shards stop the Job: more than half of them, or more than the tolerated
    customers (each failed shard has at least one failed customer, so the run has failed anyway)."""
    return min(shards, max(shards // 2, tolerated_customers))


def labels(owner: Owner, generation: int, step_id: str) -> dict[str, str]:
    return {
        LABEL_NAME: "webrelease",
        LABEL_COMPONENT: "shard",
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_RELEASE: owner.name,
        LABEL_GENERATION: str(generation),
        LABEL_STEP: step_id,
    }


def owner_reference(owner: Owner) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION_FULL,
        "kind": KIND,
        "name": owner.name,
        "uid": owner.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _env(step: Step) -> list[dict[str, Any]]:
    spec_json = step.spec.model_dump_json(by_alias=True, exclude_none=True)
    env: list[dict[str, Any]] = [
        {"name": ENV_SPEC, "value": spec_json},
        {"name": ENV_RELEASE_NAME, "value": step.owner.name},
        {"name": ENV_SNAPSHOT_URL, "value": step.snapshot.url},
        {"name": ENV_SNAPSHOT_SHA256, "value": step.snapshot.sha256},
        {"name": ENV_SHARD_SIZE, "value": str(step.layout.size)},
        {"name": ENV_REPORT_URL, "value": step.folder},
        # a read-only root filesystem: anything that wants a home or a cache gets /tmp
        {"name": "HOME", "value": "/tmp"},
        {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
    ]
    if step.spec.storage.fast_path and not fast_path_wanted(step.spec.storage):
        # the operator's own WEBRELEASE_S3_FAST_PATH=0 reaches its shards (docs/storage.md)
        env.append({"name": ENV_FAST_PATH, "value": "0"})
    secret = step.spec.storage.secret_ref
    if secret is not None:
        for key in STORAGE_SECRET_KEYS:
            ref: dict[str, Any] = {"name": secret.name, "key": key}
            if key == STORAGE_SECRET_KEYS[2]:  # the session token is optional
                ref["optional"] = True
            env.append({"name": key, "valueFrom": {"secretKeyRef": ref}})
    return env


def _resources(spec: WebReleaseSpec, defaults: WorkerDefaults) -> dict[str, Any]:
    wanted = spec.worker.resources
    requests = (
        dict(wanted.requests)
        if wanted is not None and wanted.requests is not None
        else dict(defaults.requests)
    )
    limits = (
        dict(wanted.limits) if wanted is not None and wanted.limits is not None else dict(defaults.limits)
    )
    out: dict[str, Any] = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


def _tolerations(spec: WebReleaseSpec) -> list[dict[str, Any]]:
    return [t.model_dump(by_alias=True, exclude_none=True) for t in spec.worker.tolerations or []]


def build_job(step: Step, defaults: WorkerDefaults) -> dict[str, Any]:
    """The Indexed Job manifest of ``step`` (see the module doc)."""
    if step.layout.shards < 1:
        raise ValueError("a step with no shards has no Job")
    spec = step.spec
    name = step.job
    lbl = labels(step.owner, step.generation, step.step_id)
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": spec.worker.image or defaults.image,
        "imagePullPolicy": defaults.image_pull_policy,
        "command": list(defaults.command),
        "env": _env(step),
        "resources": _resources(spec, defaults),
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": defaults.run_as_user,
            "runAsGroup": defaults.run_as_group,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "terminationMessagePath": TERMINATION_MESSAGE_PATH,
        # the summary is the result channel: never replace it with a log tail
        "terminationMessagePolicy": "File",
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": defaults.run_as_user,
            "runAsGroup": defaults.run_as_group,
            "fsGroup": defaults.run_as_group,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [{"name": "tmp", "emptyDir": {}}],
    }
    service_account = spec.worker.service_account_name or defaults.service_account_name
    if service_account:
        pod_spec["serviceAccountName"] = service_account
    node_selector = (
        spec.worker.node_selector if spec.worker.node_selector is not None else defaults.node_selector
    )
    if node_selector:
        pod_spec["nodeSelector"] = dict(node_selector)
    tolerations = (
        _tolerations(spec) if spec.worker.tolerations is not None else [dict(t) for t in defaults.tolerations]
    )
    if tolerations:
        pod_spec["tolerations"] = tolerations
    tolerated = tolerated_failures(spec.failure_policy, step.layout.customers)
    job_spec: dict[str, Any] = {
        "completionMode": "Indexed",
        "completions": step.layout.shards,
        "parallelism": step.layout.parallelism,
        "backoffLimitPerIndex": spec.failure_policy.retries_per_shard,
        "maxFailedIndexes": max_failed_indexes(step.layout.shards, tolerated),
        "podReplacementPolicy": "Failed",
        "podFailurePolicy": {
            "rules": [
                {
                    "action": "FailIndex",
                    "onExitCodes": {
                        "containerName": CONTAINER_NAME,
                        "operator": "In",
                        "values": [EXIT_BAD_INPUT],
                    },
                },
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            ]
        },
        "template": {"metadata": {"labels": dict(lbl)}, "spec": pod_spec},
    }
    if defaults.ttl_seconds_after_finished is not None:
        job_spec["ttlSecondsAfterFinished"] = defaults.ttl_seconds_after_finished
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": step.owner.namespace,
            "labels": lbl,
            "annotations": {
                ANNOTATION_SNAPSHOT_SHA256: step.snapshot.sha256,
                ANNOTATION_REPORT_URL: step.folder,
            },
            "ownerReferences": [owner_reference(step.owner)],
        },
        "spec": job_spec,
    }
