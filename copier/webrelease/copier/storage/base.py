"""One small interface over object storage: S3 (``s3://``) and local folders (``file://``).

Keys are always relative to a *location* (a bucket plus prefix, or a folder), use ``/`` as the
separator and never start with ``/``. ``md5`` is the hex MD5 of the object's bytes when the store
knows it cheaply (a single-part S3 ETag, or computed for local files) and ``None`` otherwise;
``sha256`` is the webrelease content hash stored in object metadata when we wrote the object.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol


class StorageError(Exception):
    """A storage request failed for good (after retries); the message never contains credentials."""


class NotFound(StorageError):
    """The object or bucket does not exist."""


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int
    md5: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)


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
        return Location(self.scheme, self.bucket, self.prefix + key.strip("/") + "/")


class Store(Protocol):
    """What the copier needs from object storage. Implementations are thread-safe."""

    def list(self, loc: Location) -> Iterator[ObjectInfo]:
        """Every object under ``loc`` (recursively), keys relative to ``loc.prefix``."""
        ...

    def get(self, loc: Location, key: str) -> bytes: ...

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
    ) -> None: ...

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
        """Server-side copy (multipart copy above 5 GiB for S3)."""
        ...

    def delete(self, loc: Location, keys: list[str]) -> None:
        """Delete ``keys`` (batched; missing keys are not an error)."""
        ...

    def head(self, loc: Location, key: str) -> ObjectInfo: ...
