"""Glob patterns over keys (templates, entrypoints)."""

from __future__ import annotations

import pytest

from webrelease.copier.globs import GlobError, GlobSet, compile_glob


@pytest.mark.parametrize(
    ("pattern", "matches", "misses"),
    [
        ("index.html", ["index.html"], ["a/index.html", "index.htm", "xindex.html"]),
        ("**/*.html", ["index.html", "a/b/c.html"], ["a/b.htm", "a.html/x"]),
        ("**/index.html", ["index.html", "docs/index.html"], ["docs/xindex.html"]),
        ("assets/*.js", ["assets/app.js"], ["assets/x/app.js", "app.js"]),
        ("assets/**", ["assets/a", "assets/a/b/c"], ["assetsx/a", "a/assets/b"]),
        ("config.?s", ["config.js", "config.ts"], ["config.mjs", "config/s"]),
        ("[!_]*.json", ["a.json"], ["_a.json", "/a.json"]),
        ("a.[jt]s", ["a.js", "a.ts"], ["a.cs"]),
    ],
)
def test_patterns(pattern: str, matches: list[str], misses: list[str]) -> None:
    regex = compile_glob(pattern)
    for key in matches:
        assert regex.fullmatch(key), (pattern, key)
    for key in misses:
        assert not regex.fullmatch(key), (pattern, key)


def test_a_set_matches_any_of_its_patterns() -> None:
    is_entry = GlobSet(["index.html", "**/*.html"])
    assert is_entry("docs/a.html") and is_entry("index.html") and not is_entry("a.js")
    assert not GlobSet([])("index.html")


@pytest.mark.parametrize("bad", ["", "/abs/*.js", "a[b"])
def test_bad_patterns_are_refused(bad: str) -> None:
    with pytest.raises(GlobError):
        compile_glob(bad)
