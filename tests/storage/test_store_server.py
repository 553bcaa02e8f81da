"""The S3 server harness itself: it starts, answers, and leaves nothing running behind it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.harness.s3server import REPO, S3Endpoint, S3Server

pytestmark = pytest.mark.storage


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead too: only its parent's wait() is missing.
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "\nState:\tZ" in status.read_text())


def test_context_manager_starts_and_cleans_up() -> None:
    with S3Server() as server:
        pid, root = server.pid, server.root
        assert pid is not None and _alive(pid)
        endpoint = server.endpoint
        assert endpoint.endpoint_url.startswith("http://127.0.0.1:")
        endpoint.make_bucket("harness-check")
        endpoint.client().put_object(Bucket="harness-check", Key="a/b.txt", Body=b"hello")
        assert (root / "data" / "harness-check" / "a" / "b.txt").read_bytes() == b"hello", "posix backend"
        body = endpoint.client().get_object(Bucket="harness-check", Key="a/b.txt")["Body"].read()
        assert body == b"hello"
    assert not _alive(pid)
    assert not root.exists()


def test_cli_prints_the_endpoint_and_stops_on_sigterm(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.harness.s3server",
            "--bucket",
            "cli-bucket",
            "--root",
            str(tmp_path / "s3"),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        endpoint = S3Endpoint(info["endpoint_url"], info["access_key"], info["secret_key"], info["region"])
        names = [b["Name"] for b in endpoint.client().list_buckets()["Buckets"]]
        assert names == ["cli-bucket"]
        server_pid = int(info["pid"])
        assert _alive(server_pid)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert not _alive(server_pid), "the server process went with the CLI"
        assert (tmp_path / "s3" / "data" / "cli-bucket").is_dir(), "a given --root is kept"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_server_dies_with_a_killed_parent(tmp_path: Path) -> None:
    """Even a SIGKILLed test run leaves no stray server (Linux parent-death signal)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.harness.s3server", "--root", str(tmp_path / "s3")],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    server_pid = int(json.loads(proc.stdout.readline())["pid"])
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 15
    while _alive(server_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(server_pid)
