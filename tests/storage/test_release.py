"""The issue's acceptance for the copier, on local folders and on the real S3 server."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import pytest
from mypy_boto3_s3.type_defs import CompletedPartTypeDef

from tests.harness.s3_fixtures import StorageBackend
from tests.harness.s3server import S3Endpoint
from tests.storage.releasekit import BUILD, RELEASE, WRITES, Scenario, make_customers, md5
from webrelease.copier.dryrun import plan_release
from webrelease.copier.exitcodes import EXIT_BAD_INPUT, EXIT_CUSTOMERS_FAILED, EXIT_OK
from webrelease.copier.localrun import load_run_customers
from webrelease.copier.plan import META_MD5, META_RELEASE, META_SHA256
from webrelease.copier.results import decode_results, parse_summary
from webrelease.copier.shard import ShardJob, run_shard
from webrelease.copier.siterecord import record_place
from webrelease.copier.snapshot import encode, shard_results_key, shard_summary_key
from webrelease.copier.spec import Storage
from webrelease.copier.storage import open_store, parse_url
from webrelease.copier.verify import DIFFERENT, EXTRA, MISSING, audit


def s3_backend(endpoint: S3Endpoint, bucket: str) -> StorageBackend:
    return StorageBackend(
        "s3",
        endpoint.storage_settings(),
        endpoint.credentials,
        parse_url(f"s3://{bucket}/"),
        bucket,
        env=endpoint.env(),
    )


def test_release_gives_every_customer_exactly_the_expected_bytes(storage_backend: StorageBackend) -> None:
    sc = Scenario(storage_backend, make_customers(20)).setup()
    outcome = sc.run()
    assert outcome.exit_code == EXIT_OK, outcome.summaries
    assert outcome.snapshot is not None and outcome.snapshot.count == 20
    assert [s.customers for s in outcome.summaries] == [7, 7, 6]
    for customer in sc.customers:
        assert sc.read_site(customer["id"]) == sc.expected_site(customer), customer["id"]
    totals = outcome.totals
    assert totals["succeeded"] == 20 and totals["failed"] == 0
    assert totals["objects"]["copied"] == 20 * (len(BUILD) - 2)
    assert totals["objects"]["rendered"] == 20 * 2
    # the report: snapshot, one results file per shard, summaries, index
    report = outcome.report
    assert report is not None
    assert sc.store.get(report, "customers.jsonl") == encode(sorted(sc.customers, key=lambda c: c["id"]))
    step = outcome.step
    assert step is not None and step.url == report.url + "main/"
    lines = [r for i in range(3) for r in decode_results(sc.store.get(step, shard_results_key(i)))]
    assert [r.id for r in lines] == [c["id"] for c in sc.customers]
    assert all(r.ok and r.site == sc.site(r.id).url for r in lines)
    assert parse_summary(sc.store.get(step, shard_summary_key(2))).succeeded == 6
    index = json.loads(sc.store.get(report, "index.json"))
    assert index["customers"]["succeeded"] == 20 and index["exitCode"] == 0
    (main,) = index["steps"]
    assert [s["customers"] for s in main["shards"]] == [7, 7, 6]
    assert main["shards"][2]["results"] == step.url + "shards/2.jsonl"


def test_what_we_write_carries_its_hash_release_and_content_type(storage_backend: StorageBackend) -> None:
    sc = Scenario(storage_backend, make_customers(1)).setup()
    assert sc.run().exit_code == EXIT_OK
    site = sc.site("c00")
    cfg = sc.store.head(site, "config.js")
    body = sc.store.get(site, "config.js")
    assert cfg.content_type == "text/javascript; charset=utf-8"
    assert cfg.metadata[META_SHA256] == hashlib.sha256(body).hexdigest()
    assert cfg.metadata[META_MD5] == md5(body)
    assert cfg.metadata[META_RELEASE] == RELEASE
    for key, ctype in [
        ("assets/app.js", "text/javascript"),
        ("assets/css/site.css", "text/css"),
        ("assets/img/logo.png", "image/png"),
        ("assets/fonts/all-bytes.woff2", "font/woff2"),
        ("docs/index.html", "text/html"),
        ("data/blob.bin", "application/octet-stream"),
    ]:
        info = sc.store.head(site, key)
        assert info.content_type == ctype, key
        assert info.metadata[META_MD5] == md5(BUILD[key])


def test_a_second_run_sends_no_writes_and_a_changed_file_is_recopied_alone(
    storage_backend: StorageBackend,
) -> None:
    sc = Scenario(storage_backend, make_customers(20)).setup()
    assert sc.run().exit_code == EXIT_OK
    sc.events.clear()
    again = sc.run()
    assert again.exit_code == EXIT_OK
    assert sc.all_site_writes() == []
    assert again.totals["objects"]["unchanged"] == 20 * len(BUILD)
    # the listings decided the bytes; the site records (one GET per customer) vouched for the
    # Content-Types webrelease wrote, so no HEAD at all
    assert [e for e in sc.events if e.operation == "HeadObject"] == []
    records = [e for e in sc.events if "/_site-records/" in f"/{e.key}"]
    assert [e.operation for e in records] == ["GetObject"] * 20

    sc.build["assets/app.js"] = b"console.log('app v2');\n"
    sc.store.put(sc.loc("build"), "assets/app.js", sc.build["assets/app.js"])
    sc.events.clear()
    third = sc.run()
    assert third.exit_code == EXIT_OK
    for customer in sc.customers:
        assert sc.written_keys(customer["id"]) == ["assets/app.js"]
        assert sc.read_site(customer["id"]) == sc.expected_site(customer)
    assert third.totals["objects"]["copied"] == 20


def test_overrides_replace_build_files_and_prune_removes_only_what_the_build_no_longer_has(
    storage_backend: StorageBackend,
) -> None:
    own_logo = b"\x89PNG own logo of c01"
    sc = Scenario(
        storage_backend,
        make_customers(3),
        overrides={
            "c01": {"assets/img/logo.png": own_logo, "assets/extra.css": b"x{}", "config.js": b"// mine\n"}
        },
    ).setup()
    # a file the customer's site had before, from outside the release
    sc.store.put(sc.site("c02"), "legacy/old.js", b"old")
    assert sc.run().exit_code == EXIT_OK
    c01 = sc.read_site("c01")
    assert c01["assets/img/logo.png"] == own_logo and c01["assets/extra.css"] == b"x{}"
    assert c01["config.js"] == b"// mine\n"  # an override wins over a template too
    assert c01 == sc.expected_site(sc.customers[1])
    assert sc.read_site("c00")["assets/img/logo.png"] == BUILD["assets/img/logo.png"]
    assert "legacy/old.js" in sc.read_site("c02")  # no prune: left alone

    # the next build drops a file; prune is on
    del sc.build["assets/app.js"]
    sc.store.delete(sc.loc("build"), ["assets/app.js"])
    sc.prune = True
    sc.events.clear()
    outcome = sc.run()
    assert outcome.exit_code == EXIT_OK
    for customer in sc.customers:
        assert sc.read_site(customer["id"]) == sc.expected_site(customer)
    assert outcome.totals["objects"]["deleted"] == 3 + 1  # app.js everywhere, and c02's legacy file
    assert outcome.totals["objects"]["copied"] == 0 and outcome.totals["objects"]["rendered"] == 0


def test_entrypoints_are_written_after_every_other_file_and_deletes_come_last(
    storage_backend: StorageBackend,
) -> None:
    sc = Scenario(storage_backend, make_customers(6), prune=True, objects_in_flight=32).setup()
    for c in sc.customers:
        sc.store.put(sc.site(c["id"]), "stale.txt", b"stale")
    sc.events.clear()
    assert sc.run().exit_code == EXIT_OK
    entry = {"index.html", "docs/index.html", "docs/guide/page.html"}
    for c in sc.customers:
        prefix = sc.site(c["id"]).prefix
        ordered = [
            (n, e)
            for n, e in enumerate(sc.events)
            if e.key.startswith(prefix) or e.operation == "DeleteObjects"
        ]
        writes = [(n, e.key[len(prefix) :]) for n, e in ordered if e.operation in WRITES]
        assert {k for _, k in writes} == set(BUILD)
        last_asset = max(n for n, k in writes if k not in entry)
        first_entry = min(n for n, k in writes if k in entry)
        assert last_asset < first_entry, c["id"]
        assert "stale.txt" not in sc.read_site(c["id"])
    deletes = [n for n, e in enumerate(sc.events) if e.operation == "DeleteObjects"]
    assert len(deletes) == 6
    # every delete of a customer comes after all of that customer's writes
    for c in sc.customers:
        prefix = sc.site(c["id"]).prefix
        last_write = max(
            n for n, e in enumerate(sc.events) if e.operation in WRITES and e.key.startswith(prefix)
        )
        assert any(n > last_write for n in deletes)


def test_customers_that_cannot_be_released_fail_alone_with_the_reason(
    storage_backend: StorageBackend,
) -> None:
    good = make_customers(4)
    for c in good:
        c["region"] = "eu"
    bad = [
        {"id": "c90", "name": "No API", "plan": "team", "region": "eu"},  # template needs apiUrl
        {"id": "Bad_Id", "name": "x", "apiUrl": "u", "plan": "p", "region": "eu"},  # unsafe id
        {"id": "c91", "name": "x", "apiUrl": "u", "plan": "p", "region": ".."},  # escapes its prefix
        {
            "id": "c92",
            "name": "x",
            "apiUrl": "u",
            "plan": "p",
            "region": "eu/c00",
        },  # would nest in another site
    ]
    sc = Scenario(
        storage_backend, good, target=storage_backend.location("sites").url + "{region}/{id}/"
    ).setup()
    # the snapshot is written by hand: the copier's own list validation would refuse these
    records = sorted(good + bad, key=lambda r: str(r["id"]))
    data = encode(records)
    report = sc.loc("reports").child("rel").child("run1")
    sc.store.put(report, "customers.jsonl", data)
    sha = hashlib.sha256(data).hexdigest()
    job = ShardJob(sc.spec(), RELEASE, report.url + "customers.jsonl", sha, 0, 50, report)
    sc.events.clear()
    result = run_shard(job, sc.stores())
    assert result.exit_code == EXIT_CUSTOMERS_FAILED
    by_id = {r.id: r for r in result.customers}
    assert {r.id for r in result.customers if r.ok} == {c["id"] for c in good}
    assert "template config.js, line 1: 'apiUrl' is undefined" in (by_id["c90"].reason or "")
    assert "not a valid customer id" in (by_id["Bad_Id"].reason or "")
    assert "target:" in (by_id["c91"].reason or "") and "single safe path segment" in (
        by_id["c91"].reason or ""
    )
    assert "single safe path segment" in (by_id["c92"].reason or "")
    sites = storage_backend.location("sites")
    for c in good:
        site = sites.child("eu").child(c["id"])
        assert {o.key for o in sc.store.list(site)} == set(BUILD)
    # nothing at all was written for a failed customer
    assert [o.key for o in sc.store.list(sites.child("eu").child("c90"))] == []
    # (site records are named by a hash, which may hold any of these strings: no failed
    # customer has one, as the good ones' count shows)
    written = {e.key for e in sc.events if e.operation in WRITES and "_site-records/" not in e.key}
    record_keys = {e.key for e in sc.events if e.operation in WRITES and "_site-records/" in e.key}
    assert len(record_keys) == len(good)
    assert not [k for k in written if "c90" in k or "Bad_Id" in k or "c91" in k or "c92" in k]
    # the report says the same
    lines = decode_results(sc.store.get(report, shard_results_key(0)))
    assert {r.id: r.ok for r in lines} == {r.id: r.ok for r in result.customers}
    summary = parse_summary(sc.store.get(report, shard_summary_key(0)))
    assert summary.failed == 4 and summary.exit_code == EXIT_CUSTOMERS_FAILED
    assert {f.id for f in summary.failed_sample} == {"c90", "Bad_Id", "c91", "c92"}


def test_bad_snapshot_or_index_is_bad_input_and_touches_no_site(storage_backend: StorageBackend) -> None:
    sc = Scenario(storage_backend, make_customers(3)).setup()
    report = sc.loc("reports").child("rel").child("run1")
    data = encode(sc.customers)
    sc.store.put(report, "customers.jsonl", data)
    url = report.url + "customers.jsonl"
    for sha, index, reason in [
        ("0" * 64, 0, "has sha256"),
        (None, 1, "out of range"),
        (None, -1, "out of range"),
    ]:
        sc.events.clear()
        result = run_shard(ShardJob(sc.spec(), RELEASE, url, sha, index, 5, report), sc.stores())
        assert result.exit_code == EXIT_BAD_INPUT
        assert reason in (result.error or "")
        assert not [e for e in sc.events if e.operation in WRITES]
    missing = run_shard(
        ShardJob(sc.spec(), RELEASE, report.url + "nope.jsonl", None, 0, 5, report), sc.stores()
    )
    assert missing.exit_code == EXIT_BAD_INPUT and "not found" in (missing.error or "")
    # an empty build is bad input too
    sc.store.delete(sc.loc("build"), list(BUILD))
    empty = run_shard(ShardJob(sc.spec(), RELEASE, url, None, 0, 5, report), sc.stores())
    assert empty.exit_code == EXIT_BAD_INPUT and "has no files" in (empty.error or "")


def test_a_bad_customer_list_stops_the_run_before_anything_is_written(
    storage_backend: StorageBackend,
) -> None:
    sc = Scenario(storage_backend, make_customers(3)).setup()
    sc.store.put(sc.loc("lists"), "customers.jsonl", b'{"id": "a"}\n{"id": "a"}\n{"id": "B"}\n')
    sc.events.clear()
    outcome = sc.run()
    assert outcome.exit_code == EXIT_BAD_INPUT
    assert "line 2: duplicate id 'a' (first at line 1)" in (outcome.error or "")
    assert "line 3: id 'B'" in (outcome.error or "")
    assert not [e for e in sc.events if e.operation in WRITES]


def test_plan_writes_nothing_and_says_what_would_happen(storage_backend: StorageBackend) -> None:
    sc = Scenario(storage_backend, make_customers(4), prune=True).setup()
    assert sc.run().exit_code == EXIT_OK
    sc.store.put(sc.site("c01"), "extra.txt", b"x")
    sc.build["assets/app.js"] = b"v2"
    sc.store.put(sc.loc("build"), "assets/app.js", b"v2")
    sc.events.clear()
    spec = sc.spec()
    stores = sc.stores()
    planned = plan_release(spec, RELEASE, load_run_customers(spec, stores), stores)
    assert not [e for e in sc.events if e.operation in WRITES | {"DeleteObjects"}]
    by_id = {p.id: p for p in planned}
    for p in planned:
        assert p.plan is not None
        assert [a.key for a in p.plan.writes] == ["assets/app.js"]
        assert len(p.plan.unchanged) == len(BUILD) - 1
    assert by_id["c01"].plan is not None and [a.key for a in by_id["c01"].plan.deletes] == ["extra.txt"]
    assert by_id["c00"].plan is not None and by_id["c00"].plan.deletes == ()
    assert sc.store.get(sc.site("c00"), "assets/app.js") == BUILD["assets/app.js"]


def test_verify_reports_a_corrupted_site_and_passes_a_correct_one(storage_backend: StorageBackend) -> None:
    sc = Scenario(storage_backend, make_customers(5), prune=True).setup()
    assert sc.run().exit_code == EXIT_OK
    spec = sc.spec()
    stores = sc.stores()
    customers = load_run_customers(spec, stores)
    clean = audit(spec, RELEASE, customers, stores)
    assert [a.differences for a in clean] == [()] * 5
    assert all(a.files == len(BUILD) for a in clean)

    sc.store.put(sc.site("c01"), "assets/app.js", b"console.log('hacked');\n")  # same name, other bytes
    sc.store.put(sc.site("c02"), "config.js", sc.store.get(sc.site("c03"), "config.js"))  # another's config
    sc.store.delete(sc.site("c03"), ["assets/img/logo.png"])
    sc.store.put(sc.site("c04"), "leftover.html", b"<p>old</p>")
    sc.events.clear()
    found = {
        (d.customer, d.problem, d.key) for a in audit(spec, RELEASE, customers, stores) for d in a.differences
    }
    assert found == {
        ("c01", DIFFERENT, "assets/app.js"),
        ("c02", DIFFERENT, "config.js"),
        ("c03", MISSING, "assets/img/logo.png"),
        ("c04", EXTRA, "leftover.html"),
    }
    # no site touched; only the site records of the three sites found wrong are forgotten
    assert not [e for e in sc.events if e.operation in WRITES]
    assert [e.operation for e in sc.events if e.operation == "DeleteObjects"] == ["DeleteObjects"] * 3
    for cid, kept in [("c01", False), ("c02", False), ("c03", False), ("c00", True), ("c04", True)]:
        folder, key = record_place(spec.reports.url, sc.site(cid))
        assert (key in {o.key for o in sc.store.list(folder)}) is kept, cid
    # and a run repairs exactly those
    assert sc.run().exit_code == EXIT_OK
    assert [a.differences for a in audit(spec, RELEASE, customers, stores)] == [()] * 5


def test_a_failed_write_stops_the_customer_before_its_entrypoints(tmp_path: Path) -> None:
    """On local folders a file where a folder must go makes every write below it fail."""
    backend = StorageBackend("file", Storage(), None, parse_url(tmp_path.as_uri()), "")
    sc = Scenario(backend, make_customers(3)).setup()
    sc.store.put(sc.site("c01"), "assets", b"I am a file, not a folder")
    sc.events.clear()
    outcome = sc.run()
    assert outcome.exit_code == EXIT_CUSTOMERS_FAILED
    failed = [f for s in outcome.summaries for f in s.failed_sample]
    assert [f.id for f in failed] == ["c01"]
    assert failed[0].reason.startswith("copy assets/")
    site = sc.read_site("c01")
    assert "index.html" not in site and "docs/index.html" not in site
    assert sc.read_site("c00") == sc.expected_site(sc.customers[0])
    assert sc.read_site("c02") == sc.expected_site(sc.customers[2])


@pytest.mark.storage
def test_a_local_build_goes_to_s3_sites_by_get_and_put(
    s3_server: S3Endpoint, s3_bucket: str, tmp_path: Path
) -> None:
    backend = s3_backend(s3_server, s3_bucket)
    build_loc = parse_url(tmp_path.as_uri() + "/build/")
    local = open_store("file", Storage(), max_in_flight=4)
    sc = Scenario(backend, make_customers(3), build_location=build_loc, build_store=local).setup()
    assert sc.run().exit_code == EXIT_OK
    assert {e.operation for e in sc.all_site_writes()} == {"PutObject"}
    for c in sc.customers:
        assert sc.read_site(c["id"]) == sc.expected_site(c)
    info = sc.store.head(sc.site("c00"), "data/blob.bin")
    assert info.metadata[META_SHA256] == hashlib.sha256(BUILD["data/blob.bin"]).hexdigest()
    sc.events.clear()
    assert sc.run().exit_code == EXIT_OK
    assert sc.all_site_writes() == []


@pytest.mark.storage
def test_a_build_file_uploaded_in_parts_is_hashed_once_and_not_recopied(
    s3_server: S3Endpoint, s3_bucket: str
) -> None:
    storage_backend = s3_backend(s3_server, s3_bucket)
    sc = Scenario(storage_backend, make_customers(3)).setup()
    big = random.Random(5).randbytes(6 * 1024 * 1024)
    client = s3_server.client()
    key = sc.loc("build").prefix + "media/video.bin"
    upload = client.create_multipart_upload(Bucket=storage_backend.bucket, Key=key)
    parts: list[CompletedPartTypeDef] = []
    for n, start in enumerate(range(0, len(big), 5 * 1024 * 1024), start=1):
        r = client.upload_part(
            Bucket=storage_backend.bucket,
            Key=key,
            UploadId=upload["UploadId"],
            PartNumber=n,
            Body=big[start : start + 5 * 1024 * 1024],
        )
        parts.append({"PartNumber": n, "ETag": r["ETag"]})
    client.complete_multipart_upload(
        Bucket=storage_backend.bucket, Key=key, UploadId=upload["UploadId"], MultipartUpload={"Parts": parts}
    )
    sc.build["media/video.bin"] = big
    assert sc.run().exit_code == EXIT_OK
    for c in sc.customers:
        assert sc.store.get(sc.site(c["id"]), "media/video.bin") == big
    sc.events.clear()
    assert sc.run().exit_code == EXIT_OK
    assert sc.all_site_writes() == []
