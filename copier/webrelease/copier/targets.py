"""Per-customer URL templates (``s3://sites/{id}/``) and the fixed-prefix rule.

A template is a URL with ``{field}`` placeholders naming fields of the customer record. Only
plain names are allowed (no attribute access, indexing or format specs), and each placeholder's
value must be one path segment (no ``/``, ``\\``, ``.`` or ``..``, no control characters). The
*fixed prefix* is everything before the first placeholder; a rendered URL must stay inside it, so
that no customer can write into another's site (docs/design.md "The targets").
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from typing import Any

_FIELD_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_UNSAFE_SEGMENTS = {"", ".", ".."}


class TargetError(ValueError):
    """A template, or its rendering for one customer, is unsafe or incomplete."""


def template_fields(template: str) -> list[str]:
    """The placeholder names of ``template``, in order; raises TargetError on bad syntax."""
    names: list[str] = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise TargetError(f"bad placeholder syntax in {template!r}: {exc}") from None
    for _literal, field, spec, conv in parsed:
        if field is None:
            continue
        if not _FIELD_RE.match(field) or spec or conv:
            shown = field + ("!" + conv if conv else "") + (":" + spec if spec else "")
            raise TargetError(
                f"placeholder {{{shown}}} in {template!r} must be a plain field name such as {{id}}"
            )
        names.append(field)
    return names


def fixed_prefix(template: str) -> str:
    """The literal part of ``template`` before its first placeholder."""
    idx = template.find("{")
    return template if idx < 0 else template[:idx]


def check_target_template(template: str) -> None:
    """Static checks on a template: plain placeholders, at least one, after the bucket and a slash."""
    fields = template_fields(template)
    if not fields:
        raise ValueError(
            f"{template!r} has no placeholder: every customer would share one site; use e.g. {{id}}"
        )
    prefix = fixed_prefix(template)
    if not prefix.endswith("/"):
        raise ValueError(
            f"{template!r}: the fixed prefix {prefix!r} must end with '/' so that one customer's site "
            "cannot be a prefix of another's"
        )
    if template.startswith("s3://") and "/" not in prefix[len("s3://") :]:
        raise ValueError(f"{template!r}: the bucket must be fixed; placeholders go after s3://bucket/")
    if template.startswith("s3://") and any(
        seg in _UNSAFE_SEGMENTS for seg in template[len("s3://") :].split("/")[1:-1]
    ):
        raise ValueError(f"{template!r} has an empty, '.' or '..' segment: a key means exactly one place")
    if template.startswith("file://") and not prefix[len("file://") :].strip("/"):
        # file:///{id}/ would make every customer a folder of / (and prune one named etc)
        raise ValueError(f"{template!r}: the folder must be fixed; placeholders go after file:///some/dir/")
    if not template.endswith("/"):
        raise ValueError(f"{template!r} must end with '/' (it names a folder of objects)")


def render_target(template: str, record: Mapping[str, Any]) -> str:
    """Render ``template`` for one customer; raise TargetError if it leaves the fixed prefix."""
    values: dict[str, str] = {}
    for name in template_fields(template):
        if name not in record or record[name] is None:
            raise TargetError(f"customer record has no field {name!r} used by {template!r}")
        value = str(record[name])
        if not value:
            raise TargetError(f"field {name!r} is empty")
        if "/" in value or "\\" in value or value in (".", "..") or any(ord(c) < 32 for c in value):
            # one placeholder is one path segment: every site then has the same depth, so no
            # customer's site can sit inside another's (where a prune would delete it)
            raise TargetError(f"field {name!r} value {value[:80]!r} is not a single safe path segment")
        values[name] = value
    rendered = template.format_map(values)
    prefix = fixed_prefix(template)
    if not rendered.startswith(prefix):
        raise TargetError(f"rendered {rendered!r} leaves the fixed prefix {prefix!r}")
    rest = rendered[len(prefix) :]
    segments = rest.rstrip("/").split("/")
    if any(seg in _UNSAFE_SEGMENTS for seg in segments) or "\\" in rest or any(ord(c) < 32 for c in rest):
        raise TargetError(f"rendered {rendered!r} has an unsafe path segment after {prefix!r}")
    return rendered
