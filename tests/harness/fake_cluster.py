"""An in-memory fake of the operator's own API protocol, for the fast reconcile tier.

``FakeCluster`` implements :class:`webrelease.operator.api.ReleaseApi` over dicts: WebReleases
(with generations, uids and merge-patched status), Jobs (owned, labelled, deleted in the
foreground: a deleted Job stays listed with a ``deletionTimestamp`` until :meth:`reap`), shard pods,
Secrets and ConfigMaps. It does not run anything by itself: :meth:`run_step` plays the Job
controller and the shard pods of one step — each index reads its slice of the step's snapshot from
the :class:`~tests.harness.memstore.MemoryStore`, writes the per-customer results a real shard
writes, ends its pod with the summary as the termination message, and the Job gets the indexes and
the condition the Job controller would give it.

What it does not model (the cluster tier has the real thing): scheduling, retries of an index
(``backoffLimitPerIndex``), ``podFailurePolicy``, watches.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tests.harness.memstore import MemoryStore
from webrelease.copier.invocation import ENV_REPORT_URL, ENV_SHARD_SIZE, ENV_SNAPSHOT_SHA256, ENV_SNAPSHOT_URL
from webrelease.copier.results import CustomerResult, ShardResult, Tally, encode_results
from webrelease.copier.snapshot import read_slice, shard_results_key, shard_summary_key
from webrelease.copier.sources import missing_config_map, missing_secret
from webrelease.copier.storage import parse_url
from webrelease.operator.api import JobRefused, ReleaseApi
from webrelease.operator.constants import JOB_INDEX_ANNOTATION, LABEL_RELEASE, LABEL_STEP

Obj = dict[str, Any]
#: Why a customer fails in :meth:`FakeCluster.run_step` (None: it succeeds).
Outcome = Callable[[str], str | None]


def _merge(target: Obj, patch: Mapping[str, Any]) -> None:
    """RFC 7386 merge patch, in place."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


def _ranges(indexes: list[int]) -> str:
    """``[0, 1, 2, 5]`` → ``"0-2,5"`` (a Job's ``completedIndexes``)."""
    out: list[str] = []
    for _, group in itertools.groupby(enumerate(sorted(indexes)), lambda p: p[1] - p[0]):
        run = [i for _, i in group]
        out.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
    return ",".join(out)


@dataclass
class FakeCluster:
    """The apiserver and the Job controller, as far as the run lifecycle can tell."""

    store: MemoryStore
    releases: dict[tuple[str, str], Obj] = field(default_factory=dict)
    jobs: dict[tuple[str, str], Obj] = field(default_factory=dict)
    pods: dict[tuple[str, str], list[Obj]] = field(default_factory=dict)
    secrets: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    config_maps: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    #: set to the apiserver's message to refuse every Job created from now on
    refuse_jobs: str | None = None
    status_writes: int = 0
    _uids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    # -- WebReleases (what kubectl apply does) ----------------------------------------------------

    def apply(self, namespace: str, name: str, spec: Mapping[str, Any]) -> Obj:
        """Create the release or change its spec (a new generation when the spec differs)."""
        key = (namespace, name)
        body = self.releases.get(key)
        if body is None:
            body = {
                "apiVersion": "webrelease.dev/v1alpha1",
                "kind": "WebRelease",
                "metadata": {
                    "namespace": namespace,
                    "name": name,
                    "uid": f"uid-{next(self._uids):04d}-{name}",
                    "generation": 1,
                    "annotations": {},
                },
                "spec": copy.deepcopy(dict(spec)),
            }
            self.releases[key] = body
        elif body["spec"] != dict(spec):
            body["spec"] = copy.deepcopy(dict(spec))
            body["metadata"]["generation"] += 1
        return self.release(namespace, name)

    def annotate(self, namespace: str, name: str, key: str, value: str) -> None:
        self.releases[(namespace, name)]["metadata"]["annotations"][key] = value

    def release(self, namespace: str, name: str) -> Obj:
        """A copy, as a fresh GET returns it."""
        return copy.deepcopy(self.releases[(namespace, name)])

    def status(self, namespace: str, name: str) -> Obj:
        status: Obj = copy.deepcopy(self.releases[(namespace, name)].get("status") or {})
        return status

    def condition(self, namespace: str, name: str, kind: str) -> Obj | None:
        for cond in self.status(namespace, name).get("conditions") or []:
            if cond.get("type") == kind:
                found: Obj = cond
                return found
        return None

    # -- ReleaseApi ---------------------------------------------------------------------------------

    def get_release(self, namespace: str, name: str) -> Obj | None:
        return self.release(namespace, name) if (namespace, name) in self.releases else None

    def patch_release_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> Obj | None:
        body = self.releases.get((namespace, name))
        if body is None:
            return None
        self.status_writes += 1
        body.setdefault("status", {})
        _merge(body["status"], status)
        return copy.deepcopy(body)

    def get_job(self, namespace: str, name: str) -> Obj | None:
        job = self.jobs.get((namespace, name))
        return copy.deepcopy(job) if job is not None else None

    def create_job(self, manifest: Mapping[str, Any]) -> tuple[Obj, bool]:
        meta = manifest["metadata"]
        key = (meta["namespace"], meta["name"])
        if key in self.jobs:
            return copy.deepcopy(self.jobs[key]), False
        if self.refuse_jobs is not None:
            raise JobRefused(self.refuse_jobs)
        job = copy.deepcopy(dict(manifest))
        job["metadata"]["uid"] = f"job-{next(self._uids):04d}"
        job["status"] = {}
        self.jobs[key] = job
        return copy.deepcopy(job), True

    def delete_job(self, namespace: str, name: str) -> bool:
        job = self.jobs.get((namespace, name))
        if job is None:
            return False
        job["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
        return True

    def list_jobs(self, namespace: str, release: str) -> list[Obj]:
        return [
            copy.deepcopy(job)
            for (ns, _), job in sorted(self.jobs.items())
            if ns == namespace and job["metadata"]["labels"].get(LABEL_RELEASE) == release
        ]

    def list_step_pods(self, namespace: str, release: str, step_id: str) -> list[Obj]:
        return [
            copy.deepcopy(pod)
            for (ns, _), pods in sorted(self.pods.items())
            if ns == namespace
            for pod in pods
            if pod["metadata"]["labels"].get(LABEL_RELEASE) == release
            and pod["metadata"]["labels"].get(LABEL_STEP) == step_id
        ]

    def config_map_value(self, namespace: str, name: str, key: str) -> str | bytes:
        data = self.config_maps.get((namespace, name))
        if data is None or key not in data:
            raise missing_config_map(name, key, None if data is None else list(data))
        return data[key]

    def secret_value(self, namespace: str, name: str, key: str) -> str:
        data = self.secrets.get((namespace, name))
        if data is None or key not in data:
            raise missing_secret(name, key, None if data is None else list(data))
        return data[key]

    def secret_values(self, namespace: str, name: str) -> dict[str, str] | None:
        data = self.secrets.get((namespace, name))
        return dict(data) if data is not None else None

    # -- the Job controller and the shard pods --------------------------------------------------

    def reap(self) -> list[str]:
        """Finish every foreground deletion: the Jobs and their pods go. Their names."""
        gone = [k for k, job in self.jobs.items() if job["metadata"].get("deletionTimestamp")]
        for key in gone:
            del self.jobs[key]
            self.pods.pop(key, None)
        return [name for _, name in gone]

    def live_jobs(self, namespace: str) -> list[str]:
        return sorted(n for (ns, n), j in self.jobs.items() if ns == namespace and not _deleting(j))

    def run_step(self, namespace: str, job_name: str, fails: Outcome = lambda _id: None) -> dict[str, str]:
        """Run every index of the Job to its end: ``fails(id)`` says why a customer fails (None: it
        succeeds). Returns the failed customers of this step with their reasons."""
        job = self.jobs[(namespace, job_name)]
        pod_template = job["spec"]["template"]
        container = pod_template["spec"]["containers"][0]
        env = {e["name"]: e.get("value") for e in container.get("env") or []}
        size, folder = int(env[ENV_SHARD_SIZE]), parse_url(env[ENV_REPORT_URL])
        failed: dict[str, str] = {}
        done: list[int] = []
        broken: list[int] = []
        pods: list[Obj] = []
        for index in range(int(job["spec"]["completions"])):
            records = read_slice(self.store, env[ENV_SNAPSHOT_URL], env[ENV_SNAPSHOT_SHA256], index, size)
            result = ShardResult(index, results_url=folder.url + shard_results_key(index), seconds=1.5)
            for record in records:
                cid = str(record["id"])
                why = fails(cid)
                counts = Tally(copied=2, rendered=1, bytes=300) if why is None else Tally()
                result.customers.append(CustomerResult(cid, why is None, why, counts=counts))
                if why is not None:
                    failed[cid] = why
            self.store.put(folder, shard_results_key(index), encode_results(result.customers))
            summary = result.summary()
            self.store.put(folder, shard_summary_key(index), summary.to_bytes())
            (broken if result.failed else done).append(index)
            pods.append(_pod(namespace, job_name, pod_template, index, summary.exit_code, summary.to_bytes()))
        self.pods[(namespace, job_name)] = pods
        kind = "Failed" if broken else "Complete"
        job["status"] = {
            "completedIndexes": _ranges(done),
            "failedIndexes": _ranges(broken),
            "succeeded": len(done),
            "failed": len(broken),
            "conditions": [{"type": kind, "status": "True", "reason": "FailedIndexes" if broken else ""}],
        }
        return failed


def _deleting(job: Mapping[str, Any]) -> bool:
    return bool(job["metadata"].get("deletionTimestamp"))


def _pod(namespace: str, job: str, template: Mapping[str, Any], index: int, code: int, message: bytes) -> Obj:
    phase = "Succeeded" if code == 0 else "Failed"
    return {
        "metadata": {
            "namespace": namespace,
            "name": f"{job}-{index}-a1b2c",
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "labels": dict(template["metadata"]["labels"]),
            "annotations": {JOB_INDEX_ANNOTATION: str(index)},
        },
        "status": {
            "phase": phase,
            "containerStatuses": [
                {
                    "name": "shard",
                    "state": {
                        "terminated": {
                            "exitCode": code,
                            "reason": "Completed" if code == 0 else "Error",
                            "message": message.decode(),
                            "startedAt": "2026-01-01T00:00:00Z",
                            "finishedAt": "2026-01-01T00:00:02Z",
                        }
                    },
                }
            ],
        },
    }


def _is_a_release_api(cluster: FakeCluster) -> ReleaseApi:
    return cluster  # mypy checks that the fake keeps the protocol


__all__ = ["FakeCluster", "Outcome"]
