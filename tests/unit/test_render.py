"""Templates: sandboxed, strict, JSON-safe, bounded."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from types import FrameType
from typing import Any

import pytest

from webrelease.copier.render import (
    MAX_OUTPUT_BYTES,
    MAX_TEMPLATE_DEPTH,
    RenderError,
    Templates,
    json_literal,
)
from webrelease.copier.spec import TEMPLATE_TIMEOUT_SECONDS, SpecError, parse_spec

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


# -- the time limit ---------------------------------------------------------------------------------

#: The shapes of a template that loops without output: the shard must not be busy for ever.
ENDLESS = {
    "empty-nested-range": "x\n{% for i in range(100000) %}{% for j in range(100000) %}"
    "{% endfor %}{% endfor %}",
    "nested-literal-lists": "x\n"
    + "{% for a in [1, 2, 3, 4, 5, 6, 7, 8, 9, 10] %}" * 12
    + "{% endfor %}" * 12,
    "recursive-macro": "x\n{% macro f(n) %}{% if n < 60 %}{{ f(n + 1) }}{{ f(n + 1) }}{% endif %}"
    "{% endmacro %}{{ f(0) }}",
    "loop-in-a-call-block": "x\n{% macro w() %}{{ caller() }}{% endmacro %}"
    "{% call w() %}{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    "{% endcall %}",
}


def timed_render(source: str, seconds: float, key: str = "config.js") -> tuple[str, float]:
    """(the RenderError's reason, CPU seconds the render used)."""
    t = Templates({key: source.encode()}, release_name="r", source_url="s", timeout_seconds=seconds)
    start = time.thread_time()
    with pytest.raises(RenderError) as err:
        t.render(key, RECORD)
    return str(err.value), time.thread_time() - start


@pytest.mark.parametrize("source", list(ENDLESS.values()), ids=list(ENDLESS))
def test_a_template_that_loops_without_end_fails_after_its_time(source: str) -> None:
    reason, used = timed_render(source, 0.2)
    assert (
        reason
        == "template config.js, line 2: rendering took longer than 0.2 s of CPU time (a loop without end?)"
    )
    assert 0.2 <= used < 1.5, used


def test_the_default_limit_is_five_seconds_and_the_spec_can_change_it() -> None:
    assert TEMPLATE_TIMEOUT_SECONDS == 5.0
    t = Templates({"a": b""}, release_name="r", source_url="s")
    assert t.timeout_seconds == 5.0
    base = {
        "source": {"url": "s3://build/b/"},
        "target": {"url": "s3://sites/{id}/"},
        "customers": {"inline": [{"id": "a"}]},
        "reports": {"url": "s3://reports/r/"},
    }
    assert parse_spec(base).template_timeout_seconds == 5.0
    assert parse_spec({**base, "templateTimeoutSeconds": 0.5}).template_timeout_seconds == 0.5
    for bad in (0, -1, 61, "x"):
        with pytest.raises(SpecError, match=r"spec\.templateTimeoutSeconds"):
            parse_spec({**base, "templateTimeoutSeconds": bad})


def test_a_template_that_works_hard_but_ends_renders_under_a_tight_limit() -> None:
    t = Templates(
        {"a.txt": b"{% for i in range(300) %}{% for j in range(300) %}{% endfor %}{% endfor %}{{ id }}"},
        release_name="r",
        source_url="s",
        timeout_seconds=2,
    )
    assert t.render("a.txt", RECORD).body == b"acme"


def test_the_previous_trace_function_is_back_after_every_render() -> None:
    seen: list[str] = []

    def mine(frame: FrameType, event: str, arg: Any) -> None:
        seen.append(frame.f_code.co_name)

    t = Templates(
        {"ok": b"{{ id }}", "endless": ENDLESS["empty-nested-range"].encode(), "bad": b"{{ nope }}"},
        release_name="r",
        source_url="s",
        timeout_seconds=0.1,
    )
    previous = sys.gettrace()
    sys.settrace(mine)
    try:
        assert t.render("ok", RECORD).body == b"acme"
        assert sys.gettrace() is mine
        for key in ("endless", "bad"):
            with pytest.raises(RenderError):
                t.render(key, RECORD)
            assert sys.gettrace() is mine
    finally:
        sys.settrace(previous)
    assert not any(name == "root" for name in seen), "the template ran under our tracer, not the caller's"


def test_limits_are_per_thread_and_nothing_leaks_to_other_threads() -> None:
    """Concurrent renders each stop at their own limit, a good render beside them is exact, and a
    thread started while a template runs has no trace function."""
    endless = ENDLESS["empty-nested-range"].encode()
    short = Templates({"config.js": endless}, release_name="r", source_url="s", timeout_seconds=0.3)
    long = Templates({"config.js": endless}, release_name="r", source_url="s", timeout_seconds=1.0)
    good = Templates({"config.js": b"{{ id }}"}, release_name="r", source_url="s")
    before = (sys.gettrace(), threading.gettrace())

    def fails(t: Templates) -> str:
        with pytest.raises(RenderError) as err:
            t.render("config.js", RECORD)
        return str(err.value)

    def renders_while_others_loop() -> list[bytes]:
        out = []
        for _ in range(50):
            out.append(good.render("config.js", RECORD).body)
            time.sleep(0.001)
        return out

    def trace_of_a_new_thread() -> object:
        seen: list[object] = []
        th = threading.Thread(target=lambda: seen.append(sys.gettrace()))
        th.start()
        th.join()
        return seen[0]

    with ThreadPoolExecutor(4) as pool:
        a = pool.submit(fails, short)
        b = pool.submit(fails, long)
        c = pool.submit(renders_while_others_loop)
        d = pool.submit(trace_of_a_new_thread)
        assert "longer than 0.3 s" in a.result(timeout=60)
        assert "longer than 1 s" in b.result(timeout=60)
        assert c.result(timeout=60) == [b"acme"] * 50
        assert d.result(timeout=60) is None
    assert (sys.gettrace(), threading.gettrace()) == before


def test_macros_nest_up_to_the_depth_limit() -> None:
    def nested(depth: int) -> str:
        body = "{% if n < DEPTH %}{{ f(n + 1) }}{% else %}{{ n }}{% endif %}".replace("DEPTH", str(depth))
        return "{% macro f(n) %}" + body + "{% endmacro %}{{ f(1) }}"

    assert render(nested(MAX_TEMPLATE_DEPTH - 5)) == str(MAX_TEMPLATE_DEPTH - 5)
    with pytest.raises(RenderError, match="line 1: recursion too deep"):
        render(nested(MAX_TEMPLATE_DEPTH + 5))


def _deeper(frames: int, call: Callable[[], None]) -> None:
    """``call()``, from ``frames`` more frames down the stack."""
    if frames:
        _deeper(frames - 1, call)
    else:
        call()


@pytest.mark.parametrize("frames", range(5))
def test_recursion_cannot_switch_the_time_limit_off(frames: int) -> None:
    """An error raised while calling the trace function switches tracing off for the thread, and
    Jinja's ``sequence`` test swallows any exception of ``len()``. A template recursing to exactly
    the depth where ``len(loop)`` hits the interpreter's recursion limit would then loop untraced
    (a macro level is 5 frames: the render starts ``frames`` deeper to reach every depth).
    Template frames nest at most MAX_TEMPLATE_DEPTH deep, far from that limit."""
    source = (
        "{% macro f(n) %}{% if n < levels %}{{ f(n + 1) }}{% else %}"
        "{% for y in [1] %}{{ [loop]|select('sequence')|list }}{% endfor %}"
        "{% for i in range(3000) %}{% for j in range(3000) %}{% endfor %}{% endfor %}"
        "{% endif %}{% endmacro %}{{ f(0) }}"
    )
    t = Templates({"a": source.encode()}, release_name="r", source_url="s", timeout_seconds=0.1)
    limit = sys.getrecursionlimit()
    for levels in range(limit // 10, limit // 4):

        def fails(levels: int = levels) -> None:
            with pytest.raises(RenderError, match=r"recursion too deep|longer than"):
                t.render("a", {"levels": levels})

        _deeper(frames, fails)
