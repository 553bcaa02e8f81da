"""``python -m bench.leanshard shard ...``: ``webrelease shard`` with the PROTOTYPE lean client
(bench/leanclient.py) doing its CopyObject and PutObject requests instead of botocore.

Everything else is webrelease as it is (listing, planning, rendering, reports, the thread pool);
only :meth:`S3Store.copy` (below the multipart threshold) and :meth:`S3Store.put` are replaced, in
this process only. Credentials come from the environment (``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY``), as the shard's boto3 client gets them. For measurement only.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from bench.leanclient import LeanS3, LeanS3Error
from webrelease.copier.storage import Location, StorageError, guess_content_type
from webrelease.copier.storage.base import check_metadata
from webrelease.copier.storage.s3 import S3Store

_LEAN: dict[int, LeanS3] = {}
_original_copy = S3Store.copy


def _lean_for(store: S3Store) -> LeanS3:
    lean = _LEAN.get(id(store))
    if lean is None:
        meta = store.client.meta
        lean = LeanS3(
            meta.endpoint_url,
            os.environ["AWS_ACCESS_KEY_ID"],
            os.environ["AWS_SECRET_ACCESS_KEY"],
            meta.region_name,
        )
        _LEAN[id(store)] = lean
    return lean


def lean_copy(
    self: S3Store,
    src: Location,
    src_key: str,
    dst: Location,
    dst_key: str,
    *,
    size: int,
    content_type: str | None = None,
    metadata: Mapping[str, str] | None = None,
) -> None:
    if size >= self.multipart_threshold:
        _original_copy(
            self, src, src_key, dst, dst_key, size=size, content_type=content_type, metadata=metadata
        )
        return
    try:
        _lean_for(self).copy(
            (src.bucket, src.prefix + src_key),
            dst.bucket,
            dst.prefix + dst_key,
            content_type or guess_content_type(dst_key),
            check_metadata(metadata),
        )
    except (LeanS3Error, OSError) as exc:
        raise StorageError(f"copying {src.url}{src_key} to {dst.url}{dst_key}: {exc}") from None


def lean_put(
    self: S3Store,
    loc: Location,
    key: str,
    body: bytes,
    *,
    content_type: str | None = None,
    metadata: Mapping[str, str] | None = None,
) -> None:
    try:
        _lean_for(self).put(
            loc.bucket,
            loc.prefix + key,
            body,
            content_type or guess_content_type(key),
            check_metadata(metadata),
        )
    except (LeanS3Error, OSError) as exc:
        raise StorageError(f"writing {loc.url}{key}: {exc}") from None


def main(argv: Sequence[str]) -> int:
    patched: Any = S3Store
    patched.copy = lean_copy
    patched.put = lean_put
    from webrelease.cli import main as webrelease_main

    return webrelease_main(list(argv))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
