"""Never "ok" when a site is wrong: inputs that used to end with exit 0 (or fail every customer
alike) while a site lacked a file, served the wrong type, or a deletion was counted that did not
happen. Each case runs on the real S3 server and, where it applies, on local folders; every
bucket of the server and every file under the test's folder is listed before and after:

- a *refused* case exits 2 with one message naming the file, field or pattern and what to change,
  and nothing at all is written (no snapshot, no report, no site);
- an *exact* case exits 0 only when every site is exactly the release (bytes, Content-Type and
  Content-Encoding), checked with the server's own client, not the copier's.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness.s3_fixtures import unique_bucket_name
from tests.harness.s3server import S3Endpoint
from tests.reliability.kit import client_for, inventory
from tests.reliability.test_bad_input import cli_in_process
from webrelease.copier.localrun import run_local
from webrelease.copier.shard import store_set_for
from webrelease.copier.siterecord import RECORDS_FOLDER, record_place
from webrelease.copier.spec import parse_spec
from webrelease.copier.storage import LocalStore, Location, RequestEvent, parse_url
from webrelease.copier.storage.storeset import ENV_FAST_PATH, StoreSet

pytestmark = [pytest.mark.reliability, pytest.mark.storage]

TEMPLATE = "<!doctype html><h1>{{ name|e }}</h1>\n"
BUILD: dict[str, bytes] = {
    "index.html": TEMPLATE.encode(),
    "assets/app.js": b"console.log(1);\n",
    "assets/site.css": b"body{}\n",
}
CUSTOMERS = [{"id": "c1", "name": "One"}, {"id": "c2", "name": "Two"}]
AREAS = ("build", "sites", "reports")


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


@dataclass
class Place:
    """Where one case's build, sites and reports live: buckets on the S3 server or folders."""

    kind: str
    s3: S3Endpoint
    root: Path
    buckets: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if self.kind == "s3":
            for area in AREAS:
                self.buckets[area] = self.s3.make_bucket(unique_bucket_name(area[:2]))

    def url(self, area: str, path: str = "") -> str:
        if self.kind == "s3":
            return f"s3://{self.buckets[area]}/{area}/{path}"
        return f"file://{self.root}/{area}/{path}"

    def put(self, area: str, key: str, body: bytes, content_type: str | None = None) -> None:
        if self.kind == "s3":
            client_for(self.s3).put_object(
                Bucket=self.buckets[area],
                Key=f"{area}/{key}",
                Body=body,
                ContentType=content_type or "binary/octet-stream",
            )
        elif content_type is not None:  # as another tool that keeps types would leave it
            LocalStore().put(parse_url(self.url(area)), key, body, content_type=content_type)
        else:
            path = self.root / area / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(body)

    def site(self, cid: str) -> dict[str, bytes]:
        """Every file of ``cid``'s site, read with the server's client (or from the folder)."""
        if self.kind == "s3":
            client = client_for(self.s3)
            prefix = f"sites/{cid}/"
            out = {}
            for page in client.get_paginator("list_objects_v2").paginate(
                Bucket=self.buckets["sites"], Prefix=prefix
            ):
                for obj in page.get("Contents", []):
                    key = obj.get("Key", "")
                    body = client.get_object(Bucket=self.buckets["sites"], Key=key)["Body"].read()
                    out[key[len(prefix) :]] = body
            return out
        folder = self.root / "sites" / cid
        return {
            str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob("*"))
            if p.is_file() and ".webrelease-meta" not in p.parts
        }

    def site_keys(self, cid: str) -> list[str]:
        """The keys of ``cid``'s site as the server lists them."""
        if self.kind == "s3":
            prefix = f"sites/{cid}/"
            listed = client_for(self.s3).list_objects_v2(Bucket=self.buckets["sites"], Prefix=prefix)
            return [o.get("Key", "")[len(prefix) :] for o in listed.get("Contents", [])]
        return list(self.site(cid))

    def served_as(self, cid: str, key: str) -> tuple[str | None, str | None]:
        """(Content-Type, Content-Encoding) the site object is served with."""
        if self.kind == "s3":
            r = client_for(self.s3).head_object(Bucket=self.buckets["sites"], Key=f"sites/{cid}/{key}")
            return r.get("ContentType"), r.get("ContentEncoding")
        info = LocalStore().head(parse_url(self.url("sites", f"{cid}/")), key)
        return info.content_type, info.content_encoding

    def state(self) -> dict[Any, str]:
        """Every object of every bucket and every entry under the folder, with its content."""
        out: dict[Any, str] = dict(inventory(self.s3))
        for dirpath, dirnames, filenames in os.walk(self.root):
            for name in dirnames + filenames:
                p = Path(dirpath) / name
                if p.is_symlink():
                    out[("link", str(p))] = str(p.readlink())
                elif p.is_file():
                    out[("file", str(p))] = _md5(p.read_bytes())
                elif p.is_dir():
                    out[("dir", str(p))] = ""
                else:
                    out[("other", str(p))] = ""
        return out

    def spec(self, **fields: Any) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "source": {"url": self.url("build")},
            "target": {"url": self.url("sites", "{id}/")},
            "customers": {"inline": CUSTOMERS},
            "reports": {"url": self.url("reports")},
            "templates": ["index.html"],
            "prune": True,
            "worker": {"objectsInFlight": 8},
        }
        if self.kind == "s3":
            spec["storage"] = {"endpointUrl": self.s3.endpoint_url, "addressingStyle": "path"}
        spec.update(fields)
        return spec

    def release(self, spec: dict[str, Any] | None = None, name: str = "release.yaml") -> Path:
        doc = {
            "apiVersion": "webrelease.dev/v1alpha1",
            "kind": "WebRelease",
            "metadata": {"name": "exact"},
            "spec": spec if spec is not None else self.spec(),
        }
        path = self.root.parent / f"{self.root.name}-{name}"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return path

    def teardown(self) -> None:
        for bucket in self.buckets.values():
            self.s3.remove_bucket(bucket)


@pytest.fixture(params=["s3", "file"])
def place(
    request: pytest.FixtureRequest, s3_server: S3Endpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Place]:
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    p = Place(request.param, s3_server, tmp_path / "w")
    try:
        yield p
    finally:
        p.teardown()


@pytest.fixture
def s3_place(s3_server: S3Endpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Place]:
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    p = Place("s3", s3_server, tmp_path / "w")
    try:
        yield p
    finally:
        p.teardown()


@pytest.fixture
def file_place(s3_server: S3Endpoint, tmp_path: Path) -> Place:
    return Place("file", s3_server, tmp_path / "w")


def fill(place: Place, build: dict[str, bytes] | None = None) -> None:
    for key, body in (BUILD if build is None else build).items():
        place.put("build", key, body)


Run = tuple[int, str]


def webrelease(capsys: pytest.CaptureFixture[str], *args: str) -> Run:
    extra = ["--no-progress"] if args[0] in ("run", "plan", "verify") else []
    workers = ["--workers", "1"] if args[0] == "run" else []
    return cli_in_process([*args, *extra, *workers], capsys)


def assert_refused(place: Place, capsys: pytest.CaptureFixture[str], release: Path, *says: str) -> str:
    """``run`` and ``plan`` both exit 2 with one error naming ``says``; nothing is written."""
    before = place.state()
    for command in ("run", "plan"):
        code, text = webrelease(capsys, command, str(release))
        assert code == 2, f"{command}: {text}"
        for s in says:
            assert s in text, f"{command}: {s!r} not in {text!r}"
        assert "Traceback" not in text and "crash:" not in text, text
        errors = [ln for ln in text.splitlines() if ln.startswith("webrelease:")]
        assert len(errors) == 1, text  # one error for the run, not one per customer or shard
    after = place.state()
    assert before == after, f"written: {sorted(set(before.items()) ^ set(after.items()), key=str)[:10]}"
    return text


def assert_exact(place: Place, capsys: pytest.CaptureFixture[str], release: Path) -> None:
    code, text = webrelease(capsys, "run", str(release))
    assert code == 0, text
    code, text = webrelease(capsys, "verify", str(release))
    assert code == 0, text


# -- item 5: files a local build must not drop --------------------------------------------------


def test_symlinks_inside_the_build_are_followed(
    file_place: Place, capsys: pytest.CaptureFixture[str]
) -> None:
    """``index.html -> index.tmpl`` (a common layout) and a linked folder: both released, by the
    link's own name, with the target's bytes."""
    place = file_place
    build = place.root / "build"
    fill(place, {"index.tmpl": TEMPLATE.encode(), "assets/app.js": b"console.log(1);\n"})
    (build / "index.html").symlink_to("index.tmpl")
    (build / "js").symlink_to("assets", target_is_directory=True)
    assert_exact(place, capsys, place.release())
    for c in CUSTOMERS:
        site = place.site(c["id"])
        assert site == {
            "index.html": f"<!doctype html><h1>{c['name']}</h1>\n".encode(),
            "index.tmpl": TEMPLATE.encode(),
            "assets/app.js": b"console.log(1);\n",
            "js/app.js": b"console.log(1);\n",
        }
        assert not (place.root / "sites" / c["id"] / "index.html").is_symlink()


def _symlink_out(build: Path) -> None:
    (build.parent / "outside.html").write_text("<h1>not the build</h1>")
    (build / "about.html").symlink_to("../outside.html")


def _symlink_absolute(build: Path) -> None:
    (build / "about.html").symlink_to("/etc/hostname")


def _symlink_broken(build: Path) -> None:
    (build / "about.html").symlink_to("missing.html")


def _symlink_loop(build: Path) -> None:
    (build / "about.html").symlink_to(".", target_is_directory=True)


def _fifo(build: Path) -> None:
    os.mkfifo(build / "about.html")


def _socket(build: Path) -> None:
    import socket

    here = Path.cwd()
    os.chdir(build)  # a socket's path is limited to ~100 bytes: bind it by its relative name
    try:
        s = socket.socket(socket.AF_UNIX)
        s.bind("about.html")
        s.close()
    finally:
        os.chdir(here)


LOCAL_REFUSED = {
    "symlink out of the build": (_symlink_out, ("about.html", "outside", "copy the file into the folder")),
    "absolute symlink": (_symlink_absolute, ("about.html", "/etc/hostname", "outside")),
    "broken symlink": (_symlink_broken, ("about.html", "does not exist", "fix or remove the link")),
    "symlink loop": (_symlink_loop, ("about.html", "loop", "remove the link")),
    "FIFO": (_fifo, ("about.html", "FIFO", "not a regular file", "remove it")),
    "socket": (_socket, ("about.html", "socket", "not a regular file")),
}


@pytest.mark.parametrize("case", list(LOCAL_REFUSED), ids=list(LOCAL_REFUSED))
def test_a_build_entry_that_is_not_a_file_inside_it_is_refused(
    case: str, file_place: Place, capsys: pytest.CaptureFixture[str]
) -> None:
    make, says = LOCAL_REFUSED[case]
    fill(file_place)
    make(file_place.root / "build")
    assert_refused(file_place, capsys, file_place.release(), "source", *says)


def test_an_override_that_is_not_a_file_fails_its_customer_naming_it(
    file_place: Place, capsys: pytest.CaptureFixture[str]
) -> None:
    place = file_place
    fill(place)
    (place.root / "ov" / "c1").mkdir(parents=True)
    os.mkfifo(place.root / "ov" / "c1" / "extra.js")
    spec = place.spec(overrides={"url": f"file://{place.root}/ov/{{id}}/"})
    code, text = webrelease(capsys, "run", str(place.release(spec)))
    assert code == 3, text
    assert "failed c1:" in text and "extra.js" in text and "FIFO" in text, text
    assert place.site("c1") == {}
    assert set(place.site("c2")) == set(BUILD)


# -- item 11: a build file no site can hold fails the build, once ---------------------------------


def test_a_build_file_name_no_site_can_hold_fails_the_build(
    place: Place, capsys: pytest.CaptureFixture[str]
) -> None:
    fill(place, {**BUILD, "win\\path.js": b"x"})
    assert_refused(place, capsys, place.release(), "win\\\\path.js", "backslash", "rename it")


def test_local_build_keys_are_not_charged_with_the_folder_path(
    file_place: Place, capsys: pytest.CaptureFixture[str]
) -> None:
    """The 1024-byte key limit is S3's, on the key: a build in a deep folder (900 bytes of path)
    with a 300-byte name still releases to local folders deep alike."""
    place = file_place
    deep = "/".join(["d" * 99] * 9)  # 899 bytes
    name = "n" * 240 + ".txt"
    build = place.root / "build" / deep
    build.mkdir(parents=True)
    (build / "index.html").write_text(TEMPLATE)
    (build / name).write_text("long")
    spec = place.spec(
        source={"url": f"file://{build}/"}, target={"url": f"file://{place.root}/sites/{deep}/{{id}}/"}
    )
    assert_exact(place, capsys, place.release(spec))
    site = place.root / "sites" / deep / "c1"
    assert (site / name).read_text() == "long"


# -- item 6: a pattern that matches no build file -----------------------------------------------


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"templates": ["index.html", "confg.js"]}, ("spec.templates.1", "'confg.js'", "matches no file")),
        ({"templates": ["*.htm"]}, ("spec.templates.0", "'*.htm'", "fix the pattern")),
        ({"entrypoints": ["index.html", "app/*.html"]}, ("spec.entrypoints.1", "'app/*.html'")),
    ],
    ids=["template typo", "template glob", "entrypoint"],
)
def test_a_pattern_that_matches_no_build_file_is_a_spec_error(
    fields: dict[str, Any], says: tuple[str, ...], place: Place, capsys: pytest.CaptureFixture[str]
) -> None:
    fill(place)
    assert_refused(place, capsys, place.release(place.spec(**fields)), *says)


# -- item 11: the sites' bucket, credentials, the release file ----------------------------------


def test_a_missing_target_bucket_is_one_bad_input_error(
    s3_place: Place, capsys: pytest.CaptureFixture[str]
) -> None:
    place = s3_place
    fill(place)
    missing = unique_bucket_name("gone")
    spec = place.spec(target={"url": f"s3://{missing}/sites/{{id}}/"})
    assert_refused(place, capsys, place.release(spec), "spec.target.url", repr(missing), "does not exist")


@pytest.mark.parametrize("customers_on", ["s3", "inline"])
def test_bad_credentials_are_bad_input_whatever_is_read_first(
    customers_on: str, s3_place: Place, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    place = s3_place
    fill(place)
    spec = place.spec()
    if customers_on == "s3":
        client_for(place.s3).put_object(
            Bucket=place.buckets["build"],
            Key="lists/customers.jsonl",
            Body=b"".join(json.dumps(c).encode() + b"\n" for c in CUSTOMERS),
        )
        spec["customers"] = {"url": f"s3://{place.buckets['build']}/lists/customers.jsonl"}
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    assert_refused(place, capsys, place.release(spec), "access denied")


def test_a_shard_with_bad_credentials_is_bad_input(
    s3_place: Place, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """What a Job pod runs: refused credentials are exit 2 (the Job fails the index at once), not
    exit 1 (retried as if S3 were down)."""
    place = s3_place
    fill(place)
    spec_file = place.release()
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    monkeypatch.setenv("TERMINATION_MESSAGE_PATH", str(tmp_path / "termination-log"))
    before = place.state()
    snapshot = f"{place.url('reports')}run/customers.jsonl"
    code, text = webrelease(
        capsys, "shard", "--spec-file", str(spec_file), "--snapshot-url", snapshot, "--index", "0"
    )
    assert code == 2, text
    assert "access denied" in text and "check the credentials" in text, text
    assert json.loads((tmp_path / "termination-log").read_text())["exitCode"] == 2
    assert place.state() == before


@pytest.mark.parametrize("command", ["run", "plan", "verify"])
def test_a_release_file_that_cannot_be_read_is_named_without_a_traceback(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "folder.yaml").mkdir()
    (tmp_path / "latin1.yaml").write_bytes(
        b"apiVersion: webrelease.dev/v1alpha1\nkind: WebRelease\n# caf\xe9\n"
    )
    for name, says in [
        ("missing.yaml", "no such file"),
        ("folder.yaml", "is a folder"),
        ("latin1.yaml", "not UTF-8 (byte 58, line 3); save the file as UTF-8"),
    ]:
        path = tmp_path / name
        code, text = webrelease(capsys, command, str(path))
        assert code == 2, text
        assert f"{path}: {says}" in text, text
        assert "Traceback" not in text and "crash:" not in text, text


# -- item 7: precompressed files ----------------------------------------------------------------

SVG = b'<svg xmlns="http://www.w3.org/2000/svg"/>'
PRECOMPRESSED: dict[str, tuple[bytes, str, str | None]] = {
    "assets/app.js.gz": (gzip.compress(b"console.log(1);"), "application/gzip", None),
    "assets/site.css.br": (b"\x1b\x06\x00\xf8\xa5\x80", "application/octet-stream", None),
    "img/logo.svgz": (gzip.compress(SVG), "image/svg+xml", "gzip"),
    "downloads/backup.tar.gz": (gzip.compress(b"tar"), "application/gzip", None),
    "data/dump.json.xz": (b"\xfd7zXZ\x00", "application/x-xz", None),
    "data/dump.json.zst": (b"\x28\xb5\x2f\xfd", "application/zstd", None),
}


def test_precompressed_files_are_served_as_what_their_bytes_are(
    place: Place, capsys: pytest.CaptureFixture[str]
) -> None:
    fill(place, {**BUILD, **{k: v[0] for k, v in PRECOMPRESSED.items()}})
    release = place.release()
    assert_exact(place, capsys, release)
    for key, (body, ctype, encoding) in PRECOMPRESSED.items():
        assert place.site("c1")[key] == body
        assert place.served_as("c1", key) == (ctype, encoding), key
    # the type check agrees with what was written: a second run writes nothing
    code, text = webrelease(capsys, "run", str(release))
    assert code == 0 and "0 copied, 0 rendered" in text, text


# -- item 8: the right bytes with the wrong Content-Type -----------------------------------------


def test_the_right_bytes_with_a_wrong_content_type_are_found_and_fixed(
    place: Place, capsys: pytest.CaptureFixture[str]
) -> None:
    """The issue's case: an earlier tool left the same bytes labelled as text, before webrelease
    ever wrote the site (so no site record vouches for anything)."""
    fill(place)
    release = place.release()
    place.put("sites", "c1/assets/app.js", BUILD["assets/app.js"], content_type="text/plain")
    code, text = webrelease(capsys, "verify", str(release))
    assert code == 3, text
    assert "c1  different  assets/app.js  Content-Type 'text/plain', expected 'text/javascript'" in text, text
    code, text = webrelease(capsys, "run", str(release))
    assert code == 0, text
    assert place.served_as("c1", "assets/app.js") == ("text/javascript", None)
    code, text = webrelease(capsys, "verify", str(release))
    assert code == 0, text


def test_a_type_changed_behind_webreleases_back_is_found_by_verify_then_fixed(
    place: Place, capsys: pytest.CaptureFixture[str]
) -> None:
    """What the site record cannot see: a third tool relabelling an object webrelease wrote,
    keeping its bytes. ``run`` trusts its record (no HEAD); ``verify`` HEADs every file, finds it
    and forgets that site's record, so the next ``run`` HEADs the site and fixes it."""
    fill(place)
    release = place.release()
    assert_exact(place, capsys, release)
    place.put("sites", "c1/assets/app.js", BUILD["assets/app.js"], content_type="text/plain")
    code, text = webrelease(capsys, "run", str(release))
    assert code == 0 and "0 copied" in text, text  # the documented blind spot
    assert place.served_as("c1", "assets/app.js") == ("text/plain", None)
    code, text = webrelease(capsys, "verify", str(release))
    assert code == 3, text
    assert "c1  different  assets/app.js  Content-Type 'text/plain', expected 'text/javascript'" in text, text
    assert "1 difference(s) in 1 site(s)" in text, text
    code, text = webrelease(capsys, "run", str(release))
    assert code == 0 and "1 copied, 0 rendered" in text, text
    assert place.served_as("c1", "assets/app.js") == ("text/javascript", None)
    code, text = webrelease(capsys, "verify", str(release))
    assert code == 0, text


def _counted_run(place: Place, spec: dict[str, Any]) -> tuple[int, dict[str, int], list[RequestEvent]]:
    parsed = parse_spec(spec)
    events: list[RequestEvent] = []
    stores = StoreSet(parsed.storage, max_in_flight=16, on_request=events.append)
    said: list[str] = []
    result = run_local(parsed, "cost", stores=stores, progress=False, echo=said.append)
    assert result.exit_code == 0, (result.exit_code, result.error, said)
    ops: dict[str, int] = {}
    for e in events:
        ops[e.operation] = ops.get(e.operation, 0) + 1
    return result.exit_code, ops, events


def _records(events: list[RequestEvent], operation: str) -> list[RequestEvent]:
    return [e for e in events if e.operation == operation and f"/{RECORDS_FOLDER}/" in f"/{e.key}"]


def test_what_the_content_type_check_costs_in_requests(
    place: Place, capsys: pytest.CaptureFixture[str]
) -> None:
    """A first run HEADs every site file whose bytes are right and writes one site record per
    customer; a re-run that changes nothing sends no HEAD at all: one listing per site, one GET of
    its record, no write. Printed for docs/storage.md."""
    fill(place)
    n = 10
    spec = place.spec(customers={"inline": [{"id": f"c{i}", "name": "n"} for i in range(n)]})
    for i in range(n):  # an earlier tool's copy: right bytes, types unknown to webrelease
        place.put("sites", f"c{i}/assets/site.css", BUILD["assets/site.css"], content_type="text/css")
    code, first, events = _counted_run(place, spec)
    assert code == 0, first
    assert first.get("HeadObject") == n, first  # site.css: right bytes, no record to vouch
    assert len(_records(events, "PutObject")) == n
    code, again, events = _counted_run(place, spec)
    assert code == 0
    assert again.get("HeadObject", 0) == 0, again
    assert len(_records(events, "GetObject")) == n
    writes = ("CopyObject", "PutObject", "DeleteObjects")
    site_writes = [e for e in events if e.operation in writes and "sites/" in e.key]
    assert site_writes == [] and _records(events, "PutObject") == [], site_writes
    print(f"\nCONTENT-TYPE CHECK ({place.kind}): first run of {n} sites x {len(BUILD)} files: {first}")
    print(f"CONTENT-TYPE CHECK ({place.kind}): no-op re-run of {n} sites x {len(BUILD)} files: {again}")


def _record_of(place: Place, cid: str) -> tuple[StoreSet, Location, str]:
    stores = store_set_for(parse_spec(place.spec()))
    folder, key = record_place(place.url("reports"), parse_url(place.url("sites", f"{cid}/")))
    return stores, folder, key


@pytest.mark.parametrize("lie", ["wrong bytes vouched", "stale md5", "corrupt", "another site's"])
def test_a_record_that_lies_never_makes_a_wrong_site_look_right(
    lie: str, place: Place, capsys: pytest.CaptureFixture[str]
) -> None:
    """The record is consulted only for a file whose listed MD5 is already the release's, and
    only when its own entry names that same MD5 for this very site. So a hand-edited record can
    never hide wrong bytes, nor a wrong type on an object it does not name exactly: each of these
    edits ends with the site exact (checked by ``verify``, which trusts no record)."""
    fill(place)
    release = place.release()
    assert_exact(place, capsys, release)
    stores, folder, key = _record_of(place, "c1")
    doc = json.loads(stores(folder).get(folder, key))
    js = doc["files"]["assets/app.js"]
    assert js == [_md5(BUILD["assets/app.js"]), "text/javascript", None]
    if lie == "wrong bytes vouched":  # the site holds other bytes, the record claims them right
        place.put("sites", "c1/assets/app.js", b"tampered();\n", content_type="text/javascript")
        doc["files"]["assets/app.js"] = [_md5(b"tampered();\n"), "text/javascript", None]
        body = json.dumps(doc).encode()
    elif lie == "stale md5":  # the type is wrong; the record vouches for other bytes
        place.put("sites", "c1/assets/app.js", BUILD["assets/app.js"], content_type="text/plain")
        doc["files"]["assets/app.js"] = [_md5(b"older"), "text/javascript", None]
        body = json.dumps(doc).encode()
    elif lie == "corrupt":
        place.put("sites", "c1/assets/app.js", BUILD["assets/app.js"], content_type="text/plain")
        body = b'{"format": "webrelease-site-record/1", "files": '
    else:  # c2's record copied over c1's: it names another site
        place.put("sites", "c1/assets/app.js", BUILD["assets/app.js"], content_type="text/plain")
        stores2, folder2, key2 = _record_of(place, "c2")
        body = stores2(folder2).get(folder2, key2)
    stores(folder).put(folder, key, body, content_type="application/json")
    code, text = webrelease(capsys, "run", str(release))
    assert code == 0 and "1 copied" in text, text
    assert place.site("c1")["assets/app.js"] == BUILD["assets/app.js"]
    assert place.served_as("c1", "assets/app.js") == ("text/javascript", None)
    code, text = webrelease(capsys, "verify", str(release))
    assert code == 0, text
    # the record was rewritten: a further re-run HEADs nothing
    code, ops, _ = _counted_run(place, place.spec())
    assert code == 0 and ops.get("HeadObject", 0) == 0, ops


def test_a_site_record_key_stays_short_for_a_long_site_location(
    place: Place, capsys: pytest.CaptureFixture[str]
) -> None:
    """The record's key is a hash of the site's location: a site 870 bytes deep still gets one."""
    fill(place)
    cid = "x" * 63
    deep = "/".join(["d" * 200] * 4) + "/{id}/"
    spec = place.spec(
        customers={"inline": [{"id": cid, "name": "n"}]}, target={"url": place.url("sites", deep)}
    )
    code, ops, events = _counted_run(place, spec)
    assert code == 0, ops
    (put,) = _records(events, "PutObject")
    assert len(put.key.rsplit("/", 1)[1]) == len("0" * 64 + ".json")
    code, ops, _ = _counted_run(place, spec)
    assert code == 0 and ops.get("HeadObject", 0) == 0, ops


# -- item 12: the fast path's off switch --------------------------------------------------------


def test_the_fast_path_can_be_turned_off_by_spec_or_environment(
    s3_place: Place, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    place = s3_place
    loc = parse_url(place.url("sites"))
    default = parse_spec(place.spec())
    off = parse_spec(place.spec(storage={**place.spec()["storage"], "fastPath": False}))
    assert store_set_for(default)(loc).fast_path is not None  # type: ignore[attr-defined]
    assert store_set_for(off)(loc).fast_path is None  # type: ignore[attr-defined]
    monkeypatch.setenv(ENV_FAST_PATH, "0")
    assert store_set_for(default)(loc).fast_path is None  # type: ignore[attr-defined]
    # and a whole run with it off is exact
    fill(place)
    assert_exact(place, capsys, place.release(place.spec(storage=off.storage.model_dump(by_alias=True))))


# -- item 13: count only the deletions the server confirms --------------------------------------


@pytest.mark.parametrize("odd", ["ctl\x01name.txt", "cr\rname.txt"], ids=["SOH", "carriage return"])
def test_prune_counts_only_what_is_gone(odd: str, place: Place, capsys: pytest.CaptureFixture[str]) -> None:
    """versitygw lists a key holding a control character other than tab, LF or CR with U+FFFD in
    its place, so a DeleteObjects of the listed key deletes nothing — and succeeds. The run must
    not count it, and must not call the site exact: that customer fails, naming the key."""
    fill(place)
    release = place.release()
    place.put("sites", f"c1/{odd}", b"left by an earlier tool")
    code, text = webrelease(capsys, "run", str(release))
    listed_differently = place.kind == "s3" and "\x01" in odd
    left = [k for k in place.site_keys("c1") if k.endswith("name.txt")]
    if listed_differently:
        assert left, "the server deleted it after all: this case no longer tests anything"
        assert code == 3, text
        assert "failed c1: delete: 1 object(s) still there" in text and "ctl" in text, text
        assert "0 deleted" in text, text
        code, text = webrelease(capsys, "verify", str(release))
        client_for(place.s3).delete_object(Bucket=place.buckets["sites"], Key=f"sites/c1/{odd}")
        assert code == 3 and "c1  extra  ctl" in text, text
    else:
        assert code == 0, text
        assert left == [] and "1 deleted" in text, text
