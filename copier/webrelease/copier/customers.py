"""Validating a customer list (docs/customers.md "Validation").

A *source* (:mod:`webrelease.copier.sources`: an object, a ConfigMap value, the inline list, SQL)
yields raw records, each with the line (or position) it came from; :func:`load_customers` validates
them all in memory, collects every problem (parse errors, missing or unsafe ids, duplicates, two
customers sharing a site) and either returns the list sorted by id or raises
:class:`CustomerListError` listing the first :data:`MAX_REPORTED_ERRORS` problems and how many
there were in all. :mod:`webrelease.copier.snapshot.freeze` applies the same rules in bounded memory.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

from webrelease.copier.places import Entry, SiteGuard, nesting_problems, site_guard
from webrelease.copier.sources import ConfigMapReader, SecretReader, open_source
from webrelease.copier.sources.base import CustomerSource, RawRecord
from webrelease.copier.spec import CUSTOMER_ID_RE, Customers, WebReleaseSpec
from webrelease.copier.storage import real_file_url
from webrelease.copier.storage.base import Location, Store
from webrelease.copier.targets import TargetError, canonical_url, render_target

#: A customer: a JSON object with a string ``id``; every other field is the customer's own.
Record = dict[str, Any]

#: How many problems an error message lists before saying "... and N more".
MAX_REPORTED_ERRORS: Final = 20

ID_RULE: Final = (
    "1 to 63 characters: lowercase letters, digits, '.', '_' or '-', "
    "starting and ending with a letter or digit"
)


class CustomerListError(ValueError):
    """A customer list that cannot be released; ``problems`` holds every problem found."""

    def __init__(self, source: str, problems: Sequence[str], total: int | None = None) -> None:
        """``total``: how many problems there were, when ``problems`` holds only the first ones."""
        self.source = source
        self.problems = list(problems)
        self.total = len(self.problems) if total is None else total
        shown = self.problems[:MAX_REPORTED_ERRORS]
        more = self.total - len(shown)
        text = f"customer list {source}: {self.total} problem(s): " + "; ".join(shown)
        if more:
            text += f"; ... and {more} more"
        super().__init__(text)


# ------------------------------------------------------------------------------------- validation


def id_problem(value: Any) -> str | None:
    """Why ``value`` is not a valid customer id, or None."""
    if value is None:
        return "missing id"
    if not isinstance(value, str):
        return f"id must be a string, got {type(value).__name__} {json.dumps(value, default=str)[:40]}"
    if not CUSTOMER_ID_RE.fullmatch(value):
        return f"id {value[:80]!r} is not a valid customer id ({ID_RULE})"
    return None


def check_records(
    raw: Iterable[RawRecord],
    *,
    source: str,
    target_template: str | None = None,
    allow_empty: bool = False,
    guard: SiteGuard | None = None,
) -> list[Record]:
    """Every record checked, sorted by id. With ``target_template`` (or ``guard``), two customers
    whose sites are the same place are an error too (rendering errors are left to the shard,
    where that customer fails alone). With ``guard`` (:func:`site_guard_for`), a site that would
    overlap the build, the reports, the list, its own or another customer's overrides or another
    site, and a placeholder field that is not text or a whole number, are errors of the list."""
    problems: list[tuple[int, str]] = []
    seen: dict[str, str] = {}
    sites: dict[str, tuple[str, str]] = {}
    places: list[Entry] = []
    out: list[Record] = []
    template = guard.target if guard is not None else target_template
    for position, rec in enumerate(raw, start=1):
        if rec.error is not None:
            problems.append((position, f"{rec.where}: {rec.error}"))
            continue
        if not isinstance(rec.value, dict):
            problems.append((position, f"{rec.where}: expected an object, got {type(rec.value).__name__}"))
            continue
        cid = rec.value.get("id")
        why = id_problem(cid)
        if why is not None:
            problems.append((position, f"{rec.where}: {why}"))
            continue
        assert isinstance(cid, str)
        if cid in seen:
            problems.append((position, f"{rec.where}: duplicate id {cid!r} (first at {seen[cid]})"))
            continue
        seen[cid] = rec.where
        if guard is not None:
            why = guard.problem(rec.value)
            if why is not None:
                problems.append((position, f"{rec.where}: customer {cid!r}: {why}"))
                continue
        if template is not None:
            try:
                site: str | None = canonical_url(render_target(template, rec.value))
            except TargetError:
                site = None
            if site is not None:
                if site in sites:
                    other, where = sites[site]
                    problems.append(
                        (
                            position,
                            f"{rec.where}: customer {cid!r} has the same site {site} as {other!r} ({where})",
                        )
                    )
                    continue
                sites[site] = (cid, rec.where)
        if guard is not None and guard.cross:
            site, overrides = guard.places(rec.value)
            places += [
                (p, is_site, cid, rec.where, position)
                for p, is_site in ((site, True), (overrides, False))
                if p
            ]
        out.append({"id": cid, **{k: v for k, v in rec.value.items() if k != "id"}})
    places.sort()
    problems += nesting_problems(places)
    if not out and not problems and not allow_empty:
        problems.append((0, "the list is empty"))
    if problems:
        raise CustomerListError(source, [m for _pos, m in sorted(problems, key=lambda p: p[0])])
    out.sort(key=lambda r: str(r["id"]))
    return out


def load_customers(
    source: CustomerSource,
    *,
    target_template: str | None = None,
    allow_empty: bool = False,
    guard: SiteGuard | None = None,
) -> list[Record]:
    """Read ``source`` once and validate it (see :func:`check_records`)."""
    return check_records(
        source.records(),
        source=source.name,
        target_template=target_template,
        allow_empty=allow_empty,
        guard=guard,
    )


def real_locations(spec: WebReleaseSpec) -> dict[str, str | None]:
    """The spec's locations with local folders resolved through symlinks (``real_file_url``):
    ``sites -> build`` is the build, whatever the release file calls it."""
    return {
        "source": real_file_url(spec.source.url),
        "target": real_file_url(spec.target.url),
        "reports": real_file_url(spec.reports.url),
        "overrides": real_file_url(spec.overrides.url) if spec.overrides is not None else None,
        "customers": real_file_url(spec.customers.url) if spec.customers.url else None,
    }


def site_guard_for(spec: WebReleaseSpec) -> SiteGuard:
    """The per-customer location checks for ``spec`` (see ``webrelease.copier.places``), on the
    places the locations really are (local folders resolved through symlinks)."""
    real = real_locations(spec)
    return site_guard(
        real["source"] or spec.source.url,
        real["target"] or spec.target.url,
        real["reports"] or spec.reports.url,
        real["overrides"],
        real["customers"],
    )


def source_for(
    customers: Customers,
    store_for: Callable[[Location], Store],
    *,
    secrets: SecretReader | None = None,
    config_maps: ConfigMapReader | None = None,
) -> CustomerSource:
    """The source ``spec.customers`` names (streaming; see :mod:`webrelease.copier.sources`).
    ``configMapRef`` needs ``config_maps`` and ``sql`` needs ``secrets`` (the operator's readers);
    without them reading the source reports that it cannot be read here."""
    return open_source(customers, store_for=store_for, secrets=secrets, config_maps=config_maps)
