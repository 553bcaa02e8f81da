"""A PROTOTYPE of a lean S3 client for the copier's hot path, to measure what boto3 costs.

Not used by webrelease: the bench runs it in place of botocore for ``CopyObject`` and ``PutObject``
(see bench/leanshard.py) to put a number on the alternative "a leaner client" of issue 6 §5. It
signs with SigV4 by hand (the signing key cached per day), keeps one ``http.client`` keep-alive
connection per thread, and does nothing else: no retries beyond one reconnect, no throttling
backoff, no event hooks. A real implementation would need those (and tests); the numbers show
whether it is worth it.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from urllib.parse import quote, urlsplit

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


class LeanS3Error(RuntimeError):
    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"HTTP {status}: {body[:300]!r}")
        self.status = status


class LeanS3:
    def __init__(self, endpoint_url: str, access_key: str, secret_key: str, region: str) -> None:
        parts = urlsplit(endpoint_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError("the prototype speaks plain HTTP only")
        self._host, self._port, self._host_header = parts.hostname, parts.port, parts.netloc
        self._access_key, self._secret_key, self._region = access_key, secret_key, region
        self._local = threading.local()
        self._keys: dict[str, bytes] = {}

    def _signing_key(self, date: str) -> bytes:
        key = self._keys.get(date)
        if key is None:
            key = hmac.new(("AWS4" + self._secret_key).encode(), date.encode(), hashlib.sha256).digest()
            for part in (self._region, "s3", "aws4_request"):
                key = hmac.new(key, part.encode(), hashlib.sha256).digest()
            self._keys[date] = key
        return key

    def _connection(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=120)
            self._local.conn = conn
        return conn

    def request(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes = b""
    ) -> tuple[int, bytes]:
        payload = hashlib.sha256(body).hexdigest() if body else EMPTY_SHA256
        amz_date = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        date = amz_date[:8]
        h = {k.lower(): v for k, v in headers.items()}
        h.update({"host": self._host_header, "x-amz-date": amz_date, "x-amz-content-sha256": payload})
        names = sorted(h)
        canonical = "\n".join(
            [method, path, "", *(f"{n}:{h[n].strip()}" for n in names), "", ";".join(names), payload]
        )
        scope = f"{date}/{self._region}/s3/aws4_request"
        to_sign = f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        signature = hmac.new(self._signing_key(date), to_sign.encode(), hashlib.sha256).hexdigest()
        h["authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={self._access_key}/{scope}, "
            f"SignedHeaders={';'.join(names)}, Signature={signature}"
        )
        for attempt in range(2):
            conn = self._connection()
            try:
                conn.request(method, path, body=body or None, headers=h)
                resp = conn.getresponse()
                return resp.status, resp.read()
            except (http.client.HTTPException, OSError):
                conn.close()
                self._local.conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def copy(
        self, src: tuple[str, str], bucket: str, key: str, content_type: str, metadata: Mapping[str, str]
    ) -> None:
        """CopyObject of ``src`` (bucket, key) to ``bucket``/``key``, metadata replaced."""
        src_bucket, src_key = src
        headers = {
            "x-amz-copy-source": quote(f"{src_bucket}/{src_key}", safe="/~"),
            "x-amz-metadata-directive": "REPLACE",
            "content-type": content_type,
            **{f"x-amz-meta-{k}": v for k, v in metadata.items()},
        }
        status, body = self.request("PUT", "/" + quote(f"{bucket}/{key}", safe="/~"), headers)
        # CopyObject can fail with a 200 whose body is an <Error> (S3 documents it).
        if status != 200 or b"<Error>" in body[:512]:
            raise LeanS3Error(status, body)

    def put(self, bucket: str, key: str, body: bytes, content_type: str, metadata: Mapping[str, str]) -> None:
        headers = {"content-type": content_type, **{f"x-amz-meta-{k}": v for k, v in metadata.items()}}
        status, resp = self.request("PUT", "/" + quote(f"{bucket}/{key}", safe="/~"), headers, body)
        if status != 200:
            raise LeanS3Error(status, resp)
