"""Tenants and secrets on the real stack (docs/design.md "Bad input and safety").

One namespace, three WebReleases applied at once, customers from PostgreSQL (the URL, with its
password, in a Secret) and S3 credentials in a Secret:

- ``tenants``: good customers and hostile ones (site fields that climb out or hold a path, and an
  overrides object whose key holds backslashes); it must write nothing but the good customers' own
  sites and its own report;
- ``bad-db``: the database URL in its Secret has a wrong password;
- ``bad-s3``: its S3 Secret has a wrong secret key.

Then every place a secret could leak is read and searched for the actual secret values: the
operator's log, every shard pod's log and termination message, every Event, the WebRelease, Job
and Pod objects, every object in the report and site buckets, and ``webrelease status``. The
shard pods, as the real apiserver stored them, have no Kubernetes API token.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.harness.cluster_fixtures import wait_until
from tests.harness.controlplane import ControlPlane, Kube, api_path
from tests.harness.nodeagent import NodeAgent
from tests.harness.operator_harness import (
    SECRET,
    VENV_BIN,
    OperatorProcess,
    apply,
    create_storage_secret,
    ended,
    manifest,
    release_path,
    wait_release,
)
from tests.harness.postgres import PostgresServer
from tests.harness.s3_fixtures import unique_bucket_name
from tests.harness.s3server import S3Endpoint
from tests.reliability.kit import (
    BUILD,
    TEMPLATES,
    changed,
    client_for,
    inventory,
    list_bucket,
    md5,
    read_object,
)
from webrelease.copier.siterecord import record_place
from webrelease.copier.storage import parse_url

pytestmark = [pytest.mark.reliability, pytest.mark.storage, pytest.mark.database]

GOOD = [f"t{i:02d}" for i in range(20)]
#: hostile customers: id -> (slug, what their reason must say)
HOSTILE = {
    "climber": ("..", "single safe path segment"),
    "pathy": ("a/b", "single safe path segment"),
    "evil": ("evil", "contains a backslash"),  # its overrides hold a key with backslashes
}
SERVICE_ACCOUNT_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"


@dataclass
class Scene:
    """Everything the tests of this module read, gathered once."""

    s3: S3Endpoint
    namespace: str
    buckets: dict[str, str]
    secret_values: dict[str, str]
    bodies: dict[str, dict[str, Any]]
    written: set[tuple[str, str]]
    jobs: list[dict[str, Any]]
    pods: list[dict[str, Any]]
    events: list[dict[str, Any]]
    operator_log: str
    pod_logs: dict[str, str]
    objects: dict[tuple[str, str], bytes] = field(default_factory=dict)
    status_cli: str = ""


def _table(pg: PostgresServer, url: str) -> None:
    database = url.rsplit("/", 1)[1]
    with pg.connect(database) as conn:
        conn.execute('CREATE TABLE customers (id text, slug text, name text, "apiUrl" text, plan text)')
        rows = [(cid, cid, f"Customer {cid}", f"https://{cid}.example/", "team") for cid in GOOD]
        rows += [(cid, slug, cid, f"https://{cid}.example/", "team") for cid, (slug, _) in HOSTILE.items()]
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO customers VALUES (%s, %s, %s, %s, %s)", rows)


def _spec(s3: S3Endpoint, b: dict[str, str], *, db_secret: str, s3_secret: str) -> dict[str, Any]:
    return {
        "source": {"url": f"s3://{b['build']}/build/"},
        "target": {"url": f"s3://{b['sites']}/sites/{{slug}}/"},
        "overrides": {"url": f"s3://{b['build']}/overrides/{{slug}}/"},
        "customers": {
            "sql": {
                "secretRef": {"name": db_secret, "key": "url"},
                "query": 'SELECT id, slug, name, "apiUrl", plan FROM customers',
            }
        },
        "reports": {"url": f"s3://{b['reports']}/reports/"},
        "templates": list(TEMPLATES),
        "prune": True,
        "sharding": {"customersPerShard": 8, "parallelism": 4},
        "failurePolicy": {"retriesPerShard": 0, "toleratedFailedCustomers": 10},
        "storage": {"endpointUrl": s3.endpoint_url, "secretRef": {"name": s3_secret}},
        "worker": {"objectsInFlight": 8},
    }


def _secret(kube: Kube, namespace: str, name: str, data: dict[str, str]) -> None:
    kube.create(
        api_path("v1", "secrets", namespace=namespace), {"metadata": {"name": name}, "stringData": data}
    )


@pytest.fixture(scope="module")
def scene(
    *,
    control_plane: ControlPlane,
    kube: Kube,
    node_agent: NodeAgent | None,
    operator: OperatorProcess,
    s3_server: S3Endpoint,
    postgres: PostgresServer,
) -> Iterator[Scene]:
    if node_agent is None:
        pytest.skip("reads the logs of local pod processes")
    ns = f"tenants-{uuid.uuid4().hex[:6]}"
    kube.create(api_path("v1", "namespaces"), {"metadata": {"name": ns}})
    wait_until(
        "the default ServiceAccount",
        lambda: kube.find(api_path("v1", "serviceaccounts", namespace=ns, name="default")),
    )
    b = {k: unique_bucket_name(k[:2]) for k in ("build", "sites", "reports", "victim")}
    client = client_for(s3_server)
    try:
        for bucket in b.values():
            client.create_bucket(Bucket=bucket)
        for key, body in BUILD.items():
            client.put_object(Bucket=b["build"], Key=f"build/{key}", Body=body)
        client.put_object(Bucket=b["build"], Key="overrides/t01/assets/extra.css", Body=b"t01{}")
        client.put_object(Bucket=b["build"], Key="overrides/evil/assets\\..\\..\\victim.html", Body=b"pwned")
        client.put_object(Bucket=b["sites"], Key="sites/victim/index.html", Body=b"victim's page")
        client.put_object(Bucket=b["victim"], Key="index.html", Body=b"victim's page")

        db_url = postgres.new_database()
        _table(postgres, db_url)
        wrong_password = secrets.token_urlsafe(12)
        wrong_db_url = db_url.replace(f":{postgres.password}@", f":{wrong_password}@")
        wrong_s3_key = secrets.token_hex(16)
        create_storage_secret(kube, ns, s3_server)
        _secret(kube, ns, "db", {"url": db_url})
        _secret(kube, ns, "db-wrong", {"url": wrong_db_url})
        _secret(
            kube,
            ns,
            "s3-wrong",
            {"AWS_ACCESS_KEY_ID": s3_server.access_key, "AWS_SECRET_ACCESS_KEY": wrong_s3_key},
        )

        before = inventory(s3_server)
        releases = {
            "tenants": _spec(s3_server, b, db_secret="db", s3_secret=SECRET),
            "bad-db": _spec(s3_server, b, db_secret="db-wrong", s3_secret=SECRET),
            "bad-s3": _spec(s3_server, b, db_secret="db", s3_secret="s3-wrong"),
        }
        for name, spec in releases.items():
            done = apply(control_plane, ns, manifest(name, spec))
            assert done.returncode == 0, done.stderr
        bodies = {
            name: wait_release(kube, ns, name, "the run has ended", ended, operator=operator, timeout_s=180)
            for name in releases
        }
        written = changed(before, inventory(s3_server))
        pods = kube.items(api_path("v1", "pods", namespace=ns))
        pod_logs = {}
        for pod_dir in (node_agent.config.work_dir / "pods").glob(f"{ns}_*"):
            pod_logs[pod_dir.name] = "\n".join(p.read_text(errors="replace") for p in pod_dir.glob("*.log"))
        scene = Scene(
            s3=s3_server,
            namespace=ns,
            buckets=b,
            secret_values={
                "S3 secret key": s3_server.secret_key,
                "wrong S3 secret key": wrong_s3_key,
                "database URL": db_url,
                "database password": postgres.password,
                "wrong database URL": wrong_db_url,
                "wrong database password": wrong_password,
            },
            bodies={name: kube.get(release_path(ns, name)) for name in bodies},
            written=written,
            jobs=kube.items(api_path("batch/v1", "jobs", namespace=ns)),
            pods=pods,
            events=kube.items(api_path("v1", "events", namespace=ns)),
            operator_log=operator.log_tail(10_000_000),
            pod_logs=pod_logs,
        )
        for bucket in (b["reports"], b["sites"]):
            for key in list_bucket(s3_server, bucket):
                scene.objects[(bucket, key)] = read_object(s3_server, bucket, key)
        status = subprocess.run(
            [
                str(VENV_BIN / "webrelease"),
                "status",
                "tenants",
                "-n",
                ns,
                "--kubeconfig",
                str(control_plane.kubeconfig),
                "-o",
                "json",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        scene.status_cli = status.stdout + status.stderr
        yield scene
    finally:
        kube.delete(api_path("v1", "namespaces", name=ns), {"propagationPolicy": "Background"})
        for bucket in b.values():
            s3_server.remove_bucket(bucket)


def _haystacks(scene: Scene) -> dict[str, str]:
    stacks = {
        "operator log": scene.operator_log,
        "webrelease status": scene.status_cli,
        "events": json.dumps(scene.events),
        "webreleases": json.dumps(scene.bodies),
        "jobs": json.dumps(scene.jobs),
        "pods": json.dumps(scene.pods),
    }
    stacks.update({f"pod log {name}": text for name, text in scene.pod_logs.items()})
    stacks.update(
        {f"s3://{b}/{k}": body.decode("utf-8", "replace") for (b, k), body in scene.objects.items()}
    )
    return stacks


def test_no_secret_anywhere(scene: Scene) -> None:
    stacks = _haystacks(scene)
    # the places searched are not empty: each holds what it should
    assert len(scene.pod_logs) >= 3 and all(scene.pod_logs.values())
    assert any(k[1].endswith("/index.json") for k in scene.objects)
    terminations = [
        cs["state"]["terminated"].get("message", "")
        for p in scene.pods
        for cs in (p.get("status") or {}).get("containerStatuses") or []
        if "terminated" in (cs.get("state") or {})
    ]
    assert terminations and all('"exitCode"' in m for m in terminations)
    assert any(e.get("type") == "Warning" for e in scene.events)
    assert "--- start 1 ---" in scene.operator_log
    for what, value in scene.secret_values.items():
        for where, text in stacks.items():
            assert value not in text, f"the {what} appears in {where}"


def test_failed_runs_say_why_without_the_secret(scene: Scene) -> None:
    def failed(name: str) -> dict[str, Any]:
        (cond,) = [c for c in scene.bodies[name]["status"]["conditions"] if c["type"] == "Failed"]
        assert cond["status"] == "True", cond
        return dict(cond)

    db = failed("bad-db")
    assert "password authentication failed" in db["message"], db
    s3 = failed("bad-s3")
    assert "access denied" in s3["message"], s3
    for name in ("bad-db", "bad-s3"):
        assert _of(scene.jobs, name) == [] and _of(scene.pods, name) == [], f"{name} made a Job"


def _of(objs: list[dict[str, Any]], release: str) -> list[dict[str, Any]]:
    return [o for o in objs if (o["metadata"].get("labels") or {}).get("webrelease.dev/release") == release]


def _evil_site(scene: Scene) -> list[str]:
    return sorted(
        k for (b, k) in scene.objects if b == scene.buckets["sites"] and k.startswith("sites/evil/")
    )


def test_shard_pods_have_no_api_token(scene: Scene) -> None:
    (job,) = _of(scene.jobs, "tenants")
    assert job["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    shard_pods = _of(scene.pods, "tenants")
    assert len(shard_pods) == 3  # 23 customers, 8 per shard
    for pod in shard_pods:
        spec = pod["spec"]
        assert spec.get("automountServiceAccountToken") is False, spec
        projected = [
            v["name"]
            for v in spec.get("volumes") or []
            if any("serviceAccountToken" in s for s in (v.get("projected") or {}).get("sources") or [])
            or "kube-api-access" in v["name"]
        ]
        assert projected == [], projected
        mounts = [m["mountPath"] for c in spec["containers"] for m in c.get("volumeMounts") or []]
        assert SERVICE_ACCOUNT_MOUNT not in mounts, mounts
        env = [e["name"] for c in spec["containers"] for e in c.get("env") or []]
        values = json.dumps([c.get("env") for c in spec["containers"]])
        assert "AWS_SECRET_ACCESS_KEY" in env  # from the Secret, by reference
        assert scene.secret_values["S3 secret key"] not in values


def test_no_tenant_writes_outside_its_own_site(scene: Scene) -> None:
    body = scene.bodies["tenants"]
    status = body["status"]
    assert status["customers"] == {
        "total": 23,
        "succeeded": 20,
        "failed": 3,
        "pending": 0,
        "notReleased": 0,
    }, status["customers"]
    reasons = {f["id"]: f["reason"] for f in status["failedCustomers"]["sample"]}
    assert set(reasons) == set(HOSTILE)
    for cid, (_, says) in HOSTILE.items():
        assert says in reasons[cid], (cid, reasons[cid])
    b = scene.buckets
    run_prefix = f"reports/{scene.namespace}/"
    records = set()  # each good site's record, beside the reports (webrelease.copier.siterecord)
    for cid in GOOD:
        folder, name = record_place(
            f"s3://{b['reports']}/reports/", parse_url(f"s3://{b['sites']}/sites/{cid}/")
        )
        records.add((b["reports"], folder.prefix + name))
    stray = {
        (bucket, key)
        for bucket, key in scene.written
        if not (bucket == b["reports"] and key.startswith(run_prefix))
        and (bucket, key) not in records
        and not (bucket == b["sites"] and key.split("/")[1] in GOOD)
    }
    assert not stray, sorted(stray)[:10]
    for cid in GOOD:
        site = {
            k: v
            for (bucket, k), v in scene.objects.items()
            if bucket == b["sites"] and k.startswith(f"sites/{cid}/")
        }
        want = {f"sites/{cid}/{k}" for k in BUILD} | (
            {f"sites/{cid}/assets/extra.css"} if cid == "t01" else set()
        )
        assert set(site) == want, (cid, sorted(set(site) ^ want))
        assert md5(site[f"sites/{cid}/assets/app.js"]) == md5(BUILD["assets/app.js"])
    assert scene.objects[(b["sites"], "sites/victim/index.html")] == b"victim's page"
    # a key it cannot write is found before the first write: nothing of it half written
    assert _evil_site(scene) == []
