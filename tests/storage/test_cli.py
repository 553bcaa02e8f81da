"""The ``webrelease`` command end to end, as a user (or a Job pod) runs it: a real process."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.harness.s3server import S3Endpoint
from webrelease.copier.results import parse_summary
from webrelease.copier.snapshot import encode

ROOT = Path(__file__).resolve().parents[2]
WEBRELEASE = Path(sys.executable).with_name("webrelease")


def cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "WEBRELEASE_", "JOB_", "TERMINATION_"))
    }
    return subprocess.run(
        [str(WEBRELEASE), *args],
        env={**base, **(env or {})},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def tree(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in root.rglob("*")
        if p.is_file()
    }


@pytest.fixture
def example(tmp_path: Path) -> Path:
    """A copy of examples/ (its release writes to ../out/demo, i.e. inside tmp_path)."""
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    return tmp_path / "examples" / "release.yaml"


def test_run_plan_verify_on_local_folders(example: Path, tmp_path: Path) -> None:
    run = cli("run", str(example), "--no-progress")
    assert run.returncode == 0, run.stderr
    sites = tmp_path / "out" / "demo" / "sites"
    assert f"sites:     file://{sites}/{{id}}/" in run.stdout
    assert "customers: 5 total, 5 succeeded, 0 failed" in run.stdout
    reports = sorted((tmp_path / "out" / "demo" / "reports" / "default" / "demo").iterdir())
    assert len(reports) == 1 and f"report:    file://{reports[0]}/" in run.stdout
    index = json.loads((reports[0] / "index.json").read_text())
    assert index["kind"] == "WebReleaseReport" and index["launcher"] == "local"
    assert index["customers"] == {"total": 5, "succeeded": 5, "failed": 0, "pending": 0, "notReleased": 0}
    assert (index["exitCode"], index["outcome"], index["failed"]) == (0, "Complete", [])
    page = (reports[0] / "report.html").read_text()
    assert f"page:      file://{reports[0]}/report.html" in run.stdout
    assert '<b id="customers-succeeded" style="color: var(--ok)">5</b>' in page
    assert sorted(p.name for p in sites.iterdir()) == ["acme", "globex", "hooli", "initech", "umbrella.eu"]
    build = example.parent / "build"
    assert (sites / "initech" / "assets" / "img" / "logo.png").read_bytes() == (
        build / "assets" / "img" / "logo.png"
    ).read_bytes()
    assert (sites / "acme" / "assets" / "img" / "logo.png").read_bytes() == (
        example.parent / "overrides" / "acme" / "assets" / "img" / "logo.png"
    ).read_bytes()
    assert '"https://api.acme.example"' in (sites / "acme" / "config.js").read_text()
    assert json.loads((sites / "globex" / "settings.json").read_text())["displayName"] == "Globex <Europe>"

    before = tree(tmp_path / "out")
    plan_file = tmp_path / "plan.jsonl"
    plan = cli("plan", str(example), "--out", str(plan_file), "--no-progress")
    assert plan.returncode == 0, plan.stderr
    assert tree(tmp_path / "out") == before
    assert "acme  copy 0  render 0  override 0  unchanged 13  delete 0" in plan.stdout
    planned = [json.loads(line) for line in plan_file.read_text().splitlines()]
    assert [p["id"] for p in planned] == ["acme", "globex", "hooli", "initech", "umbrella.eu"]

    ok = cli("verify", str(example), "--no-progress")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "0 difference(s)" in ok.stdout
    (sites / "hooli" / "assets" / "app.js").write_text("tampered")
    (sites / "acme" / "about" / "index.html").unlink()
    bad = cli("verify", str(example), "--no-progress")
    assert bad.returncode == 3
    assert "hooli  different  assets/app.js" in bad.stdout
    assert "acme  missing  about/index.html" in bad.stdout
    assert "2 difference(s) in 2 site(s)" in bad.stdout

    again = cli("run", str(example), "--no-progress", "--workers", "1")
    assert again.returncode == 0, again.stderr
    assert "2 copied, 0 rendered" in again.stdout
    assert cli("verify", str(example), "--no-progress").returncode == 0


def test_run_exit_codes_for_bad_input_and_failed_customers(example: Path, tmp_path: Path) -> None:
    doc = yaml.safe_load(example.read_text())
    doc["spec"]["sharding"]["customersPerShard"] = 0
    bad_spec = example.with_name("bad.yaml")
    bad_spec.write_text(yaml.safe_dump(doc))
    r = cli("run", str(bad_spec))
    assert r.returncode == 2 and "spec.sharding.customersPerShard" in r.stderr

    lst = example.with_name("customers.jsonl")
    original = lst.read_text()
    lst.write_text(original + '{"id": "Nope!"}\n{"id": "acme"}\n')
    r = cli("run", str(example))
    assert r.returncode == 2
    assert "line 6: id 'Nope!' is not a valid customer id" in r.stderr
    assert "line 7: duplicate id 'acme' (first at line 1)" in r.stderr
    assert not (tmp_path / "out").exists()

    lst.write_text(
        original + '{"id": "zz-no-api", "name": "Z", "locale": "en", "plan": "p", "brandColor": "#000"}\n'
    )
    r = cli("run", str(example), "--no-progress")
    assert r.returncode == 3, r.stdout + r.stderr
    assert "customers: 6 total, 5 succeeded, 1 failed" in r.stdout
    assert "failed zz-no-api: template config.js, line 4: 'apiUrl' is undefined" in r.stdout
    assert not (tmp_path / "out" / "demo" / "sites" / "zz-no-api").exists()
    (run,) = (tmp_path / "out" / "demo" / "reports" / "default" / "demo").iterdir()
    index = json.loads((run / "index.json").read_text())
    assert (index["outcome"], index["reason"], index["exitCode"]) == ("Failed", "TooManyCustomersFailed", 3)
    assert index["failed"] == [
        {
            "id": "zz-no-api",
            "reason": "template config.js, line 4: 'apiUrl' is undefined",
            "shard": 2,
        }
    ]
    assert index["failedTotal"] == 1 and index["customers"]["failed"] == 1


def test_shard_command_is_what_a_job_pod_runs(example: Path, tmp_path: Path) -> None:
    from webrelease.copier.fileurls import resolve_file_urls
    from webrelease.copier.spec import load_release

    spec = resolve_file_urls(load_release(example).spec, example.parent)
    report = tmp_path / "report" / "demo" / "run-7"
    report.mkdir(parents=True)
    customers = [json.loads(line) for line in example.with_name("customers.jsonl").read_text().splitlines()]
    data = encode(sorted(customers, key=lambda c: c["id"]))
    (report / "customers.jsonl").write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    term = tmp_path / "termination-log"
    env = {
        "WEBRELEASE_SPEC": spec.model_dump_json(by_alias=True, exclude_none=True),
        "WEBRELEASE_SNAPSHOT_URL": f"file://{report}/customers.jsonl",
        "WEBRELEASE_SNAPSHOT_SHA256": sha,
        "WEBRELEASE_SHARD_SIZE": "2",
        "WEBRELEASE_RELEASE_NAME": "demo",
        "JOB_COMPLETION_INDEX": "1",
        "TERMINATION_MESSAGE_PATH": str(term),
    }
    r = cli("shard", env=env)
    assert r.returncode == 0, r.stderr
    summary = parse_summary(term.read_bytes())
    assert (summary.index, summary.customers, summary.succeeded, summary.exit_code) == (1, 2, 2, 0)
    assert summary.results == f"file://{report}/shards/1.jsonl"
    results = [json.loads(line) for line in (report / "shards" / "1.jsonl").read_text().splitlines()]
    assert [x["id"] for x in results] == [
        "hooli",
        "initech",
    ]  # sorted: acme globex | hooli initech | umbrella.eu
    sites = tmp_path / "out" / "demo" / "sites"
    assert sorted(p.name for p in sites.iterdir()) == ["hooli", "initech"]

    # flags win over the environment; a changed snapshot is bad input, said in the termination message
    r = cli("shard", "--index", "0", "--snapshot-sha256", "f" * 64, env=env)
    assert r.returncode == 2
    summary = parse_summary(term.read_bytes())
    assert summary.exit_code == 2 and summary.index == 0 and "sha256" in (summary.error or "")
    assert not (sites / "acme").exists()

    # the spec as a file (a whole manifest), index out of range
    r = cli("shard", "--spec-file", str(example), "--index", "9", env={**env, "WEBRELEASE_SPEC": ""})
    assert r.returncode == 2 and "out of range" in parse_summary(term.read_bytes()).error  # type: ignore[operator]

    # no release at all
    r = cli("shard", env={"TERMINATION_MESSAGE_PATH": str(term), "JOB_COMPLETION_INDEX": "3"})
    assert r.returncode == 2 and "WEBRELEASE_SPEC" in r.stderr
    assert parse_summary(term.read_bytes()).index == 3


def test_run_never_imports_the_kubernetes_side(example: Path) -> None:
    code = (
        "import sys; from webrelease.cli import main; rc = main(['run', sys.argv[1], '--no-progress']);"
        "bad = [m for m in ('kopf', 'kubernetes', 'prometheus_client') if m in sys.modules];"
        "print('IMPORTED', bad); sys.exit(rc or (9 if bad else 0))"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, str(example)], capture_output=True, text=True, timeout=300, check=False
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "IMPORTED []" in r.stdout


@pytest.mark.storage
def test_run_and_verify_on_s3_with_credentials_from_the_environment(
    s3_server: S3Endpoint, s3_bucket: str, tmp_path: Path
) -> None:
    client = s3_server.client()
    examples = ROOT / "examples"
    for path in sorted((examples / "build").rglob("*")):
        if path.is_file():
            client.put_object(
                Bucket=s3_bucket, Key=f"build/{path.relative_to(examples / 'build')}", Body=path.read_bytes()
            )
    client.put_object(
        Bucket=s3_bucket, Key="lists/customers.jsonl", Body=(examples / "customers.jsonl").read_bytes()
    )
    doc = yaml.safe_load((examples / "release.yaml").read_text())
    spec = doc["spec"]
    spec["source"]["url"] = f"s3://{s3_bucket}/build/"
    spec["target"]["url"] = f"s3://{s3_bucket}/sites/{{id}}/"
    spec["customers"]["url"] = f"s3://{s3_bucket}/lists/customers.jsonl"
    spec["reports"]["url"] = f"s3://{s3_bucket}/reports/"
    spec["overrides"]["url"] = f"file://{examples}/overrides/{{id}}/"
    spec["storage"] = {"endpointUrl": s3_server.endpoint_url, "region": s3_server.region}
    release = tmp_path / "release.yaml"
    release.write_text(yaml.safe_dump(doc))
    env = {"AWS_ACCESS_KEY_ID": s3_server.access_key, "AWS_SECRET_ACCESS_KEY": s3_server.secret_key}

    r = cli("run", str(release), "--no-progress", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "customers: 5 total, 5 succeeded" in r.stdout
    logo = client.get_object(Bucket=s3_bucket, Key="sites/acme/assets/img/logo.png")["Body"].read()
    assert logo == (examples / "overrides" / "acme" / "assets" / "img" / "logo.png").read_bytes()
    head = client.head_object(Bucket=s3_bucket, Key="sites/globex/config.js")
    assert head["ContentType"] == "text/javascript; charset=utf-8"
    v = cli("verify", str(release), "--no-progress", env=env)
    assert v.returncode == 0, v.stdout + v.stderr

    # secrets never appear in what we print or write
    outputs = r.stdout + r.stderr + v.stdout + v.stderr
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=s3_bucket, Prefix="reports/"):
        for obj in page.get("Contents", []):
            outputs += client.get_object(Bucket=s3_bucket, Key=obj["Key"])["Body"].read().decode()
    assert "customers.jsonl" in outputs and "index.json" in outputs
    assert s3_server.secret_key not in outputs

    # without credentials it fails cleanly, naming no secret
    r = cli(
        "run",
        str(release),
        "--no-progress",
        env={"AWS_ACCESS_KEY_ID": "nobody", "AWS_SECRET_ACCESS_KEY": "wrong-secret"},
    )
    assert r.returncode != 0
    assert "wrong-secret" not in r.stdout + r.stderr


def test_a_dry_run_release_only_plans(example: Path, tmp_path: Path) -> None:
    doc = yaml.safe_load(example.read_text())
    doc["spec"]["dryRun"] = True
    example.write_text(yaml.safe_dump(doc))
    r = cli("run", str(example), "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "planning only" in r.stdout
    assert "acme  copy 9  render 3  override 1  unchanged 0  delete 0" in r.stdout
    assert not (tmp_path / "out").exists()


def test_a_report_index_that_cannot_be_written_is_named_not_a_traceback(example: Path) -> None:
    """Every shard wrote its results; the final index.json write fails: the run says which write
    failed and exits 1, with no traceback."""
    from webrelease.copier.exitcodes import EXIT_CRASH
    from webrelease.copier.fileurls import resolve_file_urls
    from webrelease.copier.localrun import run_local
    from webrelease.copier.shard import store_set_for
    from webrelease.copier.spec import load_release

    release = load_release(example)
    spec = resolve_file_urls(release.spec, example.parent)
    run_dir = (
        Path(spec.reports.url.removeprefix("file://"))
        / "default"
        / release.metadata.name
        / "index-unwritable"
    )
    (run_dir / "index.json").mkdir(parents=True)  # a folder where the index file must go
    lines: list[str] = []
    outcome = run_local(
        spec, release.metadata.name, stores=store_set_for(spec), run_id=run_dir.name, echo=lines.append
    )
    assert outcome.exit_code == EXIT_CRASH
    assert outcome.error is not None and "index.json" in outcome.error
    assert list((run_dir / "main" / "shards").glob("*.jsonl")), "the shards' own results must still be there"


def test_plan_of_a_cluster_release_reads_a_local_customer_list(example: Path, tmp_path: Path) -> None:
    """A release whose customers come from a ConfigMap (only a cluster has it) is planned with
    ``--customers FILE``: the list is read from the file, nothing else of the release changes."""
    doc = yaml.safe_load(example.read_text())
    doc["spec"]["customers"] = {"configMapRef": {"name": "customers", "key": "customers.jsonl"}}
    cluster_release = example.with_name("cluster-release.yaml")
    cluster_release.write_text(yaml.safe_dump(doc))
    without = cli("plan", str(cluster_release), "--no-progress")
    assert without.returncode == 2 and "--customers" in without.stderr, without.stderr
    plan = cli(
        "plan",
        str(cluster_release),
        "--customers",
        str(example.with_name("customers.jsonl")),
        "--no-progress",
    )
    assert plan.returncode == 0, plan.stderr
    assert "5 customer(s) planned, 0 cannot be released" in plan.stdout
    assert not (tmp_path / "out").exists()
