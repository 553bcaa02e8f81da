"""The release model: loading release.yaml, errors that name the field, relative file:// URLs."""

from __future__ import annotations

from pathlib import Path

import pytest

from webrelease.copier.fileurls import resolve_file_url, resolve_file_urls
from webrelease.copier.spec import SpecError, load_release, parse_spec
from webrelease.copier.storage import object_url

ROOT = Path(__file__).resolve().parents[2]

MINIMAL = {
    "source": {"url": "s3://builds/web/1.2.3/"},
    "target": {"url": "s3://sites/{id}/"},
    "customers": {"url": "s3://lists/customers.jsonl"},
    "reports": {"url": "s3://reports/"},
}


def test_the_example_release_loads_with_its_settings() -> None:
    release = load_release(ROOT / "examples" / "release.yaml")
    assert release.metadata.name == "demo"
    assert release.spec.templates == ["index.html", "config.js", "settings.json"]
    assert release.spec.prune is True
    assert release.spec.sharding.customers_per_shard == 2
    assert release.spec.worker.objects_in_flight == 16


def test_defaults() -> None:
    spec = parse_spec(MINIMAL)
    assert spec.entrypoints == ["index.html", "**/*.html"]
    assert spec.prune is False
    assert spec.worker.objects_in_flight == 64


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"target": {"url": "s3://sites/all/"}}, "spec.target.url"),
        ({"customers": {"url": "s3://lists/c.jsonl", "inline": [{"id": "a"}]}}, "spec.customers"),
        ({"sharding": {"customersPerShard": 0}}, "spec.sharding.customersPerShard"),
        ({"worker": {"objectsInFlight": 100000}}, "spec.worker.objectsInFlight"),
        ({"prun": True}, "spec.prun"),
        ({"source": {"url": "http://example.com/"}}, "spec.source.url"),
    ],
)
def test_validation_errors_name_the_field(change: dict[str, object], field: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec({**MINIMAL, **change})
    assert info.value.field == field
    assert field in str(info.value)


def test_relative_file_urls_resolve_against_the_release_folder(tmp_path: Path) -> None:
    base = tmp_path / "rel"
    assert resolve_file_url("file://build/", base) == f"file://{base}/build/"
    assert resolve_file_url("file://../out/sites/{id}/", base) == f"file://{tmp_path}/out/sites/{{id}}/"
    assert resolve_file_url("file://list.jsonl", base) == f"file://{base}/list.jsonl"
    assert resolve_file_url("file:///abs/x/", base) == "file:///abs/x/"
    assert resolve_file_url("s3://b/x/", base) == "s3://b/x/"
    spec = parse_spec(
        {
            "source": {"url": "file://build/"},
            "target": {"url": "file://../out/{id}/"},
            "customers": {"url": "file://c.jsonl"},
            "reports": {"url": "file://reports/"},
            "overrides": {"url": "file://ov/{id}/"},
        }
    )
    resolved = resolve_file_urls(spec, base)
    assert resolved.source.url == f"file://{base}/build/"
    assert resolved.target.url == f"file://{tmp_path}/out/{{id}}/"
    assert resolved.overrides is not None and resolved.overrides.url == f"file://{base}/ov/{{id}}/"
    assert resolved.customers.url == f"file://{base}/c.jsonl"


def test_object_urls_split_into_folder_and_key() -> None:
    loc, key = object_url("s3://lists/a/customers.jsonl")
    assert (loc.bucket, loc.prefix, key) == ("lists", "a/", "customers.jsonl")
    loc, key = object_url("file:///tmp/x/c.csv")
    assert (loc.prefix, key) == ("/tmp/x/", "c.csv")
    with pytest.raises(ValueError, match="must name an object"):
        object_url("s3://lists/folder/")
