"""The operator as a new user meets it (issue 12): names, waiting states, retries, what status says.

Each test reproduces what a user ran into on the real control plane (apiserver, Job controller,
node agent, versitygw, the operator as its own process) and asserts what the user would look at:
``kubectl apply``'s answer, the status and its conditions, the Events, ``webrelease status``'s output
and exit code, and the sites' bytes.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from tests.cluster.test_operator import Env
from tests.harness.controlplane import ControlPlane, Kube, api_path
from tests.harness.nodeagent import NodeAgent
from tests.harness.operator_harness import (
    VENV_BIN,
    OperatorProcess,
    apply,
    condition,
    create_storage_secret,
    ended,
    is_true,
    jobs_of,
    manifest,
    put_customers,
    put_files,
    read_json,
    release_path,
    running_operator,
    wait_release,
)
from tests.harness.s3server import S3Endpoint
from tests.harness.sample_release import BUILD_V1, BUILD_V2, customers, expected_site, sites, spec_for


@pytest.fixture(scope="module")
def operator(
    control_plane: ControlPlane,
    kube: Kube,
    node_agent: NodeAgent | None,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:
    # a missing Secret is waited for long enough for the tests to create it
    wait = {"WEBRELEASE_WAIT_SECONDS": "300"}
    with running_operator(
        control_plane, kube, tmp_path_factory.mktemp("operator"), extra_env=wait
    ) as process:
        yield process


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


def events_of(kube: Kube, namespace: str, name: str) -> list[dict[str, Any]]:
    return [
        e
        for e in kube.items(api_path("v1", "events", namespace=namespace))
        if (e.get("involvedObject") or {}).get("name") == name
    ]


def cli(env: Env, *args: str) -> subprocess.CompletedProcess[str]:
    """``webrelease ARGS`` as a user runs it, against the test cluster."""
    return subprocess.run(
        [str(VENV_BIN / "webrelease"), *args, "-n", env.ns, "--kubeconfig", str(env.plane.kubeconfig)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def retry(env: Env, name: str, token: str) -> None:
    env.kube.patch(release_path(env.ns, name), {"metadata": {"annotations": {"webrelease.dev/retry": token}}})


# ------------------------------------------------------------------------------------ 1. names


def test_a_name_of_63_characters_runs_and_retries_and_a_longer_one_is_refused_at_apply(env: Env) -> None:
    put_files(env.s3, env.bucket, "builds/v1/", BUILD_V1)
    url = put_customers(env.s3, env.bucket, "lists/customers.jsonl", customers(12, without_api=("c011",)))
    spec = spec_for(env.s3, env.bucket, url)  # 10 per shard: 2 shards, indexes 0 and 1

    too_long = "r" * 64
    refused = apply(env.plane, env.ns, manifest(too_long, spec))
    assert refused.returncode != 0
    assert "at most 63 characters" in refused.stderr, refused.stderr
    assert env.kube.find(release_path(env.ns, too_long)) is None

    name = ("a-release-name-of-sixty-three-characters-" + "x" * 63)[:63]
    done = apply(env.plane, env.ns, manifest(name, spec))
    assert done.returncode == 0, done.stderr
    body = wait_release(env.kube, env.ns, name, "the run has ended", ended, operator=env.operator)
    assert is_true(body, "Failed"), body["status"]["conditions"]
    assert condition(body, "Failed")["reason"] == "TooManyCustomersFailed"  # type: ignore[index]
    assert body["status"]["customers"]["failed"] == 1  # c011 only: the Job ran

    put_customers(env.s3, env.bucket, "lists/customers.jsonl", customers(12))
    retry(env, name, "1")
    body = wait_release(
        env.kube,
        env.ns,
        name,
        "the retry has completed",
        lambda b: ended(b) and is_true(b, "Complete"),
        operator=env.operator,
    )
    assert body["status"]["run"]["step"] == "retry"
    jobs = [j["metadata"]["name"] for j in jobs_of(env.kube, env.ns, name)]
    assert jobs and all(len(j) <= 58 for j in jobs), jobs
    got = sites(env.s3, env.bucket)
    for record in customers(12):
        assert got[record["id"]] == expected_site(BUILD_V1, record), record["id"]


# ------------------------------------------------------------------------------- 3. waiting


def test_a_missing_secret_or_configmap_is_said_at_once_and_the_run_starts_when_it_appears(env: Env) -> None:
    put_files(env.s3, env.bucket, "builds/v1/", BUILD_V1)
    url = put_customers(env.s3, env.bucket, "lists/customers.jsonl", customers(4))
    late_secret = spec_for(env.s3, env.bucket, url)
    late_secret["storage"]["secretRef"] = {"name": "late-credentials"}
    late_list = spec_for(env.s3, env.bucket, url)
    late_list["customers"] = {"configMapRef": {"name": "late-list", "key": "customers.jsonl"}}
    for name, spec in (("secretless", late_secret), ("listless", late_list)):
        done = apply(env.plane, env.ns, manifest(name, spec))
        assert done.returncode == 0, done.stderr

    def waiting_for(reason: str) -> Any:
        def probe(b: dict[str, Any]) -> bool:
            progressing = condition(b, "Progressing") or {}
            return progressing.get("status") == "True" and progressing.get("reason") == reason

        return probe

    for name, reason, what in (
        ("secretless", "SecretNotFound", "Secret 'late-credentials' not found"),
        ("listless", "ConfigMapNotFound", "ConfigMap 'late-list' not found"),
    ):
        body = wait_release(
            env.kube, env.ns, name, f"{reason} said", waiting_for(reason), operator=env.operator, timeout_s=30
        )
        status = body["status"]
        assert status["observedGeneration"] == 1
        message = condition(body, "Progressing")["message"]  # type: ignore[index]
        assert what in message and "gives up at" in message, message
        assert not any(is_true(body, k) for k in ("Complete", "Degraded", "Failed"))
        shown = env.plane.kubectl("get", "wr", name, "-n", env.ns).stdout
        assert reason in shown, shown
        events = [e for e in events_of(env.kube, env.ns, name) if e["reason"] == "Waiting"]
        assert events and what in events[0]["message"], events
        assert events[0]["source"]["component"] == "webrelease-operator"
        assert events[0]["type"] == "Warning"
        said = cli(env, "status", name)
        assert said.returncode == 4 and reason in said.stdout, said.stdout

    # they appear: both runs start by themselves, within seconds
    env.kube.create(
        api_path("v1", "secrets", namespace=env.ns),
        {
            "metadata": {"name": "late-credentials"},
            "stringData": {
                "AWS_ACCESS_KEY_ID": env.s3.access_key,
                "AWS_SECRET_ACCESS_KEY": env.s3.secret_key,
            },
        },
    )
    lines = "".join(json.dumps(r) + "\n" for r in customers(4))
    env.kube.create(
        api_path("v1", "configmaps", namespace=env.ns),
        {"metadata": {"name": "late-list"}, "data": {"customers.jsonl": lines}},
    )
    for name in ("secretless", "listless"):
        body = wait_release(
            env.kube,
            env.ns,
            name,
            "complete once the object is there",
            lambda b: ended(b) and is_true(b, "Complete"),
            operator=env.operator,
            timeout_s=120,
        )
        assert body["status"]["customers"]["succeeded"] == 4


# -------------------------------------------------------------------- 4. status that is right


def test_status_never_shows_another_generations_result_and_waits_for_a_retry(env: Env) -> None:
    put_files(env.s3, env.bucket, "builds/v1/", BUILD_V1)
    put_files(env.s3, env.bucket, "builds/v2/", BUILD_V2)
    url = put_customers(env.s3, env.bucket, "lists/customers.jsonl", customers(6, without_api=("c005",)))
    spec = spec_for(
        env.s3, env.bucket, url, failurePolicy={"retriesPerShard": 1, "toleratedFailedCustomers": 1}
    )
    spec["sharding"] = {"customersPerShard": 6, "parallelism": 1}
    assert apply(env.plane, env.ns, manifest("honest", spec)).returncode == 0
    body = wait_release(env.kube, env.ns, "honest", "degraded", ended, operator=env.operator)
    assert is_true(body, "Degraded"), body["status"]["conditions"]
    # c005 failed twice (two attempts of one shard): what both attempts wrote is counted
    shard = body["status"]["shardStatuses"][0]
    assert shard["attempts"] == 2, shard
    # the first attempt copied the 2 assets of the 5 good customers; the second found them unchanged
    assert body["status"]["objects"]["copied"] >= 5 * 2, body["status"]["objects"]

    # nothing failed? `webrelease retry` says so and sets nothing; here c005 did fail
    put_customers(env.s3, env.bucket, "lists/customers.jsonl", customers(6))
    said = cli(env, "retry", "honest")
    assert said.returncode == 0 and "1 customer(s)" in said.stdout, said.stdout
    waited = cli(env, "status", "honest", "--wait", "120")
    assert waited.returncode == 0, waited.stdout  # the retry's result, not the old Degraded
    assert "Complete" in waited.stdout
    nothing = cli(env, "retry", "honest")
    assert nothing.returncode == 0 and "nothing to retry" in nothing.stdout, nothing.stdout
    assert "not taken up" not in cli(env, "status", "honest").stdout

    # a new generation while no operator runs: status says it is not taken up yet, exit 4
    env.operator.stop()
    try:
        spec["source"]["url"] = f"s3://{env.bucket}/builds/v2/"
        assert apply(env.plane, env.ns, manifest("honest", spec)).returncode == 0
        said = cli(env, "status", "honest")
        assert said.returncode == 4, said.stdout
        assert "has not taken generation 2 up yet" in said.stdout, said.stdout
        table = env.plane.kubectl("get", "wr", "honest", "-n", env.ns).stdout.splitlines()
        header, row = table[0].split(), table[1].split()
        assert "GEN" in header and "OBSERVED" in header, table
        assert row[header.index("GEN")] == "2" and row[header.index("OBSERVED")] == "1", table
    finally:
        env.operator.start()
    wait_release(
        env.kube, env.ns, "honest", "generation 2 done", lambda b: ended(b) and is_true(b, "Complete")
    )

    # `webrelease status | head`: no traceback
    piped = subprocess.run(
        f"{VENV_BIN / 'webrelease'} status honest -n {env.ns} --kubeconfig {env.plane.kubeconfig} | head -1",
        shell=True,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "Traceback" not in piped.stderr and "BrokenPipe" not in piped.stderr, piped.stderr


def test_a_failed_canary_says_who_was_not_released_and_a_dry_run_what_it_would_write(env: Env) -> None:
    put_files(env.s3, env.bucket, "builds/v1/", BUILD_V1)
    url = put_customers(env.s3, env.bucket, "lists/customers.jsonl", customers(10, without_api=("c004",)))
    spec = spec_for(env.s3, env.bucket, url, canary={"ids": ["c001", "c004"]})
    assert apply(env.plane, env.ns, manifest("watched", spec)).returncode == 0
    body = wait_release(env.kube, env.ns, "watched", "the canary has failed", ended, operator=env.operator)
    status = body["status"]
    assert condition(body, "Failed")["reason"] == "CanaryFailed"  # type: ignore[index]
    assert status["customers"] == {"total": 10, "succeeded": 1, "failed": 1, "pending": 0, "notReleased": 8}
    assert status["canary"] == {"count": 2, "ids": ["c001", "c004"]}
    said = cli(env, "status", "watched")
    assert "8 not released" in said.stdout and "pending" not in said.stdout.split("shards:")[0], said.stdout
    assert "canary:     c001, c004" in said.stdout
    reasons = {e["reason"]: e for e in events_of(env.kube, env.ns, "watched")}
    assert reasons["RunFailed"]["source"]["component"] == "webrelease-operator", reasons

    dry = spec_for(env.s3, env.bucket, url, dryRun=True, failurePolicy={"toleratedFailedCustomers": 1})
    assert apply(env.plane, env.ns, manifest("preview", dry)).returncode == 0
    wait_release(env.kube, env.ns, "preview", "the dry run has ended", ended, operator=env.operator)
    said = cli(env, "status", "preview")
    assert "dry run" in said.stdout and "9 planned" in said.stdout, said.stdout
    assert "bytes written" not in said.stdout and "a release would copy" in said.stdout, said.stdout
    assert "Job \n" not in said.stdout and "no Job" in said.stdout, said.stdout


# ----------------------------------------------------------------- 2. retry of a failed canary


def test_a_retried_canary_releases_the_rest_as_their_records_are_now(env: Env) -> None:
    put_files(env.s3, env.bucket, "builds/v1/", BUILD_V1)
    old = customers(10, without_api=("c004", "c007"))  # c004 a canary, c007 one of the rest
    url = put_customers(env.s3, env.bucket, "lists/customers.jsonl", old)
    spec = spec_for(env.s3, env.bucket, url, canary={"ids": ["c001", "c004"]})
    assert apply(env.plane, env.ns, manifest("second-try", spec)).returncode == 0
    wait_release(env.kube, env.ns, "second-try", "the canary has failed", ended, operator=env.operator)

    # the user fixes the source: c004 and c007 get their field, c008's name changes
    fixed = customers(10)
    fixed[8]["name"] = "Customer 8, renamed"
    put_customers(env.s3, env.bucket, "lists/customers.jsonl", fixed)
    retry(env, "second-try", "1")

    def rest_done(b: dict[str, Any]) -> bool:
        return ((b.get("status") or {}).get("run") or {}).get("step") == "rest" and ended(b)

    body = wait_release(env.kube, env.ns, "second-try", "the rest has run", rest_done, operator=env.operator)
    assert is_true(body, "Complete"), body["status"]["conditions"]
    assert body["status"]["customers"]["succeeded"] == 10
    got = sites(env.s3, env.bucket)
    for record in fixed:
        assert got[record["id"]] == expected_site(BUILD_V1, record), record["id"]
    steps = [s["stepId"] for s in read_json(env.s3, body["status"]["report"]["index"])["steps"]]
    assert steps == ["g1-canary", "g1-retry-1", "g1-rest"]


# ----------------------------------------------------------- 5. a canary larger than the list


def test_a_canary_count_larger_than_the_list_is_said(env: Env) -> None:
    put_files(env.s3, env.bucket, "builds/v1/", BUILD_V1)
    url = put_customers(env.s3, env.bucket, "lists/customers.jsonl", customers(5))
    spec = spec_for(env.s3, env.bucket, url, canary={"count": 50})
    assert apply(env.plane, env.ns, manifest("all-canary", spec)).returncode == 0
    body = wait_release(env.kube, env.ns, "all-canary", "complete", ended, operator=env.operator)
    assert is_true(body, "Complete"), body["status"]["conditions"]
    events = [e for e in events_of(env.kube, env.ns, "all-canary") if e["reason"] == "CanaryCoversEveryone"]
    assert events and events[0]["type"] == "Warning", events
    assert "spec.canary.count is 50 and the customer list has 5 customer(s)" in events[0]["message"]
    assert "no canary step" in events[0]["message"]
    assert body["status"]["run"]["step"] == "main"


# ------------------------------------------------------------------- kubectl explain, apply errors


def test_kubectl_explain_describes_fields_and_apply_says_patterns_in_words(env: Env) -> None:
    explained = env.plane.kubectl("explain", "webreleases.spec.canary.count").stdout
    assert "chosen by a hash of their id" in explained, explained
    status = env.plane.kubectl("explain", "webreleases.status.customers.notReleased").stdout
    assert "a retry releases them" in status, status

    url = f"s3://{env.bucket}/lists/customers.jsonl"
    spec = spec_for(env.s3, env.bucket, url)
    spec["source"]["url"] = "https://builds.example/web/"
    spec["storage"]["region"] = "EU West"
    refused = apply(env.plane, env.ns, manifest("worded", spec))
    assert refused.returncode != 0
    assert "spec.source.url" in refused.stderr and "must be s3://<bucket>/<prefix>" in refused.stderr
    assert (
        "spec.storage.region" in refused.stderr and "lowercase letters, digits and dashes" in refused.stderr
    )
    assert "should match" not in refused.stderr, refused.stderr  # no raw regular expression
