"""Run a tool's commands as child processes and measure them all the same way.

Wall-clock seconds from the first start to the last exit; client CPU seconds from
``getrusage(RUSAGE_CHILDREN)`` (user + system of every child and grandchild the tools waited for);
requests from the server's access log. Every tool runs as a child process, webrelease included.
"""

from __future__ import annotations

import resource
import statistics
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.s3 import AccessLog, RequestCount


@dataclass(frozen=True)
class Cmd:
    argv: Sequence[str]
    env: Mapping[str, str]
    cwd: Path | None = None
    #: Start it and go on with the next command at once (the run waits for it before the next
    #: command that is not concurrent, and at the end): several shard processes at the same time.
    concurrent: bool = False


class ToolFailed(RuntimeError):
    pass


@dataclass(frozen=True)
class Sample:
    wall_s: float
    cpu_s: float
    requests: RequestCount
    #: Objects the run is responsible for (customers x files of the build).
    objects: int
    #: The bucket of the customers' sites (to tell writes to the sites from a tool's own reports).
    site_bucket: str | None = None

    @property
    def site_writes(self) -> int:
        return self.requests.writes(self.site_bucket)

    @property
    def objects_per_s(self) -> float:
        return self.objects / self.wall_s if self.wall_s > 0 else float("inf")

    @property
    def cpu_per_1k(self) -> float:
        return self.cpu_s / self.objects * 1000 if self.objects else 0.0


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def run_cmds(
    cmds: Sequence[Cmd], log: AccessLog, objects: int, out: Path, site_bucket: str | None = None
) -> Sample:
    """Run ``cmds`` one after the other (a tool that works per customer runs once per customer),
    those marked ``concurrent`` alongside the next ones; stdout/stderr go to ``out``. Raises
    ToolFailed with the tail of the output if any exits non-zero."""
    log.mark()
    cpu0 = _children_cpu()
    t0 = time.perf_counter()
    failures: list[str] = []
    with out.open("ab") as sink:
        running: list[tuple[Cmd, subprocess.Popen[bytes]]] = []

        def wait_all() -> None:
            for c, p in running:
                if p.wait() != 0:
                    failures.append(f"{c.argv[0]} exited with {p.returncode}")
            running.clear()

        for cmd in cmds:
            sink.write(("$ " + " ".join(cmd.argv) + "\n").encode())
            sink.flush()
            proc = subprocess.Popen(
                list(cmd.argv), env=dict(cmd.env), cwd=cmd.cwd, stdout=sink, stderr=subprocess.STDOUT
            )
            running.append((cmd, proc))
            if not cmd.concurrent:
                wait_all()
                if failures:
                    break
        wait_all()
    wall = time.perf_counter() - t0
    if failures:
        tail = out.read_text(encoding="utf-8", errors="replace").splitlines()[-25:]
        raise ToolFailed("; ".join(failures) + "; last output:\n" + "\n".join(tail))
    cpu1 = _children_cpu()
    requests = log.since_mark()
    return Sample(wall_s=wall, cpu_s=cpu1 - cpu0, requests=requests, objects=objects, site_bucket=site_bucket)


@dataclass
class Series:
    """Repeated samples of one measurement; the table shows medians."""

    samples: list[Sample] = field(default_factory=list)

    def median(self, attr: str) -> float:
        return statistics.median(float(getattr(s, attr)) for s in self.samples)

    @property
    def wall_s(self) -> float:
        return self.median("wall_s")

    @property
    def objects_per_s(self) -> float:
        return self.median("objects_per_s")

    @property
    def cpu_per_1k(self) -> float:
        return self.median("cpu_per_1k")

    @property
    def requests(self) -> float:
        return statistics.median(s.requests.total for s in self.samples)

    @property
    def site_writes(self) -> float:
        return statistics.median(s.site_writes for s in self.samples)

    def ops(self) -> dict[str, float]:
        """Median count per operation (over every operation seen in any sample)."""
        names = sorted({op for s in self.samples for op in s.requests.by_op})
        return {op: statistics.median(s.requests.by_op.get(op, 0) for s in self.samples) for op in names}
