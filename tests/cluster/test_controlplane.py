"""Acceptance of the cluster tier's foundation (issue 3): the real control plane built from the upstream
Go modules, with the test node agent running Job pods as local processes.

Everything here goes through the real apiserver, scheduler, Job controller and garbage collector; the
node agent only plays the kubelet. Tests that read files written by pod processes need the local node
agent and are skipped against an external cluster.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.harness.cluster_fixtures import wait_until
from tests.harness.controlplane import (
    ClusterSettings,
    ControlPlane,
    Kube,
    KubeError,
    LocalControlPlane,
    Obj,
    api_path,
    ensure_binaries,
    pinned_k8s_version,
)
from tests.harness.nodeagent import NodeAgent, NodeAgentConfig, NodeAgentProcess

pytestmark = pytest.mark.cluster

TIMEOUT_S = 120.0


def _local(node_agent: NodeAgent | None) -> NodeAgent:
    if node_agent is None:
        pytest.skip("reads files written by pod processes: needs the local test node agent")
    return node_agent


def _jobs(namespace: str, name: str | None = None) -> str:
    return api_path("batch/v1", "jobs", namespace=namespace, name=name)


def _pods(namespace: str, name: str | None = None) -> str:
    return api_path("v1", "pods", namespace=namespace, name=name)


def _container(code: str, **extra: Any) -> Obj:
    return {
        "name": "main",
        "image": "ignored.invalid/image:1",
        "command": ["python", "-c", textwrap.dedent(code)],
    } | extra


def _indexed_job(
    name: str, code: str, *, completions: int, env: list[Obj], backoff_limit_per_index: int | None = None
) -> Obj:
    spec: Obj = {
        "completionMode": "Indexed",
        "completions": completions,
        "parallelism": completions,
        "template": {"spec": {"restartPolicy": "Never", "containers": [_container(code, env=env)]}},
    }
    if backoff_limit_per_index is None:
        spec["backoffLimit"] = 0
    else:
        spec["backoffLimitPerIndex"] = backoff_limit_per_index
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name}, "spec": spec}


def _condition(obj: Obj, ctype: str) -> Obj | None:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == ctype and c["status"] == "True"), None)


def _finished_job(kube: Kube, namespace: str, name: str) -> Obj:
    def finished() -> Obj | None:
        job = kube.get(_jobs(namespace, name))
        return job if _condition(job, "Complete") or _condition(job, "Failed") else None

    return wait_until(f"Job {namespace}/{name} to finish", finished, timeout_s=TIMEOUT_S)


def _terminated_pod(kube: Kube, namespace: str, name: str) -> Obj:
    def terminated() -> Obj | None:
        pod = kube.get(_pods(namespace, name))
        return pod if pod["status"].get("phase") in ("Succeeded", "Failed") else None

    return wait_until(f"pod {namespace}/{name} to terminate", terminated, timeout_s=TIMEOUT_S)


def _terminated_state(pod: Obj) -> Obj:
    (status,) = pod["status"]["containerStatuses"]
    return dict(status["state"]["terminated"])


def test_apiserver_reports_the_pinned_version(control_plane: ControlPlane, kube: Kube) -> None:
    if control_plane.external:
        pytest.skip("an external cluster runs its own version")
    version = pinned_k8s_version()
    info = kube.get("/version")
    assert info["gitVersion"] == f"v{version}"
    assert (info["major"], info["minor"]) == tuple(version.split(".")[:2])
    kubectl = json.loads(control_plane.kubectl("version", "-o", "json").stdout)
    assert kubectl["serverVersion"]["gitVersion"] == f"v{version}"
    assert kubectl["clientVersion"]["gitVersion"] == f"v{version}"


def test_indexed_job_runs_every_index_with_its_own_environment(
    kube: Kube, namespace: str, node_agent: NodeAgent | None, tmp_path: Path
) -> None:
    _local(node_agent)
    kube.create(
        api_path("v1", "secrets", namespace=namespace),
        {"metadata": {"name": "creds"}, "stringData": {"token": "s3cr3t"}},
    )
    kube.create(
        api_path("v1", "configmaps", namespace=namespace),
        {"metadata": {"name": "settings"}, "data": {"region": "eu-x"}},
    )
    index_annotation = "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    env: list[Obj] = [
        {"name": "OUT", "value": str(tmp_path)},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "INDEX_FROM_ANNOTATION", "valueFrom": {"fieldRef": {"fieldPath": index_annotation}}},
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
        {"name": "REGION", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "region"}}},
        {"name": "GREETING", "value": "index $(INDEX_FROM_ANNOTATION) in $(REGION)"},
    ]
    code = """
        import json, os, pathlib
        keys = ["JOB_COMPLETION_INDEX", "POD_NAME", "POD_NAMESPACE", "INDEX_FROM_ANNOTATION", "TOKEN",
                "REGION", "GREETING"]
        seen = {k: os.environ.get(k) for k in keys}
        seen["cwd"] = os.getcwd()
        out = pathlib.Path(os.environ["OUT"]) / f"index-{os.environ['JOB_COMPLETION_INDEX']}.json"
        out.write_text(json.dumps(seen))
    """
    kube.create(_jobs(namespace), _indexed_job("five", code, completions=5, env=env))

    job = _finished_job(kube, namespace, "five")

    assert _condition(job, "Complete") is not None, job["status"]
    assert job["status"]["succeeded"] == 5
    assert "failed" not in job["status"]
    assert job["status"]["completedIndexes"] == "0-4"
    assert sorted(p.name for p in tmp_path.glob("index-*.json")) == [f"index-{i}.json" for i in range(5)]
    seen = [json.loads((tmp_path / f"index-{i}.json").read_text()) for i in range(5)]
    for index, s in enumerate(seen):
        assert s["JOB_COMPLETION_INDEX"] == str(index)
        assert s["INDEX_FROM_ANNOTATION"] == str(index)
        assert s["POD_NAMESPACE"] == namespace
        assert s["POD_NAME"].startswith(f"five-{index}-")
        assert s["TOKEN"] == "s3cr3t"
        assert s["REGION"] == "eu-x"
        assert s["GREETING"] == f"index {index} in eu-x"
    assert len({s["POD_NAME"] for s in seen}) == 5
    assert len({s["cwd"] for s in seen}) == 5  # every pod has a working directory of its own
    pods = kube.items(_pods(namespace), labelSelector="job-name=five")
    assert sorted(p["status"]["phase"] for p in pods) == ["Succeeded"] * 5
    for pod in pods:
        terminated = _terminated_state(pod)
        assert (terminated["exitCode"], terminated["reason"]) == (0, "Completed")
        assert pod["status"]["podIP"] == "127.0.0.1"
        assert pod["status"]["startTime"]


# An index fails (exit 1) the first time it runs, or (exit 2) every time; a marker file counts its runs.
FLAKY = """
    import os, pathlib, sys
    index = os.environ["JOB_COMPLETION_INDEX"]
    marker = pathlib.Path(os.environ["OUT"]) / f"ran-{index}"
    first = not marker.exists()
    with marker.open("a") as f:
        f.write("x")
    if index in os.environ["ALWAYS_FAIL"].split(","):
        sys.exit(2)
    if index in os.environ["FAIL_ONCE"].split(",") and first:
        sys.exit(1)
"""


def _flaky_env(tmp_path: Path, *, fail_once: str, always_fail: str) -> list[Obj]:
    return [
        {"name": "OUT", "value": str(tmp_path)},
        {"name": "FAIL_ONCE", "value": fail_once},
        {"name": "ALWAYS_FAIL", "value": always_fail},
    ]


def test_index_failing_once_is_retried_and_the_job_completes(
    kube: Kube, namespace: str, node_agent: NodeAgent | None, tmp_path: Path
) -> None:
    _local(node_agent)
    env = _flaky_env(tmp_path, fail_once="1", always_fail="")
    kube.create(
        _jobs(namespace), _indexed_job("retry", FLAKY, completions=3, env=env, backoff_limit_per_index=1)
    )

    job = _finished_job(kube, namespace, "retry")

    assert _condition(job, "Complete") is not None, job["status"]
    assert job["status"]["succeeded"] == 3
    assert job["status"]["failed"] == 1
    assert job["status"]["completedIndexes"] == "0-2"
    assert "failedIndexes" not in job["status"] or job["status"]["failedIndexes"] == ""
    assert [(tmp_path / f"ran-{i}").read_text() for i in range(3)] == ["x", "xx", "x"]


def test_index_that_always_fails_ends_in_failed_indexes(
    kube: Kube, namespace: str, node_agent: NodeAgent | None, tmp_path: Path
) -> None:
    _local(node_agent)
    env = _flaky_env(tmp_path, fail_once="", always_fail="2")
    kube.create(
        _jobs(namespace), _indexed_job("doomed", FLAKY, completions=3, env=env, backoff_limit_per_index=1)
    )

    job = _finished_job(kube, namespace, "doomed")

    failed_condition = _condition(job, "Failed")
    assert failed_condition is not None, job["status"]
    assert failed_condition["reason"] == "FailedIndexes"
    assert job["status"]["failedIndexes"] == "2"
    assert job["status"]["completedIndexes"] == "0,1"
    assert job["status"]["succeeded"] == 2
    assert job["status"]["failed"] == 2  # the first try and its one retry
    assert (tmp_path / "ran-2").read_text() == "xx"
    failed = [
        p
        for p in kube.items(_pods(namespace), labelSelector="job-name=doomed")
        if p["status"]["phase"] == "Failed"
    ]
    assert len(failed) == 2
    for pod in failed:
        assert pod["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] == "2"
        terminated = _terminated_state(pod)
        assert (terminated["exitCode"], terminated["reason"]) == (2, "Error")


def _pod(name: str, container: Obj) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"restartPolicy": "Never", "containers": [container]},
    }


def test_termination_message_reaches_the_container_status(
    kube: Kube, namespace: str, node_agent: NodeAgent | None
) -> None:
    agent = _local(node_agent)
    write = """
        import os, sys
        print("to the log")
        with open(os.environ["TERMINATION_MESSAGE_PATH"], "w") as f:
            f.write(os.environ["MESSAGE"] * int(os.environ["REPEAT"]))
        sys.exit(int(os.environ["CODE"]))
    """

    def env(message: str, repeat: int, code: int) -> list[Obj]:
        values = {"MESSAGE": message, "REPEAT": str(repeat), "CODE": str(code)}
        return [{"name": k, "value": v} for k, v in values.items()]

    summary = '{"customers": 3, "failed": ["acme"]}'
    summary_container = _container(
        write, env=env(summary, 1, 3), terminationMessagePath="/var/run/webrelease/summary"
    )
    kube.create(_pods(namespace), _pod("summary", summary_container))
    kube.create(_pods(namespace), _pod("big", _container(write, env=env("x", 5000, 0))))
    fallback = _container(
        "import sys; print('last words'); sys.exit(4)", terminationMessagePolicy="FallbackToLogsOnError"
    )
    kube.create(_pods(namespace), _pod("fallback", fallback))

    pod = _terminated_pod(kube, namespace, "summary")
    assert pod["status"]["phase"] == "Failed"
    terminated = _terminated_state(pod)
    assert (terminated["exitCode"], terminated["reason"], terminated["message"]) == (3, "Error", summary)
    assert terminated["startedAt"] and terminated["finishedAt"]
    assert "to the log" in agent.logs(namespace, "summary")

    big = _terminated_pod(kube, namespace, "big")
    assert big["status"]["phase"] == "Succeeded"
    terminated = _terminated_state(big)
    assert terminated["reason"] == "Completed"
    assert terminated["message"] == "x" * 4096  # the kubelet's cap

    terminated = _terminated_state(_terminated_pod(kube, namespace, "fallback"))
    assert (terminated["exitCode"], terminated["message"].strip()) == (4, "last words")


SLEEPER = """
    import os, pathlib, time
    pathlib.Path(os.environ["OUT"], os.environ["POD_NAME"] + ".pid").write_text(str(os.getpid()))
    time.sleep(600)
"""


def _sleeper_env(tmp_path: Path) -> list[Obj]:
    return [
        {"name": "OUT", "value": str(tmp_path)},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    ]


def _alive(pid: int) -> bool:
    """Whether the process exists and has not exited (a zombie has)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def test_deleting_the_job_deletes_its_pods_through_the_garbage_collector(
    kube: Kube, namespace: str, node_agent: NodeAgent | None, tmp_path: Path
) -> None:
    _local(node_agent)
    job = _indexed_job("sleepers", SLEEPER, completions=2, env=_sleeper_env(tmp_path))
    job["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 5
    kube.create(_jobs(namespace), job)

    def both_running() -> bool:
        pods = kube.items(_pods(namespace), labelSelector="job-name=sleepers")
        running = [p for p in pods if p["status"].get("phase") == "Running"]
        return len(running) == 2 and len(list(tmp_path.glob("*.pid"))) == 2

    wait_until("both pods running", both_running, timeout_s=TIMEOUT_S)
    pids = [int(p.read_text()) for p in tmp_path.glob("*.pid")]
    assert all(_alive(pid) for pid in pids)

    kube.delete(_jobs(namespace, "sleepers"), {"propagationPolicy": "Background"})

    wait_until(
        "the Job's pods to be deleted",
        lambda: not kube.items(_pods(namespace), labelSelector="job-name=sleepers"),
        timeout_s=TIMEOUT_S,
    )
    wait_until("the pods' processes to exit", lambda: not any(_alive(pid) for pid in pids), timeout_s=30)
    assert kube.items(_jobs(namespace)) == []


def test_node_agent_runs_as_a_separate_process_and_leaves_nothing_behind(
    control_plane: ControlPlane, kube: Kube, namespace: str, node_agent: NodeAgent | None, tmp_path: Path
) -> None:
    _local(node_agent)
    node_name = f"proc-{namespace}"[:63]
    taint = {"key": "webrelease.dev/dedicated", "value": node_name, "effect": "NoSchedule"}
    config = NodeAgentConfig(
        kubeconfig=control_plane.kubeconfig,
        work_dir=tmp_path / "agent",
        node_name=node_name,
        path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        taints=(taint,),
        deregister_on_stop=True,
    )
    agent = NodeAgentProcess(config, tmp_path / "agent.log")
    agent.start()
    try:
        pod = _pod("on-proc-agent", _container(SLEEPER, env=_sleeper_env(tmp_path)))
        pod["spec"]["nodeSelector"] = {"kubernetes.io/hostname": node_name}
        pod["spec"]["tolerations"] = [{**taint, "operator": "Equal"}]
        kube.create(_pods(namespace), pod)
        pid_file = tmp_path / "on-proc-agent.pid"
        wait_until(
            "the pod to run on the process agent's node",
            lambda: (
                kube.get(_pods(namespace, "on-proc-agent"))["status"].get("phase") == "Running"
                and pid_file.exists()
            ),
            timeout_s=TIMEOUT_S,
        )
        assert kube.get(_pods(namespace, "on-proc-agent"))["spec"]["nodeName"] == node_name
        pid = int(pid_file.read_text())
        assert _alive(pid)
    finally:
        agent.stop()
    wait_until("the pod's process to end with its agent", lambda: not _alive(pid), timeout_s=30)
    assert kube.find(api_path("v1", "nodes", name=node_name)) is None


def test_a_second_control_plane_starts_warm_and_stops_without_leftovers(
    control_plane: ControlPlane, cluster_settings: ClusterSettings, tmp_path: Path
) -> None:
    """Also measures the warm start (binaries cached); the time is printed, not asserted."""
    if control_plane.external:
        pytest.skip("starts a local control plane")
    local = LocalControlPlane(ensure_binaries(cluster_settings), tmp_path / "cp2")
    try:
        plane = local.start()
        pids = [c.proc.pid for c in local.components if c.proc is not None]
        assert len(pids) == 4
        with plane.kube() as kube:
            assert kube.get("/version")["gitVersion"] == f"v{pinned_k8s_version()}"
        print(f"\nwarm start of a second control plane: {plane.start_seconds:.1f} s")
    finally:
        local.stop()
    assert not any(_alive(pid) for pid in pids)
    assert (tmp_path / "cp2" / "logs" / "kube-apiserver.log").stat().st_size > 0


def test_a_service_account_authenticates_with_a_requested_token(
    control_plane: ControlPlane, kube: Kube, namespace: str, tmp_path: Path
) -> None:
    kube.create(api_path("v1", "serviceaccounts", namespace=namespace), {"metadata": {"name": "reader"}})
    request = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {"expirationSeconds": 600},
    }
    token_path = api_path("v1", "serviceaccounts", namespace=namespace, name="reader", subresource="token")
    token = kube.create(token_path, request)["status"]["token"]
    kubeconfig = control_plane.kubeconfig_for_token(token, tmp_path / "reader.kubeconfig")
    configmaps = api_path("v1", "configmaps", namespace=namespace)

    with Kube.from_kubeconfig(kubeconfig) as reader:
        review = reader.create(
            api_path("authentication.k8s.io/v1", "selfsubjectreviews"),
            {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
        )
        assert review["status"]["userInfo"]["username"] == f"system:serviceaccount:{namespace}:reader"
        with pytest.raises(KubeError) as denied:
            reader.items(configmaps)
        assert denied.value.status == 403  # authenticated, but RBAC grants nothing yet

        rbac = "rbac.authorization.k8s.io/v1"
        rule = {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}
        kube.create(
            api_path(rbac, "roles", namespace=namespace), {"metadata": {"name": "r"}, "rules": [rule]}
        )
        binding = {
            "metadata": {"name": "r"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"},
            "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}],
        }
        kube.create(api_path(rbac, "rolebindings", namespace=namespace), binding)

        def allowed() -> bool:
            try:
                return isinstance(reader.items(configmaps), list)
            except KubeError as exc:
                if exc.status == 403:
                    return False
                raise

        wait_until("RBAC to allow the ServiceAccount to list ConfigMaps", allowed, timeout_s=30)
        names = [c["metadata"]["name"] for c in reader.items(configmaps)]
        assert "kube-root-ca.crt" in names  # published by the root-ca-certificate-publisher controller


def test_node_agent_reports_start_errors_deadlines_and_missing_config_like_a_kubelet(
    kube: Kube, namespace: str, node_agent: NodeAgent | None
) -> None:
    _local(node_agent)
    no_command = _pod("no-command", {"name": "main", "image": "ignored", "args": ["--help"]})
    kube.create(_pods(namespace), no_command)
    slow = _pod("slow", _container("import time; time.sleep(600)"))
    slow["spec"]["activeDeadlineSeconds"] = 2
    kube.create(_pods(namespace), slow)
    missing = _container(
        "pass", env=[{"name": "X", "valueFrom": {"secretKeyRef": {"name": "absent", "key": "k"}}}]
    )
    kube.create(_pods(namespace), _pod("missing-secret", missing))

    pod = _terminated_pod(kube, namespace, "no-command")
    assert pod["status"]["phase"] == "Failed"
    assert _terminated_state(pod)["reason"] == "StartError"

    pod = _terminated_pod(kube, namespace, "slow")
    assert (pod["status"]["phase"], pod["status"]["reason"]) == ("Failed", "DeadlineExceeded")
    assert _terminated_state(pod)["exitCode"] != 0

    def waiting_reason() -> str | None:
        statuses = kube.get(_pods(namespace, "missing-secret"))["status"].get("containerStatuses") or []
        return statuses[0]["state"].get("waiting", {}).get("reason") if statuses else None

    assert wait_until("the missing Secret to be reported", waiting_reason) == "CreateContainerConfigError"
    kube.create(
        api_path("v1", "secrets", namespace=namespace),
        {"metadata": {"name": "absent"}, "stringData": {"k": "v"}},
    )
    pod = _terminated_pod(kube, namespace, "missing-secret")  # the agent retries, as the kubelet does
    assert pod["status"]["phase"] == "Succeeded"
