"""Disruptions on a real node: the kubelet restarted and the operator pod deleted mid-run, and a
shard pod killed by the kernel at its memory limit (OOMKilled), retried and named in the status.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.harness.controlplane import api_path
from tests.harness.operator_harness import (
    VENV_BIN,
    create_storage_secret,
    ended,
    is_true,
    jobs_of,
    manifest,
    put_customers,
    put_files,
    wait_release,
)
from tests.harness.sample_release import BUILD_V1, customers, expected_site, sites, spec_for
from tests.node.chart import OPERATOR_NS, Installed, new_bucket


def test_kubelet_restart_and_operator_pod_deletion_mid_run_complete_with_one_job(
    installed: Installed, node_namespace: str, tmp_path: Path
) -> None:
    running, kube, shop = installed.running, installed.kube, node_namespace
    s3 = running.s3
    installed.wait_leader()
    bucket = new_bucket(running)
    create_storage_secret(kube, shop, s3)
    records = customers(60)
    put_files(s3, bucket, "builds/v1/", BUILD_V1)
    url = put_customers(s3, bucket, "lists/customers.jsonl", records)
    # one shard at a time, so that the run is still going through both disruptions
    spec = spec_for(s3, bucket, url, sharding={"customersPerShard": 10, "parallelism": 1})
    doc = manifest("winter", spec)
    done = running.plane.kubectl(
        "apply", "--server-side", "-n", shop, "-f", "-", stdin=json.dumps(doc), check=False
    )
    assert done.returncode == 0, done.stderr

    def first_shard_done(b: dict[str, Any]) -> bool:
        shards = (b.get("status") or {}).get("shards") or {}
        return shards.get("succeeded", 0) >= 1 and not ended(b)

    wait_release(kube, shop, "winter", "a shard has succeeded", first_shard_done, timeout_s=300)
    running.node.restart_kubelet(down_s=3)
    old = installed.operator_pod()["metadata"]["name"]
    running.plane.kubectl("delete", "pod", "-n", OPERATOR_NS, old, "--wait=false")
    body = wait_release(kube, shop, "winter", "the run has ended", ended, timeout_s=600)
    new = installed.wait_leader()["metadata"]["name"]
    assert new != old

    status = body["status"]
    assert is_true(body, "Complete"), status["conditions"]
    assert status["customers"] == {"total": 60, "succeeded": 60, "failed": 0, "pending": 0, "notReleased": 0}
    assert status["shards"] == {"total": 6, "succeeded": 6, "failed": 0, "active": 0, "pending": 0}
    (job,) = jobs_of(kube, shop, "winter")
    assert job["metadata"]["name"] == status["run"]["job"]
    got = sites(s3, bucket)
    for record in records:
        assert got[record["id"]] == expected_site(BUILD_V1, record), record["id"]

    # webrelease verify, from this machine, finds every site exactly right
    release_file = tmp_path / "winter.yaml"
    release_file.write_text(yaml.safe_dump({**doc, "metadata": {"name": "winter", "namespace": shop}}))
    verify = subprocess.run(
        [str(VENV_BIN / "webrelease"), "verify", str(release_file), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **s3.env()},
        check=False,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "60 site(s)" in verify.stdout and ": 0 difference(s)" in verify.stdout, verify.stdout


def test_a_shard_over_its_memory_limit_is_oom_killed_retried_and_named(
    installed: Installed, node_namespace: str
) -> None:
    running, kube, shop = installed.running, installed.kube, node_namespace
    s3 = running.s3
    installed.wait_leader()
    bucket = new_bucket(running)
    create_storage_secret(kube, shop, s3)
    put_files(s3, bucket, "builds/v1/", BUILD_V1)
    url = put_customers(s3, bucket, "lists/customers.jsonl", customers(10))
    # far too little memory for Python and boto3: the kernel kills the shard while it starts
    memory = {"requests": {"cpu": "100m", "memory": "24Mi"}, "limits": {"memory": "24Mi"}}
    spec = spec_for(
        s3, bucket, url, sharding={"customersPerShard": 10, "parallelism": 1},
        failurePolicy={"retriesPerShard": 1}, worker={"resources": memory},
    )  # fmt: skip
    done = running.plane.kubectl(
        "apply", "--server-side", "-n", shop, "-f", "-", stdin=json.dumps(manifest("tiny", spec)), check=False
    )
    assert done.returncode == 0, done.stderr
    body = wait_release(kube, shop, "tiny", "the run has ended", ended, timeout_s=300)
    status = body["status"]
    pods = kube.items(api_path("v1", "pods", namespace=shop), labelSelector="webrelease.dev/release=tiny")
    reasons = [cs["state"]["terminated"]["reason"] for p in pods for cs in p["status"]["containerStatuses"]]
    assert reasons == ["OOMKilled", "OOMKilled"], reasons
    (shard,) = status["shardStatuses"]
    assert (shard["state"], shard.get("attempts")) == ("Failed", 2), shard
    text = json.dumps(status)
    assert "out of memory" in text, json.dumps(status, indent=1)
    assert "shard 0" in text, json.dumps(status, indent=1)
