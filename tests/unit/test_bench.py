"""The bench's own bookkeeping: request counting from the server's access log, the workload, settings.

The benchmarks themselves are not tests (``make bench``); these check the pieces whose mistakes
would silently skew every table.
"""

from __future__ import annotations

from bench.clusterpath import RECORDS, REPORTS, rerelease_table
from bench.config import TOOLS, parse, read_versions
from bench.s3 import RequestCount, parse_access_log, parse_access_log_keys
from bench.workload import TEMPLATE_SHARE, make_build, make_customers

# A line as versitygw v1.8.0 writes it: the timestamp holds a space, the user agent several.
LINE = (
    "- {bucket} [28/November/2026:15:17:10 +0000] 127.0.0.1 - KL4Q1IACYJH3AUOR s3_{op} {key} /{bucket}/{key}"
    " 200 - 0 0 3 3 - Boto3/1.44.8 md/Botocore#1.44.8 ua/2.1 os/linux#6.18 cfg/retry-mode#standard -"
    " 3UgfsMe9KgqY23xRb9A2AfKW58T3KZ8A= SigV4 - AuthHeader s3.us-east-1.amazonaws.com -"
    " arn:aws:s3:::/{bucket}/{key} Yes"
)
ACCESS_LOG = "\n".join(
    [
        "log starts 2026-11-28 15:16:13.515071646 +0000 UTC m=+0.106614087",
        LINE.format(bucket="sites-a", op="CopyObject", key="c1/index.html"),
        LINE.format(bucket="sites-a", op="CopyObject", key="c2/index.html"),
        LINE.format(bucket="build", op="ListObjectsV2", key="-"),
        LINE.format(bucket="bench-meta", op="PutObject", key="r/0.jsonl"),
        LINE.format(bucket="-", op="ListBuckets", key="-"),
        "",
    ]
)


def test_access_log_counts_every_request_by_bucket_and_operation() -> None:
    counts = RequestCount(dict(parse_access_log(ACCESS_LOG)))
    assert counts.by_bucket_op == {
        ("sites-a", "CopyObject"): 2,
        ("build", "ListObjectsV2"): 1,
        ("bench-meta", "PutObject"): 1,
        ("-", "ListBuckets"): 1,
    }
    assert counts.total == 5
    assert counts.by_op == {"CopyObject": 2, "ListObjectsV2": 1, "PutObject": 1, "ListBuckets": 1}
    # writes to the sites exclude the tool's own report, which is still a write
    assert counts.writes("sites-a") == 2
    assert counts.writes() == 3


def test_site_record_requests_are_told_from_the_other_report_requests_by_key() -> None:
    rec = "reports/_site-records/" + "a" * 64 + ".json"
    text = "\n".join(
        [
            LINE.format(bucket="reports-local", op="GetObject", key=rec),
            LINE.format(bucket="reports-local", op="GetObject", key="reports/default/r/1/customers.jsonl"),
            LINE.format(bucket="reports-local", op="PutObject", key=rec),
            # a site file whose name merely contains the words is not a record
            LINE.format(bucket="sites", op="GetObject", key="c1/site-records.html"),
        ]
    )
    assert parse_access_log_keys(text, "/_site-records/") == {
        ("reports-local", "GetObject"): 1,
        ("reports-local", "PutObject"): 1,
    }


def test_rerelease_table_counts_the_record_get_beside_the_listing_per_customer() -> None:
    ops = {
        "ListObjectsV2": 4,
        "HeadObject": 2,
        REPORTS + "GetObject": 9,  # shard files: not per customer
        RECORDS + "GetObject": 4,
    }
    row = rerelease_table(4, {"noop": (1.0, 2.0, ops)}).splitlines()[2].split(" | ")
    # writes, LIST, record GET, HEAD, (LIST + record GET + HEAD) / customers
    assert row[3:8] == ["0", "4", "4", "2", "2.50"]


def test_build_is_deterministic_with_a_few_large_files_and_five_percent_templates() -> None:
    build = make_build(300)
    assert build == make_build(300)
    assert len(build.files) == 300
    assert len({f.key for f in build.files}) == 300
    sizes = sorted(f.size for f in build.files)
    assert sizes[len(sizes) // 2] < 20_000, "mostly small files"
    assert sum(1 for s in sizes if s > 1_000_000) >= 3, "a few large ones"
    templates = build.templates
    assert len(templates) == round(300 * TEMPLATE_SHARE)
    assert any(f.key == "index.html" for f in templates)
    for f in templates:
        assert b"{{" in f.body(1)
    assert not any(b"{{" in f.body(1) for f in build.files if f.is_text and not f.templated)


def test_v2_differs_from_v1_in_exactly_one_file_whose_size_changes() -> None:
    build = make_build(120)
    v1, v2 = build.version(1), build.version(2)
    assert v1.keys() == v2.keys()
    differ = [k for k in v1 if v1[k] != v2[k]]
    assert differ == [build.changed_key]
    assert len(v1[build.changed_key]) != len(v2[build.changed_key])
    assert [len(v1[f.key]) for f in build.files] == [f.size for f in build.files]


def test_customers_have_valid_unique_ids_and_template_fields() -> None:
    customers = make_customers(50)
    assert len({c["id"] for c in customers}) == 50
    for c in customers:
        assert {"id", "name", "color", "settings"} <= c.keys()


def test_settings_quick_mode_and_versions_from_the_install_scripts() -> None:
    s = parse(["--quick"], environ={})
    assert (s.runs, s.customers) == (1, 4)
    assert s.tools == TOOLS
    assert s.versions.s5cmd == "v2.3.0"
    assert read_versions({"RCLONE_VERSION": "v9.9.9"}).rclone == "v9.9.9"
    full = parse(["--customers", "12", "--tools", "s5cmd,webrelease", "--only", "copy"], environ={})
    assert (full.runs, full.customers, full.tools, full.sections) == (
        3,
        12,
        ("s5cmd", "webrelease"),
        ("copy",),
    )


def test_profile_charges_each_sample_to_the_innermost_known_layer() -> None:
    from bench.profile import OTHER, summarise

    raw = [
        # a regex compiled inside botocore is botocore's time, not the regex module's
        "thread (0x1);run_shard (webrelease/copier/shard.py:10)"
        ";S3Store.copy (webrelease/copier/storage/s3.py:3);_make_api_call (botocore/client.py:1)"
        ";parse (botocore/parsers.py:9);compile (re/__init__.py:2) 30",
        "thread (0x2);S3Store.copy (webrelease/copier/storage/s3.py:3);add_auth (botocore/auth.py:4) 10",
        "thread (0x3);render (webrelease/copier/render.py:5);lex (jinja2/lexer.py:6) 5",
        "thread (0x4);<module> (bench.py:1) 5",
        "not a stack line",
    ]
    p = summarise(raw, rate=100)
    assert p.samples == 50
    assert p.by_layer == {
        "botocore: response parsing": 30,
        "botocore: signing (SigV4)": 10,
        "webrelease: render (Jinja2)": 5,
        OTHER: 5,
    }
    assert p.top_self[0] == ("compile (re/__init__.py)", 30)
    # inclusive: S3Store.copy is on 40 of the 50 samples
    assert dict(p.top_webrelease)["S3Store.copy (webrelease/copier/storage/s3.py)"] == 40
