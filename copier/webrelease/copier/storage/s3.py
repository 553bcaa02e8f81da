"""The ``s3://`` backend on boto3: one client shared by every thread.

- **Connections**: the client's pool holds ``max_in_flight`` connections (plus room for the parts
  of a multipart copy), so no thread waits for a connection and none is thrown away.
- **Throttling**: the store owns the back-off (botocore sends each request once: its retry
  modes sleep on an exponential schedule per request and stop when a client-wide quota is
  drained, which under a sustained SlowDown storm turns a run of seconds into minutes; see
  docs/storage.md for the numbers). Every request, fast path or boto3, takes a slot of the
  store's :class:`~webrelease.copier.storage.governor.Governor`: an AIMD window of requests in
  flight that SlowDown answers shrink (times 0.7 once per round trip) and successes grow (+1 per
  round trip), so that several shard processes on one prefix converge on S3's limit instead of
  each collapsing to a crawl. A throttled request is sent again as soon as the window has room,
  until ``throttle_deadline`` seconds have passed for that request; only then does it surface
  as a StorageError that says S3 kept throttling. Throttling slows a release down to the rate
  S3 grants; it fails it only when it never ends.
- **Other retries** (also here, not in botocore): an unreachable server (refused, dropped or
  timed-out connection) for up to ``unreachable_deadline`` seconds, and a transient 5xx
  (InternalError, RequestTimeout, 500/502/504) up to ``max_attempts`` attempts, both with
  jittered exponential backoff from ``throttle_backoff`` seconds.
- **Requests**: every request actually sent (each retry too) is reported to ``on_request``
  from botocore's ``before-send`` event, with the bucket and key of the call.
- **Errors** become NotFound / StorageError with the operation, the object's URL and S3's error
  code; messages never contain credentials (known secrets are masked as a last resort).
- **Fast path** (``fast_path=True``, the default): single-part CopyObject, PutObject and
  ListObjectsV2 pages go through :mod:`webrelease.copier.storage.fastpath` (SigV4 signed by hand,
  one keep-alive connection per thread) once boto3 has talked to the bucket; anything but a
  success there is sent again through boto3, which keeps every retry and error rule above.
- **ETag**: a plain 32-hex ETag is the MD5 of the bytes (single-part PUT or CopyObject); a
  multipart ETag (``...-N``) is not, and is reported as ``md5=None``.
"""

from __future__ import annotations

import contextlib
import random
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    ReadTimeoutError,
    ResponseStreamingError,
)

from webrelease.copier.storage.base import (
    DELETE_BATCH,
    AccessDenied,
    Credentials,
    Location,
    NotFound,
    ObjectInfo,
    RequestEvent,
    RequestHook,
    StorageError,
    check_key,
    check_metadata,
    guess_content_encoding,
    guess_content_type,
)
from webrelease.copier.storage.fastpath import FastPath, Page, SlowDown
from webrelease.copier.storage.governor import Governor

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef, ObjectIdentifierTypeDef

    from webrelease.copier.spec import Storage

T = TypeVar("T")

GiB = 1 << 30
MiB = 1 << 20
#: S3's limit for one CopyObject; larger objects need a multipart copy.
MULTIPART_COPY_THRESHOLD = 5 * GiB
#: S3's minimum part size (every part but the last), and its maximum number of parts.
MIN_PART_SIZE = 5 * MiB
MAX_PARTS = 10_000
DEFAULT_PART_SIZE = 512 * MiB
#: Parts of one multipart copy copied at the same time.
PART_COPY_CONCURRENCY = 8
#: Attempts per request that meets a transient server error (throttling has its own deadline).
DEFAULT_MAX_ATTEMPTS = 10
#: How long one request may keep being throttled before it fails.
DEFAULT_THROTTLE_DEADLINE_S = 600.0
#: How long one request may keep failing to reach the server (a restart, a network blip) before it
#: fails: botocore's own retries stop early once a burst of failures has drained its retry quota.
DEFAULT_UNREACHABLE_DEADLINE_S = 30.0
_THROTTLE_BACKOFF_MAX_S = 20.0
_STREAM_READ_ATTEMPTS = 3

_MD5_ETAG = re.compile(r"^[0-9a-f]{32}$")
THROTTLING_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestLimitExceeded",
        "TooManyRequests",
        "TooManyRequestsException",
        "ServiceUnavailable",
        "RequestThrottledException",
        "503",
        "429",
    }
)
_TRANSIENT_CODES = frozenset(
    {"InternalError", "RequestTimeout", "RequestTimeoutException", "PriorRequestNotComplete"}
)
_TRANSIENT_STATUS = frozenset({500, 502, 504})
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NoSuchBucket", "NotFound", "404"})
_ACCESS_CODES = frozenset(
    {
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "AuthorizationHeaderMalformed",
        "InvalidClientTokenId",
        "XAdminUserNotFound",  # versitygw: an unknown access key id (HTTP 404)
        "403",
    }
)


#: Object and listing requests whose URL shows how boto3 reaches a bucket (see fastpath).
_ROUTE_OPERATIONS = frozenset({"ListObjectsV2", "PutObject", "CopyObject", "GetObject", "HeadObject"})


def _text(value: object) -> str:
    """A header value as botocore holds it (str, or bytes once signed) as text."""
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return value if isinstance(value, str) else ""


def md5_from_etag(etag: str | None) -> str | None:
    """The MD5 an ETag stands for, if it is a plain (single-part) one."""
    if not etag:
        return None
    etag = etag.strip('"').lower()
    return etag if _MD5_ETAG.fullmatch(etag) else None


def _redact_url(url: str | None) -> str:
    """An endpoint URL without any user:password@ part."""
    if not url:
        return "the default AWS endpoint"
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class S3Store:
    """S3 (or any S3-compatible server) as a Store. Thread-safe; share one per process."""

    def __init__(  # noqa: PLR0913 (keyword-only client settings)
        self,
        client: S3Client,
        *,
        max_in_flight: int = 64,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        on_request: RequestHook | None = None,
        multipart_threshold: int = MULTIPART_COPY_THRESHOLD,
        part_size: int = DEFAULT_PART_SIZE,
        throttle_deadline: float = DEFAULT_THROTTLE_DEADLINE_S,
        throttle_backoff: float = 0.5,
        unreachable_deadline: float = DEFAULT_UNREACHABLE_DEADLINE_S,
        secrets: Sequence[str] = (),
        endpoint_url: str | None = None,
        fast_path: bool = True,
    ) -> None:
        if multipart_threshold < 1 or multipart_threshold > MULTIPART_COPY_THRESHOLD:
            raise ValueError(f"multipart_threshold must be between 1 and {MULTIPART_COPY_THRESHOLD}")
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {MIN_PART_SIZE} (S3's minimum part size)")
        self._client = client
        self._on_request = on_request
        self.max_attempts = max(1, max_attempts)
        #: The AIMD window of requests in flight (throttling), shared by every thread.
        self.governor = Governor(max_in_flight)
        self.multipart_threshold = multipart_threshold
        self.part_size = part_size
        self.throttle_deadline = throttle_deadline
        self.throttle_backoff = throttle_backoff
        self.unreachable_deadline = unreachable_deadline
        self._secrets = [s for s in secrets if s and len(s) >= 4]
        self._endpoint = _redact_url(endpoint_url)
        self._target = threading.local()
        self._fast = FastPath.for_client(client, on_request=on_request) if fast_path else None
        events = client.meta.events
        events.register("before-parameter-build.s3", self._remember_target)
        events.register("before-send.s3", self._report_send)

    @classmethod
    def from_settings(  # noqa: PLR0913 (keyword-only client settings)
        cls,
        settings: Storage,
        *,
        max_in_flight: int,
        credentials: Credentials | None = None,
        on_request: RequestHook | None = None,
        multipart_threshold: int | None = None,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        throttle_deadline: float = DEFAULT_THROTTLE_DEADLINE_S,
        throttle_backoff: float = 0.5,
        unreachable_deadline: float = DEFAULT_UNREACHABLE_DEADLINE_S,
        connect_timeout: float = 10.0,
        read_timeout: float = 120.0,
        fast_path: bool = True,
    ) -> S3Store:
        """A store with its own client configured from the release's ``storage`` settings."""
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        if credentials is not None:
            session = boto3.session.Session(
                aws_access_key_id=credentials.access_key_id,
                aws_secret_access_key=credentials.secret_access_key,
                aws_session_token=credentials.session_token,
                region_name=settings.region,
            )
            secrets = [
                credentials.secret_access_key,
                credentials.session_token or "",
                credentials.access_key_id,
            ]
        else:
            # The standard chain: environment, web identity (a ServiceAccount token), profile, IMDS.
            session = boto3.session.Session(region_name=settings.region)
            secrets = []
        config = Config(
            region_name=settings.region,
            max_pool_connections=max_in_flight + PART_COPY_CONCURRENCY,
            # One attempt: the store retries (throttling through its governor, see above).
            retries={"mode": "standard", "total_max_attempts": 1},
            s3={"addressing_style": settings.addressing_style},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            tcp_keepalive=True,
            # No CRC32 of every body by default: MD5/ETag is our integrity check, and hashing
            # every request body twice is CPU a Python copier cannot spare.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        client = session.client("s3", endpoint_url=settings.endpoint_url, config=config)
        threshold = multipart_threshold or MULTIPART_COPY_THRESHOLD
        return cls(
            client,
            max_in_flight=max_in_flight + PART_COPY_CONCURRENCY,
            max_attempts=max_attempts,
            on_request=on_request,
            multipart_threshold=threshold,
            # Parts as big as the threshold (within S3's bounds): a lowered threshold (tests)
            # gives several small parts, the default gives 512 MiB parts.
            part_size=min(DEFAULT_PART_SIZE, max(MIN_PART_SIZE, threshold)),
            throttle_deadline=throttle_deadline,
            throttle_backoff=throttle_backoff,
            unreachable_deadline=unreachable_deadline,
            secrets=secrets,
            endpoint_url=settings.endpoint_url,
            fast_path=fast_path,
        )

    @property
    def fast_path(self) -> FastPath | None:
        """The lean request path (None when turned off or when it cannot mirror the client)."""
        return self._fast

    @property
    def client(self) -> S3Client:
        """The shared boto3 client (for callers that need an operation the Store does not offer)."""
        return self._client

    # -- request events ------------------------------------------------------------------------

    def _remember_target(self, params: dict[str, Any], **_: Any) -> None:
        key = params.get("Key")
        if key is None:
            key = params.get("Prefix", "")
        self._target.value = (str(params.get("Bucket", "")), str(key))

    def _report_send(self, event_name: str, request: Any = None, **_: Any) -> None:
        bucket, key = getattr(self._target, "value", ("", ""))
        operation = event_name.rsplit(".", 1)[-1]
        fast = self._fast
        if fast is not None and bucket and not fast.knows(bucket) and request is not None:
            if operation in _ROUTE_OPERATIONS:
                fast.observe(
                    bucket,
                    None if operation == "ListObjectsV2" else key,
                    str(request.url),
                    _text(request.headers.get("Authorization")),
                )
            else:
                fast.forget()
        if self._on_request is None:
            return
        if operation == "DeleteObjects":
            key = ""
        self._on_request(RequestEvent(operation, bucket, key))
        # Returning None lets botocore send the request.

    # -- calling S3 ----------------------------------------------------------------------------

    def _mask(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _error(self, exc: Exception, what: str) -> StorageError:
        """A StorageError for ``exc`` naming what we were doing; never the credentials."""
        if isinstance(exc, ClientError):
            err = exc.response.get("Error", {})
            code = str(err.get("Code") or "")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            message = str(err.get("Message") or "").strip()
            if code in _NOT_FOUND_CODES or (status == 404 and not code):
                return NotFound(self._mask(f"{what}: not found ({code or 404})"))
            if code in _ACCESS_CODES:
                return AccessDenied(
                    self._mask(
                        f"{what}: access denied by {self._endpoint} ({code}); check the credentials "
                        "(storage.secretRef or the pod's identity) and their permissions"
                    )
                )
            detail = f": {message}" if message else ""
            return StorageError(self._mask(f"{what}: {code or 'error'} (HTTP {status}){detail}"))
        if isinstance(exc, NoCredentialsError):
            return StorageError(
                f"{what}: no S3 credentials found (give storage.secretRef, AWS_* variables or a pod identity)"
            )
        if isinstance(exc, ConnectionError | ReadTimeoutError):
            return StorageError(self._mask(f"{what}: cannot reach {self._endpoint} ({type(exc).__name__})"))
        if isinstance(exc, BotoCoreError):
            return StorageError(self._mask(f"{what}: {type(exc).__name__}: {exc}"))
        return StorageError(self._mask(f"{what}: {type(exc).__name__}"))

    def _call(
        self, what: str, fn: Callable[..., T], *, fast: Callable[[], T | None] | None = None, **kwargs: Any
    ) -> T:
        """Send one request within the governor's window: through ``fast`` first (the fast path;
        None means "send it through boto3"), else ``fn(**kwargs)``. SlowDown: the window shrinks
        and the request is sent again until ``throttle_deadline``; an unreachable server or a
        transient 5xx: backoff and again. Errors are translated."""
        throttled_since: float | None = None
        unreachable_since: float | None = None
        transient = 0
        attempt = 0
        while True:
            started = self.governor.acquire()
            ok = throttled = False
            failure: Exception | None = None
            try:
                if fast is not None:
                    try:
                        answer = fast()
                    except SlowDown:
                        throttled = True
                    else:
                        if answer is not None:
                            ok = True
                            return answer
                if not throttled:
                    result = fn(**kwargs)
                    ok = True
                    if self._fast is not None:
                        self._fast.confirm()
                    return result
            except ClientError as exc:
                if self._fast is not None:
                    self._fast.forget()
                code = str(exc.response.get("Error", {}).get("Code") or "")
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                if code in THROTTLING_CODES or (not code and status in (429, 503)):
                    throttled = True
                elif (code in _TRANSIENT_CODES or status in _TRANSIENT_STATUS) and (
                    transient + 1 < self.max_attempts
                ):
                    transient += 1
                    failure = exc
                else:
                    raise self._error(exc, what) from None
            except (ConnectionError, HTTPClientError) as exc:
                # unreachable (refused, dropped, timed out): like throttling, it slows the
                # release down until a deadline
                if self._fast is not None:
                    self._fast.forget()
                now = time.monotonic()
                if unreachable_since is None:
                    unreachable_since = now
                if now - unreachable_since >= self.unreachable_deadline:
                    raise self._error(exc, what) from None
                failure = exc
            except BotoCoreError as exc:
                if self._fast is not None:
                    self._fast.forget()
                raise self._error(exc, what) from None
            finally:
                self.governor.release(started, ok=ok, throttled=throttled)
            if throttled:
                now = time.monotonic()
                if throttled_since is None:
                    throttled_since = now
                if now - throttled_since >= self.throttle_deadline:
                    raise StorageError(
                        f"{what}: {self._endpoint} kept throttling (SlowDown: slow down) for "
                        f"{self.throttle_deadline:.0f} s despite backoff; lower worker.objectsInFlight "
                        "or spread the sites over more prefixes"
                    )
                continue  # the governor paces the next attempt
            assert failure is not None
            attempt += 1
            delay = random.uniform(0, min(_THROTTLE_BACKOFF_MAX_S, self.throttle_backoff * 2**attempt))
            if unreachable_since is not None and failure is not None:
                delay = min(delay, max(0.0, unreachable_since + self.unreachable_deadline - time.monotonic()))
            time.sleep(delay)

    @staticmethod
    def _check(loc: Location) -> None:
        if loc.scheme != "s3" or not loc.bucket:
            raise StorageError(f"the S3 store cannot reach {loc.url}")

    # -- Store ---------------------------------------------------------------------------------

    def list(self, loc: Location) -> Iterator[ObjectInfo]:
        self._check(loc)
        cut = len(loc.prefix)
        token: str | None = None
        while True:
            page = self._list_page(loc, token)
            for whole, size, etag in page.objects:
                key = whole[cut:]
                if not key or key.endswith("/"):
                    continue  # the prefix itself, or a "folder" marker
                yield ObjectInfo(key=key, size=size, md5=md5_from_etag(etag))
            token = page.token
            if not page.truncated or not token:
                return

    def _list_page(self, loc: Location, token: str | None) -> Page:
        fast_path = self._fast

        def fast() -> Page | None:
            return None if fast_path is None else fast_path.list_page(loc.bucket, loc.prefix, token)

        kwargs: dict[str, Any] = {"Bucket": loc.bucket, "Prefix": loc.prefix}
        if token:
            kwargs["ContinuationToken"] = token
        page: Any = self._call(f"listing {loc.url}", self._client.list_objects_v2, fast=fast, **kwargs)
        if isinstance(page, Page):
            return page
        return Page(
            [(o.get("Key", ""), int(o.get("Size", 0)), o.get("ETag")) for o in page.get("Contents", [])],
            bool(page.get("IsTruncated")),
            page.get("NextContinuationToken"),
        )

    def _read(self, what: str, **kwargs: Any) -> bytes:
        for attempt in range(_STREAM_READ_ATTEMPTS):
            response = self._call(what, self._client.get_object, **kwargs)
            body = response["Body"]
            try:
                data: bytes = body.read()
                return data
            except (IncompleteReadError, ResponseStreamingError, ReadTimeoutError, ConnectionError) as exc:
                if attempt == _STREAM_READ_ATTEMPTS - 1:
                    raise self._error(exc, what) from None
            finally:
                body.close()
        raise AssertionError("unreachable")

    def get(self, loc: Location, key: str) -> bytes:
        self._check(loc)
        check_key(key, loc.prefix)
        return self._read(f"reading {loc.url}{key}", Bucket=loc.bucket, Key=loc.prefix + key)

    def get_range(self, loc: Location, key: str, start: int, end: int) -> bytes:
        if start < 0 or end < start:
            raise ValueError(f"bad byte range {start}-{end}")
        self._check(loc)
        check_key(key, loc.prefix)
        return self._read(
            f"reading bytes {start}-{end} of {loc.url}{key}",
            Bucket=loc.bucket,
            Key=loc.prefix + key,
            Range=f"bytes={start}-{end}",
        )

    def put(
        self,
        loc: Location,
        key: str,
        body: bytes,
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        self._check(loc)
        check_key(key, loc.prefix)
        meta = check_metadata(metadata)
        content_type = content_type or guess_content_type(key)
        encoding = guess_content_encoding(key)
        fast_path = self._fast

        def fast() -> Any:
            if fast_path is None:
                return None
            done = fast_path.put(
                loc.bucket,
                loc.prefix + key,
                body,
                content_type=content_type,
                metadata=meta,
                encoding=encoding,
            )
            return True if done else None

        self._call(
            f"writing {loc.url}{key}",
            self._client.put_object,
            fast=fast,
            Bucket=loc.bucket,
            Key=loc.prefix + key,
            Body=body,
            ContentType=content_type,
            Metadata=meta,
            **({"ContentEncoding": encoding} if encoding else {}),
        )

    def copy(
        self,
        src: Location,
        src_key: str,
        dst: Location,
        dst_key: str,
        *,
        size: int,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        self._check(src)
        self._check(dst)
        check_key(src_key, src.prefix)
        check_key(dst_key, dst.prefix)
        meta = None if metadata is None else check_metadata(metadata)
        what = f"copying {src.url}{src_key} to {dst.url}{dst_key}"
        if size >= self.multipart_threshold:
            self._multipart_copy(
                what,
                src=src,
                src_key=src_key,
                dst=dst,
                dst_key=dst_key,
                size=size,
                content_type=content_type,
                metadata=meta,
            )
            return
        kwargs: dict[str, Any] = {
            "Bucket": dst.bucket,
            "Key": dst.prefix + dst_key,
            "CopySource": {"Bucket": src.bucket, "Key": src.prefix + src_key},
        }
        if content_type is None and meta is None:
            kwargs["MetadataDirective"] = "COPY"
        else:
            kwargs["MetadataDirective"] = "REPLACE"
            kwargs["ContentType"] = content_type or guess_content_type(dst_key)
            kwargs["Metadata"] = meta or {}
            if encoding := guess_content_encoding(dst_key):
                kwargs["ContentEncoding"] = encoding
        fast_path = self._fast

        def fast() -> Any:
            if fast_path is None:
                return None
            done = fast_path.copy(
                src_bucket=src.bucket,
                src_key=src.prefix + src_key,
                bucket=dst.bucket,
                key=dst.prefix + dst_key,
                content_type=kwargs.get("ContentType"),
                metadata=kwargs.get("Metadata"),
                encoding=kwargs.get("ContentEncoding"),
            )
            return True if done else None

        self._call(what, self._client.copy_object, fast=fast, **kwargs)

    def _multipart_copy(
        self,
        what: str,
        *,
        src: Location,
        src_key: str,
        dst: Location,
        dst_key: str,
        size: int,
        content_type: str | None,
        metadata: dict[str, str] | None,
    ) -> None:
        # The source's real size and ETag: every part is copied only if the source is still the
        # same object, so a source replaced mid-copy fails the copy instead of mixing two versions.
        head = self._call(what, self._client.head_object, Bucket=src.bucket, Key=src.prefix + src_key)
        size = int(head.get("ContentLength", size))
        etag = head.get("ETag", "")
        if content_type is None and metadata is None:
            content_type = head.get("ContentType") or guess_content_type(src_key)
            metadata = dict(head.get("Metadata", {}))
        part_size = max(self.part_size, -(-size // MAX_PARTS))
        ranges = [(start, min(start + part_size, size) - 1) for start in range(0, max(size, 1), part_size)]
        bucket, key = dst.bucket, dst.prefix + dst_key
        upload = self._call(
            what,
            self._client.create_multipart_upload,
            Bucket=bucket,
            Key=key,
            ContentType=content_type or guess_content_type(dst_key),
            Metadata=metadata or {},
        )
        upload_id = upload["UploadId"]
        source = {"Bucket": src.bucket, "Key": src.prefix + src_key}

        def copy_part(number: int, first: int, last: int) -> CompletedPartTypeDef:
            result = self._call(
                f"{what} (part {number} of {len(ranges)})",
                self._client.upload_part_copy,
                Bucket=bucket,
                Key=key,
                UploadId=upload_id,
                PartNumber=number,
                CopySource=source,
                CopySourceRange=f"bytes={first}-{last}",
                CopySourceIfMatch=etag,
            )
            return {"PartNumber": number, "ETag": result["CopyPartResult"]["ETag"]}

        try:
            with ThreadPoolExecutor(min(PART_COPY_CONCURRENCY, len(ranges))) as pool:
                futures = [pool.submit(copy_part, n, a, b) for n, (a, b) in enumerate(ranges, start=1)]
                parts = [f.result() for f in futures]
            self._call(
                what,
                self._client.complete_multipart_upload,
                Bucket=bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except BaseException:
            # Best effort: a bucket lifecycle rule should clean up abandoned uploads anyway.
            with contextlib.suppress(ClientError, BotoCoreError):
                self._client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
            raise

    def delete(self, loc: Location, keys: Sequence[str]) -> None:
        self._check(loc)
        full = [loc.prefix + check_key(k, loc.prefix) for k in keys]
        for i in range(0, len(full), DELETE_BATCH):
            batch: list[ObjectIdentifierTypeDef] = [{"Key": k} for k in full[i : i + DELETE_BATCH]]
            response = self._call(
                f"deleting {len(batch)} objects under {loc.url}",
                self._client.delete_objects,
                Bucket=loc.bucket,
                Delete={"Objects": batch, "Quiet": True},
            )
            errors = [e for e in response.get("Errors", []) if e.get("Code") != "NoSuchKey"]
            if errors:
                sample = ", ".join(f"{e.get('Key', '?')} ({e.get('Code', '?')})" for e in errors[:5])
                raise StorageError(f"deleting under {loc.url}: {len(errors)} objects not deleted: {sample}")

    def head(self, loc: Location, key: str) -> ObjectInfo:
        self._check(loc)
        check_key(key, loc.prefix)
        response = self._call(
            f"reading {loc.url}{key}", self._client.head_object, Bucket=loc.bucket, Key=loc.prefix + key
        )
        return ObjectInfo(
            key=key,
            size=int(response.get("ContentLength", 0)),
            md5=md5_from_etag(response.get("ETag")),
            metadata=dict(response.get("Metadata", {})),
            content_type=response.get("ContentType"),
            content_encoding=response.get("ContentEncoding"),
        )
