"""Object storage for the copier: one small interface (``Store``), two backends.

``parse_url`` turns ``s3://bucket/prefix/`` or ``file:///folder/`` into a ``Location``;
``open_store`` gives the ``Store`` for a scheme. Create one store per scheme per process and
share it between all threads: the S3 store holds one boto3 client and its connection pool.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from webrelease.copier.storage.base import (
    DEFAULT_CONTENT_TYPE,
    DELETE_BATCH,
    AccessDenied,
    Credentials,
    InvalidKey,
    InvalidMetadata,
    InvalidUrl,
    Location,
    NotFound,
    ObjectInfo,
    RequestEvent,
    RequestHook,
    StorageError,
    Store,
    StoreFor,
    UnusableFile,
    check_key,
    check_metadata,
    guess_content_encoding,
    guess_content_type,
)
from webrelease.copier.storage.local import LocalStore, first_link, real_file_url
from webrelease.copier.storage.urls import object_url, parse_url

if TYPE_CHECKING:
    from webrelease.copier.spec import Storage

__all__ = [
    "DEFAULT_CONTENT_TYPE",
    "DELETE_BATCH",
    "AccessDenied",
    "Credentials",
    "InvalidKey",
    "InvalidMetadata",
    "InvalidUrl",
    "LocalStore",
    "Location",
    "NotFound",
    "ObjectInfo",
    "RequestEvent",
    "RequestHook",
    "StorageError",
    "Store",
    "StoreFor",
    "UnusableFile",
    "check_key",
    "check_metadata",
    "first_link",
    "guess_content_encoding",
    "guess_content_type",
    "object_url",
    "open_store",
    "parse_url",
    "real_file_url",
]


def open_store(
    scheme: str,
    settings: Storage,
    *,
    max_in_flight: int,
    credentials: Credentials | None = None,
    on_request: RequestHook | None = None,
    multipart_threshold: int | None = None,
    fast_path: bool = True,
) -> Store:
    """The store for ``scheme`` (``s3`` or ``file``).

    ``max_in_flight`` sizes the S3 connection pool (one connection per request in flight).
    ``credentials`` are explicit S3 keys; without them boto3's standard chain is used
    (environment, web identity / ServiceAccount token, instance profile). ``on_request`` is told
    of every request actually sent, retries included. ``multipart_threshold`` (S3 only) is the
    object size from which copies use UploadPartCopy (default 5 GiB, S3's CopyObject limit).
    ``fast_path`` (S3 only) sends single-part copies, puts and listing pages through the lean
    request path, falling back to boto3 for anything but a success (docs/storage.md).
    """
    if scheme == "file":
        return LocalStore(on_request=on_request)
    if scheme == "s3":
        # boto3 is imported only when S3 is used: a local run starts faster without it.
        from webrelease.copier.storage.s3 import S3Store  # noqa: PLC0415

        return S3Store.from_settings(
            settings,
            max_in_flight=max_in_flight,
            credentials=credentials,
            on_request=on_request,
            multipart_threshold=multipart_threshold,
            fast_path=fast_path,
        )
    raise StorageError(f"unknown storage scheme {scheme!r} (expected 's3' or 'file')")
