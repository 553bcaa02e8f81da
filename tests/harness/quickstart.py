"""``make cluster``: a local cluster with webrelease installed and the example release applied.

One command from a fresh clone (``make cluster``, or ``scripts/cluster.sh``): it builds what is
missing (the control plane binaries, versitygw, helm: cached under ``~/.cache/webrelease``), then
starts, on 127.0.0.1 only,

1. the control plane of the cluster tier (etcd, kube-apiserver, kube-controller-manager,
   kube-scheduler) and the test node agent, which runs each pod's command as a local process;
2. an S3 server (versitygw) with the buckets the example release names;
3. webrelease, installed with ``helm install`` from ``charts/webrelease`` into ``webrelease-system``.
   The node agent cannot give a pod its ServiceAccount token, so the chart's operator pod is kept
   Pending and its exact command line and environment run here instead, authenticated as the chart's
   ServiceAccount (a TokenRequest token) - what the chart grants is what it gets;
4. the example: namespace ``shop``, the S3 Secret, the customer ConfigMap from
   ``examples/customers.jsonl``, the example build in ``s3://builds/web/2026-11-28.1/``, and
   ``manifests/examples/release.yaml`` applied with the local S3 endpoint.

It then prints what to ``export`` and what to run next, and keeps everything running until Ctrl-C.
``--check`` instead waits for the release to complete, checks one site, stops everything and exits
0 (``tests/cluster/test_quickstart.py`` runs it so).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import yaml
from kubernetes import client as k8s_client

from tests.harness.controlplane import ClusterSettings, ControlPlane, LocalControlPlane, ensure_binaries
from tests.harness.helm import CHART, helm, helm_binary, template, values_args
from tests.harness.nodeagent import NodeAgent, NodeAgentConfig
from tests.harness.s3server import S3Endpoint, S3Server, free_port

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "manifests" / "examples" / "release.yaml"
BUILD = ROOT / "examples" / "build"
OVERRIDES = ROOT / "examples" / "overrides"
CUSTOMERS = ROOT / "examples" / "customers.jsonl"
RELEASE, SYSTEM = "webrelease", "webrelease-system"
NAMESPACE = "shop"
#: Keeps the chart's operator pod Pending (no node has this label); its command runs here instead.
PENDING = {"operator": {"nodeSelector": {"webrelease.dev/quickstart": "runs-the-operator-locally"}}}
VENV_BIN = Path(sys.executable).parent


def say(out: TextIO, text: str) -> None:
    print(text, file=out, flush=True)


def _bucket_and_key(url: str) -> tuple[str, str]:
    bucket, _, key = url.removeprefix("s3://").partition("/")
    return bucket, key


def example_release(endpoint: S3Endpoint) -> dict[str, Any]:
    """The example release as a user applies it, pointed at the local S3 server."""
    doc: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    doc = copy.deepcopy(doc)
    doc["spec"]["storage"]["endpointUrl"] = endpoint.endpoint_url
    return doc


def _upload(endpoint: S3Endpoint, folder: Path, url: str) -> int:
    client = endpoint.client()
    bucket, prefix = _bucket_and_key(url)
    n = 0
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        client.put_object(
            Bucket=bucket, Key=prefix + path.relative_to(folder).as_posix(), Body=path.read_bytes()
        )
        n += 1
    return n


def prepare_storage(endpoint: S3Endpoint, release: dict[str, Any]) -> None:
    """The buckets the release names, the build, and the customers' overrides."""
    spec = release["spec"]
    urls = [spec["source"]["url"], spec["target"]["url"], spec["reports"]["url"]]
    if spec.get("overrides"):
        urls.append(spec["overrides"]["url"])
    for bucket in sorted({_bucket_and_key(u)[0] for u in urls}):
        endpoint.make_bucket(bucket)
    _upload(endpoint, BUILD, spec["source"]["url"])
    if spec.get("overrides"):
        template_url = spec["overrides"]["url"]
        for customer in sorted(p for p in OVERRIDES.iterdir() if p.is_dir()):
            _upload(endpoint, customer, template_url.replace("{id}", customer.name))


def _service_account_kubeconfig(plane: ControlPlane, namespace: str, name: str, path: Path) -> Path:
    api = plane.api_client()
    request = k8s_client.AuthenticationV1TokenRequest(spec=k8s_client.V1TokenRequestSpec(audiences=[]))
    token = k8s_client.CoreV1Api(api).create_namespaced_service_account_token(name, namespace, body=request)
    assert token.status is not None and token.status.token
    return plane.kubeconfig_for_token(
        token.status.token, path, user=f"system:serviceaccount:{namespace}:{name}"
    )


@contextlib.contextmanager
def operator_as_the_chart(plane: ControlPlane, work: Path, out: TextIO) -> Iterator[subprocess.Popen[bytes]]:
    """``helm install`` the chart, then run its operator's command line and environment here, as its
    ServiceAccount."""
    helm_env = {
        "HELM_CACHE_HOME": str(work / "helm" / "cache"),
        "HELM_CONFIG_HOME": str(work / "helm" / "config"),
        "HELM_DATA_HOME": str(work / "helm" / "data"),
        "KUBECONFIG": str(plane.kubeconfig),
    }
    say(out, f"== helm install {RELEASE} charts/webrelease -n {SYSTEM} --create-namespace")
    helm(
        "install",
        RELEASE,
        str(CHART),
        "-n",
        SYSTEM,
        "--create-namespace",
        *values_args(PENDING, work / "helm"),
        env=helm_env,
    )
    (dep,) = [
        o
        for o in template(work / "helm", PENDING, release=RELEASE, namespace=SYSTEM)
        if o["kind"] == "Deployment"
    ]
    pod_spec = dep["spec"]["template"]["spec"]
    (container,) = pod_spec["containers"]
    kubeconfig = _service_account_kubeconfig(
        plane, SYSTEM, pod_spec["serviceAccountName"], work / "operator.kubeconfig"
    )
    pod = f"{dep['metadata']['name']}-local"
    fields = {"metadata.namespace": SYSTEM, "metadata.name": pod}
    env = {
        e["name"]: e["value"] if "value" in e else fields[e["valueFrom"]["fieldRef"]["fieldPath"]]
        for e in container["env"]
    }
    liveness = free_port()
    args = [
        f"--liveness=http://127.0.0.1:{liveness}/healthz" if a.startswith("--liveness=") else a
        for a in container["args"]
    ]
    env |= {
        "KUBECONFIG": str(kubeconfig),
        "HOME": str(work),
        "PATH": os.pathsep.join([str(VENV_BIN), os.environ.get("PATH", "")]),
        "WEBRELEASE_METRICS_PORT": "0",
    }
    log = work / "operator.log"
    say(
        out,
        f"== the chart's operator, as ServiceAccount {SYSTEM}/{pod_spec['serviceAccountName']} (log: {log})",
    )
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [str(VENV_BIN / container["command"][0]), *args],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)


def apply_example(plane: ControlPlane, endpoint: S3Endpoint, release: dict[str, Any], out: TextIO) -> None:
    say(out, f"== namespace {NAMESPACE}: Secret s3-credentials, ConfigMap customers, the example release")
    plane.kubectl("create", "namespace", NAMESPACE)
    plane.kubectl(
        "-n",
        NAMESPACE,
        "create",
        "secret",
        "generic",
        release["spec"]["storage"]["secretRef"]["name"],
        f"--from-literal=AWS_ACCESS_KEY_ID={endpoint.access_key}",
        f"--from-literal=AWS_SECRET_ACCESS_KEY={endpoint.secret_key}",
    )
    ref = release["spec"]["customers"]["configMapRef"]
    plane.kubectl(
        "-n", NAMESPACE, "create", "configmap", ref["name"], f"--from-file={ref['key']}={CUSTOMERS}"
    )
    plane.kubectl("-n", NAMESPACE, "apply", "-f", "-", stdin=json.dumps(release))


def wait_complete(
    plane: ControlPlane, name: str, process: subprocess.Popen[bytes], timeout_s: float
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the operator exited ({process.returncode})")
        got = plane.kubectl("-n", NAMESPACE, "get", "wr", name, "-o", "json", check=False)
        if got.returncode == 0:
            body = json.loads(got.stdout)
            status = body.get("status") or {}
            done = {c["type"]: c for c in status.get("conditions") or [] if c.get("status") == "True"}
            if status.get("observedGeneration") == body["metadata"]["generation"] and (
                {"Complete", "Degraded", "Failed"} & set(done)
            ):
                return body
        time.sleep(1)
    raise TimeoutError(
        f"the release did not end within {timeout_s:g} s: {json.dumps(body.get('status'))[:2000]}"
    )


def next_steps(plane: ControlPlane, work: Path, helm_dir: Path, name: str) -> str:
    path = os.pathsep.join([str(plane.bin_dir), str(helm_dir), str(VENV_BIN)])
    env_file = work / "env.sh"
    env_file.write_text(f"export KUBECONFIG={plane.kubeconfig}\nexport PATH={path}:$PATH\n", encoding="utf-8")
    return f"""
Ready. In another terminal:

  source {env_file}        # or:
  export KUBECONFIG={plane.kubeconfig}
  export PATH={path}:$PATH

  kubectl get wr -n {NAMESPACE}                       # progress, condition, generation
  kubectl get wr -n {NAMESPACE} -o wide               # + build and canary customers
  webrelease status {name} -n {NAMESPACE}             # every shard, failed customers
  kubectl describe wr {name} -n {NAMESPACE}           # conditions and Events
  kubectl explain wr.spec                             # every field, described
  helm list -n {SYSTEM}

Edit the release (e.g. `kubectl -n {NAMESPACE} edit wr {name}`, dryRun or a new build) and watch it
run again. The work directory (logs, S3 data, pods) is {work}. Ctrl-C stops everything.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/cluster.sh", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("--dir", type=Path, help="work directory (default: a new temp dir)")
    parser.add_argument(
        "--check", action="store_true", help="wait for the release to complete, check it, stop"
    )
    parser.add_argument("--timeout", type=float, default=300, help="--check: seconds to wait for the release")
    args = parser.parse_args(argv)
    out = sys.stdout
    work = args.dir or Path(tempfile.mkdtemp(prefix="webrelease-cluster-"))
    work.mkdir(parents=True, exist_ok=True)
    say(out, "== tools (built once, cached under ~/.cache/webrelease)")
    binaries = ensure_binaries(ClusterSettings.from_env(), show_progress=True)
    helm_dir = helm_binary().parent
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    path = os.pathsep.join([str(VENV_BIN), str(binaries.k8s_bin), os.environ.get("PATH", "")])
    say(out, f"== control plane and node agent (work directory {work})")
    try:
        with LocalControlPlane(binaries, work / "cluster") as plane:
            agent = NodeAgent(
                NodeAgentConfig(kubeconfig=plane.kubeconfig, work_dir=work / "nodeagent", path=path)
            )
            agent.start()
            try:
                say(out, "== S3 server (versitygw)")
                with S3Server(root=work / "s3") as server:
                    endpoint = server.endpoint
                    release = example_release(endpoint)
                    prepare_storage(endpoint, release)
                    with operator_as_the_chart(plane, work, out) as process:
                        apply_example(plane, endpoint, release, out)
                        name = release["metadata"]["name"]
                        if args.check:
                            body = wait_complete(plane, name, process, args.timeout)
                            return check(plane, endpoint, release, body, out)
                        say(out, next_steps(plane, work, helm_dir, name))
                        while not stop.wait(1.0):
                            if process.poll() is not None:
                                say(
                                    out,
                                    f"the operator exited ({process.returncode}); "
                                    f"see {work / 'operator.log'}",
                                )
                                return 1
            finally:
                agent.stop()
    except KeyboardInterrupt:
        pass
    return 0


def check(
    plane: ControlPlane, endpoint: S3Endpoint, release: dict[str, Any], body: dict[str, Any], out: TextIO
) -> int:
    """What ``--check`` asserts: the release Complete, every customer counted, a site's config.js
    rendered with its customer's field."""
    status = body["status"]
    customers = [
        json.loads(line) for line in CUSTOMERS.read_text(encoding="utf-8").splitlines() if line.strip()
    ]
    said = plane.kubectl("-n", NAMESPACE, "get", "wr", body["metadata"]["name"]).stdout
    say(out, said)
    complete = any(c["type"] == "Complete" and c["status"] == "True" for c in status["conditions"])
    counted = status["customers"]["succeeded"] == len(customers)
    bucket, prefix = _bucket_and_key(release["spec"]["target"]["url"].replace("{id}", customers[0]["id"]))
    config = endpoint.client().get_object(Bucket=bucket, Key=prefix + "config.js")["Body"].read().decode()
    rendered = customers[0]["apiUrl"] in config
    say(
        out,
        f"complete: {complete}, {status['customers']['succeeded']}/{len(customers)} customers, "
        f"site rendered: {rendered}",
    )
    return 0 if complete and counted and rendered else 1


if __name__ == "__main__":
    raise SystemExit(main())
