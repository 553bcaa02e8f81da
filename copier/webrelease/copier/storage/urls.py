"""Location URLs: ``s3://bucket/prefix/`` and ``file:///absolute/folder/``.

A location's prefix always ends with ``/`` (or is empty: a whole bucket), so that
``prefix + key`` is the object's full key and ``s3://b/site`` never matches ``s3://b/site2/...``.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from urllib.parse import unquote

from webrelease.copier.storage.base import InvalidUrl, Location

# S3 bucket naming rules (lower case, digits, dots, hyphens; 3 to 63 characters).
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_BAD_SEGMENTS = frozenset({".", ".."})


def parse_url(url: str, *, base: Path | None = None) -> Location:
    """Parse a location URL.

    - ``s3://bucket/some/prefix`` -> ``Location("s3", "bucket", "some/prefix/")``; ``s3://bucket``
      or ``s3://bucket/`` is the whole bucket (prefix ``""``).
    - ``file:///abs/folder`` -> ``Location("file", "", "/abs/folder/")``; percent escapes are
      decoded. A relative ``file://some/folder`` is resolved against ``base`` (e.g. the folder of
      the release file) and refused when no ``base`` is given.

    Raises InvalidUrl naming the URL. Segments ``.``/``..``, empty segments (``//``) and
    backslashes are refused rather than normalised, so that a URL means exactly one place.
    """
    if not isinstance(url, str):
        raise InvalidUrl(f"not a URL: {url!r}")
    if url.startswith("s3://"):
        return _parse_s3(url)
    if url.startswith("file://"):
        return _parse_file(url, base)
    raise InvalidUrl(f"{url!r}: expected s3://bucket/prefix/ or file:///absolute/path/")


def _check_segments(url: str, path: str) -> None:
    if "\\" in path or "\x00" in path:
        raise InvalidUrl(f"{url!r}: backslash or NUL in path")
    inner = path.strip("/")
    if not inner:
        return
    segments = inner.split("/")
    if any(seg in _BAD_SEGMENTS for seg in segments):
        raise InvalidUrl(f"{url!r}: '.' and '..' are not allowed in a location")
    if any(seg == "" for seg in segments):
        raise InvalidUrl(f"{url!r}: empty path segment ('//')")


def _parse_s3(url: str) -> Location:
    rest = url[len("s3://") :]
    bucket, _, prefix = rest.partition("/")
    if not _BUCKET_RE.fullmatch(bucket) or ".." in bucket:
        raise InvalidUrl(f"{url!r}: {bucket!r} is not a valid S3 bucket name")
    if "?" in prefix or "#" in prefix:
        raise InvalidUrl(f"{url!r}: query strings and fragments are not part of a location")
    _check_segments(url, prefix)
    prefix = prefix.strip("/")
    return Location("s3", bucket, prefix + "/" if prefix else "")


def _parse_file(url: str, base: Path | None) -> Location:
    rest = url[len("file://") :]
    if rest.startswith("localhost/"):
        rest = rest[len("localhost") :]
    path = unquote(rest)
    if not path:
        raise InvalidUrl(f"{url!r}: empty path")
    _check_segments(url, path)
    if not path.startswith("/"):
        if base is None:
            raise InvalidUrl(f"{url!r}: a file:// location must be absolute (file:///path/to/folder/)")
        path = posixpath.join(str(base.resolve()), path)
    path = "/" + posixpath.normpath(path).lstrip("/")
    return Location("file", "", path.rstrip("/") + "/")


def object_url(url: str) -> tuple[Location, str]:
    """Split a URL naming one object (``s3://b/lists/customers.jsonl``) into its folder and key."""
    slash = url.rfind("/")
    key = url[slash + 1 :]
    if not key or slash < url.find("://") + 3:
        raise InvalidUrl(f"{url!r} must name an object (a file), not a folder")
    return parse_url(url[: slash + 1]), key
