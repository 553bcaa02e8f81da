"""The S3 server every tool talks to, and the count of requests it served.

The server is versitygw (POSIX backend) started by the storage tests' own harness
(tests/harness/s3server.py: same binary, version and settings) on 127.0.0.1, with its S3 access log
on: every request any tool sends is one line there, with its operation name, whether it came
directly or through the latency proxy. Counting at the server is
the one way that treats every tool the same.
"""

from __future__ import annotations

import collections
import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from tests.harness.s3server import S3Endpoint, S3Server

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


#: Operations that write or copy an object (billed as PUT on S3).
WRITE_OPS = frozenset(
    {
        "PutObject",
        "CopyObject",
        "CreateMultipartUpload",
        "UploadPart",
        "UploadPartCopy",
        "CompleteMultipartUpload",
    }
)


def wait_for_port(port: int, deadline_s: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {deadline_s} s")


@dataclass(frozen=True)
class RequestCount:
    """Requests the server logged between two marks, by (bucket, operation)."""

    by_bucket_op: Mapping[tuple[str, str], int]

    @property
    def by_op(self) -> dict[str, int]:
        c: collections.Counter[str] = collections.Counter()
        for (_bucket, op), n in self.by_bucket_op.items():
            c[op] += n
        return dict(c)

    @property
    def total(self) -> int:
        return sum(self.by_bucket_op.values())

    def writes(self, bucket: str | None = None) -> int:
        """Object writes and copies (to ``bucket`` only, when given)."""
        return sum(
            n
            for (b, op), n in self.by_bucket_op.items()
            if op in WRITE_OPS and (bucket is None or b == bucket)
        )


def parse_access_log(text: str) -> collections.Counter[tuple[str, str]]:
    """Count (bucket, operation) in versitygw access-log lines: space separated, the 2nd field is the
    bucket, then a bracketed timestamp (which itself contains spaces), then remote ip, requester,
    request id and the operation (``s3_CopyObject``)."""
    ops: collections.Counter[tuple[str, str]] = collections.Counter()
    for line in text.splitlines():
        if not line or line.startswith("log starts"):
            continue
        head, sep, rest = line.partition(" [")
        close = rest.find("] ")
        if not sep or close < 0:
            continue
        bucket = head.split(" ")[-1]
        fields = rest[close + 2 :].split(" ", 4)
        if len(fields) >= 4:
            ops[(bucket, fields[3].removeprefix("s3_"))] += 1
    return ops


def parse_access_log_keys(text: str, marker: str) -> collections.Counter[tuple[str, str]]:
    """Like :func:`parse_access_log`, only the requests whose object key (the field after the
    operation) contains ``marker``: e.g. ``/_site-records/`` for the site records' requests."""
    ops: collections.Counter[tuple[str, str]] = collections.Counter()
    for line in text.splitlines():
        head, sep, rest = line.partition(" [")
        close = rest.find("] ")
        if not sep or close < 0:
            continue
        fields = rest[close + 2 :].split(" ", 5)
        if len(fields) >= 5 and marker in fields[4]:
            ops[(head.split(" ")[-1], fields[3].removeprefix("s3_"))] += 1
    return ops


class AccessLog:
    """Reads the server's access log from a mark onward."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0

    def _size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def settle(self, quiet_s: float = 0.15, deadline_s: float = 10.0) -> None:
        """Wait until the log stops growing: the server logs a request just after answering it,
        so the last lines of a tool that has just exited may still be on their way."""
        deadline = time.monotonic() + deadline_s
        last = self._size()
        still_since = time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.03)
            size = self._size()
            if size != last:
                last, still_since = size, time.monotonic()
            elif time.monotonic() - still_since >= quiet_s:
                return

    def mark(self) -> None:
        self.settle()
        self._offset = self._size()

    def since_mark_text(self) -> str:
        """The log's lines since the mark (and moves the mark to the end)."""
        self.settle()
        with self.path.open("rb") as f:
            f.seek(self._offset)
            data = f.read()
        self._offset += len(data)
        return data.decode("utf-8", "replace")

    def since_mark(self) -> RequestCount:
        return RequestCount(dict(parse_access_log(self.since_mark_text())))


class BenchServer:
    """The harness's versitygw (tests/harness/s3server.py) with its S3 access log on and stdout
    request logging off, its data under ``root/data``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.log = AccessLog(root.parent / f"{root.name}-access.log")
        self.server = S3Server(root=root, extra_args=["--quiet", "--access-log", str(self.log.path)])

    @property
    def endpoint(self) -> S3Endpoint:
        return self.server.endpoint

    @property
    def port(self) -> int:
        return int(self.endpoint.endpoint_url.rsplit(":", 1)[1])

    def __enter__(self) -> BenchServer:
        self.root.mkdir(parents=True, exist_ok=True)
        self.server.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.server.stop()

    def drop_bucket(self, bucket: str) -> None:
        """Remove a bucket and everything in it at once, on disk (the POSIX backend keeps a bucket
        as a directory): far faster than deleting thousands of objects through the API between runs."""
        data = self.root / "data"
        target = data / bucket
        if target.parent == data and target.exists():
            shutil.rmtree(target)


def client(server: S3Endpoint, endpoint_url: str | None = None, *, pool: int = 64) -> S3Client:
    """A boto3 client for setup and checks, through ``endpoint_url`` (default: the server itself)."""
    c: S3Client = boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint_url or server.endpoint_url,
        region_name=server.region,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
        config=Config(
            s3={"addressing_style": "path"},
            max_pool_connections=pool,
            retries={"mode": "standard", "max_attempts": 5},
        ),
    )
    return c


def credentials_env(server: S3Endpoint) -> dict[str, str]:
    """The environment every tool gets: the server's credentials and region and nothing else of AWS's
    (the endpoint is given on each tool's command line: the server itself, or the latency proxy)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RCLONE_", "S5CMD_"))}
    env.update(
        AWS_ACCESS_KEY_ID=server.access_key,
        AWS_SECRET_ACCESS_KEY=server.secret_key,
        AWS_REGION=server.region,
        AWS_DEFAULT_REGION=server.region,
        AWS_EC2_METADATA_DISABLED="true",
    )
    return env


def list_keys(s3: S3Client, bucket: str, prefix: str = "") -> Iterator[tuple[str, int, str]]:
    """(key, size, etag) of every object under ``prefix``."""
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            yield o["Key"], o["Size"], o["ETag"].strip('"')


def head_metadata(s3: S3Client, bucket: str, key: str) -> dict[str, Any]:
    return dict(s3.head_object(Bucket=bucket, Key=key))
