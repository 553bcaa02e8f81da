"""A lean fast path for the S3 store's hot requests: single-part CopyObject, PutObject and
ListObjectsV2 pages.

botocore spends ~2.4 ms of client CPU on one CopyObject (event hooks, urllib3, signing, parsing);
this path spends about a fifth of that: it signs SigV4 itself (the signing key cached per day),
keeps one keep-alive ``http.client`` connection per thread and host, and parses listings with
ElementTree. It only ever handles the **success case** and **throttling**: a 429/503 answer raises
:class:`SlowDown` (the caller, :class:`~webrelease.copier.storage.s3.S3Store`, backs off and
sends it again, see governor.py); any other non-2xx answer, a CopyObject 200 whose body is an
``<Error>``, a connection error or anything unexpected makes it return ``None`` and the caller
sends the same request again through boto3, which gives the error messages. It never retries.

**Where to send, how to sign**: nothing is configured twice. The route of a bucket (scheme, host,
port, path or virtual-host addressing, signing region) is learnt from a request boto3 sent to
that bucket and that succeeded (``observe`` from botocore's ``before-send`` event, ``confirm``
after the call returned): until boto3 has talked to a bucket once, its requests go through boto3.
A fast-path answer that is neither a success nor throttling/5xx (e.g. a redirect to another
region) forgets the route, so the next boto3 success learns it again. Credentials are the ones
the boto3 client resolved (refreshable ones are asked for their current value per request; a
session token is sent as ``x-amz-security-token``).

**Throttling and outages**: a 429/503 answer is :class:`SlowDown`: the store's governor halves
its pace and the request is sent again on the fast path (boto3 would only add CPU per request
while S3 is the limit). Another 5xx answer or a failure to connect pauses the fast path for a few
seconds: every request goes through boto3 and the store's retries meanwhile.

**Request events**: every request this path sends is reported to ``on_request`` before it is
sent, like boto3's; a request that falls back is therefore reported twice (or more, with boto3's
own retries).
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import logging
import re
import ssl
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import Any, NamedTuple
from urllib.parse import quote, unquote_plus, urlsplit

from webrelease.copier.storage.base import RequestEvent, RequestHook

log = logging.getLogger(__name__)

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
#: How long the fast path stays off after S3 throttled it or could not be reached.
DEFAULT_PAUSE_S = 5.0
_CREDENTIAL_SCOPE = re.compile(r"Credential=[^/,]+/(\d{8})/([^/,]+)/s3/aws4_request")
_QUERY_SAFE = "-_.~"
#: Keep-alive connections one thread keeps (to as many hosts).
MAX_HOSTS_PER_THREAD = 4


class Route(NamedTuple):
    """How boto3 reached one bucket."""

    scheme: str
    host: str
    port: int | None
    netloc: str
    #: The path of the bucket's objects: ``/bucket/`` (path style) or ``/`` (virtual host).
    base: str
    region: str


class Page(NamedTuple):
    """One ListObjectsV2 page: (whole key, size, ETag) of each object, and the continuation."""

    objects: list[tuple[str, int, str | None]]
    truncated: bool
    token: str | None


class _Unexpected(Exception):
    """A response this path does not handle: fall back."""


class SlowDown(Exception):
    """S3 answered 429 or 503 (SlowDown): send it again later, at a lower pace."""

    def __init__(self, operation: str, status: int) -> None:
        super().__init__(f"{operation}: HTTP {status} (slow down)")
        self.operation = operation
        self.status = status


def _route_from(bucket: str, key: str | None, url: str, authorization: str) -> Route | None:
    """The route a boto3 request to ``bucket`` used, if it is one this path can reproduce."""
    scope = _CREDENTIAL_SCOPE.search(authorization)
    if not authorization.startswith("AWS4-HMAC-SHA256 ") or scope is None:
        return None  # SigV4a, SigV2, anonymous...: leave it to boto3
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    path = parts.path or "/"
    if key is None:  # a bucket-level request (ListObjectsV2)
        base = path if path.endswith("/") else path + "/"
    else:
        suffix = quote(key, safe="/~")
        if not suffix or not path.endswith(suffix):
            return None
        base = path[: -len(suffix)]
    if base not in ("/", f"/{bucket}/"):
        return None
    return Route(parts.scheme, parts.hostname, parts.port, parts.netloc, base, scope.group(2))


class FastPath:
    """The lean S3 requests of one store. Thread-safe: each thread has its own connections."""

    def __init__(
        self,
        credentials: Any,
        *,
        on_request: RequestHook | None,
        connect_timeout: float,
        read_timeout: float,
        verify: bool | str = True,
        pause: float = DEFAULT_PAUSE_S,
    ) -> None:
        self._credentials = credentials
        self._on_request = on_request
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._verify = verify
        self._ssl: ssl.SSLContext | None = None
        self.pause = pause
        self._paused_until = 0.0
        self._routes: dict[str, Route] = {}
        self._keys: dict[tuple[str, str, str], bytes] = {}
        self._local = threading.local()
        #: Requests this path completed, and requests it handed to boto3 (for tests and stats).
        self.completed = 0
        self.fell_back = 0
        #: Requests S3 answered 429/503 (raised as SlowDown).
        self.throttled = 0

    @classmethod
    def for_client(cls, client: Any, *, on_request: RequestHook | None) -> FastPath | None:
        """A fast path signing with ``client``'s credentials, or None if it cannot mirror it."""
        config = client.meta.config
        if getattr(config, "signature_version", None) not in (None, "s3v4", "v4"):
            return None
        credentials = getattr(getattr(client, "_request_signer", None), "_credentials", None)
        if credentials is None or not hasattr(credentials, "get_frozen_credentials"):
            return None  # no credentials: boto3 says so, with its own message
        verify = getattr(getattr(getattr(client, "_endpoint", None), "http_session", None), "_verify", True)
        if not isinstance(verify, bool | str):
            verify = True
        return cls(
            credentials,
            on_request=on_request,
            connect_timeout=float(config.connect_timeout),
            read_timeout=float(config.read_timeout),
            verify=verify,
        )

    # -- learning routes from boto3 ------------------------------------------------------------

    def knows(self, bucket: str) -> bool:
        return bucket in self._routes

    def observe(self, bucket: str, key: str | None, url: str, authorization: str) -> None:
        """A request boto3 is sending to ``bucket`` (key None: a bucket-level request)."""
        self._local.candidate = (bucket, _route_from(bucket, key, url, authorization))

    def confirm(self) -> None:
        """The last request this thread sent through boto3 succeeded: its route is good."""
        candidate = getattr(self._local, "candidate", None)
        if candidate is not None:
            self._local.candidate = None
            bucket, route = candidate
            if route is not None:
                self._routes[bucket] = route

    def forget(self) -> None:
        """Forget this thread's candidate (its boto3 request failed)."""
        self._local.candidate = None

    # -- the requests ----------------------------------------------------------------------------

    def put(
        self,
        bucket: str,
        key: str,
        body: bytes,
        *,
        content_type: str,
        metadata: Mapping[str, str],
        encoding: str | None = None,
    ) -> bool:
        """PutObject; True if it succeeded, False if the caller must send it through boto3."""
        headers = {"content-type": content_type}
        if encoding:
            headers["content-encoding"] = encoding
        for name, value in metadata.items():
            headers[f"x-amz-meta-{name}"] = value
        return self._send("PutObject", bucket, key, method="PUT", headers=headers, body=body) is not None

    def copy(
        self,
        *,
        src_bucket: str,
        src_key: str,
        bucket: str,
        key: str,
        content_type: str | None,
        metadata: Mapping[str, str] | None,
        encoding: str | None = None,
    ) -> bool:
        """Single-part CopyObject (metadata replaced if ``content_type`` is given, else copied)."""
        headers = {"x-amz-copy-source": quote(f"{src_bucket}/{src_key}", safe="/~")}
        if content_type is None:
            headers["x-amz-metadata-directive"] = "COPY"
        else:
            headers["x-amz-metadata-directive"] = "REPLACE"
            headers["content-type"] = content_type
            if encoding:
                headers["content-encoding"] = encoding
            for name, value in (metadata or {}).items():
                headers[f"x-amz-meta-{name}"] = value
        body = self._send("CopyObject", bucket, key, method="PUT", headers=headers)
        if body is None:
            return False
        # CopyObject can fail with a 200 whose body is an <Error> (S3 documents it).
        if b"<Error>" in body or b"<CopyObjectResult" not in body:
            self._fall_back("CopyObject", "a 200 without a CopyObjectResult")
            return False
        return True

    def list_page(self, bucket: str, prefix: str, token: str | None) -> Page | None:
        """One ListObjectsV2 page of ``prefix`` (keys url-encoded on the wire, decoded here)."""
        query = {"list-type": "2", "prefix": prefix, "encoding-type": "url"}
        if token:
            query["continuation-token"] = token
        body = self._send("ListObjectsV2", bucket, prefix, method="GET", headers={}, query=query)
        if body is None:
            return None
        try:
            return _parse_list(body)
        except (_Unexpected, ET.ParseError, ValueError):
            self._fall_back("ListObjectsV2", "a listing it could not parse")
            return None

    # -- HTTP and SigV4 --------------------------------------------------------------------------

    def _fall_back(self, operation: str, why: str) -> None:
        self.fell_back += 1
        log.debug("S3 fast path: %s got %s; sending it through boto3", operation, why)

    def _signing_key(self, secret: str, date: str, region: str) -> bytes:
        cache_key = (secret, date, region)
        key = self._keys.get(cache_key)
        if key is None:
            key = signing_key(secret, date, region)
            if len(self._keys) > 16:
                self._keys.clear()
            self._keys[cache_key] = key
        return key

    def _context(self) -> ssl.SSLContext:
        if self._ssl is None:
            if self._verify is False:
                context = ssl.create_default_context()
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            elif isinstance(self._verify, str):
                context = ssl.create_default_context(cafile=self._verify)
            else:
                context = ssl.create_default_context()
            self._ssl = context
        return self._ssl

    def _connection(self, route: Route) -> tuple[http.client.HTTPConnection, bool]:
        """This thread's connection to ``route``'s host, and whether it is a fresh one."""
        conns: dict[tuple[str, str, int | None], http.client.HTTPConnection] | None = getattr(
            self._local, "conns", None
        )
        if conns is None:
            conns = self._local.conns = {}
        where = (route.scheme, route.host, route.port)
        conn = conns.get(where)
        if conn is not None and conn.sock is not None:
            return conn, False
        if conn is None and len(conns) >= MAX_HOSTS_PER_THREAD:
            # Virtual-host addressing: one host per bucket. Keep the newest few, not one socket
            # per bucket per thread (file descriptors).
            oldest = next(iter(conns))
            conns.pop(oldest).close()
        if route.scheme == "https":
            conn = http.client.HTTPSConnection(
                route.host, route.port, timeout=self._connect_timeout, context=self._context()
            )
        else:
            conn = http.client.HTTPConnection(route.host, route.port, timeout=self._connect_timeout)
        conns[where] = conn
        return conn, True

    def _send(
        self,
        operation: str,
        bucket: str,
        key: str,
        *,
        method: str,
        headers: dict[str, str],
        body: bytes = b"",
        query: Mapping[str, str] | None = None,
    ) -> bytes | None:
        """Send one signed request; the body of a 2xx answer, or None (the caller falls back)."""
        route = self._routes.get(bucket)
        if route is None or time.monotonic() < self._paused_until:
            return None
        try:
            return self._send_to(
                route, operation, bucket, key, method=method, headers=headers, body=body, query=query
            )
        except SlowDown:
            raise
        except Exception as exc:  # by design: anything unexpected is boto3's to handle
            conns = getattr(self._local, "conns", None)
            stale = conns.pop((route.scheme, route.host, route.port), None) if conns else None
            if stale is not None:
                stale.close()  # it may be mid-request
            self._fall_back(operation, f"an unexpected {type(exc).__name__}")
            return None

    def _send_to(
        self,
        route: Route,
        operation: str,
        bucket: str,
        key: str,
        *,
        method: str,
        headers: dict[str, str],
        body: bytes,
        query: Mapping[str, str] | None,
    ) -> bytes | None:
        creds = self._credentials.get_frozen_credentials()
        if not creds.access_key or not creds.secret_key:
            return None
        if query is None:
            path = route.base + quote(key, safe="/~")
            canonical_query = ""
        else:
            path = route.base if route.base == "/" else route.base[:-1]
            canonical_query = "&".join(
                f"{quote(k, safe=_QUERY_SAFE)}={quote(v, safe=_QUERY_SAFE)}" for k, v in sorted(query.items())
            )
        if not body:
            payload = EMPTY_SHA256
        elif route.scheme == "https":
            payload = UNSIGNED_PAYLOAD  # as botocore: TLS protects the body
        else:
            payload = hashlib.sha256(body).hexdigest()
        amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        headers["host"] = route.netloc
        if method == "PUT":
            headers["content-length"] = str(len(body))
        sign(
            method=method,
            path=path,
            query=canonical_query,
            headers=headers,
            payload=payload,
            access_key=creds.access_key,
            token=creds.token,
            region=route.region,
            amz_date=amz_date,
            signing_key=self._signing_key(creds.secret_key, amz_date[:8], route.region),
        )
        target = f"{path}?{canonical_query}" if canonical_query else path

        if self._on_request is not None:
            self._on_request(RequestEvent(operation, bucket, key))
        conn, fresh = self._connection(route)
        try:
            if fresh:
                conn.connect()
                if conn.sock is not None:
                    conn.sock.settimeout(self._read_timeout)
            conn.request(method, target, body=body if method == "PUT" else None, headers=headers)
            response = conn.getresponse()
            data = response.read()
            if response.will_close:
                conn.close()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            if fresh:  # S3 unreachable: leave it to boto3 for a while (a stale keep-alive is not)
                self._paused_until = time.monotonic() + self.pause
            self._fall_back(operation, f"a connection error ({type(exc).__name__})")
            return None
        status = response.status
        if 200 <= status < 300:
            self.completed += 1
            return data
        if status in (429, 503):
            self.throttled += 1
            raise SlowDown(operation, status)
        if status >= 500:
            self._paused_until = time.monotonic() + self.pause
        elif status not in (403, 404):
            # e.g. a redirect to the bucket's real region: learn the route again from boto3.
            self._routes.pop(bucket, None)
        self._fall_back(operation, f"HTTP {status}")
        return None


def signing_key(secret: str, date: str, region: str) -> bytes:
    """The SigV4 key of one day (``YYYYMMDD``) and region for S3."""
    key = hmac.new(("AWS4" + secret).encode(), date.encode(), hashlib.sha256).digest()
    for part in (region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def sign(  # noqa: PLR0913 (the SigV4 inputs, keyword-only)
    *,
    method: str,
    path: str,
    query: str,
    headers: dict[str, str],
    payload: str,
    access_key: str,
    token: str | None,
    region: str,
    amz_date: str,
    signing_key: bytes,
) -> None:
    """Add SigV4 headers to ``headers`` (lower-case names; ``host`` included) for S3.

    ``path`` is the URI path as sent (already percent-encoded: S3 signs it as is), ``query`` the
    canonical query string, ``payload`` the body's SHA-256 (or ``UNSIGNED-PAYLOAD``). Every header
    in ``headers`` is signed.
    """
    headers["x-amz-date"] = amz_date
    headers["x-amz-content-sha256"] = payload
    if token:
        headers["x-amz-security-token"] = token
    names = sorted(headers)
    signed = ";".join(names)
    canonical = "\n".join(
        (method, path, query, *(f"{n}:{headers[n].strip()}" for n in names), "", signed, payload)
    )
    scope = f"{amz_date[:8]}/{region}/s3/aws4_request"
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    to_sign = f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{digest}"
    signature = hmac.new(signing_key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={signed}, Signature={signature}"
    )


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _parse_list(body: bytes) -> Page:
    # The answer of the S3 endpoint the release names, parsed as botocore parses it (ElementTree
    # on expat, which expands no external entities and limits entity amplification).
    root = ET.fromstring(body)  # noqa: S314
    if _local(root.tag) != "ListBucketResult":
        raise _Unexpected(root.tag)
    raw: list[tuple[str, int, str | None]] = []
    truncated = False
    token: str | None = None
    encoded = False
    for child in root:
        name = _local(child.tag)
        if name == "Contents":
            key: str | None = None
            size = 0
            etag: str | None = None
            for field in child:
                fname = _local(field.tag)
                if fname == "Key":
                    key = field.text or ""
                elif fname == "Size":
                    size = int(field.text or "0")
                elif fname == "ETag":
                    etag = field.text
            if key is None:
                raise _Unexpected("Contents without a Key")
            raw.append((key, size, etag))
        elif name == "IsTruncated":
            truncated = (child.text or "").strip().lower() == "true"
        elif name == "NextContinuationToken":
            token = child.text or None
        elif name == "EncodingType":
            encoded = (child.text or "").strip() == "url"
    if encoded:
        raw = [(unquote_plus(k), s, e) for k, s, e in raw]
    return Page(raw, truncated, token)
