"""What every site should hold: the build prepared once, then each customer's desired files.

Shared by ``shard`` (which then writes), ``plan`` (which only prints) and ``verify`` (which
compares what is there).

:func:`prepare_build` lists the build once, fetches and compiles the template files once, and
makes sure the MD5 of every build file is known (a file uploaded in parts has no MD5 ETag; it is
read once and hashed). :func:`prepare_customer` checks the customer's id, renders its site and
overrides URLs (the fixed-prefix rule), lists its overrides, renders every template for it and
lists its site. It writes nothing; a customer whose preparation fails has nothing written.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Final

from webrelease.copier.customers import Record, id_problem, real_locations, site_guard_for
from webrelease.copier.globs import GlobError, GlobSet, compile_glob
from webrelease.copier.places import folder_place, layout_problems, object_place
from webrelease.copier.plan import Origin, Want, desired_files
from webrelease.copier.render import MAX_OUTPUT_BYTES, RenderError, Templates
from webrelease.copier.spec import WebReleaseSpec
from webrelease.copier.storage import (
    AccessDenied,
    InvalidKey,
    InvalidUrl,
    Location,
    NotFound,
    ObjectInfo,
    Store,
    StoreFor,
    UnusableFile,
    check_key,
    first_link,
    parse_url,
    real_file_url,
)
from webrelease.copier.targets import TargetError, fixed_prefix, render_target

#: Objects are hashed in ranges of this size (never held whole in memory).
HASH_CHUNK: Final = 8 * 1024 * 1024


class BuildError(ValueError):
    """The release cannot run for anyone (the build missing, empty or holding a file no site can
    hold, a pattern that matches nothing, the sites' bucket missing, credentials refused): bad
    input for every customer, found before anything is written."""


class CustomerError(Exception):
    """This customer cannot be released; the message is the reason recorded in the report."""


def hash_object(store: Store, loc: Location, key: str, size: int) -> tuple[str, str]:
    """(md5, sha256) hex of an object, read in ranges."""
    md5 = hashlib.md5(usedforsecurity=False)
    sha = hashlib.sha256()
    for start in range(0, size, HASH_CHUNK):
        chunk = store.get_range(loc, key, start, min(start + HASH_CHUNK, size) - 1)
        md5.update(chunk)
        sha.update(chunk)
    return md5.hexdigest(), sha.hexdigest()


def _resolve_md5(
    store: Store, loc: Location, infos: list[ObjectInfo], origin: Origin, pool: Executor
) -> list[Want]:
    """Wants for ``infos``; objects whose MD5 the listing did not give are hashed (concurrently)."""
    unknown = [i for i in infos if i.md5 is None]
    hashed = dict(
        zip(
            (i.key for i in unknown),
            pool.map(lambda i: hash_object(store, loc, i.key, i.size), unknown),
            strict=True,
        )
    )
    out = []
    for i in infos:
        md5, sha = hashed.get(i.key, (i.md5, None))
        out.append(Want(i.key, origin, i.size, md5, sha))
    return out


@dataclass(frozen=True)
class Build:
    """The build, prepared once per shard."""

    location: Location
    #: every build file (template files included), by key
    listing: Mapping[str, ObjectInfo]
    #: the non-template build files as they should appear in every site
    files: Mapping[str, Want]
    templates: Templates
    is_entrypoint: GlobSet

    @property
    def template_keys(self) -> frozenset[str]:
        return self.templates.keys


def list_build(loc: Location, store: Store) -> dict[str, ObjectInfo]:
    """Every build file by key; BuildError when the build is missing, empty, unreadable or holds
    a file that no site could hold under its name (a backslash, an empty or ``..`` segment...)."""
    try:
        listing = {i.key: i for i in store.list(loc)}
    except (NotFound, AccessDenied, UnusableFile) as exc:
        raise BuildError(f"source {loc.url}: {exc}") from None
    if not listing:
        raise BuildError(f"source {loc.url} has no files")
    for key in listing:
        try:
            check_key(key)
        except InvalidKey as exc:
            raise BuildError(
                f"source {loc.url}: build file {key!r} cannot be released: {exc}; rename it"
            ) from None
    return listing


def check_patterns(spec: WebReleaseSpec, keys: Iterable[str], source: str) -> None:
    """BuildError naming the first ``templates`` (or explicitly given ``entrypoints``) pattern
    that matches no build file: a template pattern with a typo would ship its raw ``{{ }}`` source
    to every site. The default entrypoints may match nothing (a build without HTML)."""
    keys = list(keys)
    fields = ["templates"] + (["entrypoints"] if "entrypoints" in spec.model_fields_set else [])
    for name in fields:
        for n, pattern in enumerate(getattr(spec, name)):
            regex = compile_glob(pattern)
            if not any(regex.fullmatch(k) for k in keys):
                raise BuildError(
                    f"spec.{name}.{n}: {pattern!r} matches no file of the build {source}; fix the pattern "
                    "(relative to the build, e.g. 'index.html' or '**/*.html') or remove it"
                )


def check_buckets(spec: WebReleaseSpec, store_for: StoreFor) -> None:
    """BuildError when the bucket of the sites (or of the overrides) does not exist or refuses
    the credentials: one error for the run, instead of every customer failing alike. One
    listing request (one page of the fixed prefix) per S3 location; folders need no check."""
    checks = [("spec.target.url", spec.target.url)]
    if spec.overrides is not None:
        checks.append(("spec.overrides.url", spec.overrides.url))
    for name, template in checks:
        try:
            loc = parse_url(fixed_prefix(template))
        except InvalidUrl:
            continue  # the rendered URLs are checked per customer
        if loc.scheme != "s3":
            continue
        listing = store_for(loc).list(loc)
        try:
            next(iter(listing), None)
        except NotFound:
            raise BuildError(
                f"{name}: the bucket {loc.bucket!r} does not exist; create it or fix the URL"
            ) from None
        except AccessDenied as exc:
            raise BuildError(f"{name}: {exc}") from None
        finally:
            close = getattr(listing, "close", None)
            if close is not None:
                close()


def check_build(spec: WebReleaseSpec, store_for: StoreFor) -> dict[str, ObjectInfo]:
    """Everything about the release that is the same for every customer and can be checked
    without writing: the build's files, the patterns, the buckets. The build's listing."""
    try:
        loc = parse_url(spec.source.url)
        GlobSet(spec.templates)
        GlobSet(spec.entrypoints)
    except (InvalidUrl, GlobError) as exc:
        raise BuildError(str(exc)) from None
    check_real_layout(spec)
    listing = list_build(loc, store_for(loc))
    if spec.target.url.startswith("s3://"):
        check_utf8_keys(listing, loc.url)
    check_patterns(spec, listing, loc.url)
    check_buckets(spec, store_for)
    return listing


def check_utf8_keys(keys: Iterable[str], source: str) -> None:
    """BuildError naming a build file whose name is not UTF-8 (a local build: the OS hands such
    names over surrogate-escaped) when the sites are on S3, whose keys are UTF-8: every shard
    crashed on it (exit 1) instead of one bad-input error."""
    for key in keys:
        try:
            key.encode("utf-8")
        except UnicodeEncodeError:
            shown = os.fsencode(key)
            raise BuildError(
                f"source {source}: build file {shown!r} has a name that is not UTF-8, which no S3 "
                "key can hold; rename it"
            ) from None


def check_real_layout(spec: WebReleaseSpec) -> None:
    """The spec's layout rules (``places.layout_problems``) once more on the folders the local
    locations really are: ``out/sites -> ../build`` puts every site inside the build even though
    the URLs do not say so. BuildError naming the field."""
    real = real_locations(spec)
    written = {
        "source": spec.source.url,
        "target": spec.target.url,
        "reports": spec.reports.url,
        "overrides": spec.overrides.url if spec.overrides is not None else None,
        "customers": spec.customers.url,
    }
    if real == written:
        return
    problems = layout_problems(
        source=real["source"] or spec.source.url,
        target=real["target"] or spec.target.url,
        reports=real["reports"] or spec.reports.url,
        overrides=real["overrides"],
        customers=real["customers"],
    )
    if problems:
        field, message = problems[0]
        moved = ", ".join(f"{written[k]} is {v}" for k, v in real.items() if v != written[k])
        raise BuildError(f"spec.{field}: once symlinks are followed ({moved}): {message}")


def prepare_build(spec: WebReleaseSpec, release_name: str, store_for: StoreFor, pool: Executor) -> Build:
    try:
        loc = parse_url(spec.source.url)
        is_template = GlobSet(spec.templates)
        is_entrypoint = GlobSet(spec.entrypoints)
    except (InvalidUrl, GlobError) as exc:
        raise BuildError(str(exc)) from None
    store = store_for(loc)
    listing = check_build(spec, store_for)
    template_keys = sorted(k for k in listing if is_template(k))
    too_big = {k for k in template_keys if listing[k].size > MAX_OUTPUT_BYTES}
    bodies = dict(
        zip(
            [k for k in template_keys if k not in too_big],
            pool.map(lambda k: store.get(loc, k), [k for k in template_keys if k not in too_big]),
            strict=True,
        )
    )
    templates = Templates(
        bodies,
        release_name=release_name,
        source_url=loc.url,
        timeout_seconds=spec.template_timeout_seconds,
    )
    for k in too_big:
        templates.errors[k] = f"template {k}: larger than {MAX_OUTPUT_BYTES} bytes"
    plain = [i for k, i in listing.items() if k not in templates.keys]
    files = {w.key: w for w in _resolve_md5(store, loc, plain, Origin.BUILD, pool)}
    return Build(loc, listing, files, templates, is_entrypoint)


@dataclass(frozen=True)
class CustomerWork:
    """One customer, prepared: where its site is and what it should hold."""

    id: str
    record: Record
    site: Location
    overrides: Location | None
    desired: Mapping[str, Want]
    #: the site as it is (from one listing)
    site_listing: Mapping[str, ObjectInfo]


def customer_locations(spec: WebReleaseSpec, record: Mapping[str, Any]) -> tuple[Location, Location | None]:
    """The customer's site and overrides locations; CustomerError if unsafe."""
    why = id_problem(record.get("id"))
    if why is not None:
        raise CustomerError(why)
    try:
        site = parse_url(render_target(spec.target.url, record))
        overrides = (
            parse_url(render_target(spec.overrides.url, record)) if spec.overrides is not None else None
        )
    except (TargetError, InvalidUrl) as exc:
        raise CustomerError(f"target: {exc}") from None
    if site.scheme == "file":
        # a site folder that is a symlink (acme -> globex, acme -> ../../build) would write
        # another place than the customer's own site
        base = parse_url(fixed_prefix(spec.target.url))
        parts = site.prefix[len(base.prefix) :].strip("/").split("/")
        link = first_link(base.prefix, parts) if site.prefix.startswith(base.prefix) else None
        if link is not None:
            raise CustomerError(
                f"target: the site folder {base.url}{link[0]}/ is a symlink (to {link[1]!r}): writing "
                "there would change another place than this customer's own site; replace the link "
                "with a folder, or remove it"
            )
    # the snapshot was checked when it was frozen; a snapshot from elsewhere is checked here
    why = site_guard_for(spec).problem(record)
    if why is not None:
        raise CustomerError(f"target: {why}")
    if overrides is not None and overrides.scheme == "file":
        linked_overrides_problem(spec, overrides)
    return site, overrides


def linked_overrides_problem(spec: WebReleaseSpec, overrides: Location) -> None:
    """CustomerError when a customer's overrides folder is reached through a symlink that leads
    into the sites, the build, the reports or the list: its files are copied into the public site
    (``ov/acme -> ../out/reports`` would publish every customer's record). A link to a folder of
    one's own (shared branding) is fine."""
    real_url = real_file_url(overrides.url)
    if real_url == overrides.url:
        return
    real = folder_place(real_url)
    real_locs = real_locations(spec)
    places = {
        "spec.target.url (the sites)": folder_place(fixed_prefix(real_locs["target"] or "")),
        "spec.source.url (the build)": folder_place(real_locs["source"] or ""),
        "spec.reports.url (the reports)": folder_place(real_locs["reports"] or ""),
        "spec.customers.url (the list)": object_place(real_locs["customers"] or ""),
    }
    for name, place in places.items():
        if real is not None and place is not None and real.overlaps(place):
            raise CustomerError(
                f"overrides: a symlink leads them into {name}: its files would be copied into this "
                f"customer's site; point the link at a folder of its own ({overrides.url} is {real_url})"
            )


def prepare_customer(
    spec: WebReleaseSpec,
    build: Build,
    record: Record,
    store_for: StoreFor,
    pool: Executor,
    *,
    list_site: bool = True,
) -> CustomerWork:
    """Everything about one customer short of writing; CustomerError with the reason on failure."""
    site, overrides_loc = customer_locations(spec, record)
    overrides: dict[str, Want] = {}
    if overrides_loc is not None:
        ostore = store_for(overrides_loc)
        try:
            infos = list(ostore.list(overrides_loc))
        except NotFound:
            infos = []
        overrides = {w.key: w for w in _resolve_md5(ostore, overrides_loc, infos, Origin.OVERRIDE, pool)}
    rendered: dict[str, Want] = {}
    for key in sorted(build.template_keys - overrides.keys()):
        try:
            out = build.templates.render(key, record)
        except RenderError as exc:
            raise CustomerError(str(exc)) from None
        rendered[key] = Want(
            key,
            Origin.TEMPLATE,
            len(out.body),
            hashlib.md5(out.body, usedforsecurity=False).hexdigest(),
            hashlib.sha256(out.body).hexdigest(),
            out.content_type,
            out.body,
        )
    desired = desired_files(build.files, rendered, overrides)
    for key, want in desired.items():  # a key the site cannot hold fails the customer before any write
        try:
            # S3's 1024-byte limit counts the site's prefix; a local folder's own path does not
            check_key(key, site.prefix if site.scheme == "s3" else "")
        except InvalidKey as exc:
            raise CustomerError(f"{want.origin.value} {key}: {exc}") from None
    listing: dict[str, ObjectInfo] = {}
    if list_site:
        sstore = store_for(site)
        try:
            listing = {i.key: i for i in sstore.list(site)}
        except NotFound:
            listing = {}
    return CustomerWork(str(record["id"]), record, site, overrides_loc, desired, listing)
