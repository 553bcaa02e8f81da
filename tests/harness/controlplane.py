"""A real Kubernetes control plane for the cluster test tier, run from binaries we build ourselves.

`LocalControlPlane` starts, on 127.0.0.1 only and on free ports:

- etcd (data in a temp dir, ``--unsafe-no-fsync``);
- kube-apiserver: RBAC authorization, a static-token admin identity in ``system:masters``, TLS from a
  throwaway CA made with ``openssl``, a service-account signing key (so TokenRequest works and pods get
  ServiceAccount tokens), the ServiceAccount admission plugin and the rest of the default set;
- kube-controller-manager with the controllers the tests rely on (`CONTROLLERS`);
- kube-scheduler.

Readiness is polled with a deadline (apiserver ``/readyz``, the two managers' ``/healthz``, then the
``default`` ServiceAccount the serviceaccount controller creates). Every component runs in its own
process group with a parent-death signal and is stopped on exit, also when start-up fails; its log is
kept in ``log_dir`` and the tail of every log is printed when something fails.

The binaries come from ``scripts/build-k8s.sh`` (built once per version, then cached); the pinned
versions are read from ``tests/cluster/k8s/go.mod`` and ``tests/cluster/etcd/go.mod``, their only home.

`ControlPlane` is what tests see. It also describes an external cluster (``WEBRELEASE_TEST_KUBECONFIG``),
in which case nothing is started.

Run ``python -m tests.harness.controlplane`` (or ``scripts/controlplane.sh``) to start one by hand,
together with the test node agent.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TextIO, cast

import urllib3
import yaml
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from pydantic import BaseModel, ConfigDict

REPO_ROOT = Path(__file__).resolve().parents[2]
K8S_GOMOD = REPO_ROOT / "tests" / "cluster" / "k8s" / "go.mod"
ETCD_GOMOD = REPO_ROOT / "tests" / "cluster" / "etcd" / "go.mod"
BUILD_SCRIPT = REPO_ROOT / "scripts" / "build-k8s.sh"

ADMIN_USER = "webrelease-test-admin"
SERVICE_CIDR = "10.0.0.0/24"
SERVICE_IP = "10.0.0.1"
# The controllers the tests rely on, plus the few that make the cluster behave like a real one: nodes
# lose their start-up taint once Ready (node-lifecycle), ServiceAccounts and their tokens exist,
# Deployments get pods, and aggregated ClusterRoles (admin/edit/view) pick up CRD rules.
CONTROLLERS = (
    "job-controller",
    "garbage-collector-controller",
    "ttl-after-finished-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
    "node-lifecycle-controller",
    "taint-eviction-controller",
    "pod-garbage-collector-controller",
    "clusterrole-aggregation-controller",
    "deployment-controller",
    "replicaset-controller",
    "cronjob-controller",
)


class ControlPlaneError(RuntimeError):
    """The control plane could not be built, started or reached; the message carries the log tails."""


class ClusterSettings(BaseModel):
    """The cluster tier's configuration, read from the environment once."""

    model_config = ConfigDict(frozen=True)

    external_kubeconfig: Path | None = None
    cache_dir: Path
    start_timeout_s: float = 120.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ClusterSettings:
        env = os.environ if environ is None else environ
        external = env.get("WEBRELEASE_TEST_KUBECONFIG") or None
        cache = env.get("WEBRELEASE_CACHE") or str(Path.home() / ".cache" / "webrelease")
        return cls(
            external_kubeconfig=Path(external).expanduser() if external else None,
            cache_dir=Path(cache).expanduser(),
            start_timeout_s=float(env.get("WEBRELEASE_TEST_CLUSTER_START_TIMEOUT", "120")),
        )


def _pinned(gomod: Path, module: str) -> str:
    match = re.search(rf"^\s*(?:require\s+)?{re.escape(module)}\s+v(\S+)", gomod.read_text(), re.MULTILINE)
    if match is None:
        raise ControlPlaneError(f"{gomod} does not require {module}")
    return match.group(1)


def pinned_k8s_version() -> str:
    """The Kubernetes version the tier pins, e.g. ``1.34.4`` (from tests/cluster/k8s/go.mod)."""
    return _pinned(K8S_GOMOD, "k8s.io/kubernetes")


def pinned_etcd_version() -> str:
    return _pinned(ETCD_GOMOD, "go.etcd.io/etcd/server/v3")


@dataclass(frozen=True)
class Binaries:
    k8s_bin: Path
    etcd_bin: Path

    def k8s(self, name: str) -> Path:
        return self.k8s_bin / name

    @property
    def etcd(self) -> Path:
        return self.etcd_bin / "etcd"

    @property
    def kubectl(self) -> Path:
        return self.k8s_bin / "kubectl"


def ensure_binaries(settings: ClusterSettings, *, show_progress: bool = False) -> Binaries:
    """Runs scripts/build-k8s.sh: builds the binaries the first time, else just says where they are.
    ``show_progress`` lets the build's own output through to this process's stderr."""
    env = {**os.environ, "WEBRELEASE_CACHE": str(settings.cache_dir)}
    started = time.monotonic()
    proc = subprocess.run(
        ["bash", str(BUILD_SCRIPT)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=None if show_progress else subprocess.PIPE,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise ControlPlaneError(
            f"scripts/build-k8s.sh failed ({proc.returncode}):\n{(proc.stderr or '')[-4000:]}"
        )
    lines = proc.stdout.strip().splitlines()
    if not lines or ":" not in lines[-1]:
        raise ControlPlaneError(f"scripts/build-k8s.sh printed no K8S_BIN:ETCD_BIN line: {proc.stdout!r}")
    k8s_bin, etcd_bin = lines[-1].split(":", 1)
    elapsed = time.monotonic() - started
    if elapsed > 30:
        print(f"[controlplane] built the Kubernetes binaries in {elapsed:.0f} s", file=sys.stderr)
    return Binaries(Path(k8s_bin), Path(etcd_bin))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _openssl(*args: str, cwd: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise ControlPlaneError(
            "openssl is needed to make the test cluster's certificates (apt-get install openssl)"
        )
    proc = subprocess.run([openssl, *args], cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ControlPlaneError(f"openssl {' '.join(args)} failed: {proc.stderr}")


@dataclass(frozen=True)
class Pki:
    ca_crt: Path
    ca_key: Path
    serving_crt: Path
    serving_key: Path
    sa_key: Path
    sa_pub: Path


def make_pki(directory: Path) -> Pki:
    """A throwaway CA, the apiserver's serving certificate and the ServiceAccount signing key (EC P-256)."""
    directory.mkdir(parents=True, exist_ok=True)
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl(
        "req",
        "-x509",
        *ec,
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "3650",
        "-subj",
        "/CN=webrelease-test-ca",
        cwd=directory,
    )
    _openssl(
        "req",
        *ec,
        "-keyout",
        "apiserver.key",
        "-out",
        "apiserver.csr",
        "-subj",
        "/CN=kube-apiserver",
        cwd=directory,
    )
    sans = ",".join(
        [
            "IP:127.0.0.1",
            f"IP:{SERVICE_IP}",
            "DNS:localhost",
            "DNS:kubernetes",
            "DNS:kubernetes.default",
            "DNS:kubernetes.default.svc",
            "DNS:kubernetes.default.svc.cluster.local",
        ]
    )
    (directory / "apiserver.ext").write_text(
        f"subjectAltName={sans}\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature,keyEncipherment\n"
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        "apiserver.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "apiserver.crt",
        "-days",
        "3650",
        "-extfile",
        "apiserver.ext",
        cwd=directory,
    )
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "sa.key", cwd=directory)
    _openssl("ec", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=directory)
    return Pki(
        ca_crt=directory / "ca.crt",
        ca_key=directory / "ca.key",
        serving_crt=directory / "apiserver.crt",
        serving_key=directory / "apiserver.key",
        sa_key=directory / "sa.key",
        sa_pub=directory / "sa.pub",
    )


def write_kubeconfig(path: Path, *, server: str, ca_file: Path | None, token: str, user: str) -> Path:
    cluster: dict[str, Any] = {"server": server}
    if ca_file is not None:
        cluster["certificate-authority-data"] = base64.b64encode(ca_file.read_bytes()).decode()
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "webrelease-test", "cluster": cluster}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "webrelease-test", "context": {"cluster": "webrelease-test", "user": user}}],
        "current-context": "webrelease-test",
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    path.chmod(0o600)
    return path


Obj = dict[str, Any]


class KubeError(Exception):
    """A Kubernetes API request that did not succeed; ``status`` is the HTTP status."""

    def __init__(self, status: int, method: str, path: str, body: str) -> None:
        self.status = status
        self.body = body
        super().__init__(f"{method} {path}: HTTP {status}: {body[:1000]}")


def api_path(
    api_version: str,
    plural: str,
    *,
    namespace: str | None = None,
    name: str | None = None,
    subresource: str | None = None,
) -> str:
    """The path of a resource: ``api_path("batch/v1", "jobs", namespace="ns", name="j")`` is
    ``/apis/batch/v1/namespaces/ns/jobs/j``."""
    path = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    if namespace is not None:
        path += f"/namespaces/{namespace}"
    path += f"/{plural}"
    if name is not None:
        path += f"/{name}"
    if subresource is not None:
        path += f"/{subresource}"
    return path


class Kube:
    """Typed, plain-JSON access to the Kubernetes API: paths in, ``dict`` objects out.

    It rides on a `kubernetes.client.ApiClient` (so TLS, client certificates and token refresh of any
    kubeconfig work) but skips the generated models: tests and the node agent read and write objects as
    they appear in YAML. Errors raise `KubeError`; `find` and `delete` return None on 404.
    """

    def __init__(self, api: k8s_client.ApiClient) -> None:
        self.api = api
        self.configuration = api.configuration

    @classmethod
    def from_kubeconfig(cls, kubeconfig: Path, *, pool_maxsize: int | None = None) -> Kube:
        configuration = k8s_client.Configuration()
        k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(kubeconfig), client_configuration=configuration
        )
        if pool_maxsize is not None:
            configuration.connection_pool_maxsize = pool_maxsize
        return cls(k8s_client.ApiClient(configuration))

    def close(self) -> None:
        self.api.close()  # type: ignore[no-untyped-call]

    def __enter__(self) -> Kube:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _headers(self, content_type: str | None) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": "webrelease-tests"}
        if content_type:
            headers["Content-Type"] = content_type
        for auth in self.configuration.auth_settings().values():
            if auth["in"] == "header" and auth["value"]:
                headers[str(auth["key"])] = str(auth["value"])
        return headers

    def open(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: Mapping[str, object] | None = None,
        content_type: str | None = None,
        timeout: float | tuple[float, float] = 30.0,
        stream: bool = False,
    ) -> urllib3.BaseHTTPResponse:
        """The raw response (``stream=True``: not read yet, e.g. a watch; call ``release_conn`` after)."""
        url = self.configuration.host + path
        if query:
            pairs = [
                (k, str(v).lower() if isinstance(v, bool) else str(v))
                for k, v in query.items()
                if v is not None
            ]
            url += "?" + urllib.parse.urlencode(pairs)
        data = None if body is None else json.dumps(body).encode()
        if data is not None and content_type is None:
            content_type = "application/json"
        connect, read = timeout if isinstance(timeout, tuple) else (timeout, timeout)
        return self.api.rest_client.pool_manager.request(
            method,
            url,
            body=data,
            headers=self._headers(content_type),
            timeout=urllib3.Timeout(connect=connect, read=read),
            preload_content=not stream,
            retries=False,
        )

    def request(self, method: str, path: str, **kwargs: Any) -> Obj:
        response = self.open(method, path, **kwargs)
        if response.status >= 400:
            raise KubeError(response.status, method, path, response.data.decode(errors="replace"))
        return cast(Obj, json.loads(response.data)) if response.data else {}

    def get(self, path: str, **query: object) -> Obj:
        return self.request("GET", path, query=query)

    def find(self, path: str, **query: object) -> Obj | None:
        try:
            return self.get(path, **query)
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    def items(self, path: str, **query: object) -> list[Obj]:
        return list(self.get(path, **query).get("items") or [])

    def create(self, path: str, body: Obj) -> Obj:
        return self.request("POST", path, body=body)

    def replace(self, path: str, body: Obj) -> Obj:
        return self.request("PUT", path, body=body)

    def patch(self, path: str, body: Any, *, kind: str = "merge") -> Obj:
        """``kind``: ``merge`` (RFC 7386), ``strategic`` or ``json`` (RFC 6902, a list of operations)."""
        content_type = {
            "merge": "application/merge-patch+json",
            "strategic": "application/strategic-merge-patch+json",
            "json": "application/json-patch+json",
        }[kind]
        return self.request("PATCH", path, body=body, content_type=content_type)

    def delete(self, path: str, body: Obj | None = None, **query: object) -> Obj | None:
        try:
            return self.request("DELETE", path, body=body, query=query)
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    @staticmethod
    def events(response: urllib3.BaseHTTPResponse) -> Iterator[Obj]:
        """The events of a watch response (``open(..., stream=True, query={"watch": True, ...})``)."""
        buffer = b""
        for chunk in response.stream(amt=None, decode_content=True):
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                if line.strip():
                    yield cast(Obj, json.loads(line))


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return "(no log)"
    text = data[-64 * 1024 :].decode(errors="replace")
    return "\n".join(text.splitlines()[-lines:])


@dataclass
class ControlPlane:
    """What tests get from the ``control_plane`` fixture: a reachable cluster and how to talk to it."""

    kubeconfig: Path
    external: bool
    bin_dir: Path | None = None
    log_dir: Path | None = None
    version: str | None = None
    """The pinned Kubernetes version (``1.34.4``) of a local control plane; None for an external cluster."""
    start_seconds: float | None = None
    """How long the last start took (warm start when the binaries were cached)."""
    tail_logs: Callable[[int], str] = field(default=lambda _lines: "")

    def api_client(self) -> k8s_client.ApiClient:
        """A new `kubernetes.client.ApiClient` for the admin identity (close it, or use ``with``)."""
        configuration = k8s_client.Configuration()
        k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(self.kubeconfig), client_configuration=configuration
        )
        return k8s_client.ApiClient(configuration)

    def kube(self) -> Kube:
        """A new `Kube` (plain-JSON API access) for the admin identity (close it, or use ``with``)."""
        return Kube(self.api_client())

    def kubectl(
        self, *args: str, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        exe = str(self.bin_dir / "kubectl") if self.bin_dir is not None else "kubectl"
        return subprocess.run(
            [exe, f"--kubeconfig={self.kubeconfig}", *args],
            input=stdin,
            capture_output=True,
            text=True,
            check=check,
            timeout=120,
        )

    def cluster_entry(self) -> dict[str, Any]:
        """The current context's ``cluster`` entry of the kubeconfig (server and CA)."""
        doc = yaml.safe_load(self.kubeconfig.read_text())
        context_name = doc.get("current-context")
        context = next(c["context"] for c in doc["contexts"] if c["name"] == context_name)
        entry: dict[str, Any] = next(c["cluster"] for c in doc["clusters"] if c["name"] == context["cluster"])
        return dict(entry)

    def kubeconfig_for_token(self, token: str, path: Path, user: str = "token-user") -> Path:
        """A kubeconfig for the same cluster that authenticates with ``token`` (e.g. a ServiceAccount's
        token from TokenRequest)."""
        cluster = self.cluster_entry()
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "c", "cluster": cluster}],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [{"name": "c", "context": {"cluster": "c", "user": user}}],
            "current-context": "c",
        }
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        path.chmod(0o600)
        return path


@dataclass
class _Component:
    name: str
    argv: list[str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        argv = list(self.argv)
        setpriv = shutil.which("setpriv")
        if setpriv is not None:
            # If the test process dies without cleaning up, the kernel stops the component anyway.
            argv = [setpriv, "--pdeathsig", "TERM", "--", *argv]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def exited(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def stop(self, timeout_s: float = 10.0) -> None:
        proc = self.proc
        if proc is None:
            return
        for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 10.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(wait_s)
                break
            except subprocess.TimeoutExpired:
                continue
        # Anything else left in the group (there should be nothing) goes too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        self.proc = None


def _http_ok(url: str, *, context: ssl.SSLContext | None = None, token: str | None = None) -> bool:
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as response:
            return int(response.status) == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


class LocalControlPlane:
    """etcd + kube-apiserver + kube-controller-manager + kube-scheduler as local processes.

    Use as a context manager, or call `start` and `stop` (stop is safe to call more than once).
    """

    def __init__(
        self,
        binaries: Binaries,
        work_dir: Path,
        *,
        start_timeout_s: float = 120.0,
        apiserver_args: tuple[str, ...] = (),
    ) -> None:
        """``apiserver_args``: extra kube-apiserver flags (the node tier's, to reach its kubelet)."""
        self.binaries = binaries
        self.apiserver_args = apiserver_args
        self.work_dir = work_dir
        self.log_dir = work_dir / "logs"
        self.kubeconfig = work_dir / "admin.kubeconfig"
        self.start_timeout_s = start_timeout_s
        self.token = secrets.token_urlsafe(32)
        self.components: list[_Component] = []
        self.apiserver_port = 0
        self.start_seconds: float | None = None
        self._lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------------------

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> ControlPlane:
        started = time.monotonic()
        deadline = started + self.start_timeout_s
        try:
            self._start(deadline)
        except BaseException as exc:
            tails = self.tail_logs()
            self.stop()
            if isinstance(exc, ControlPlaneError):
                raise ControlPlaneError(f"{exc}\n{tails}") from exc
            print(tails, file=sys.stderr)
            raise
        self.start_seconds = time.monotonic() - started
        return ControlPlane(
            kubeconfig=self.kubeconfig,
            external=False,
            bin_dir=self.binaries.k8s_bin,
            log_dir=self.log_dir,
            version=pinned_k8s_version(),
            start_seconds=self.start_seconds,
            tail_logs=self.tail_logs,
        )

    def stop(self) -> None:
        with self._lock:
            for component in reversed(self.components):
                component.stop()
            self.components = []

    def tail_logs(self, lines: int = 40) -> str:
        parts = []
        for log in sorted(self.log_dir.glob("*.log")) if self.log_dir.exists() else []:
            parts.append(
                f"----- {log.name} (last {lines} lines; full log: {log}) -----\n{log_tail(log, lines)}"
            )
        return "\n".join(parts)

    # -- start-up ----------------------------------------------------------------------------------

    def _launch(self, name: str, argv: list[str]) -> _Component:
        component = _Component(name, argv, self.log_dir / f"{name}.log")
        with self._lock:
            self.components.append(component)
        component.start()
        return component

    def _wait(self, what: str, check: Callable[[], bool], deadline: float) -> None:
        delay = 0.05
        while True:
            if check():
                return
            for component in self.components:
                code = component.exited()
                if code is not None:
                    raise ControlPlaneError(f"{component.name} exited with {code} while waiting for {what}")
            if time.monotonic() > deadline:
                raise ControlPlaneError(f"timed out waiting for {what}")
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)

    def _start(self, deadline: float) -> None:
        for path in (
            self.binaries.etcd,
            *(self.binaries.k8s(n) for n in ("kube-apiserver", "kube-controller-manager", "kube-scheduler")),
        ):
            if not path.is_file():
                raise ControlPlaneError(f"missing binary {path}; run scripts/build-k8s.sh")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        pki = make_pki(self.work_dir / "pki")

        # etcd
        etcd_port, peer_port = free_port(), free_port()
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        peer_url = f"http://127.0.0.1:{peer_port}"
        self._launch(
            "etcd",
            [
                str(self.binaries.etcd),
                "--name=test",
                f"--data-dir={self.work_dir / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=test={peer_url}",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )
        self._wait("etcd /health", lambda: _http_ok(f"{etcd_url}/health"), deadline)

        # kube-apiserver
        tokens = self.work_dir / "tokens.csv"
        tokens.write_text(f'{self.token},{ADMIN_USER},{ADMIN_USER},"system:masters"\n')
        tokens.chmod(0o600)
        self.apiserver_port = free_port()
        server = f"https://127.0.0.1:{self.apiserver_port}"
        self._launch(
            "kube-apiserver",
            [
                str(self.binaries.k8s("kube-apiserver")),
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.apiserver_port}",
                # The advertised address is only used for the `kubernetes` Service's endpoints, which
                # we do not reconcile (a loopback address there is rejected; nothing in-cluster needs it).
                "--advertise-address=127.0.0.1",
                "--endpoint-reconciler-type=none",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--authorization-mode=RBAC",
                f"--token-auth-file={tokens}",
                f"--client-ca-file={pki.ca_crt}",
                f"--tls-cert-file={pki.serving_crt}",
                f"--tls-private-key-file={pki.serving_key}",
                f"--service-account-issuer={server}",
                f"--service-account-key-file={pki.sa_pub}",
                f"--service-account-signing-key-file={pki.sa_key}",
                "--allow-privileged=true",
                f"--cert-dir={self.work_dir / 'apiserver-certs'}",
                "--v=1",
                *self.apiserver_args,
            ],
        )
        write_kubeconfig(
            self.kubeconfig, server=server, ca_file=pki.ca_crt, token=self.token, user=ADMIN_USER
        )
        tls = ssl.create_default_context(cafile=str(pki.ca_crt))
        self._wait(
            "kube-apiserver /readyz",
            lambda: _http_ok(f"{server}/readyz", context=tls, token=self.token),
            deadline,
        )

        # kube-controller-manager and kube-scheduler (healthz is anonymous; their certs are self-signed)
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE
        kcm_port, sched_port = free_port(), free_port()
        self._launch(
            "kube-controller-manager",
            [
                str(self.binaries.k8s("kube-controller-manager")),
                f"--kubeconfig={self.kubeconfig}",
                f"--authentication-kubeconfig={self.kubeconfig}",
                f"--authorization-kubeconfig={self.kubeconfig}",
                "--authentication-skip-lookup=true",  # no front-proxy CA here; nothing to look up
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={kcm_port}",
                f"--cert-dir={self.work_dir / 'kcm-certs'}",
                f"--controllers={','.join(CONTROLLERS)}",
                f"--service-account-private-key-file={pki.sa_key}",
                f"--root-ca-file={pki.ca_crt}",
                "--v=1",
            ],
        )
        self._launch(
            "kube-scheduler",
            [
                str(self.binaries.k8s("kube-scheduler")),
                f"--kubeconfig={self.kubeconfig}",
                f"--authentication-kubeconfig={self.kubeconfig}",
                f"--authorization-kubeconfig={self.kubeconfig}",
                "--authentication-skip-lookup=true",  # no front-proxy CA here; nothing to look up
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={sched_port}",
                f"--cert-dir={self.work_dir / 'scheduler-certs'}",
                "--v=1",
            ],
        )
        self._wait(
            "kube-controller-manager /healthz",
            lambda: _http_ok(f"https://127.0.0.1:{kcm_port}/healthz", context=insecure),
            deadline,
        )
        self._wait(
            "kube-scheduler /healthz",
            lambda: _http_ok(f"https://127.0.0.1:{sched_port}/healthz", context=insecure),
            deadline,
        )
        # The controllers really run once the serviceaccount controller has made `default` in `default`.
        self._wait(
            "the default ServiceAccount",
            lambda: _http_ok(
                f"{server}/api/v1/namespaces/default/serviceaccounts/default", context=tls, token=self.token
            ),
            deadline,
        )


def external_control_plane(settings: ClusterSettings, binaries: Binaries | None = None) -> ControlPlane:
    """A ControlPlane for the cluster behind ``WEBRELEASE_TEST_KUBECONFIG`` (e.g. kind); starts nothing."""
    assert settings.external_kubeconfig is not None
    if not settings.external_kubeconfig.is_file():
        raise ControlPlaneError(f"WEBRELEASE_TEST_KUBECONFIG={settings.external_kubeconfig} does not exist")
    return ControlPlane(
        kubeconfig=settings.external_kubeconfig,
        external=True,
        bin_dir=binaries.k8s_bin if binaries is not None else None,
    )


@contextlib.contextmanager
def terminate_on_sigterm() -> Iterator[None]:
    """Turns SIGTERM into KeyboardInterrupt while active, so that clean-up code runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    if previous not in (signal.SIG_DFL, None):
        yield
        return
    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _print_ready(out: TextIO, plane: ControlPlane, agent_node: str | None) -> None:
    info = {
        "kubeconfig": str(plane.kubeconfig),
        "logs": str(plane.log_dir),
        "version": plane.version,
        "node": agent_node,
        "start_seconds": round(plane.start_seconds or 0.0, 2),
    }
    print(json.dumps(info), file=sys.stderr)
    print(plane.kubeconfig, file=out, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Starts a control plane and a test node agent by hand; prints the kubeconfig path; Ctrl-C stops."""
    from tests.harness.nodeagent import NodeAgent, NodeAgentConfig

    parser = argparse.ArgumentParser(prog="python -m tests.harness.controlplane", description=main.__doc__)
    parser.add_argument("--dir", type=Path, help="work directory (default: a new temp dir)")
    parser.add_argument("--no-node-agent", action="store_true", help="start no test node agent")
    parser.add_argument("--concurrency", type=int, default=8, help="pods the node agent runs at once")
    args = parser.parse_args(argv)
    settings = ClusterSettings.from_env()
    binaries = ensure_binaries(settings)
    work = args.dir or Path(tempfile.mkdtemp(prefix="webrelease-cp-"))
    venv_bin = str(Path(sys.executable).parent)
    path = os.pathsep.join([venv_bin, str(binaries.k8s_bin), os.environ.get("PATH", "")])
    stop = threading.Event()
    with terminate_on_sigterm():
        try:
            with LocalControlPlane(binaries, work, start_timeout_s=settings.start_timeout_s) as plane:
                agent: NodeAgent | None = None
                if not args.no_node_agent:
                    agent = NodeAgent(
                        NodeAgentConfig(
                            kubeconfig=plane.kubeconfig,
                            work_dir=work / "nodeagent",
                            concurrency=args.concurrency,
                            path=path,
                        )
                    )
                    agent.start()
                try:
                    _print_ready(sys.stdout, plane, agent.config.node_name if agent else None)
                    print(
                        f"export KUBECONFIG={plane.kubeconfig}   # Ctrl-C stops everything", file=sys.stderr
                    )
                    stop.wait()
                finally:
                    if agent is not None:
                        agent.stop()
        except KeyboardInterrupt:
            return 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
