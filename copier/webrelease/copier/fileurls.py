"""Relative ``file://`` URLs in a release file.

``file://relative/path`` in a release file means a path relative to the release file's folder
(``..`` allowed); :func:`resolve_file_urls` rewrites such URLs to absolute ``file:///...`` once,
when the release file is loaded, so everything after sees absolute locations only.
"""

from __future__ import annotations

import posixpath
from pathlib import Path

from webrelease.copier.spec import WebReleaseSpec


def resolve_file_url(url: str, base: Path) -> str:
    """``url`` with a relative ``file://`` path made absolute against ``base``; other URLs unchanged.

    Only the fixed part (before the first ``{``) is normalised, so a template keeps its placeholders.
    """
    if not url.startswith("file://") or url.startswith(("file:///", "file://localhost/")):
        return url
    rest = url[len("file://") :]
    cut = rest.find("{")
    fixed, tail = (rest, "") if cut < 0 else (rest[:cut], rest[cut:])
    trailing = fixed.endswith("/") or not fixed
    absolute = posixpath.normpath(posixpath.join(str(base.resolve()), fixed))
    if trailing and not absolute.endswith("/"):
        absolute += "/"
    return "file://" + absolute + tail


def resolve_file_urls(spec: WebReleaseSpec, base: Path) -> WebReleaseSpec:
    """A copy of ``spec`` whose relative ``file://`` URLs are absolute (see :func:`resolve_file_url`)."""
    data = spec.model_dump(by_alias=True, exclude_unset=True)
    for section in ("source", "target", "customers", "overrides", "reports"):
        part = data.get(section)
        if isinstance(part, dict) and isinstance(part.get("url"), str):
            part["url"] = resolve_file_url(part["url"], base)
    return WebReleaseSpec.model_validate(data)
