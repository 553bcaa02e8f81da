"""The copy comparisons: every tool, the same objects, the same server, directly and with latency.

For each mode (``direct``; ``latency`` through the proxy) and each of ``runs`` trials, every tool
gets a fresh, empty destination bucket and runs three scenarios one after the other:

1. **fresh** — release build ``v1`` to every customer's empty site;
2. **noop** — the same release again, nothing changed;
3. **changed** — release ``v2`` (one file differs) to the same sites.

Tools run in a rotating order from trial to trial so that no tool always goes first. After each
scenario the destination is checked (every key at every customer, sizes, the changed file, rendered
templates for webrelease): a benchmark of a copy that is not complete would be worthless.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from bench.measure import Cmd, Sample, Series, run_cmds
from bench.peers import Job, Tool
from bench.s3 import AccessLog, list_keys
from bench.workload import Build

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

Scenario = Literal["fresh", "noop", "changed"]
SCENARIOS: tuple[Scenario, ...] = ("fresh", "noop", "changed")
Mode = Literal["direct", "latency"]
MODES: tuple[Mode, ...] = ("direct", "latency")

SOURCE_BUCKET = "build"


class CheckFailed(RuntimeError):
    """A tool's destination is not what the release should have produced."""


@dataclass
class CopyResults:
    """Series per (mode, scenario, tool name)."""

    series: dict[tuple[Mode, Scenario, str], Series] = field(default_factory=dict)

    def add(self, mode: Mode, scenario: Scenario, tool: str, sample: Sample) -> None:
        self.series.setdefault((mode, scenario, tool), Series()).samples.append(sample)

    def to_json(self) -> list[dict[str, object]]:
        rows: list[dict[str, object]] = []
        for (mode, scenario, tool), series in self.series.items():
            for s in series.samples:
                rows.append(
                    {
                        "mode": mode,
                        "scenario": scenario,
                        "tool": tool,
                        "wall_s": s.wall_s,
                        "cpu_s": s.cpu_s,
                        "objects": s.objects,
                        "site_writes": s.site_writes,
                        "requests": {f"{b}/{op}": n for (b, op), n in s.requests.by_bucket_op.items()},
                    }
                )
        return rows


def upload_build(s3: S3Client, build: Build) -> None:
    """``s3://build/v1/`` and ``s3://build/v2/`` (v2: one file changed)."""
    s3.create_bucket(Bucket=SOURCE_BUCKET)
    items = [(f"v{v}/{key}", body) for v in (1, 2) for key, body in build.version(v).items()]
    with ThreadPoolExecutor(16) as ex:
        list(ex.map(lambda kv: s3.put_object(Bucket=SOURCE_BUCKET, Key=kv[0], Body=kv[1]), items))


def check_sites(
    s3: S3Client, job: Job, build: Build, version: int, *, renders: bool, customer_names: Mapping[str, str]
) -> None:
    """Every customer's site holds every key of the build; non-templated files have the build's
    size (v1 or v2); templates are rendered (webrelease) or copied as they are (peers)."""
    want = {f.key: len(f.body(version if f.key == build.changed_key else 1)) for f in build.files}
    templated = {f.key for f in build.templates}
    got: dict[str, dict[str, int]] = {c: {} for c in job.customers}
    for key, size, _etag in list_keys(s3, job.dst_bucket):
        cust, _, rel = key.partition("/")
        if cust in got:
            got[cust][rel] = size
    for cust in job.customers:
        site = got[cust]
        missing = sorted(set(want) - set(site))
        if missing:
            raise CheckFailed(f"s3://{job.dst_bucket}/{cust}/ lacks {len(missing)} keys, e.g. {missing[:3]}")
        for key, size in want.items():
            if key in templated and renders:
                continue
            if site[key] != size:
                raise CheckFailed(f"s3://{job.dst_bucket}/{cust}/{key}: {site[key]} bytes, expected {size}")
    if renders and templated:
        cust = job.customers[0]
        key = sorted(templated)[0]
        body = s3.get_object(Bucket=job.dst_bucket, Key=f"{cust}/{key}")["Body"].read()
        if b"{{" in body or (customer_names[cust].encode() not in body and cust.encode() not in body):
            raise CheckFailed(f"s3://{job.dst_bucket}/{cust}/{key} is not rendered for {cust}: {body[:80]!r}")


@dataclass
class CopyBench:
    s3: S3Client
    log: AccessLog
    build: Build
    customers: Sequence[Mapping[str, object]]
    tools: Sequence[Tool]
    endpoints: Mapping[Mode, str]
    env: Mapping[str, str]
    work: Path
    runs: int
    in_flight: int
    drop_bucket: Callable[[str], None]
    #: the scenarios to run (``fresh`` always runs: the others start from its result)
    scenarios: Sequence[Scenario] = SCENARIOS
    results: CopyResults = field(default_factory=CopyResults)
    progress: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr, flush=True)

    def job(self, mode: Mode, tool: Tool, trial: int, version: int) -> Job:
        return Job(
            endpoint=self.endpoints[mode],
            src_bucket=SOURCE_BUCKET,
            src_prefix=f"v{version}/",
            dst_bucket=f"sites-{tool.name}-{mode}-{trial}",
            customers=[str(c["id"]) for c in self.customers],
            keys=[f.key for f in self.build.files],
            work=self.work / tool.name / f"{mode}-{trial}",
            in_flight=self.in_flight,
            env=self.env,
        )

    def _measure(self, mode: Mode, scenario: Scenario, tool: Tool, job: Job, cmds: list[Cmd]) -> Sample:
        job.work.mkdir(parents=True, exist_ok=True)
        sample = run_cmds(cmds, self.log, job.objects, job.work / f"{scenario}.out", job.dst_bucket)
        self.results.add(mode, scenario, tool.name, sample)
        self.progress(
            f"  {mode:7s} {scenario:7s} {tool.name:10s} {sample.wall_s:7.2f} s"
            f"  {sample.objects_per_s:8.0f} obj/s  {sample.requests.total:6d} req"
            f"  {sample.site_writes:6d} writes  cpu {sample.cpu_s:6.2f} s"
        )
        return sample

    def trial(self, mode: Mode, tool: Tool, trial: int) -> None:
        renders = tool.name.startswith("webrelease")  # webrelease and its variants render templates
        names = {str(c["id"]): str(c.get("name", c["id"])) for c in self.customers}
        v1, v2 = self.job(mode, tool, trial, 1), self.job(mode, tool, trial, 2)
        self.drop_bucket(v1.dst_bucket)
        self.s3.create_bucket(Bucket=v1.dst_bucket)
        try:
            self._measure(mode, "fresh", tool, v1, tool.fresh(v1))
            check_sites(self.s3, v1, self.build, 1, renders=renders, customer_names=names)
            if "noop" in self.scenarios:
                self._measure(mode, "noop", tool, v1, tool.rerun(v1))
                check_sites(self.s3, v1, self.build, 1, renders=renders, customer_names=names)
            if "changed" in self.scenarios:
                self._measure(mode, "changed", tool, v2, tool.rerun(v2))
                check_sites(self.s3, v2, self.build, 2, renders=renders, customer_names=names)
        finally:
            self.drop_bucket(v1.dst_bucket)

    def run(self, modes: Sequence[Mode] = MODES) -> CopyResults:
        for mode in modes:
            for trial in range(self.runs):
                shift = trial % len(self.tools)
                order = [*self.tools[shift:], *self.tools[:shift]]
                self.progress(f"{mode}: trial {trial + 1}/{self.runs}")
                for tool in order:
                    self.trial(mode, tool, trial)
        return self.results


def dump(results: CopyResults, path: Path) -> None:
    path.write_text(json.dumps(results.to_json(), indent=1), encoding="utf-8")
