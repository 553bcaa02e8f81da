"""Where a webrelease shard spends its time: py-spy samples of ``webrelease shard``, summarised.

py-spy (pinned, in its own venv: scripts/bench-install-pyspy.sh) samples every thread of the shard
process ``--rate`` times a second without pausing it (``--nonblocking``). Idle threads (waiting on a
socket or a lock) are left out, so the samples show where the process *computes*. With ``--gil``,
only the thread holding the GIL is sampled: in a process whose threads all need the GIL, that is the
one resource they queue for, and its profile is the profile of the bottleneck.

Each sample's stack is walked from the innermost frame outwards and charged to the first frame that
belongs to a known layer (TLS/socket I/O, http.client/urllib3, the parts of botocore, webrelease,
Jinja2, the thread pool, imports...): a regex compiled inside botocore counts as botocore's.
"""

from __future__ import annotations

import collections
import re
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.measure import Cmd
from bench.report import table

#: (layer, pattern on a frame's file) — the first match from the innermost frame outwards wins.
LAYERS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("imports (interpreter start-up)", re.compile(r"<frozen importlib|importlib/")),
    ("TLS / socket I/O", re.compile(r"(^|/)(ssl|socket|selectors)\.py")),
    ("botocore: signing (SigV4)", re.compile(r"botocore/(auth|signers|credentials)\.py")),
    ("botocore: response parsing", re.compile(r"botocore/(parsers|response)\.py|dateutil/|xml/")),
    ("botocore: request serialisation", re.compile(r"botocore/(serialize|validate|model)\.py")),
    (
        "botocore: event hooks, handlers, endpoint rules, retries",
        re.compile(r"botocore/|boto3/|s3transfer/"),
    ),
    ("urllib3 / http.client", re.compile(r"urllib3/|http/client\.py|email/")),
    ("webrelease: render (Jinja2)", re.compile(r"jinja2/|copier/render\.py")),
    ("webrelease: storage layer", re.compile(r"copier/storage/")),
    ("webrelease: plan / shard / other", re.compile(r"webrelease/|copier/")),
    ("thread pool / locks", re.compile(r"concurrent/futures|threading\.py|queue\.py")),
    ("pydantic / yaml / json", re.compile(r"pydantic|yaml/|json/")),
)
OTHER = "other (stdlib, interpreter)"

_FRAME_RE = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


@dataclass(frozen=True)
class Profile:
    samples: int
    by_layer: dict[str, int]
    #: innermost frames (function, file) by samples
    top_self: list[tuple[str, int]]
    #: webrelease functions by samples that include them anywhere in the stack
    top_webrelease: list[tuple[str, int]]
    rate: int

    def share(self, layer: str) -> float:
        return self.by_layer.get(layer, 0) / self.samples if self.samples else 0.0


def _frames(stack: str) -> list[tuple[str, str]]:
    """py-spy's raw (collapsed) stack, outermost first, as (function, file) pairs."""
    out: list[tuple[str, str]] = []
    for part in stack.split(";"):
        m = _FRAME_RE.match(part)
        if m:
            out.append((m.group("func"), m.group("file")))
        else:
            out.append((part, ""))
    return out


def layer_of(frames: Sequence[tuple[str, str]]) -> str:
    for _func, file in reversed(frames):
        for name, pattern in LAYERS:
            if pattern.search(file):
                return name
    return OTHER


def summarise(lines: Iterable[str], rate: int, top: int = 12) -> Profile:
    by_layer: collections.Counter[str] = collections.Counter()
    self_time: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in lines:
        stack, _, count_text = line.rstrip("\n").rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in _frames(stack) if not f[0].startswith(("process ", "thread "))]
        if not frames:
            continue
        total += count
        by_layer[layer_of(frames)] += count
        func, file = frames[-1]
        self_time[f"{func} ({file})"] += count
        for fn in {f"{fn} ({fl})" for fn, fl in frames if "webrelease/" in fl or "copier/" in fl}:
            inclusive[fn] += count
    return Profile(total, dict(by_layer), self_time.most_common(top), inclusive.most_common(top), rate)


def record(pyspy: Path, cmd: Cmd, out: Path, *, rate: int = 250, gil: bool = False) -> Profile:
    """Run ``cmd`` under py-spy; raw samples in ``out``."""
    argv = [
        str(pyspy),
        "record",
        "--format",
        "raw",
        "--nonblocking",
        "--rate",
        str(rate),
        "--output",
        str(out),
        *(["--gil"] if gil else []),
        "--",
        *cmd.argv,
    ]
    log = out.with_suffix(".log")
    with log.open("wb") as sink:
        rc = subprocess.run(
            argv, env=dict(cmd.env), stdout=sink, stderr=subprocess.STDOUT, check=False
        ).returncode
    if rc != 0:
        raise RuntimeError(f"py-spy run failed ({rc}): {log.read_text(errors='replace')[-2000:]}")
    with out.open(encoding="utf-8", errors="replace") as f:
        return summarise(f, rate)


def profile_table(title: str, p: Profile, wall_s: float) -> str:
    rows = [
        [layer, f"{n / p.rate:.2f}", f"{100 * n / p.samples:.0f} %"]
        for layer, n in sorted(p.by_layer.items(), key=lambda kv: -kv[1])
    ]
    head = (
        f"#### {title}\n\n{p.samples} samples at {p.rate} Hz = {p.samples / p.rate:.1f} s of busy "
        f"thread time in {wall_s:.1f} s of wall time.\n\n"
    )
    busiest = table(["layer (innermost known frame)", "busy s", "share"], rows, "lrr")
    leaves = table(
        ["innermost function", "share"],
        [[f"`{name}`", f"{100 * n / p.samples:.1f} %"] for name, n in p.top_self],
        "lr",
    )
    ours = table(
        ["webrelease function (anywhere in the stack)", "share"],
        [[f"`{name}`", f"{100 * n / p.samples:.1f} %"] for name, n in p.top_webrelease],
        "lr",
    )
    return head + busiest + "\n\n" + leaves + "\n\n" + ours + "\n"
