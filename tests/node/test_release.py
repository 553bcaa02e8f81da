"""Our chart on a real node: ``helm install`` with values for the image only, the operator as the
chart's Deployment pod, shard pods from the same image; every site read back byte for byte.

The release's S3 endpoint (spec.storage.endpointUrl) is the node tier's S3 server on the pod
network's gateway, reached by the pods and by the test at the same URL.
"""

from __future__ import annotations

import json
import subprocess

from tests.harness.controlplane import api_path
from tests.harness.operator_harness import (
    VENV_BIN,
    condition,
    create_storage_secret,
    is_true,
    jobs_of,
    manifest,
    put_customers,
    put_files,
    read_json,
    wait_release,
)
from tests.harness.sample_release import BUILD_V1, customers, expected_site, shard_result_ids, sites, spec_for
from tests.node.chart import OPERATOR_NS, Installed, assert_locked_down, container_spec, new_bucket


def test_helm_installed_operator_releases_sixty_customers_in_four_shards(
    installed: Installed, node_namespace: str
) -> None:
    running, kube, shop = installed.running, installed.kube, node_namespace
    s3 = running.s3
    pod = installed.wait_leader()

    bucket = new_bucket(running)
    create_storage_secret(kube, shop, s3)
    records = customers(60)
    put_files(s3, bucket, "builds/v1/", BUILD_V1)
    url = put_customers(s3, bucket, "lists/customers.jsonl", records)
    spec = spec_for(s3, bucket, url, sharding={"customersPerShard": 15, "parallelism": 4})
    done = running.plane.kubectl(
        "apply",
        "--server-side",
        "-n",
        shop,
        "-f",
        "-",
        stdin=json.dumps(manifest("spring", spec)),
        check=False,
    )
    assert done.returncode == 0, done.stderr

    try:
        body = wait_release(
            kube, shop, "spring", "the run has ended", installed.ended_with_operator_up, timeout_s=420
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- operator ---\n{installed.operator_log()}") from None
    status = body["status"]
    assert is_true(body, "Complete"), status["conditions"]
    progressing = condition(body, "Progressing")
    assert progressing is not None and (progressing["status"], progressing["reason"]) == ("False", "Complete")
    assert status["customers"] == {"total": 60, "succeeded": 60, "failed": 0, "pending": 0, "notReleased": 0}
    assert status["shards"] == {"total": 4, "succeeded": 4, "failed": 0, "active": 0, "pending": 0}

    # every site, byte for byte
    got = sites(s3, bucket)
    assert sorted(got) == [r["id"] for r in records]
    for record in records:
        assert got[record["id"]] == expected_site(BUILD_V1, record), record["id"]

    # the report says what the status says
    index = read_json(s3, status["report"]["index"])
    assert index["outcome"] == "Complete"
    assert index["customers"] == status["customers"]
    (lines,) = shard_result_ids(s3, status["report"]["index"]).values()
    assert sorted(line["id"] for line in lines) == [r["id"] for r in records]
    assert all(line["status"] == "ok" for line in lines)

    # one Job; its pods' logs through the kubelet (kubectl logs) show the shard's progress
    (job,) = jobs_of(kube, shop, "spring")
    pods = kube.items(api_path("v1", "pods", namespace=shop), labelSelector="webrelease.dev/release=spring")
    assert len(pods) == 4, [p["metadata"]["name"] for p in pods]
    for shard_pod in pods:
        index = int(shard_pod["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"])
        log = running.plane.kubectl("logs", "-n", shop, shard_pod["metadata"]["name"]).stdout
        log_lines = log.strip().splitlines()
        assert f"shard {index}: 15 customers to release" in log_lines, log
        assert any(line.startswith(f"shard {index}: 15/15 customers done (0 failed") for line in log_lines), (
            log
        )
        summary = json.loads(log_lines[-1])
        assert (summary["index"], summary["customers"], summary["succeeded"]) == (index, 15, 15), log

    # the CLI on this machine agrees
    cli = subprocess.run(
        [
            str(VENV_BIN / "webrelease"),
            "status",
            "spring",
            "-n",
            shop,
            "--kubeconfig",
            str(running.plane.kubeconfig),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert "customers:  60 total, 60 succeeded, 0 failed, 0 pending" in cli.stdout, cli.stdout
    rows = [line.split() for line in cli.stdout.splitlines()]
    assert sum(1 for row in rows if len(row) > 1 and row[1] == "Succeeded") == 4, cli.stdout  # shard rows

    # the pods as the kubelet ran them: locked down; shard pods without an API token
    for shard in pods:
        assert_locked_down(container_spec(running, shard), token=False)
    assert_locked_down(container_spec(running, pod), token=True)

    # the operator pod: never restarted (its liveness probe passed all along), Ready, the leader
    pod = installed.wait_leader()
    (cs,) = pod["status"]["containerStatuses"]
    assert cs["restartCount"] == 0 and cs["ready"] is True, cs
    events = kube.items(
        api_path("v1", "events", namespace=OPERATOR_NS),
        fieldSelector=f"involvedObject.name={pod['metadata']['name']}",
    )
    # startup-probe misses while Python starts are expected; a liveness or readiness failure is not
    failed = [e["message"] for e in events if e.get("message", "").startswith(("Liveness", "Readiness"))]
    assert not failed, failed
    print(f"\nnode tier release: {json.dumps(status['customers'])}; job {job['metadata']['name']}")
