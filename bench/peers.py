"""The peers: how a user would release one build to N customers' sites with s5cmd, rclone, the AWS CLI.

Each gets the same objects, the same server (directly or through the latency proxy) and the same
credentials, and is run as its users run it at its best:

- **s5cmd** (one process for everything): ``s5cmd run`` on a commands file — one ``cp`` per object for a
  fresh release (as the issue asks), one ``sync`` per customer for a re-run. Default 256 workers.
- **rclone** (one process per customer, one after the other): ``rclone copy`` / ``rclone sync`` with
  ``--transfers``/``--checkers`` at the bench's in-flight figure, ``--checksum`` (compare size and
  MD5 from the listing: the rclone docs' advice for S3), ``--fast-list`` (one recursive listing
  instead of one per folder) and ``--s3-no-check-bucket --s3-no-head --s3-no-head-object`` (no
  bucket check, no HEAD of the destination before and after each copy).
- **aws** (AWS CLI v1, one process per customer): ``aws s3 cp --recursive`` / ``aws s3 sync`` with
  ``max_concurrent_requests`` at the bench's in-flight figure (default 10).

None of them can render templates: they copy the templated files as they are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from bench.measure import Cmd


@dataclass(frozen=True)
class Job:
    """One release: the build under ``s3://src_bucket/src_prefix`` to ``s3://dst_bucket/<id>/``."""

    endpoint: str
    src_bucket: str
    src_prefix: str
    dst_bucket: str
    customers: Sequence[str]
    keys: Sequence[str]
    work: Path
    in_flight: int
    #: credentials and region (bench.s3.credentials_env)
    env: Mapping[str, str]

    @property
    def region(self) -> str:
        return self.env["AWS_REGION"]

    @property
    def objects(self) -> int:
        return len(self.customers) * len(self.keys)


class Tool(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def version(self) -> str: ...

    def fresh(self, job: Job) -> list[Cmd]:
        """Commands that copy the build to every customer's (empty) site."""
        ...

    def rerun(self, job: Job) -> list[Cmd]:
        """Commands that bring every site up to date with the build (copying only what differs)."""
        ...


@dataclass(frozen=True)
class S5cmd:
    binary: Path
    version: str
    name: str = "s5cmd"

    def _run(self, job: Job, lines: list[str], label: str) -> list[Cmd]:
        job.work.mkdir(parents=True, exist_ok=True)
        cmdfile = job.work / f"s5cmd-{label}.txt"
        cmdfile.write_text("\n".join(lines) + "\n", encoding="utf-8")
        argv = [str(self.binary), "--endpoint-url", job.endpoint, "--log", "error", "run", str(cmdfile)]
        return [Cmd(argv, dict(job.env))]

    def fresh(self, job: Job) -> list[Cmd]:
        src = f"s3://{job.src_bucket}/{job.src_prefix}"
        lines = [
            f'cp "{src}{key}" "s3://{job.dst_bucket}/{cust}/{key}"'
            for cust in job.customers
            for key in job.keys
        ]
        return self._run(job, lines, "fresh")

    def rerun(self, job: Job) -> list[Cmd]:
        src = f"s3://{job.src_bucket}/{job.src_prefix}*"
        lines = [f'sync "{src}" "s3://{job.dst_bucket}/{cust}/"' for cust in job.customers]
        return self._run(job, lines, "sync")


@dataclass(frozen=True)
class Rclone:
    binary: Path
    version: str
    name: str = "rclone"

    def _env(self, job: Job) -> dict[str, str]:
        job.work.mkdir(parents=True, exist_ok=True)
        conf = job.work / "rclone.conf"
        conf.write_text("", encoding="utf-8")
        env = dict(job.env)
        env.update(
            RCLONE_CONFIG=str(conf),
            RCLONE_CONFIG_S3_TYPE="s3",
            RCLONE_CONFIG_S3_PROVIDER="Other",
            RCLONE_CONFIG_S3_ENDPOINT=job.endpoint,
            RCLONE_CONFIG_S3_ACCESS_KEY_ID=env["AWS_ACCESS_KEY_ID"],
            RCLONE_CONFIG_S3_SECRET_ACCESS_KEY=env["AWS_SECRET_ACCESS_KEY"],
            RCLONE_CONFIG_S3_REGION=job.region,
            RCLONE_CONFIG_S3_FORCE_PATH_STYLE="true",
        )
        return env

    def _per_customer(self, job: Job, verb: str) -> list[Cmd]:
        env = self._env(job)
        n = str(job.in_flight)
        flags = [
            *("--transfers", n, "--checkers", n),
            "--checksum",
            "--fast-list",
            *("--s3-no-check-bucket", "--s3-no-head", "--s3-no-head-object"),
            "-q",
        ]
        src = f"s3:{job.src_bucket}/{job.src_prefix.rstrip('/')}"
        return [
            Cmd([str(self.binary), verb, src, f"s3:{job.dst_bucket}/{cust}", *flags], env)
            for cust in job.customers
        ]

    def fresh(self, job: Job) -> list[Cmd]:
        return self._per_customer(job, "copy")

    def rerun(self, job: Job) -> list[Cmd]:
        return self._per_customer(job, "sync")


@dataclass(frozen=True)
class AwsCli:
    binary: Path
    version: str
    name: str = "aws"

    def _env(self, job: Job) -> dict[str, str]:
        job.work.mkdir(parents=True, exist_ok=True)
        conf = job.work / "aws.config"
        conf.write_text(
            "[default]\n"
            f"region = {job.region}\n"
            "s3 =\n"
            f"  max_concurrent_requests = {job.in_flight}\n"
            "  addressing_style = path\n",
            encoding="utf-8",
        )
        env = dict(job.env)
        env.update(AWS_CONFIG_FILE=str(conf), AWS_SHARED_CREDENTIALS_FILE=str(job.work / "no-credentials"))
        return env

    def _per_customer(self, job: Job, *verb: str) -> list[Cmd]:
        env = self._env(job)
        src = f"s3://{job.src_bucket}/{job.src_prefix}"
        return [
            Cmd(
                [
                    str(self.binary),
                    "--endpoint-url",
                    job.endpoint,
                    "s3",
                    *verb,
                    src,
                    f"s3://{job.dst_bucket}/{cust}/",
                    "--only-show-errors",
                    "--no-progress",
                ],
                env,
            )
            for cust in job.customers
        ]

    def fresh(self, job: Job) -> list[Cmd]:
        return self._per_customer(job, "cp", "--recursive")

    def rerun(self, job: Job) -> list[Cmd]:
        return self._per_customer(job, "sync")
