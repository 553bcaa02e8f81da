"""The plain manifests on a real node: ``kubectl apply --server-side -f manifests/`` into a cluster
that has never seen webrelease gives a working operator pod, which runs a release.

The manifests name the image ``webrelease:0.1.0`` (what a user builds and pushes); there is no registry
here, so that name is given to our image in the node's containerd store for the test's duration.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest
import yaml

from tests.harness.controlplane import api_path
from tests.harness.helm import MANIFESTS
from tests.harness.node_fixtures import NodeStack, RunningNode
from tests.harness.operator_harness import (
    create_storage_secret,
    ended,
    is_true,
    manifest,
    put_customers,
    put_files,
    wait_release,
)
from tests.harness.sample_release import BUILD_V1, customers, expected_site, sites, spec_for


def manifest_image() -> str:
    deployment = yaml.safe_load((MANIFESTS / "40-deployment.yaml").read_text())
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return str(container["image"])


def ctr(running: RunningNode, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ctr", "--address", str(running.node.socket), "--namespace", "k8s.io", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def image_as_in_manifests(node_stack: NodeStack) -> Iterator[RunningNode]:
    node_stack.shutdown()  # a cluster that has never seen webrelease (other modules helm install it)
    running = node_stack.get()
    name = manifest_image()
    full = name if "/" in name.split(":")[0] else f"docker.io/library/{name}"
    tagged = ctr(running, "images", "tag", "--force", running.images.webrelease, full)
    assert tagged.returncode == 0, tagged.stderr
    try:
        yield running
    finally:
        ctr(running, "images", "rm", full)


def test_plain_manifests_give_a_working_operator_pod(image_as_in_manifests: RunningNode) -> None:
    running = image_as_in_manifests
    plane = running.plane
    applied = plane.kubectl("apply", "--server-side", "-f", str(MANIFESTS), check=False)
    assert applied.returncode == 0, applied.stderr
    try:
        with running.kube() as kube:
            deadline = time.monotonic() + 180
            while True:
                pods = kube.items(
                    api_path("v1", "pods", namespace="webrelease-system"),
                    labelSelector="app.kubernetes.io/name=webrelease",
                )
                statuses = [cs for p in pods for cs in p.get("status", {}).get("containerStatuses") or []]
                if statuses and all(cs.get("ready") for cs in statuses):
                    break
                assert time.monotonic() < deadline, json.dumps([p.get("status") for p in pods], indent=1)[
                    :4000
                ]
                time.sleep(0.5)
            (pod,) = pods
            lease_path = api_path(
                "coordination.k8s.io/v1", "leases", namespace="webrelease-system", name="webrelease-operator"
            )
            while (((kube.find(lease_path) or {}).get("spec") or {}).get("holderIdentity")) != pod[
                "metadata"
            ]["name"]:
                assert time.monotonic() < deadline, (
                    f"the operator pod never took the Lease: {kube.find(lease_path)}"
                )
                time.sleep(0.5)

            shop = f"shop-{uuid.uuid4().hex[:6]}"
            kube.create(api_path("v1", "namespaces"), {"metadata": {"name": shop}})
            while kube.find(api_path("v1", "serviceaccounts", namespace=shop, name="default")) is None:
                time.sleep(0.2)
            s3 = running.s3
            bucket = f"m-{uuid.uuid4().hex[:10]}"
            s3.client().create_bucket(Bucket=bucket)
            create_storage_secret(kube, shop, s3)
            records = customers(12)
            put_files(s3, bucket, "builds/v1/", BUILD_V1)
            url = put_customers(s3, bucket, "lists/customers.jsonl", records)
            spec = spec_for(s3, bucket, url, sharding={"customersPerShard": 6, "parallelism": 2})
            doc = json.dumps(manifest("plain", spec))
            done = plane.kubectl("apply", "--server-side", "-n", shop, "-f", "-", stdin=doc, check=False)
            assert done.returncode == 0, done.stderr
            try:
                body = wait_release(kube, shop, "plain", "the run has ended", ended, timeout_s=300)
            except AssertionError as exc:
                logs = plane.kubectl("logs", "-n", "webrelease-system", pod["metadata"]["name"], check=False)
                raise AssertionError(f"{exc}\n--- operator ---\n{logs.stdout[-5000:]}") from None
            assert is_true(body, "Complete"), body["status"]["conditions"]
            got = sites(s3, bucket)
            for record in records:
                assert got[record["id"]] == expected_site(BUILD_V1, record), record["id"]
            # the operator lets go of the release (its finalizer) before the manifests go
            plane.kubectl("delete", "webrelease", "plain", "-n", shop, "--timeout=120s")
            plane.kubectl("delete", "namespace", shop, "--wait=false")
    finally:
        plane.kubectl("delete", "-f", str(MANIFESTS), "--wait=false", check=False)
