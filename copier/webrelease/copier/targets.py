"""Per-customer URL templates (``s3://sites/{id}/``) and the fixed-prefix rule.

A template is a URL with ``{field}`` placeholders naming fields of the customer record. Only
plain names are allowed (no attribute access, indexing or format specs), and each placeholder's
value must be text or a whole number (never a list, an object, a boolean or a fraction, whose
Python spelling would become a folder name) that is one path segment (no ``/``, ``\\``, ``.`` or
``..``, no control characters). The *fixed prefix* is everything before the first placeholder; a
rendered URL must stay inside it, so that no customer can write into another's site
(docs/design.md "The targets").

``file://`` URLs are percent-decoded when they are opened, so for them the rules hold for the
*decoded* value too (``c%2Fd`` is ``c/d``, two segments), sites are compared decoded
(:func:`canonical_url`: ``a%62`` and ``ab`` are one folder), and the templated part of a
``file://`` template may not hold a ``%`` of its own (``{a}%{b}`` could spell an escape across
two values). S3 keys are taken literally: ``%62`` in an S3 key is three characters.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

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
        if not _FIELD_RE.fullmatch(field) or spec or conv:
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
    if template.startswith("file://") and "%" in template[len(prefix) :]:
        raise ValueError(
            f"{template!r}: a '%' after the first placeholder of a file:// template could join two "
            "values into one percent escape; write the character itself"
        )
    if not template.endswith("/"):
        raise ValueError(f"{template!r} must end with '/' (it names a folder of objects)")


def _kind(value: Any) -> str | None:
    """What is wrong with ``value``'s type as a placeholder value, or None (text, whole numbers)."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str | int):
        return None
    if isinstance(value, float):
        return "a number with a fraction"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return f"a {type(value).__name__}"


def value_problem(name: str, value: Any, *, decode: bool = False) -> str | None:
    """Why ``value`` cannot fill placeholder ``{name}``, or None. ``decode``: the URL is a
    ``file://`` one, so the value is checked percent-decoded too."""
    if value is None:
        return f"no field {name!r}"
    kind = _kind(value)
    if kind is not None:
        shown = repr(value)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        return (
            f"field {name!r} is {kind} ({shown}), not text: a placeholder takes text or a whole "
            f"number; give {name!r} one such value"
        )
    text = str(value)
    if not text:
        return f"field {name!r} is empty"
    for form in (text, unquote(text)) if decode else (text,):
        control = any(ord(c) < 32 or c == "\x7f" for c in form)
        if "/" in form or "\\" in form or form in (".", "..") or control:
            # one placeholder is one path segment: every site then has the same depth, so no
            # customer's site can sit inside another's (where a prune would delete it)
            decoded = f" (decoded from {text[:80]!r})" if form != text else ""
            return f"field {name!r} value {form[:80]!r}{decoded} is not a single safe path segment"
    return None


def render_target(template: str, record: Mapping[str, Any]) -> str:
    """Render ``template`` for one customer; raise TargetError if it leaves the fixed prefix."""
    decode = template.startswith("file://")
    values: dict[str, str] = {}
    for name in template_fields(template):
        if name not in record or record[name] is None:
            raise TargetError(f"customer record has no field {name!r} used by {template!r}")
        why = value_problem(name, record[name], decode=decode)
        if why is not None:
            raise TargetError(why)
        values[name] = str(record[name])
    rendered = template.format_map(values)
    prefix = fixed_prefix(template)
    if not rendered.startswith(prefix):
        raise TargetError(f"rendered {rendered!r} leaves the fixed prefix {prefix!r}")
    rest = rendered[len(prefix) :]
    if decode:
        rest = unquote(rest)
    segments = rest.rstrip("/").split("/")
    if any(seg in _UNSAFE_SEGMENTS for seg in segments) or "\\" in rest or any(ord(c) < 32 for c in rest):
        raise TargetError(f"rendered {rendered!r} has an unsafe path segment after {prefix!r}")
    return rendered


def canonical_url(url: str) -> str:
    """``url`` as the place it names: ``file://`` URLs percent-decoded (``file:///s/a%62/`` and
    ``file:///s/ab/`` are one folder; ``file://localhost/`` is ``file:///``), others unchanged."""
    if not url.startswith("file://"):
        return url
    rest = url[len("file://") :]
    if rest.startswith("localhost/"):
        rest = rest[len("localhost") :]
    return "file://" + unquote(rest)
