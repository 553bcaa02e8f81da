"""The bad-input corpus, the part that goes through the apiserver: refused at ``kubectl apply`` by the
CRD's schema, or accepted and then Failed by the operator with a condition naming the field or the
item, with no Job and nothing written anywhere on the S3 server (every bucket listed before and
after). The operator tests cover the common spec mistakes; these are the hostile ones.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.harness.cluster_fixtures import wait_until
from tests.harness.controlplane import ControlPlane, Kube, api_path
from tests.harness.id_corpus import ID_CORPUS
from tests.harness.operator_harness import (
    OperatorProcess,
    apply,
    condition,
    create_storage_secret,
    ended,
    jobs_of,
    manifest,
    release_path,
    wait_release,
)
from tests.harness.s3_fixtures import unique_bucket_name
from tests.harness.s3server import S3Endpoint
from tests.reliability.kit import BUILD, TEMPLATES, changed, client_for, inventory
from webrelease.copier.customers import id_problem

pytestmark = [pytest.mark.reliability, pytest.mark.storage]

Spec = dict[str, Any]


@dataclass(frozen=True)
class Place:
    """A namespace with the storage Secret, and a bucket holding a build."""

    plane: ControlPlane
    kube: Kube
    s3: S3Endpoint
    operator: OperatorProcess
    namespace: str
    bucket: str

    def spec(self) -> Spec:
        return {
            "source": {"url": f"s3://{self.bucket}/build/"},
            "target": {"url": f"s3://{self.bucket}/sites/{{id}}/"},
            "customers": {"inline": [{"id": "a", "apiUrl": "x", "name": "A", "plan": "p"}]},
            "reports": {"url": f"s3://{self.bucket}/reports/"},
            "templates": list(TEMPLATES),
            "storage": {"endpointUrl": self.s3.endpoint_url, "secretRef": {"name": "s3-credentials"}},
        }


@pytest.fixture(scope="module")
def place(
    control_plane: ControlPlane, kube: Kube, s3_server: S3Endpoint, operator: OperatorProcess
) -> Iterator[Place]:
    ns = f"hostile-{uuid.uuid4().hex[:6]}"
    kube.create(api_path("v1", "namespaces"), {"metadata": {"name": ns}})
    sa = api_path("v1", "serviceaccounts", namespace=ns, name="default")
    wait_until("the default ServiceAccount", lambda: kube.find(sa))
    create_storage_secret(kube, ns, s3_server)
    bucket = unique_bucket_name("hb")
    client = client_for(s3_server)
    client.create_bucket(Bucket=bucket)
    for key, body in BUILD.items():
        client.put_object(Bucket=bucket, Key=f"build/{key}", Body=body)
    try:
        yield Place(control_plane, kube, s3_server, operator, ns, bucket)
    finally:
        kube.delete(api_path("v1", "namespaces", name=ns), {"propagationPolicy": "Background"})
        s3_server.remove_bucket(bucket)


@dataclass(frozen=True)
class Hostile:
    change: Callable[[Spec, Place], None]
    #: refused at apply with this text, or
    rejected: str | None = None
    #: Failed with this reason and these texts in its message
    reason: str = ""
    says: tuple[str, ...] = ()


def _set(key: str, value: Any) -> Callable[[Spec, Place], None]:
    def change(spec: Spec, place: Place) -> None:
        spec[key] = value(place) if callable(value) else value

    return change


def _inline(*records: dict[str, Any]) -> Callable[[Spec, Place], None]:
    return _set("customers", {"inline": [{"id": "a", "apiUrl": "x", "name": "A", "plan": "p"}, *records]})


def _both(*changes: Callable[[Spec, Place], None]) -> Callable[[Spec, Place], None]:
    def change(spec: Spec, place: Place) -> None:
        for one in changes:
            one(spec, place)

    return change


CASES: dict[str, Hostile] = {
    "unicode id": Hostile(
        _inline({"id": "ünï"}), reason="InvalidCustomerList", says=("item 1", "not a valid customer id")
    ),
    "traversal id": Hostile(
        _inline({"id": "../victim"}), reason="InvalidCustomerList", says=("'../victim'",)
    ),
    "duplicate id": Hostile(_inline({"id": "a"}), reason="InvalidCustomerList", says=("duplicate id 'a'",)),
    "target prefix climbs out": Hostile(
        _set("target", lambda p: {"url": f"s3://{p.bucket}/sites/../victim/{{id}}/"}),
        reason="InvalidSpec",
        says=("spec.target.url",),
    ),
    "template pattern outside the build": Hostile(
        _set("templates", ["index.html", "/etc/passwd"]), reason="InvalidSpec", says=("spec.templates",)
    ),
    "shard size a string": Hostile(
        _set("sharding", {"customersPerShard": "ten"}), rejected="customersPerShard"
    ),
    "inline list over its cap": Hostile(
        _set("customers", {"inline": [{"id": f"c{i}"} for i in range(101)]}), rejected="spec.customers.inline"
    ),
    "a 2 MiB inline record": Hostile(_inline({"id": "big", "name": "n" * (2 << 20)}), rejected="too large"),
    # issue 11: sites that overlap what a run reads or keeps; values taken exactly
    "target inside the build": Hostile(
        _set("target", lambda p: {"url": f"s3://{p.bucket}/build/sites/{{id}}/"}),
        rejected="every site would lie inside the build",
    ),
    "overrides inside the own site": Hostile(
        _set("overrides", lambda p: {"url": f"s3://{p.bucket}/sites/{{id}}/ov/"}),
        rejected="inside or around its own site",
    ),
    "reports inside the build": Hostile(
        _set("reports", lambda p: {"url": f"s3://{p.bucket}/build/reports/"}),
        rejected="the reports and the build overlap",
    ),
    "a customer whose site is the build": Hostile(
        _both(
            _set("target", lambda p: {"url": f"s3://{p.bucket}/{{id}}/"}),
            _inline({"id": "build", "apiUrl": "x", "name": "B", "plan": "p"}),
        ),
        reason="InvalidCustomerList",
        says=("item 1", "customer 'build'", "would be the build (spec.source.url"),
    ),
    "an id with a trailing newline": Hostile(
        _inline({"id": "b\n"}), reason="InvalidCustomerList", says=("item 1", "not a valid customer id")
    ),
    "a target field that is a list": Hostile(
        _both(
            _set("target", lambda p: {"url": f"s3://{p.bucket}/sites/{{slug}}/"}),
            _inline({"id": "b", "slug": ["x", "y"], "apiUrl": "x", "name": "B", "plan": "p"}),
        ),
        reason="InvalidCustomerList",
        says=("item 1", "customer 'b'", "field 'slug' is a list"),
    ),
    # issue 11: what would fail every shard alike is Failed before any Job, nothing written
    "a template pattern that matches no build file": Hostile(
        _set("templates", ["index.html", "confg.js"]),
        reason="BuildUnusable",
        says=("spec.templates.1", "'confg.js'", "matches no file of the build"),
    ),
    "the sites' bucket missing": Hostile(
        _set("target", lambda p: {"url": "s3://no-such-bucket-11b/sites/{id}/"}),
        reason="BuildUnusable",
        says=("spec.target.url", "'no-such-bucket-11b'", "does not exist"),
    ),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_hostile_release_refused_in_the_cluster(case: str, place: Place) -> None:
    bad = CASES[case]
    spec = place.spec()
    bad.change(spec, place)
    name = "h-" + uuid.uuid4().hex[:8]
    before = inventory(place.s3)
    done = apply(place.plane, place.namespace, manifest(name, spec))
    if bad.rejected is not None:
        assert done.returncode != 0, f"the apiserver accepted it: {done.stdout}"
        assert bad.rejected in done.stderr, done.stderr[-2000:]
        assert place.kube.find(release_path(place.namespace, name)) is None
    else:
        assert done.returncode == 0, done.stderr
        body = wait_release(place.kube, place.namespace, name, "Failed", ended, operator=place.operator)
        failed = condition(body, "Failed")
        assert failed is not None and failed["status"] == "True", body["status"]["conditions"]
        assert failed["reason"] == bad.reason, failed
        for says in bad.says:
            assert says in failed["message"], failed["message"]
    assert jobs_of(place.kube, place.namespace, name) == []
    assert not changed(before, inventory(place.s3)), sorted(changed(before, inventory(place.s3)))[:10]


def test_the_id_rule_of_the_crd_is_the_python_one(place: Place) -> None:
    """The id corpus through the real apiserver (``canary.ids`` carries the id pattern; a server-side
    dry run validates without storing): what it accepts is exactly what the copier accepts."""
    disagree = []
    for text in ID_CORPUS:
        spec = {**place.spec(), "canary": {"ids": [text]}}
        body = manifest("dry-" + uuid.uuid4().hex[:8], spec)
        response = place.kube.open("POST", release_path(place.namespace), body=body, query={"dryRun": "All"})
        apiserver = response.status < 400
        assert response.status in (200, 201, 422), response.data[:500]
        if apiserver != (id_problem(text) is None):
            disagree.append((text, apiserver, response.data[:200]))
    assert not disagree, disagree
