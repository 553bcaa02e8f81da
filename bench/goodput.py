"""Goodput under throttling: copies per second that succeed behind an S3 front that limits the
request rate like S3 does, for webrelease (fast path and boto3 path), s5cmd and rclone, one
process and four processes sharing one limit.

The front is tests/harness/throttle.py (a token bucket per bucket: ``R`` writes/s, 503 SlowDown
above, 0.1 s of burst) in front of the bench's versitygw. Each run is a fresh release of the
build to enough customers for about ``throttle_seconds`` of copying at ``R``, into a fresh
bucket. The front counts what matters, the same way for every tool:

- **goodput**: successful writes into the sites' bucket ÷ the seconds between the first and the
  last of them (the throttle-bounded part of the run; process start-up and the last stragglers
  are in *wall s*);
- **requests ÷ writes**: every request the tool sent through the front (reads, listings,
  throttled attempts and its own reports included) ÷ the writes into the sites;
- **failed customers**: sites not complete after the run (every key of the build), whatever
  the tool's exit status says; a tool still running after 4x the time the limit imposes is
  stopped and its incomplete sites counted.

Four processes: ``webrelease shard`` x 4 (a quarter of the customers each: four Job pods), four
``s5cmd run`` with a quarter of the ``cp`` lines each, four chains of ``rclone copy`` (one per
customer, one after the other in each chain), all at once.
"""

from __future__ import annotations

import dataclasses
import os
import resource
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tests.harness.throttle import ThrottleProxy

from bench import tools
from bench.config import ROOT, Settings
from bench.copybench import SOURCE_BUCKET, upload_build
from bench.measure import Cmd
from bench.peers import Job, Rclone, S5cmd, Tool
from bench.report import table
from bench.s3 import BenchServer, client, credentials_env, list_keys
from bench.workload import Build, make_build, make_customers
from bench.wrtool import META_BUCKET, Webrelease, webrelease_version, write_snapshot

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

#: Stop a tool after this many times the duration the limit imposes (plus start-up slack).
TIMEOUT_FACTOR = 4


@dataclass
class Row:
    rate: int
    processes: int
    tool: str
    objects: int
    customers: int
    wall_s: float
    cpu_s: float
    writes: int
    steady_s: float
    requests: int
    throttled: int
    failed_customers: int
    exit_note: str

    @property
    def goodput(self) -> float:
        return self.writes / self.steady_s if self.steady_s > 0 else 0.0

    @property
    def wall_goodput(self) -> float:
        return self.writes / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def requests_per_write(self) -> float:
        return self.requests / self.writes if self.writes else float("inf")

    def to_json(self) -> dict[str, object]:
        d = dataclasses.asdict(self)
        d.update(
            goodput=self.goodput, wall_goodput=self.wall_goodput, requests_per_write=self.requests_per_write
        )
        return d


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _chain(cmds: Sequence[Cmd]) -> Cmd:
    """One process (a shell) running ``cmds`` one after the other, stopping at the first failure."""
    script = "set -e\n" + "\n".join(shlex.join(c.argv) for c in cmds)
    return Cmd(["bash", "-c", script], cmds[0].env, concurrent=True)


def split_job(job: Job, parts: int) -> list[Job]:
    size = -(-len(job.customers) // parts)
    return [
        dataclasses.replace(job, customers=job.customers[i : i + size], work=job.work / f"part{n}")
        for n, i in enumerate(range(0, len(job.customers), size))
    ]


def processes_for(tool: Tool, job: Job, processes: int) -> list[Cmd]:
    """The commands of ``processes`` concurrent processes doing ``job`` between them."""
    if isinstance(tool, Webrelease):
        return [dataclasses.replace(c, concurrent=True) for c in tool.fresh(job)]
    out: list[Cmd] = []
    for part in split_job(job, processes):
        cmds = tool.fresh(part)
        out.append(dataclasses.replace(cmds[0], concurrent=True) if len(cmds) == 1 else _chain(cmds))
    return out


def run_processes(cmds: Sequence[Cmd], out: Path, timeout_s: float) -> tuple[float, float, str]:
    """Start every command at once; wall seconds, CPU seconds and a note (exit codes, timeout)."""
    cpu0 = _children_cpu()
    t0 = time.perf_counter()
    notes: list[str] = []
    with out.open("ab") as sink:
        procs = [
            subprocess.Popen(
                list(c.argv), env=dict(c.env), stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
            )
            for c in cmds
        ]
        deadline = t0 + timeout_s
        for p in procs:
            try:
                p.wait(max(0.1, deadline - time.perf_counter()))
            except subprocess.TimeoutExpired:
                notes.append("stopped at the time limit")
                for q in procs:
                    if q.poll() is None:
                        os.killpg(q.pid, 9)
                for q in procs:
                    q.wait()
                break
        codes = sorted({p.returncode for p in procs if p.returncode not in (0, None)})
        if codes and not notes:
            notes.append("exit " + ",".join(str(c) for c in codes))
    return time.perf_counter() - t0, _children_cpu() - cpu0, "; ".join(notes)


def incomplete_sites(s3: S3Client, bucket: str, customers: Sequence[str], keys: Sequence[str]) -> int:
    have: dict[str, set[str]] = {c: set() for c in customers}
    for key, _size, _etag in list_keys(s3, bucket):
        cust, _, rel = key.partition("/")
        if cust in have:
            have[cust].add(rel)
    want = set(keys)
    return sum(1 for c in customers if not want <= have[c])


@dataclass
class Throttled:
    settings: Settings
    server: BenchServer
    s3: S3Client
    build: Build
    log: Callable[[str], None]

    def tools(self, customers: int) -> list[Tool]:
        s = self.settings
        self.server.drop_bucket(META_BUCKET)  # the snapshot of the previous limit's customers
        snapshot = write_snapshot(self.s3, make_customers(customers))
        templates = sorted(f.key for f in self.build.templates)
        version = webrelease_version()
        wr = [str(tools.webrelease())]
        boto = [sys.executable, "-m", "bench.botoshard"]
        chosen: list[Tool] = [
            Webrelease(wr, version, snapshot, templates),
            Webrelease(boto, version, snapshot, templates, name="webrelease-boto3"),
        ]
        if "s5cmd" in s.tools:
            chosen.append(S5cmd(tools.s5cmd(s), s.versions.s5cmd))
        if "rclone" in s.tools:
            chosen.append(Rclone(tools.rclone(s), s.versions.rclone))
        return chosen

    def one(self, proxy: ThrottleProxy, tool: Tool, rate: int, processes: int, customers: int) -> Row:
        s = self.settings
        ids = [str(c["id"]) for c in make_customers(customers)]
        keys = [f.key for f in self.build.files]
        bucket = f"goodput-{tool.name}-{rate}-{processes}"
        self.server.drop_bucket(bucket)
        self.s3.create_bucket(Bucket=bucket)
        if isinstance(tool, Webrelease) and tool.processes != processes:
            tool = dataclasses.replace(tool, processes=processes)
        job = Job(
            endpoint=proxy.endpoint.endpoint_url,
            src_bucket=SOURCE_BUCKET,
            src_prefix="v1/",
            dst_bucket=bucket,
            customers=ids,
            keys=keys,
            work=s.work / "throttle" / f"{tool.name}-{rate}-{processes}",
            in_flight=s.in_flight,
            env={**credentials_env(self.server.endpoint), "PYTHONPATH": str(ROOT)},
        )
        job.work.mkdir(parents=True, exist_ok=True)
        cmds = processes_for(tool, job, processes)
        objects = len(ids) * len(keys)
        proxy.reset()
        wall, cpu, note = run_processes(cmds, job.work / "out.log", TIMEOUT_FACTOR * objects / rate + 60)
        stats = proxy.stats()
        writes = stats.writes_ok.get(bucket, 0)
        steady = stats.write_span(bucket)
        failed = incomplete_sites(self.s3, bucket, ids, keys)
        self.server.drop_bucket(bucket)
        row = Row(
            rate=rate,
            processes=processes,
            tool=tool.name,
            objects=objects,
            customers=len(ids),
            wall_s=wall,
            cpu_s=cpu,
            writes=writes,
            steady_s=steady,
            requests=stats.total,
            throttled=stats.total_throttled,
            failed_customers=failed,
            exit_note=note,
        )
        self.log(
            f"  R={rate:5d} x{processes} {tool.name:17s} wall {wall:6.1f} s  goodput {row.goodput:6.0f}/s "
            f"({row.goodput / rate:.2f} R)  req/write {row.requests_per_write:.3f}  "
            f"failed {failed}  {note}"
        )
        return row

    def run(self) -> list[Row]:
        s = self.settings
        rows: list[Row] = []
        with ThrottleProxy(self.server.endpoint, rate=max(s.throttle_rates)) as proxy:
            for rate in s.throttle_rates:
                customers = max(4, round(rate * s.throttle_seconds / len(self.build.files)))
                proxy.set_rate(rate)
                chosen = self.tools(customers)
                self.log(f"R = {rate} writes/s: {customers} customers x {len(self.build.files)} files")
                for processes in (1, 4):
                    for tool in chosen:
                        rows.append(self.one(proxy, tool, rate, processes, customers))
        return rows


def run(settings: Settings, log: Callable[[str], None]) -> list[Row]:
    build = make_build(settings.files)
    work = settings.work / "throttle"
    work.mkdir(parents=True, exist_ok=True)
    with BenchServer(work / "s3") as server:
        s3 = client(server.endpoint)
        upload_build(s3, build)
        return Throttled(settings, server, s3, build, log).run()


def tables(rows: Sequence[Row], settings: Settings) -> str:
    out: list[str] = []
    header = [
        "R (writes/s)",
        "processes",
        "tool",
        "goodput /s",
        "goodput / R",
        "wall s",
        "requests ÷ writes",
        "503s",
        "failed customers",
        "client CPU s / 1k obj",
    ]
    body: list[list[str]] = []
    for r in rows:
        failed = str(r.failed_customers) + (f" ({r.exit_note})" if r.exit_note else "")
        body.append(
            [
                f"{r.rate:,}",
                str(r.processes),
                r.tool,
                f"{r.goodput:,.0f}",
                f"{r.goodput / r.rate:.2f}",
                f"{r.wall_s:.1f}",
                f"{r.requests_per_write:.3f}",
                f"{r.throttled:,}",
                failed,
                f"{r.cpu_s / r.objects * 1000:.2f}" if r.objects else "n/a",
            ]
        )
    out.append(table(header, body, "rrlrrrrrrr"))
    return "\n".join(out) + "\n"
