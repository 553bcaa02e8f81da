"""A throttling S3 front: an HTTP proxy on 127.0.0.1 that behaves like S3 under load.

S3 limits the request rate per prefix partition (about 3,500 writes and 5,500 reads per second)
and answers what goes above it with ``503 SlowDown``. A local S3 server has no such limit, so
this proxy adds one in front of it: a token bucket per (bucket, prefix, class) — ``rate`` tokens
per second, ``burst_s`` seconds' worth of them banked at most. A request that finds a token is
forwarded unchanged (the ``Host`` header and the raw path included, so SigV4 signatures made for
the proxy's address still verify upstream); one that finds none is answered at once with 503 and
S3's XML body (``<Code>SlowDown</Code>``).

- **class**: ``write`` (PUT, POST, DELETE: CopyObject, PutObject, DeleteObjects...) at ``rate``;
  ``read`` (GET, HEAD: GetObject, ListObjectsV2...) at ``read_rate`` (default ``rate`` x 5,500 /
  3,500, S3's ratio).
- **prefix**: path-style addressing (``/bucket/key``); the first ``prefix_depth`` segments of the
  key (default 0: the whole bucket is one partition, as a fresh S3 bucket is).
- **counts** (:meth:`ThrottleProxy.stats`): requests received, throttled and forwarded per class,
  successful writes per bucket and the times of the first and last one (goodput), for the bench
  and the tests. ``GET /_throttle/stats`` answers the same as JSON (``_`` is not allowed in a
  bucket name, so no S3 request is ever taken for it).

Built on aiohttp (one event loop in a thread of its own; ``python -m tests.harness.throttle``
runs it as a process). Used by tests/storage/test_throttle_proxy.py, the reliability tier's
sustained throttled run and the bench's goodput section.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from yarl import URL

from tests.harness.s3server import S3Endpoint, S3ServerError

#: S3's per-prefix partition rates (requests per second): writes, reads.
S3_WRITE_RATE = 3500
S3_READ_RATE = 5500
DEFAULT_BURST_S = 0.1

SLOWDOWN_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message>"
    b"<RequestId>webrelease-throttle</RequestId></Error>"
)
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "expect",  # 100-continue: the proxy has read the body already (SigV4 never signs it)
    }
)
_WRITE_METHODS = frozenset({"PUT", "POST", "DELETE"})


@dataclass
class TokenBucket:
    """``rate`` tokens per second, at most ``capacity`` banked; starts full."""

    rate: float
    capacity: float
    tokens: float
    stamp: float

    def take(self, now: float) -> bool:
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@dataclass
class Stats:
    """What the proxy saw (a copy: later requests do not change it)."""

    #: requests received / answered 503 / forwarded, by class (``read``, ``write``)
    received: dict[str, int] = field(default_factory=dict)
    throttled: dict[str, int] = field(default_factory=dict)
    forwarded: dict[str, int] = field(default_factory=dict)
    #: successful (2xx) writes forwarded, per bucket
    writes_ok: dict[str, int] = field(default_factory=dict)
    #: monotonic times of the first and last successful write (None: none yet), and per bucket
    first_write: float | None = None
    last_write: float | None = None
    first_write_in: dict[str, float] = field(default_factory=dict)
    last_write_in: dict[str, float] = field(default_factory=dict)

    def write_span(self, bucket: str) -> float:
        """Seconds between the first and the last successful write into ``bucket``."""
        first, last = self.first_write_in.get(bucket), self.last_write_in.get(bucket)
        return last - first if first is not None and last is not None else 0.0

    @property
    def total(self) -> int:
        return sum(self.received.values())

    @property
    def total_throttled(self) -> int:
        return sum(self.throttled.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "throttled": self.throttled,
            "forwarded": self.forwarded,
            "writes_ok": self.writes_ok,
            "first_write": self.first_write,
            "last_write": self.last_write,
            "first_write_in": self.first_write_in,
            "last_write_in": self.last_write_in,
        }


def _rates(rate: float, read_rate: float | None) -> dict[str, float]:
    return {"write": float(rate), "read": float(read_rate or rate * S3_READ_RATE / S3_WRITE_RATE)}


def request_class(method: str) -> str:
    return "write" if method.upper() in _WRITE_METHODS else "read"


def partition(raw_path: str, prefix_depth: int) -> tuple[str, str]:
    """(bucket, prefix) of a path-style request path (query string ignored)."""
    path = raw_path.split("?", 1)[0].lstrip("/")
    bucket, _, key = path.partition("/")
    if prefix_depth <= 0 or not key:
        return bucket, ""
    return bucket, "/".join(key.split("/")[:prefix_depth])


class ThrottleProxy:
    """The throttling front of one S3 endpoint. Use as a context manager or ``start()``/``stop()``."""

    def __init__(
        self,
        upstream: S3Endpoint,
        *,
        rate: float,
        read_rate: float | None = None,
        burst_s: float = DEFAULT_BURST_S,
        prefix_depth: int = 0,
        port: int = 0,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.upstream = upstream
        self.prefix_depth = prefix_depth
        self.burst_s = burst_s
        self._rates = _rates(rate, read_rate)
        self._port = port
        self._buckets: dict[tuple[str, str, str], TokenBucket] = {}
        self._stats = Stats()
        self._lock = threading.Lock()  # guards _stats and _buckets against readers in other threads
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.BaseRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._bound: int | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    # -- configuration and counts -----------------------------------------------------------------

    @property
    def rate(self) -> float:
        return self._rates["write"]

    @property
    def read_rate(self) -> float:
        return self._rates["read"]

    def set_rate(self, rate: float, read_rate: float | None = None) -> None:
        """Change the limits (every token bucket starts again, full)."""
        if rate <= 0:
            raise ValueError("rate must be positive")
        with self._lock:
            self._rates = {
                "write": float(rate),
                "read": float(read_rate or rate * S3_READ_RATE / S3_WRITE_RATE),
            }
            self._buckets.clear()

    def stats(self) -> Stats:
        with self._lock:
            s = self._stats
            return Stats(
                dict(s.received),
                dict(s.throttled),
                dict(s.forwarded),
                dict(s.writes_ok),
                s.first_write,
                s.last_write,
                dict(s.first_write_in),
                dict(s.last_write_in),
            )

    def reset(self) -> None:
        """Zero the counts and refill every bucket."""
        with self._lock:
            self._stats = Stats()
            self._buckets.clear()

    def _admit(self, method: str, raw_path: str) -> bool:
        klass = request_class(method)
        bucket, prefix = partition(raw_path, self.prefix_depth)
        now = time.monotonic()
        with self._lock:
            s = self._stats
            s.received[klass] = s.received.get(klass, 0) + 1
            key = (bucket, prefix, klass)
            tb = self._buckets.get(key)
            if tb is None:
                rate = self._rates[klass]
                capacity = max(1.0, rate * self.burst_s)
                tb = self._buckets[key] = TokenBucket(rate, capacity, capacity, now)
            if tb.take(now):
                s.forwarded[klass] = s.forwarded.get(klass, 0) + 1
                return True
            s.throttled[klass] = s.throttled.get(klass, 0) + 1
            return False

    def _wrote(self, raw_path: str) -> None:
        bucket, _ = partition(raw_path, 0)
        now = time.monotonic()
        with self._lock:
            s = self._stats
            s.writes_ok[bucket] = s.writes_ok.get(bucket, 0) + 1
            if s.first_write is None:
                s.first_write = now
            s.last_write = now
            s.first_write_in.setdefault(bucket, now)
            s.last_write_in[bucket] = now

    # -- serving ----------------------------------------------------------------------------------

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        raw_path = request.raw_path
        if raw_path.startswith("/_throttle/stats"):
            return web.json_response(self.stats().to_json())
        if request.version == aiohttp.HttpVersion11 and request.headers.get("Expect", "").lower() == (
            "100-continue"
        ):
            # botocore waits up to a second for this before it sends a PutObject body
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = await request.read()
        if not self._admit(request.method, raw_path):
            return web.Response(
                status=503,
                reason="Slow Down",
                body=b"" if request.method == "HEAD" else SLOWDOWN_BODY,
                headers={"Content-Type": "application/xml", "x-amz-request-id": "webrelease-throttle"},
            )
        assert self._session is not None
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP]
        url = URL(self.upstream.endpoint_url.rstrip("/") + raw_path, encoded=True)
        try:
            async with self._session.request(
                request.method,
                url,
                headers=headers,
                data=body if body else None,
                allow_redirects=False,
                auto_decompress=False,
                skip_auto_headers=("Content-Type", "User-Agent", "Accept", "Accept-Encoding"),
            ) as up:
                data = await up.read()
                status, reason = up.status, up.reason
                out = [(k, v) for k, v in up.headers.items() if k.lower() not in _HOP_BY_HOP]
                length = up.headers.get("Content-Length")
        except (TimeoutError, aiohttp.ClientError, OSError):
            return web.Response(status=502, reason="upstream unreachable")
        if 200 <= status < 300 and request_class(request.method) == "write":
            self._wrote(raw_path)
        if request.method == "HEAD":
            head = web.StreamResponse(status=status, reason=reason)
            for k, v in out:
                head.headers.add(k, v)
            head.content_length = int(length or 0)  # the object's size, with no body
            await head.prepare(request)
            await head.write_eof()
            return head
        response = web.Response(status=status, reason=reason, body=data)
        for k, v in out:
            response.headers.add(k, v)
        return response

    async def _serve(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=512, force_close=False),
            timeout=aiohttp.ClientTimeout(total=300),
            auto_decompress=False,
        )
        server = web.Server(self._handle, access_log=None)
        self._runner = web.ServerRunner(server, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self._port, backlog=1024)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []
        self._bound = int(sockets[0].getsockname()[1])

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._shutdown())
            loop.close()

    async def _shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    @property
    def endpoint(self) -> S3Endpoint:
        if self._bound is None:
            raise S3ServerError("the throttling proxy is not started")
        up = self.upstream
        return S3Endpoint(f"http://127.0.0.1:{self._bound}", up.access_key, up.secret_key, up.region)

    def start(self) -> S3Endpoint:
        if self._thread is not None:
            return self.endpoint
        self._thread = threading.Thread(target=self._main, name="s3-throttle-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(30) or self._error is not None:
            self.stop()
            raise S3ServerError(f"the throttling proxy did not start: {self._error!r}")
        return self.endpoint

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and loop.is_running():
            loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(15)
        self._thread = None
        self._loop = None
        self._bound = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def fetch_stats(endpoint_url: str) -> Stats:
    """The counts of a proxy running in another process (``GET /_throttle/stats``)."""
    import urllib.request

    with urllib.request.urlopen(endpoint_url.rstrip("/") + "/_throttle/stats", timeout=10) as resp:
        raw: Mapping[str, Any] = json.loads(resp.read())
    return Stats(
        dict(raw["received"]),
        dict(raw["throttled"]),
        dict(raw["forwarded"]),
        dict(raw["writes_ok"]),
        raw["first_write"],
        raw["last_write"],
        dict(raw.get("first_write_in") or {}),
        dict(raw.get("last_write_in") or {}),
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.harness.throttle", description=__doc__.split("\n\n")[0])
    p.add_argument("--upstream", required=True, help="the S3 endpoint URL to forward to")
    p.add_argument("--access-key", default="")
    p.add_argument("--secret-key", default="")
    p.add_argument("--rate", type=float, required=True, help="writes per second per prefix")
    p.add_argument("--read-rate", type=float, help="reads per second per prefix (default: rate x 5500/3500)")
    p.add_argument("--burst-s", type=float, default=DEFAULT_BURST_S, help="seconds of tokens banked at most")
    p.add_argument("--prefix-depth", type=int, default=0, help="key segments that make a prefix (0: bucket)")
    p.add_argument("--port", type=int, default=0)
    a = p.parse_args(argv)
    if urlsplit(a.upstream).hostname not in ("127.0.0.1", "localhost"):
        p.error("the upstream must be on 127.0.0.1")
    upstream = S3Endpoint(a.upstream, a.access_key, a.secret_key)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with ThrottleProxy(
        upstream,
        rate=a.rate,
        read_rate=a.read_rate,
        burst_s=a.burst_s,
        prefix_depth=a.prefix_depth,
        port=a.port,
    ) as proxy:
        print(json.dumps({"endpoint_url": proxy.endpoint.endpoint_url}), flush=True)
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
