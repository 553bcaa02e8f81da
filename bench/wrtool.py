"""webrelease as a bench tool: ``webrelease shard`` — exactly what one Job pod runs — on one shard
holding every customer of the comparison, against a snapshot written once at setup."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import yaml

from bench.config import ROOT
from bench.measure import Cmd
from bench.peers import Job
from webrelease.copier.snapshot import encode

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

META_BUCKET = "bench-meta"
RELEASE_NAME = "bench"


def webrelease_version() -> str:
    """The package version and the commit the bench runs (``+dirty`` with uncommitted changes)."""
    from importlib.metadata import version

    try:
        git = ["git", "-C", str(ROOT)]
        rev = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        )
        rev_text = rev.stdout.strip()
        dirty = subprocess.run(
            [*git, "status", "--porcelain", "--", "copier", "operator"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return version("webrelease")
    return f"{version('webrelease')} ({rev_text}{'+dirty' if dirty else ''})"


@dataclass(frozen=True)
class Snapshot:
    url: str
    sha256: str
    count: int


def write_snapshot(s3: S3Client, customers: Sequence[Mapping[str, object]]) -> Snapshot:
    """The frozen, sorted customer list in webrelease's canonical form, as the operator writes it."""
    records = sorted((dict(c) for c in customers), key=lambda r: str(r["id"]))
    data = encode(records)
    s3.create_bucket(Bucket=META_BUCKET)
    s3.put_object(Bucket=META_BUCKET, Key="snapshot/customers.jsonl", Body=data)
    digest = hashlib.sha256(data).hexdigest()
    return Snapshot(f"s3://{META_BUCKET}/snapshot/customers.jsonl", digest, len(records))


@dataclass(frozen=True)
class Webrelease:
    """``command`` starts ``webrelease`` (the console script, or a bench variant of it);
    ``processes`` shard processes run at the same time, each with its part of the customers (what
    several processes per pod would do)."""

    command: Sequence[str]
    version: str
    snapshot: Snapshot
    templates: Sequence[str]
    name: str = "webrelease"
    processes: int = 1

    def spec(self, job: Job) -> dict[str, object]:
        return {
            "apiVersion": "webrelease.dev/v1alpha1",
            "kind": "WebRelease",
            "metadata": {"name": RELEASE_NAME},
            "spec": {
                "source": {"url": f"s3://{job.src_bucket}/{job.src_prefix}"},
                "target": {"url": f"s3://{job.dst_bucket}/{{id}}/"},
                "customers": {"url": self.snapshot.url},
                "reports": {"url": f"s3://{META_BUCKET}/reports/"},
                "templates": list(self.templates),
                "sharding": {"customersPerShard": self.snapshot.count},
                "storage": {"endpointUrl": job.endpoint, "region": job.region, "addressingStyle": "path"},
                "worker": {"objectsInFlight": job.in_flight},
            },
        }

    def _shards(self, job: Job, label: str) -> list[Cmd]:
        job.work.mkdir(parents=True, exist_ok=True)
        spec_file = job.work / f"release-{label}.yaml"
        spec_file.write_text(yaml.safe_dump(self.spec(job), sort_keys=False), encoding="utf-8")
        size = -(-self.snapshot.count // self.processes)
        cmds: list[Cmd] = []
        for index in range(-(-self.snapshot.count // size)):
            argv = [
                *self.command,
                "shard",
                "--spec-file",
                str(spec_file),
                "--snapshot-url",
                self.snapshot.url,
                "--snapshot-sha256",
                self.snapshot.sha256,
                "--index",
                str(index),
                "--shard-size",
                str(size),
                "--report-url",
                f"s3://{META_BUCKET}/reports/{job.dst_bucket}/{label}/",
                "--termination-message-path",
                str(job.work / f"termination-{label}-{index}.json"),
            ]
            cmds.append(Cmd(argv, dict(job.env), concurrent=True))
        return cmds

    def fresh(self, job: Job) -> list[Cmd]:
        return self._shards(job, f"fresh-{job.src_prefix.strip('/')}")

    def rerun(self, job: Job) -> list[Cmd]:
        return self._shards(job, f"rerun-{job.src_prefix.strip('/')}")
