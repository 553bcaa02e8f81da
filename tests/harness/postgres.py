"""A real, throw-away PostgreSQL server for the database tier.

``PostgresServer`` runs ``initdb`` in a fresh temporary directory and starts ``postgres`` on
127.0.0.1 and a free port (Unix socket inside that directory, never the system's). PostgreSQL
refuses to run as root, so under root the server runs as the ``postgres`` system user that the
Debian package creates (or a ``webrelease-pg`` system user created on demand). Readiness is polled
with a deadline; on any failure the server's log is part of the error; ``stop()`` shuts it down and
removes the directory. The server dies with the process that started it (parent-death signal), so
an interrupted test run leaves nothing listening.

Binaries come from ``/usr/lib/postgresql/<version>/bin`` (``scripts/install-postgres.sh``).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

PG_LIB = Path("/usr/lib/postgresql")
SUPERUSER = "webrelease"
DATABASE = "webrelease"
_FALLBACK_SYSTEM_USER = "webrelease-pg"
_PR_SET_PDEATHSIG = 1


class PostgresHarnessError(RuntimeError):
    """The test server could not be installed, started or stopped (the message carries its log)."""


def find_bin_dir() -> Path:
    """The newest ``/usr/lib/postgresql/<version>/bin`` holding both ``initdb`` and ``postgres``."""
    candidates = []
    for bin_dir in PG_LIB.glob("*/bin"):
        if (bin_dir / "initdb").is_file() and (bin_dir / "postgres").is_file():
            with contextlib.suppress(ValueError):
                candidates.append((int(bin_dir.parent.name.split(".")[0]), bin_dir))
    if not candidates:
        raise PostgresHarnessError(
            f"PostgreSQL is not installed (no initdb/postgres under {PG_LIB}/*/bin): "
            "run `make tools` or `bash scripts/install-postgres.sh`"
        )
    return max(candidates)[1]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _system_user() -> pwd.struct_passwd | None:
    """The unprivileged user to run the server as, or None when we are not root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", _FALLBACK_SYSTEM_USER):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", _FALLBACK_SYSTEM_USER],
        check=True,
        capture_output=True,
    )
    return pwd.getpwnam(_FALLBACK_SYSTEM_USER)


def _child_setup(user: pwd.struct_passwd | None) -> Callable[[], None]:
    """Runs in the child before exec: drop to ``user``, then die with our process."""

    def setup() -> None:
        if user is not None:
            os.setgroups([])
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)
        # after setuid: a credential change clears the parent-death signal
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)

    return setup


@dataclass
class PostgresServer:
    """One running server; ``url`` is a SQLAlchemy URL (psycopg driver) with the superuser's password."""

    bin_dir: Path = field(default_factory=find_bin_dir)
    startup_timeout: float = 60.0
    root: Path = field(init=False)
    port: int = field(init=False, default=0)
    password: str = field(init=False, default_factory=lambda: secrets.token_urlsafe(18))
    _proc: subprocess.Popen[bytes] | None = field(init=False, default=None)
    _user: pwd.struct_passwd | None = field(init=False, default=None)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        return self.root / "postgres.log"

    def url(self, database: str = DATABASE) -> str:
        return f"postgresql+psycopg://{SUPERUSER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def connect(self, database: str = DATABASE) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user=SUPERUSER,
            password=self.password,
            dbname=database,
            connect_timeout=5,
            autocommit=True,
        )

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> PostgresServer:
        self._user = _system_user()
        # not under pytest's 0700 basetemp: the server's user must be able to reach its directory
        self.root = Path(tempfile.mkdtemp(prefix="webrelease-pg-"))
        try:
            self._own(self.root)
            self._initdb()
            last_error = ""
            for _attempt in range(3):  # a free port can be taken between our probe and the bind
                self.port = free_port()
                try:
                    self._start_server()
                    break
                except PostgresHarnessError as exc:
                    last_error = str(exc)
                    if "could not bind" not in self.log() and "in use" not in self.log():
                        raise
            else:
                raise PostgresHarnessError(last_error)
            with self.connect("postgres") as conn:
                conn.execute(f"CREATE DATABASE {DATABASE}")
        except BaseException:
            self.stop()
            raise
        return self

    def _own(self, path: Path) -> None:
        if self._user is not None:
            os.chown(path, self._user.pw_uid, self._user.pw_gid)
        path.chmod(0o700)

    def _run(self, args: list[str], what: str) -> None:
        proc = subprocess.run(
            args,
            capture_output=True,
            text=True,
            cwd=self.root,
            preexec_fn=_child_setup(self._user),  # single-threaded test setup
            timeout=self.startup_timeout,
            check=False,
        )
        if proc.returncode != 0:
            raise PostgresHarnessError(
                f"{what} failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
            )

    def _initdb(self) -> None:
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        self._own(pwfile)
        pwfile.chmod(0o600)
        self._run(
            [
                str(self.bin_dir / "initdb"),
                "--pgdata",
                str(self.data_dir),
                "--username",
                SUPERUSER,
                "--pwfile",
                str(pwfile),
                "--auth-host=scram-sha-256",
                "--auth-local=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
            "initdb",
        )
        pwfile.unlink()

    def _start_server(self) -> None:
        log = self.log_path.open("ab")
        try:
            self._proc = subprocess.Popen(
                [
                    str(self.bin_dir / "postgres"),
                    "-D",
                    str(self.data_dir),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    f"port={self.port}",
                    "-c",
                    f"unix_socket_directories={self.root}",
                    "-c",
                    "fsync=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "full_page_writes=off",
                    "-c",
                    "max_connections=50",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                preexec_fn=_child_setup(self._user),  # single-threaded test setup
            )
        finally:
            log.close()
        self._wait_ready()

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout
        delay = 0.02
        last = ""
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise PostgresHarnessError(
                    f"postgres exited with {self._proc.returncode} during startup; log:\n{self.log()}"
                )
            try:
                with self.connect("postgres") as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError as exc:
                last = str(exc)
            time.sleep(delay)
            delay = min(delay * 2, 0.5)
        raise PostgresHarnessError(
            f"postgres not ready on 127.0.0.1:{self.port} after {self.startup_timeout:.0f}s ({last});"
            f" log:\n{self.log()}"
        )

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # "fast" shutdown: abort sessions, checkpoint, exit
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if getattr(self, "root", None) is not None:
            shutil.rmtree(self.root, ignore_errors=True)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def new_database(self) -> str:
        """A fresh, empty database; returns its SQLAlchemy URL."""
        name = f"t_{secrets.token_hex(6)}"
        with self.connect("postgres") as conn:
            conn.execute(f"CREATE DATABASE {name}")  # a generated identifier
        return self.url(name)


@contextlib.contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    server = PostgresServer().start()
    try:
        yield server
    except BaseException:
        print(f"--- postgres log ({server.log_path}) ---\n{server.log()}")
        raise
    finally:
        server.stop()
