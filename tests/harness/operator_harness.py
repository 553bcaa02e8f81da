"""The operator as a separate process for the cluster tests, and what those tests check with.

`OperatorProcess` runs ``webrelease operator`` (the console script of the venv) against the test
control plane, with JSON logs to a file and its liveness endpoint on a free 127.0.0.1 port. It can be
killed (SIGKILL: a crash) and started again. Readiness and every wait poll with a deadline.

Leader election is on, as in the chart: each OperatorProcess has an identity of its own (``POD_NAME``,
kept across restarts like a pod's name) and, unless told otherwise, a Lease of its own in
``default`` (``POD_NAMESPACE``), so operators of different tests never wait for each other. Replicas
given the same ``lease`` compete for it: one acts, the others stand by (tests/reliability/
test_availability.py).

The rest are small helpers: the CRD from ``manifests/``, a storage Secret for the S3 server, a build
and a customer list in a bucket, reading sites back, and waiting on a WebRelease's status.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from tests.harness.cluster_fixtures import wait_until
from tests.harness.controlplane import ControlPlane, Kube, api_path
from tests.harness.s3server import S3Endpoint

REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "manifests" / "crd" / "webrelease.dev_webreleases.yaml"
VENV_BIN = Path(sys.executable).parent
WR = "webrelease.dev/v1alpha1"
SECRET = "s3-credentials"

Obj = dict[str, Any]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def install_crd(plane: ControlPlane, kube: Kube) -> None:
    plane.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))

    def established() -> bool:
        crd = kube.find(
            api_path(
                "apiextensions.k8s.io/v1", "customresourcedefinitions", name="webreleases.webrelease.dev"
            )
        )
        conditions = (crd or {}).get("status", {}).get("conditions") or []
        return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)

    wait_until("the WebRelease CRD to be established", established, timeout_s=60)


@dataclass
class OperatorProcess:
    """``webrelease operator`` in a process of its own."""

    plane: ControlPlane
    work: Path
    extra_env: Mapping[str, str] = field(default_factory=dict)
    #: Leader election: who this replica is, and the Lease (in ``lease_namespace``) it competes for.
    identity: str = field(default_factory=lambda: f"operator-{uuid.uuid4().hex[:8]}")
    lease: str = field(default_factory=lambda: f"webrelease-operator-{uuid.uuid4().hex[:8]}")
    lease_namespace: str = "default"
    process: subprocess.Popen[bytes] | None = None
    port: int = 0
    starts: int = 0
    _log: IO[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.work / "operator.log"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "WEBRELEASE_", "KUBECONFIG"))}
        path = [str(VENV_BIN)]
        if self.plane.bin_dir is not None:
            path.append(str(self.plane.bin_dir))
        env.update(
            {
                "KUBECONFIG": str(self.plane.kubeconfig),
                "PATH": os.pathsep.join([*path, env.get("PATH", "")]),
                # quick batches and resyncs keep the tests short
                "WEBRELEASE_BATCH_SECONDS": "0.5",
                "WEBRELEASE_RESYNC_SECONDS": "5",
                "WEBRELEASE_WAIT_SECONDS": "30",
                # what the chart's downward API gives a pod
                "POD_NAMESPACE": self.lease_namespace,
                "POD_NAME": self.identity,
                "WEBRELEASE_LEADER_ELECTION_LEASE_NAME": self.lease,
            }
        )
        env.update(self.extra_env)
        return env

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None, "already running"
        self.work.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self._log = self.log_path.open("ab")
        self.starts += 1
        self._log.write(f"--- start {self.starts} ---\n".encode())
        self._log.flush()
        self.process = subprocess.Popen(
            [
                str(VENV_BIN / "webrelease"),
                "operator",
                "--log-format=json",
                f"--liveness=http://127.0.0.1:{self.port}/healthz",
                "--all-namespaces",
            ],
            env=self.env(),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_until("the operator's liveness endpoint", self._alive, timeout_s=90, interval_s=0.3)

    def _alive(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"the operator exited ({self.process.returncode}):\n{self.log_tail()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def kill(self) -> None:
        """SIGKILL, as a crash or an evicted pod: nothing is flushed, nothing is cleaned up."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)
        if self._log is not None:
            self._log.close()
            self._log = None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def lease_holder(self, kube: Kube) -> str:
        """The holder of this replica's Lease ("" when none, or no Lease)."""
        lease = kube.find(
            api_path("coordination.k8s.io/v1", "leases", namespace=self.lease_namespace, name=self.lease)
        )
        return str(((lease or {}).get("spec") or {}).get("holderIdentity") or "")

    def wait_leading(self, kube: Kube, timeout_s: float = 90.0) -> None:
        """Until this replica holds its Lease (it then starts kopf)."""

        def leading() -> bool:
            if not self.running():
                raise AssertionError(f"the operator exited:\n{self.log_tail()}")
            return self.lease_holder(kube) == self.identity

        wait_until(f"{self.identity} to lead", leading, timeout_s=timeout_s, interval_s=0.3)

    def log_tail(self, chars: int = 8000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return "(no log)"


# ------------------------------------------------------------------------------------- objects


def _leftovers(kube: Kube) -> list[str]:
    """WebReleases in namespaces being deleted (they wait for the operator to drop its finalizer)."""
    going = {
        ns["metadata"]["name"]
        for ns in kube.items(api_path("v1", "namespaces"))
        if ns["metadata"].get("deletionTimestamp")
    }
    releases = kube.items(api_path("webrelease.dev/v1alpha1", "webreleases"))
    return [wr["metadata"]["name"] for wr in releases if wr["metadata"]["namespace"] in going]


@contextlib.contextmanager
def running_operator(
    plane: ControlPlane, kube: Kube, workdir: Path, extra_env: Mapping[str, str] | None = None
) -> Iterator[OperatorProcess]:
    """The CRD installed and ``webrelease operator`` running as a process of its own; on exit it
    first lets go of the WebReleases of deleted test namespaces (their finalizers), then stops."""
    install_crd(plane, kube)
    process = OperatorProcess(plane, workdir, extra_env=dict(extra_env or {}))
    process.start()
    try:
        yield process
    finally:
        if process.running():
            with contextlib.suppress(AssertionError):
                wait_until(
                    "the WebReleases of deleted namespaces to go", lambda: not _leftovers(kube), timeout_s=60
                )
        process.stop()


def release_path(namespace: str, name: str | None = None) -> str:
    return api_path(WR, "webreleases", namespace=namespace, name=name)


def create_storage_secret(kube: Kube, namespace: str, s3: S3Endpoint) -> str:
    kube.create(
        api_path("v1", "secrets", namespace=namespace),
        {
            "metadata": {"name": SECRET},
            "stringData": {"AWS_ACCESS_KEY_ID": s3.access_key, "AWS_SECRET_ACCESS_KEY": s3.secret_key},
        },
    )
    return SECRET


def manifest(name: str, spec: Mapping[str, Any]) -> Obj:
    return {"apiVersion": WR, "kind": "WebRelease", "metadata": {"name": name}, "spec": dict(spec)}


def apply(plane: ControlPlane, namespace: str, doc: Mapping[str, Any]) -> subprocess.CompletedProcess[str]:
    """``kubectl apply`` (server-side field validation, as a user would): check the return code."""
    return plane.kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps(doc), check=False)


def get_release(kube: Kube, namespace: str, name: str) -> Obj:
    return kube.get(release_path(namespace, name))


def condition(body: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for cond in (body.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            result: Mapping[str, Any] = cond
            return result
    return None


def is_true(body: Mapping[str, Any], kind: str) -> bool:
    cond = condition(body, kind)
    return cond is not None and cond.get("status") == "True"


def ended(body: Mapping[str, Any]) -> bool:
    """The run of the object's current generation has ended (Complete, Degraded or Failed)."""
    status = body.get("status") or {}
    generation = body["metadata"]["generation"]
    if status.get("observedGeneration") != generation:
        return False
    return any(
        is_true(body, kind) and (condition(body, kind) or {}).get("observedGeneration") == generation
        for kind in ("Complete", "Degraded", "Failed")
    )


def wait_release(
    kube: Kube,
    namespace: str,
    name: str,
    what: str,
    predicate: Callable[[Obj], bool],
    *,
    operator: OperatorProcess | None = None,
    timeout_s: float = 240.0,
) -> Obj:
    """Poll the WebRelease until ``predicate`` holds; on timeout, say what it looked like and the
    operator's log."""

    def probe() -> Obj | None:
        if operator is not None and not operator.running():
            raise AssertionError(f"the operator exited:\n{operator.log_tail()}")
        body = kube.find(release_path(namespace, name))
        return body if body is not None and predicate(body) else None

    try:
        return wait_until(f"{namespace}/{name}: {what}", probe, timeout_s=timeout_s, interval_s=0.5)
    except AssertionError as exc:
        body = kube.find(release_path(namespace, name))
        status = json.dumps((body or {}).get("status"), indent=1)[:4000]
        log = operator.log_tail() if operator is not None else ""
        raise AssertionError(f"{exc}\n--- status ---\n{status}\n--- operator log ---\n{log}") from None


def jobs_of(kube: Kube, namespace: str, release: str) -> list[Obj]:
    return kube.items(
        api_path("batch/v1", "jobs", namespace=namespace), labelSelector=f"webrelease.dev/release={release}"
    )


# -------------------------------------------------------------------------------------- storage


def put_files(s3: S3Endpoint, bucket: str, prefix: str, files: Mapping[str, str | bytes]) -> None:
    client = s3.client()
    for key, body in files.items():
        client.put_object(
            Bucket=bucket, Key=prefix + key, Body=body.encode() if isinstance(body, str) else body
        )


def put_customers(s3: S3Endpoint, bucket: str, key: str, records: Sequence[Mapping[str, Any]]) -> str:
    body = "".join(json.dumps(r) + "\n" for r in records)
    s3.client().put_object(Bucket=bucket, Key=key, Body=body.encode())
    return f"s3://{bucket}/{key}"


def read_prefix(s3: S3Endpoint, bucket: str, prefix: str) -> dict[str, bytes]:
    """Every object under ``prefix`` (keys relative to it) with its bytes."""
    client = s3.client()
    out: dict[str, bytes] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            key = obj["Key"]
            out[key[len(prefix) :]] = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    return out


def keys_under(s3: S3Endpoint, bucket: str, prefix: str) -> list[str]:
    client = s3.client()
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(o["Key"] for o in page.get("Contents", []))
    return keys


def read_json(s3: S3Endpoint, url: str) -> Any:
    bucket, _, key = url.removeprefix("s3://").partition("/")
    return json.loads(s3.client().get_object(Bucket=bucket, Key=key)["Body"].read())


def read_jsonl(s3: S3Endpoint, url: str) -> list[Obj]:
    bucket, _, key = url.removeprefix("s3://").partition("/")
    data = s3.client().get_object(Bucket=bucket, Key=key)["Body"].read()
    return [json.loads(line) for line in data.splitlines() if line.strip()]
