"""``python -m bench``: run the comparisons and print the tables (see bench/README.md)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import platform
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from bench import tools
from bench.config import ROOT, Settings, parse
from bench.copybench import MODES, SCENARIOS, CopyBench, CopyResults, Mode, Scenario, upload_build
from bench.latency import LatencyProxy
from bench.measure import Cmd
from bench.peers import AwsCli, Rclone, S5cmd, Tool
from bench.profile import profile_table, record
from bench.report import SCENARIO_TITLES, copy_tables, mode_label, ops_table
from bench.s3 import BenchServer, client, credentials_env
from bench.workload import Build, make_build, make_customers
from bench.wrtool import Snapshot, Webrelease, webrelease_version, write_snapshot

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{os.cpu_count()} CPUs ({cpu}), {mem_gib:.0f} GiB RAM, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def versions_line(s: Settings, wr_version: str) -> str:
    v = s.versions
    return (
        f"webrelease {wr_version}; s5cmd {v.s5cmd}; rclone {v.rclone}; aws-cli {v.awscli} (v1, PyPI); "
        f"versitygw {v.versitygw} (POSIX backend); toxiproxy {v.toxiproxy}"
    )


@dataclass
class Stage:
    """What the copy, alternatives and profile sections share: one S3 server, the latency proxy
    in front of it, the build (v1 and v2) and the customers' snapshot, uploaded once."""

    settings: Settings
    server: BenchServer
    endpoints: dict[Mode, str]
    s3: S3Client
    build: Build
    customers: list[dict[str, object]]
    snapshot: Snapshot
    wr_version: str

    def webrelease(
        self, *, name: str = "webrelease", lean: bool = False, boto3_only: bool = False, processes: int = 1
    ) -> Webrelease:
        if lean:
            command = [sys.executable, "-m", "bench.leanshard"]
        elif boto3_only:
            command = [sys.executable, "-m", "bench.botoshard"]
        else:
            command = [str(tools.webrelease())]
        templates = sorted(f.key for f in self.build.templates)
        return Webrelease(command, self.wr_version, self.snapshot, templates, name=name, processes=processes)

    def copy_bench(
        self, chosen: list[Tool], work: str, scenarios: tuple[Scenario, ...] = SCENARIOS
    ) -> CopyBench:
        s = self.settings
        return CopyBench(
            s3=self.s3,
            log=self.server.log,
            build=self.build,
            customers=self.customers,
            tools=chosen,
            endpoints=self.endpoints,
            env={**credentials_env(self.server.endpoint), "PYTHONPATH": str(ROOT)},
            work=s.work / work,
            runs=s.runs,
            in_flight=s.in_flight,
            drop_bucket=self.server.drop_bucket,
            scenarios=scenarios,
        )

    @property
    def objects(self) -> int:
        return len(self.customers) * len(self.build.files)

    def describe(self) -> str:
        s, build = self.settings, self.build
        return (
            f"Build: {len(build.files)} files, {build.total_bytes / 1e6:.1f} MB "
            f"({len(build.templates)} templated: webrelease renders them per customer, "
            "the peers copy them as they are); "
            f"{len(self.customers)} customers, so {self.objects:,} objects per run. "
            f"Median of {s.runs} run(s). Latency: toxiproxy adds {s.latency_ms} ms to every response. "
        )


@contextlib.contextmanager
def stage(s: Settings) -> Iterator[Stage]:
    build = make_build(s.files)
    customers = make_customers(s.customers)
    s.work.mkdir(parents=True, exist_ok=True)
    with BenchServer(s.work / "s3") as server:
        ep = server.endpoint
        s3 = client(ep)
        log(f"S3 server {ep.endpoint_url}; uploading the build ({len(build.files)} files, v1 and v2)...")
        upload_build(s3, build)
        snapshot = write_snapshot(s3, customers)
        with LatencyProxy(tools.toxiproxy(s), server.port, s.latency_ms, s.work / "toxiproxy.log") as proxy:
            yield Stage(
                settings=s,
                server=server,
                endpoints={"direct": ep.endpoint_url, "latency": proxy.endpoint},
                s3=s3,
                build=build,
                customers=customers,
                snapshot=snapshot,
                wr_version=webrelease_version(),
            )


def copy_section(st: Stage, out: list[str]) -> CopyResults:
    s = st.settings
    all_tools: dict[str, Tool] = {
        "webrelease": st.webrelease(),
        "s5cmd": S5cmd(tools.s5cmd(s), s.versions.s5cmd),
        "rclone": Rclone(tools.rclone(s), s.versions.rclone),
        "aws": AwsCli(tools.aws(s), s.versions.awscli),
    }
    log("== copy comparisons")
    results = st.copy_bench([all_tools[name] for name in s.tools], "copy").run(MODES)
    out.append("## Copy comparisons\n")
    out.append(
        st.describe()
        + "Requests are counted by the S3 server (its access log), the same way for every tool; "
        "'writes to sites' are CopyObject/PutObject requests into the customers' sites (webrelease also "
        "writes its per-shard report: 2 PutObject). "
        f"Objects/s = {st.objects:,} objects the run is responsible for / wall seconds. "
        f"Requests in flight: webrelease {s.in_flight} (worker.objectsInFlight), rclone "
        f"--transfers/--checkers {s.in_flight}, aws max_concurrent_requests {s.in_flight}, s5cmd its "
        "default 256 workers. Last column: the tool's wall time / webrelease's (above 1: webrelease "
        "is faster).\n"
    )
    out.append(copy_tables(results, list(s.tools), s.latency_ms))
    out.append("### Requests by operation\n")
    out.append(ops_table(results, list(s.tools), s.latency_ms))
    out.append("")
    return results


ALTERNATIVES = (
    "webrelease",
    "webrelease-boto3",
    "webrelease-2proc",
    "webrelease-lean",
    "webrelease-lean-2proc",
    "s5cmd",
)


def alternatives_section(st: Stage, out: list[str]) -> CopyResults:
    """The fresh release by webrelease as it is, with two shard processes at once (two processes
    per pod), with the prototype lean client instead of botocore for copies and puts, both, and s5cmd."""
    s = st.settings
    variants: list[Tool] = [
        st.webrelease(),
        st.webrelease(name="webrelease-boto3", boto3_only=True),
        st.webrelease(name="webrelease-2proc", processes=2),
        st.webrelease(name="webrelease-lean", lean=True),
        st.webrelease(name="webrelease-lean-2proc", lean=True, processes=2),
        S5cmd(tools.s5cmd(s), s.versions.s5cmd),
    ]
    log("== alternatives (fresh release)")
    results = st.copy_bench(variants, "alternatives", ("fresh",)).run(MODES)
    out.append("## Alternatives: more processes, a leaner client (fresh release)\n")
    out.append(
        st.describe()
        + "`-2proc`: two `webrelease shard` processes at once, each with half of the customers (what "
        "two processes per pod would do). `-boto3`: the S3 store's fast path turned off, every "
        "request through boto3 (bench/botoshard.py; webrelease before storage/fastpath.py). "
        "`-lean`: the same shard with the PROTOTYPE client of "
        "bench/leanclient.py (hand-signed SigV4 over http.client) doing CopyObject and PutObject "
        "instead of botocore (bench/leanshard.py); listing, planning and rendering unchanged.\n"
    )
    out.append(copy_tables(results, list(ALTERNATIVES), s.latency_ms))
    return results


def profile_section(st: Stage, out: list[str]) -> dict[str, object]:
    """py-spy on ``webrelease shard`` (the GIL holder): a fresh release and a no-op re-run."""
    s = st.settings
    pyspy = tools.pyspy(s)
    work = s.work / "profile"
    work.mkdir(parents=True, exist_ok=True)
    wr = st.webrelease()
    raw: dict[str, object] = {}
    log("== profile")
    out.append("## Where a webrelease shard spends its time (py-spy)\n")
    out.append(
        f"One `webrelease shard` of {len(st.customers)} customers x {len(st.build.files)} files, sampled "
        f"by py-spy {s.versions.pyspy} (`--gil --nonblocking`: only the thread holding the GIL, i.e. "
        "where the process computes; threads waiting on sockets are not sampled). bench/profile.py "
        "charges each sample to the innermost frame of a known layer.\n"
    )
    for mode in MODES:
        bucket = f"profile-{mode}"
        st.server.drop_bucket(bucket)
        st.s3.create_bucket(Bucket=bucket)
        job = st.copy_bench([wr], "profile").job(mode, wr, 0, 1)
        job = dataclasses.replace(job, dst_bucket=bucket, work=work / mode)
        scenarios: tuple[tuple[Scenario, list[Cmd]], ...] = (
            ("fresh", wr.fresh(job)),
            ("noop", wr.rerun(job)),
        )
        for scenario, cmds in scenarios:
            if mode == "latency" and scenario == "noop":
                continue
            t0 = time.perf_counter()
            prof = record(pyspy, cmds[0], work / f"{mode}-{scenario}.txt", gil=True)
            wall = time.perf_counter() - t0
            label = f"{SCENARIO_TITLES[scenario]}, S3 latency {mode_label(mode, s.latency_ms)}"
            log(f"  profiled {label}: {wall:.1f} s, {prof.samples} samples")
            out.append(profile_table(label, prof, wall))
            raw[label] = {"wall_s": wall, "samples": prof.samples, "by_layer": prof.by_layer}
        st.server.drop_bucket(bucket)
    return raw


def operator_section(s: Settings, out: list[str]) -> dict[str, object]:
    from bench import opscale  # imports the operator and the cluster harness: only when asked

    results = opscale.run(s.work / "operator", s.operator_customers, s.status_shards, log)
    out.append("## The operator at scale\n")
    out.append(opscale.operator_tables(results, s.operator_customers, s.status_shards))
    return results.to_json()


def throttle_section(s: Settings, out: list[str]) -> list[dict[str, object]]:
    from bench import goodput

    log("== goodput under throttling")
    rows = goodput.run(s, log)
    out.append("## Goodput under throttling (an S3 front limiting writes per bucket)\n")
    out.append(
        (goodput.__doc__ or "").split("\n\n", 1)[1].strip()
        + f"\n\nBuild: {s.files} files; each run sized for {s.throttle_seconds} s of copying at R. "
        f"Requests in flight: webrelease {s.in_flight} (worker.objectsInFlight), rclone --transfers "
        f"{s.in_flight}, s5cmd its default 256 workers; `webrelease-boto3` is the shard with the fast "
        "path off (every request through boto3, the same governor).\n"
    )
    out.append(goodput.tables(rows, s))
    return [r.to_json() for r in rows]


def cluster_section(s: Settings, out: list[str]) -> dict[str, object]:
    from bench import clusterpath

    result = clusterpath.run(s, log)
    out.append("## The cluster path end to end, and re-releases at scale\n")
    out.append((clusterpath.__doc__ or "").split("\n\n", 1)[1].strip() + "\n")
    out.append(
        f"Release: {result.customers:,} customers x {result.files} files "
        f"({s.cluster_customers_per_shard} customers per shard: {result.shards} shards, "
        f"parallelism {result.parallelism}).\n"
    )
    out.append(clusterpath.tables(result))
    return result.to_json()


def rerelease_section(s: Settings, out: list[str]) -> dict[str, object]:
    from bench import clusterpath

    result = clusterpath.run_rerelease(s, log)
    out.append("## Re-release at scale (the cluster section's re-release part alone)\n")
    out.append(
        f"`webrelease run` of {result.customers:,} customers x {result.files} files "
        f"(--workers {s.cluster_parallelism}): fresh, nothing changed, one file of the build changed. "
        "Requests from the S3 server's access log; the reports (and so the site records) in a bucket "
        "of their own. 1-minute load: " + ", ".join(f"{k} {v:.1f}" for k, v in result.loads.items()) + ".\n"
    )
    out.append(clusterpath.rerelease_table(result.customers, result.runs) + "\n")
    return result.to_json()


def main(argv: list[str] | None = None) -> int:
    s = parse(argv)
    started = time.monotonic()
    out: list[str] = []
    wr_version = webrelease_version()
    out.append(f"Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC  ")
    out.append(f"Machine: {machine()}  ")
    out.append(f"Versions: {versions_line(s, wr_version)}  ")
    out.append(f"Command: `python -m bench {' '.join(argv if argv is not None else sys.argv[1:])}`  ")
    load_at_start = os.getloadavg()
    raw: dict[str, object] = {"settings": json.loads(s.model_dump_json())}
    try:
        if {"copy", "alternatives", "profile"} & set(s.sections):
            with stage(s) as st:
                if "copy" in s.sections:
                    raw["copy"] = copy_section(st, out).to_json()
                if "alternatives" in s.sections:
                    raw["alternatives"] = alternatives_section(st, out).to_json()
                if "profile" in s.sections:
                    raw["profile"] = profile_section(st, out)
        if "throttle" in s.sections:
            raw["throttle"] = throttle_section(s, out)
        if "cluster" in s.sections:
            raw["cluster"] = cluster_section(s, out)
        if "rerelease" in s.sections:
            raw["rerelease"] = rerelease_section(s, out)
        if "operator" in s.sections:
            raw["operator"] = operator_section(s, out)
    finally:
        if s.work.exists() and s.work.name.startswith("webrelease-bench-"):
            shutil.rmtree(s.work, ignore_errors=True)
    load_at_end = os.getloadavg()
    out.insert(
        4,
        "Load average (1/5/15 min) at the start: "
        + "/".join(f"{x:.1f}" for x in load_at_start)
        + ", at the end: "
        + "/".join(f"{x:.1f}" for x in load_at_end)
        + f"; the bench took {time.monotonic() - started:.0f} s.\n",
    )
    text = "\n".join(out)
    print(text)
    if s.markdown_out:
        s.markdown_out.write_text(text + "\n", encoding="utf-8")
    if s.json_out:
        s.json_out.write_text(json.dumps(raw, indent=1), encoding="utf-8")
    log(f"bench done in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
