"""Glob patterns over object keys (``templates``, ``entrypoints``).

A pattern matches a whole key relative to the build root, ``/``-separated:

- ``*`` matches any run of characters within one path segment (not ``/``);
- ``**`` as a whole segment matches zero or more segments (``**/*.html`` matches ``a.html`` and
  ``x/y/a.html``; ``assets/**`` matches everything under ``assets/``);
- ``?`` matches one character other than ``/``; ``[abc]`` / ``[!abc]`` a character class.

Matching is case-sensitive, like S3 keys. A pattern without a ``/`` matches only at the root:
``index.html`` is the root page, ``**/index.html`` every folder's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache


class GlobError(ValueError):
    """A pattern that cannot be compiled (an unclosed ``[``, for example)."""


def _segment_regex(seg: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(seg):
        c = seg[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = seg.find("]", i + 2 if i + 1 < len(seg) and seg[i + 1] in "!^" else i + 1)
            if j < 0:
                raise GlobError(f"unclosed '[' in {seg!r}")
            body = seg[i + 1 : j]
            neg = body[:1] in ("!", "^")
            if neg:
                body = body[1:]
            body = body.replace("\\", "\\\\").replace("]", "\\]")
            out.append(f"[^/{body}]" if neg else f"(?!/)[{body}]")
            i = j
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


@lru_cache(maxsize=512)
def compile_glob(pattern: str) -> re.Pattern[str]:
    """The regular expression equivalent to ``pattern`` (anchored at both ends)."""
    if not pattern or pattern.startswith("/"):
        raise GlobError(f"pattern {pattern!r} must be a non-empty path relative to the build root")
    parts: list[str] = []
    segs = pattern.split("/")
    for n, seg in enumerate(segs):
        last = n == len(segs) - 1
        if seg == "**":
            # zero or more whole segments, each followed by '/' unless this is the last segment
            parts.append(".*" if last else "(?:[^/]+/)*")
        else:
            parts.append(_segment_regex(seg) + ("" if last else "/"))
    return re.compile("".join(parts), re.DOTALL)


def check_globs(patterns: Iterable[str]) -> None:
    """Raise GlobError for the first pattern that does not compile."""
    for p in patterns:
        compile_glob(p)


class GlobSet:
    """A set of patterns, matched together."""

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns = tuple(patterns)
        self._regexes = [compile_glob(p) for p in self.patterns]

    def __call__(self, key: str) -> bool:
        return any(r.fullmatch(key) for r in self._regexes)

    def __bool__(self) -> bool:
        return bool(self.patterns)
