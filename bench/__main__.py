"""``python -m bench``: run the comparisons and print the tables (see bench/README.md)."""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from bench import tools
from bench.config import Settings, parse
from bench.copybench import MODES, CopyBench, CopyResults, upload_build
from bench.latency import LatencyProxy
from bench.peers import AwsCli, Rclone, S5cmd, Tool
from bench.report import copy_tables, ops_table
from bench.s3 import BenchServer, client, credentials_env
from bench.workload import make_build, make_customers
from bench.wrtool import Webrelease, webrelease_version, write_snapshot


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


def copy_section(s: Settings, out: list[str]) -> CopyResults:
    build = make_build(s.files)
    customers = make_customers(s.customers)
    wr_version = webrelease_version()
    s.work.mkdir(parents=True, exist_ok=True)
    with BenchServer(s.work / "s3") as server:
        ep = server.endpoint
        s3 = client(ep)
        log(f"S3 server {ep.endpoint_url}; uploading the build ({len(build.files)} files, v1 and v2)...")
        upload_build(s3, build)
        snapshot = write_snapshot(s3, customers)
        all_tools: dict[str, Tool] = {
            "webrelease": Webrelease(
                tools.webrelease(), wr_version, snapshot, sorted(f.key for f in build.templates)
            ),
            "s5cmd": S5cmd(tools.s5cmd(s), s.versions.s5cmd),
            "rclone": Rclone(tools.rclone(s), s.versions.rclone),
            "aws": AwsCli(tools.aws(s), s.versions.awscli),
        }
        chosen = [all_tools[name] for name in s.tools]
        with LatencyProxy(tools.toxiproxy(s), server.port, s.latency_ms, s.work / "toxiproxy.log") as proxy:
            bench = CopyBench(
                s3=s3,
                log=server.log,
                build=build,
                customers=customers,
                tools=chosen,
                endpoints={"direct": ep.endpoint_url, "latency": proxy.endpoint},
                env=credentials_env(ep),
                work=s.work / "runs",
                runs=s.runs,
                in_flight=s.in_flight,
                drop_bucket=server.drop_bucket,
            )
            results = bench.run(MODES)

    objects = len(customers) * len(build.files)
    out.append("## Copy comparisons\n")
    out.append(
        f"Build: {len(build.files)} files, {build.total_bytes / 1e6:.1f} MB "
        f"({len(build.templates)} templated: webrelease renders them per customer, "
        "the peers copy them as they are); "
        f"{len(customers)} customers → {objects:,} objects per run. "
        f"Median of {s.runs} run(s). Latency: toxiproxy adds {s.latency_ms} ms to every response. "
        f"Requests are counted by the S3 server (its access log), the same way for every tool; "
        f"'writes to sites' are CopyObject/PutObject requests into the customers' sites. "
        f"Objects/s = {objects:,} objects the run is responsible for ÷ wall seconds. "
        f"Requests in flight: webrelease {s.in_flight}, rclone --transfers/--checkers {s.in_flight}, "
        f"aws max_concurrent_requests {s.in_flight}, s5cmd its default 256 workers.\n"
    )
    out.append(copy_tables(results, list(s.tools), s.latency_ms))
    out.append("### Requests by operation\n")
    out.append(ops_table(results, list(s.tools), s.latency_ms))
    out.append("")
    return results


def main(argv: list[str] | None = None) -> int:
    s = parse(argv)
    started = time.monotonic()
    out: list[str] = []
    wr_version = webrelease_version()
    out.append(f"Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC  ")
    out.append(f"Machine: {machine()}  ")
    out.append(f"Versions: {versions_line(s, wr_version)}  ")
    out.append(f"Command: `python -m bench {' '.join(argv if argv is not None else sys.argv[1:])}`\n")
    raw: dict[str, object] = {"settings": json.loads(s.model_dump_json())}
    try:
        if "copy" in s.sections:
            raw["copy"] = copy_section(s, out).to_json()
    finally:
        if s.work.exists() and s.work.name.startswith("webrelease-bench-"):
            shutil.rmtree(s.work, ignore_errors=True)
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
