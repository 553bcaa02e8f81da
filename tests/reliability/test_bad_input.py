"""Bad input, one table: malformed releases, customer lists, customer records and templates.

Every case gets a clear error that names the field, the line or the template line, and writes
nothing outside the customer's own site: every object of every bucket on the S3 server is listed
before and after, and the difference must be only good customers' sites and the run's own report
(nothing at all when the release or the list is refused).

Three ways a case is run, all through the ``webrelease`` CLI against the real S3 server:

- ``refused`` (a bad release file or customer list): ``webrelease run`` in this process
  (``webrelease.cli.main``: it stops before any worker starts) exits 2 with the message, and the
  server is exactly as before;
- ``customer`` (a bad record, or a template that misbehaves for one customer): one shared
  ``webrelease run`` of every such customer plus good ones; each bad one fails alone with its
  reason, its site stays empty, ``webrelease verify`` names it, the good ones are exact;
- ``template`` (a template that cannot compile at all): a run of its own, where every customer
  fails with the reason and no site is written.

A subset goes through the apiserver (``test_bad_input_cluster.py``).
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness.s3_fixtures import unique_bucket_name
from tests.harness.s3server import S3Endpoint
from tests.reliability.kit import (
    WEBRELEASE,
    changed,
    clean_env,
    client_for,
    encode_jsonl,
    inventory,
    list_bucket,
    read_object,
)
from webrelease import cli as webrelease_cli
from webrelease.copier.siterecord import RECORDS_FOLDER, record_place
from webrelease.copier.storage import parse_url

pytestmark = [pytest.mark.reliability, pytest.mark.storage]

Spec = dict[str, Any]
Doc = dict[str, Any]

GiB = 1 << 30

# -- the release every case starts from ---------------------------------------------------------

#: ``config.js`` misbehaves in one way per ``case`` field; ``ok`` is the good output.
HOSTILE_CONFIG = """\
{%- if case == "ok" -%}
window.API = {{ apiUrl|json }};
{%- elif case == "read-file" -%}
{% include "/etc/passwd" %}
{%- elif case == "import" -%}
{% import "../../etc/passwd" as p %}{{ p }}
{%- elif case == "dunder-class" -%}
{{ ''.__class__.__mro__[1].__subclasses__() }}
{%- elif case == "globals" -%}
{{ cycler.__init__.__globals__ }}
{%- elif case == "self-context" -%}
{{ self._TemplateReference__context }}
{%- elif case == "mutate" -%}
{{ customer.update({"id": "victim"}) }}
{%- elif case == "method-call" -%}
{{ customer.clear() }}
{%- elif case == "attr-filter" -%}
{{ customer|attr("__class__") }}
{%- elif case == "format-escape" -%}
{{ "{0.__class__.__init__.__globals__}".format(apiUrl) }}
{%- elif case == "gib-output" -%}
{% for i in range(100000) %}{{ "x" * 100000 }}{% endfor %}
{%- elif case == "single-value-gib" -%}
{{ "x"|center(3 * 1024 * 1024 * 1024) }}
{%- elif case == "huge-value" -%}
{% for i in range(20) %}{{ name }}{% endfor %}
{%- elif case == "range-bomb" -%}
{{ range(10 ** 9)|length }}
{%- elif case == "list-bomb" -%}
{{ [0] * 10 ** 8 }}
{%- elif case == "pow-bomb" -%}
{{ 2 ** 100000 }}
{%- elif case == "recursion" -%}
{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}
{%- elif case == "undefined" -%}
{{ apiUrl|json }} {{ notAField }}
{%- elif case == "raise" -%}
{{ 1 // 0 }}
{%- endif %}
"""
INDEX = "<!doctype html><h1>{{ name|e }}</h1>\n"
BUILD: dict[str, str | bytes] = {
    "index.html": INDEX,
    "config.js": HOSTILE_CONFIG,
    "assets/app.js": "console.log(1);\n",
}
GOOD_NAME = "Ünïcødé ✓ \u2028 </script><b>"


def good_customer(cid: str) -> dict[str, Any]:
    return {"id": cid, "slug": cid, "case": "ok", "name": GOOD_NAME, "apiUrl": f"https://{cid}.example/"}


@dataclass
class World:
    """The buckets of one case (or one shared run) on the session's S3 server."""

    s3: S3Endpoint
    folder: Path
    build: str = field(default_factory=lambda: unique_bucket_name("bb"))
    sites: str = field(default_factory=lambda: unique_bucket_name("bs"))
    reports: str = field(default_factory=lambda: unique_bucket_name("br"))
    victim: str = field(default_factory=lambda: unique_bucket_name("bv"))

    def setup(self, build: dict[str, str | bytes], customers: bytes) -> World:
        client = client_for(self.s3)
        for bucket in (self.build, self.sites, self.reports, self.victim):
            client.create_bucket(Bucket=bucket)
        for key, body in build.items():
            data = body.encode() if isinstance(body, str) else body
            client.put_object(Bucket=self.build, Key=f"build/{key}", Body=data)
        self.put_customers(customers)
        client.put_object(Bucket=self.build, Key="overrides/good-2/assets/extra.css", Body=b"b{}")
        # a tenant's own upload with a key no site can hold (the entrypoint pattern matches it)
        client.put_object(Bucket=self.build, Key="overrides/x-bad-key/a\\..\\victim.html", Body=b"x")
        # another tenant's site, in the sites bucket and in a bucket of its own: never touched
        client.put_object(Bucket=self.sites, Key="sites/victim/index.html", Body=b"victim's page")
        client.put_object(Bucket=self.victim, Key="sites/victim/index.html", Body=b"victim's page")
        self.folder.mkdir(parents=True, exist_ok=True)
        return self

    def put_customers(self, customers: bytes) -> None:
        client_for(self.s3).put_object(Bucket=self.build, Key="lists/customers.jsonl", Body=customers)

    def teardown(self) -> None:
        for bucket in (self.build, self.sites, self.reports, self.victim):
            self.s3.remove_bucket(bucket)

    def spec(self) -> Spec:
        return {
            "source": {"url": f"s3://{self.build}/build/"},
            "target": {"url": f"s3://{self.sites}/sites/{{slug}}/"},
            "customers": {"url": f"s3://{self.build}/lists/customers.jsonl"},
            "overrides": {"url": f"s3://{self.build}/overrides/{{slug}}/"},
            "reports": {"url": f"s3://{self.reports}/reports/"},
            "templates": ["index.html", "config.js"],
            "prune": True,
            "sharding": {"customersPerShard": 100},
            "storage": {"endpointUrl": self.s3.endpoint_url, "addressingStyle": "path"},
            "worker": {"objectsInFlight": 8},
        }

    def doc(self, spec: Spec | None = None) -> Doc:
        return {
            "apiVersion": "webrelease.dev/v1alpha1",
            "kind": "WebRelease",
            "metadata": {"name": "hostile"},
            "spec": self.spec() if spec is None else spec,
        }

    def write(self, doc: Any, name: str = "release.yaml") -> Path:
        path = self.folder / name
        path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc, sort_keys=False))
        return path

    def env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": self.s3.access_key, "AWS_SECRET_ACCESS_KEY": self.s3.secret_key}

    def own(self, key: tuple[str, str], ok_sites: set[str]) -> bool:
        """Whether a changed object is one a run may write: a good customer's site, its site record
        (beside the reports), or the run's report."""
        bucket, name = key
        if bucket == self.reports and name.startswith("reports/default/hostile/"):
            return True
        if bucket == self.reports and name.startswith(f"reports/{RECORDS_FOLDER}/"):
            for s in ok_sites:
                folder, record = record_place(
                    f"s3://{self.reports}/reports/", parse_url(f"s3://{self.sites}/sites/{s}/")
                )
                if name == folder.prefix + record:
                    return True
        return bucket == self.sites and any(name.startswith(f"sites/{s}/") for s in ok_sites)


@contextlib.contextmanager
def world(s3: S3Endpoint, folder: Path, build: dict[str, str | bytes], customers: bytes) -> Iterator[World]:
    w = World(s3, folder).setup(build, customers)
    try:
        yield w
    finally:
        w.teardown()


# -- the table ----------------------------------------------------------------------------------

Change = Callable[[Doc, World], Any]


@dataclass(frozen=True)
class Refused:
    """A release file or customer list that ``webrelease run`` must refuse (exit 2), naming it."""

    change: Change
    #: texts the error must contain (the field's camelCase path, or the line)
    says: tuple[str, ...]
    #: a customer list (JSON Lines text, or bytes) instead of the good one
    customers: bytes | None = None


@dataclass(frozen=True)
class Customer:
    """A customer record that fails alone, with these texts in its reason."""

    record: dict[str, Any]
    says: tuple[str, ...]


@dataclass(frozen=True)
class WholeTemplate:
    """A template that fails every customer (it cannot be compiled), with these texts."""

    config_js: str | bytes
    says: tuple[str, ...]


def _spec(path: str, value: Any) -> Change:
    def change(doc: Doc, w: World) -> None:
        node: Any = doc
        *parents, last = path.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value(w) if callable(value) else value

    return change


def _drop(path: str) -> Change:
    def change(doc: Doc, w: World) -> None:
        node: Any = doc
        *parents, last = path.split(".")
        for p in parents:
            node = node[p]
        del node[last]

    return change


def _text(text: str) -> Change:
    return lambda doc, w: text


def _same(doc: Doc, w: World) -> None:
    return None


def _lines(*records: Any) -> bytes:
    good = [good_customer("good-1")]
    return encode_jsonl(good) + b"".join(
        (r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in records
    )


def _rec(cid: str, **fields: Any) -> dict[str, Any]:
    return {**good_customer(cid), **fields}


#: nine levels of ten aliases each: 10**9 nodes once expanded, 300 bytes written
_ALIAS_BOMB = "lol0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"lol{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]\n" for i in range(1, 10)
)

REFUSED: dict[str, Refused] = {
    # -- the release file
    "not YAML": Refused(_text("spec: [unclosed\n"), ("not valid YAML",)),
    "a list, not a manifest": Refused(_text("- a\n- b\n"), ("expected a WebRelease manifest",)),
    "wrong apiVersion": Refused(_spec("apiVersion", "webrelease.dev/v2"), ("apiVersion",)),
    "wrong kind": Refused(_spec("kind", "Deployment"), ("kind",)),
    "no spec": Refused(_drop("spec"), ("spec", "Field required")),
    "no source": Refused(_drop("spec.source"), ("spec.source", "Field required")),
    "https build": Refused(_spec("spec.source.url", "https://cdn.example/build/"), ("spec.source.url",)),
    "unicode bucket": Refused(_spec("spec.source.url", "s3://bücket/build/"), ("spec.source.url",)),
    "shard size a string": Refused(
        _spec("spec.sharding.customersPerShard", "ten"), ("spec.sharding.customersPerShard",)
    ),
    "shard size zero": Refused(
        _spec("spec.sharding.customersPerShard", 0), ("spec.sharding.customersPerShard",)
    ),
    "shard size huge": Refused(
        _spec("spec.sharding.customersPerShard", 10**12), ("spec.sharding.customersPerShard",)
    ),
    "negative objects in flight": Refused(
        _spec("spec.worker.objectsInFlight", -1), ("spec.worker.objectsInFlight",)
    ),
    "retries a word": Refused(
        _spec("spec.failurePolicy.retriesPerShard", "many"), ("spec.failurePolicy.retriesPerShard",)
    ),
    "tolerance over 100 percent": Refused(
        _spec("spec.failurePolicy.toleratedFailedPercent", 150),
        ("spec.failurePolicy.toleratedFailedPercent",),
    ),
    "unknown field": Refused(_spec("spec.sharding.shards", 3), ("spec.sharding.shards", "Extra inputs")),
    "two customer sources": Refused(
        _spec("spec.customers.inline", [{"id": "a"}]), ("spec.customers", "exactly one of")
    ),
    "inline list over its cap": Refused(
        _spec("spec.customers", {"inline": [{"id": f"c{i}"} for i in range(101)]}), ("spec.customers.inline",)
    ),
    "no reports": Refused(_drop("spec.reports"), ("spec.reports", "Field required")),
    "endpoint not http": Refused(
        _spec("spec.storage.endpointUrl", "ftp://127.0.0.1/"), ("spec.storage.endpointUrl",)
    ),
    "region with a space": Refused(_spec("spec.storage.region", "us east"), ("spec.storage.region",)),
    "a 1 MiB target": Refused(
        _spec("spec.target.url", lambda w: f"s3://{w.sites}/{'x' * 2**20}/{{id}}/"), ("spec.target.url",)
    ),
    "101 templates": Refused(_spec("spec.templates", [f"t{i}.js" for i in range(101)]), ("spec.templates",)),
    "a 300-character template pattern": Refused(_spec("spec.templates", ["a" * 300]), ("spec.templates.0",)),
    "release name climbs out": Refused(_spec("metadata.name", "../../victim"), ("metadata.name",)),
    "template pattern outside the build": Refused(
        _spec("spec.templates", ["index.html", "/etc/passwd"]), ("spec.templates",)
    ),
    # -- target and overrides templates
    "target prefix climbs out": Refused(
        _spec("spec.target.url", lambda w: f"s3://{w.sites}/sites/../victim/{{slug}}/"), ("spec.target.url",)
    ),
    "overrides prefix climbs out": Refused(
        _spec("spec.overrides.url", lambda w: f"s3://{w.build}/overrides/../../{{slug}}/"),
        ("spec.overrides.url",),
    ),
    "target without placeholder": Refused(
        _spec("spec.target.url", lambda w: f"s3://{w.sites}/sites/all/"),
        ("spec.target.url", "no placeholder"),
    ),
    "placeholder in the bucket": Refused(_spec("spec.target.url", "s3://{id}/site/"), ("spec.target.url",)),
    "placeholder reaching an attribute": Refused(
        _spec("spec.target.url", lambda w: f"s3://{w.sites}/sites/{{id.__class__}}/"),
        ("spec.target.url", "plain field name"),
    ),
    "placeholder indexing": Refused(
        _spec("spec.target.url", lambda w: f"s3://{w.sites}/sites/{{id[0]}}/"),
        ("spec.target.url", "plain field name"),
    ),
    "placeholder with a conversion": Refused(
        _spec("spec.target.url", lambda w: f"s3://{w.sites}/sites/{{id!r}}/"),
        ("spec.target.url", "plain field name"),
    ),
    "prefix not ending in a slash": Refused(
        _spec("spec.target.url", lambda w: f"s3://{w.sites}/sites{{id}}/"),
        ("spec.target.url", "must end with '/'"),
    ),
    "target not a folder": Refused(
        _spec("spec.target.url", lambda w: f"s3://{w.sites}/sites/{{id}}"),
        ("spec.target.url", "must end with '/'"),
    ),
    "overrides without placeholder": Refused(
        _spec("spec.overrides.url", lambda w: f"s3://{w.build}/overrides/"),
        ("spec.overrides.url", "no placeholder"),
    ),
    # -- the customer list
    "list: not JSON": Refused(_same, ("line 2", "malformed JSON"), customers=_lines(b"{id: nope}")),
    "list: no id": Refused(_same, ("line 2", "missing id"), customers=_lines({"name": "x"})),
    "list: numeric id": Refused(_same, ("line 2", "id must be a string"), customers=_lines({"id": 42})),
    "list: uppercase id": Refused(
        _same, ("line 2", "'ACME'", "not a valid customer id"), customers=_lines(_rec("ACME"))
    ),
    "list: unicode id": Refused(_same, ("line 2", "not a valid customer id"), customers=_lines(_rec("café"))),
    "list: homoglyph id": Refused(
        _same, ("line 2", "not a valid customer id"), customers=_lines(_rec("\u0430cme"))
    ),
    "list: traversal id": Refused(_same, ("line 2", "'../victim'"), customers=_lines(_rec("../victim"))),
    "list: slash in id": Refused(_same, ("line 2", "'a/b'"), customers=_lines(_rec("a/b"))),
    "list: NUL in id": Refused(
        _same, ("line 2", "not a valid customer id"), customers=_lines(_rec("a\x00b"))
    ),
    "list: 64-character id": Refused(
        _same, ("line 2", "not a valid customer id"), customers=_lines(_rec("a" * 64))
    ),
    "list: duplicate id": Refused(
        _same, ("line 3", "duplicate id 'good-1'", "line 1"), customers=_lines(_rec("x1"), _rec("good-1"))
    ),
    "list: record is an array": Refused(
        _same, ("line 2", "expected a JSON object"), customers=_lines(["id", "x"])
    ),
    "list: empty": Refused(_same, ("empty",), customers=b""),
    "list: not UTF-8": Refused(_same, ("line 2", "UTF-8"), customers=_lines(b'{"id": "caf\xe9"}')),
    "list: NaN": Refused(_same, ("line 2", "NaN"), customers=_lines(b'{"id": "nan", "apiUrl": NaN}')),
    "list: a record over 1 MiB": Refused(
        _same, ("line 2", "longer than"), customers=_lines(_rec("big", name="x" * (2 * 2**20)))
    ),
    "list: two customers, one site": Refused(
        _same, ("line 2", "same site"), customers=_lines(_rec("other", slug="good-1"))
    ),
    # -- sites that overlap what a run reads or keeps (issue 11: each was "ok" and pruned it)
    "target inside the build": Refused(
        _spec("spec.target.url", lambda w: f"s3://{w.build}/build/sites/{{slug}}/"),
        ("spec.target.url", "inside the build", "put the sites in a folder of their own"),
    ),
    "target in the reports": Refused(
        _spec("spec.reports.url", lambda w: f"s3://{w.sites}/"),
        ("spec.target.url", "inside the reports"),
    ),
    "overrides inside the own site": Refused(
        _spec("spec.overrides.url", lambda w: f"s3://{w.sites}/sites/{{slug}}/ov/"),
        ("spec.overrides.url", "inside its own site", "put overrides in a folder beside the sites"),
    ),
    "reports inside the build": Refused(
        _spec("spec.reports.url", lambda w: f"s3://{w.build}/build/reports/"),
        ("spec.reports.url", "keep spec.reports.url outside spec.source.url"),
    ),
    "list inside the build": Refused(
        _spec("spec.customers.url", lambda w: f"s3://{w.build}/build/customers.jsonl"),
        ("spec.customers.url", "the customer list"),
    ),
    "a customer whose site is the build": Refused(
        _spec("spec.target.url", lambda w: f"s3://{w.build}/{{slug}}/"),
        ("line 2", "customer 'b-1'", "would be the build (spec.source.url", "change its 'slug'"),
        customers=_lines(_rec("b-1", slug="build")),
    ),
    "a customer whose site holds every override": Refused(
        _spec("spec.target.url", lambda w: f"s3://{w.build}/{{slug}}/"),
        ("line 2", "customer 'o-1'", "its site", "overrides", "overlap"),
        customers=_lines(_rec("o-1", slug="overrides")),
    ),
    "a customer whose site holds the list": Refused(
        _spec("spec.target.url", lambda w: f"s3://{w.build}/{{slug}}/"),
        ("line 2", "customer 'l-1'", "would contain the customer list (spec.customers.url"),
        customers=_lines(_rec("l-1", slug="lists")),
    ),
    "a customer whose site is the reports": Refused(
        _spec("spec.reports.url", lambda w: f"s3://{w.sites}/sites/reports/"),
        ("line 2", "customer 'r-1'", "would be the reports (spec.reports.url"),
        customers=_lines(_rec("r-1", slug="reports")),
    ),
    "a customer whose site is another's overrides": Refused(
        _spec("spec.overrides.url", lambda w: f"s3://{w.sites}/sites/{{id}}/"),
        ("line 3", "customer 'x-2'", "its site", "is customer 'x-1''s overrides (line 2)"),
        customers=_lines(_rec("x-1", slug="a"), _rec("x-2", slug="x-1")),
    ),
    # -- overrides are copied into the customer's public site: never the list, reports or build
    "overrides inside the reports": Refused(
        _spec("spec.reports.url", lambda w: f"s3://{w.build}/overrides/"),
        ("spec.overrides.url", "inside the reports", "keep spec.overrides.url outside spec.reports.url"),
    ),
    "a customer whose overrides hold the list": Refused(
        _spec("spec.overrides.url", lambda w: f"s3://{w.build}/{{slug}}/"),
        ("line 2", "customer 'l-2'", "its overrides", "would contain the customer list", "change its 'slug'"),
        customers=_lines(_rec("l-2", slug="lists")),
    ),
    "a customer whose overrides are the build": Refused(
        _spec("spec.overrides.url", lambda w: f"s3://{w.build}/{{slug}}/"),
        ("line 2", "customer 'b-2'", "its overrides", "would be the build (spec.source.url"),
        customers=_lines(_rec("b-2", slug="build")),
    ),
    "a customer whose overrides are the reports": Refused(
        _spec("spec.reports.url", lambda w: f"s3://{w.build}/overrides/reports/"),
        ("line 2", "customer 'r-2'", "its overrides", "would be the reports (spec.reports.url"),
        customers=_lines(_rec("r-2", slug="reports")),
    ),
    # -- values taken exactly (issue 11 items 3, 9, 10)
    "list: id with a trailing newline": Refused(
        _same, ("line 2", "'good-1\\n'", "not a valid customer id"), customers=_lines(_rec("good-1\n"))
    ),
    "list: target field a list": Refused(
        _same,
        ("line 2", "customer 'v-1'", "field 'slug' is a list (['a', 'b'])"),
        customers=_lines(_rec("v-1", slug=["a", "b"])),
    ),
    "list: target field a boolean": Refused(
        _same,
        ("line 2", "customer 'v-2'", "field 'slug' is a boolean (True)"),
        customers=_lines(_rec("v-2", slug=True)),
    ),
    "list: a key twice in a record": Refused(
        _same,
        ("line 2", "the key 'id' appears twice in one record"),
        customers=_lines(b'{"id": "d-1", "slug": "d-1", "id": "d-2"}'),
    ),
    "release: a key twice": Refused(
        lambda doc, w: yaml.safe_dump(doc, sort_keys=False).replace(
            "  target:\n", f"  target:\n    url: s3://{w.sites}/other/{{slug}}/\n  target:\n", 1
        ),
        ("release.yaml, line", "the key 'target' appears twice in one mapping (also on line", "remove one"),
    ),
    "release: alias bomb": Refused(
        lambda doc, w: yaml.safe_dump(doc, sort_keys=False) + _ALIAS_BOMB,
        ("expands to more than 200000 nodes",),
    ),
}

CUSTOMERS: dict[str, Customer] = {
    # -- templates that try to leave the sandbox or misbehave, for one customer
    "template reads a file": Customer(_rec("t-read-file", case="read-file"), ("config.js", "include")),
    "template imports a file": Customer(_rec("t-import", case="import"), ("config.js", "import")),
    "template reaches __class__": Customer(
        _rec("t-dunder", case="dunder-class"), ("config.js", "not allowed by the sandbox", "__class__")
    ),
    "template reaches __globals__": Customer(
        _rec("t-globals", case="globals"), ("config.js", "not allowed by the sandbox")
    ),
    "template reaches its context": Customer(
        _rec("t-self", case="self-context"), ("config.js", "not allowed by the sandbox")
    ),
    "template mutates the customer": Customer(
        _rec("t-mutate", case="mutate"), ("config.js", "not allowed by the sandbox", "update")
    ),
    "template calls a method": Customer(
        _rec("t-method", case="method-call"), ("config.js", "not allowed by the sandbox", "clear")
    ),
    "template uses attr() on a dunder": Customer(
        _rec("t-attr", case="attr-filter"), ("config.js", "not allowed by the sandbox", "__class__")
    ),
    "template escapes through str.format": Customer(
        _rec("t-format", case="format-escape"), ("config.js", "not allowed by the sandbox")
    ),
    "template writes several GiB": Customer(
        _rec("t-gib", case="gib-output"), ("config.js", "output larger than 10485760 bytes")
    ),
    "template builds one 3 GiB value": Customer(_rec("t-one-gib", case="single-value-gib"), ("config.js",)),
    "huge value repeated": Customer(
        _rec("t-huge", case="huge-value", name="n" * 900_000), ("config.js", "output larger than")
    ),
    "template ranges over 10**9": Customer(_rec("t-range", case="range-bomb"), ("config.js", "range")),
    "template multiplies a list": Customer(
        _rec("t-list", case="list-bomb"), ("config.js", "'*' would build")
    ),
    "template raises to a huge power": Customer(
        _rec("t-pow", case="pow-bomb"), ("config.js", "'**' exponent")
    ),
    "template recurses forever": Customer(_rec("t-recursion", case="recursion"), ("config.js", "recursion")),
    "template names a missing field": Customer(
        _rec("t-undefined", case="undefined"), ("config.js, line", "'notAField' is undefined")
    ),
    "template divides by zero": Customer(
        _rec("t-raise", case="raise"), ("config.js, line", "ZeroDivisionError")
    ),
    "customer lacks a template field": Customer(
        {"id": "t-no-api", "slug": "t-no-api", "case": "ok", "name": "x"},
        ("config.js, line", "'apiUrl' is undefined"),
    ),
    # -- customer fields that would move the site (target and overrides use {slug})
    "slug climbs out": Customer(
        _rec("x-dotdot", slug=".."), ("target", "'slug'", "single safe path segment")
    ),
    "slug is a dot": Customer(_rec("x-dot", slug="."), ("target", "single safe path segment")),
    "slug is a path": Customer(
        _rec("x-path", slug="../sites/victim"), ("target", "single safe path segment")
    ),
    "slug with a backslash": Customer(
        _rec("x-backslash", slug="..\\victim"), ("target", "single safe path segment")
    ),
    "slug with a newline": Customer(_rec("x-newline", slug="a\nb"), ("target", "single safe path segment")),
    "slug empty": Customer(_rec("x-empty", slug=""), ("target", "'slug' is empty")),
    "slug missing": Customer({**_rec("x-missing"), "slug": None}, ("target", "no field 'slug'")),
    "overrides key with backslashes": Customer(
        _rec("x-bad-key"), ("override", "a\\..\\victim.html", "contains a backslash")
    ),
    "slug a number": Customer(_rec("x-number", slug=7), ()),  # str(7) is a fine segment: it must succeed
    # S3 keys are literal: '%2F' is three characters there, one segment (file:// decodes it: see
    # test_bad_input_local.py); it must succeed, at exactly that key
    "slug with a percent escape": Customer(_rec("x-percent", slug="c%2Fd"), ()),
}

TEMPLATES: dict[str, WholeTemplate] = {
    "template syntax error": WholeTemplate("{% if %}\n", ("config.js, line 1", "syntax error")),
    "template not UTF-8": WholeTemplate(b"window.X = '\xff\xfe';\n", ("config.js", "not UTF-8")),
    "template larger than the output cap": WholeTemplate("x" * (11 * 2**20), ("config.js", "larger than")),
    "template unknown tag": WholeTemplate("{% exec 'rm -rf /' %}\n", ("config.js, line 1", "exec")),
}


# -- running ------------------------------------------------------------------------------------


def cli_in_process(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``webrelease ARGV`` in this process; (exit code, stdout + stderr). A crash is exit 1 with its
    traceback as the text, as the console script would show it."""
    capsys.readouterr()
    try:
        code = webrelease_cli.main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0) if not isinstance(exc.code, str) else 2
    except Exception as exc:
        out = capsys.readouterr()
        return 1, f"{out.out}{out.err}crash: {type(exc).__name__}: {exc}"
    out = capsys.readouterr()
    return code, out.out + out.err


@pytest.fixture(scope="module")
def refused_world(s3_server: S3Endpoint, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """One set of buckets for every refused case: a refused case writes nothing, which each checks."""
    with world(s3_server, tmp_path_factory.mktemp("refused"), BUILD, _lines()) as w:
        yield w


@pytest.mark.parametrize("case", list(REFUSED), ids=list(REFUSED))
def test_refused(
    case: str, refused_world: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bad, w = REFUSED[case], refused_world
    w.put_customers(bad.customers if bad.customers is not None else _lines())
    for key, value in w.env().items():
        monkeypatch.setenv(key, value)
    doc = w.doc()
    changed_doc = bad.change(doc, w)
    release = w.write(changed_doc if changed_doc is not None else doc)
    before = inventory(w.s3)
    code, text = cli_in_process(["run", str(release), "--no-progress", "--workers", "1"], capsys)
    after = inventory(w.s3)
    assert code == 2, text
    for says in bad.says:
        assert says in text, f"{says!r} not in: {text[-1500:]}"
    assert "Traceback" not in text and "crash:" not in text, text
    assert not changed(before, after), f"written: {sorted(changed(before, after))[:10]}"


@dataclass
class SharedRun:
    """The run of every ``Customer`` case with two good customers."""

    world: World
    proc: subprocess.CompletedProcess[str]
    results: dict[str, dict[str, Any]]
    written: set[tuple[str, str]]
    verify: subprocess.CompletedProcess[str]
    verified: dict[str, list[dict[str, str]]]
    seconds: float


def run_limited(
    args: list[str], env: dict[str, str], *, timeout: float, address_space: int = 2 * GiB
) -> subprocess.CompletedProcess[str]:
    """``webrelease ARGS`` with its address space capped (a template that builds a value of several GiB
    cannot take the test machine down) and, on timeout, its whole process group killed."""

    def limit() -> None:  # pragma: no cover - runs in the child
        resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))

    proc = subprocess.Popen(
        [str(WEBRELEASE), *args],
        env=clean_env({**env, "MALLOC_ARENA_MAX": "2"}),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=limit,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        return subprocess.CompletedProcess(proc.args, -9, out, err + f"\n(killed after {timeout} s)")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.fixture(scope="module")
def shared(s3_server: S3Endpoint, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedRun]:
    records = [good_customer("good-1"), good_customer("good-2"), *(c.record for c in CUSTOMERS.values())]
    folder = tmp_path_factory.mktemp("hostile")
    with world(s3_server, folder, BUILD, encode_jsonl(records)) as w:
        release = w.write(w.doc())
        before = inventory(s3_server)
        start = time.monotonic()
        proc = run_limited(["run", str(release), "--no-progress", "--workers", "1"], w.env(), timeout=240)
        seconds = time.monotonic() - start
        written = changed(before, inventory(s3_server))
        reports = list_bucket(s3_server, w.reports, "reports/default/hostile/")
        results: dict[str, dict[str, Any]] = {}
        for key in reports:
            if "/shards/" in key and key.endswith(".jsonl"):
                for line in read_object(s3_server, w.reports, key).splitlines():
                    r = json.loads(line)
                    results[r["id"]] = r
        out = folder / "verify.jsonl"
        verify = run_limited(
            ["verify", str(release), "--no-progress", "--out", str(out)], w.env(), timeout=240
        )
        verified: dict[str, list[dict[str, str]]] = {}
        if out.exists():
            for text in out.read_text().splitlines():
                d = json.loads(text)
                verified.setdefault(d["id"], []).append(d)
        yield SharedRun(w, proc, results, written, verify, verified, seconds)


def _ok_sites(run: SharedRun) -> set[str]:
    return {r["site"].rstrip("/").rsplit("/", 1)[1] for r in run.results.values() if r["status"] == "ok"}


@pytest.mark.parametrize("case", list(CUSTOMERS), ids=list(CUSTOMERS))
def test_customer_fails_alone(case: str, shared: SharedRun) -> None:
    bad = CUSTOMERS[case]
    cid = bad.record["id"]
    assert shared.proc.returncode == 3, shared.proc.stdout[-3000:] + shared.proc.stderr[-3000:]
    result = shared.results.get(cid)
    assert result is not None, f"{cid} has no result line"
    # nothing anywhere but the good customers' sites and the run's own report
    stray = {k for k in shared.written if not shared.world.own(k, _ok_sites(shared))}
    assert not stray, f"written outside the good sites and the report: {sorted(stray)[:10]}"
    if not bad.says:  # a record that is odd but fine
        assert result["status"] == "ok", result
        assert cid not in shared.verified, shared.verified.get(cid)
        return
    assert result["status"] == "failed", result
    for says in bad.says:
        assert says in result["reason"], f"{says!r} not in {result['reason']!r}"
    assert "Traceback" not in result["reason"]
    assert not any(k[0] == shared.world.sites and f"/{cid}/" in k[1] for k in shared.written)
    assert [d["problem"] for d in shared.verified.get(cid, [])] == ["unverifiable"], shared.verified.get(cid)


def test_good_customers_of_the_hostile_run_are_exact(shared: SharedRun) -> None:
    """The good customers ran beside every hostile one and got exactly their release."""
    w = shared.world
    for cid in ("good-1", "good-2"):
        assert shared.results[cid]["status"] == "ok", shared.results[cid]
        assert cid not in shared.verified
        site = {k.split("/", 2)[2] for k in list_bucket(w.s3, w.sites, f"sites/{cid}/")}
        want = {"index.html", "config.js", "assets/app.js"} | (
            {"assets/extra.css"} if cid == "good-2" else set()
        )
        assert site == want
        config = read_object(w.s3, w.sites, f"sites/{cid}/config.js").decode()
        assert config == f'window.API = "https://{cid}.example/";\n'
        page = read_object(w.s3, w.sites, f"sites/{cid}/index.html").decode()
        assert page == "<!doctype html><h1>Ünïcødé ✓ \u2028 &lt;/script&gt;&lt;b&gt;</h1>\n"
    assert read_object(w.s3, w.sites, "sites/victim/index.html") == b"victim's page"
    summary = {k: v["status"] for k, v in shared.results.items()}
    assert sum(1 for s in summary.values() if s == "ok") == 4  # good-1, good-2, x-number, x-percent
    assert read_object(w.s3, w.sites, "sites/c%2Fd/assets/app.js") == b"console.log(1);\n"
    assert not list_bucket(w.s3, w.sites, "sites/c/")
    print(f"\nhostile run: {len(summary)} customers in {shared.seconds:.1f} s")


@pytest.mark.parametrize("case", list(TEMPLATES), ids=list(TEMPLATES))
def test_template_fails_every_customer(case: str, s3_server: S3Endpoint, tmp_path: Path) -> None:
    bad = TEMPLATES[case]
    customers = encode_jsonl([good_customer("good-1"), good_customer("good-2")])
    with world(s3_server, tmp_path, {**BUILD, "config.js": bad.config_js}, customers) as w:
        release = w.write(w.doc())
        before = inventory(s3_server)
        proc = run_limited(["run", str(release), "--no-progress", "--workers", "1"], w.env(), timeout=120)
        written = changed(before, inventory(s3_server))
    assert proc.returncode == 3, proc.stdout + proc.stderr
    for cid in ("good-1", "good-2"):
        line = next(ln for ln in proc.stdout.splitlines() if ln.startswith(f"failed {cid}:"))
        for says in bad.says:
            assert says in line, f"{says!r} not in {line!r}"
    stray = {k for k in written if not w.own(k, set())}
    assert not stray, f"a site was written: {sorted(stray)[:10]}"


#: ``config.js`` for the endless-loop test: 10^10 iterations without output (hours) for ``case: loop``.
ENDLESS_CONFIG = """\
{%- if case == "ok" -%}
window.API = {{ apiUrl|json }};
{%- else -%}
{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}
{%- endif %}
"""


def test_template_that_loops_forever_fails_the_customer(s3_server: S3Endpoint, tmp_path: Path) -> None:
    """A template that loops without output fails the customer it loops for after
    ``spec.templateTimeoutSeconds`` of CPU time, instead of keeping the shard busy for hours: in
    ``plan`` (the default, 5 s) and in ``run``'s shard processes (1 s here); the good customer
    beside it is released exactly, the looping one's site stays empty."""
    customers = encode_jsonl([good_customer("good-1"), {**good_customer("loop-1"), "case": "loop"}])
    with world(s3_server, tmp_path, {**BUILD, "config.js": ENDLESS_CONFIG}, customers) as w:
        planned = w.write(w.doc(), "plan.yaml")
        before = inventory(s3_server)
        plan = run_limited(["plan", str(planned), "--no-progress"], w.env(), timeout=90)
        assert not changed(before, inventory(s3_server)), "plan wrote something"
        assert plan.returncode == 3, plan.stdout[-2000:] + plan.stderr[-2000:]
        reason = (
            "template config.js, line 4: rendering took longer than {} s of CPU time (a loop without end?)"
        )
        lines = {ln.split()[0]: ln for ln in plan.stdout.splitlines() if ln.strip()}
        assert lines.get("loop-1") == f"loop-1  FAILED  {reason.format(5)}", plan.stdout[-2000:]
        assert "render 2" in lines["good-1"] and "FAILED" not in lines["good-1"], lines["good-1"]

        spec = {**w.spec(), "templateTimeoutSeconds": 1}
        released = w.write(w.doc(spec), "run.yaml")
        run = run_limited(["run", str(released), "--no-progress", "--workers", "1"], w.env(), timeout=90)
        written = changed(before, inventory(s3_server))
        reports = list_bucket(s3_server, w.reports, "reports/default/hostile/")
        results = {}
        for key in reports:
            if "/shards/" in key and key.endswith(".jsonl"):
                for line in read_object(s3_server, w.reports, key).splitlines():
                    r = json.loads(line)
                    results[r["id"]] = r
        good_site = read_object(s3_server, w.sites, "sites/good-1/config.js")
    assert run.returncode == 3, run.stdout[-2000:] + run.stderr[-2000:]
    assert results["loop-1"]["status"] == "failed"
    assert results["loop-1"]["reason"] == reason.format(1)
    assert results["good-1"]["status"] == "ok", results["good-1"]
    assert good_site == b'window.API = "https://good-1.example/";\n'
    stray = {k for k in written if not w.own(k, {"good-1"})}
    assert not stray, f"written outside good-1's site and the report: {sorted(stray)[:10]}"
