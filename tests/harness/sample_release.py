"""The sample release the operator tests run: a small build with templates, its customers, the
spec, and what every site must hold byte for byte (shared by the cluster and node tiers)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from tests.harness.operator_harness import SECRET, read_json, read_jsonl, read_prefix
from tests.harness.s3server import S3Endpoint

TEMPLATES = ["index.html", "config.js", "docs/**/*.html"]
#: the build files those patterns match
TEMPLATED = {"index.html", "config.js", "docs/guide/index.html"}
BUILD_V1: dict[str, str] = {
    "index.html": "<!doctype html><title>{{ name }}</title><p>v1</p>\n",
    "config.js": "window.API = {{ apiUrl|json }};\n",
    "assets/app.js": "console.log('app v1');\n",
    "assets/logo.svg": "<svg xmlns='http://www.w3.org/2000/svg'/>\n",
    "docs/guide/index.html": "<p>guide for {{ name }}</p>\n",
}
BUILD_V2: dict[str, str] = {
    **BUILD_V1,
    "index.html": "<!doctype html><title>{{ name }}</title><p>v2</p>\n",
    "assets/app.js": "console.log('app v2');\n",
}


def customers(n: int = 50, *, without_api: Sequence[str] = ()) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        cid = f"c{i:03d}"
        record: dict[str, Any] = {"id": cid, "name": f"Customer {i}"}
        if cid not in without_api:
            record["apiUrl"] = f"https://{cid}.example/api"
        out.append(record)
    return out


def expected_site(build: Mapping[str, str], record: Mapping[str, Any]) -> dict[str, bytes]:
    """What a site must hold, byte for byte (the templates here only use plain names and |json)."""
    site = {}
    for key, body in build.items():
        text = body
        if key in TEMPLATED:
            text = text.replace("{{ name }}", str(record["name"]))
            text = text.replace("{{ apiUrl|json }}", json.dumps(record.get("apiUrl")))
        site[key] = text.encode()
    return site


def spec_for(
    s3: S3Endpoint, bucket: str, customers_url: str, *, build: str = "v1", **extra: Any
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "source": {"url": f"s3://{bucket}/builds/{build}/"},
        "target": {"url": f"s3://{bucket}/sites/{{id}}/"},
        "customers": {"url": customers_url},
        "reports": {"url": f"s3://{bucket}/reports/"},
        "templates": TEMPLATES,
        "sharding": {"customersPerShard": 10, "parallelism": 5},
        "failurePolicy": {"retriesPerShard": 0},
        "storage": {"endpointUrl": s3.endpoint_url, "secretRef": {"name": SECRET}},
    }
    spec.update(extra)
    return spec


def sites(s3: S3Endpoint, bucket: str) -> dict[str, dict[str, bytes]]:
    """Every site in the bucket: customer id -> {key: bytes}."""
    out: dict[str, dict[str, bytes]] = {}
    for key, body in read_prefix(s3, bucket, "sites/").items():
        cid, _, rest = key.partition("/")
        out.setdefault(cid, {})[rest] = body
    return out


def shard_result_ids(s3: S3Endpoint, index_url: str) -> dict[str, list[dict[str, Any]]]:
    """Every customer line of every shard result file the run's report index lists, by step."""
    index = read_json(s3, index_url)
    return {
        step["stepId"]: [line for shard in step["shards"] for line in read_jsonl(s3, shard["results"])]
        for step in index["steps"]
    }
