"""Planning one customer: what is unchanged, what is written and in which order, what is pruned."""

from __future__ import annotations

from webrelease.copier.globs import GlobSet
from webrelease.copier.plan import (
    META_MD5,
    META_SHA256,
    Op,
    Origin,
    Served,
    Verdict,
    Want,
    compare,
    desired_files,
    plan_customer,
    served_as,
    type_problem,
    undecided,
    vouched,
)
from webrelease.copier.storage import ObjectInfo, guess_content_type

IS_ENTRY = GlobSet(["index.html", "**/*.html"])


def want(key: str, md5: str, origin: Origin = Origin.BUILD, size: int = 10, sha: str | None = None) -> Want:
    return Want(key, origin, size, md5, sha)


def have(
    key: str, md5: str | None, size: int = 10, meta: dict[str, str] | None = None, ctype: str | None = None
) -> ObjectInfo:
    """A site object as a HEAD shows it: served with the type the release gives ``key`` unless
    ``ctype`` says otherwise."""
    return ObjectInfo(key, size, md5, meta or {}, ctype or guess_content_type(key))


BUILD = {
    k: want(k, m)
    for k, m in {
        "index.html": "i1",
        "docs/page.html": "p1",
        "assets/app.js": "a1",
        "assets/logo.png": "l1",
        "config.js": "c-template-source",
    }.items()
}


def test_an_empty_site_gets_every_file_entrypoints_after_the_rest() -> None:
    plan = plan_customer(BUILD, {}, is_entrypoint=IS_ENTRY, prune=True)
    assert [a.key for a in plan.writes] == ["assets/app.js", "assets/logo.png", "config.js"]
    assert [a.key for a in plan.entrypoints] == ["docs/page.html", "index.html"]
    assert all(a.entrypoint for a in plan.entrypoints) and not any(a.entrypoint for a in plan.writes)
    assert not plan.unchanged and not plan.deletes
    order = [a.key for a in plan.actions()]
    assert order.index("index.html") > max(
        order.index(k) for k in ("assets/app.js", "assets/logo.png", "config.js")
    )
    assert plan.bytes_to_write == 50


def test_unchanged_files_by_md5_cost_nothing_and_changed_ones_are_rewritten() -> None:
    site = {
        "index.html": have("index.html", "i1"),
        "docs/page.html": have("docs/page.html", "OLD"),
        "assets/app.js": have("assets/app.js", "a1", size=11),
        "assets/logo.png": have("assets/logo.png", "L1"),  # ETags may come upper case
        "config.js": have("config.js", "c-template-source"),
    }
    plan = plan_customer(BUILD, site, is_entrypoint=IS_ENTRY, prune=False)
    assert {a.key for a in plan.unchanged} == {"index.html", "config.js", "assets/logo.png"}
    assert [a.key for a in plan.writes] == ["assets/app.js"]
    assert [a.key for a in plan.entrypoints] == ["docs/page.html"]


def test_renders_and_overrides_replace_build_files() -> None:
    rendered = {"config.js": want("config.js", "rendered", Origin.TEMPLATE)}
    overrides = {
        "assets/logo.png": want("assets/logo.png", "own-logo", Origin.OVERRIDE),
        "assets/extra.css": want("assets/extra.css", "x", Origin.OVERRIDE),
    }
    desired = desired_files(BUILD, rendered, overrides)
    assert desired["config.js"].origin is Origin.TEMPLATE
    assert desired["assets/logo.png"].md5 == "own-logo"
    plan = plan_customer(
        desired, {"assets/logo.png": have("assets/logo.png", "l1")}, is_entrypoint=IS_ENTRY, prune=False
    )
    ops = {a.key: a.op for a in plan.actions()}
    assert ops == {
        "assets/app.js": Op.COPY,
        "assets/logo.png": Op.OVERRIDE,
        "assets/extra.css": Op.OVERRIDE,
        "config.js": Op.RENDER,
        "docs/page.html": Op.COPY,
        "index.html": Op.COPY,
    }


def test_prune_deletes_only_what_the_release_does_not_have_and_only_when_asked() -> None:
    site = {k: have(k, w.md5) for k, w in BUILD.items()} | {"old/gone.js": have("old/gone.js", "g")}
    kept = plan_customer(BUILD, site, is_entrypoint=IS_ENTRY, prune=False)
    assert not kept.deletes and len(kept.unchanged) == len(BUILD)
    pruned = plan_customer(BUILD, site, is_entrypoint=IS_ENTRY, prune=True)
    assert [a.key for a in pruned.deletes] == ["old/gone.js"]
    assert pruned.actions()[-1].op is Op.DELETE


def test_unknown_md5_is_decided_by_a_head_and_our_metadata() -> None:
    site = {"assets/app.js": have("assets/app.js", None), "index.html": have("index.html", None)}
    assert undecided(BUILD, site) == ["assets/app.js", "index.html"]
    heads = {
        "assets/app.js": have("assets/app.js", None, meta={META_MD5: "a1"}),
        "index.html": have("index.html", None, meta={META_MD5: "stale"}),
    }
    plan = plan_customer(BUILD, site, is_entrypoint=IS_ENTRY, prune=False, heads=heads)
    assert "assets/app.js" in {a.key for a in plan.unchanged}
    assert "index.html" in {a.key for a in plan.entrypoints}
    # unanswered: rewritten (when in doubt, copy)
    plan = plan_customer(BUILD, site, is_entrypoint=IS_ENTRY, prune=False)
    assert {a.key for a in plan.writes} >= {"assets/app.js"}


def test_the_right_bytes_served_as_another_type_are_rewritten() -> None:
    """The listing calls the bytes the same; only a HEAD shows the Content-Type (and encoding)."""
    site = {"assets/app.js": have("assets/app.js", "a1"), "index.html": have("index.html", "i1")}
    assert undecided(BUILD, site) == ["assets/app.js", "index.html"]
    assert undecided(BUILD, site, check_type=False) == []
    heads = {
        "assets/app.js": have("assets/app.js", "a1", ctype="text/plain"),
        "index.html": have("index.html", "i1", ctype="TEXT/HTML"),  # types compare case-blind
    }
    plan = plan_customer(BUILD, site, is_entrypoint=IS_ENTRY, prune=False, heads=heads)
    assert [a.key for a in plan.writes if a.key in site] == ["assets/app.js"]
    assert [a.key for a in plan.unchanged] == ["index.html"]
    assert type_problem("assets/app.js", BUILD["assets/app.js"], heads["assets/app.js"]) == (
        "Content-Type 'text/plain', expected 'text/javascript'"
    )
    svgz = want("logo.svgz", "s1")
    plain = ObjectInfo("logo.svgz", 10, "s1", {}, "image/svg+xml")
    assert type_problem("logo.svgz", svgz, plain) == "Content-Encoding None, expected 'gzip'"
    assert (
        type_problem("logo.svgz", svgz, ObjectInfo("logo.svgz", 10, "s1", {}, "image/svg+xml", "gzip"))
        is None
    )


def test_compare() -> None:
    w = want("k", "m", sha="s")
    assert compare(w, have("k", "m")) is Verdict.SAME
    assert compare(w, have("k", "x")) is Verdict.DIFFERENT
    assert compare(w, have("k", "m", size=3)) is Verdict.DIFFERENT
    assert compare(w, have("k", None)) is Verdict.UNKNOWN
    assert compare(w, ObjectInfo("k", 10, None, {META_SHA256: "s"})) is Verdict.SAME
    assert compare(w, ObjectInfo("k", 10, None, {META_SHA256: "t", META_MD5: "m"})) is Verdict.DIFFERENT
    assert compare(want("k", "m"), ObjectInfo("k", 10, None, {"Webrelease-Md5": "m"})) is Verdict.SAME


def test_a_site_record_vouches_only_for_the_md5_and_type_it_names() -> None:
    """A record entry spares the HEAD only when the listed MD5, the release's and the record's
    are one and the recorded types are the release's; it never decides bytes."""
    site = {
        "assets/app.js": have("assets/app.js", "a1"),
        "index.html": have("index.html", "i1"),
        "docs/page.html": have("docs/page.html", "other"),
        "assets/big.bin": have("assets/big.bin", None),
    }
    desired = {**BUILD, "assets/big.bin": want("assets/big.bin", "b1")}
    record = {
        "assets/app.js": served_as("assets/app.js", BUILD["assets/app.js"]),
        "index.html": Served("i1", "text/plain", None),  # another type than the release's
        "docs/page.html": Served("other", "text/html", None),  # the listing's MD5, not the release's
        "assets/big.bin": Served("b1", "application/octet-stream", None),  # MD5 not listed
    }
    assert served_as("assets/app.js", BUILD["assets/app.js"]) == Served("a1", "text/javascript", None)
    assert vouched("assets/app.js", BUILD["assets/app.js"], site["assets/app.js"], record)
    assert undecided(desired, site, record=record) == ["assets/big.bin", "index.html"]
    plan = plan_customer(desired, site, is_entrypoint=IS_ENTRY, prune=False)
    assert "docs/page.html" in {a.key for a in plan.entrypoints}  # wrong bytes: rewritten anyway
    assert served_as("x.svgz", want("x.svgz", "s1")) == Served("s1", "image/svg+xml", "gzip")
