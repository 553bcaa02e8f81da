"""Where a release reads and writes, and the rule that no site overlaps any of it.

A run *writes* (and with ``prune`` deletes) only inside customer sites, and reads the build
(``source``), each customer's overrides, and the customer-list object; it writes its snapshot and
report under ``reports``. If a site could contain, or sit inside, any of those places, a prune
deletes the build, another customer's overrides or the reports, or a run copies a site into
itself. So:

- :func:`layout_problems` checks a spec's fixed parts (the spec validators call it): a target
  whose fixed prefix lies inside the build or the reports, a target and overrides template of
  which one extends the other (``…/{id}/`` and ``…/{id}/ov/``), and the reports, the list or the
  overrides inside the build (every site would receive them) are refused before anything runs;
- :class:`SiteGuard` checks each customer's rendered site at snapshot time (and again in the
  shard): a customer ``build`` with target ``s3://b/{id}/`` and source ``s3://b/build/`` is a
  problem of the list, named by line, before anything is written.

Locations are compared as the places they name: ``file://`` URLs percent-decoded and normalised
(as ``webrelease.copier.storage.parse_url`` reads them; this module sits below storage), S3 keys
literally; an object (the customer list)
overlaps a folder it lies in. Relative ``file://`` URLs (a release file before its folder is
known) are compared only with each other.
"""

from __future__ import annotations

import functools
import posixpath
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import unquote

from webrelease.copier.targets import (
    TargetError,
    canonical_url,
    fixed_prefix,
    render_target,
    template_fields,
    value_problem,
)

#: Relative ``file://`` URLs are resolved against this (deep, so ``..`` stays below it) to
#: compare them with each other; they are never compared with absolute ones.
_RELATIVE_BASE: Final = "/" + "/".join(["webrelease-relative"] * 32)


@dataclass(frozen=True, slots=True)
class Place:
    """A folder (``path`` ends with ``/``; ``""`` is a whole bucket) or one object, decoded."""

    scheme: str
    bucket: str
    path: str
    folder: bool
    relative: bool = False

    def _comparable(self, other: Place) -> bool:
        return (self.scheme, self.bucket, self.relative) == (other.scheme, other.bucket, other.relative)

    def inside(self, other: Place) -> bool:
        """``self`` lies in (or is) folder ``other``."""
        return self._comparable(other) and other.folder and self.path.startswith(other.path)

    def overlaps(self, other: Place) -> bool:
        """One of the two lies in (or is) the other."""
        return self.inside(other) or other.inside(self) or (self._comparable(other) and self == other)

    @property
    def url(self) -> str:
        if self.scheme == "file":
            return f"file://{self.path}"
        return f"s3://{self.bucket}/{self.path}"


def folder_place(url: str) -> Place | None:
    """The folder ``url`` names, read the way ``webrelease.copier.storage.parse_url`` reads it (S3
    prefixes literally, ``file://`` paths percent-decoded and normalised; a test holds the two to
    the same answers), or None for a URL that is neither (other checks say why)."""
    if url.startswith("s3://"):
        bucket, _, prefix = url[len("s3://") :].partition("/")
        if not bucket:
            return None
        inner = prefix.strip("/")
        return Place("s3", bucket, inner + "/" if inner else "", True)
    if not url.startswith("file://"):
        return None
    rest = url[len("file://") :]
    if rest.startswith("localhost/"):
        rest = rest[len("localhost") :]
    path = unquote(rest)
    relative = not path.startswith("/")
    if relative:
        path = posixpath.join(_RELATIVE_BASE, path)
    path = "/" + posixpath.normpath(path).lstrip("/")
    return Place("file", "", path.rstrip("/") + "/", True, relative)


def object_place(url: str) -> Place | None:
    """The object ``url`` names (``s3://b/lists/customers.jsonl``)."""
    slash = url.rfind("/")
    name = url[slash + 1 :]
    folder = folder_place(url[: slash + 1])
    if folder is None or not name:
        return None
    return Place(folder.scheme, folder.bucket, folder.path + canonical_url(name), False, folder.relative)


_FIELD_NAMES: Final = {
    "source": "spec.source.url",
    "reports": "spec.reports.url",
    "customers": "spec.customers.url",
    "overrides": "spec.overrides.url",
    "target": "spec.target.url",
}
_WHAT: Final = {
    "source": "the build",
    "reports": "the reports",
    "customers": "the customer list",
}


def layout_problems(
    *,
    source: str,
    target: str,
    reports: str,
    overrides: str | None = None,
    customers: str | None = None,
) -> list[tuple[str, str]]:
    """Static overlaps of a spec's locations: ``[(field, message)]``, empty when the layout is sound.

    Fields are camelCase paths below ``spec`` (``target.url``); the message says what to change.
    """
    out: list[tuple[str, str]] = []
    src = folder_place(source)
    rep = folder_place(reports)
    lst = object_place(customers) if customers else None
    tbase = folder_place(fixed_prefix(target))
    obase = folder_place(fixed_prefix(overrides)) if overrides else None
    fixed = {"source": (src, source), "reports": (rep, reports)}
    if tbase is not None:
        for name, (place, url) in fixed.items():
            if place is not None and tbase.inside(place):
                extra = " and each run would copy every site into every site" if name == "source" else ""
                out.append(
                    (
                        "target.url",
                        f"every site ({target}) would lie inside {_WHAT[name]} ({_FIELD_NAMES[name]} "
                        f"{url}): a prune would delete {_WHAT[name]}'s files{extra}; put the sites in a "
                        f"folder of their own, beside {_WHAT[name]}",
                    )
                )
    if overrides:
        t, o = canonical_url(target), canonical_url(overrides)
        if t.startswith(o) or o.startswith(t):
            where = "inside its own site" if o.startswith(t) else "around its own site"
            out.append(
                (
                    "overrides.url",
                    f"every customer's overrides ({overrides}) would lie {where} ({target}): a "
                    "prune deletes them, or a run copies the site into itself; put overrides in a "
                    "folder beside the sites",
                )
            )
    if src is not None:
        for name, place, url in (("reports", rep, reports), ("customers", lst, customers or "")):
            if place is not None and place.overlaps(src):
                out.append(
                    (
                        f"{name}.url",
                        f"{_WHAT[name]} ({url}) and the build ({source}) overlap: every site "
                        f"would receive {_WHAT[name]} (and runs would change the build); keep "
                        f"{_FIELD_NAMES[name]} outside spec.source.url",
                    )
                )
        if obase is not None and obase.inside(src):
            out.append(
                (
                    "overrides.url",
                    f"the overrides ({overrides}) lie inside the build ({source}): every site would "
                    "receive every customer's overrides; keep spec.overrides.url outside spec.source.url",
                )
            )
    if obase is not None and rep is not None and obase.inside(rep):
        # a customer's overrides are copied into its public site: one whose overrides folder is a
        # report folder would publish the snapshot (every customer's record)
        out.append(
            (
                "overrides.url",
                f"the overrides ({overrides}) lie inside the reports ({reports}): a customer's site "
                "would receive the run's snapshot (every customer's record); keep "
                "spec.overrides.url outside spec.reports.url",
            )
        )
    return out


class SiteGuard:
    """The per-customer half of the rule: one customer's site checked against the build, the reports,
    the list object and its own overrides (:meth:`problem`); and every customer's site against every
    other's site and overrides (:func:`nesting_problems`, over :meth:`places` of the whole list)."""

    def __init__(
        self,
        *,
        source: str,
        target: str,
        reports: str,
        overrides: str | None = None,
        customers: str | None = None,
    ) -> None:
        self.target = target
        self.overrides = overrides
        self.fixed: list[tuple[str, Place, str]] = [
            (name, place, url)
            for name, place, url in (
                ("source", folder_place(source), source),
                ("reports", folder_place(reports), reports),
                ("customers", object_place(customers) if customers else None, customers or ""),
            )
            if place is not None
        ]
        self.fields = template_fields(target) + (
            [f for f in template_fields(overrides) if f not in template_fields(target)] if overrides else []
        )
        self._decode = {f: False for f in self.fields}
        for tpl in (target, overrides):
            if tpl and tpl.startswith("file://"):
                for f in template_fields(tpl):
                    self._decode[f] = True
        tbase = folder_place(fixed_prefix(target))
        obase = folder_place(fixed_prefix(overrides)) if overrides else None
        #: whether one customer's site could meet another's overrides at all
        self.cross = tbase is not None and obase is not None and tbase.overlaps(obase)
        # everything in a customer's overrides is copied into its site (and wins over templates):
        # overrides that are, hold or lie in the build, the reports or the list would publish them
        self.over_fixed = (
            [f for f in self.fixed if obase is None or f[1].overlaps(obase)] if overrides else []
        )
        # only a place in or around the region sites render into can meet a site: with none (the
        # usual layout) a customer needs no rendering here (about 7 µs each, 1M customers: 7 s)
        self.fixed = [f for f in self.fixed if tbase is None or f[1].overlaps(tbase)]

    def value_problems(self, record: Mapping[str, Any]) -> str | None:
        """A placeholder field whose value has the wrong type (a list, a boolean...), or None.
        Missing fields and unsafe text are left to :func:`render_target` (the customer fails alone)."""
        for name in self.fields:
            value = record.get(name)
            if value is None or (isinstance(value, str | int) and not isinstance(value, bool)):
                continue
            return value_problem(name, value, decode=self._decode[name])
        return None

    def places(self, record: Mapping[str, Any]) -> tuple[str | None, str | None]:
        """The customer's site and overrides as the places they name (:func:`canonical_url`), each
        None when it cannot be rendered (the shard fails that customer with the reason)."""
        out: list[str | None] = []
        for template in (self.target, self.overrides):
            try:
                out.append(canonical_url(render_target(template, record)) if template else None)
            except TargetError:
                out.append(None)
        return out[0], out[1]

    def problem(self, record: Mapping[str, Any]) -> str | None:
        """Why this customer's site may not be released, naming the field to change, or None."""
        why = self.value_problems(record)
        if why is not None or not (self.fixed or self.cross or self.over_fixed):
            return why
        try:
            site_url = render_target(self.target, record)
            over_url = render_target(self.overrides, record) if self.overrides else None
        except TargetError:
            return None  # the shard fails this customer alone, with the reason
        site = folder_place(site_url)
        over = folder_place(over_url) if over_url else None
        if site is None:
            return None
        change = "change its " + ", ".join(repr(f) for f in template_fields(self.target))
        for name, place, url in self.fixed:
            if site.overlaps(place):
                how = (
                    "would be"
                    if place.path == site.path and place.folder
                    else "would contain"
                    if place.inside(site)
                    else "would lie inside"
                )
                return (
                    f"its site {site_url} {how} {_WHAT[name]} ({_FIELD_NAMES[name]} {url}); "
                    f"{change}, or move {_FIELD_NAMES[name]} out of where sites go"
                )
        if over is not None and site.overlaps(over):
            return (
                f"its site {site_url} and its overrides {over_url} overlap; {change} or the overrides' fields"
            )
        if over is not None and self.overrides:
            ochange = "change its " + ", ".join(repr(f) for f in template_fields(self.overrides))
            for name, place, url in self.over_fixed:
                if over.overlaps(place):
                    how = (
                        "would be"
                        if place.path == over.path and place.folder
                        else "would contain"
                        if place.inside(over)
                        else "would lie inside"
                    )
                    return (
                        f"its overrides {over_url} {how} {_WHAT[name]} ({_FIELD_NAMES[name]} {url}): "
                        f"what is there would be copied into its site; {ochange}, or move "
                        f"{_FIELD_NAMES[name]} out of where overrides go"
                    )
        return None


#: One place of :func:`nesting_problems`: (place, is it a site, customer id, where, position).
Entry = tuple[str, bool, str, str, int]


def nesting_problems(entries: Iterable[Entry]) -> Iterator[tuple[int, str]]:
    """``(position, "where: customer 'x': message")`` for every site that lies in or around another
    customer's site or anyone's overrides (the fault is the site's). ``entries`` must come sorted
    by place, so that a folder sorts right before everything inside it; equal sites are left to
    the duplicate-site check, overrides inside overrides are fine (customers may share them)."""
    stack: list[Entry] = []
    for entry in entries:
        place, is_site, cid, where, pos = entry
        while stack and not place.startswith(stack[-1][0]):
            stack.pop()
        for outer, outer_site, ocid, owhere, opos in stack:
            if not (is_site or outer_site) or (is_site and outer_site and outer == place):
                continue
            if outer == place:  # a site that is someone's overrides: the site's customer is named
                s_cid, s_where, s_pos, o_cid, o_where = (
                    (cid, where, pos, ocid, owhere) if is_site else (ocid, owhere, opos, cid, where)
                )
                yield (
                    s_pos,
                    f"{s_where}: customer {s_cid!r}: its site {place} is customer {o_cid!r}'s "
                    f"overrides ({o_where}); a prune would delete them: change its target fields",
                )
            elif is_site:
                what = "site" if outer_site else "overrides"
                yield (
                    pos,
                    f"{where}: customer {cid!r}: its site {place} lies inside customer {ocid!r}'s "
                    f"{what} {outer} ({owhere}); change its target fields",
                )
            else:
                yield (
                    opos,
                    f"{owhere}: customer {ocid!r}: its site {outer} would contain customer {cid!r}'s "
                    f"overrides {place} ({where}); a prune would delete them: change its target fields",
                )
            break
        stack.append(entry)


@functools.lru_cache(maxsize=64)
def site_guard(
    source: str, target: str, reports: str, overrides: str | None, customers: str | None
) -> SiteGuard:
    """One :class:`SiteGuard` per set of locations (the shard asks for every customer)."""
    return SiteGuard(source=source, target=target, reports=reports, overrides=overrides, customers=customers)
