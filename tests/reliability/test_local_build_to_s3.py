"""A local build released to S3 sites (issue-11 review): a build file whose name is not UTF-8 is
legal on a Linux folder but no S3 key can hold it. Every shard crashed on it (exit 1, a
``UnicodeEncodeError``); it is one bad-input error naming the file, and nothing is written."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from tests.harness.s3_fixtures import unique_bucket_name
from tests.harness.s3server import S3Endpoint
from tests.reliability.kit import inventory
from tests.reliability.test_bad_input import cli_in_process

pytestmark = [pytest.mark.reliability, pytest.mark.storage]


def files(root: Path) -> dict[str, bytes]:
    return {os.fsdecode(p): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_local_build_file_whose_name_is_not_utf8_is_refused_for_s3_sites(
    s3_server: S3Endpoint,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    sites = s3_server.make_bucket(unique_bucket_name("nu"))
    try:
        check_refused(s3_server, sites, tmp_path, capsys)
    finally:
        s3_server.remove_bucket(sites)


def check_refused(
    s3_server: S3Endpoint, sites: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    build = tmp_path / "build"
    build.mkdir()
    (build / "index.html").write_text("<h1>{{ name|e }}</h1>")
    (build / os.fsdecode(b"caf\xe9.html")).write_bytes(b"x")  # Latin-1, as an old tool wrote it
    (tmp_path / "customers.jsonl").write_text(json.dumps({"id": "c1", "name": "C"}) + "\n")
    spec = {
        "source": {"url": f"file://{build}/"},
        "target": {"url": f"s3://{sites}/sites/{{id}}/"},
        "customers": {"url": f"file://{tmp_path}/customers.jsonl"},
        "reports": {"url": f"file://{tmp_path}/reports/"},
        "templates": ["index.html"],
        "storage": {"endpointUrl": s3_server.endpoint_url, "addressingStyle": "path"},
    }
    doc = {"apiVersion": "webrelease.dev/v1alpha1", "kind": "WebRelease", "metadata": {"name": "nu"}}
    release = tmp_path / "release.yaml"
    release.write_text(yaml.safe_dump({**doc, "spec": spec}))
    before = (inventory(s3_server), files(tmp_path))
    for command in ("run", "plan"):
        code, text = cli_in_process([command, str(release), "--no-progress"], capsys)
        assert code == 2, text
        assert "caf\\xe9.html" in text and "not UTF-8" in text and "rename it" in text, text
        assert "Traceback" not in text
    assert (inventory(s3_server), files(tmp_path)) == before
