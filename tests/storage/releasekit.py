"""A release scenario on one storage backend: a build with nested folders, binary and templated
files, customers, and what each site must hold — computed here, independently of the copier
(plain string formatting, not Jinja), so that a test compares the copier with an oracle."""

from __future__ import annotations

import hashlib
import html
import json
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from tests.harness.s3_fixtures import StorageBackend
from webrelease.copier.localrun import LocalRunResult, run_local
from webrelease.copier.snapshot import encode
from webrelease.copier.spec import WebReleaseSpec, parse_spec
from webrelease.copier.storage import Location, RequestEvent, Store
from webrelease.copier.storage.storeset import StoreSet

WRITES = frozenset({"CopyObject", "PutObject", "UploadPartCopy", "CreateMultipartUpload"})
RELEASE = "rel"


def _binary(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


INDEX_TEMPLATE = (
    "<!doctype html><title>{{ name|e }}</title>\n"
    '<script>window.C = {{ {"id": id, "plan": plan}|json }};</script>\n'
    '<link rel="stylesheet" href="assets/css/site.css">\n'
)
CONFIG_TEMPLATE = "window.API = {{ apiUrl|json }};\nwindow.RELEASE = {{ release.name|json }};\n"

BUILD: dict[str, bytes] = {
    "index.html": INDEX_TEMPLATE.encode(),
    "config.js": CONFIG_TEMPLATE.encode(),
    "docs/index.html": b"<!doctype html><h1>Docs</h1>\n",
    "docs/guide/page.html": b"<!doctype html><h1>Guide</h1>\n",
    "assets/app.js": b"console.log('app');\n",
    "assets/css/site.css": b"body { margin: 0 }\n",
    "assets/img/logo.png": b"\x89PNG\r\n\x1a\n" + _binary(1, 5000),
    "assets/fonts/all-bytes.woff2": bytes(range(256)) * 4,
    "assets/empty.txt": b"",
    "data/blob.bin": _binary(2, 200_000),
    "a/b/c/d/e/deep.txt": "déjà vu ✓\n".encode(),
    "unicode/naïve café.txt": b"spaces and accents in a key\n",
}
TEMPLATES = ["index.html", "config.js"]
ENTRYPOINTS = ["index.html", "**/*.html"]


def make_customers(n: int) -> list[dict[str, Any]]:
    plans = ["starter", "team", "enterprise"]
    return [
        {
            "id": f"c{i:02d}",
            "name": f"Customer {i} & Co <b>",
            "apiUrl": f"https://api.c{i:02d}.example/v1",
            "plan": plans[i % 3],
        }
        for i in range(n)
    ]


def expected_render(key: str, customer: dict[str, Any]) -> bytes:
    if key == "index.html":
        payload = json.dumps({"id": customer["id"], "plan": customer["plan"]}, separators=(", ", ": "))
        payload = payload.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
        return (
            f"<!doctype html><title>{html.escape(customer['name'])}</title>\n"
            f"<script>window.C = {payload};</script>\n"
            '<link rel="stylesheet" href="assets/css/site.css">\n'
        ).encode()
    if key == "config.js":
        api, rel = json.dumps(customer["apiUrl"]), json.dumps(RELEASE)
        return f"window.API = {api};\nwindow.RELEASE = {rel};\n".encode()
    raise KeyError(key)


@dataclass
class Scenario:
    """One release on ``backend``: locations under the backend's own root."""

    backend: StorageBackend
    customers: list[dict[str, Any]]
    build: dict[str, bytes] = field(default_factory=lambda: dict(BUILD))
    overrides: dict[str, dict[str, bytes]] = field(default_factory=dict)
    templates: list[str] = field(default_factory=lambda: list(TEMPLATES))
    prune: bool = False
    objects_in_flight: int = 16
    customers_per_shard: int = 7
    target: str | None = None
    #: where the build is (default: this backend; a test can put it on another store)
    build_location: Location | None = None
    build_store: Store | None = None

    @property
    def store(self) -> Store:
        return self.backend.store

    @property
    def events(self) -> list[RequestEvent]:
        return self.backend.events

    def loc(self, name: str) -> Location:
        return self.backend.location(name)

    def setup(self) -> Scenario:
        src = self.build_location or self.loc("build")
        for key, body in self.build.items():
            (self.build_store or self.store).put(src, key, body)
        for cid, files in self.overrides.items():
            for key, body in files.items():
                self.store.put(self.loc("overrides").child(cid), key, body)
        self.store.put(self.loc("lists"), "customers.jsonl", encode(self.customers))
        self.events.clear()
        return self

    def spec(self, **changes: Any) -> WebReleaseSpec:
        src = self.build_location or self.loc("build")
        data: dict[str, Any] = {
            "source": {"url": src.url},
            "target": {"url": self.target or self.loc("sites").url + "{id}/"},
            "customers": {"url": self.loc("lists").url + "customers.jsonl"},
            "reports": {"url": self.loc("reports").url},
            "overrides": {"url": self.loc("overrides").url + "{id}/"},
            "templates": self.templates,
            "entrypoints": ENTRYPOINTS,
            "prune": self.prune,
            "sharding": {"customersPerShard": self.customers_per_shard},
            "worker": {"objectsInFlight": self.objects_in_flight},
        }
        if self.backend.scheme == "s3":
            data["storage"] = self.backend.settings.model_dump(by_alias=True, exclude_none=True)
        data.update(changes)
        return parse_spec(data)

    def stores(self) -> StoreSet:
        return StoreSet(
            self.backend.settings,
            max_in_flight=64,
            credentials=self.backend.credentials,
            on_request=self.events.append,
        )

    def run(self, **spec_changes: Any) -> LocalRunResult:
        return run_local(
            self.spec(**spec_changes),
            RELEASE,
            stores=self.stores(),
            progress=False,
            echo=lambda _: None,
        )

    # -- what is there, what should be there -------------------------------------------------

    def site(self, cid: str) -> Location:
        return self.loc("sites").child(cid)

    def read_site(self, cid: str) -> dict[str, bytes]:
        site = self.site(cid)
        return {o.key: self.store.get(site, o.key) for o in self.store.list(site)}

    def expected_site(self, customer: dict[str, Any]) -> dict[str, bytes]:
        out = {k: (expected_render(k, customer) if k in self.templates else v) for k, v in self.build.items()}
        out.update(self.overrides.get(customer["id"], {}))
        return out

    def site_events(self, cid: str, operations: Iterable[str] = WRITES) -> list[RequestEvent]:
        prefix = self.site(cid).prefix
        ops = set(operations)
        return [e for e in self.events if e.operation in ops and e.key.startswith(prefix)]

    def written_keys(self, cid: str) -> list[str]:
        prefix = self.site(cid).prefix
        return [e.key[len(prefix) :] for e in self.site_events(cid)]

    def all_site_writes(self) -> list[RequestEvent]:
        prefix = self.loc("sites").prefix
        return [
            e for e in self.events if e.operation in WRITES | {"DeleteObjects"} and e.key.startswith(prefix)
        ]


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()
