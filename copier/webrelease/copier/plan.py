"""What one customer's site needs: pure functions, no I/O.

The *desired* state of a site is the build's files, with the rendered templates in place of the
template files, with the customer's overrides on top (an override replaces a build or template
file of the same key, or adds one). :func:`plan_customer` compares it with the site's listing:

- a desired file the site already holds with the same content is **unchanged** and costs nothing;
- any other desired file is written: **copy** (a build file), **render** (a rendered template) or
  **override** (a file of the customer's overrides);
- with ``prune``, a site file the release does not have is **deleted**.

*Same content* means: the site object's MD5 (its ETag, from the listing) equals the expected MD5,
**and** its Content-Type (and Content-Encoding) are the ones the release gives that file — a page
with the right bytes but served as ``text/plain`` is wrong. The listing carries neither type nor
metadata, so :func:`undecided` names every key the listing does not already call different,
except those the site record (:mod:`webrelease.copier.siterecord`) vouches for; the caller HEADs
them and passes the answers back. When
the site object's MD5 is unknown (a multipart upload's ETag) the metadata webrelease stored when it
wrote the object (``webrelease-md5``/``webrelease-sha256``) decides the bytes.

Order (docs/design.md "The API", ``entrypoints``): every non-entrypoint write first, then the
entrypoints (so that a visitor never loads a new page pointing at an asset not yet copied), then
the deletes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Final, NamedTuple

from webrelease.copier.storage import ObjectInfo, guess_content_encoding, guess_content_type

#: Object metadata keys webrelease writes on every object it puts or copies.
META_MD5: Final = "webrelease-md5"
META_SHA256: Final = "webrelease-sha256"
META_RELEASE: Final = "webrelease-release"


class Origin(StrEnum):
    BUILD = "build"
    TEMPLATE = "template"
    OVERRIDE = "override"


class Op(StrEnum):
    COPY = "copy"
    RENDER = "render"
    OVERRIDE = "override"
    UNCHANGED = "unchanged"
    DELETE = "delete"


_WRITE_OP: Final = {Origin.BUILD: Op.COPY, Origin.TEMPLATE: Op.RENDER, Origin.OVERRIDE: Op.OVERRIDE}


@dataclass(frozen=True, slots=True)
class Want:
    """One file the site should hold. ``body`` is set for rendered files (the bytes to put)."""

    key: str
    origin: Origin
    size: int
    md5: str | None
    sha256: str | None = None
    content_type: str | None = None
    body: bytes | None = None


@dataclass(frozen=True, slots=True)
class Action:
    op: Op
    key: str
    want: Want | None = None
    entrypoint: bool = False

    @property
    def size(self) -> int:
        return self.want.size if self.want is not None else 0


@dataclass(frozen=True, slots=True)
class CustomerPlan:
    #: writes of non-entrypoint files (run concurrently, all before any entrypoint)
    writes: tuple[Action, ...]
    #: writes of entrypoint files (after every other write succeeded)
    entrypoints: tuple[Action, ...]
    unchanged: tuple[Action, ...]
    #: deletes (only with prune; after the entrypoints)
    deletes: tuple[Action, ...]

    def actions(self) -> list[Action]:
        """Every action in the order it happens (unchanged files listed first: they cost nothing)."""
        return [*self.unchanged, *self.writes, *self.entrypoints, *self.deletes]

    def count(self, op: Op) -> int:
        return sum(1 for a in self.actions() if a.op is op)

    @property
    def bytes_to_write(self) -> int:
        return sum(a.size for a in (*self.writes, *self.entrypoints))


class Verdict(Enum):
    SAME = "same"
    DIFFERENT = "different"
    UNKNOWN = "unknown"


def compare(want: Want, site: ObjectInfo) -> Verdict:
    """Whether ``site`` (from a listing, or from a HEAD with metadata) holds ``want``'s content."""
    if site.size != want.size:
        return Verdict.DIFFERENT
    if want.md5 is not None and site.md5 is not None:
        return Verdict.SAME if want.md5 == site.md5.lower() else Verdict.DIFFERENT
    meta = {k.lower(): v for k, v in site.metadata.items()}
    if want.sha256 is not None and META_SHA256 in meta:
        return Verdict.SAME if meta[META_SHA256].lower() == want.sha256 else Verdict.DIFFERENT
    if want.md5 is not None and META_MD5 in meta:
        return Verdict.SAME if meta[META_MD5].lower() == want.md5 else Verdict.DIFFERENT
    return Verdict.UNKNOWN


class Served(NamedTuple):
    """How one site file was written: its MD5, Content-Type and Content-Encoding (a site record's
    entry, :mod:`webrelease.copier.siterecord`)."""

    md5: str
    content_type: str
    content_encoding: str | None


def served_as(key: str, want: Want) -> Served:
    """The MD5 and types the release gives ``key`` (``want.md5`` must be known)."""
    assert want.md5 is not None
    ctype = want.content_type or guess_content_type(key)
    return Served(want.md5, ctype.lower(), guess_content_encoding(key))


def type_problem(key: str, want: Want, site: ObjectInfo) -> str | None:
    """How ``site`` (from a HEAD) is served differently from what the release gives ``key``, or
    None: the Content-Type of a rendered file is its template's, any other file's is guessed from
    its name (:func:`~webrelease.copier.storage.guess_content_type`), and ``.svgz`` files carry
    ``Content-Encoding: gzip``."""
    ctype = want.content_type or guess_content_type(key)
    have = site.content_type or ""
    if have.strip().lower() != ctype.lower():
        return f"Content-Type {have!r}, expected {ctype!r}"
    encoding = guess_content_encoding(key)
    if (site.content_encoding or None) != encoding:
        return f"Content-Encoding {site.content_encoding!r}, expected {encoding!r}"
    return None


def desired_files(
    build: Mapping[str, Want],
    rendered: Mapping[str, Want],
    overrides: Mapping[str, Want],
) -> dict[str, Want]:
    """The site as the release wants it: build files, rendered templates in place, overrides on top."""
    out = dict(build)
    out.update(rendered)
    out.update(overrides)
    return out


def vouched(key: str, want: Want, site: ObjectInfo, record: Mapping[str, Served]) -> bool:
    """Whether ``record`` vouches for the type of ``site`` (a listed object): the listing's MD5,
    the release's and the record's are one, and the recorded types are the release's."""
    entry = record.get(key)
    if entry is None or want.md5 is None or site.md5 is None:
        return False
    return site.md5.lower() == want.md5 == entry.md5 and entry == served_as(key, want)


def undecided(
    desired: Mapping[str, Want],
    site: Mapping[str, ObjectInfo],
    *,
    check_type: bool = True,
    record: Mapping[str, Served] | None = None,
) -> list[str]:
    """Keys the listing cannot decide alone (HEAD them, then pass ``heads``): those whose MD5 it
    does not know, and — with ``check_type`` — every one whose bytes it calls the same, since only
    a HEAD shows the Content-Type, unless the site ``record`` vouches for its type."""
    record = record or {}
    out: list[str] = []
    for key, want in desired.items():
        if key not in site:
            continue
        verdict = compare(want, site[key])
        if verdict is Verdict.UNKNOWN or (
            check_type and verdict is Verdict.SAME and not vouched(key, want, site[key], record)
        ):
            out.append(key)
    return sorted(out)


def plan_customer(
    desired: Mapping[str, Want],
    site: Mapping[str, ObjectInfo],
    *,
    is_entrypoint: Callable[[str], bool],
    prune: bool,
    heads: Mapping[str, ObjectInfo] | None = None,
) -> CustomerPlan:
    """The ordered actions that make ``site`` hold ``desired``. ``heads`` answers :func:`undecided`
    keys (a key whose bytes are unknown and left unanswered is rewritten: when in doubt, copy); a
    HEAD showing another Content-Type than the release's rewrites the file too."""
    heads = heads or {}
    writes: list[Action] = []
    entry: list[Action] = []
    same: list[Action] = []
    for key in sorted(desired):
        want = desired[key]
        verdict = Verdict.DIFFERENT
        if key in site:
            verdict = compare(want, site[key])
            head = heads.get(key)
            if verdict is Verdict.UNKNOWN and head is not None:
                verdict = compare(want, head)
            if verdict is Verdict.SAME and head is not None and type_problem(key, want, head):
                verdict = Verdict.DIFFERENT
        if verdict is Verdict.SAME:
            same.append(Action(Op.UNCHANGED, key, want))
            continue
        ep = is_entrypoint(key)
        (entry if ep else writes).append(Action(_WRITE_OP[want.origin], key, want, entrypoint=ep))
    deletes = [Action(Op.DELETE, k) for k in sorted(site) if k not in desired] if prune else []
    return CustomerPlan(tuple(writes), tuple(entry), tuple(same), tuple(deletes))


def counts(actions: Iterable[Action]) -> dict[str, int]:
    out = {op.value: 0 for op in Op}
    for a in actions:
        out[a.op.value] += 1
    return out
