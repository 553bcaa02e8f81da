"""Random releases on local folders: exit 0 implies every site is exactly the release and nothing
outside the sites changed.

Hypothesis draws a layout (where the build, the sites, the overrides, the reports and the list
object go, from a few folder names so that they often nest, sometimes percent-encoded), target and
overrides templates over ``{id}`` and ``{slug}``, and a customer list whose ids and slugs come from
the same folder names plus values that decode to paths (``c%2Fd``, ``%2e%2e``), spell the same
folder twice (``ab``, ``a%62``), or are not text at all (lists, booleans). It writes the build, the
list, some overrides and some stale files, hashes every file under the folder, runs the release
(``run_local``, in this process) and checks, with an oracle of its own (plain string formatting and
``unquote``, not the copier's code):

- **exit 0**: every customer's site holds exactly the build's files, ``index.html`` rendered for it
  and its overrides (with ``prune``; without it, those plus what was there), byte for byte; and
  every file that changed lies in some customer's site or in the reports folder;
- **exit 2** (refused): no file changed outside the reports folder;
- any exit: nothing changed outside the sites and the reports.

``max_examples`` keeps the tier to about a minute; ``derandomize`` makes ``make test`` draw the
same examples every time (set ``WEBRELEASE_PROPERTY_EXAMPLES`` and ``WEBRELEASE_PROPERTY_SEED``
to explore further).
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
import yaml
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from webrelease.copier.exitcodes import EXIT_BAD_INPUT, EXIT_OK
from webrelease.copier.fileurls import resolve_file_urls
from webrelease.copier.localrun import run_local
from webrelease.copier.shard import store_set_for
from webrelease.copier.spec import SpecError, load_release

pytestmark = [pytest.mark.properties]

EXAMPLES = int(os.environ.get("WEBRELEASE_PROPERTY_EXAMPLES", "300"))
SEED = os.environ.get("WEBRELEASE_PROPERTY_SEED")

#: Folder names every location is built from, so that locations and values often coincide.
NAMES = ["build", "sites", "ov", "r", "lists", "a", "ab"]
INDEX = "<h1>{{ id }}</h1>\n"
BUILD = {"index.html": INDEX, "app.js": "console.log(1);\n", "css/site.css": "body{}\n"}
META = ".webrelease-meta"

Tree = dict[str, str]
OUTCOMES: collections.Counter[str] = collections.Counter()


def folder(draw: st.DrawFn, usual: str, *, min_size: int = 0) -> str:
    """Mostly ``usual`` (the folder a user would pick for this role), else one to two random names."""
    if draw(st.integers(0, 9)) < 6:
        parts = [p for p in usual.split("/") if p]
    else:
        parts = draw(st.lists(st.sampled_from(NAMES), min_size=min_size, max_size=2))
    encode = draw(st.integers(0, 5)) == 0
    if parts and encode:
        # the same folder, percent-encoded: a file:// URL names the decoded path
        first = parts[0]
        parts[0] = f"%{ord(first[0]):02X}{first[1:]}"
    return "".join(p + "/" for p in parts)


@dataclass(frozen=True)
class Layout:
    source: str
    target: str
    overrides: str | None
    reports: str
    lists: str
    prune: bool


@st.composite
def layouts(draw: st.DrawFn) -> Layout:
    target = folder(draw, "sites") + draw(
        st.sampled_from(["{id}/", "{slug}/", "{id}/{slug}/", "{slug}/www/", "{id}/site/"])
    )
    overrides = None
    if draw(st.booleans()):
        overrides = folder(draw, "ov") + draw(st.sampled_from(["{id}/", "{slug}/", "{id}/ov/"]))
    return Layout(
        source=folder(draw, "build", min_size=1),
        target=target,
        overrides=overrides,
        reports=folder(draw, "r", min_size=1),
        lists=folder(draw, "lists"),
        prune=draw(st.booleans()),
    )


#: Slug values: mostly plain (and unique per customer), sometimes one of the folder names, a value
#: that decodes to a path or to another slug, or no text at all.
ODD_SLUGS = st.one_of(
    st.sampled_from([*NAMES, "a%62", "c%2Fd", "%2e%2e", "..", "x%5Cy", "%41", "b%2F", "a b", "7"]),
    st.integers(0, 2),
    st.booleans(),
    st.lists(st.sampled_from(["a", "b"]), max_size=2),
    st.none(),
)
#: Ids: mostly plain, sometimes a folder name; rarely not an id at all (the list is refused).
ODD_IDS = st.one_of(st.sampled_from(NAMES), st.sampled_from(["acme\n", "Acme", "a/b"]))


@st.composite
def customer_lists(draw: st.DrawFn) -> list[dict[str, Any]]:
    n = draw(st.integers(1, 5))
    out = []
    for i in range(n):
        odd_id = draw(st.integers(0, 9)) == 0
        record: dict[str, Any] = {"id": draw(ODD_IDS) if odd_id else f"c{i}"}
        odd_slug = draw(st.integers(0, 3)) == 0
        slug = draw(ODD_SLUGS) if odd_slug else f"s{i}"
        if slug is not None:
            record["slug"] = slug
        out.append(record)
    return out


@dataclass(frozen=True)
class Extras:
    overrides: tuple[bool, ...]  # per customer: write override files
    stale: tuple[bool, ...]  # per customer: a stale file in its site before the run


def render(template: str, record: Mapping[str, Any]) -> str | None:
    """Where a user would look for a customer's site: the template with its values, percent-decoded
    (a file:// URL), relative to the root; None when the values cannot name one folder."""
    out = template
    for name in ("id", "slug"):
        if "{" + name + "}" not in out:
            continue
        value = record.get(name)
        if value is None or isinstance(value, bool) or not isinstance(value, str | int):
            return None
        out = out.replace("{" + name + "}", str(value))
    path = unquote(out)
    parts = path.rstrip("/").split("/")
    if any(p in ("", ".", "..") or "\\" in p or any(ord(c) < 32 for c in p) for p in parts):
        return None
    return path


def tree(root: Path) -> Tree:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "release.yaml"
    }


def files_under(t: Tree, folder: str) -> dict[str, str]:
    """``relative key -> sha256`` of the files of ``t`` in ``folder`` (metadata sidecars aside)."""
    return {
        k[len(folder) :]: v
        for k, v in t.items()
        if k.startswith(folder)
        and f"{META}/" not in k[len(folder) :]
        and not k[len(folder) :].startswith(META)
    }


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def write(root: Path, rel: str, body: str) -> None:
    path = root / unquote(rel)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.is_dir():
            path.write_text(body)
    except (FileExistsError, NotADirectoryError, IsADirectoryError):
        pass  # a file where a folder should be (or back): the layout itself is odd; leave it


def check(root: Path, layout: Layout, customers: list[dict[str, Any]], extras: Extras) -> str:
    """Set up, run, and assert the property; the outcome's name."""
    for key, body in BUILD.items():
        write(root, layout.source + key, body)
    list_key = layout.lists + "customers.jsonl"
    write(root, list_key, "".join(json.dumps(c) + "\n" for c in customers))
    for c, with_overrides, stale in zip(customers, extras.overrides, extras.stale, strict=True):
        if layout.overrides and with_overrides:
            where = render(layout.overrides, c)
            if where is not None:
                write(root, where + "extra.txt", f"extra for {c['id']!r}\n")
                write(root, where + "app.js", f"override for {c['id']!r}\n")
        site = render(layout.target, c)
        if stale and site is not None:
            write(root, site + "stale.txt", "stale\n")
    base = f"file://{root}/"
    doc = {
        "apiVersion": "webrelease.dev/v1alpha1",
        "kind": "WebRelease",
        "metadata": {"name": "prop"},
        "spec": {
            "source": {"url": base + layout.source},
            "target": {"url": base + layout.target},
            "customers": {"url": base + list_key},
            "reports": {"url": base + layout.reports},
            "templates": ["index.html"],
            "prune": layout.prune,
            "worker": {"objectsInFlight": 4},
            **({"overrides": {"url": base + layout.overrides}} if layout.overrides else {}),
        },
    }
    release = root / "release.yaml"
    release.write_text(yaml.safe_dump(doc, sort_keys=False))
    before = tree(root)
    try:
        loaded = load_release(release)
        spec = resolve_file_urls(loaded.spec, root)
    except (SpecError, ValueError):
        assert tree(root) == before
        return "spec refused"
    result = run_local(spec, "prop", stores=store_set_for(spec), progress=False, echo=lambda _line: None)
    after = tree(root)
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    reports = unquote(layout.reports)
    sites = {c["id"]: render(layout.target, c) for c in customers}
    outside = {
        k
        for k in changed
        if not k.startswith(reports) and not any(s is not None and k.startswith(s) for s in sites.values())
    }
    assert not outside, (
        f"exit {result.exit_code}: changed outside every site and the reports: {sorted(outside)}"
    )
    if result.exit_code == EXIT_BAD_INPUT:
        assert all(k.startswith(reports) for k in changed), f"refused, yet wrote {sorted(changed)}"
        return "list refused" if result.report is None or result.error else "refused"
    if result.exit_code != EXIT_OK:
        return f"exit {result.exit_code}"
    # exit 0: every site is exactly the release
    build_before = files_under(before, unquote(layout.source))
    for c in customers:
        site = sites[c["id"]]
        assert site is not None, f"exit 0, yet customer {c!r} has no site a user can find"
        want = {k: v for k, v in build_before.items() if k != "index.html"}
        want["index.html"] = sha(INDEX.replace("{{ id }}", str(c["id"])))
        if layout.overrides:
            over = render(layout.overrides, c)
            if over is not None:
                want.update(files_under(before, over))
        have = files_under(after, site)
        if layout.prune:
            assert have == want, f"site {site} of {c['id']!r}: {sorted(have)} != {sorted(want)}"
        else:
            assert {k: have.get(k) for k in want} == want, f"site {site} of {c['id']!r} lacks files"
            old = files_under(before, site)
            assert all(have.get(k) == v for k, v in old.items() if k not in want), f"{site}: files lost"
    return "ok"


@pytest.mark.timeout(600)
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=SEED is None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(layout=layouts(), customers=customer_lists(), data=st.data())
def test_exit_0_means_every_site_is_exactly_the_release(
    layout: Layout, customers: list[dict[str, Any]], data: st.DataObject
) -> None:
    n = len(customers)
    extras = Extras(
        tuple(data.draw(st.lists(st.booleans(), min_size=n, max_size=n))),
        tuple(data.draw(st.lists(st.booleans(), min_size=n, max_size=n))),
    )
    with tempfile.TemporaryDirectory(prefix="wr-prop-") as tmp:
        OUTCOMES[check(Path(tmp), layout, customers, extras)] += 1


if SEED is not None:
    test_exit_0_means_every_site_is_exactly_the_release = seed(int(SEED))(
        test_exit_0_means_every_site_is_exactly_the_release
    )


def test_the_random_releases_reached_every_outcome() -> None:
    """Runs after the property (file order): the examples must include refused specs, refused
    lists and successful runs, or the property proved little."""
    total = sum(OUTCOMES.values())
    print(f"\nPROPERTIES random releases: {total} examples: {dict(sorted(OUTCOMES.items()))}")
    if total == 0:
        pytest.skip("the property test did not run in this session")
    assert OUTCOMES["ok"] >= total // 10, OUTCOMES
    assert OUTCOMES["spec refused"] >= 1 and OUTCOMES["list refused"] >= 1, OUTCOMES
