"""What a shard reports: one line per customer in the report, a compact summary for Kubernetes.

- ``<report>/shards/<index>.jsonl``: one JSON object per customer of the shard, in snapshot order
  (:class:`CustomerResult`: ``id``, ``status`` ``ok``/``failed``, ``reason``, ``site``, counts).
- ``<report>/shards/<index>.summary.json`` and the pod's termination message: a
  :class:`ShardSummary`, always under :data:`SUMMARY_LIMIT` bytes whatever the number of
  failures (a sample of failed ids with truncated reasons, and how many were left out).

The operator reads summaries with :func:`parse_summary`; the exit codes are in
:mod:`webrelease.copier.exitcodes`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field

from webrelease.copier.exitcodes import EXIT_CRASH, EXIT_CUSTOMERS_FAILED, EXIT_OK

#: Kubernetes reads at most 4096 bytes of a termination message; we stay well below.
SUMMARY_LIMIT: Final = 4000
#: At most this many failed customers are named in a summary.
SAMPLE_MAX: Final = 10
#: A reason in a summary is cut to this many characters (the full one is in the shard's JSONL).
SAMPLE_REASON_MAX: Final = 160
DEFAULT_TERMINATION_PATH: Final = "/dev/termination-log"

STATUS_OK: Final = "ok"
STATUS_FAILED: Final = "failed"


@dataclass(slots=True)
class Tally:
    copied: int = 0
    rendered: int = 0
    unchanged: int = 0
    deleted: int = 0
    bytes: int = 0

    def add(self, other: Tally) -> None:
        self.copied += other.copied
        self.rendered += other.rendered
        self.unchanged += other.unchanged
        self.deleted += other.deleted
        self.bytes += other.bytes

    def to_json(self) -> dict[str, int]:
        return {
            "copied": self.copied,
            "rendered": self.rendered,
            "unchanged": self.unchanged,
            "deleted": self.deleted,
            "bytes": self.bytes,
        }


@dataclass(slots=True)
class CustomerResult:
    id: str
    ok: bool
    reason: str | None = None
    site: str | None = None
    counts: Tally = field(default_factory=Tally)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "status": STATUS_OK if self.ok else STATUS_FAILED}
        if self.reason is not None:
            out["reason"] = self.reason
        if self.site is not None:
            out["site"] = self.site
        out.update(self.counts.to_json())
        out["seconds"] = round(self.seconds, 3)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CustomerResult:
        return cls(
            id=str(data["id"]),
            ok=data["status"] == STATUS_OK,
            reason=data.get("reason"),
            site=data.get("site"),
            counts=Tally(
                *(int(data.get(k, 0)) for k in ("copied", "rendered", "unchanged", "deleted", "bytes"))
            ),
            seconds=float(data.get("seconds", 0.0)),
        )


def encode_results(results: Iterable[CustomerResult]) -> bytes:
    return b"".join(
        json.dumps(r.to_json(), ensure_ascii=False, separators=(",", ":")).encode() + b"\n" for r in results
    )


def decode_results(data: bytes) -> list[CustomerResult]:
    return [CustomerResult.from_json(json.loads(line)) for line in data.splitlines() if line.strip()]


class FailedSample(BaseModel):
    model_config = ConfigDict(frozen=True)
    id: str
    reason: str


class ObjectCounts(BaseModel):
    model_config = ConfigDict(frozen=True)
    copied: int = 0
    rendered: int = 0
    unchanged: int = 0
    deleted: int = 0
    bytes: int = 0


class ShardSummary(BaseModel):
    """The compact result of one shard (termination message, ``shards/<index>.summary.json``).

    ``exitCode`` is the shard's exit code; ``error`` is set when the shard could not run at all
    (bad input: exit 2, or a crash: exit 1) and then the counts are zero. ``failedSample`` names
    up to a few failed customers; ``truncated`` is how many more failed.
    """

    model_config = ConfigDict(frozen=True, populate_by_name=True)
    v: int = 1
    index: int
    exit_code: int = Field(alias="exitCode")
    customers: int = 0
    succeeded: int = 0
    failed: int = 0
    objects: ObjectCounts = ObjectCounts()
    failed_sample: list[FailedSample] = Field(default_factory=list, alias="failedSample")
    truncated: int = 0
    results: str | None = None
    error: str | None = None
    seconds: float = 0.0

    def to_bytes(self) -> bytes:
        return self.model_dump_json(by_alias=True, exclude_none=True).encode()


def parse_summary(text: str | bytes) -> ShardSummary:
    """A summary from a termination message or summary file (pydantic ValidationError if it is not one)."""
    return ShardSummary.model_validate_json(text)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(slots=True)
class ShardResult:
    index: int
    customers: list[CustomerResult] = field(default_factory=list)
    #: set when the shard could not run (bad input or crash): why
    error: str | None = None
    error_code: int | None = None
    results_url: str | None = None
    seconds: float = 0.0

    @property
    def failed(self) -> list[CustomerResult]:
        return [c for c in self.customers if not c.ok]

    @property
    def exit_code(self) -> int:
        if self.error is not None:
            return self.error_code if self.error_code is not None else EXIT_CRASH
        return EXIT_CUSTOMERS_FAILED if self.failed else EXIT_OK

    def totals(self) -> Tally:
        total = Tally()
        for c in self.customers:
            total.add(c.counts)
        return total

    def summary(self, limit: int = SUMMARY_LIMIT) -> ShardSummary:
        """The summary, shrunk until its JSON is under ``limit`` bytes."""
        failed = self.failed
        t = self.totals()
        base: dict[str, Any] = {
            "index": self.index,
            "exitCode": self.exit_code,
            "customers": len(self.customers),
            "succeeded": len(self.customers) - len(failed),
            "failed": len(failed),
            "objects": ObjectCounts(**t.to_json()),
            "results": self.results_url,
            "error": self.error,
            "seconds": round(self.seconds, 3),
        }
        n = min(len(failed), SAMPLE_MAX)
        reason_max = SAMPLE_REASON_MAX
        error_max = 1000
        while True:
            sample = [FailedSample(id=c.id, reason=_cut(c.reason or "", reason_max)) for c in failed[:n]]
            fields = dict(base, failedSample=sample, truncated=len(failed) - n)
            if base["error"] is not None:
                fields["error"] = _cut(base["error"], error_max)
            summary = ShardSummary.model_validate(fields)
            if len(summary.to_bytes()) < limit:
                return summary
            if reason_max > 40:
                reason_max //= 2
            elif n > 0:
                n -= 1
            elif error_max > 100:
                error_max //= 2
            elif base["results"] is not None:
                base["results"] = None
            else:  # pragma: no cover - the fixed fields alone are a few hundred bytes
                raise AssertionError("summary cannot be made small enough")


def termination_path(explicit: str | None, env_path: str | None) -> Path | None:
    """Where to write the termination message: ``TERMINATION_MESSAGE_PATH`` from the environment if
    set, else the ``--termination-message-path`` option, else ``/dev/termination-log`` if writable."""
    for candidate in (env_path, explicit):
        if candidate:
            return Path(candidate)
    default = Path(DEFAULT_TERMINATION_PATH)
    if default.exists() and os.access(default, os.W_OK):
        return default
    return None


def write_termination_message(path: Path | None, summary: ShardSummary) -> None:
    if path is None:
        return
    data = summary.to_bytes()
    assert len(data) < 4096
    path.write_bytes(data)


def fold(summaries: Sequence[ShardSummary]) -> dict[str, Any]:
    """Totals over shards (for a run's index.json)."""
    objects = Tally()
    for s in summaries:
        objects.add(Tally(**s.objects.model_dump()))
    return {
        "customers": sum(s.customers for s in summaries),
        "succeeded": sum(s.succeeded for s in summaries),
        "failed": sum(s.failed for s in summaries),
        "objects": objects.to_json(),
        "shards": {
            "total": len(summaries),
            "succeeded": sum(1 for s in summaries if s.exit_code == EXIT_OK),
            "failed": sum(1 for s in summaries if s.exit_code != EXIT_OK),
        },
    }
