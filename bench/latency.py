"""A TCP proxy in front of the S3 server that delays every response by ~20 ms, like real S3.

toxiproxy (pinned, built by scripts/bench-install-toxiproxy.sh) with one ``latency`` toxic on the
downstream direction: each chunk the server sends is held until ``latency`` ms after it arrived, so
every request/response round trip costs that much more, and requests in flight overlap as they do
against a real, distant S3. Server-side copies carry no body, so the proxy's own cost stays small.
"""

from __future__ import annotations

import json
import subprocess
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.harness.s3server import free_port

from bench.s3 import wait_for_port


class LatencyProxy:
    def __init__(self, binary: Path, upstream_port: int, latency_ms: int, log: Path) -> None:
        self.binary = binary
        self.upstream_port = upstream_port
        self.latency_ms = latency_ms
        self.log = log
        self.api_port = 0
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _api(self, path: str, body: dict[str, Any]) -> Any:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.api_port}{path}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read() or b"null")

    def __enter__(self) -> LatencyProxy:
        if not self.binary.exists():
            raise FileNotFoundError(f"{self.binary} is missing: run scripts/bench-install-toxiproxy.sh")
        self.api_port, self.port = free_port(), free_port()
        with self.log.open("wb") as out:
            self._proc = subprocess.Popen(
                [str(self.binary), "-host", "127.0.0.1", "-port", str(self.api_port)],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for_port(self.api_port, 30, self._proc)
        self._api(
            "/proxies",
            {"name": "s3", "listen": f"127.0.0.1:{self.port}", "upstream": f"127.0.0.1:{self.upstream_port}"},
        )
        self._api(
            "/proxies/s3/toxics",
            {
                "name": "s3-latency",
                "type": "latency",
                "stream": "downstream",
                "toxicity": 1.0,
                "attributes": {"latency": self.latency_ms, "jitter": 0},
            },
        )
        wait_for_port(self.port, 10, self._proc)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
