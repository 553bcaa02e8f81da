"""Sites never overlap what a run reads or keeps: the spec's fixed parts, each customer's site, and
every site against every other customer's site and overrides; values and ids taken exactly."""

from __future__ import annotations

import io
import time
from typing import Any

import pytest

from webrelease.copier.customers import CustomerListError, check_records, id_problem, site_guard_for
from webrelease.copier.places import folder_place
from webrelease.copier.snapshot.freeze import freeze_snapshot
from webrelease.copier.sources.base import RawRecord
from webrelease.copier.sources.formats import parse_json_array, parse_jsonl
from webrelease.copier.spec import SpecError, load_yaml_document, parse_spec
from webrelease.copier.storage import LocalStore, parse_url
from webrelease.copier.targets import TargetError, check_target_template, render_target

B = "s3://bkt"


def spec(**urls: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "source": {"url": f"{B}/build/"},
        "target": {"url": f"{B}/sites/{{id}}/"},
        "customers": {"url": f"{B}/lists/customers.jsonl"},
        "reports": {"url": f"{B}/reports/"},
    }
    for key, url in urls.items():
        if url is None:
            out.pop(key, None)
        else:
            out[key] = {"url": url}
    return out


@pytest.mark.parametrize(
    ("urls", "field", "says"),
    [
        ({"target": f"{B}/build/sites/{{id}}/"}, "spec.target.url", "inside the build"),
        ({"target": f"{B}/build/{{id}}/"}, "spec.target.url", "inside the build"),
        ({"source": B}, "spec.target.url", "inside the build"),
        ({"reports": f"{B}/"}, "spec.target.url", "inside the reports"),
        ({"overrides": f"{B}/sites/{{id}}/ov/"}, "spec.overrides.url", "inside its own site"),
        ({"overrides": f"{B}/{{id}}/", "target": f"{B}/{{id}}/www/"}, "spec.overrides.url", "around its own"),
        ({"reports": f"{B}/build/reports/"}, "spec.reports.url", "keep spec.reports.url outside"),
        ({"customers": f"{B}/build/customers.jsonl"}, "spec.customers.url", "the customer list"),
        ({"overrides": f"{B}/build/ov/{{id}}/"}, "spec.overrides.url", "every customer's overrides"),
        (
            {"source": "file:///w/build/", "target": "file:///w/bu%69ld/{id}/", "reports": "file:///r/"},
            "spec.target.url",
            "inside the build",
        ),
        (
            {"source": "file://build/", "target": "file://build/s/{id}/", "reports": "file://r/"},
            "spec.target.url",
            "(spec.source.url file://build/)",
        ),
    ],
)
def test_a_layout_where_sites_meet_other_places_is_refused(
    urls: dict[str, str], field: str, says: str
) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(spec(**urls))
    assert info.value.field == field, str(info.value)
    assert f"{field}: " in str(info.value)
    assert says in str(info.value)


@pytest.mark.parametrize(
    "urls",
    [
        {},
        {"target": f"{B}/{{id}}/"},  # the build beside the sites: only a customer 'build' is refused
        {"overrides": f"{B}/{{id}}/ov/", "target": f"{B}/{{id}}/www/"},
        {"overrides": f"{B}/ov/{{id}}/", "target": f"{B}/{{id}}/"},
        {"source": "file:///w/build/", "target": "file:///w/sites/{id}/", "reports": "file:///w/r/"},
    ],
)
def test_sound_layouts_pass(urls: dict[str, str]) -> None:
    parse_spec(spec(**urls))


def records(*recs: dict[str, Any]) -> list[RawRecord]:
    return [RawRecord(f"line {n}", r) for n, r in enumerate(recs, start=1)]


def refused(spec_urls: dict[str, str], *recs: dict[str, Any]) -> str:
    s = parse_spec(spec(**spec_urls))
    with pytest.raises(CustomerListError) as info:
        check_records(records(*recs), source="list", guard=site_guard_for(s))
    return str(info.value)


def test_a_customer_whose_site_is_the_build_or_the_reports_or_holds_the_list_is_refused() -> None:
    layout = {"target": f"{B}/{{id}}/"}
    assert "line 2: customer 'build': its site s3://bkt/build/ would be the build" in refused(
        layout, {"id": "a"}, {"id": "build"}
    )
    assert "customer 'reports'" in refused(layout, {"id": "reports"})
    text = refused(layout, {"id": "lists"})
    assert "would contain the customer list (spec.customers.url" in text
    assert "change its 'id'" in text


def test_a_site_holding_other_customers_overrides_is_refused_by_line() -> None:
    layout = {"target": f"{B}/{{id}}/", "overrides": f"{B}/ov/{{id}}/"}
    text = refused(layout, {"id": "a"}, {"id": "ov"}, {"id": "b"})
    assert "line 2: customer 'ov': its site s3://bkt/ov/ and its overrides s3://bkt/ov/ov/ overlap" in text
    # another customer's overrides (not its own): found across the list, in memory and frozen
    layout = {"target": f"{B}/{{region}}/{{slug}}/", "overrides": f"{B}/ov/{{id}}/"}
    recs = (
        {"id": "a", "region": "eu", "slug": "a"},
        {"id": "b", "region": "ov", "slug": "c"},
        {"id": "c", "region": "eu", "slug": "c"},
    )
    says = "line 2: customer 'b': its site s3://bkt/ov/c/ is customer 'c''s overrides (line 3)"
    assert says in refused(layout, *recs)
    s = parse_spec(spec(**layout))
    with pytest.raises(CustomerListError) as info:
        freeze_snapshot(
            _Source(records(*recs)),
            LocalStore(),
            parse_url("file:///nonexistent-never-written/"),
            guard=site_guard_for(s),
        )
    assert says in str(info.value)


def test_a_site_inside_another_customers_overrides_is_refused() -> None:
    layout = {"target": f"{B}/sites/{{id}}/", "overrides": f"{B}/{{slug}}/"}
    text = refused(layout, {"id": "a", "slug": "a"}, {"id": "b", "slug": "sites"})
    assert (
        "line 2: customer 'b': its site s3://bkt/sites/b/ and its overrides s3://bkt/sites/ overlap" in text
    )
    # a layout that could meet, with values that do not, passes
    s = parse_spec(spec(**layout))
    check_records(
        records({"id": "a", "slug": "x"}, {"id": "b", "slug": "y"}), source="l", guard=site_guard_for(s)
    )


class _Source:
    name = "list"

    def __init__(self, recs: list[RawRecord]) -> None:
        self._recs = recs

    def records(self) -> Any:
        return iter(self._recs)


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (["a", "b"], "is a list (['a', 'b'])"),
        (True, "is a boolean (True)"),
        ({"a": 1}, "is an object"),
        (1.5, "is a number with a fraction"),
    ],
)
def test_a_placeholder_value_that_is_not_text_is_refused_naming_customer_and_field(
    value: Any, says: str
) -> None:
    text = refused({"target": f"{B}/sites/{{slug}}/"}, {"id": "a", "slug": "a"}, {"id": "b", "slug": value})
    assert f"line 2: customer 'b': field 'slug' {says}" in text
    with pytest.raises(TargetError, match="field 'slug'"):
        render_target(f"{B}/sites/{{slug}}/", {"id": "b", "slug": value})
    assert render_target(f"{B}/sites/{{slug}}/", {"slug": 7}) == f"{B}/sites/7/"


def test_file_placeholders_are_checked_decoded_and_sites_compared_decoded() -> None:
    t = "file:///w/sites/{slug}/"
    for value in ("c%2Fd", "%2e%2e", "%2E", "a%00b", "a%5Cb"):
        with pytest.raises(TargetError, match="decoded from"):
            render_target(t, {"slug": value})
    assert render_target("s3://bkt/sites/{slug}/", {"slug": "c%2Fd"}) == "s3://bkt/sites/c%2Fd/"
    layout = {"source": "file:///w/build/", "target": t, "reports": "file:///w/r/"}
    text = refused(layout, {"id": "a", "slug": "ab"}, {"id": "b", "slug": "a%62"})
    assert "line 2: customer 'b' has the same site file:///w/sites/ab/ as 'a'" in text
    with pytest.raises(ValueError, match="percent escape"):
        check_target_template("file:///w/sites/{a}%{b}/")


@pytest.mark.parametrize("cid", ["acme\n", "acme\r\n", "\nacme", "ac\nme", "acme\x00"])
def test_an_id_with_a_newline_is_not_an_id(cid: str) -> None:
    assert id_problem(cid) is not None
    assert id_problem("acme") is None


def test_a_key_twice_in_a_customer_record_names_the_line() -> None:
    lines = list(parse_jsonl(io.BytesIO(b'{"id":"a"}\n{"id":"b","id":"c"}\n')))
    assert lines[1].where == "line 2"
    assert lines[1].error is not None and "the key 'id' appears twice" in lines[1].error
    items = list(parse_json_array(io.BytesIO(b'[{"id":"a"},\n {"id":"b", "id":"c"},\n {"id":"d"}]')))
    assert [(r.where, r.error is None) for r in items] == [
        ("line 1", True),
        ("line 2", False),
        ("line 3", True),
    ]


def test_a_key_twice_in_a_release_names_the_line() -> None:
    with pytest.raises(SpecError, match=r"r.yaml, line 4: the key 'target' appears twice .*line 2"):
        load_yaml_document("spec:\n  target: {url: a}\n  source: {url: b}\n  target: {url: c}\n", "r.yaml")
    # a merge key that overrides is YAML's own feature, not a repeat
    assert load_yaml_document("b: &b {k: 1}\nc:\n  <<: *b\n  k: 2\n", "r") == {"b": {"k": 1}, "c": {"k": 2}}


def test_alias_bombs_are_refused_fast() -> None:
    doc = "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    for i in range(1, 10):
        prev, name = chr(96 + i), chr(97 + i)
        doc += f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 10) + "]\n"
    start = time.process_time()
    with pytest.raises(SpecError, match="expands to more than"):
        load_yaml_document(doc, "r.yaml")
    assert time.process_time() - start < 1
    with pytest.raises(SpecError, match="refers to a node that contains it"):
        load_yaml_document("a: &a [1, *a]\n", "r.yaml")
    with pytest.raises(SpecError, match="nested too deeply"):
        load_yaml_document("[" * 100_000, "r.yaml")
    # a few aliases are fine
    assert load_yaml_document("a: &a {x: 1}\nb: *a\n", "r") == {"a": {"x": 1}, "b": {"x": 1}}


@pytest.mark.parametrize(
    "url",
    [
        "s3://bkt",
        "s3://bkt/",
        "s3://bkt/a/b",
        "s3://bkt/a/b/",
        "s3://bkt/a%2Fb/",
        "file:///w/x/",
        "file:///w/x",
        "file://localhost/w/x/",
        "file:///w/a%62%20c/",
        "file:///w/%E2%9C%93/",
    ],
)
def test_places_read_urls_as_the_storage_layer_does(url: str) -> None:
    loc = parse_url(url)
    place = folder_place(url)
    assert place is not None
    assert (place.scheme, place.bucket, place.path) == (loc.scheme, loc.bucket, loc.prefix)
