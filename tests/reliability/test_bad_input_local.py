"""Bad input on local folders: sites that overlap what a run reads or keeps, percent escapes in
``file://`` locations, values that are not what they look like (issue 11).

Every case runs ``webrelease run`` (``webrelease.cli.main``) on ``file://`` locations under one
folder, which is listed whole (every file with its sha256) before and after: a refused case exits
2 naming the field or line and changes nothing at all; a customer whose value decodes to a path
fails alone, its site is not written, and nothing but the good sites and the run's report changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from webrelease import cli as webrelease_cli

pytestmark = [pytest.mark.reliability]

Doc = dict[str, Any]
Tree = dict[str, str]

BUILD = {
    "index.html": "<!doctype html><h1>{{ name|e }}</h1>\n",
    "app.js": "console.log(1);\n",
}


def tree(root: Path) -> Tree:
    """Every file under ``root`` (the release file aside): relative path -> sha256."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "release.yaml"
    }


def changed(before: Tree, after: Tree) -> set[str]:
    return {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}


def rec(cid: str, **fields: Any) -> dict[str, Any]:
    return {"id": cid, "slug": cid, "name": f"Name of {cid}", **fields}


@dataclass
class Folders:
    root: Path

    def setup(self, customers: bytes) -> Folders:
        for key, body in BUILD.items():
            path = self.root / "build" / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(body)
        (self.root / "lists").mkdir(exist_ok=True)
        (self.root / "lists" / "customers.jsonl").write_bytes(customers)
        (self.root / "overrides" / "good-1").mkdir(parents=True, exist_ok=True)
        (self.root / "overrides" / "good-1" / "extra.css").write_text("b{}")
        (self.root / "sites" / "victim").mkdir(parents=True, exist_ok=True)
        (self.root / "sites" / "victim" / "index.html").write_text("victim's page")
        return self

    def url(self, rel: str) -> str:
        return f"file://{self.root}/{rel}"

    def doc(self) -> Doc:
        return {
            "apiVersion": "webrelease.dev/v1alpha1",
            "kind": "WebRelease",
            "metadata": {"name": "local"},
            "spec": {
                "source": {"url": self.url("build/")},
                "target": {"url": self.url("sites/{slug}/")},
                "customers": {"url": self.url("lists/customers.jsonl")},
                "overrides": {"url": self.url("overrides/{slug}/")},
                "reports": {"url": self.url("reports/")},
                "templates": ["index.html"],
                "prune": True,
            },
        }

    def write(self, doc: Doc | str) -> Path:
        path = self.root / "release.yaml"
        path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc, sort_keys=False))
        return path


def lines(*records: dict[str, Any] | bytes) -> bytes:
    return b"".join(
        (r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in (rec("good-1"), *records)
    )


def run(release: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    code = webrelease_cli.main(["run", str(release), "--no-progress", "--workers", "1"])
    out = capsys.readouterr()
    return code, out.out + out.err


Change = Callable[[Doc, Folders], Doc | str]


def spec_url(section: str, rel: str) -> Change:
    def change(doc: Doc, f: Folders) -> Doc:
        doc["spec"][section] = {"url": f.url(rel)}
        return doc

    return change


def same(doc: Doc, f: Folders) -> Doc:
    return doc


@dataclass(frozen=True)
class Refused:
    change: Change
    says: tuple[str, ...]
    customers: bytes | None = None


REFUSED: dict[str, Refused] = {
    "target inside the build": Refused(
        spec_url("target", "build/sites/{slug}/"), ("spec.target.url", "inside the build")
    ),
    "target inside the build, percent-encoded": Refused(
        spec_url("target", "bu%69ld/sites/{slug}/"), ("spec.target.url", "inside the build")
    ),
    "overrides inside the own site": Refused(
        spec_url("overrides", "sites/{slug}/ov/"), ("spec.overrides.url", "inside its own site")
    ),
    "a customer whose site is the build": Refused(
        spec_url("target", "{slug}/"),
        ("line 2", "customer 'b-1'", "would be the build (spec.source.url"),
        lines(rec("b-1", slug="build")),
    ),
    "a customer whose site holds every override": Refused(
        lambda doc, f: spec_url("overrides", "ov/{slug}/")(spec_url("target", "{slug}/")(doc, f), f),  # type: ignore[arg-type]
        ("line 2", "customer 'o-1'", "overrides", "overlap"),
        lines(rec("o-1", slug="ov")),
    ),
    "a customer whose site is the reports": Refused(
        spec_url("reports", "sites/reports/"),
        ("line 2", "customer 'r-1'", "would be the reports (spec.reports.url"),
        lines(rec("r-1", slug="reports")),
    ),
    "overrides inside the reports": Refused(
        spec_url("reports", "overrides/"), ("spec.overrides.url", "inside the reports")
    ),
    "a customer whose overrides hold the list": Refused(
        spec_url("overrides", "{slug}/"),
        ("line 2", "customer 'l-2'", "its overrides", "would contain the customer list"),
        lines(rec("l-2", slug="lists")),
    ),
    "a customer whose overrides are the build": Refused(
        spec_url("overrides", "{slug}/"),
        ("line 2", "customer 'b-2'", "its overrides", "would be the build"),
        lines(rec("b-2", slug="build")),
    ),
    "a customer whose overrides are the reports": Refused(
        spec_url("reports", "overrides/reports/"),
        ("line 2", "customer 'r-2'", "its overrides", "would be the reports"),
        lines(rec("r-2", slug="reports")),
    ),
    "two slugs, one folder once decoded": Refused(
        same,
        ("line 3", "customer 'p-2' has the same site", "/sites/ab/ as 'p-1'"),
        lines(rec("p-1", slug="ab"), rec("p-2", slug="a%62")),
    ),
    "'%' after a placeholder": Refused(
        spec_url("target", "sites/{slug}%{id}/"), ("spec.target.url", "percent escape")
    ),
    "id with a trailing newline": Refused(
        same, ("line 2", "not a valid customer id"), lines(rec("good-1\n"))
    ),
    "target field a list": Refused(
        same, ("line 2", "customer 'v-1'", "field 'slug' is a list"), lines(rec("v-1", slug=["a", "b"]))
    ),
    "target field a boolean": Refused(
        same, ("line 2", "customer 'v-2'", "field 'slug' is a boolean"), lines(rec("v-2", slug=False))
    ),
    "a key twice in a record": Refused(
        same, ("line 2", "the key 'slug' appears twice"), lines(b'{"id": "d-1", "slug": "a", "slug": "b"}')
    ),
    "a key twice in the release": Refused(
        lambda doc, f: yaml.safe_dump(doc, sort_keys=False).replace(
            "  prune: true\n", "  prune: true\n  prune: false\n"
        ),
        ("release.yaml, line", "the key 'prune' appears twice"),
    ),
}


@pytest.mark.parametrize("case", list(REFUSED), ids=list(REFUSED))
def test_refused_on_local_folders(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = REFUSED[case]
    f = Folders(tmp_path).setup(bad.customers if bad.customers is not None else lines())
    release = f.write(bad.change(f.doc(), f))
    before = tree(tmp_path)
    code, text = run(release, capsys)
    assert code == 2, text
    for says in bad.says:
        assert says in text, f"{says!r} not in: {text[-1500:]}"
    assert "Traceback" not in text
    assert not changed(before, tree(tmp_path)), sorted(changed(before, tree(tmp_path)))[:10]


def test_an_alias_bomb_is_refused_in_well_under_a_second(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = Folders(tmp_path).setup(lines())
    bomb = "lol0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
        f"lol{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]\n" for i in range(1, 10)
    )
    release = f.write(yaml.safe_dump(f.doc(), sort_keys=False) + bomb)
    before = tree(tmp_path)
    start = time.process_time()
    code, text = run(release, capsys)
    cpu = time.process_time() - start
    assert code == 2, text
    assert "expands to more than 200000 nodes" in text
    assert cpu < 1, f"{cpu:.2f} s of CPU to refuse it"
    assert not changed(before, tree(tmp_path))


def test_values_that_decode_to_a_path_fail_their_customer_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``c%2Fd`` would be ``sites/c/d/`` (nested in customer ``c``'s site, pruned by it on every
    other run); ``%2e%2e`` would be ``sites/..``; each fails alone, the good customers are exact."""
    bad = {"n-1": "c%2Fd", "n-2": "%2e%2e", "n-3": "x%5Cy", "n-4": "a%0Ab"}
    customers = lines(rec("c"), *(rec(cid, slug=slug) for cid, slug in bad.items()))
    f = Folders(tmp_path).setup(customers)
    release = f.write(f.doc())
    before = tree(tmp_path)
    code, text = run(release, capsys)
    after = tree(tmp_path)
    assert code == 3, text
    for cid in bad:
        line = next((ln for ln in text.splitlines() if ln.startswith(f"failed {cid}:")), "")
        assert "decoded from" in line and "not a single safe path segment" in line, text
    written = changed(before, after)
    allowed = ("sites/good-1/", "sites/c/", "reports/")
    assert all(k.startswith(allowed) for k in written), sorted(written)
    assert not (tmp_path / "sites" / "c" / "d").exists()
    site_c = sorted(k for k in after if k.startswith("sites/c/") and "/.webrelease-meta/" not in k)
    assert site_c == ["sites/c/app.js", "sites/c/index.html"]
    assert (tmp_path / "sites" / "good-1" / "extra.css").read_text() == "b{}"
    assert (tmp_path / "sites" / "victim" / "index.html").read_text() == "victim's page"


# -- symlinks: one folder under two names (found by the issue-11 review) -----------------------


def test_a_sites_folder_that_links_into_the_build_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``sites -> build``: the URLs do not overlap, the folders do; every site would be written into
    the build (and the next run would copy every site into every site)."""
    f = Folders(tmp_path).setup(lines())
    (tmp_path / "sites").rename(tmp_path / "old-sites")
    (tmp_path / "sites").symlink_to("build")
    release = f.write(f.doc())
    before = tree(tmp_path)
    code, text = run(release, capsys)
    assert code == 2, text
    assert "spec.target.url: once symlinks are followed" in text and "inside the build" in text, text
    assert not changed(before, tree(tmp_path)), sorted(changed(before, tree(tmp_path)))[:10]
    assert sorted(p.name for p in (tmp_path / "build").iterdir()) == ["app.js", "index.html"]


def test_a_site_folder_that_is_a_symlink_fails_its_customer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``sites/l-1 -> victim`` (another tenant's site) and ``sites/l-2 -> ../build``: each would
    overwrite what its link points to (the build's template with one customer's page); each fails
    alone, nothing is written through the links."""
    f = Folders(tmp_path).setup(lines(rec("l-1"), rec("l-2")))
    (tmp_path / "sites" / "l-1").symlink_to("victim")
    (tmp_path / "sites" / "l-2").symlink_to("../build")
    release = f.write(f.doc())
    before = tree(tmp_path)
    code, text = run(release, capsys)
    assert code == 3, text
    for cid, target in (("l-1", "'victim'"), ("l-2", "'../build'")):
        line = next((ln for ln in text.splitlines() if ln.startswith(f"failed {cid}:")), "")
        assert "is a symlink (to " + target in line, text
    written = changed(before, tree(tmp_path))
    assert all(k.startswith(("sites/good-1/", "reports/")) for k in written), sorted(written)
    assert (tmp_path / "build" / "index.html").read_text() == BUILD["index.html"]
    assert (tmp_path / "sites" / "victim" / "index.html").read_text() == "victim's page"


def test_a_symlinked_folder_inside_a_site_is_never_pruned_through(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A site holding ``old -> assets``: the listing shows ``old/app.css`` too, and a prune of it
    would unlink ``assets/app.css`` (a file the release has): the run said ok with the file gone."""
    f = Folders(tmp_path).setup(lines())
    (tmp_path / "build" / "assets").mkdir()
    (tmp_path / "build" / "assets" / "app.css").write_text("a{}")
    release = f.write(f.doc())
    assert run(release, capsys)[0] == 0
    (tmp_path / "sites" / "good-1" / "old").symlink_to("assets")
    before = tree(tmp_path)
    code, text = run(release, capsys)
    assert code == 3, text
    assert "the folder 'old' is a symlink (to 'assets')" in text, text
    assert (tmp_path / "sites" / "good-1" / "assets" / "app.css").read_text() == "a{}"
    written = changed(before, tree(tmp_path))
    assert all(k.startswith("reports/") for k in written), sorted(written)


def test_a_same_size_edit_with_its_mtime_put_back_is_seen(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A site file changed in place to other bytes of the same size, its mtime set back
    (``os.utime``, ``touch -r``, an in-place sync keeping times): the sidecar's MD5 was trusted, so
    ``verify`` called the site exact and ``run`` left it wrong. The ctime cannot be set back."""
    f = Folders(tmp_path).setup(lines())
    release = f.write(f.doc())
    assert run(release, capsys)[0] == 0
    page = tmp_path / "sites" / "good-1" / "app.js"
    st = page.stat()
    with page.open("r+b") as fh:
        fh.write(b"alert(2)")  # same size as console.log(1)'s first 8 bytes
    os.utime(page, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert page.stat().st_size == st.st_size and page.stat().st_mtime_ns == st.st_mtime_ns
    capsys.readouterr()
    code = webrelease_cli.main(["verify", str(release), "--no-progress"])
    text = capsys.readouterr().out
    assert code == 3, text
    assert "good-1  different  app.js" in text, text
    code, text = run(release, capsys)
    assert code == 0, text
    assert page.read_text() == BUILD["app.js"]


def test_an_overrides_folder_linked_to_the_reports_fails_its_customer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``overrides/l-3 -> ../reports``: every file there (the run's snapshot: every customer's
    record) would be copied into l-3's public site. A link to a folder of one's own is fine."""
    f = Folders(tmp_path).setup(lines(rec("l-3"), rec("l-4")))
    (tmp_path / "reports").mkdir()
    (tmp_path / "overrides" / "l-3").symlink_to("../reports")
    (tmp_path / "brand").mkdir()
    (tmp_path / "brand" / "brand.css").write_text("i{}")
    (tmp_path / "overrides" / "l-4").symlink_to("../brand")
    release = f.write(f.doc())
    before = tree(tmp_path)
    code, text = run(release, capsys)
    assert code == 3, text
    line = next((ln for ln in text.splitlines() if ln.startswith("failed l-3:")), "")
    assert "a symlink leads them into spec.reports.url" in line, text
    assert not (tmp_path / "sites" / "l-3").exists()
    assert (tmp_path / "sites" / "l-4" / "brand.css").read_text() == "i{}"
    written = changed(before, tree(tmp_path))
    assert all(k.startswith(("sites/good-1/", "sites/l-4/", "reports/")) for k in written), sorted(written)


def test_a_sites_folder_linked_to_a_folder_whose_name_is_not_utf8_releases(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Following the link must not crash on a folder name that is not UTF-8 (it is a legal one)."""
    f = Folders(tmp_path).setup(lines())
    name = os.fsdecode(b"s\xe9")  # 's\udce9': the byte 0xE9 alone is not UTF-8
    (tmp_path / name).mkdir()
    (tmp_path / "sites").rename(tmp_path / "old-sites")
    (tmp_path / "sites").symlink_to(name)
    release = f.write(f.doc())
    code, text = run(release, capsys)
    assert code == 0, text
    assert "Traceback" not in text
    assert (tmp_path / name / "good-1" / "index.html").is_file()
