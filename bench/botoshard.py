"""``python -m bench.botoshard shard ...``: ``webrelease shard`` with the S3 store's fast path
turned off (every request through boto3, as before storage/fastpath.py), to measure what the
fast path buys. Everything else is webrelease as it is. For measurement only.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Sequence
from typing import Any

from webrelease.copier.storage.s3 import S3Store


def _without_fast_path(from_settings: Callable[..., S3Store]) -> Callable[..., S3Store]:
    @functools.wraps(from_settings)
    def wrapped(*args: Any, **kwargs: Any) -> S3Store:
        kwargs["fast_path"] = False
        return from_settings(*args, **kwargs)

    return wrapped


def main(argv: Sequence[str]) -> int:
    patched: Any = S3Store
    patched.from_settings = _without_fast_path(S3Store.from_settings)
    from webrelease.cli import main as webrelease_main

    return webrelease_main(list(argv))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
