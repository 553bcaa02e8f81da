"""A real Kubernetes node for the node test tier: containerd + runc + the CNI bridge plugin + a kubelet
built from the same ``k8s.io/kubernetes`` module as the control plane, running our own image.

`LocalNode` starts, against a `LocalControlPlane`:

- a **pod network** of its own: a Linux bridge (``wrn<id>``) with a private /24 (``10.244.X.0/24``,
  ``X`` free on this machine), the gateway ``10.244.X.1`` on the bridge. Pods get addresses from the
  CNI ``bridge`` + ``host-local`` plugins, a route to the pod subnet and to the Service range, and no
  default route: a pod can reach the pod network and nothing else;
- the ``kubernetes`` Service (``10.0.0.1:443``, what the kubelet puts in ``KUBERNETES_SERVICE_HOST``)
  the way kube-proxy would serve it: one DNAT rule, for packets that come in on this bridge only, to
  the apiserver on ``127.0.0.1`` (``route_localnet`` on this bridge lets them through). So pods use
  the in-cluster config and their ServiceAccount token exactly as in a cluster;
- **containerd** with its own socket, state and runc root under the work directory, its content and
  snapshots in the cached store that ``scripts/build-node-images.sh`` filled (our image, the pause
  image), ``restrict_oom_score_adj`` (this machine's root lacks CAP_SYS_RESOURCE: without it every pod
  sandbox fails in runc);
- the **kubelet**, serving on the gateway address (so the apiserver reaches it there for ``kubectl
  logs``; the control plane prefers InternalIP), its pods in a cgroup subtree of their own
  (``/webrelease-node-<id>`` in every hierarchy), pod logs under the work directory.

`stop` leaves the machine as it was found: pods and their sandboxes, shims, containerd and the kubelet
stopped; mounts under the work directory and network namespaces unmounted; the bridge, our iptables
rules and any chain the kubelet added removed; the sysctls the kubelet and the bridge plugin set
restored; the cgroup subtree removed; the ``/var/log/containers`` links of our pods and the CNI cache
entries of our network deleted. `host_state` is what tests/node/test_node.py compares before and
after a start/stop cycle.

Only one node runs at a time on a machine: it shares the cached containerd store, so `NodeLock` (a
flock) is held from image build to the node's stop.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import random
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import yaml

from tests.harness.controlplane import (
    REPO_ROOT,
    SERVICE_CIDR,
    SERVICE_IP,
    ControlPlaneError,
    Kube,
    _Component,
    api_path,
    free_port,
    log_tail,
)

BUILD_IMAGES = REPO_ROOT / "scripts" / "build-node-images.sh"
INSTALL_NODE = REPO_ROOT / "scripts" / "install-node.sh"
CNI_BIN = Path("/usr/lib/cni")
CGROUP_ROOT = Path("/sys/fs/cgroup")
VAR_LOG_CONTAINERS = Path("/var/log/containers")
NETNS_DIRS = (Path("/run/netns"), Path("/var/run/netns"))
#: Host paths containerd, the CNI plugins or the kubelet create outside their configured directories.
HOST_DIRS = (
    Path("/run/containerd"),
    Path("/var/lib/cni"),
    Path("/usr/libexec/kubernetes"),
    Path("/opt/containerd"),
    VAR_LOG_CONTAINERS,
    *NETNS_DIRS,
)
#: Kernel settings the kubelet (its "kernel defaults") and the CNI bridge plugin (a gateway bridge
#: turns forwarding on) change; restored on stop.
SYSCTLS = (
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
    "net/ipv4/ip_forward",
    "net/ipv4/conf/all/forwarding",
    "net/ipv4/conf/default/forwarding",
    "net/ipv4/conf/all/route_localnet",
    "net/ipv6/conf/all/forwarding",
    "net/ipv6/conf/default/forwarding",
)
IPTABLES = ("iptables", "ip6tables")
TABLES = ("filter", "nat", "mangle", "raw")


class NodeError(ControlPlaneError):
    """The node could not be set up, started or stopped cleanly; the message says what and why."""


def _run(*argv: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise NodeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout}")
    return proc


# ---- images and the shared store ------------------------------------------------------------------


@dataclass(frozen=True)
class NodeImages:
    """What scripts/build-node-images.sh built and loaded: image references and containerd's root."""

    webrelease: str
    pause: str
    containerd_root: Path


def build_images(cache_dir: Path, *, lock_held: bool, show_progress: bool = False) -> NodeImages:
    """Installs the Debian packages if needed, builds (or finds cached) images, loads them."""
    env = {**os.environ, "WEBRELEASE_CACHE": str(cache_dir)}
    if lock_held:
        env["WEBRELEASE_NODE_LOCK_HELD"] = "1"
    err = None if show_progress else subprocess.PIPE
    for script in (INSTALL_NODE, BUILD_IMAGES):
        proc = subprocess.run(
            ["bash", str(script)], env=env, stdout=subprocess.PIPE, stderr=err, text=True, check=False
        )
        if proc.returncode != 0:
            raise NodeError(f"{script.name} failed ({proc.returncode}):\n{(proc.stderr or '')[-4000:]}")
    values = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    try:
        return NodeImages(values["WEBRELEASE_IMAGE"], values["PAUSE_IMAGE"], Path(values["CONTAINERD_ROOT"]))
    except KeyError as exc:
        raise NodeError(f"build-node-images.sh printed no {exc}: {proc.stdout!r}") from None


class NodeLock:
    """The machine-wide lock of the node tier (one node at a time: they share containerd's store)."""

    def __init__(self, cache_dir: Path) -> None:
        self.path = cache_dir / "node" / ".lock"
        self._file: TextIO | None = None

    def acquire(self, *, announce: bool = True) -> None:
        if self._file is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if announce:
                print(f"[node] another node-tier run holds {self.path}; waiting for it", flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


# ---- host state (what a node must leave as it found it) -----------------------------------------


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _mountpoints() -> list[str]:
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        points.append(fields[4].encode().decode("unicode_escape"))
    return points


def _iptables_rules() -> dict[str, list[str]]:
    rules: dict[str, list[str]] = {}
    for tool in IPTABLES:
        if shutil.which(tool) is None:
            continue
        for table in TABLES:
            proc = _run(tool, "-w", "5", "-t", table, "-S", check=False)
            if proc.returncode == 0:
                rules[f"{tool} {table}"] = proc.stdout.splitlines()
    return rules


def _cgroup_children() -> dict[str, list[str]]:
    out = {}
    for hierarchy in sorted(CGROUP_ROOT.iterdir()) if CGROUP_ROOT.is_dir() else []:
        if hierarchy.is_dir() and not hierarchy.is_symlink():
            out[hierarchy.name] = sorted(p.name for p in hierarchy.iterdir() if p.is_dir())
    return out


def _processes() -> list[str]:
    """Command lines of the processes a node runs (kubelet, containerd, shims, runc, pause)."""
    names = ("kubelet", "containerd", "runc", "pause")  # containerd also matches its shims
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        exe = argv[0].decode(errors="replace") if argv else ""
        if exe and Path(exe).name.startswith(names):
            found.append(" ".join(a.decode(errors="replace") for a in argv if a))
    return sorted(found)


def host_state() -> dict[str, Any]:
    """What a node touches on the machine, as comparable data (see the module docstring)."""
    return {
        "processes": _processes(),
        "mounts": sorted(_mountpoints()),
        "iptables": _iptables_rules(),
        "links": sorted(_run("ip", "-o", "link", "show", check=False).stdout.split("\n")),
        "addresses": sorted(_run("ip", "-o", "addr", "show", check=False).stdout.split("\n")),
        "routes": sorted(_run("ip", "route", "show", "table", "all", check=False).stdout.split("\n")),
        "sysctls": {name: _read(Path("/proc/sys") / name) for name in SYSCTLS},
        "cgroups": _cgroup_children(),
        "var_log_containers": sorted(p.name for p in VAR_LOG_CONTAINERS.iterdir())
        if VAR_LOG_CONTAINERS.is_dir()
        else None,
        "netns": {str(d): sorted(p.name for p in d.iterdir()) if d.is_dir() else None for d in NETNS_DIRS},
        "host_dirs": {str(d): d.exists() for d in HOST_DIRS},
    }


# ---- the node ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PodNetwork:
    """The node's pod network: a bridge and a private /24 that no other interface or route uses."""

    bridge: str
    subnet: ipaddress.IPv4Network
    name: str

    @property
    def gateway(self) -> str:
        return str(self.subnet.network_address + 1)

    @classmethod
    def pick(cls, node_id: str) -> PodNetwork:
        used = _run("ip", "-4", "route", "show", "table", "all", check=False).stdout
        used += _run("ip", "-4", "-o", "addr", "show", check=False).stdout
        candidates = list(range(64, 250))
        random.shuffle(candidates)
        for third in candidates:
            subnet = ipaddress.IPv4Network(f"10.244.{third}.0/24")
            if f"10.244.{third}." not in used:
                return cls(bridge=f"wrn{node_id}", subnet=subnet, name=f"webrelease-node-{node_id}")
        raise NodeError("no free 10.244.X.0/24 for the pod network")


@dataclass
class _Saved:
    """What `LocalNode.start` found on the machine and `stop` puts back."""

    sysctls: dict[str, str | None] = field(default_factory=dict)
    chains: dict[str, set[str]] = field(default_factory=dict)
    netns: dict[str, set[str]] = field(default_factory=dict)
    host_dirs: dict[str, bool] = field(default_factory=dict)


def _nat(*args: str, check: bool = True) -> None:
    _run("iptables", "-w", "5", "-t", "nat", *args, check=check)


def _chains(tool: str, table: str) -> set[str]:
    proc = _run(tool, "-w", "5", "-t", table, "-S", check=False)
    return {line.split()[1] for line in proc.stdout.splitlines() if line.startswith("-N ")}


class LocalNode:
    """containerd + a kubelet registered as Node ``name`` with the control plane at ``kubeconfig``.

    ``apiserver_port`` is the control plane's port on 127.0.0.1 (the ``kubernetes`` Service's target).
    Use `start` / `stop` (stop is safe to call more than once, and after a failed start).
    """

    def __init__(
        self,
        *,
        kubeconfig: Path,
        apiserver_port: int,
        kubelet: Path,
        images: NodeImages,
        work_dir: Path,
        name: str = "webrelease-node",
        start_timeout_s: float = 120.0,
    ) -> None:
        self.kubeconfig = kubeconfig
        self.apiserver_port = apiserver_port
        self.kubelet_binary = kubelet
        self.images = images
        self.work_dir = work_dir
        self.name = name
        self.start_timeout_s = start_timeout_s
        self.node_id = uuid.uuid4().hex[:6]
        self.network = PodNetwork.pick(self.node_id)
        self.cgroup_parent = f"webrelease-node-{self.node_id}"
        self.log_dir = work_dir / "logs"
        self.pod_logs = work_dir / "pod-logs"
        self.socket = work_dir / "containerd" / "containerd.sock"
        self.kubelet_port = 0
        self.start_seconds: float | None = None
        self._containerd: _Component | None = None
        self._kubelet: _Component | None = None
        self._saved: _Saved | None = None
        self._nat_chain = f"WRN-{self.node_id.upper()}"
        self._netns_paths: set[str] = set()

    # -- start -----------------------------------------------------------------------------------

    def start(self) -> None:
        started = time.monotonic()
        try:
            self._check_machine()
            self._save_host()
            self._setup_network()
            self._setup_cgroups()
            self._start_containerd()
            self._start_kubelet()
            self.wait_ready(self.start_timeout_s)
        except BaseException as exc:
            tails = self.tail_logs()
            self.stop()
            if isinstance(exc, NodeError):
                raise NodeError(f"{exc}\n{tails}") from exc
            raise
        self.start_seconds = time.monotonic() - started

    def _check_machine(self) -> None:
        if os.geteuid() != 0:
            raise NodeError("the node tier runs containerd and a kubelet: it needs root")
        for tool in ("containerd", "runc", "ctr", "ip", "iptables", "mount", "umount"):
            if shutil.which(tool) is None:
                raise NodeError(f"{tool} is missing: run scripts/install-node.sh")
        if not (CNI_BIN / "bridge").is_file():
            raise NodeError(f"{CNI_BIN}/bridge is missing: run scripts/install-node.sh")
        if not self.kubelet_binary.is_file():
            raise NodeError(f"missing {self.kubelet_binary}: run scripts/build-k8s.sh")

    def _save_host(self) -> None:
        saved = _Saved()
        saved.sysctls = {name: _read(Path("/proc/sys") / name) for name in SYSCTLS}
        saved.chains = {f"{tool} {table}": _chains(tool, table) for tool in IPTABLES for table in TABLES}
        saved.netns = {str(d): {p.name for p in d.iterdir()} if d.is_dir() else set() for d in NETNS_DIRS}
        saved.host_dirs = {str(d): d.exists() for d in HOST_DIRS}
        self._saved = saved

    def _setup_network(self) -> None:
        net = self.network
        _run("ip", "link", "add", "name", net.bridge, "type", "bridge")
        _run("ip", "addr", "add", f"{net.gateway}/{net.subnet.prefixlen}", "dev", net.bridge)
        _run("ip", "link", "set", net.bridge, "up")
        # DNAT to 127.0.0.1 is allowed for packets arriving on this bridge only (it goes with the bridge).
        Path(f"/proc/sys/net/ipv4/conf/{net.bridge}/route_localnet").write_text("1")
        chain = self._nat_chain
        _nat("-N", chain)
        to = f"127.0.0.1:{self.apiserver_port}"
        _nat(
            "-A",
            chain,
            "-d",
            f"{SERVICE_IP}/32",
            "-p",
            "tcp",
            "--dport",
            "443",
            "-j",
            "DNAT",
            "--to-destination",
            to,
        )
        _nat("-I", "PREROUTING", "-i", net.bridge, "-j", chain)
        cni_dir = self.work_dir / "cni" / "net.d"
        cni_dir.mkdir(parents=True, exist_ok=True)
        conflist = {
            "cniVersion": "1.0.0",
            "name": net.name,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": net.bridge,
                    "isGateway": True,
                    "isDefaultGateway": False,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": str(net.subnet), "gateway": net.gateway}]],
                        # the Service range through the gateway (the DNAT above); no default route
                        "routes": [{"dst": SERVICE_CIDR}],
                        "dataDir": str(self.work_dir / "cni" / "ipam"),
                    },
                }
            ],
        }
        (cni_dir / "10-webrelease.conflist").write_text(json.dumps(conflist, indent=2))

    def _cgroup_dirs(self) -> list[Path]:
        if not CGROUP_ROOT.is_dir():
            return []
        return [
            h / self.cgroup_parent
            for h in sorted(CGROUP_ROOT.iterdir())
            if h.is_dir() and not h.is_symlink() and (h / "cgroup.procs").exists()
        ]

    def _setup_cgroups(self) -> None:
        for path in self._cgroup_dirs():
            path.mkdir(exist_ok=True)
            if path.parent.name == "cpuset":
                for key in ("cpuset.cpus", "cpuset.mems"):
                    (path / key).write_text((path.parent / key).read_text())

    def _start_containerd(self) -> None:
        base = self.work_dir / "containerd"
        base.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        config = f"""version = 2
root = "{self.images.containerd_root}"
state = "{base / "state"}"
[grpc]
  address = "{self.socket}"
[plugins."io.containerd.internal.v1.opt"]
  path = "{base / "opt"}"
[{cri}]
  sandbox_image = "{self.images.pause}"
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  tolerate_missing_hugetlb_controller = true
  disable_hugetlb_controller = true
  # root here lacks CAP_SYS_RESOURCE: without this, runc fails every sandbox (oom_score_adj -998)
  restrict_oom_score_adj = true
  [{cri}.cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{self.work_dir / "cni" / "net.d"}"
  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "{shutil.which("runc")}"
        Root = "{base / "runc"}"
"""
        (base / "config.toml").write_text(config)
        component = _Component(
            "containerd",
            ["containerd", "--config", str(base / "config.toml")],
            self.log_dir / "containerd.log",
        )
        self._containerd = component
        component.start()
        deadline = time.monotonic() + 30
        while _run(*self._ctr("version"), check=False).returncode != 0:
            if component.exited() is not None or time.monotonic() > deadline:
                raise NodeError("containerd did not come up")
            time.sleep(0.1)

    def _ctr(self, *args: str) -> list[str]:
        return ["ctr", "--address", str(self.socket), "--namespace", "k8s.io", *args]

    def _start_kubelet(self) -> None:
        self.kubelet_port = free_port()
        healthz = free_port()
        self.pod_logs.mkdir(parents=True, exist_ok=True)
        resolv = self.work_dir / "resolv.conf"
        # Pods resolve no names (everything is addressed by IP): no DNS traffic leaves the pod.
        resolv.write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": self.network.gateway,
            "port": self.kubelet_port,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": healthz,
            "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
            "authorization": {"mode": "AlwaysAllow"},
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": f"/{self.cgroup_parent}",
            "failCgroupV1": False,
            "failSwapOn": False,
            "containerRuntimeEndpoint": f"unix://{self.socket}",
            "podLogsDir": str(self.pod_logs),
            "resolvConf": str(resolv),
            "volumePluginDir": str(self.work_dir / "volume-plugins"),
            "makeIPTablesUtilChains": False,
            "serializeImagePulls": False,
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "1%",
                "imagefs.available": "1%",
                "nodefs.inodesFree": "1%",
            },
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "maxPods": 60,
            "nodeStatusUpdateFrequency": "5s",
            "syncFrequency": "5s",
        }
        path = self.work_dir / "kubelet-config.yaml"
        path.write_text(yaml.safe_dump(config))
        self._kubelet = _Component(
            "kubelet",
            [
                str(self.kubelet_binary),
                f"--config={path}",
                f"--kubeconfig={self.kubeconfig}",
                f"--root-dir={self.work_dir / 'kubelet'}",
                f"--node-ip={self.network.gateway}",
                f"--hostname-override={self.name}",
                "--v=1",
            ],
            self.log_dir / "kubelet.log",
        )
        self._kubelet.start()

    # -- state ---------------------------------------------------------------------------------------

    def ready(self) -> bool:
        with Kube.from_kubeconfig(self.kubeconfig) as kube:
            node = kube.find(api_path("v1", "nodes", name=self.name))
        conditions = (node or {}).get("status", {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.ready():
            for component in (self._containerd, self._kubelet):
                if component is not None and component.exited() is not None:
                    raise NodeError(f"{component.name} exited with {component.exited()}")
            if time.monotonic() > deadline:
                raise NodeError(f"node {self.name} not Ready after {timeout_s:.0f} s")
            time.sleep(0.3)

    def restart_kubelet(self, *, down_s: float = 0.0) -> None:
        """Stops the kubelet (SIGTERM, as a service manager would) and starts it again."""
        assert self._kubelet is not None
        self._kubelet.stop()
        time.sleep(down_s)
        self._kubelet.start()

    def tail_logs(self, lines: int = 40) -> str:
        parts = []
        for log in sorted(self.log_dir.glob("*.log")) if self.log_dir.exists() else []:
            parts.append(
                f"----- {log.name} (last {lines} lines; full log: {log}) -----\n{log_tail(log, lines)}"
            )
        return "\n".join(parts)

    # -- stop --------------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stops everything and undoes every change to the machine; raises `NodeError` listing what
        could not be undone (after trying all of it)."""
        problems: list[str] = []

        def attempt(what: str, action: Any) -> None:
            try:
                action()
            except Exception as exc:
                problems.append(f"{what}: {exc}")

        attempt("drain the node", self._drain)
        if self._kubelet is not None:
            attempt("stop the kubelet", self._kubelet.stop)
            self._kubelet = None
        attempt("remove containers", self._remove_containers)
        if self._containerd is not None:
            attempt("stop containerd", self._containerd.stop)
            self._containerd = None
        attempt("kill leftover processes", self._kill_leftovers)
        attempt("unmount", self._unmount)
        attempt("remove the network", self._remove_network)
        attempt("remove iptables chains", self._remove_chains)
        attempt("restore sysctls", self._restore_sysctls)
        attempt("remove cgroups", self._remove_cgroups)
        attempt("remove host files", self._remove_host_files)
        attempt("delete the Node", self._delete_node_object)
        self._saved = None
        if problems:
            raise NodeError("the node's clean-up left something behind:\n" + "\n".join(problems))

    def _drain(self) -> None:
        if self._kubelet is None or self._kubelet.exited() is not None:
            return
        with Kube.from_kubeconfig(self.kubeconfig) as kube:
            node_path = api_path("v1", "nodes", name=self.name)
            if kube.find(node_path) is None:
                return
            kube.patch(node_path, {"spec": {"unschedulable": True}})
            for pod in kube.items(api_path("v1", "pods"), fieldSelector=f"spec.nodeName={self.name}"):
                meta = pod["metadata"]
                kube.delete(
                    api_path("v1", "pods", namespace=meta["namespace"], name=meta["name"]),
                    {"gracePeriodSeconds": 1},
                )
        deadline = time.monotonic() + 60
        while self._running_tasks():
            if time.monotonic() > deadline:
                break  # what is left is killed in _remove_containers
            time.sleep(0.5)

    def _running_tasks(self) -> list[str]:
        if self._containerd is None or self._containerd.exited() is not None:
            return []
        out = _run(*self._ctr("tasks", "list", "--quiet"), check=False).stdout
        return [t for t in out.split() if t]

    def _remove_containers(self) -> None:
        if self._containerd is None or self._containerd.exited() is not None:
            return
        ids = _run(*self._ctr("containers", "list", "--quiet"), check=False).stdout.split()
        for cid in ids:
            info = _run(*self._ctr("containers", "info", cid), check=False).stdout
            with contextlib.suppress(json.JSONDecodeError, KeyError, TypeError):
                for ns in json.loads(info)["Spec"]["linux"]["namespaces"]:
                    if ns.get("type") == "network" and ns.get("path"):
                        self._netns_paths.add(ns["path"])
            _run(*self._ctr("tasks", "kill", "--signal", "SIGKILL", cid), check=False)
            _run(*self._ctr("tasks", "delete", "--force", cid), check=False)
            _run(*self._ctr("containers", "delete", cid), check=False)

    def _kill_leftovers(self) -> None:
        """Shims and anything else started with our socket or work directory on its command line."""
        marker = str(self.work_dir).encode()
        sock = str(self.socket).encode()
        for _round in range(2):
            victims = []
            for proc in Path("/proc").iterdir():
                if not proc.name.isdigit() or int(proc.name) == os.getpid():
                    continue
                try:
                    cmdline = (proc / "cmdline").read_bytes()
                except OSError:
                    continue
                if marker in cmdline or sock in cmdline:
                    victims.append(int(proc.name))
            for pid in victims:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if not victims:
                return
            time.sleep(0.5)

    def _unmount(self) -> None:
        prefix = str(self.work_dir) + "/"
        root = str(self.images.containerd_root) + "/"
        saved_netns = self._saved.netns if self._saved is not None else {}
        new_netns = {
            str(d / n)
            for d in NETNS_DIRS
            if d.is_dir()
            for n in (p.name for p in d.iterdir())
            if n not in saved_netns.get(str(d), set())
        }
        targets = set(self._netns_paths) | new_netns
        for _round in range(3):
            points = [
                p
                for p in _mountpoints()
                if p.startswith(prefix) or p == str(self.work_dir) or p.startswith(root) or p in targets
            ]
            if not points:
                break
            for point in sorted(points, key=len, reverse=True):
                if _run("umount", point, check=False).returncode != 0:
                    _run("umount", "-l", point, check=False)
        for path in new_netns:
            with contextlib.suppress(OSError):
                Path(path).unlink()
        left = [p for p in _mountpoints() if p.startswith(prefix) or p.startswith(root) or p in targets]
        if left:
            raise NodeError(f"still mounted: {left}")

    def _remove_network(self) -> None:
        if Path(f"/sys/class/net/{self.network.bridge}").exists():
            _run("ip", "link", "delete", self.network.bridge)
        # veths whose pod network namespace was removed go with it; a stray host end is ours by master
        chain = self._nat_chain
        if chain in _chains("iptables", "nat"):
            _nat("-D", "PREROUTING", "-i", self.network.bridge, "-j", chain, check=False)
            _nat("-F", chain)
            _nat("-X", chain)

    def _remove_chains(self) -> None:
        """Chains that appeared while the node ran (the kubelet's KUBE-*), with the rules jumping to them."""
        if self._saved is None:
            return
        for tool in IPTABLES:
            for table in TABLES:
                before = self._saved.chains.get(f"{tool} {table}", set())
                new = {c for c in _chains(tool, table) - before if c.startswith("KUBE-")}
                if not new:
                    continue
                rules = _run(tool, "-w", "5", "-t", table, "-S", check=False).stdout.splitlines()
                for rule in rules:
                    parts = rule.split()
                    if parts[:1] == ["-A"] and ("-j" in parts and parts[parts.index("-j") + 1] in new):
                        _run(tool, "-w", "5", "-t", table, "-D", *parts[1:], check=False)
                for chain in new:
                    _run(tool, "-w", "5", "-t", table, "-F", chain, check=False)
                for chain in new:
                    _run(tool, "-w", "5", "-t", table, "-X", chain)

    def _restore_sysctls(self) -> None:
        if self._saved is None:
            return
        for name, value in self._saved.sysctls.items():
            path = Path("/proc/sys") / name
            if value is not None and _read(path) != value:
                path.write_text(value)

    def _remove_cgroups(self) -> None:
        for top in self._cgroup_dirs():
            if not top.exists():
                continue
            for _round in range(20):
                dirs = sorted(
                    (p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True
                )
                try:
                    for d in [*dirs, top]:
                        d.rmdir()
                    break
                except OSError:
                    time.sleep(0.25)  # tasks still exiting
            if top.exists():
                raise NodeError(f"cgroup {top} could not be removed")

    def _remove_host_files(self) -> None:
        if VAR_LOG_CONTAINERS.is_dir():
            for link in VAR_LOG_CONTAINERS.iterdir():
                target = str(link.readlink()) if link.is_symlink() else ""
                if target.startswith(str(self.pod_logs)):
                    link.unlink()
        cni_cache = Path("/var/lib/cni")
        for entry in cni_cache.rglob("*") if cni_cache.is_dir() else []:
            if entry.is_file() and self.network.name in entry.name:
                entry.unlink()
        if self._saved is None:
            return
        for directory, existed in self._saved.host_dirs.items():
            path = Path(directory)
            if existed or not path.exists():
                continue
            files = [p for p in path.rglob("*") if not p.is_dir()]
            if files:
                raise NodeError(f"{path} appeared while the node ran and holds {files[:5]}")
            shutil.rmtree(path)

    def _delete_node_object(self) -> None:
        with contextlib.suppress(Exception), Kube.from_kubeconfig(self.kubeconfig) as kube:
            kube.delete(api_path("v1", "nodes", name=self.name))


@contextlib.contextmanager
def running_node(**kwargs: Any) -> Iterator[LocalNode]:
    node = LocalNode(**kwargs)
    node.start()
    try:
        yield node
    finally:
        node.stop()
