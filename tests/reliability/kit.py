"""The reliability tier's toolkit: a release of a few hundred customers on a real S3 server, and the
checks every scenario ends with.

- :class:`BigRelease` puts a small build (templates, nested folders, binary files, entrypoints)
  and a customer list in fresh buckets and writes the ``release.yaml`` a user would write. A few
  *doomed* customers lack a field a template needs: they fail on every attempt, so a run always
  has failed customers to name exactly.
- :func:`check_outcome` is how every fault scenario ends: ``webrelease verify`` must find no
  difference in any site the run calls succeeded, the failed customers must be exactly the doomed
  ones, no customer may be missing or counted twice, and an oracle independent of the copier (MD5s
  computed here, compared with the sites' ETags from one listing) must agree.
- :func:`inventory` lists every object of every bucket on the server, to prove what a run did
  *not* write.
- :class:`RestartableS3` is a versitygw of our own on a fixed port and folder, which a test can
  kill and start again; :class:`ShareThrottleProxy` answers a share of requests with 503 SlowDown.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import random
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from tests.harness.s3_fixtures import unique_bucket_name
from tests.harness.s3server import FaultProxy, S3Endpoint, S3Server, free_port

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

WEBRELEASE = Path(sys.executable).with_name("webrelease")

# -- the build ----------------------------------------------------------------------------------

INDEX_TEMPLATE = (
    "<!doctype html><title>{{ name|e }}</title>\n"
    '<script>window.C = {{ {"id": id, "plan": plan}|json }};</script>\n'
    '<link rel="stylesheet" href="assets/site.css">\n'
)
CONFIG_TEMPLATE = "window.API = {{ apiUrl|json }};\nwindow.RELEASE = {{ release.name|json }};\n"


def _blob(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


BUILD: dict[str, bytes] = {
    "index.html": INDEX_TEMPLATE.encode(),
    "config.js": CONFIG_TEMPLATE.encode(),
    "docs/index.html": b"<!doctype html><h1>Docs</h1>\n",
    "assets/app.js": b"console.log('app');\n" * 50,
    "assets/site.css": b"body { margin: 0 }\n" * 20,
    "assets/img/logo.png": b"\x89PNG\r\n\x1a\n" + _blob(1, 3000),
    "data/blob.bin": _blob(2, 20_000),
}
TEMPLATES = ["index.html", "config.js"]
ENTRYPOINTS = ["**/*.html"]


def md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def js_literal(value: Any) -> str:
    """What the ``json`` filter gives, computed independently of the copier."""
    text = json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
    for char, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(char, esc)
    return text


def expected_site(customer: Mapping[str, Any], release_name: str) -> dict[str, bytes]:
    """Every file of a customer's site, computed here (plain formatting, not Jinja)."""
    import html

    out = {k: v for k, v in BUILD.items() if k not in TEMPLATES}
    out["index.html"] = (
        f"<!doctype html><title>{html.escape(str(customer['name']))}</title>\n"
        f"<script>window.C = {js_literal({'id': customer['id'], 'plan': customer['plan']})};</script>\n"
        '<link rel="stylesheet" href="assets/site.css">\n'
    ).encode()
    out["config.js"] = (
        f"window.API = {js_literal(customer['apiUrl'])};\nwindow.RELEASE = {js_literal(release_name)};\n"
    ).encode()
    return out


def make_customers(n: int, doomed: int) -> list[dict[str, Any]]:
    """``n`` good customers and ``doomed`` ones without ``apiUrl`` (``config.js`` cannot render for
    them). Doomed ids sort last, so they share the last shard."""
    plans = ["starter", "team", "enterprise"]
    good = [
        {
            "id": f"c{i:04d}",
            "name": f"Customer {i} & Co <b>",
            "apiUrl": f"https://api.c{i:04d}.example/v1",
            "plan": plans[i % 3],
        }
        for i in range(n)
    ]
    bad = [{"id": f"zz-doomed-{k}", "name": f"Doomed {k}", "plan": "starter"} for k in range(doomed)]
    return good + bad


def encode_jsonl(records: Iterable[Mapping[str, Any]]) -> bytes:
    return b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in records)


# -- storage views ------------------------------------------------------------------------------

Inventory = dict[tuple[str, str], str]


@functools.lru_cache(maxsize=16)
def client_for(endpoint: S3Endpoint) -> S3Client:
    """One boto3 client per endpoint for the checks (making one costs ~0.1 s; they are thread-safe)."""
    return endpoint.client()


def inventory(endpoint: S3Endpoint) -> Inventory:
    """Every object of every bucket on the server: ``(bucket, key) -> ETag``."""
    client = client_for(endpoint)
    out: Inventory = {}
    for bucket in client.list_buckets().get("Buckets", []):
        name = bucket.get("Name", "")
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
            for obj in page.get("Contents", []):
                out[(name, obj.get("Key", ""))] = obj.get("ETag", "").strip('"')
    return out


def changed(before: Inventory, after: Inventory) -> set[tuple[str, str]]:
    """Objects added, removed or rewritten with other bytes."""
    return {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}


def list_bucket(endpoint: S3Endpoint, bucket: str, prefix: str = "") -> dict[str, str]:
    """``key -> ETag`` of every object under ``prefix``."""
    client = client_for(endpoint)
    out: dict[str, str] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            out[obj.get("Key", "")] = obj.get("ETag", "").strip('"')
    return out


def read_object(endpoint: S3Endpoint, bucket: str, key: str) -> bytes:
    return client_for(endpoint).get_object(Bucket=bucket, Key=key)["Body"].read()


# -- the CLI ------------------------------------------------------------------------------------


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without any AWS / webrelease / Job settings, plus ``extra``."""
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "WEBRELEASE_", "JOB_", "TERMINATION_", "KUBECONFIG"))
    }
    return {**base, **(extra or {})}


def cli(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 300, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``webrelease ARGS`` as a user runs it (a real process)."""
    return subprocess.run(
        [str(WEBRELEASE), *args],
        env=clean_env(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# -- one release --------------------------------------------------------------------------------


@dataclass
class BigRelease:
    """A release of ``customers`` in fresh buckets of ``endpoint`` (the server tests check through),
    while ``spec_endpoint`` (default: the same) is the one written into the spec: a proxy, say."""

    endpoint: S3Endpoint
    folder: Path
    customers: list[dict[str, Any]]
    name: str = "rel"
    spec_endpoint: S3Endpoint | None = None
    customers_per_shard: int = 25
    objects_in_flight: int = 16
    retries_per_shard: int = 2
    tolerated_failed: int = 100
    build_bucket: str = field(default_factory=lambda: unique_bucket_name("rb"))
    sites_bucket: str = field(default_factory=lambda: unique_bucket_name("rs"))
    reports_bucket: str = field(default_factory=lambda: unique_bucket_name("rr"))
    extra_spec: dict[str, Any] = field(default_factory=dict)

    @property
    def buckets(self) -> list[str]:
        return [self.build_bucket, self.sites_bucket, self.reports_bucket]

    @property
    def ids(self) -> set[str]:
        return {str(c["id"]) for c in self.customers}

    @property
    def doomed(self) -> set[str]:
        return {str(c["id"]) for c in self.customers if "apiUrl" not in c}

    @property
    def good(self) -> set[str]:
        return self.ids - self.doomed

    def setup(self) -> BigRelease:
        client = client_for(self.endpoint)
        for bucket in self.buckets:
            self.endpoint.make_bucket(bucket)
        for key, body in BUILD.items():
            client.put_object(Bucket=self.build_bucket, Key=f"build/{key}", Body=body)
        client.put_object(
            Bucket=self.build_bucket, Key="lists/customers.jsonl", Body=encode_jsonl(self.customers)
        )
        self.folder.mkdir(parents=True, exist_ok=True)
        self.write()
        return self

    def teardown(self) -> None:
        for bucket in self.buckets:
            self.endpoint.remove_bucket(bucket)

    def spec(self) -> dict[str, Any]:
        ep = self.spec_endpoint or self.endpoint
        spec: dict[str, Any] = {
            "source": {"url": f"s3://{self.build_bucket}/build/"},
            "target": {"url": f"s3://{self.sites_bucket}/sites/{{id}}/"},
            "customers": {"url": f"s3://{self.build_bucket}/lists/customers.jsonl"},
            "reports": {"url": f"s3://{self.reports_bucket}/reports/"},
            "templates": list(TEMPLATES),
            "entrypoints": list(ENTRYPOINTS),
            "prune": True,
            "sharding": {"customersPerShard": self.customers_per_shard, "parallelism": 8},
            "failurePolicy": {
                "retriesPerShard": self.retries_per_shard,
                "toleratedFailedCustomers": self.tolerated_failed,
            },
            "storage": {"endpointUrl": ep.endpoint_url, "region": ep.region, "addressingStyle": "path"},
            "worker": {"objectsInFlight": self.objects_in_flight},
        }
        for key, value in self.extra_spec.items():
            if isinstance(value, dict) and isinstance(spec.get(key), dict):
                spec[key] = {**spec[key], **value}
            else:
                spec[key] = value
        return spec

    def manifest(self) -> dict[str, Any]:
        return {
            "apiVersion": "webrelease.dev/v1alpha1",
            "kind": "WebRelease",
            "metadata": {"name": self.name},
            "spec": self.spec(),
        }

    @property
    def release_file(self) -> Path:
        return self.folder / "release.yaml"

    def write(self) -> Path:
        self.release_file.write_text(yaml.safe_dump(self.manifest(), sort_keys=False))
        return self.release_file

    def env(self) -> dict[str, str]:
        ep = self.endpoint
        return {"AWS_ACCESS_KEY_ID": ep.access_key, "AWS_SECRET_ACCESS_KEY": ep.secret_key}

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """``webrelease run release.yaml --no-progress ARGS``."""
        return cli("run", str(self.release_file), "--no-progress", *args, env=self.env(), timeout=timeout)

    # -- what the run says --------------------------------------------------------------------

    def local_runs(self) -> list[str]:
        """The report folders (``reports/default/<name>/<run-id>/``) of local runs, oldest first."""
        keys = list_bucket(self.endpoint, self.reports_bucket, f"reports/default/{self.name}/")
        return sorted({k.rsplit("/", 1)[0] + "/" for k in keys if k.endswith("/index.json")})

    def results_under(self, folder: str) -> list[dict[str, Any]]:
        """Every line of every ``<step>/shards/<i>.jsonl`` under ``folder`` (a run's report folder)."""
        keys = list_bucket(self.endpoint, self.reports_bucket, folder)
        out: list[dict[str, Any]] = []
        for key in sorted(keys):
            rest = key[len(folder) :]
            if rest.startswith("main/shards/") and rest.endswith(".jsonl"):
                data = read_object(self.endpoint, self.reports_bucket, key)
                out += [json.loads(line) for line in data.splitlines() if line.strip()]
        return out

    def verify(self, out: Path) -> tuple[subprocess.CompletedProcess[str], dict[str, list[dict[str, str]]]]:
        """``webrelease verify``; the differences by customer."""
        proc = cli("verify", str(self.release_file), "--no-progress", "--out", str(out), env=self.env())
        diffs: dict[str, list[dict[str, str]]] = {}
        if out.exists():
            for line in out.read_text().splitlines():
                d = json.loads(line)
                diffs.setdefault(d["id"], []).append(d)
        return proc, diffs

    def oracle_differences(self, ids: Iterable[str]) -> dict[str, list[str]]:
        """Sites that differ from what this module computes (one listing of the sites bucket: every
        object's ETag is its MD5, compared with the MD5 of the expected bytes)."""
        listing = list_bucket(self.endpoint, self.sites_bucket, "sites/")
        by_id = {str(c["id"]): c for c in self.customers}
        problems: dict[str, list[str]] = {}
        for cid in sorted(ids):
            want = {f"sites/{cid}/{k}": md5(v) for k, v in expected_site(by_id[cid], self.name).items()}
            have = {k: v for k, v in listing.items() if k.startswith(f"sites/{cid}/")}
            bad = [k for k in sorted(want.keys() | have.keys()) if want.get(k) != have.get(k)]
            if bad:
                problems[cid] = bad
        return problems

    def site_keys(self, cid: str) -> list[str]:
        return sorted(list_bucket(self.endpoint, self.sites_bucket, f"sites/{cid}/"))


@dataclass(frozen=True)
class Accounting:
    """What a run says about its customers, reduced to what the checks need."""

    succeeded: frozenset[str]
    failed: Mapping[str, str]  # id -> reason
    #: ids reported more than once in one report (must be empty)
    duplicates: frozenset[str] = frozenset()


def accounting_from_results(lines: Sequence[Mapping[str, Any]]) -> Accounting:
    seen: set[str] = set()
    dupes: set[str] = set()
    ok: set[str] = set()
    failed: dict[str, str] = {}
    for line in lines:
        cid = str(line["id"])
        if cid in seen:
            dupes.add(cid)
        seen.add(cid)
        if line["status"] == "ok":
            ok.add(cid)
        else:
            failed[cid] = str(line.get("reason", ""))
    return Accounting(frozenset(ok), failed, frozenset(dupes))


@dataclass
class Tally:
    """The numbers a scenario reports (docs/reliability.md lists them)."""

    scenario: str
    runs: int = 0
    customers: int = 0
    faults: int = 0
    lost: int = 0
    wrong: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        extra = f"; {'; '.join(self.notes)}" if self.notes else ""
        return (
            f"RELIABILITY {self.scenario}: runs={self.runs} customers={self.customers} "
            f"faults={self.faults} lost={self.lost} wrong={self.wrong} seconds={self.seconds:.1f}{extra}"
        )


def check_outcome(
    rel: BigRelease, acct: Accounting, tmp: Path, tally: Tally, *, expect_failed: set[str] | None = None
) -> None:
    """The end of every fault scenario (see the module doc). Fills ``tally.lost`` / ``tally.wrong``
    before asserting, so the numbers are right in the report even when an assertion fails."""
    expect_failed = rel.doomed if expect_failed is None else expect_failed
    reported = acct.succeeded | set(acct.failed)
    lost = rel.ids - reported
    proc, diffs = rel.verify(tmp / f"verify-{time.monotonic_ns()}.jsonl")
    oracle = rel.oracle_differences(acct.succeeded & rel.good)
    wrong_ids = (set(diffs) & acct.succeeded) | set(oracle) | (acct.succeeded & rel.doomed)
    tally.lost = len(lost)
    tally.wrong = len(wrong_ids)
    assert proc.returncode in (0, 3), f"verify could not run: {proc.stdout[-2000:]}{proc.stderr[-2000:]}"
    assert not acct.duplicates, f"customers reported twice: {sorted(acct.duplicates)}"
    assert not (acct.succeeded & set(acct.failed)), "a customer both succeeded and failed"
    assert not (reported - rel.ids), f"unknown customers reported: {sorted(reported - rel.ids)}"
    assert not lost, f"customers lost (in no result): {sorted(lost)[:20]}"
    assert not wrong_ids, (
        f"customers called succeeded whose site is wrong: verify {sorted(set(diffs) & acct.succeeded)[:10]}, "
        f"oracle {dict(list(oracle.items())[:5])}"
    )
    assert set(acct.failed) == expect_failed, (
        f"failed customers {sorted(acct.failed)} != expected {sorted(expect_failed)}; "
        f"reasons: {dict(list(acct.failed.items())[:5])}"
    )
    # verify finds differences only where the run says it failed (a failed customer's site may
    # still be complete: a write can land although its answer was lost), and always for the doomed
    assert set(diffs) <= set(acct.failed), (
        f"verify found differences in {sorted(diffs)[:20]}, the run failed {sorted(acct.failed)}"
    )
    assert expect_failed & rel.doomed <= set(diffs), f"verify missed doomed customers: {sorted(diffs)}"
    assert proc.returncode == (3 if acct.failed else 0), proc.stdout[-2000:] + proc.stderr[-2000:]
    for cid in acct.failed.keys() & rel.doomed:
        assert "apiUrl" in acct.failed[cid], acct.failed[cid]
        assert rel.site_keys(cid) == [], f"a doomed customer has files: {rel.site_keys(cid)}"


# -- faults -------------------------------------------------------------------------------------


class RestartableS3:
    """A versitygw of our own on a fixed port and data folder, with fixed credentials, that a test
    can kill (SIGKILL, like a crash) and start again: the same endpoint, the same objects."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.secret = secrets.token_hex(16)
        self.server = S3Server(root=root, port=self.port, secret_key=self.secret)
        self.endpoint = self.server.start()

    def kill(self) -> None:
        pid = self.server.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while self.server.running and time.monotonic() < deadline:
            time.sleep(0.05)
        self.server.stop()  # the process is gone: this only closes its log (the folder is ours)

    def start(self) -> None:
        self.endpoint = self.server.start()

    def close(self) -> None:
        self.server.stop()


class ShareThrottleProxy(FaultProxy):
    """A :class:`FaultProxy` that, while ``active``, answers a share of requests (chosen at random
    with a fixed seed) with 503 SlowDown."""

    def __init__(self, upstream: S3Endpoint, *, share: float, seed: int = 8) -> None:
        super().__init__(upstream)
        self.share = share
        self.active = False
        self._rng = random.Random(seed)

    def _should_throttle(self) -> bool:
        with self._lock:
            self.seen += 1
            if self.active and self._rng.random() < self.share:
                self.throttled += 1
                return True
            return False
