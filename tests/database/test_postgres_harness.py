"""The PostgreSQL test harness itself: installed quietly, loopback only, not root, gone after stop."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

from tests.harness.postgres import PostgresServer

pytestmark = pytest.mark.database

ROOT = Path(__file__).resolve().parents[2]


def test_the_install_script_is_quiet_once_installed() -> None:
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "install-postgres.sh")], capture_output=True, text=True, check=False
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")


def test_the_server_listens_on_loopback_only_and_not_as_root(postgres: PostgresServer) -> None:
    with postgres.connect() as conn:
        row = conn.execute("SELECT current_setting('listen_addresses'), pg_backend_pid()").fetchone()
    assert row is not None
    assert row[0] == "127.0.0.1"
    uid_line = next(
        line for line in Path(f"/proc/{row[1]}/status").read_text().splitlines() if line.startswith("Uid:")
    )
    assert int(uid_line.split()[1]) != 0 or os.geteuid() != 0


def test_a_stopped_server_leaves_nothing() -> None:
    server = PostgresServer().start()
    root, port = server.root, server.port
    assert (root / "data" / "PG_VERSION").is_file()
    server.stop()
    assert not root.exists()
    assert not server.running
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass
