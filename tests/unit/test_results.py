"""Shard results: the per-customer lines, the bounded summary, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from webrelease.copier.exitcodes import EXIT_BAD_INPUT, EXIT_CRASH, EXIT_CUSTOMERS_FAILED, EXIT_OK, combine
from webrelease.copier.results import (
    CustomerResult,
    ShardResult,
    Tally,
    decode_results,
    encode_results,
    fold,
    parse_summary,
    termination_path,
    write_termination_message,
)


def customers(
    ok: int, failed: int, reason: str = "template config.js, line 3: 'apiUrl' is undefined"
) -> list[CustomerResult]:
    out = [
        CustomerResult(f"ok-{i:05d}", True, counts=Tally(copied=3, rendered=1, unchanged=2, bytes=100))
        for i in range(ok)
    ]
    out += [CustomerResult(f"bad-{i:05d}", False, reason=reason) for i in range(failed)]
    return out


def test_exit_codes() -> None:
    assert ShardResult(0, customers(3, 0)).exit_code == EXIT_OK
    assert ShardResult(0, customers(3, 1)).exit_code == EXIT_CUSTOMERS_FAILED
    assert ShardResult(0, error="sha256 mismatch", error_code=EXIT_BAD_INPUT).exit_code == EXIT_BAD_INPUT
    assert ShardResult(0, error="boom").exit_code == EXIT_CRASH
    assert (EXIT_OK, EXIT_CRASH, EXIT_BAD_INPUT, EXIT_CUSTOMERS_FAILED) == (0, 1, 2, 3)


def test_combining_shards_keeps_the_most_severe_code() -> None:
    assert combine([]) == EXIT_OK
    assert combine([0, 0]) == EXIT_OK
    assert combine([0, 3, 0]) == EXIT_CUSTOMERS_FAILED
    assert combine([3, 1]) == EXIT_CRASH
    assert combine([3, 1, 2]) == EXIT_BAD_INPUT
    assert combine([0, 137]) == EXIT_CRASH


def test_summary_counts_and_sample() -> None:
    s = ShardResult(7, customers(5, 2), results_url="s3://r/x/shards/7.jsonl").summary()
    assert (s.index, s.customers, s.succeeded, s.failed, s.exit_code) == (7, 7, 5, 2, EXIT_CUSTOMERS_FAILED)
    assert s.objects.copied == 15 and s.objects.bytes == 500 and s.objects.unchanged == 10
    assert [f.id for f in s.failed_sample] == ["bad-00000", "bad-00001"]
    assert s.truncated == 0
    assert parse_summary(s.to_bytes()) == s
    data = json.loads(s.to_bytes())
    assert data["exitCode"] == 3 and data["failedSample"][0]["reason"].startswith("template config.js")


@pytest.mark.parametrize("failed", [11, 1000, 100_000])
def test_summary_is_under_4096_bytes_whatever_the_failures(failed: int) -> None:
    long_reason = "copy assets/" + "x" * 5000 + ": the bucket said no \u2603" * 50
    result = ShardResult(
        3,
        customers(10, failed, reason=long_reason),
        results_url="s3://reports/" + "p/" * 400 + "shards/3.jsonl",
        error=None,
    )
    data = result.summary().to_bytes()
    assert len(data) < 4096
    s = parse_summary(data)
    assert s.failed == failed
    assert s.truncated == failed - len(s.failed_sample)
    assert 1 <= len(s.failed_sample) <= 10


def test_a_huge_error_still_fits() -> None:
    s = ShardResult(1, error="e" * 100_000, error_code=EXIT_BAD_INPUT).summary()
    assert len(s.to_bytes()) < 4096 and s.error is not None and s.error.startswith("eee")


def test_results_lines_round_trip() -> None:
    rs = customers(2, 1)
    rs[0].site = "s3://sites/ok-00000/"
    back = decode_results(encode_results(rs))
    assert [r.to_json() for r in back] == [r.to_json() for r in rs]
    lines = encode_results(rs).decode().splitlines()
    assert json.loads(lines[2]) == {
        "id": "bad-00000",
        "status": "failed",
        "reason": "template config.js, line 3: 'apiUrl' is undefined",
        "copied": 0,
        "rendered": 0,
        "unchanged": 0,
        "deleted": 0,
        "bytes": 0,
        "seconds": 0.0,
    }


def test_fold_totals() -> None:
    a = ShardResult(0, customers(2, 1)).summary()
    b = ShardResult(1, customers(3, 0)).summary()
    t = fold([a, b])
    assert t["customers"] == 6 and t["succeeded"] == 5 and t["failed"] == 1
    assert t["objects"]["copied"] == 15
    assert t["shards"] == {"total": 2, "succeeded": 1, "failed": 1}


def test_termination_path_precedence(tmp_path: Path) -> None:
    assert termination_path("/flag", "/env") == Path("/env")
    assert termination_path("/flag", None) == Path("/flag")
    target = tmp_path / "term"
    write_termination_message(target, ShardResult(2, customers(1, 0)).summary())
    assert parse_summary(target.read_bytes()).succeeded == 1
