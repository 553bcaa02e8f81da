"""`make cluster` (scripts/cluster.sh) from a clone: one command brings up the control plane, the S3
server and webrelease installed by helm, applies the example release, and the release completes with
every customer's site rendered. ``--check`` runs it to the end and stops everything."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.cluster
@pytest.mark.skipif(bool(os.environ.get("WEBRELEASE_TEST_KUBECONFIG")), reason="starts its own cluster")
def test_make_cluster_brings_up_everything_and_the_example_release_completes(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBECONFIG", "AWS_"))}
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "cluster.sh"), "--check", "--dir", str(tmp_path / "cluster")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    said = done.stdout + done.stderr
    assert done.returncode == 0, said[-6000:]
    assert "complete: True, 5/5 customers, site rendered: True" in done.stdout, said[-6000:]
    assert "as ServiceAccount webrelease-system/webrelease" in done.stdout
    # everything it started has stopped: no process still serves from its work directory
    left = subprocess.run(
        ["pgrep", "-f", str(tmp_path / "cluster")], capture_output=True, text=True, check=False
    )
    assert left.stdout.strip() == "", left.stdout
