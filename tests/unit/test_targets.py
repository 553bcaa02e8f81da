"""Target templates: the fixed-prefix rule that keeps one customer out of another's site."""

from __future__ import annotations

import pytest

from webrelease.copier.targets import TargetError, check_target_template, fixed_prefix, render_target


def test_renders_a_customer_site_inside_the_fixed_prefix() -> None:
    assert render_target("s3://sites/{id}/", {"id": "acme"}) == "s3://sites/acme/"
    assert render_target("s3://sites/{region}/{id}/", {"id": "a", "region": "eu"}) == "s3://sites/eu/a/"
    assert fixed_prefix("s3://sites/{region}/{id}/") == "s3://sites/"


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ({"id": "a", "region": ".."}, "single safe path segment"),
        ({"id": "a", "region": "../b"}, "single safe path segment"),
        ({"id": "a", "region": "eu/b"}, "single safe path segment"),
        ({"id": "a", "region": "x\\y"}, "single safe path segment"),
        ({"id": "a", "region": "e\nu"}, "single safe path segment"),
        ({"id": "a", "region": ""}, "is empty"),
        ({"id": "a"}, "no field 'region'"),
        ({"id": "a", "region": None}, "no field 'region'"),
    ],
)
def test_a_value_that_would_leave_or_nest_its_site_is_refused(record: dict[str, object], reason: str) -> None:
    with pytest.raises(TargetError, match=reason):
        render_target("s3://sites/{region}/{id}/", record)


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        ("s3://sites/all/", "no placeholder"),
        ("s3://sites/site-{id}/", "must end with '/'"),
        ("s3://{id}/", "must end with '/'|bucket must be fixed"),
        ("s3://sites/{id}", "must end with '/'"),
        ("s3://sites/{id.name}/", "plain field name"),
        ("s3://sites/{id!r}/", "plain field name"),
        ("s3://sites/{id:>5}/", "plain field name"),
        ("s3://sites/{id/", "placeholder syntax"),
        ("file:///{id}/", "folder must be fixed"),
        ("file://{id}/", "folder must be fixed"),
        ("file:////{id}/", "folder must be fixed"),
    ],
)
def test_unsafe_templates_are_refused(template: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        check_target_template(template)
