"""An in-memory ``Store`` for the fast reconcile tier: every bucket in one dict, and an outage switch.

It keeps the ``Store`` contract (``webrelease.copier.storage.base.Store``): keys relative to the
location, lexicographic listing, NotFound for a missing object, atomic puts. ``down = True`` makes
every call fail with StorageError, as an unreachable S3 server does once the client has given up;
``down_buckets`` does that for some buckets only.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from webrelease.copier.storage import Location, NotFound, ObjectInfo, StorageError, Store


@dataclass
class _Object:
    body: bytes
    content_type: str | None
    metadata: dict[str, str] = field(default_factory=dict)


class MemoryStore:
    """Objects by ``(scheme, bucket, full key)``; thread-safe (the operator reads from threads)."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], _Object] = {}
        self.down = False
        self.down_buckets: set[str] = set()
        self.calls = 0
        self._lock = threading.Lock()

    def _check(self, loc: Location) -> None:
        self.calls += 1
        if self.down or loc.bucket in self.down_buckets:
            raise StorageError(f"{loc.url}: storage is unreachable (the test's outage)")

    @staticmethod
    def _id(loc: Location, key: str) -> tuple[str, str, str]:
        return (loc.scheme, loc.bucket, loc.prefix + key)

    def list(self, loc: Location) -> Iterator[ObjectInfo]:
        self._check(loc)
        with self._lock:
            found = sorted(
                (k[2][len(loc.prefix) :], o)
                for k, o in self.objects.items()
                if k[:2] == (loc.scheme, loc.bucket) and k[2].startswith(loc.prefix)
            )
        for key, obj in found:
            yield ObjectInfo(key, len(obj.body), hashlib.md5(obj.body, usedforsecurity=False).hexdigest())

    def _object(self, loc: Location, key: str) -> _Object:
        self._check(loc)
        with self._lock:
            obj = self.objects.get(self._id(loc, key))
        if obj is None:
            raise NotFound(f"{loc.url}{key} does not exist")
        return obj

    def get(self, loc: Location, key: str) -> bytes:
        return self._object(loc, key).body

    def get_range(self, loc: Location, key: str, start: int, end: int) -> bytes:
        return self._object(loc, key).body[start : end + 1]

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
        with self._lock:
            self.objects[self._id(loc, key)] = _Object(bytes(body), content_type, dict(metadata or {}))

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
        source = self._object(src, src_key)
        self._check(dst)
        keep = content_type is None and metadata is None
        with self._lock:
            self.objects[self._id(dst, dst_key)] = _Object(
                source.body,
                source.content_type if keep else content_type,
                dict(source.metadata if keep else metadata or {}),
            )

    def delete(self, loc: Location, keys: Sequence[str]) -> None:
        self._check(loc)
        with self._lock:
            for key in keys:
                self.objects.pop(self._id(loc, key), None)

    def head(self, loc: Location, key: str) -> ObjectInfo:
        obj = self._object(loc, key)
        md5 = hashlib.md5(obj.body, usedforsecurity=False).hexdigest()
        return ObjectInfo(key, len(obj.body), md5, dict(obj.metadata), obj.content_type)

    def keys(self, url_prefix: str) -> Sequence[str]:
        """Every object's URL that starts with ``url_prefix`` (``s3://bucket/some/``), sorted."""
        urls = [f"{s}://{b}/{k}" if s == "s3" else f"file://{k}" for s, b, k in self.objects]
        return sorted(u for u in urls if u.startswith(url_prefix))


def _is_a_store(store: MemoryStore) -> Store:
    return store  # mypy checks that MemoryStore keeps the Store protocol
