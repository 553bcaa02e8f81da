"""The cluster path end to end, against ``webrelease run`` of the same release on the same machine.

One S3 server (versitygw, with the throttling front of tests/harness/throttle.py in front at a
limit no run reaches, so that both paths pass through the same proxy and it timestamps every
write), one local control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler:
tests/harness/controlplane.py), the test node agent (tests/harness/nodeagent.py: the stand-in for
the kubelet, which runs each pod's command as a process on this machine) and ``webrelease
operator`` as a process of its own.

1. **Cluster**: ``kubectl apply`` of a WebRelease of N customers x F files; a watcher polls (every
   0.25 s) for the Job, the first pod, the first pod Running, and the WebRelease's ``Complete``;
   the front gives the first and the last write into the sites. Operator CPU is read from
   /proc (user + system, during the run) and its peak memory is its VmHWM. Apiserver requests
   come from the apiserver's own ``apiserver_request_total`` (every client: the operator, the
   Job controller, the scheduler, the node agent and this watcher, whose own requests are
   counted and taken off); status writes are the PATCH/PUT requests to ``webreleases/status``.
2. **Local**: ``webrelease run`` of the same release (other sites) with as many workers as the
   release's ``parallelism``: wall seconds, CPU of it and its shard processes.
3. **Re-release** (local, the same sites): nothing changed, then one file of the build changed:
   requests by operation from the server's access log: writes to the sites, and the requests per
   customer: its listing pages (one per 1,000 keys), plus the GET of its site record (a key under
   ``_site-records/`` in the reports, which the local runs keep in a bucket of their own), plus
   any HEAD. ``--only rerelease`` runs this part alone (with its own fresh release).
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from tests.harness.cluster_fixtures import wait_until
from tests.harness.controlplane import ClusterSettings, Kube, LocalControlPlane, api_path, ensure_binaries
from tests.harness.nodeagent import NodeAgent, NodeAgentConfig
from tests.harness.operator_harness import (
    OperatorProcess,
    apply,
    create_storage_secret,
    ended,
    install_crd,
    is_true,
    release_path,
)
from tests.harness.throttle import ThrottleProxy

from bench.config import Settings
from bench.copybench import SOURCE_BUCKET, upload_build
from bench.report import table
from bench.s3 import BenchServer, client, credentials_env, list_keys, parse_access_log, parse_access_log_keys
from bench.workload import make_build, make_customers
from webrelease.copier.snapshot import encode

NAMESPACE = "bench"
RELEASE = "cluster-bench"
META = "cluster-meta"
POLL_S = 0.25
SITES_LOCAL = "sites-local"
#: The local runs' reports (and so their site records, ``_site-records/`` under the reports) get a
#: bucket of their own, so that the access log tells a record's GET/PUT from the sites' requests.
REPORTS_LOCAL = "reports-local"
#: Operations counted on the reports bucket carry this prefix in the ``rerelease`` counts; those
#: on a site record (a key under ``_site-records/``, a subset of them) this one.
REPORTS = "reports "
RECORDS = "record "


def _proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def _proc_hwm_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def apiserver_requests(kube: Kube) -> dict[tuple[str, str, str], float]:
    """``apiserver_request_total`` summed by (verb, resource, subresource)."""
    text = kube.open("GET", "/metrics").data.decode()
    out: dict[tuple[str, str, str], float] = {}
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels_text, _, value = line[len("apiserver_request_total{") :].rpartition("} ")
        labels = dict(part.split("=", 1) for part in labels_text.replace('"', "").split(",") if "=" in part)
        key = (labels.get("verb", ""), labels.get("resource", ""), labels.get("subresource", ""))
        out[key] = out.get(key, 0.0) + float(value)
    return out


@dataclass
class Watch:
    """First-seen times (monotonic) of what the cluster did, polled."""

    kube: Kube
    started: float
    seen: dict[str, float] = field(default_factory=dict)
    requests: int = 0
    done: threading.Event = field(default_factory=threading.Event)
    body: dict[str, Any] | None = None

    def _mark(self, what: str) -> None:
        self.seen.setdefault(what, time.monotonic())

    def run(self) -> None:
        ns = NAMESPACE
        while not self.done.is_set():
            if "job" not in self.seen:
                self.requests += 1
                if self.kube.items(api_path("batch/v1", "jobs", namespace=ns)):
                    self._mark("job")
            if "job" in self.seen and "pod running" not in self.seen:
                self.requests += 1
                pods = self.kube.items(api_path("v1", "pods", namespace=ns))
                if pods:
                    self._mark("pod")
                if any((p.get("status") or {}).get("phase") in ("Running", "Succeeded") for p in pods):
                    self._mark("pod running")
            self.requests += 1
            body = self.kube.find(release_path(ns, RELEASE))
            if body is not None and ended(body):
                self._mark("ended")
                self.body = body
                return
            time.sleep(POLL_S)


@dataclass
class ClusterResult:
    customers: int
    files: int
    shards: int
    parallelism: int
    cluster_s: float
    local_s: float
    local_cpu_s: float
    cluster_pods_cpu_s: float
    operator_cpu_s: float
    operator_hwm_mib: float
    complete: bool
    phases: dict[str, float]
    api: dict[str, float]
    status_writes: float
    watcher_requests: int
    rerelease: dict[str, dict[str, int]]
    #: label -> (wall s, client CPU s) of the same local runs
    rerelease_times: dict[str, tuple[float, float]]
    list_pages_per_customer: float
    #: 1-minute load average at the end of each path's run, and which ran first
    loads: dict[str, float]
    local_first: bool

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _spec(
    settings: Settings, endpoint: str, sites: str, shards_of: int, parallelism: int, build: str
) -> dict[str, Any]:
    return {
        "source": {"url": f"s3://{SOURCE_BUCKET}/{build}/"},
        "target": {"url": f"s3://{sites}/{{id}}/"},
        "customers": {"url": f"s3://{META}/customers.jsonl"},
        "reports": {"url": f"s3://{META}/reports/"},
        "sharding": {"customersPerShard": shards_of, "parallelism": parallelism},
        "storage": {"endpointUrl": endpoint, "region": "us-east-1", "addressingStyle": "path"},
        "worker": {"objectsInFlight": settings.in_flight},
    }


class Local:
    """``webrelease run`` of the bench's release into ``sites-local``, timed, its requests counted
    by bucket and operation from the server's access log (the reports bucket's prefixed
    ``reports ``: shard reports and the site records)."""

    def __init__(
        self, s: Settings, server: BenchServer, endpoint: str, rel_dir: Path, templates: list[str]
    ) -> None:
        self.s, self.server, self.endpoint, self.templates = s, server, endpoint, templates
        self.rel_dir = rel_dir
        rel_dir.mkdir(parents=True, exist_ok=True)
        self.env = credentials_env(server.endpoint)
        self.bin = Path(sys.executable).parent / "webrelease"
        self.log: Callable[[str], None] = print

    def run(self, build_prefix: str, label: str) -> tuple[float, float, dict[str, int]]:
        s = self.s
        sp = _spec(
            s, self.endpoint, SITES_LOCAL, s.cluster_customers_per_shard, s.cluster_parallelism, build_prefix
        )
        sp["templates"] = self.templates
        sp["reports"] = {"url": f"s3://{REPORTS_LOCAL}/reports/"}
        f = self.rel_dir / f"{label}.yaml"
        doc = {
            "apiVersion": "webrelease.dev/v1alpha1",
            "kind": "WebRelease",
            "metadata": {"name": "local-bench"},
            "spec": sp,
        }
        f.write_text(yaml.safe_dump(doc, sort_keys=False))
        self.server.log.mark()
        c0 = _children_cpu()
        t = time.monotonic()
        proc = subprocess.run(
            [str(self.bin), "run", str(f), "--no-progress", "--workers", str(s.cluster_parallelism)],
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
        )
        wall = time.monotonic() - t
        cpu = _children_cpu() - c0
        if proc.returncode != 0:
            raise RuntimeError(f"webrelease run ({label}) exited {proc.returncode}: {proc.stderr[-2000:]}")
        text = self.server.log.since_mark_text()
        counts = parse_access_log(text)
        ops = {op: int(c) for (b, op), c in counts.items() if b == SITES_LOCAL}
        ops |= {REPORTS + op: int(c) for (b, op), c in counts.items() if b == REPORTS_LOCAL}
        records = parse_access_log_keys(text, "/_site-records/")
        ops |= {RECORDS + op: int(c) for (b, op), c in records.items() if b == REPORTS_LOCAL}
        self.log(f"  local {label}: {wall:.1f} s, CPU {cpu:.1f} s, requests {ops}")
        return wall, cpu, ops


@dataclass
class RereleaseResult:
    customers: int
    files: int
    #: label -> (wall s, client CPU s, requests by operation)
    runs: dict[str, tuple[float, float, dict[str, int]]]
    #: 1-minute load average at the start and after each run
    loads: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def run_rerelease(settings: Settings, log: Callable[[str], None]) -> RereleaseResult:
    """Only the re-release part: the local fresh release, then nothing changed, then one file."""
    s = settings
    work = s.work / "rerelease"
    work.mkdir(parents=True, exist_ok=True)
    n, files = s.cluster_customers, s.cluster_files
    build = make_build(files)
    customers = make_customers(n)
    templates = sorted(f.key for f in build.templates)
    log(f"== re-release: {n:,} customers x {files} files, --workers {s.cluster_parallelism}")
    loads = {"start": os.getloadavg()[0]}
    runs: dict[str, tuple[float, float, dict[str, int]]] = {}
    with BenchServer(work / "s3") as server, ThrottleProxy(server.endpoint, rate=1e9) as front:
        s3 = client(server.endpoint)
        upload_build(s3, build)
        for bucket in (META, SITES_LOCAL, REPORTS_LOCAL):
            s3.create_bucket(Bucket=bucket)
        s3.put_object(Bucket=META, Key="customers.jsonl", Body=encode(customers))
        local = Local(s, server, front.endpoint.endpoint_url, work / "local", templates)
        local.log = log
        for prefix, label in (("v1", "fresh"), ("v1", "noop"), ("v2", "changed")):
            runs[label] = local.run(prefix, label)
            loads[label] = os.getloadavg()[0]
    return RereleaseResult(customers=n, files=files, runs=runs, loads=loads)


def rerelease_table(
    customers: int, runs: Mapping[str, tuple[float | None, float | None, dict[str, int]]]
) -> str:
    """Requests by type per run; per customer: the site listing pages plus the site record's GET."""
    rows = []
    for label, (wall, cpu, ops) in runs.items():
        site = {k: v for k, v in ops.items() if not k.startswith((REPORTS, RECORDS))}
        writes = site.get("CopyObject", 0) + site.get("PutObject", 0)
        lists = site.get("ListObjectsV2", 0)
        heads = site.get("HeadObject", 0)
        gets = ops.get(RECORDS + "GetObject", 0)
        rows.append(
            [
                label,
                "" if wall is None else f"{wall:.1f}",
                "" if cpu is None else f"{cpu:.1f}",
                f"{writes:,}",
                f"{lists:,}",
                f"{gets:,}",
                f"{heads:,}",
                f"{(lists + gets + heads) / customers:.2f}",
                ", ".join(f"{k} {v:,}" for k, v in sorted(ops.items())),
            ]
        )
    return table(
        [
            "local run",
            "wall s",
            "CPU s",
            "writes to sites (PUT/COPY)",
            "LIST (sites)",
            "GET (site records)",
            "HEAD (sites)",
            "LIST + record GET + HEAD per customer",
            "requests by operation (sites; reports bucket; its site records)",
        ],
        rows,
        "lrrrrrrrl",
    )


def run(settings: Settings, log: Callable[[str], None]) -> ClusterResult:
    s = settings
    work = s.work / "cluster"
    work.mkdir(parents=True, exist_ok=True)
    n, files = s.cluster_customers, s.cluster_files
    per_shard = s.cluster_customers_per_shard
    parallelism = s.cluster_parallelism
    build = make_build(files)
    customers = make_customers(n)
    templates = sorted(f.key for f in build.templates)
    binaries = ensure_binaries(ClusterSettings.from_env())
    log(f"== cluster path: {n:,} customers x {files} files, {per_shard} per shard, parallelism {parallelism}")
    with (
        BenchServer(work / "s3") as server,
        ThrottleProxy(server.endpoint, rate=1e9) as front,
        LocalControlPlane(binaries, work / "plane") as plane,
        plane.kube() as kube,
    ):
        s3 = client(server.endpoint)
        upload_build(s3, build)
        for bucket in (META, "sites-cluster", SITES_LOCAL, REPORTS_LOCAL):
            s3.create_bucket(Bucket=bucket)
        s3.put_object(Bucket=META, Key="customers.jsonl", Body=encode(customers))
        endpoint = front.endpoint.endpoint_url
        venv_bin = Path(sys.executable).parent
        # -- the same release, locally
        local = Local(s, server, endpoint, work / "local", templates)
        local.log = log

        path = os.pathsep.join([str(venv_bin), str(plane.bin_dir or ""), os.environ.get("PATH", "")])
        agent = NodeAgent(
            NodeAgentConfig(
                kubeconfig=plane.kubeconfig,
                work_dir=work / "node",
                path=path,
                concurrency=max(parallelism, 2),
            )
        )
        loads: dict[str, float] = {}
        if s.cluster_local_first:
            local_s, local_cpu, fresh_ops = local.run("v1", "fresh")
            loads["local"] = os.getloadavg()[0]
        agent.start()
        operator = OperatorProcess(plane, work / "operator")
        try:
            kube.create(api_path("v1", "namespaces"), {"metadata": {"name": NAMESPACE}})
            wait_until(
                "the default ServiceAccount",
                lambda: kube.find(api_path("v1", "serviceaccounts", namespace=NAMESPACE, name="default")),
                timeout_s=60,
            )
            secret = create_storage_secret(kube, NAMESPACE, server.endpoint)
            install_crd(plane, kube)
            operator.start()
            assert operator.process is not None
            opid = operator.process.pid
            spec = _spec(s, endpoint, "sites-cluster", per_shard, parallelism, "v1")
            spec["templates"] = templates
            spec["storage"]["secretRef"] = {"name": secret}
            doc = {
                "apiVersion": "webrelease.dev/v1alpha1",
                "kind": "WebRelease",
                "metadata": {"name": RELEASE},
                "spec": spec,
            }
            time.sleep(2)  # let the operator settle after start-up (its CPU until now is not the run's)
            cpu0, pods_cpu0 = _proc_cpu(opid), _children_cpu()
            api0 = apiserver_requests(kube)
            front.reset()
            t0 = time.monotonic()
            done = apply(plane, NAMESPACE, doc)
            if done.returncode != 0:
                raise RuntimeError(f"kubectl apply failed: {done.stderr}")
            watch = Watch(kube, t0)
            watch.seen["applied"] = t0
            watcher = threading.Thread(target=watch.run, daemon=True)
            watcher.start()
            watcher.join(timeout=max(600.0, n * files / 50))
            watch.done.set()
            cluster_s = watch.seen.get("ended", time.monotonic()) - t0
            pods_cpu = _children_cpu() - pods_cpu0  # the node agent has waited for every pod
            loads["cluster"] = os.getloadavg()[0]
            op_cpu = _proc_cpu(opid) - cpu0
            op_hwm = _proc_hwm_mib(opid)
            api1 = apiserver_requests(kube)
            stats = front.stats()
            body = watch.body or {}
            complete = is_true(body, "Complete")
            log(
                f"  cluster: {cluster_s:.1f} s, complete={complete}, "
                f"operator CPU {op_cpu:.1f} s, HWM {op_hwm:.0f} MiB"
            )
            # phases, seconds after "applied"
            phases = {k: v - t0 for k, v in watch.seen.items()}
            if "sites-cluster" in stats.first_write_in:
                phases["first copy"] = stats.first_write_in["sites-cluster"] - t0
                phases["last copy"] = stats.last_write_in["sites-cluster"] - t0
            api = {
                f"{verb} {res}{'/' + sub if sub else ''}": api1.get((verb, res, sub), 0.0)
                - api0.get((verb, res, sub), 0.0)
                for (verb, res, sub) in set(api1) | set(api0)
            }
            api = {k: v for k, v in api.items() if v > 0}
            status_writes = sum(
                v
                for k, v in api.items()
                if k.endswith("webreleases/status") and k.split()[0] in ("PATCH", "UPDATE", "PUT")
            )
        finally:
            operator.stop()
            agent.stop()

        if not s.cluster_local_first:
            local_s, local_cpu, fresh_ops = local.run("v1", "fresh")
            loads["local"] = os.getloadavg()[0]
        noop_s, noop_cpu, noop_ops = local.run("v1", "noop")
        chg_s, chg_cpu, changed_ops = local.run("v2", "changed")
        site_keys = sum(1 for _ in list_keys(s3, SITES_LOCAL))
        pages = noop_ops.get("ListObjectsV2", 0) / n
        log(f"  {SITES_LOCAL} holds {site_keys:,} keys")
    return ClusterResult(
        customers=n,
        files=files,
        shards=-(-n // per_shard),
        parallelism=parallelism,
        cluster_s=cluster_s,
        local_s=local_s,
        local_cpu_s=local_cpu,
        cluster_pods_cpu_s=pods_cpu,
        operator_cpu_s=op_cpu,
        operator_hwm_mib=op_hwm,
        complete=complete,
        phases=phases,
        api=api,
        status_writes=status_writes,
        watcher_requests=watch.requests,
        rerelease={"fresh": fresh_ops, "noop": noop_ops, "changed": changed_ops},
        rerelease_times={
            "fresh": (local_s, local_cpu),
            "noop": (noop_s, noop_cpu),
            "changed": (chg_s, chg_cpu),
        },
        list_pages_per_customer=pages,
        loads=loads,
        local_first=s.cluster_local_first,
    )


def tables(r: ClusterResult) -> str:
    out: list[str] = []
    ratio = r.cluster_s / r.local_s if r.local_s else float("inf")
    out.append(
        table(
            ["path", "wall s", "time / local run's", "CPU s", "note"],
            [
                [
                    "`webrelease run`",
                    f"{r.local_s:.1f}",
                    "1.00x",
                    f"{r.local_cpu_s:.1f}",
                    f"--workers {r.parallelism}; load {r.loads.get('local', 0):.1f}"
                    + ("; ran first" if r.local_first else ""),
                ],
                [
                    "operator + Job (node agent)",
                    f"{r.cluster_s:.1f}",
                    f"{ratio:.2f}x",
                    f"{r.cluster_pods_cpu_s:.1f} (pods)",
                    ("Complete" if r.complete else "NOT Complete")
                    + f"; load {r.loads.get('cluster', 0):.1f}"
                    + ("" if r.local_first else "; ran first"),
                ],
            ],
            "lrrrl",
        )
    )
    out.append("")
    api_total = sum(r.api.values()) - r.watcher_requests
    share = r.operator_cpu_s / r.cluster_pods_cpu_s * 100 if r.cluster_pods_cpu_s else float("nan")
    out.append(
        table(
            ["operator", "value"],
            [
                ["CPU during the run", f"{r.operator_cpu_s:.2f} s ({share:.1f} % of the pods' CPU)"],
                ["peak memory (VmHWM)", f"{r.operator_hwm_mib:.0f} MiB"],
                [
                    "status writes",
                    f"{r.status_writes:.0f} ({r.status_writes / (r.cluster_s / 60):.1f} per minute)",
                ],
                [
                    "apiserver requests (all clients, less this bench's polling)",
                    f"{api_total:,.0f} ({api_total / r.shards:.1f} per shard)",
                ],
            ],
            "lr",
        )
    )
    out.append("")
    order = ["applied", "job", "pod", "pod running", "first copy", "last copy", "ended"]
    rows = []
    prev = 0.0
    for name in order:
        if name in r.phases:
            rows.append([name, f"{r.phases[name]:.2f}", f"+{r.phases[name] - prev:.2f}"])
            prev = r.phases[name]
    out.append(table(["event (cluster run)", "s after apply", "step s"], rows, "lrr"))
    out.append("")
    top = sorted(r.api.items(), key=lambda kv: -kv[1])[:12]
    out.append(
        table(
            ["apiserver requests during the run (verb resource)", "count"],
            [[k, f"{v:,.0f}"] for k, v in top],
            "lr",
        )
    )
    out.append("")
    times: dict[str, tuple[float | None, float | None]] = dict(r.rerelease_times)
    out.append(
        rerelease_table(
            r.customers, {label: (*times.get(label, (None, None)), ops) for label, ops in r.rerelease.items()}
        )
    )
    return "\n".join(out) + "\n"
