"""What one customer's site needs: pure functions, no I/O.

The *desired* state of a site is the build's files, with the rendered templates in place of the
template files, with the customer's overrides on top (an override replaces a build or template
file of the same key, or adds one). :func:`plan_customer` compares it with the site's listing:

- a desired file the site already holds with the same content is **unchanged** and costs nothing;
- any other desired file is written: **copy** (a build file), **render** (a rendered template) or
  **override** (a file of the customer's overrides);
- with ``prune``, a site file the release does not have is **deleted**.

*Same content* means: the site object's MD5 (its ETag, from the listing) equals the expected MD5.
When the site object's MD5 is unknown (a multipart upload's ETag) the listing cannot decide;
:func:`undecided` names those keys, the caller HEADs them and passes the answers back, and the
metadata webrelease stored when it wrote the object (``webrelease-md5``/``webrelease-sha256``)
decides.

Order (docs/design.md "The API", ``entrypoints``): every non-entrypoint write first, then the
entrypoints (so that a visitor never loads a new page pointing at an asset not yet copied), then
the deletes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Final

from webrelease.copier.storage import ObjectInfo

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


def undecided(desired: Mapping[str, Want], site: Mapping[str, ObjectInfo]) -> list[str]:
    """Keys whose listing cannot tell whether they changed (HEAD them, then pass ``heads``)."""
    return sorted(k for k, w in desired.items() if k in site and compare(w, site[k]) is Verdict.UNKNOWN)


def plan_customer(
    desired: Mapping[str, Want],
    site: Mapping[str, ObjectInfo],
    *,
    is_entrypoint: Callable[[str], bool],
    prune: bool,
    heads: Mapping[str, ObjectInfo] | None = None,
) -> CustomerPlan:
    """The ordered actions that make ``site`` hold ``desired``. ``heads`` answers :func:`undecided`
    keys (a key left unanswered is rewritten: when in doubt, copy)."""
    heads = heads or {}
    writes: list[Action] = []
    entry: list[Action] = []
    same: list[Action] = []
    for key in sorted(desired):
        want = desired[key]
        verdict = Verdict.DIFFERENT
        if key in site:
            verdict = compare(want, site[key])
            if verdict is Verdict.UNKNOWN and key in heads:
                verdict = compare(want, heads[key])
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
