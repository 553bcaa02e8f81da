"""The test node agent: a TEST STAND-IN FOR THE KUBELET. It runs a pod's command as a local process.

There is no container runtime on the test machines, so this agent plays the kubelet's part for the
cluster tier, against the real apiserver, scheduler and Job controller:

- it registers a Node (``webrelease-test-node`` by default) with a generous capacity, keeps it Ready
  (status heartbeat) and renews its Lease in ``kube-node-lease``; start-up waits until the
  node-lifecycle controller has lifted the ``not-ready`` taint, i.e. until pods can be scheduled;
- it watches the pods bound to the node (list, then watch from the list's resourceVersion; relist on
  410 Gone) and runs each one with bounded concurrency (``concurrency``, default 8; pods beyond that
  stay Pending until a slot frees);
- for each pod it runs the FIRST container's ``command`` + ``args`` (``$(VAR)`` references expanded) as
  a local process found through ``PATH``. **The image is ignored**; other containers, init containers
  and volumes are ignored too; the process runs as the agent's user;
- the environment is built like the kubelet's: ``envFrom``, then ``env`` with ``value`` (``$(VAR)``
  expansion), ``fieldRef`` (``metadata.name``, ``metadata.namespace``, ``metadata.uid``,
  ``metadata.labels['k']``, ``metadata.annotations['k']`` - e.g. the Job controller's
  ``batch.kubernetes.io/job-completion-index`` - ``spec.nodeName``, ``spec.serviceAccountName``,
  ``status.hostIP(s)``, ``status.podIP(s)``), ``resourceFieldRef``, ``secretKeyRef`` and
  ``configMapKeyRef`` (read from the API; a missing non-optional one keeps the pod Pending with
  ``CreateContainerConfigError`` and is retried, as the kubelet does). Besides the pod's variables the
  process sees ``PATH`` (the agent's ``path``), ``HOSTNAME`` (the pod name), a few pass-through
  variables (``HOME``, ``LANG``, ...), ``extra_env``, and ``TERMINATION_MESSAGE_PATH`` (below);
- paths: every pod gets a private root ``<work_dir>/pods/<namespace>_<name>_<uid>/rootfs``. The working
  directory is ``rootfs/<workingDir>`` (or ``rootfs``). The termination message is read from
  ``rootfs/<terminationMessagePath>`` (``/dev/termination-log`` by default). A process cannot know that
  mapping by itself, so the agent passes the mapped file in the environment variable
  ``TERMINATION_MESSAGE_PATH``. **Contract**: a program that writes a termination message writes it to
  ``$TERMINATION_MESSAGE_PATH`` when that variable is set, else to the path in its pod spec (in a real
  pod the variable is absent and the spec's path is the real file). Stdout and stderr go to
  ``<pod dir>/<container>.log`` (there is no ``kubectl logs``; use `NodeAgent.logs`);
- status is reported like the kubelet's: Pending (``ContainerCreating``, ``startTime``, ``hostIP``) ->
  Running (``podIP`` 127.0.0.1, ``Ready``/``ContainersReady`` True, container ``running``) ->
  Succeeded/Failed (container ``terminated`` with ``exitCode``, reason ``Completed``/``Error``/
  ``StartError``, the termination message capped at 4096 bytes - or, with ``FallbackToLogsOnError``,
  the log's tail - ``startedAt``/``finishedAt``; ``Ready`` False with reason ``PodCompleted``).
  ``restartPolicy`` OnFailure/Always restart the process in place (``restartCount``, ``lastState``).
  ``activeDeadlineSeconds`` is honoured (Failed, reason ``DeadlineExceeded``);
- deleting a pod (``deletionTimestamp`` set) sends SIGTERM to the process group, SIGKILL after the grace
  period (capped at ``max_grace_s``), reports the terminal phase, then deletes the pod with grace 0,
  which is the kubelet's job.

Run it in-process (`NodeAgent.start` / `NodeAgent.stop`, threads) or as a separate process
(``python -m tests.harness.nodeagent --kubeconfig ...``; `NodeAgentProcess` wraps that, with pause,
resume and kill for fault-injection tests). Stopping the agent kills its pods' processes and reports
nothing, like a node that vanished; a restarted agent (same node name and work dir) first kills any
process a previous instance left, and reports the pods that instance had started as Failed
(``ContainerStatusUnknown``, exit code 137), as the kubelet does for containers that disappeared.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import math
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import urllib3

from tests.harness.controlplane import Kube, KubeError, Obj, api_path

DEFAULT_NODE_NAME = "webrelease-test-node"
AGENT_LABEL = "webrelease.dev/test-node-agent"
MARKER_ENV = "WEBRELEASE_TEST_NODE_AGENT_ROOT"
TERMINATION_MESSAGE_ENV = "TERMINATION_MESSAGE_PATH"
POD_IP = "127.0.0.1"
MAX_TERMINATION_MESSAGE_BYTES = 4096
FALLBACK_LOG_LINES = 80
FALLBACK_LOG_BYTES = 2048
PASS_THROUGH_ENV = ("HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "USER", "LOGNAME")
LOST_MESSAGE = "The container could not be located when the pod was terminated"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _micro_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(value: str) -> float:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def _default_capacity() -> dict[str, str]:
    return {"cpu": "64", "memory": "256Gi", "pods": "250"}


@dataclass(frozen=True)
class NodeAgentConfig:
    kubeconfig: Path
    work_dir: Path
    node_name: str = DEFAULT_NODE_NAME
    concurrency: int = 8
    path: str | None = None
    """PATH of pod processes (put the venv's bin first); default: the agent's own PATH."""
    extra_env: Mapping[str, str] = field(default_factory=dict)
    """Variables every pod process gets, under the pod's own ones (e.g. coverage settings)."""
    taints: tuple[Obj, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    capacity: Mapping[str, str] = field(default_factory=_default_capacity)
    lease_duration_s: int = 40
    heartbeat_s: float = 10.0
    max_grace_s: float = 30.0
    ready_timeout_s: float = 90.0
    deregister_on_stop: bool = False
    """Delete the Node object on stop (for extra, short-lived agents)."""


class ContainerConfigError(Exception):
    """The container cannot be configured yet (a missing Secret key, ...): the pod stays Pending."""


# -- quantities and $(VAR) expansion ----------------------------------------------------------------

_SUFFIXES = {
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}
_QUANTITY = re.compile(r"^([+-]?[0-9.]+)((?:[eE][+-]?[0-9]+)|Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|)$")


def parse_quantity(text: str) -> Decimal:
    """A Kubernetes resource quantity (``500m``, ``1Gi``, ``2``, ``1e3``) as a number."""
    match = _QUANTITY.match(str(text).strip())
    if match is None:
        raise ValueError(f"not a quantity: {text!r}")
    number, suffix = match.groups()
    if suffix[:1] in ("e", "E") and len(suffix) > 1:
        return Decimal(number) * (Decimal(10) ** int(suffix[1:]))
    return Decimal(number) * _SUFFIXES[suffix]


_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: defined references are replaced, ``$$`` escapes a ``$``,
    undefined references stay as they are."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env[name] if name in env else match.group(0)

    return _VAR_REF.sub(replace, text)


_FIELD_KEY = re.compile(r"^metadata\.(labels|annotations)\['(.+)'\]$")


def field_value(pod: Obj, path: str) -> str:
    """The downward-API value of ``fieldPath`` for an env var."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    match = _FIELD_KEY.match(path)
    if match is not None:
        return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
    simple: dict[str, Callable[[], Any]] = {
        "metadata.name": lambda: meta.get("name"),
        "metadata.namespace": lambda: meta.get("namespace"),
        "metadata.uid": lambda: meta.get("uid"),
        "spec.nodeName": lambda: spec.get("nodeName"),
        "spec.serviceAccountName": lambda: spec.get("serviceAccountName"),
        "status.hostIP": lambda: POD_IP,
        "status.hostIPs": lambda: POD_IP,
        "status.podIP": lambda: POD_IP,
        "status.podIPs": lambda: POD_IP,
    }
    if path not in simple:
        raise ContainerConfigError(f"unsupported fieldRef {path!r}")
    return str(simple[path]() or "")


def kill_leftover_processes(work_dir: Path) -> int:
    """SIGKILLs every process started by an agent with this work dir (found by its marker variable,
    which children inherit). Returns how many it found."""
    marker = f"{MARKER_ENV}={work_dir.resolve()}".encode()
    found = 0
    for proc_dir in Path("/proc").iterdir():
        if not proc_dir.name.isdigit() or int(proc_dir.name) == os.getpid():
            continue
        try:
            environ = (proc_dir / "environ").read_bytes()
        except OSError:
            continue
        if marker in environ.split(b"\0"):
            found += 1
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(proc_dir.name), signal.SIGKILL)
    return found


def _set_conditions(status: Obj, wanted: Mapping[str, tuple[str, str | None]]) -> None:
    conditions: list[Obj] = list(status.get("conditions") or [])
    now = _now()
    for ctype, (value, reason) in wanted.items():
        existing = next((c for c in conditions if c.get("type") == ctype), None)
        if existing is None:
            existing = {"type": ctype}
            conditions.append(existing)
        if existing.get("status") != value:
            existing["lastTransitionTime"] = now
        existing["status"] = value
        existing["lastProbeTime"] = None
        if reason:
            existing["reason"] = reason
        else:
            existing.pop("reason", None)
            existing.pop("message", None)
    status["conditions"] = conditions


PENDING_CONDITIONS = {
    "PodReadyToStartContainers": ("True", None),
    "Initialized": ("True", None),
    "Ready": ("False", "ContainersNotReady"),
    "ContainersReady": ("False", "ContainersNotReady"),
}
RUNNING_CONDITIONS = {
    "PodReadyToStartContainers": ("True", None),
    "Initialized": ("True", None),
    "Ready": ("True", None),
    "ContainersReady": ("True", None),
}
TERMINAL_CONDITIONS = {
    "PodReadyToStartContainers": ("False", None),
    "Initialized": ("True", None),
    "Ready": ("False", "PodCompleted"),
    "ContainersReady": ("False", "PodCompleted"),
}


# -- one pod -----------------------------------------------------------------------------------------


@dataclass
class _Outcome:
    exit_code: int
    reason: str
    message: str
    started_at: str
    finished_at: str
    container_id: str = ""

    @classmethod
    def lost(cls) -> _Outcome:
        now = _now()
        return cls(137, "ContainerStatusUnknown", LOST_MESSAGE, now, now)

    def terminated(self) -> Obj:
        state: Obj = {
            "exitCode": self.exit_code,
            "reason": self.reason,
            "startedAt": self.started_at,
            "finishedAt": self.finished_at,
        }
        if self.message:
            state["message"] = self.message
        if self.container_id:
            state["containerID"] = self.container_id
        return state


class _PodRunner:
    """Runs one pod: configure, start, supervise, report, and clean up on deletion."""

    QUEUED, RUNNING, DONE = "queued", "running", "done"

    def __init__(self, agent: NodeAgent, pod: Obj) -> None:
        self.agent = agent
        self.pod = pod
        meta = pod["metadata"]
        self.namespace: str = meta["namespace"]
        self.name: str = meta["name"]
        self.uid: str = meta["uid"]
        self.dir = agent.config.work_dir / "pods" / f"{self.namespace}_{self.name}_{self.uid}"
        self.rootfs = self.dir / "rootfs"
        self.state = self.QUEUED
        self.lock = threading.Lock()
        self.delete_requested = threading.Event()
        self.gone = threading.Event()  # the pod object no longer exists
        self.grace_s = 30.0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def container(self) -> Obj:
        return cast(Obj, self.pod["spec"]["containers"][0])

    @property
    def log_path(self) -> Path:
        return self.dir / f"{self.container['name']}.log"

    @property
    def termination_message_file(self) -> Path:
        path = self.container.get("terminationMessagePath") or "/dev/termination-log"
        return self.rootfs / str(path).lstrip("/")

    # -- events from the watch thread

    def request_delete(self, grace_s: float) -> None:
        self.grace_s = min(grace_s, self.agent.config.max_grace_s)
        self.delete_requested.set()
        with self.lock:
            claimed = self.state == self.QUEUED
            if claimed:
                self.state = self.DONE
        if claimed:  # never started: finish it without waiting for a run slot
            self.agent.control_pool.submit(self._finish_unstarted)

    def vanished(self) -> None:
        self.gone.set()
        self.request_delete(0)

    def kill(self) -> None:
        self._kill_group(signal.SIGKILL)

    # -- the run

    def run(self) -> None:
        with self.lock:
            if self.state != self.QUEUED:
                return
            self.state = self.RUNNING
        try:
            self._run()
        except Exception as exc:
            self.agent.log(f"pod {self.namespace}/{self.name}: agent error {exc!r}")
        finally:
            self._kill_group(signal.SIGKILL)  # whatever the process left behind in its group
            with self.lock:
                self.state = self.DONE
            self.agent.forget(self.uid)

    def _finish_unstarted(self) -> None:
        try:
            self._finish(_Outcome.lost(), restart_count=0)
        except Exception as exc:
            self.agent.log(f"pod {self.namespace}/{self.name}: agent error {exc!r}")
        finally:
            self.agent.forget(self.uid)

    def _run(self) -> None:
        stop = self.agent.stopping
        spec = self.pod["spec"]
        start_time = (self.pod.get("status") or {}).get("startTime") or _now()
        self._report_waiting(start_time, "ContainerCreating", None)
        deadline = None
        if spec.get("activeDeadlineSeconds") is not None:
            deadline = _parse_time(start_time) + float(spec["activeDeadlineSeconds"])
        restart_policy = spec.get("restartPolicy", "Always")
        restart_count = 0
        last_state: Obj | None = None
        backoff_s = 0.5
        while True:
            configured = self._configure_with_retries(start_time)
            if stop.is_set():
                return
            if configured is None:  # deleted before it could start
                self._finish(_Outcome.lost(), restart_count)
                return
            if deadline is not None and time.time() >= deadline:
                self._finish(_Outcome.lost(), restart_count, deadline_exceeded=True)
                return
            env, argv = configured
            outcome, deadline_hit = self._execute(
                env,
                argv,
                start_time=start_time,
                restart_count=restart_count,
                last_state=last_state,
                deadline=deadline,
            )
            if stop.is_set():
                return
            if deadline_hit:
                self._finish(outcome, restart_count, deadline_exceeded=True)
                return
            again = restart_policy == "Always" or (restart_policy == "OnFailure" and outcome.exit_code != 0)
            if not again or self.delete_requested.is_set():
                self._finish(outcome, restart_count)
                return
            last_state = {"terminated": outcome.terminated()}
            restart_count += 1
            self._report_waiting(
                start_time,
                "CrashLoopBackOff",
                "back-off restarting the container",
                restart_count=restart_count,
                last_state=last_state,
            )
            if self.delete_requested.wait(backoff_s):
                self._finish(outcome, restart_count)
                return
            backoff_s = min(backoff_s * 2, 10.0)

    def _configure_with_retries(self, start_time: str) -> tuple[dict[str, str], list[str]] | None:
        """The process's environment and argv; None once the pod is being deleted or the agent stops.
        A missing Secret or ConfigMap is retried, as the kubelet does."""
        while not (self.delete_requested.is_set() or self.agent.stopping.is_set()):
            try:
                return self._configure()
            except ContainerConfigError as exc:
                self._report_waiting(start_time, "CreateContainerConfigError", str(exc))
                self.delete_requested.wait(2.0)
        return None

    def _configure(self) -> tuple[dict[str, str], list[str]]:
        container = self.container
        pod_env = self.agent.resolve_env(self.pod, container)
        self.rootfs.mkdir(parents=True, exist_ok=True)
        command = [expand(str(a), pod_env) for a in container.get("command") or []]
        args = [expand(str(a), pod_env) for a in container.get("args") or []]
        env = {name: os.environ[name] for name in PASS_THROUGH_ENV if name in os.environ}
        env["PATH"] = self.agent.config.path or os.environ.get("PATH", "/usr/bin:/bin")
        env["HOSTNAME"] = self.name
        env.update(self.agent.config.extra_env)
        env.update(pod_env)
        env[TERMINATION_MESSAGE_ENV] = str(self.termination_message_file)
        env[MARKER_ENV] = str(self.agent.config.work_dir.resolve())
        # Without a command the kubelet would run the image's entrypoint, which the agent cannot know:
        # an empty argv makes the start fail (StartError) rather than run the args as a command.
        return env, command + args if command else []

    def _execute(
        self,
        env: dict[str, str],
        argv: list[str],
        *,
        start_time: str,
        restart_count: int,
        last_state: Obj | None,
        deadline: float | None,
    ) -> tuple[_Outcome, bool]:
        """Runs the process to its end; returns its outcome and whether the active deadline hit."""
        working_dir = self.container.get("workingDir")
        cwd = self.rootfs / str(working_dir).lstrip("/") if working_dir else self.rootfs
        cwd.mkdir(parents=True, exist_ok=True)
        message_file = self.termination_message_file
        message_file.parent.mkdir(parents=True, exist_ok=True)
        message_file.unlink(missing_ok=True)
        started_at = _now()
        if not argv:
            message = (
                "the test node agent needs the container's command (it cannot read an image's entrypoint)"
            )
            return _Outcome(128, "StartError", message, started_at, _now()), False
        executable = argv[0] if "/" in argv[0] else (shutil.which(argv[0], path=env["PATH"]) or argv[0])
        try:
            with self.log_path.open("ab") as log:
                self.proc = subprocess.Popen(
                    [executable, *argv[1:]],
                    env=env,
                    cwd=cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        except OSError as exc:
            return _Outcome(
                128, "StartError", f"failed to start {argv[0]!r}: {exc}", started_at, _now()
            ), False
        proc = self.proc
        container_id = f"nodeagent://{proc.pid}"
        self._report_running(start_time, started_at, container_id, restart_count, last_state)
        deadline_hit = False
        while True:
            try:
                proc.wait(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                pass
            if self.agent.stopping.is_set():
                self._kill_group(signal.SIGKILL)
                proc.wait()
                break
            if deadline is not None and time.time() >= deadline:
                deadline_hit = True
                self._terminate(proc, 5.0)
                break
            if self.delete_requested.is_set():
                self._terminate(proc, self.grace_s)
                break
        code = proc.returncode
        exit_code = 128 - code if code < 0 else code
        reason = "Completed" if exit_code == 0 else "Error"
        message = self._termination_message(exit_code)
        return _Outcome(exit_code, reason, message, started_at, _now(), container_id), deadline_hit

    def _terminate(self, proc: subprocess.Popen[bytes], grace_s: float) -> None:
        self._kill_group(signal.SIGTERM)
        try:
            proc.wait(timeout=max(grace_s, 0.1))
        except subprocess.TimeoutExpired:
            self._kill_group(signal.SIGKILL)
            proc.wait()

    def _kill_group(self, sig: signal.Signals) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, sig)

    def _termination_message(self, exit_code: int) -> str:
        try:
            with self.termination_message_file.open("rb") as f:
                data = f.read(MAX_TERMINATION_MESSAGE_BYTES)
        except OSError:
            data = b""
        policy = self.container.get("terminationMessagePolicy", "File")
        if not data and exit_code != 0 and policy == "FallbackToLogsOnError":
            with contextlib.suppress(OSError):
                lines = self.log_path.read_bytes()[-64 * 1024 :].splitlines()[-FALLBACK_LOG_LINES:]
                data = b"\n".join(lines)[-FALLBACK_LOG_BYTES:]
        return data.decode(errors="replace")

    # -- status reports

    def _container_status(
        self,
        state: Obj,
        *,
        ready: bool,
        restart_count: int,
        last_state: Obj | None = None,
        container_id: str = "",
    ) -> Obj:
        container = self.container
        status: Obj = {
            "name": container["name"],
            "image": container.get("image", ""),
            "imageID": "",
            "ready": ready,
            "started": ready,
            "restartCount": restart_count,
            "state": state,
            "lastState": last_state or {},
        }
        if container_id:
            status["containerID"] = container_id
        return status

    def _report(
        self,
        phase: str,
        start_time: str,
        conditions: Mapping[str, tuple[str, str | None]],
        container_status: Obj,
        *,
        reason: str | None = None,
        message: str | None = None,
    ) -> None:
        def mutate(status: Obj) -> None:
            status["phase"] = phase
            status.setdefault("startTime", start_time)
            status["hostIP"] = POD_IP
            status["hostIPs"] = [{"ip": POD_IP}]
            if phase != "Pending":
                status["podIP"] = POD_IP
                status["podIPs"] = [{"ip": POD_IP}]
            if reason:
                status["reason"] = reason
                status["message"] = message or ""
            _set_conditions(status, conditions)
            status["containerStatuses"] = [container_status]

        self.agent.update_pod_status(self.namespace, self.name, self.uid, mutate)

    def _report_waiting(
        self,
        start_time: str,
        reason: str,
        message: str | None,
        *,
        restart_count: int = 0,
        last_state: Obj | None = None,
    ) -> None:
        waiting: Obj = {"reason": reason}
        if message:
            waiting["message"] = message
        status = self._container_status(
            {"waiting": waiting}, ready=False, restart_count=restart_count, last_state=last_state
        )
        # A container waiting to restart keeps its pod Running, as with the kubelet.
        self._report("Running" if restart_count else "Pending", start_time, PENDING_CONDITIONS, status)

    def _report_running(
        self, start_time: str, started_at: str, container_id: str, restart_count: int, last_state: Obj | None
    ) -> None:
        status = self._container_status(
            {"running": {"startedAt": started_at}},
            ready=True,
            restart_count=restart_count,
            last_state=last_state,
            container_id=container_id,
        )
        self._report("Running", start_time, RUNNING_CONDITIONS, status)

    def _finish(self, outcome: _Outcome, restart_count: int, *, deadline_exceeded: bool = False) -> None:
        """Reports the terminal phase (unless the pod is gone) and, if it is being deleted, deletes it."""
        if not self.gone.is_set():
            reason = message = None
            if deadline_exceeded:
                reason, message = (
                    "DeadlineExceeded",
                    "Pod was active on the node longer than the specified deadline",
                )
                if outcome.exit_code == 0:
                    outcome.exit_code, outcome.reason = 137, "Error"
            phase = "Succeeded" if outcome.exit_code == 0 else "Failed"
            status = self._container_status(
                {"terminated": outcome.terminated()},
                ready=False,
                restart_count=restart_count,
                container_id=outcome.container_id,
            )
            self._report(
                phase, outcome.started_at, TERMINAL_CONDITIONS, status, reason=reason, message=message
            )
        if self.delete_requested.is_set() and not self.gone.is_set():
            self.agent.delete_pod(self.namespace, self.name, self.uid)


# -- the agent ---------------------------------------------------------------------------------------


class NodeAgent:
    """The in-process agent: `start` registers the node and starts its threads; `stop` ends them."""

    def __init__(self, config: NodeAgentConfig) -> None:
        self.config = config
        self.stopping = threading.Event()
        self.kube = Kube.from_kubeconfig(config.kubeconfig, pool_maxsize=max(16, config.concurrency * 2 + 4))
        self.pool = ThreadPoolExecutor(max_workers=config.concurrency, thread_name_prefix="nodeagent-pod")
        self.control_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="nodeagent-ctl")
        self.runners: dict[str, _PodRunner] = {}
        self.finished: set[str] = set()
        self.pod_dirs: dict[tuple[str, str], Path] = {}
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._watch_response: urllib3.BaseHTTPResponse | None = None
        self._registered = False
        self._node_path = api_path("v1", "nodes", name=config.node_name)
        self._lease_path = api_path(
            "coordination.k8s.io/v1", "leases", namespace="kube-node-lease", name=config.node_name
        )

    # -- lifecycle

    def start(self) -> None:
        self.config.work_dir.mkdir(parents=True, exist_ok=True)
        left = kill_leftover_processes(self.config.work_dir)
        if left:
            self.log(f"killed {left} processes left by a previous agent")
        self.register_node()
        self._registered = True
        self.renew_lease()
        for name, target in (("heartbeat", self._heartbeat_loop), ("watch", self._watch_loop)):
            thread = threading.Thread(target=target, name=f"nodeagent-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        self.wait_schedulable()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stops watching and kills every pod process (no status is reported, like a vanished node)."""
        if self.stopping.is_set():
            return
        self.stopping.set()
        response = self._watch_response
        if response is not None:
            with contextlib.suppress(Exception):
                response.shutdown()
        with self._lock:
            runners = list(self.runners.values())
        for runner in runners:
            runner.kill()
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.control_pool.shutdown(wait=True, cancel_futures=True)
        for thread in self._threads:
            thread.join(timeout_s)
        kill_leftover_processes(self.config.work_dir)
        if self.config.deregister_on_stop and self._registered:
            with contextlib.suppress(KubeError):
                self.kube.delete(self._node_path)
            with contextlib.suppress(KubeError):
                self.kube.delete(self._lease_path)
        self.kube.close()

    def __enter__(self) -> NodeAgent:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log(self, message: str) -> None:
        print(f"[nodeagent {self.config.node_name}] {message}", file=sys.stderr, flush=True)

    def forget(self, uid: str) -> None:
        with self._lock:
            self.runners.pop(uid, None)
            self.finished.add(uid)

    # -- what tests can ask

    def logs(self, namespace: str, name: str) -> str:
        """The combined stdout/stderr of the latest pod of that name run here ('' if none)."""
        with self._lock:
            pod_dir = self.pod_dirs.get((namespace, name))
        if pod_dir is None:
            return ""
        return "\n".join(p.read_text(errors="replace") for p in sorted(pod_dir.glob("*.log")))

    def running_pids(self) -> list[int]:
        with self._lock:
            return [r.proc.pid for r in self.runners.values() if r.proc is not None and r.proc.poll() is None]

    # -- node, lease, heartbeat

    def _node_status(self) -> Obj:
        now = _now()
        capacity = dict(self.config.capacity)

        def condition(ctype: str, value: str, reason: str) -> Obj:
            return {
                "type": ctype,
                "status": value,
                "reason": reason,
                "message": "test node agent (a stand-in for the kubelet)",
                "lastHeartbeatTime": now,
                "lastTransitionTime": now,
            }

        return {
            "capacity": capacity,
            "allocatable": capacity,
            "conditions": [
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory"),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure"),
                condition("PIDPressure", "False", "KubeletHasSufficientPID"),
                condition("Ready", "True", "KubeletReady"),
            ],
            "addresses": [
                {"type": "InternalIP", "address": POD_IP},
                {"type": "Hostname", "address": self.config.node_name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
            "nodeInfo": {
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
                "kernelVersion": os.uname().release,
                "osImage": "webrelease test node agent",
                "containerRuntimeVersion": "nodeagent://1",
                "kubeletVersion": "",
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        }

    def register_node(self) -> None:
        name = self.config.node_name
        labels = {
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            AGENT_LABEL: "true",
            **self.config.labels,
        }
        body: Obj = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "labels": labels,
                "annotations": {AGENT_LABEL: "a test stand-in for the kubelet: pods run as local processes"},
            },
            "spec": {"taints": list(self.config.taints)} if self.config.taints else {},
            "status": self._node_status(),
        }
        try:
            self.kube.create(api_path("v1", "nodes"), body)
        except KubeError as exc:
            if exc.status != 409:
                raise
        self.update_node_status()

    def update_node_status(self) -> None:
        fresh = self._node_status()
        for _ in range(10):
            node = self.kube.find(self._node_path)
            if node is None:
                self.register_node()
                return
            old = {c["type"]: c for c in (node.get("status") or {}).get("conditions") or []}
            for c in fresh["conditions"]:
                prior = old.get(c["type"])
                if prior is not None and prior.get("status") == c["status"]:
                    c["lastTransitionTime"] = prior.get("lastTransitionTime", c["lastTransitionTime"])
            node["status"] = {**(node.get("status") or {}), **fresh}
            try:
                self.kube.replace(self._node_path + "/status", node)
                return
            except KubeError as exc:
                if exc.status != 409:
                    raise

    def renew_lease(self) -> None:
        name = self.config.node_name
        spec = {
            "holderIdentity": name,
            "leaseDurationSeconds": self.config.lease_duration_s,
            "renewTime": _micro_now(),
        }
        lease = self.kube.find(self._lease_path)
        if lease is None:
            node = self.kube.get(self._node_path)
            owner = {"apiVersion": "v1", "kind": "Node", "name": name, "uid": node["metadata"]["uid"]}
            body: Obj = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": name, "namespace": "kube-node-lease", "ownerReferences": [owner]},
                "spec": spec,
            }
            with contextlib.suppress(KubeError):
                self.kube.create(
                    api_path("coordination.k8s.io/v1", "leases", namespace="kube-node-lease"), body
                )
            return
        lease["spec"] = {**(lease.get("spec") or {}), **spec}
        with contextlib.suppress(KubeError):  # a conflict just waits for the next beat
            self.kube.replace(self._lease_path, lease)

    def _heartbeat_loop(self) -> None:
        beats = 0
        while not self.stopping.wait(self.config.heartbeat_s):
            beats += 1
            try:
                self.renew_lease()
                if beats % 4 == 0:
                    self.update_node_status()
            except Exception as exc:
                if not self.stopping.is_set():
                    self.log(f"heartbeat failed: {exc!r}")

    def wait_schedulable(self) -> None:
        """Waits until the node has no ``node.kubernetes.io/*`` taint left (lifted once it is Ready)."""
        deadline = time.monotonic() + self.config.ready_timeout_s
        delay = 0.1
        while True:
            node = self.kube.get(self._node_path)
            taints = (node.get("spec") or {}).get("taints") or []
            blocking = [t for t in taints if str(t.get("key", "")).startswith("node.kubernetes.io/")]
            if not blocking:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"node {self.config.node_name} still has taints {blocking}")
            time.sleep(delay)
            delay = min(delay * 1.5, 1.0)

    # -- pods

    def _watch_loop(self) -> None:
        pods = api_path("v1", "pods")
        selector = f"spec.nodeName={self.config.node_name}"
        resource_version: str | None = None
        while not self.stopping.is_set():
            try:
                if resource_version is None:
                    listing = self.kube.get(pods, fieldSelector=selector)
                    self._sync(list(listing.get("items") or []))
                    resource_version = str(listing["metadata"]["resourceVersion"])
                resource_version = self._watch(pods, selector, resource_version)
            except Exception as exc:
                if not self.stopping.is_set():
                    self.log(f"watch failed, relisting: {exc!r}")
                    resource_version = None
                    self.stopping.wait(1.0)

    def _watch(self, pods: str, selector: str, resource_version: str) -> str | None:
        """One watch request; returns where to resume, or None to relist (410 Gone)."""
        query = {
            "fieldSelector": selector,
            "watch": True,
            "allowWatchBookmarks": True,
            "resourceVersion": resource_version,
            "timeoutSeconds": 240,
        }
        response = self.kube.open("GET", pods, query=query, timeout=(10.0, 300.0), stream=True)
        self._watch_response = response
        try:
            if response.status == 410:
                return None
            if response.status >= 400:
                raise KubeError(response.status, "WATCH", pods, response.read().decode(errors="replace"))
            for event in Kube.events(response):
                if self.stopping.is_set():
                    break
                kind = event.get("type")
                obj = cast(Obj, event.get("object") or {})
                if kind == "ERROR":
                    return None  # 410 Gone, typically: relist
                rv = (obj.get("metadata") or {}).get("resourceVersion")
                if rv:
                    resource_version = str(rv)
                if kind == "DELETED":
                    self._on_deleted(obj)
                elif kind in ("ADDED", "MODIFIED"):
                    self._on_pod(obj)
            return resource_version
        finally:
            self._watch_response = None
            with contextlib.suppress(Exception):
                response.release_conn()

    def _sync(self, pods: list[Obj]) -> None:
        seen = set()
        for pod in pods:
            seen.add(pod["metadata"]["uid"])
            self._on_pod(pod)
        with self._lock:
            missing = [r for uid, r in self.runners.items() if uid not in seen]
        for runner in missing:
            runner.vanished()

    def _on_deleted(self, pod: Obj) -> None:
        with self._lock:
            runner = self.runners.get(pod["metadata"]["uid"])
        if runner is not None:
            runner.vanished()

    def _on_pod(self, pod: Obj) -> None:
        meta = pod["metadata"]
        uid = meta["uid"]
        status = pod.get("status") or {}
        terminal = status.get("phase") in ("Succeeded", "Failed")
        deleting = bool(meta.get("deletionTimestamp"))
        grace_s = float(meta.get("deletionGracePeriodSeconds") or 0)
        with self._lock:
            runner = self.runners.get(uid)
            done = uid in self.finished
        if runner is not None:
            runner.pod = {**runner.pod, "metadata": meta}
            if deleting and not runner.delete_requested.is_set():
                runner.request_delete(grace_s)
            return
        if done or terminal:
            if deleting and terminal:  # the kubelet confirms the deletion of a finished pod
                self.control_pool.submit(self.delete_pod, meta["namespace"], meta["name"], uid)
            return
        if not pod["spec"].get("containers"):
            return
        runner = _PodRunner(self, pod)
        with self._lock:
            self.runners[uid] = runner
            self.pod_dirs[(runner.namespace, runner.name)] = runner.dir
        statuses = status.get("containerStatuses") or []
        if any("running" in (cs.get("state") or {}) for cs in statuses):
            # Started by an earlier agent whose process is gone: report it like a vanished container.
            with runner.lock:
                runner.state = runner.DONE
            if deleting:
                runner.delete_requested.set()
            self.control_pool.submit(runner._finish_unstarted)
            return
        if deleting:
            runner.request_delete(grace_s)
            return
        self.pool.submit(runner.run)

    def delete_pod(self, namespace: str, name: str, uid: str) -> None:
        """The kubelet's final, grace-0 delete of a pod it has stopped."""
        body = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "gracePeriodSeconds": 0,
            "preconditions": {"uid": uid},
        }
        with contextlib.suppress(KubeError):  # gone already, or another pod by that name by now
            self.kube.delete(api_path("v1", "pods", namespace=namespace, name=name), body)

    def update_pod_status(self, namespace: str, name: str, uid: str, mutate: Callable[[Obj], None]) -> bool:
        """Read-modify-write of the pod's status, retried on conflicts. False if the pod is gone."""
        path = api_path("v1", "pods", namespace=namespace, name=name)
        for _ in range(20):
            pod = self.kube.find(path)
            if pod is None or pod["metadata"]["uid"] != uid:
                return False
            if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                return True  # terminal phases are final
            mutate(pod.setdefault("status", {}))
            try:
                self.kube.replace(path + "/status", pod)
                return True
            except KubeError as exc:
                if exc.status == 404:
                    return False
                if exc.status != 409:
                    raise
        return False

    # -- environment

    def _source_data(self, kind: str, namespace: str, name: str) -> dict[str, str] | None:
        plural = "secrets" if kind == "secret" else "configmaps"
        obj = self.kube.find(api_path("v1", plural, namespace=namespace, name=name))
        if obj is None:
            return None
        if kind == "secret":
            return {
                k: base64.b64decode(v).decode(errors="replace") for k, v in (obj.get("data") or {}).items()
            }
        data = {k: str(v) for k, v in (obj.get("data") or {}).items()}
        for k, v in (obj.get("binaryData") or {}).items():
            data[k] = base64.b64decode(v).decode(errors="replace")
        return data

    def resolve_env(self, pod: Obj, container: Obj) -> dict[str, str]:
        """The container's variables, resolved as the kubelet does (``envFrom``, then ``env``)."""
        namespace = pod["metadata"]["namespace"]
        env: dict[str, str] = {}
        for source in container.get("envFrom") or []:
            prefix = source.get("prefix") or ""
            for kind, key in (("configmap", "configMapRef"), ("secret", "secretRef")):
                ref = source.get(key)
                if ref is None:
                    continue
                data = self._source_data(kind, namespace, ref["name"])
                if data is None:
                    if ref.get("optional"):
                        continue
                    raise ContainerConfigError(f'{kind} "{ref["name"]}" not found')
                for k, v in data.items():
                    env[prefix + k] = v
        for var in container.get("env") or []:
            name = var["name"]
            if "valueFrom" not in var:
                env[name] = expand(str(var.get("value") or ""), env)
                continue
            value = self._value_from(pod, container, var["valueFrom"], namespace)
            if value is not None:
                env[name] = value
        return env

    def _value_from(self, pod: Obj, container: Obj, source: Obj, namespace: str) -> str | None:
        if "fieldRef" in source:
            return field_value(pod, source["fieldRef"]["fieldPath"])
        if "resourceFieldRef" in source:
            return self._resource_value(container, source["resourceFieldRef"])
        for kind, key in (("secret", "secretKeyRef"), ("configmap", "configMapKeyRef")):
            ref = source.get(key)
            if ref is None:
                continue
            data = self._source_data(kind, namespace, ref["name"])
            if data is None or ref["key"] not in data:
                if ref.get("optional"):
                    return None
                what = f'{kind} "{ref["name"]}"'
                raise ContainerConfigError(
                    f"{what} not found" if data is None else f'key "{ref["key"]}" not in {what}'
                )
            return data[ref["key"]]
        raise ContainerConfigError(f"unsupported valueFrom: {sorted(source)}")

    def _resource_value(self, container: Obj, ref: Obj) -> str:
        kind, _, name = str(ref["resource"]).partition(".")
        resources = container.get("resources") or {}
        value = (resources.get(kind) or {}).get(name)
        if value is None and kind == "requests":
            value = (resources.get("limits") or {}).get(name)
        if value is None:  # no limit: the node's allocatable, as the kubelet does
            value = self.config.capacity.get(name, "0")
        divisor = parse_quantity(str(ref.get("divisor") or "1"))
        return str(math.ceil(parse_quantity(str(value)) / divisor))


# -- the agent as a separate process -----------------------------------------------------------------

READY_LINE = "NODE-AGENT-READY"


class NodeAgentProcess:
    """`NodeAgent` in a child process (``python -m tests.harness.nodeagent``), for tests that stop,
    pause or kill the agent. `start` returns once the node is schedulable."""

    def __init__(self, config: NodeAgentConfig, log_path: Path) -> None:
        self.config = config
        self.log_path = log_path
        self.proc: subprocess.Popen[str] | None = None

    def argv(self) -> list[str]:
        c = self.config
        argv = [
            sys.executable,
            "-m",
            "tests.harness.nodeagent",
            f"--kubeconfig={c.kubeconfig}",
            f"--work-dir={c.work_dir}",
            f"--node-name={c.node_name}",
            f"--concurrency={c.concurrency}",
            f"--max-grace={c.max_grace_s}",
            f"--heartbeat={c.heartbeat_s}",
        ]
        if c.path:
            argv.append(f"--path={c.path}")
        for taint in c.taints:
            argv.append(f"--taint={taint['key']}={taint.get('value', '')}:{taint['effect']}")
        argv += [f"--label={key}={value}" for key, value in c.labels.items()]
        argv += [f"--env={key}={value}" for key, value in c.extra_env.items()]
        if c.deregister_on_stop:
            argv.append("--deregister-on-stop")
        return argv

    def start(self, timeout_s: float = 90.0) -> None:
        repo_root = Path(__file__).resolve().parents[2]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as stderr:
            self.proc = subprocess.Popen(
                self.argv(),
                cwd=repo_root,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                start_new_session=True,
            )
        stdout = self.proc.stdout
        assert stdout is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            readable, _, _ = select.select([stdout], [], [], 0.5)
            if readable:
                line = stdout.readline()
                if line.strip() == READY_LINE:
                    return
                if not line:
                    break
            elif self.proc.poll() is not None:
                break
        self.stop()
        log = self.log_path.read_text(errors="replace")[-4000:]
        raise RuntimeError(f"the node agent process did not become ready; {self.log_path}:\n{log}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def pause(self) -> None:
        """SIGSTOP: no heartbeats, no status updates; its pods' processes keep running."""
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL, like a crash: pod processes survive until the next agent (or `stop`) removes them."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM (the agent kills its pods' processes), then makes sure nothing of it is left."""
        proc = self.proc
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGCONT)
                os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
            self.proc = None
        kill_leftover_processes(self.config.work_dir)


def _parse_taint(text: str) -> Obj:
    key_value, _, effect = text.rpartition(":")
    key, _, value = key_value.partition("=")
    taint: Obj = {"key": key, "effect": effect}
    if value:
        taint["value"] = value
    return taint


def _pairs(items: list[str]) -> dict[str, str]:
    return dict(item.split("=", 1) for item in items)


@contextlib.contextmanager
def _stop_on_signals(event: threading.Event) -> Iterator[None]:
    def handler(signum: int, frame: object) -> None:
        event.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.harness.nodeagent",
        description="A TEST STAND-IN FOR THE KUBELET: runs pods' commands as local processes (no images).",
    )
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--work-dir", type=Path, required=True)
    parser.add_argument("--node-name", default=DEFAULT_NODE_NAME)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--path", help="PATH for pod processes (default: this process's PATH)")
    parser.add_argument("--max-grace", type=float, default=30.0)
    parser.add_argument("--heartbeat", type=float, default=10.0)
    parser.add_argument("--taint", action="append", default=[], help="key=value:Effect")
    parser.add_argument("--label", action="append", default=[], help="key=value")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for every pod process")
    parser.add_argument("--deregister-on-stop", action="store_true")
    args = parser.parse_args(argv)
    config = NodeAgentConfig(
        kubeconfig=args.kubeconfig,
        work_dir=args.work_dir,
        node_name=args.node_name,
        concurrency=args.concurrency,
        path=args.path,
        max_grace_s=args.max_grace,
        heartbeat_s=args.heartbeat,
        taints=tuple(_parse_taint(t) for t in args.taint),
        labels=_pairs(args.label),
        extra_env=_pairs(args.env),
        deregister_on_stop=args.deregister_on_stop,
    )
    stop = threading.Event()
    with _stop_on_signals(stop):
        agent = NodeAgent(config)
        try:
            agent.start()
            print(READY_LINE, flush=True)
            stop.wait()
        finally:
            agent.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
