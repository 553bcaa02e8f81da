"""One small interface over object storage: S3 (``s3://``) and local folders (``file://``).

Keys are always relative to a *location* (a bucket plus prefix, or a folder), use ``/`` as the
separator and never start with ``/``. ``md5`` is the hex MD5 of the object's bytes when the store
knows it cheaply (a single-part S3 ETag, or computed for local files) and ``None`` otherwise;
``sha256`` is the webrelease content hash stored in object metadata when we wrote the object.
"""

from __future__ import annotations

import mimetypes
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

#: S3's limit on the length of a whole key, in UTF-8 bytes.
MAX_KEY_BYTES = 1024
#: DeleteObjects takes at most this many keys per request.
DELETE_BATCH = 1000


class StorageError(Exception):
    """A storage request failed for good (after retries); the message never contains credentials."""


class NotFound(StorageError):
    """The object or bucket does not exist."""


class AccessDenied(StorageError):
    """The credentials were refused (wrong keys, or no permission): bad input, no retry fixes it."""


class UnusableFile(StorageError):
    """A local file that cannot be an object: a FIFO, socket or device, a symlink leading out of
    its folder, a broken symlink or a symlink loop. The message names it."""


class InvalidKey(StorageError, ValueError):
    """A key that could leave its location (``..``, absolute, backslash, empty segment...)."""


class InvalidUrl(StorageError, ValueError):
    """A location URL that is not ``s3://bucket/prefix/`` or ``file:///absolute/path/``."""


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """One object. ``list()`` fills ``key``, ``size`` and ``md5`` only (S3 listings carry no user
    metadata nor content type); ``head()`` fills every field."""

    key: str
    size: int
    md5: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    content_type: str | None = None
    content_encoding: str | None = None


@dataclass(frozen=True, slots=True)
class Credentials:
    """Explicit S3 credentials (from a Secret). Never printed: the secret fields are left out of repr."""

    access_key_id: str = field(repr=False)
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)


class RequestEvent(NamedTuple):
    """One request actually sent on the wire (each retry is one more).

    ``operation`` is the S3 API name (``CopyObject``, ``PutObject``, ``ListObjectsV2``,
    ``DeleteObjects``, ``HeadObject``, ``GetObject``, and for multipart copies
    ``CreateMultipartUpload``, ``UploadPartCopy``, ``CompleteMultipartUpload``,
    ``AbortMultipartUpload``); the local backend emits the same names for the equivalent
    operations. ``key`` is the whole key as the server sees it, i.e. ``location.prefix + key``
    (for ``file://`` the absolute path); for ``ListObjectsV2`` it is the listed prefix and for
    ``DeleteObjects`` it is empty. ``bucket`` is empty for ``file://``.
    """

    operation: str
    bucket: str
    key: str


#: A callback told of every request sent; called from the thread that sends it, so it must be thread-safe.
RequestHook = Callable[[RequestEvent], None]

DEFAULT_CONTENT_TYPE = "application/octet-stream"
# Python's built-in table only (never the machine's /etc/mime.types: same answer everywhere),
# plus the web types it lacks or gets wrong for a website.
_MIME = mimetypes.MimeTypes()
for _type, _ext in (
    ("text/javascript", ".js"),
    ("text/javascript", ".mjs"),
    ("application/json", ".map"),
    ("application/manifest+json", ".webmanifest"),
    ("application/wasm", ".wasm"),
    ("image/svg+xml", ".svg"),
    ("image/webp", ".webp"),
    ("image/avif", ".avif"),
    ("font/woff", ".woff"),
    ("font/woff2", ".woff2"),
    ("font/ttf", ".ttf"),
    ("font/otf", ".otf"),
    ("text/markdown", ".md"),
    ("text/plain", ".txt"),
):
    _MIME.add_type(_type, _ext)


#: Compressed files (``app.js.gz``) are typed as what their bytes are, the compressed file, never
#: as what is inside: served as ``text/javascript`` without a Content-Encoding a browser would run
#: gzip bytes as a script, and served *with* ``Content-Encoding: gzip`` a download link to
#: ``backup.tar.gz`` would be unpacked by the browser on the way. Brotli has no registered type.
_COMPRESSED_TYPES = {
    "gzip": "application/gzip",
    "bzip2": "application/x-bzip2",
    "xz": "application/x-xz",
    "compress": "application/x-compress",
    "br": DEFAULT_CONTENT_TYPE,
}
#: Extensions whose files are served decoded by the browser (``Content-Encoding``), as Apache's
#: default configuration does: ``.svgz`` is an SVG image stored gzipped, shown as an image.
_ENCODED_EXTENSIONS = {".svgz": ("image/svg+xml", "gzip")}


def _encoded(key: str) -> tuple[str, str] | None:
    dot = key.rfind(".")
    return _ENCODED_EXTENSIONS.get(key[dot:].lower()) if dot >= 0 else None


def guess_content_type(key: str) -> str:
    """The Content-Type a web server should send for ``key``, from its extension."""
    encoded = _encoded(key)
    if encoded is not None:
        return encoded[0]
    if key.lower().endswith(".zst"):
        return "application/zstd"
    guessed, encoding = _MIME.guess_type(key, strict=False)
    if encoding is not None:
        return _COMPRESSED_TYPES.get(encoding, DEFAULT_CONTENT_TYPE)
    return guessed or DEFAULT_CONTENT_TYPE


def guess_content_encoding(key: str) -> str | None:
    """The Content-Encoding to store with ``key`` (``gzip`` for ``.svgz``), or None."""
    encoded = _encoded(key)
    return encoded[1] if encoded is not None else None


_BAD_SEGMENTS = frozenset({"", ".", ".."})
_META_KEY_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,127}$")
_META_VALUE_RE = re.compile(r"^[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?$|^$")
#: S3's limit on user metadata (names plus values, in bytes).
MAX_METADATA_BYTES = 2048


class InvalidMetadata(StorageError, ValueError):
    """User metadata that S3 would reject or alter."""


def check_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    """Return ``metadata`` as a dict if S3 keeps it exactly as given, else raise InvalidMetadata.

    Names are lower case letters, digits and ``-`` (S3 lower-cases names; HTTP proxies drop
    ``_``); values are printable ASCII without surrounding spaces (HTTP headers would alter
    anything else); at most 2 KiB in all.
    """
    if not metadata:
        return {}
    total = 0
    for name, value in metadata.items():
        if not isinstance(name, str) or not _META_KEY_RE.fullmatch(name):
            raise InvalidMetadata(f"metadata name {name!r}: use lower case letters, digits and '-'")
        if not isinstance(value, str) or not _META_VALUE_RE.fullmatch(value):
            raise InvalidMetadata(
                f"metadata {name!r}: the value must be printable ASCII without surrounding spaces"
            )
        total += len(name) + len(value)
    if total > MAX_METADATA_BYTES:
        raise InvalidMetadata(f"metadata is {total} bytes; S3 allows {MAX_METADATA_BYTES}")
    return dict(metadata)


def check_key(key: str, prefix: str = "") -> str:
    """Return ``key`` if it is a safe relative key, else raise InvalidKey.

    Safe: non-empty, ``/``-separated, no leading ``/``, no backslash or NUL, no empty, ``.`` or
    ``..`` segment (so it never leaves its location on any backend), and ``prefix + key`` within
    S3's 1024-byte limit.
    """
    if not isinstance(key, str) or not key:
        raise InvalidKey("empty key")
    if key.startswith("/"):
        raise InvalidKey(f"key {key!r} is absolute; keys are relative to their location")
    if "\\" in key or "\x00" in key:
        raise InvalidKey(f"key {key!r} contains a backslash or NUL")
    if any(seg in _BAD_SEGMENTS for seg in key.split("/")):
        raise InvalidKey(f"key {key!r} has an empty, '.' or '..' segment")
    if len((prefix + key).encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise InvalidKey(f"key {key!r} is longer than {MAX_KEY_BYTES} bytes with its prefix")
    return key


@dataclass(frozen=True, slots=True)
class Location:
    """A parsed URL: ``scheme`` is ``s3`` or ``file``; ``bucket`` is empty for ``file``;
    ``prefix`` ends with ``/`` unless empty (for ``file`` it is the absolute folder path)."""

    scheme: str
    bucket: str
    prefix: str

    @property
    def url(self) -> str:
        if self.scheme == "file":
            return f"file://{self.prefix}"
        return f"s3://{self.bucket}/{self.prefix}"

    def child(self, key: str) -> Location:
        return Location(self.scheme, self.bucket, self.prefix + check_key(key.strip("/")) + "/")


class Store(Protocol):
    """What the copier needs from object storage. Implementations are thread-safe."""

    def list(self, loc: Location) -> Iterator[ObjectInfo]:
        """Every object under ``loc`` (recursively), keys relative to ``loc.prefix``, in
        lexicographic key order. S3 "folder" markers (keys ending in ``/``) are skipped. A
        location with no objects lists nothing; a missing S3 bucket raises NotFound."""
        ...

    def get(self, loc: Location, key: str) -> bytes:
        """The whole object; NotFound if it does not exist."""
        ...

    def get_range(self, loc: Location, key: str, start: int, end: int) -> bytes:
        """Bytes ``start`` to ``end`` inclusive."""
        ...

    def put(
        self,
        loc: Location,
        key: str,
        body: bytes,
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        """Write ``body`` atomically (readers see the old object or the new one, never a mix).
        ``content_type`` defaults to a guess from the key's extension."""
        ...

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
        """Server-side copy (multipart copy above 5 GiB for S3), atomic like ``put``.

        If both ``content_type`` and ``metadata`` are None the source's are kept; otherwise they
        are replaced (``metadata`` None meaning none, ``content_type`` None meaning a guess from
        ``dst_key``). ``size`` is the source's size (from ``list``), used to pick multipart copy."""
        ...

    def delete(self, loc: Location, keys: Sequence[str]) -> None:
        """Delete ``keys`` (batched; missing keys are not an error)."""
        ...

    def head(self, loc: Location, key: str) -> ObjectInfo:
        """Size, md5 (when known), metadata and content type; NotFound if it does not exist."""
        ...


#: The store of a location (``storage.storeset.StoreSet`` is one).
StoreFor = Callable[["Location"], Store]
