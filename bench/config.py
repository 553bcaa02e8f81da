"""The bench's settings, parsed once from the command line and the environment."""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"

Section = Literal["copy", "alternatives", "profile", "operator", "throttle", "cluster", "rerelease"]
SECTIONS: tuple[Section, ...] = ("copy", "alternatives", "profile", "operator", "throttle", "cluster")
#: ``rerelease`` is the cluster section's last part on its own (``--only rerelease``): not in the
#: default run, which already measures it inside ``cluster``.
CHOICES: tuple[Section, ...] = (*SECTIONS, "rerelease")
ToolName = Literal["webrelease", "s5cmd", "rclone", "aws"]
TOOLS: tuple[ToolName, ...] = ("webrelease", "s5cmd", "rclone", "aws")


class Versions(BaseModel):
    """The pinned versions of every peer: the defaults of the install scripts, or the same
    environment overrides those scripts honour (so that the bench finds what they built)."""

    model_config = ConfigDict(frozen=True)
    versitygw: str
    s5cmd: str
    rclone: str
    toxiproxy: str
    awscli: str
    pyspy: str


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True)

    cache: Path
    work: Path
    versions: Versions
    quick: bool = False
    #: Repetitions of every measurement; the table shows the median.
    runs: Annotated[int, Field(ge=1, le=20)] = 3
    #: Customers per copy comparison (each gets the whole build).
    customers: Annotated[int, Field(ge=1, le=10_000)] = 30
    #: Files in the build.
    files: Annotated[int, Field(ge=20, le=5_000)] = 300
    #: Latency the proxy adds to every response (ms).
    latency_ms: Annotated[int, Field(ge=0, le=1_000)] = 20
    #: Requests in flight for every tool that has such a knob (webrelease, rclone, aws).
    in_flight: Annotated[int, Field(ge=1, le=1024)] = 64
    sections: tuple[Section, ...] = SECTIONS
    #: Write limits (per bucket, writes/s) of the throttled comparison, and the seconds of
    #: copying at that limit each run is sized for. S3's 200 and 1,000 scaled to this machine:
    #: an unthrottled shard through the front does 300-570 copies/s on two shared cores, so a
    #: limit above that would measure the machine, not the back-off.
    throttle_rates: tuple[int, ...] = (200, 500)
    throttle_seconds: Annotated[int, Field(ge=2, le=600)] = 25
    #: The cluster-path comparison: customers x files, customers per shard, shards at a time.
    cluster_customers: Annotated[int, Field(ge=1)] = 1000
    cluster_files: Annotated[int, Field(ge=20, le=5_000)] = 100
    cluster_customers_per_shard: Annotated[int, Field(ge=1)] = 50
    cluster_parallelism: Annotated[int, Field(ge=1, le=64)] = 4
    #: Run the local fresh release before the cluster one (default: after it).
    cluster_local_first: bool = False
    tools: tuple[ToolName, ...] = TOOLS
    #: Customers of the operator scale benchmark, and shards of its status-size measurement.
    operator_customers: Annotated[int, Field(ge=1)] = 100_000
    status_shards: Annotated[int, Field(ge=1)] = 2_000
    #: Where the Markdown tables go (besides stdout), and the raw results as JSON.
    markdown_out: Path | None = None
    json_out: Path | None = None


_VERSION_RE = r"\$\{{{var}:-([^}}]+)\}}"


def _script_default(script: str, var: str) -> str:
    text = (SCRIPTS / script).read_text(encoding="utf-8")
    m = re.search(_VERSION_RE.format(var=var), text)
    if not m:
        raise RuntimeError(f"{script} has no default for {var}")
    return m.group(1).strip('"')


def read_versions(environ: Mapping[str, str]) -> Versions:
    def pick(script: str, var: str) -> str:
        return environ.get(var) or _script_default(script, var)

    return Versions(
        versitygw=pick("install-versitygw.sh", "VERSITYGW_VERSION"),
        s5cmd=pick("bench-install-s5cmd.sh", "S5CMD_VERSION"),
        rclone=pick("bench-install-rclone.sh", "RCLONE_VERSION"),
        toxiproxy=pick("bench-install-toxiproxy.sh", "TOXIPROXY_VERSION"),
        awscli=pick("bench-install-awscli.sh", "AWSCLI_VERSION"),
        pyspy=pick("bench-install-pyspy.sh", "PYSPY_VERSION"),
    )


def parse(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if environ is None else environ
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="smoke run: few customers, one run each")
    p.add_argument("--runs", type=int, help="repetitions per measurement (median shown); default 3")
    p.add_argument("--customers", type=int, help="customers per copy comparison; default 30")
    p.add_argument("--files", type=int, help="files in the build; default 300")
    p.add_argument("--latency-ms", type=int, help="latency added by the proxy per response; default 20")
    p.add_argument("--in-flight", type=int, help="requests in flight for tools with that knob; default 64")
    p.add_argument("--only", action="append", choices=CHOICES, help="run only these sections")
    p.add_argument("--tools", help="comma-separated subset of " + ",".join(TOOLS))
    p.add_argument(
        "--throttle-rates", help="comma-separated write limits (writes/s) for the throttle section"
    )
    p.add_argument("--throttle-seconds", type=int, help="seconds of copying at the limit per run; default 25")
    p.add_argument("--cluster-customers", type=int, help="customers of the cluster-path run; default 1000")
    p.add_argument("--cluster-files", type=int, help="files of the cluster-path build; default 100")
    p.add_argument("--cluster-local-first", action="store_true", help="local run before the cluster run")
    p.add_argument("--operator-customers", type=int)
    p.add_argument("--status-shards", type=int)
    p.add_argument("--work", type=Path, help="scratch directory (default: a fresh one under /tmp)")
    p.add_argument("--markdown", type=Path, help="also write the tables to this file")
    p.add_argument("--json", type=Path, help="also write the raw results to this file")
    a = p.parse_args(argv)

    cache = Path(env.get("WEBRELEASE_CACHE") or Path.home() / ".cache" / "webrelease")
    values: dict[str, object] = {
        "cache": cache,
        "work": a.work or Path("/tmp") / f"webrelease-bench-{os.getpid()}",
        "versions": read_versions(env),
        "quick": a.quick,
        "cluster_local_first": a.cluster_local_first,
        "markdown_out": a.markdown,
        "json_out": a.json,
    }
    if a.quick:
        values.update(
            runs=1,
            customers=4,
            files=60,
            operator_customers=10_000,
            status_shards=2_000,
            throttle_seconds=4,
            cluster_customers=40,
            cluster_files=20,
            cluster_customers_per_shard=10,
        )
    overridable = (
        "runs",
        "customers",
        "files",
        "latency_ms",
        "in_flight",
        "operator_customers",
        "status_shards",
        "throttle_seconds",
        "cluster_customers",
        "cluster_files",
    )
    for name in overridable:
        if getattr(a, name) is not None:
            values[name] = getattr(a, name)
    if a.throttle_rates:
        values["throttle_rates"] = tuple(int(x) for x in a.throttle_rates.split(",") if x.strip())
    if a.only:
        values["sections"] = tuple(dict.fromkeys(a.only))
    if a.tools:
        names = tuple(t.strip() for t in a.tools.split(",") if t.strip())
        unknown = [t for t in names if t not in TOOLS]
        if unknown:
            p.error(f"unknown tools: {', '.join(unknown)} (choose from {', '.join(TOOLS)})")
        values["tools"] = names
    return Settings.model_validate(values)
