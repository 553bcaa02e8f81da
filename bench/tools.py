"""Where every peer's binary is (built by the scripts/bench-install-*.sh, cached by version)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench.config import SCRIPTS, Settings


class MissingTool(RuntimeError):
    pass


def ensure(binary: Path, script: str) -> Path:
    """``binary``, running its install script first when it is not there yet."""
    if not binary.exists():
        print(f"installing {binary.name} ({script})...", file=sys.stderr, flush=True)
        proc = subprocess.run(["bash", str(SCRIPTS / script)], check=False)
        if proc.returncode != 0 or not binary.exists():
            raise MissingTool(f"{binary} is missing and scripts/{script} did not build it")
    return binary


def s5cmd(s: Settings) -> Path:
    return ensure(s.cache / f"s5cmd-{s.versions.s5cmd}" / "bin" / "s5cmd", "bench-install-s5cmd.sh")


def rclone(s: Settings) -> Path:
    return ensure(s.cache / f"rclone-{s.versions.rclone}" / "bin" / "rclone", "bench-install-rclone.sh")


def toxiproxy(s: Settings) -> Path:
    return ensure(
        s.cache / f"toxiproxy-{s.versions.toxiproxy}" / "bin" / "toxiproxy-server",
        "bench-install-toxiproxy.sh",
    )


def aws(s: Settings) -> Path:
    ensure(s.cache / f"awscli-{s.versions.awscli}" / ".installed", "bench-install-awscli.sh")
    return s.cache / f"awscli-{s.versions.awscli}" / "venv" / "bin" / "aws"


def pyspy(s: Settings) -> Path:
    ensure(s.cache / f"py-spy-{s.versions.pyspy}" / ".installed", "bench-install-pyspy.sh")
    return s.cache / f"py-spy-{s.versions.pyspy}" / "venv" / "bin" / "py-spy"


def webrelease() -> Path:
    """The ``webrelease`` console script of the venv the bench runs in."""
    exe = Path(sys.executable).parent / "webrelease"
    if not exe.exists():
        raise MissingTool(f"{exe} is missing: install the project (pip install -e .)")
    return exe
