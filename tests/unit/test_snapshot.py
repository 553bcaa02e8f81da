"""The snapshot's bytes and the report layout (reading and writing are in tests/storage)."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime

from webrelease.copier.runlayout import local_run_id, run_folder, step_folder_name
from webrelease.copier.snapshot import encode, shard_count, shard_results_key
from webrelease.copier.storage import parse_url


def test_snapshot_lines_are_canonical_json_with_id_first() -> None:
    data = encode([{"name": "Ünïcode </script>", "id": "a", "n": 1}, {"id": "b"}])
    assert data == '{"id":"a","name":"Ünïcode </script>","n":1}\n{"id":"b"}\n'.encode()
    assert [json.loads(line)["id"] for line in data.splitlines()] == ["a", "b"]
    # the same list always has the same sha256
    assert (
        hashlib.sha256(data).hexdigest()
        == hashlib.sha256(encode([{"id": "a", "name": "Ünïcode </script>", "n": 1}, {"id": "b"}])).hexdigest()
    )


def test_report_layout() -> None:
    loc = run_folder(parse_url("s3://reports/webrelease/"), "shop", "demo", "20250101T000000Z-abc123")
    assert loc.url == "s3://reports/webrelease/shop/demo/20250101T000000Z-abc123/"
    assert shard_results_key(12) == "shards/12.jsonl"
    local = run_folder(parse_url("file:///tmp/r/"), "default", "name", "run")
    assert local.url == "file:///tmp/r/default/name/run/"
    assert [step_folder_name(s, 2) for s in ("main", "canary", "rest", "plan", "retry")] == [
        "main",
        "canary",
        "rest",
        "plan",
        "retry-2",
    ]


def test_run_ids_sort_by_time_and_are_unique() -> None:
    a = local_run_id(datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC))
    assert re.fullmatch(r"20250102T030405Z-[0-9a-f]{6}", a)
    assert local_run_id() != local_run_id()


def test_shard_count() -> None:
    assert [shard_count(n, 50) for n in (0, 1, 50, 51, 100, 101)] == [0, 1, 1, 2, 2, 3]
