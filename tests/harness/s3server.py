"""A real S3 server for tests, demos and benchmarks: versitygw with its POSIX backend.

Started on 127.0.0.1 on a free port with a temporary root folder; ready when it answers an
authenticated ListBuckets (polled with a deadline); stopped (and its folder removed) on exit.
Its log is kept in a file and included in every error raised about it.

Three ways to use it:

- pytest: the ``s3_server`` / ``s3_bucket`` fixtures in ``tests/harness/s3_fixtures.py``;
- Python: ``with S3Server() as server: server.endpoint.client().list_buckets()``;
- shell: ``python -m tests.harness.s3server [--env]`` prints the endpoint (JSON, or ``export``
  lines with ``--env``) and serves until interrupted.

The binary is built by ``scripts/install-versitygw.sh`` (run here when it is missing).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import http.client
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from webrelease.copier.spec import Storage
from webrelease.copier.storage import Credentials

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import ObjectIdentifierTypeDef

REPO = Path(__file__).resolve().parents[2]
VERSITYGW_VERSION = "v1.8.0"
INSTALL_SCRIPT = REPO / "scripts" / "install-versitygw.sh"
START_DEADLINE_S = 60.0
STOP_GRACE_S = 10.0


class S3ServerError(RuntimeError):
    """The server could not be built, started or reached; the message includes its log."""


def cache_dir() -> Path:
    return Path(os.environ.get("WEBRELEASE_CACHE") or Path.home() / ".cache" / "webrelease")


def versitygw_binary(*, install: bool = True) -> Path:
    """The pinned versitygw binary, built (once, cached) if missing."""
    binary = cache_dir() / f"versitygw-{VERSITYGW_VERSION}" / "bin" / "versitygw"
    if not binary.exists() and install:
        proc = subprocess.run(
            ["bash", str(INSTALL_SCRIPT)],
            env={**os.environ, "VERSITYGW_VERSION": VERSITYGW_VERSION},
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0 or not binary.exists():
            raise S3ServerError(f"building versitygw failed ({INSTALL_SCRIPT}):\n{proc.stdout}{proc.stderr}")
    return binary


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(frozen=True)
class S3Endpoint:
    """How to reach an S3 server: a running versitygw, or an external endpoint."""

    endpoint_url: str
    access_key: str = field(repr=False)
    secret_key: str = field(repr=False)
    region: str = "us-east-1"

    @property
    def credentials(self) -> Credentials:
        return Credentials(self.access_key, self.secret_key)

    def storage_settings(self) -> Storage:
        """The release spec's ``storage`` block that reaches this endpoint."""
        return Storage(endpoint_url=self.endpoint_url, region=self.region, addressing_style="path")

    def env(self) -> dict[str, str]:
        """Environment variables for a subprocess (the CLI, a shard, the AWS CLI, s5cmd)."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ENDPOINT_URL_S3": self.endpoint_url,
        }

    def client(self, **config: Any) -> S3Client:
        """A fresh boto3 S3 client for test setup and checks (not the store's client)."""
        settings: dict[str, Any] = {
            "s3": {"addressing_style": "path"},
            "retries": {"mode": "standard", "max_attempts": 5},
        }
        cfg = Config(**{**settings, **config})
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=cfg,
        )

    def make_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def remove_bucket(self, name: str) -> None:
        """Delete every object of ``name`` and the bucket; a missing bucket is fine."""
        client = self.client()
        try:
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
                keys: list[ObjectIdentifierTypeDef] = [
                    {"Key": o["Key"]} for o in page.get("Contents", []) if "Key" in o
                ]
                if keys:
                    client.delete_objects(Bucket=name, Delete={"Objects": keys, "Quiet": True})
            for upload in client.list_multipart_uploads(Bucket=name).get("Uploads", []):
                client.abort_multipart_upload(Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"])
            client.delete_bucket(Bucket=name)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "NoSuchBucket":
                raise


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the server gets SIGTERM if the process that started it dies, even by SIGKILL."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class S3Server:
    """One versitygw process. Use as a context manager, or call ``start()``/``stop()``."""

    def __init__(
        self,
        *,
        root: Path | None = None,
        port: int | None = None,
        access_key: str = "webrelease-test",
        secret_key: str | None = None,
        region: str = "us-east-1",
        extra_args: list[str] | None = None,
        verbose: bool = False,
        host: str = "127.0.0.1",
    ) -> None:
        """``host``: the address to listen on: 127.0.0.1, or the gateway of a pod network a test made
        (tests/harness/node.py), so that pods reach it too."""
        self._owned_root = root is None
        self._host = host
        self.root = root or Path(tempfile.mkdtemp(prefix="webrelease-s3-"))
        self._port = port
        self._access_key = access_key
        self._secret_key = secret_key or secrets.token_hex(16)
        self._region = region
        self._extra_args = extra_args or []
        self._verbose = verbose
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: Any = None
        self.log_path = self.root.parent / f"{self.root.name}.log"
        self._endpoint: S3Endpoint | None = None
        self._lock = threading.Lock()

    @property
    def endpoint(self) -> S3Endpoint:
        if self._endpoint is None:
            raise S3ServerError("the S3 server is not started")
        return self._endpoint

    def log_text(self, limit: int = 20_000) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return text[-limit:]

    def start(self) -> S3Endpoint:
        with self._lock:
            if self._endpoint is not None:
                return self._endpoint
            binary = versitygw_binary()
            data = self.root / "data"
            data.mkdir(parents=True, exist_ok=True)
            last_error = ""
            for _attempt in range(3):  # a free port can be taken between probe and bind
                port = self._port or free_port()
                try:
                    self._endpoint = self._spawn(binary, data, port)
                    return self._endpoint
                except S3ServerError as exc:
                    last_error = str(exc)
                    self._kill()
                    if self._port is not None or "address already in use" not in last_error:
                        break
            raise S3ServerError(last_error)

    def _spawn(self, binary: Path, data: Path, port: int) -> S3Endpoint:
        self._log_file = self.log_path.open("ab")
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", str(self.root)),
            "ROOT_ACCESS_KEY": self._access_key,
            "ROOT_SECRET_KEY": self._secret_key,
            "VGW_REGION": self._region,
        }
        # --keep-alive: reuse connections as S3 does (without it every request pays a TCP
        # handshake); --quiet: no access line per request (errors are still logged).
        cmd = [str(binary), "--port", f"{self._host}:{port}", "--region", self._region, "--keep-alive"]
        cmd += [*([] if self._verbose else ["--quiet"]), *self._extra_args, "posix", str(data)]
        self._proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        endpoint = S3Endpoint(f"http://{self._host}:{port}", self._access_key, self._secret_key, self._region)
        self._wait_ready(endpoint, port)
        return endpoint

    def _wait_ready(self, endpoint: S3Endpoint, port: int) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + START_DEADLINE_S
        delay = 0.02
        while True:
            code = self._proc.poll()
            if code is not None:
                raise S3ServerError(f"versitygw exited with code {code} while starting:\n{self.log_text()}")
            if _answers_http(port, self._host):
                break
            if time.monotonic() > deadline:
                raise S3ServerError(
                    f"versitygw did not answer within {START_DEADLINE_S:.0f} s:\n{self.log_text()}"
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.25)
        try:  # listening; now prove the credentials work
            endpoint.client().list_buckets()
        except Exception as exc:
            raise S3ServerError(
                f"versitygw answers but ListBuckets failed: {exc}\n{self.log_text()}"
            ) from None

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def stop(self) -> None:
        with self._lock:
            self._kill()
            self._endpoint = None
            if self._owned_root:
                shutil.rmtree(self.root, ignore_errors=True)
                with contextlib.suppress(OSError):
                    self.log_path.unlink()

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is not None:
            print(f"--- versitygw log ({self.log_path}) ---\n{self.log_text()}", file=sys.stderr)
        self.stop()


_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
_SLOWDOWN_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)


class FaultProxy:
    """An HTTP proxy on 127.0.0.1 in front of an S3 server that injects what real S3 does and a
    local server does not: ``503 SlowDown`` answers and latency.

    Requests are forwarded unchanged (the ``Host`` header included, so SigV4 signatures made for
    the proxy's address still verify upstream). ``throttle(n)`` answers the next ``n`` requests
    with 503 SlowDown (``None``: every request until ``throttle(0)``); ``latency`` seconds are
    added before each forwarded request. ``seen`` / ``throttled`` count requests.
    """

    def __init__(self, upstream: S3Endpoint, *, latency: float = 0.0) -> None:
        self.upstream = upstream
        self.latency = latency
        self.seen = 0
        self.throttled = 0
        self._throttle_left: int | None = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def throttle(self, count: int | None) -> None:
        with self._lock:
            self._throttle_left = count

    def _should_throttle(self) -> bool:
        with self._lock:
            self.seen += 1
            if self._throttle_left is None or self._throttle_left > 0:
                if self._throttle_left is not None:
                    self._throttle_left -= 1
                self.throttled += 1
                return True
            return False

    @property
    def endpoint(self) -> S3Endpoint:
        if self._server is None:
            raise S3ServerError("the proxy is not started")
        port = self._server.server_address[1]
        up = self.upstream
        return S3Endpoint(f"http://127.0.0.1:{port}", up.access_key, up.secret_key, up.region)

    def start(self) -> S3Endpoint:
        proxy = self
        target = urlsplit(self.upstream.endpoint_url)
        local = threading.local()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def _upstream(self) -> http.client.HTTPConnection:
                conn: http.client.HTTPConnection | None = getattr(local, "conn", None)
                if conn is None:
                    conn = http.client.HTTPConnection(
                        target.hostname or "127.0.0.1", target.port or 80, timeout=120
                    )
                    local.conn = conn
                return conn

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if proxy._should_throttle():
                    self.send_response_only(503, "Slow Down")
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(_SLOWDOWN_BODY)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(_SLOWDOWN_BODY)
                    return
                if proxy.latency:
                    time.sleep(proxy.latency)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                for attempt in range(2):
                    conn = self._upstream()
                    try:
                        conn.request(self.command, self.path, body=body or None, headers=headers)
                        response = conn.getresponse()
                        data = response.read()
                        break
                    except (OSError, http.client.HTTPException):
                        conn.close()
                        local.conn = None
                        if attempt:
                            self.send_error(502, "upstream unreachable")
                            return
                self.send_response_only(response.status, response.reason)
                for name, value in response.getheaders():
                    if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                        self.send_header(name, value)
                if self.command == "HEAD":
                    self.send_header("Content-Length", response.getheader("Content-Length") or "0")
                else:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="s3-fault-proxy", daemon=True)
        self._thread.start()
        return self.endpoint

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _answers_http(port: int, host: str = "127.0.0.1") -> bool:
    conn = http.client.HTTPConnection(host, port, timeout=2)
    try:
        conn.request("GET", "/")
        conn.getresponse().read()
        return True
    except OSError:
        return False
    finally:
        conn.close()


@contextlib.contextmanager
def running_server(**kwargs: Any) -> Iterator[S3Endpoint]:
    """``with running_server() as endpoint: ...`` for scripts that only need the endpoint."""
    with S3Server(**kwargs) as server:
        yield server.endpoint


def _print_endpoint(endpoint: S3Endpoint, as_env: bool, log: Path, pid: int | None) -> None:
    if as_env:
        env = {**endpoint.env(), "WEBRELEASE_S3_LOG": str(log), "WEBRELEASE_S3_PID": str(pid)}
        for k, v in env.items():
            print(f"export {k}={shlex.quote(v)}")
    else:
        info = {
            "endpoint_url": endpoint.endpoint_url,
            "access_key": endpoint.access_key,
            "secret_key": endpoint.secret_key,
            "region": endpoint.region,
            "log": str(log),
            "pid": pid,
        }
        print(json.dumps(info))
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.harness.s3server", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--root", type=Path, help="keep data here (default: a temporary folder, removed on exit)"
    )
    parser.add_argument("--port", type=int, help="listen on this port (default: a free one)")
    parser.add_argument("--bucket", action="append", default=[], help="create this bucket (repeatable)")
    parser.add_argument("--env", action="store_true", help="print `export AWS_...` lines instead of JSON")
    args = parser.parse_args(argv)

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with S3Server(root=args.root, port=args.port) as server:
        for bucket in args.bucket:
            server.endpoint.make_bucket(bucket)
        _print_endpoint(server.endpoint, args.env, server.log_path, server.pid)
        while not stop.is_set() and server.running:
            stop.wait(1.0)
        if not server.running:
            print(f"versitygw exited unexpectedly:\n{server.log_text()}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
