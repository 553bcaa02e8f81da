"""The operator on the real control plane (issue 4's acceptance): WebReleases from apply to exact results.

Everything is real: the apiserver, the Job controller and garbage collector, the test node agent
running each shard pod's ``webrelease shard`` as a process, versitygw as S3, and the operator as a
separate ``webrelease operator`` process (so that it can be killed and started again). Sites are
checked by reading every object back; waits poll the API with deadlines.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By

from tests.harness.browser import output_folder
from tests.harness.cluster_fixtures import wait_until
from tests.harness.controlplane import ControlPlane, Kube, api_path
from tests.harness.nodeagent import NodeAgent
from tests.harness.operator_harness import (
    VENV_BIN,
    OperatorProcess,
    apply,
    condition,
    create_storage_secret,
    ended,
    get_release,
    is_true,
    jobs_of,
    keys_under,
    manifest,
    put_customers,
    put_files,
    read_json,
    read_jsonl,
    read_prefix,
    release_path,
    running_operator,
    wait_release,
)
from tests.harness.reports import layout, shape
from tests.harness.s3server import S3Endpoint
from tests.harness.sample_release import (
    BUILD_V1,
    BUILD_V2,
    customers,
    expected_site,
    shard_result_ids,
    sites,
    spec_for,
)
from webrelease.copier.runreport import RunReport


@pytest.fixture(scope="module")
def operator(
    control_plane: ControlPlane,
    kube: Kube,
    node_agent: NodeAgent | None,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:
    with running_operator(control_plane, kube, tmp_path_factory.mktemp("operator")) as process:
        yield process


@dataclass(frozen=True)
class Env:
    """What each test works with: the cluster, a namespace with the storage Secret, a fresh bucket,
    and the operator (running)."""

    plane: ControlPlane
    kube: Kube
    s3: S3Endpoint
    bucket: str
    ns: str
    operator: OperatorProcess


@pytest.fixture
def env(
    *,
    control_plane: ControlPlane,
    kube: Kube,
    namespace: str,
    s3_server: S3Endpoint,
    s3_bucket: str,
    operator: OperatorProcess,
) -> Env:
    if not operator.running():
        operator.start()
    create_storage_secret(kube, namespace, s3_server)
    return Env(control_plane, kube, s3_server, s3_bucket, namespace, operator)


def test_fifty_customers_in_five_shards_complete_with_exact_sites_and_report(env: Env) -> None:
    control_plane, kube, s3_server, s3_bucket, shop, operator = (
        env.plane,
        env.kube,
        env.s3,
        env.bucket,
        env.ns,
        env.operator,
    )
    records = customers(50)
    put_files(s3_server, s3_bucket, "builds/v1/", BUILD_V1)
    url = put_customers(s3_server, s3_bucket, "lists/customers.jsonl", records)
    done = apply(control_plane, shop, manifest("spring", spec_for(s3_server, s3_bucket, url)))
    assert done.returncode == 0, done.stderr

    body = wait_release(kube, shop, "spring", "the run has ended", ended, operator=operator)
    status = body["status"]
    assert is_true(body, "Complete"), status["conditions"]
    progressing = condition(body, "Progressing")
    assert progressing is not None and (progressing["status"], progressing["reason"]) == ("False", "Complete")
    assert status["observedGeneration"] == 1
    assert status["customers"] == {"total": 50, "succeeded": 50, "failed": 0, "pending": 0, "notReleased": 0}
    assert status["shards"] == {"total": 5, "succeeded": 5, "failed": 0, "active": 0, "pending": 0}
    assert status["progress"] == "50/50"
    assert [(s["index"], s["state"], s["customers"], s["succeeded"]) for s in status["shardStatuses"]] == [
        (i, "Succeeded", 10, 10) for i in range(5)
    ]
    assert status["failedCustomers"] == {"total": 0, "sample": []}

    # every site holds exactly the expected bytes
    got = sites(s3_server, s3_bucket)
    assert sorted(got) == [r["id"] for r in records]
    for record in records:
        assert got[record["id"]] == expected_site(BUILD_V1, record), record["id"]
    assert status["objects"]["rendered"] == 50 * 3
    assert status["objects"]["copied"] == 50 * 2

    # the frozen list is what status says it is
    snapshot = status["snapshot"]
    assert snapshot["count"] == 50
    assert [r["id"] for r in read_jsonl(s3_server, snapshot["url"])] == [r["id"] for r in records]

    # the report lists all 50, each ok
    index = read_json(s3_server, status["report"]["index"])
    assert index["outcome"] == "Complete"
    assert index["customers"] == status["customers"]
    lines = shard_result_ids(s3_server, status["report"]["index"])
    (main,) = lines.values()
    assert sorted(line["id"] for line in main) == [r["id"] for r in records]
    assert all(line["status"] == "ok" for line in main)

    # one Job, owned by the release, locked down
    (job,) = jobs_of(kube, shop, "spring")
    assert job["metadata"]["name"] == status["run"]["job"] == "spring-g1-main"
    assert job["metadata"]["ownerReferences"][0]["uid"] == body["metadata"]["uid"]
    assert job["spec"]["completions"] == 5
    assert job["spec"]["template"]["spec"]["automountServiceAccountToken"] is False

    # the CLI's view of it
    cli = subprocess.run(
        [
            str(VENV_BIN / "webrelease"),
            "status",
            "spring",
            "-n",
            shop,
            "--kubeconfig",
            str(control_plane.kubeconfig),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert "customers:  50 total, 50 succeeded, 0 failed, 0 pending" in cli.stdout
    rows = [line.split() for line in cli.stdout.splitlines()]
    assert sum(1 for row in rows if len(row) > 1 and row[1] == "Succeeded") == 5  # the shard table
    size = len(json.dumps(get_release(kube, shop, "spring"), separators=(",", ":")))
    print(f"\nWebRelease object with 5 shards: {size} bytes")


def test_a_local_run_writes_the_layout_and_index_schema_of_a_cluster_run(
    env: Env, tmp_path: Path, browser: webdriver.Chrome
) -> None:
    """The same release, run by the operator and by ``webrelease run``: the same files under the
    run's folder (only the run id differs) and one ``index.json`` schema, read by one model. On the
    way: ``status --watch`` follows the cluster run, ``webrelease report`` fetches its page, which
    shows the status's counts in Chromium."""
    s3, bucket, shop = env.s3, env.bucket, env.ns
    records = customers(20, without_api=("c013",))
    put_files(s3, bucket, "builds/v1/", BUILD_V1)
    url = put_customers(s3, bucket, "lists/customers.jsonl", records)
    spec = spec_for(s3, bucket, url)
    assert apply(env.plane, shop, manifest("twin", spec)).returncode == 0
    kubeconfig = ("-n", shop, "--kubeconfig", str(env.plane.kubeconfig))
    watch = subprocess.run(
        [str(VENV_BIN / "webrelease"), "status", "twin", *kubeconfig, "--watch", "--wait", "240"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    body = wait_release(env.kube, shop, "twin", "the run has ended", ended, operator=env.operator)
    assert is_true(body, "Failed"), body["status"]["conditions"]
    status = body["status"]
    cluster_run = status["report"]["url"].removeprefix(f"s3://{bucket}/")

    # the live watch ended with the exit code of status, in plain lines (not a terminal)
    assert watch.returncode == 3, watch.stdout + watch.stderr
    assert "\x1b[" not in watch.stdout
    assert "20/20 customers (1 failed), 2/2 shards" in watch.stdout
    assert "customers:  20 total, 19 succeeded, 1 failed, 0 pending" in watch.stdout
    assert f"page:       {status['report']['page']}  (webrelease report twin)" in watch.stdout

    # the page is next to index.json, named in the status and in the final Event
    page_url = status["report"]["page"]
    assert page_url == status["report"]["index"].removesuffix("index.json") + "report.html"
    events = env.kube.get(f"/api/v1/namespaces/{shop}/events")["items"]
    assert any(page_url in e.get("message", "") for e in events if e["reason"] == "RunFailed"), [
        e.get("message") for e in events
    ]
    fetched = subprocess.run(
        [str(VENV_BIN / "webrelease"), "report", "twin", *kubeconfig, "--out-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert fetched.returncode == 0, fetched.stdout + fetched.stderr
    page = Path(fetched.stdout.strip())
    assert (
        page.parent == tmp_path and page.read_bytes() == read_prefix(s3, bucket, cluster_run)["report.html"]
    )
    browser.get(page.as_uri())
    browser.save_screenshot(str(output_folder() / "cluster-run.png"))
    shown = {
        k: int(browser.find_element(By.ID, f"customers-{k}").text.replace(",", ""))
        for k in status["customers"]
    }
    assert shown == status["customers"]
    (row,) = browser.find_elements(By.CSS_SELECTOR, "#failed tr td.id")
    assert row.text == "c013"
    assert "webrelease retry twin -n " + shop in browser.find_element(By.ID, "next").text

    release = tmp_path / "release.yaml"
    doc = {**manifest("twin", spec), "metadata": {"name": "twin", "namespace": shop}}
    release.write_text(json.dumps(doc))
    local = subprocess.run(
        [str(VENV_BIN / "webrelease"), "run", str(release), "--no-progress"],
        env={**os.environ, "AWS_ACCESS_KEY_ID": s3.access_key, "AWS_SECRET_ACCESS_KEY": s3.secret_key},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert local.returncode == 3, local.stdout + local.stderr
    runs = {k.split("/")[3] for k in keys_under(s3, bucket, f"reports/{shop}/twin/")}
    (local_id,) = runs - {cluster_run.split("/")[3]}
    local_run = f"reports/{shop}/twin/{local_id}/"

    keys = keys_under(s3, bucket, "reports/")
    assert layout(keys, local_run) == layout(keys, cluster_run)
    assert "index.json" in layout(keys, local_run) and "main/shards/N.jsonl" in layout(keys, local_run)
    docs = [read_json(s3, f"s3://{bucket}/{run}index.json") for run in (cluster_run, local_run)]
    assert shape(docs[0]) == shape(docs[1])
    cluster_doc, local_doc = (RunReport.model_validate(d) for d in docs)
    assert (cluster_doc.launcher, local_doc.launcher) == ("cluster", "local")
    for d in (cluster_doc, local_doc):
        assert (d.outcome, d.reason, d.failed_total) == ("Failed", "TooManyCustomersFailed", 1)
        assert [(f.id, f.shard) for f in d.failed] == [("c013", 1)]
        assert d.customers.model_dump() == {
            "total": 20,
            "succeeded": 19,
            "failed": 1,
            "pending": 0,
            "not_released": 0,
        }
        assert [(s.index, s.state, s.customers) for s in d.steps[0].shards] == [
            (0, "Succeeded", 10),
            (1, "Failed", 10),
        ]


def test_two_failing_customers_are_named_then_retry_releases_only_them(env: Env) -> None:
    control_plane, kube, s3_server, s3_bucket, shop, operator = (
        env.plane,
        env.kube,
        env.s3,
        env.bucket,
        env.ns,
        env.operator,
    )
    broken = ("c013", "c037")  # in shards 1 and 3: config.js needs apiUrl, which they lack
    put_files(s3_server, s3_bucket, "builds/v1/", BUILD_V1)
    url = put_customers(s3_server, s3_bucket, "lists/customers.jsonl", customers(50, without_api=broken))
    done = apply(control_plane, shop, manifest("autumn", spec_for(s3_server, s3_bucket, url)))
    assert done.returncode == 0, done.stderr

    body = wait_release(kube, shop, "autumn", "the run has ended", ended, operator=operator)
    status = body["status"]
    failed = condition(body, "Failed")
    assert failed is not None and (failed["status"], failed["reason"]) == ("True", "TooManyCustomersFailed")
    assert status["customers"] == {"total": 50, "succeeded": 48, "failed": 2, "pending": 0, "notReleased": 0}
    assert {f["id"] for f in status["failedCustomers"]["sample"]} == set(broken)
    assert status["failedCustomers"]["total"] == 2
    assert all("apiUrl" in f["reason"] for f in status["failedCustomers"]["sample"])
    by_index = {s["index"]: s for s in status["shardStatuses"]}
    assert (by_index[1]["state"], by_index[1]["failedIds"], by_index[1]["succeeded"]) == (
        "Failed",
        ["c013"],
        9,
    )
    assert (by_index[3]["state"], by_index[3]["failedIds"], by_index[3]["succeeded"]) == (
        "Failed",
        ["c037"],
        9,
    )
    message = failed["message"]
    assert "c013" in message and "c037" in message and "48/50" in message
    got = sites(s3_server, s3_bucket)
    assert sorted(got) == sorted(r["id"] for r in customers(50) if r["id"] not in broken)  # nothing for them
    before = dict(got)
    index = read_json(s3_server, status["report"]["index"])
    assert sorted(f["id"] for f in index["failed"]) == list(broken)

    # fix their records, then ask for a retry with the CLI
    fixed = customers(50)
    put_customers(s3_server, s3_bucket, "lists/customers.jsonl", fixed)
    cli = subprocess.run(
        [
            str(VENV_BIN / "webrelease"),
            "retry",
            "autumn",
            "-n",
            shop,
            "--kubeconfig",
            str(control_plane.kubeconfig),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert cli.returncode == 0, cli.stdout + cli.stderr

    def retried(b: dict[str, Any]) -> bool:
        run = (b.get("status") or {}).get("run") or {}
        return run.get("step") == "retry" and ended(b)

    body = wait_release(kube, shop, "autumn", "the retry has ended", retried, operator=operator)
    status = body["status"]
    assert is_true(body, "Complete"), status["conditions"]
    assert status["customers"] == {"total": 50, "succeeded": 50, "failed": 0, "pending": 0, "notReleased": 0}
    assert status["run"]["snapshot"]["count"] == 2
    assert status["shards"]["total"] == 1
    # the retry released exactly those two
    retry_lines = shard_result_ids(s3_server, status["report"]["index"])[status["run"]["stepId"]]
    assert sorted(line["id"] for line in retry_lines) == list(broken)
    (job,) = jobs_of(kube, shop, "autumn")
    assert job["metadata"]["name"] == "autumn-g1-retry-1"
    pods = kube.items(api_path("v1", "pods", namespace=shop), labelSelector="webrelease.dev/step=g1-retry-1")
    assert len(pods) == 1
    got = sites(s3_server, s3_bucket)
    for record in fixed:
        assert got[record["id"]] == expected_site(BUILD_V1, record), record["id"]
    for cid, files in before.items():
        assert got[cid] == files


def test_operator_killed_mid_run_completes_with_one_job_and_exact_counts(env: Env) -> None:
    control_plane, kube, s3_server, s3_bucket, shop, operator = (
        env.plane,
        env.kube,
        env.s3,
        env.bucket,
        env.ns,
        env.operator,
    )
    records = customers(50)
    put_files(s3_server, s3_bucket, "builds/v1/", BUILD_V1)
    url = put_customers(s3_server, s3_bucket, "lists/customers.jsonl", records)
    # one shard at a time, so that the run is still going when the operator dies
    spec = spec_for(s3_server, s3_bucket, url, sharding={"customersPerShard": 10, "parallelism": 1})
    done = apply(control_plane, shop, manifest("winter", spec))
    assert done.returncode == 0, done.stderr

    def first_shard_done(b: dict[str, Any]) -> bool:
        shards = (b.get("status") or {}).get("shards") or {}
        return shards.get("succeeded", 0) >= 1 and not ended(b)

    wait_release(kube, shop, "winter", "a shard has succeeded", first_shard_done, operator=operator)
    operator.kill()
    job = kube.get(api_path("batch/v1", "jobs", namespace=shop, name="winter-g1-main"))
    assert not any(c["type"] == "Complete" for c in job.get("status", {}).get("conditions") or [])
    operator.start()

    body = wait_release(kube, shop, "winter", "the run has ended", ended, operator=operator)
    status = body["status"]
    assert is_true(body, "Complete"), status["conditions"]
    assert status["customers"] == {"total": 50, "succeeded": 50, "failed": 0, "pending": 0, "notReleased": 0}
    assert status["shards"] == {"total": 5, "succeeded": 5, "failed": 0, "active": 0, "pending": 0}
    (job,) = jobs_of(kube, shop, "winter")
    assert job["metadata"]["name"] == status["run"]["job"]
    pods = kube.items(api_path("v1", "pods", namespace=shop), labelSelector="webrelease.dev/release=winter")
    assert sorted(p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] for p in pods) == [
        str(i) for i in range(5)
    ]
    got = sites(s3_server, s3_bucket)
    for record in records:
        assert got[record["id"]] == expected_site(BUILD_V1, record), record["id"]


def test_a_new_build_mid_run_supersedes_the_running_one(env: Env) -> None:
    control_plane, kube, s3_server, s3_bucket, shop, operator = (
        env.plane,
        env.kube,
        env.s3,
        env.bucket,
        env.ns,
        env.operator,
    )
    records = customers(50)
    put_files(s3_server, s3_bucket, "builds/v1/", BUILD_V1)
    put_files(s3_server, s3_bucket, "builds/v2/", BUILD_V2)
    url = put_customers(s3_server, s3_bucket, "lists/customers.jsonl", records)
    slow = {"customersPerShard": 10, "parallelism": 1}
    done = apply(control_plane, shop, manifest("spring", spec_for(s3_server, s3_bucket, url, sharding=slow)))
    assert done.returncode == 0, done.stderr

    def going(b: dict[str, Any]) -> bool:
        shards = (b.get("status") or {}).get("shards") or {}
        return shards.get("succeeded", 0) + shards.get("active", 0) >= 1 and not ended(b)

    wait_release(kube, shop, "spring", "the first run is going", going, operator=operator)
    new_spec = spec_for(s3_server, s3_bucket, url, build="v2", sharding=slow)
    done = apply(control_plane, shop, manifest("spring", new_spec))
    assert done.returncode == 0, done.stderr

    body = wait_release(kube, shop, "spring", "the run of generation 2 has ended", ended, operator=operator)
    assert body["metadata"]["generation"] == 2
    status = body["status"]
    assert status["observedGeneration"] == 2
    assert is_true(body, "Complete"), status["conditions"]
    assert all(c["observedGeneration"] == 2 for c in status["conditions"])
    assert status["customers"] == {"total": 50, "succeeded": 50, "failed": 0, "pending": 0, "notReleased": 0}
    assert kube.find(api_path("batch/v1", "jobs", namespace=shop, name="spring-g1-main")) is None
    assert [j["metadata"]["name"] for j in jobs_of(kube, shop, "spring")] == ["spring-g2-main"]
    got = sites(s3_server, s3_bucket)
    for record in records:
        assert got[record["id"]] == expected_site(BUILD_V2, record), record["id"]
    wait_until(
        "the Superseded Event",
        lambda: any(
            e["reason"] == "Superseded"
            for e in kube.items(
                api_path("v1", "events", namespace=shop), fieldSelector="involvedObject.name=spring"
            )
        ),
        timeout_s=30,
    )


def test_deleting_the_release_removes_its_job_and_pods_but_not_the_sites(env: Env) -> None:
    control_plane, kube, s3_server, s3_bucket, shop, operator = (
        env.plane,
        env.kube,
        env.s3,
        env.bucket,
        env.ns,
        env.operator,
    )
    records = customers(10)
    put_files(s3_server, s3_bucket, "builds/v1/", BUILD_V1)
    url = put_customers(s3_server, s3_bucket, "lists/customers.jsonl", records)
    done = apply(control_plane, shop, manifest("gone", spec_for(s3_server, s3_bucket, url)))
    assert done.returncode == 0, done.stderr
    wait_release(kube, shop, "gone", "the run has ended", ended, operator=operator)
    before = sites(s3_server, s3_bucket)
    assert len(before) == 10

    kube.delete(api_path("webrelease.dev/v1alpha1", "webreleases", namespace=shop, name="gone"))

    wait_until(
        "the release, its Job and its pods to be gone",
        lambda: (
            kube.find(api_path("webrelease.dev/v1alpha1", "webreleases", namespace=shop, name="gone")) is None
            and not jobs_of(kube, shop, "gone")
            and not kube.items(
                api_path("v1", "pods", namespace=shop), labelSelector="webrelease.dev/release=gone"
            )
        ),
        timeout_s=120,
    )
    assert sites(s3_server, s3_bucket) == before


# ------------------------------------------------------------------------------ invalid specs


@dataclass(frozen=True)
class Invalid:
    """One kind of bad spec: how to break a good one, and what must say so."""

    change: Callable[[dict[str, Any], str], None]
    #: rejected by the apiserver (schema or CEL) at apply, with this text; else None
    rejected: str | None = None
    #: or: the run ends Failed with this reason and this text in its message
    reason: str = "InvalidSpec"
    message: str = ""


def _set(path: str, value: Any) -> Callable[[dict[str, Any], str], None]:
    def change(spec: dict[str, Any], bucket: str) -> None:
        *parents, last = path.split(".")
        node = spec
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value(bucket) if callable(value) else value

    return change


def _drop(key: str) -> Callable[[dict[str, Any], str], None]:
    return lambda spec, _bucket: spec.pop(key)


INVALID: dict[str, Invalid] = {
    "bad source URL": Invalid(_set("source.url", "https://builds.example/web/"), rejected="spec.source.url"),
    "negative shard size": Invalid(_set("sharding.customersPerShard", -5), rejected="customersPerShard"),
    "two customer sources": Invalid(
        _set("customers.inline", [{"id": "a"}]), rejected="exactly one of url, configMapRef, inline, sql"
    ),
    "canary ids and count": Invalid(
        _set("canary", {"ids": ["c001"], "count": 2}), rejected="exactly one of ids, count"
    ),
    "unknown field": Invalid(_set("sharding.shards", 5), rejected='unknown field "spec.sharding.shards"'),
    "too many retries": Invalid(_set("failurePolicy.retriesPerShard", 50), rejected="retriesPerShard"),
    "tolerance over 100 percent": Invalid(
        _set("failurePolicy.toleratedFailedPercent", 150), rejected="toleratedFailedPercent"
    ),
    "no reports location": Invalid(_drop("reports"), rejected="spec.reports"),
    "target without placeholder": Invalid(
        _set("target.url", lambda b: f"s3://{b}/sites/everyone/"), rejected="must contain a placeholder"
    ),
    "unknown template syntax": Invalid(
        _set("target.url", lambda b: f"s3://{b}/sites/{{id!r}}/"), message="spec.target.url"
    ),
    "unsafe target template": Invalid(
        _set("target.url", lambda b: f"s3://{b}/sites{{id}}/"), message="fixed prefix"
    ),
    "overrides without placeholder": Invalid(
        _set("overrides.url", lambda b: f"s3://{b}/overrides/all/"), message="spec.overrides.url"
    ),
    "worker resources that are no quantities": Invalid(
        _set("worker.resources", {"requests": {"cpu": "lots"}}), message="the Job was refused"
    ),
    "file:// in a cluster": Invalid(
        _set("source.url", "file:///srv/builds/web/"), message="a cluster needs s3://"
    ),
    "invalid customer id": Invalid(
        _set("customers", {"inline": [{"id": "ACME Corp", "apiUrl": "x"}]}),
        reason="InvalidCustomerList",
        message="not a valid customer id",
    ),
    "duplicate customer id": Invalid(
        _set("customers", {"inline": [{"id": "a", "apiUrl": "x"}, {"id": "a", "apiUrl": "y"}]}),
        reason="InvalidCustomerList",
        message="duplicate id 'a'",
    ),
    "missing customer list": Invalid(
        _set("customers.url", lambda b: f"s3://{b}/lists/nobody.jsonl"),
        reason="InvalidCustomerList",
        message="nobody.jsonl does not exist",
    ),
    "canary not in the list": Invalid(
        _set("canary", {"ids": ["zz-top"]}), reason="InvalidCustomerList", message="spec.canary.ids"
    ),
}


@pytest.mark.parametrize("case", list(INVALID), ids=list(INVALID))
def test_an_invalid_spec_is_refused_with_no_job_and_nothing_written(env: Env, case: str) -> None:
    bad = INVALID[case]
    put_files(env.s3, env.bucket, "builds/v1/", BUILD_V1)
    url = put_customers(env.s3, env.bucket, "lists/customers.jsonl", customers(10))
    spec = spec_for(env.s3, env.bucket, url)
    bad.change(spec, env.bucket)
    done = apply(env.plane, env.ns, manifest("broken", spec))
    if bad.rejected is not None:
        assert done.returncode != 0, f"the apiserver accepted it: {done.stdout}"
        assert bad.rejected in done.stderr, done.stderr
        assert env.kube.find(release_path(env.ns, "broken")) is None
    else:
        assert done.returncode == 0, done.stderr
        body = wait_release(env.kube, env.ns, "broken", "the run has ended", ended, operator=env.operator)
        failed = condition(body, "Failed")
        assert failed is not None and failed["status"] == "True", body["status"]["conditions"]
        assert failed["reason"] == bad.reason
        assert bad.message in failed["message"], failed["message"]
        accepted = condition(body, "Accepted")
        assert accepted is not None
        assert accepted["status"] == ("False" if bad.reason == "InvalidSpec" else "True")
        wait_until(
            "a Warning Event saying so",
            lambda: any(
                e["type"] == "Warning" and bad.message in e["message"]
                for e in env.kube.items(
                    api_path("v1", "events", namespace=env.ns), fieldSelector="involvedObject.name=broken"
                )
            ),
            timeout_s=30,
        )
    assert jobs_of(env.kube, env.ns, "broken") == []
    assert keys_under(env.s3, env.bucket, "sites/") == []
    assert keys_under(env.s3, env.bucket, "reports/") == []


def test_canary_first_then_the_rest_only_after_every_canary_succeeded(env: Env) -> None:
    broken = ("c013",)  # a canary that fails: the rest must wait
    put_files(env.s3, env.bucket, "builds/v1/", BUILD_V1)
    url = put_customers(env.s3, env.bucket, "lists/customers.jsonl", customers(30, without_api=broken))
    spec = spec_for(env.s3, env.bucket, url, canary={"ids": ["c002", "c013", "c025"]})
    done = apply(env.plane, env.ns, manifest("careful", spec))
    assert done.returncode == 0, done.stderr

    body = wait_release(env.kube, env.ns, "careful", "the canary has ended", ended, operator=env.operator)
    failed = condition(body, "Failed")
    assert failed is not None and (failed["status"], failed["reason"]) == ("True", "CanaryFailed"), failed
    assert "27 customers were not released" in failed["message"]
    assert body["status"]["customers"] == {
        "total": 30,
        "succeeded": 2,
        "failed": 1,
        "pending": 0,
        "notReleased": 27,
    }
    assert sorted(sites(env.s3, env.bucket)) == ["c002", "c025"]  # nobody else was touched

    # the canary's record is fixed; a retry releases it, then the rest follows on its own
    put_customers(env.s3, env.bucket, "lists/customers.jsonl", customers(30))
    env.kube.patch(
        release_path(env.ns, "careful"), {"metadata": {"annotations": {"webrelease.dev/retry": "1"}}}
    )

    def rest_done(b: dict[str, Any]) -> bool:
        run = (b.get("status") or {}).get("run") or {}
        return run.get("step") == "rest" and ended(b)

    body = wait_release(
        env.kube, env.ns, "careful", "the rest has been released", rest_done, operator=env.operator
    )
    assert is_true(body, "Complete"), body["status"]["conditions"]
    assert body["status"]["customers"] == {
        "total": 30,
        "succeeded": 30,
        "failed": 0,
        "pending": 0,
        "notReleased": 0,
    }
    assert body["status"]["run"]["snapshot"]["count"] == 27
    got = sites(env.s3, env.bucket)
    for record in customers(30):
        assert got[record["id"]] == expected_site(BUILD_V1, record), record["id"]
    steps = [s["stepId"] for s in read_json(env.s3, body["status"]["report"]["index"])["steps"]]
    assert steps == ["g1-canary", "g1-retry-1", "g1-rest"]


def test_dry_run_plans_every_customer_and_writes_no_site(env: Env) -> None:
    records = customers(12, without_api=("c004",))
    put_files(env.s3, env.bucket, "builds/v1/", BUILD_V1)
    url = put_customers(env.s3, env.bucket, "lists/customers.jsonl", records)
    spec = spec_for(env.s3, env.bucket, url, dryRun=True, failurePolicy={"toleratedFailedCustomers": 1})
    done = apply(env.plane, env.ns, manifest("preview", spec))
    assert done.returncode == 0, done.stderr

    body = wait_release(env.kube, env.ns, "preview", "the dry run has ended", ended, operator=env.operator)
    status = body["status"]
    assert is_true(body, "Degraded"), status["conditions"]  # c004's config.js cannot be rendered
    assert status["customers"] == {"total": 12, "succeeded": 11, "failed": 1, "pending": 0, "notReleased": 0}
    assert [f["id"] for f in status["failedCustomers"]["sample"]] == ["c004"]
    assert status["objects"]["rendered"] == 11 * 3 and status["objects"]["copied"] == 11 * 2
    assert keys_under(env.s3, env.bucket, "sites/") == []
    assert jobs_of(env.kube, env.ns, "preview") == []
    index = read_json(env.s3, status["report"]["index"])
    (step,) = index["steps"]
    plan = read_jsonl(env.s3, step["plan"])
    assert [p["id"] for p in plan] == [r["id"] for r in records]
    assert {p["id"]: p["status"] for p in plan}["c004"] == "failed"
    assert all(p["render"] == 3 and p["copy"] == 2 for p in plan if p["status"] == "ok")


def test_a_run_that_failed_on_its_customer_list_starts_again_on_retry_once_the_list_is_fixed(
    env: Env,
) -> None:
    put_files(env.s3, env.bucket, "builds/v1/", BUILD_V1)
    url = f"s3://{env.bucket}/lists/late.jsonl"  # not there yet
    done = apply(env.plane, env.ns, manifest("late", spec_for(env.s3, env.bucket, url)))
    assert done.returncode == 0, done.stderr
    body = wait_release(env.kube, env.ns, "late", "the run has failed", ended, operator=env.operator)
    failed = condition(body, "Failed")
    assert failed is not None and failed["reason"] == "InvalidCustomerList", failed

    records = customers(7)
    put_customers(env.s3, env.bucket, "lists/late.jsonl", records)
    env.kube.patch(
        release_path(env.ns, "late"), {"metadata": {"annotations": {"webrelease.dev/retry": "now"}}}
    )
    body = wait_release(
        env.kube,
        env.ns,
        "late",
        "the run has completed",
        lambda b: ended(b) and is_true(b, "Complete"),
        operator=env.operator,
    )
    assert body["status"]["customers"] == {
        "total": 7,
        "succeeded": 7,
        "failed": 0,
        "pending": 0,
        "notReleased": 0,
    }
    assert body["status"]["retryToken"] == "now"
    got = sites(env.s3, env.bucket)
    for record in records:
        assert got[record["id"]] == expected_site(BUILD_V1, record), record["id"]
