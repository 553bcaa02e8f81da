"""Templates: sandboxed, strict, JSON-safe, bounded."""

from __future__ import annotations

import json

import pytest

from webrelease.copier.render import MAX_OUTPUT_BYTES, RenderError, Templates, json_literal

RECORD = {"id": "acme", "name": "ACME </script>\u2028", "apiUrl": "https://api.acme.example", "n": 3}


def render(source: str, key: str = "t.txt", record: dict[str, object] | None = None) -> str:
    t = Templates({key: source.encode()}, release_name="rel", source_url="s3://b/build/")
    return t.render(key, RECORD if record is None else record).body.decode()


def test_record_fields_customer_and_release_are_the_context() -> None:
    assert render("{{ id }} {{ customer.apiUrl }} {{ release.name }} {{ release.source }}") == (
        "acme https://api.acme.example rel s3://b/build/"
    )


def test_json_filter_gives_a_literal_safe_in_js_json_and_script_tags() -> None:
    out = render("{{ name|json }}")
    assert "<" not in out and ">" not in out and "\u2028" not in out
    assert json.loads(out) == RECORD["name"]
    obj = render("{{ customer|json }}")
    assert json.loads(obj) == RECORD
    assert render("{{ 'a&b'|json }}") == '"a\\u0026b"'


def test_no_autoescape_and_trailing_newline_kept() -> None:
    assert render("<b>{{ name }}</b>\n").endswith("</script>\u2028</b>\n")
    assert render("{{ name|e }}").startswith("ACME &lt;/script&gt;")


def test_content_type_of_rendered_files() -> None:
    t = Templates(
        {"config.js": b"x", "a/settings.json": b"{}", "index.html": b"", "logo.bin": b""},
        release_name="r",
        source_url="s",
    )
    assert t.render("config.js", RECORD).content_type == "text/javascript; charset=utf-8"
    assert t.render("a/settings.json", RECORD).content_type == "application/json; charset=utf-8"
    assert t.render("index.html", RECORD).content_type == "text/html; charset=utf-8"
    assert t.render("logo.bin", RECORD).content_type == "application/octet-stream"


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("a\n{{ missing }}", "t.txt, line 2: 'missing' is undefined"),
        ("{{ customer.nope }}", "has no attribute 'nope'"),
        ("{{ ''.__class__.__mro__ }}", "not allowed by the sandbox"),
        ("{{ id.__class__ }}", "not allowed by the sandbox"),
        ("{% include 'other.html' %}", "cannot include, import or extend"),
        ("{% import 'm.html' as m %}", "cannot include, import or extend"),
        ("{% extends 'base.html' %}", "cannot include, import or extend"),
        ("{{ 'x' * 100000000 }}", "'\\*' would build"),
        ("{{ [1] * 100000000 }}", "'\\*' would build"),
        ("{{ 9 ** 99999 }}", "exponent"),
        ("{% for i in range(200000) %}{% endfor %}", "Range too big"),
        ("{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}", "recursion too deep"),
        ("{% for i in range(99999) %}{{ 'y' * 999 }}{% endfor %}", "output larger than"),
        ("{{ 1 / 0 }}", "ZeroDivisionError"),
        ("{{ customer.update({'id': 'x'}) }}", "not allowed by the sandbox|unsafe"),
    ],
)
def test_failures_are_render_errors_with_a_reason(source: str, reason: str) -> None:
    with pytest.raises(RenderError, match=reason):
        render(source)


def test_a_template_that_does_not_compile_or_decode_fails_every_customer_with_the_reason() -> None:
    t = Templates({"a.js": b"{% if %}", "b.js": b"\xff\xfe"}, release_name="r", source_url="s")
    with pytest.raises(RenderError, match=r"a\.js, line 1: syntax error"):
        t.render("a.js", RECORD)
    with pytest.raises(RenderError, match=r"b\.js: not UTF-8"):
        t.render("b.js", RECORD)
    assert t.keys == {"a.js", "b.js"}


def test_output_cap_is_ten_mebibytes() -> None:
    assert MAX_OUTPUT_BYTES == 10 * 1024 * 1024
    ok = render("{% for i in range(9) %}{{ 'z' * 1000000 }}{% endfor %}")
    assert len(ok) == 9_000_000


def test_json_filter_failures_name_the_field_or_the_value() -> None:
    with pytest.raises(RenderError, match=r"t\.txt, line 2: 'apiUrl' is undefined"):
        render("x\n{{ apiUrl|json }}", record={"id": "a"})
    with pytest.raises(RenderError, match="'nope' is undefined"):
        render("{{ {'a': nope}|json }}")
    with pytest.raises(RenderError, match="json filter: Out of range float"):
        render("{{ x|json }}", record={"id": "a", "x": float("nan")})
    assert json_literal({"a": [1, None]}) == '{"a": [1, null]}'
