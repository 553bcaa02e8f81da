"""Customer sources, parsing only: bytes in memory → records with the lines a user would look at."""

from __future__ import annotations

import datetime as dt
import decimal
import gzip
import io
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from webrelease.copier.sources import (
    ConfigMapSource,
    InlineSource,
    MappingSecrets,
    MissingReference,
    RawRecord,
    SourceError,
    SqlSource,
    TextSource,
    missing_config_map,
    open_source,
)
from webrelease.copier.sources.base import MAX_RECORD_BYTES
from webrelease.copier.sources.formats import detect_format, parse_json_array
from webrelease.copier.sources.sql import Scrubber
from webrelease.copier.sources.values import ValueProblem, to_json_record
from webrelease.copier.spec import INLINE_CUSTOMERS_MAX, Customers


def records(data: str | bytes, key: str = "", fmt: str = "auto") -> list[RawRecord]:
    return list(TextSource(data, "test list", key=key, format=fmt).records())


def array(data: bytes, chunk: int) -> list[RawRecord]:
    """``parse_json_array`` read with ``chunk``-byte reads, a stopping error as the last record."""

    def gen() -> Iterator[RawRecord]:
        try:
            yield from parse_json_array(io.BytesIO(data), chunk=chunk)
        except SourceError as exc:
            yield exc.record()

    return list(gen())


def good(recs: list[RawRecord]) -> list[tuple[str, Any]]:
    return [(r.where, r.value) for r in recs if r.error is None]


def bad(recs: list[RawRecord]) -> list[tuple[str, str]]:
    return [(r.where, r.error) for r in recs if r.error is not None]


# --- JSON Lines -----------------------------------------------------------------------------------


def test_jsonl_records_carry_their_line_numbers_and_blank_lines_count() -> None:
    recs = records('{"id":"a","n":1}\n\n  \n{"id":"b","tags":["x"],"o":{"k":null}}\r\n{"id":"c"}')
    assert good(recs) == [
        ("line 1", {"id": "a", "n": 1}),
        ("line 4", {"id": "b", "tags": ["x"], "o": {"k": None}}),
        ("line 5", {"id": "c"}),
    ]
    assert bad(recs) == []


def test_jsonl_bad_lines_are_reported_and_the_rest_still_read() -> None:
    data = b"\n".join(
        [
            b'{"id":"a"}',
            b'{"id": "b",}',  # trailing comma
            b'["not", "an", "object"]',
            b'"just a string"',
            b'{"id":"c","x":NaN}',
            b'{"id":"caf\xe9"}',  # Latin-1, not UTF-8
            b'\xef\xbb\xbf{"id":"d"}',  # a BOM in the middle: two files glued together
            b'{"id":"e"}',
        ]
    )
    recs = records(data, key="list.jsonl")
    assert good(recs) == [("line 1", {"id": "a"}), ("line 8", {"id": "e"})]
    errors = dict(bad(recs))
    assert errors["line 2"].startswith("malformed JSON: Expecting property name")
    assert errors["line 3"] == "expected a JSON object, got an array"
    assert errors["line 4"] == "expected a JSON object, got a string"
    assert errors["line 5"] == "malformed JSON: NaN is not valid JSON"
    assert errors["line 6"] == "not valid UTF-8 (byte 0xe9 at column 11); save the list as UTF-8"
    assert errors["line 7"] == "a byte order mark (U+FEFF) in the middle of the list"


def test_a_line_longer_than_a_record_may_be_is_reported_and_skipped() -> None:
    huge = b'{"id":"big","x":"' + b"y" * (MAX_RECORD_BYTES + 10) + b'"}'
    recs = records(b'{"id":"a"}\n' + huge + b'\n{"id":"b"}\n', fmt="jsonl")
    assert good(recs) == [("line 1", {"id": "a"}), ("line 3", {"id": "b"})]
    assert bad(recs) == [("line 2", "longer than 1024 KiB (one record per line?)")]


# --- JSON array -----------------------------------------------------------------------------------

ARRAY = '[\n  {"id": "a", "s": "x,]}[{"},\n\n  {"id": "b",\n   "n": [1, 2.5, -3e2]},{"id":"c"}\n]\n'


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 7, 11, 64, 4096])
def test_json_array_elements_and_lines_do_not_depend_on_chunk_boundaries(chunk: int) -> None:
    recs = array(ARRAY.encode(), chunk)
    assert good(recs) == [
        ("line 2", {"id": "a", "s": "x,]}[{"}),
        ("line 4", {"id": "b", "n": [1, 2.5, -300.0]}),
        ("line 5", {"id": "c"}),
    ]
    assert bad(recs) == []


@pytest.mark.parametrize("chunk", [1, 3, 4096])
def test_json_array_non_objects_are_skipped_with_their_line(chunk: int) -> None:
    data = b'[{"id":"a"},\n 12,\n "x",\n null, {"id":"b"}]'
    recs = array(data, chunk)
    assert good(recs) == [("line 1", {"id": "a"}), ("line 4", {"id": "b"})]
    assert bad(recs) == [
        ("line 2", "expected a JSON object, got a number"),
        ("line 3", "expected a JSON object, got a string"),
        ("line 4", "expected a JSON object, got null"),
    ]


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        ('[{"id":"a"},\n{"id":"b"},\n]', "line 3", "a trailing comma before ']'"),
        ('[{"id":"a"}\n{"id":"b"}]', "line 2", "expected ',' or ']' after the element, found '{'"),
        ('[{"id":"a"},\n{"id":"b"}\n', "line 3", "the JSON array is not closed: the list ends before ']'"),
        ('[{"id":"a"},\n{"id":"b"\n\n "x": 1}]', "line 4", "malformed JSON: Expecting ',' delimiter"),
        ('[{"id":"a"}]\n[{"id":"b"}]', "line 2", "data after the end of the JSON array ('[')"),
        ('\n\n{"id":"a"}', "line 3", "expected a JSON array starting with '[', found '{'"),
        ('[{"id":"a"},\n{"id":"b","x":Infinity}]', "line 2", "malformed JSON: Infinity is not valid JSON"),
    ],
)
def test_json_array_syntax_errors_stop_the_list_at_their_line(text: str, where: str, message: str) -> None:
    for chunk in (1, 5, 4096):
        recs = array(text.encode(), chunk)
        assert recs[-1].where == where, chunk
        assert recs[-1].error is not None
        assert recs[-1].error.startswith(message), (chunk, recs[-1].error)


def test_json_array_invalid_utf8_names_the_line() -> None:
    recs = records(b'[{"id":"a"},\n{"id":"b"},\n{"id":"caf\xe9"}]', fmt="json")
    assert good(recs) == [("line 1", {"id": "a"}), ("line 2", {"id": "b"})]
    assert bad(recs) == [("line 3", "not valid UTF-8 (byte 0xe9 at column 11); save the list as UTF-8")]
    # the same when the line starts in one read and the bad byte comes in the next
    for chunk in (1, 2, 5, 13):
        recs = array(b'[{"id":"a"},\n{"id":"b"},\n{"id":"caf\xe9"}]', chunk)
        assert bad(recs) == [("line 3", "not valid UTF-8 (byte 0xe9 at column 11); save the list as UTF-8")]


def test_json_array_element_larger_than_a_record_may_be() -> None:
    data = b'[{"id":"a"},\n{"id":"b","x":"' + b"y" * (MAX_RECORD_BYTES + 10) + b'"}]'
    for chunk in (4096, 4 * 1024 * 1024):
        recs = array(data, chunk)
        assert good(recs) == [("line 1", {"id": "a"})]
        assert bad(recs) == [("line 2", "an array element longer than 1024 KiB (one record per line?)")]


def test_json_array_syntax_error_early_in_a_long_list_is_found_without_reading_it_all() -> None:
    tail = b"".join(b',{"id":"c%d"}\n' % i for i in range(200_000))  # ~3 MB after the error
    stream = io.BytesIO(b'[{"id":"a"},\n{"id" "b"}\n' + tail + b"]")
    with pytest.raises(SourceError) as err:
        list(parse_json_array(stream, chunk=64 * 1024))
    recs = [err.value.record()]
    assert bad(recs) == [("line 2", "malformed JSON: Expecting ':' delimiter")]
    assert stream.tell() < 2 * MAX_RECORD_BYTES


# --- CSV ------------------------------------------------------------------------------------------


def test_csv_rows_become_string_records_and_quoted_fields_may_span_lines() -> None:
    data = 'id,name,plan\r\na,"Acme, Inc.",gold\r\n\r\nb,"two\nlines ""quoted""",\r\nc,x,silver\r\n'
    recs = records(data, key="customers.csv")
    assert good(recs) == [
        ("line 2", {"id": "a", "name": "Acme, Inc.", "plan": "gold"}),
        ("line 4", {"id": "b", "name": 'two\nlines "quoted"', "plan": ""}),
        ("line 6", {"id": "c", "name": "x", "plan": "silver"}),
    ]


def test_csv_row_problems_name_their_lines() -> None:
    data = b"\n".join(
        [
            b"id,name",
            b"a,ok",
            b"b,too,many",
            b'c,"bad"quote',
            b"d,caf\xe9",
            b"e,fine",
            b"f,also fine",
            b'g,"never closed',
            b"h,swallowed",
        ]
    )
    recs = records(data, key="c.csv")
    assert good(recs) == [
        ("line 2", {"id": "a", "name": "ok"}),
        ("line 6", {"id": "e", "name": "fine"}),
        ("line 7", {"id": "f", "name": "also fine"}),
    ]
    errors = dict(bad(recs))
    assert errors["line 3"] == "3 CSV fields, the header (line 1) has 2"
    assert errors["line 4"] == "CSV quoting: ',' expected after '\"'"
    assert errors["line 5"] == "not valid UTF-8 (byte 0xe9 at column 6); save the list as UTF-8"
    assert errors["line 8"] == "a quoted field opened here is never closed (it runs to the end of the list)"
    assert len(errors) == 4


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (b"name,plan\nx,y\n", "the CSV header has no 'id' column (columns: 'name', 'plan')"),
        (b"id,name,id\na,b,c\n", "the CSV header names column 'id' twice"),
        (b"id,,plan\na,b,c\n", "the CSV header has an empty column name"),
        (b'id,"name\n', "the CSV header cannot be read: unexpected end of data"),
        (
            b"id,n\xe9\na,b\n",
            "the CSV header is not valid UTF-8 (byte 0xe9 at column 5); save the list as UTF-8",
        ),
    ],
)
def test_a_bad_csv_header_stops_the_list(header: bytes, message: str) -> None:
    recs = records(header, key="c.csv")
    assert [(r.where, r.error) for r in recs] == [("line 1", message)]


def test_csv_header_names_lose_surrounding_blanks_but_values_keep_them() -> None:
    recs = records(" id , plan \na, gold \n", key="c.csv")
    assert good(recs) == [("line 2", {"id": "a", "plan": " gold "})]


def test_csv_with_a_utf8_bom_and_semicolon_in_values() -> None:
    recs = records("\ufeffid,note\na,x;y\n".encode(), key="c.csv")
    assert good(recs) == [("line 2", {"id": "a", "note": "x;y"})]


# --- encodings, gzip, format detection -------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            '{"id":"a"}\n'.encode("utf-16"),
            "the list is encoded as UTF-16 little-endian (byte order mark FF FE)",
        ),
        ('{"id":"a"}\n'.encode("utf-16-be"), "NUL bytes: the list looks UTF-16 or UTF-32 encoded"),
        ("\ufeff{}".encode("utf-16-be"), "the list is encoded as UTF-16 big-endian (byte order mark FE FF)"),
        (
            '{"id":"a"}\n'.encode("utf-32"),
            "the list is encoded as UTF-32 little-endian (byte order mark FF FE 00 00)",
        ),
    ],
)
def test_lists_that_are_not_utf8_are_refused_on_line_1(data: bytes, message: str) -> None:
    recs = records(data)
    assert len(recs) == 1
    assert recs[0].where == "line 1"
    assert recs[0].error is not None and recs[0].error.startswith(message)


def test_gzip_is_detected_by_content_with_or_without_a_gz_name_and_may_carry_a_bom() -> None:
    plain = '{"id":"a"}\n{"id":"b"}\n'
    expected = [("line 1", {"id": "a"}), ("line 2", {"id": "b"})]
    assert good(records(gzip.compress(plain.encode()), key="list.jsonl.gz")) == expected
    assert good(records(gzip.compress(plain.encode()), key="list")) == expected
    assert good(records(gzip.compress(b"\xef\xbb\xbf" + plain.encode()))) == expected
    # two gzip members back to back (cat a.gz b.gz) are one list
    two = gzip.compress(b'{"id":"a"}\n') + gzip.compress(b'{"id":"b"}\n')
    assert good(records(two)) == expected


def test_a_gz_name_without_gzip_content_and_broken_gzip_are_errors() -> None:
    assert bad(records(b'{"id":"a"}\n', key="list.jsonl.gz")) == [
        ("line 1", "the name ends in .gz but the content is not gzip-compressed")
    ]
    body = b"".join(b'{"id":"c%06d","pad":"%s"}\n' % (i, uuid.uuid4().hex.encode()) for i in range(3000))
    packed = gzip.compress(body)
    truncated = records(packed[: len(packed) // 2])
    last = truncated[-1]
    assert last.error is not None and last.error.startswith("the gzip data is corrupt or truncated")
    assert last.where == f"line {len(truncated)}"
    assert all(r.error is None for r in truncated[:-1])


@pytest.mark.parametrize(
    ("declared", "key", "text", "expected"),
    [
        ("auto", "x.csv", '{"id":"a"}', "csv"),
        ("auto", "x.CSV.gz", "id\na", "csv"),
        ("auto", "x.ndjson", "[1]", "jsonl"),
        ("auto", "x.jsonl", "", "jsonl"),
        ("auto", "x.json", '  \n [{"id":"a"}]', "json"),
        ("auto", "x.json", '{"id":"a"}\n{"id":"b"}', "jsonl"),
        ("auto", "", "id,name\na,b", "csv"),
        ("auto", "", "", "jsonl"),
        ("json", "x.csv", "id\na", "json"),
        ("csv", "x.json", "[]", "csv"),
    ],
)
def test_format_detection(declared: str, key: str, text: str, expected: str) -> None:
    stream = io.BufferedReader(io.BytesIO(text.encode()))
    assert detect_format(stream, declared, key) == expected


EQUIVALENT = [
    {"id": "acme", "name": "Acme, Inc.", "plan": "gold", "logo": "https://cdn.example/acme.png"},
    {"id": "b-2", "name": 'Bob "the" Builder', "plan": "free", "logo": ""},
    {"id": "zed.io", "name": "Zed — ünïcödé ✓", "plan": "silver", "logo": "x\ny"},
]


def as_jsonl(rows: list[dict[str, str]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def as_csv(rows: list[dict[str, str]]) -> str:
    import csv

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def test_the_same_customers_in_every_text_format_give_the_same_records() -> None:
    variants: dict[str, tuple[str | bytes, str]] = {
        "jsonl": (as_jsonl(EQUIVALENT), "c.jsonl"),
        "json": (json.dumps(EQUIVALENT, indent=2, ensure_ascii=False), "c.json"),
        "csv": (as_csv(EQUIVALENT), "c.csv"),
        "csv-bom-crlf": (
            "\ufeff" + as_csv(EQUIVALENT).replace("\n", "\r\n").replace("x\r\ny", "x\ny"),
            "c.csv",
        ),
        "jsonl.gz": (gzip.compress(as_jsonl(EQUIVALENT).encode()), "c.jsonl.gz"),
        "csv.gz": (gzip.compress(as_csv(EQUIVALENT).encode()), "c.csv.gz"),
    }
    for name, (data, key) in variants.items():
        recs = records(data, key=key)
        assert bad(recs) == [], name
        assert [r.value for r in recs] == EQUIVALENT, name


# --- inline ---------------------------------------------------------------------------------------


def test_inline_items_are_numbered_like_the_yaml_list_and_dates_become_text() -> None:
    recs = list(InlineSource([{"id": "a", "since": dt.date(2024, 5, 1)}, "oops", {"id": "b"}]).records())
    assert good(recs) == [("item 0", {"id": "a", "since": "2024-05-01"}), ("item 2", {"id": "b"})]
    assert bad(recs) == [("item 1", "expected an object, got a string")]


def test_inline_over_the_cap_names_the_cap() -> None:
    items = [{"id": f"c{i}"} for i in range(INLINE_CUSTOMERS_MAX + 1)]
    recs = list(InlineSource(items).records())
    assert len(recs) == 1
    assert recs[0].error is not None
    assert f"more than the inline cap of {INLINE_CUSTOMERS_MAX}" in recs[0].error
    assert "customers.url" in recs[0].error


# --- values from databases and YAML --------------------------------------------------------------------


def test_database_values_become_json_values() -> None:
    row = {
        "id": "a",
        "n": decimal.Decimal("12"),
        "price": decimal.Decimal("10.50"),
        "round": decimal.Decimal("10.00"),
        "at": dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
        "day": dt.date(2024, 1, 2),
        "t": dt.time(3, 4),
        "wait": dt.timedelta(minutes=2),
        "u": uuid.UUID(int=1),
        "tags": ("x", "y"),
        "meta": {"k": [decimal.Decimal("1"), None, True]},
        "f": 1.5,
    }
    assert to_json_record(row) == {
        "id": "a",
        "n": 12,
        "price": "10.50",
        "round": "10.00",
        "at": "2024-01-02T03:04:05+00:00",
        "day": "2024-01-02",
        "t": "03:04:00",
        "wait": 120.0,
        "u": "00000000-0000-0000-0000-000000000001",
        "tags": ["x", "y"],
        "meta": {"k": [1, None, True]},
        "f": 1.5,
    }
    json.dumps(to_json_record(row), allow_nan=False)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (b"\x00", "field 'v' is binary data; cast it to text in the query"),
        (float("nan"), "field 'v' is nan, which JSON cannot hold"),
        (decimal.Decimal("Infinity"), "field 'v' is Infinity, which JSON cannot hold"),
        ({"deep": [memoryview(b"x")]}, "field 'v.deep[0]' is binary data"),
    ],
)
def test_values_without_a_json_form_are_named(value: object, message: str) -> None:
    with pytest.raises(ValueProblem, match=message.replace("[", r"\[").replace("]", r"\]")):
        to_json_record({"v": value})


# --- references, secrets ----------------------------------------------------------------------------


class ConfigMaps:
    """ConfigMaps held in memory, answering like the operator's reader."""

    def __init__(self, maps: dict[str, dict[str, str | bytes]]) -> None:
        self.maps = maps

    def config_map_value(self, name: str, key: str) -> str | bytes:
        if name not in self.maps:
            raise missing_config_map(name, key, None)
        if key not in self.maps[name]:
            raise missing_config_map(name, key, list(self.maps[name]))
        return self.maps[name][key]


def test_config_map_text_and_binary_values_are_lists() -> None:
    maps = ConfigMaps(
        {
            "shop": {
                "customers.csv": "id,plan\na,gold\n",
                "customers.jsonl.gz": gzip.compress(b'{"id":"a","plan":"gold"}\n'),
            }
        }
    )
    for key in ("customers.csv", "customers.jsonl.gz"):
        recs = list(ConfigMapSource(maps, "shop", key).records())
        assert good(recs) == [("line 1" if key.endswith("gz") else "line 2", {"id": "a", "plan": "gold"})]


def test_missing_config_map_and_key_are_named() -> None:
    maps = ConfigMaps({"shop": {"a.csv": "id\nx\n", "b.csv": "id\ny\n"}})
    assert [(r.where, r.error) for r in ConfigMapSource(maps, "nope", "a.csv").records()] == [
        ("ConfigMap", "ConfigMap 'nope' not found")
    ]
    assert [(r.where, r.error) for r in ConfigMapSource(maps, "shop", "c.csv").records()] == [
        ("ConfigMap", "ConfigMap 'shop' has no key 'c.csv' (its keys: a.csv, b.csv)")
    ]


def test_open_source_for_each_kind_and_missing_readers() -> None:
    inline = open_source(Customers(inline=[{"id": "a"}]))
    assert good(list(inline.records())) == [("item 0", {"id": "a"})]
    cm = open_source(
        Customers.model_validate({"configMapRef": {"name": "shop", "key": "c.csv"}}),
        config_maps=ConfigMaps({"shop": {"c.csv": "id\nz\n"}}),
    )
    assert good(list(cm.records())) == [("line 2", {"id": "z"})]
    sql_spec = Customers.model_validate(
        {"sql": {"secretRef": {"name": "db", "key": "url"}, "query": "SELECT 1"}}
    )
    no_reader = list(open_source(sql_spec).records())
    assert [r.where for r in no_reader] == ["Secret"]
    missing_key = list(open_source(sql_spec, secrets=MappingSecrets({"db": {"dsn": "x"}})).records())
    assert [(r.where, r.error) for r in missing_key] == [
        ("Secret", "Secret 'db' has no key 'url' (its keys: dsn)")
    ]
    missing = list(open_source(sql_spec, secrets=MappingSecrets({})).records())
    assert [(r.where, r.error) for r in missing] == [("Secret", "Secret 'db' not found")]
    no_cm = list(open_source(Customers.model_validate({"configMapRef": {"name": "s", "key": "k"}})).records())
    assert [r.where for r in no_cm] == ["ConfigMap"]
    no_store = list(open_source(Customers(url="s3://lists/c.jsonl")).records())
    assert [(r.where, r.error) for r in no_store] == [
        ("object", "no object store configured to read customers.url")
    ]


def test_the_scrubber_removes_the_url_and_every_form_of_its_password() -> None:
    url = "postgresql+psycopg://app:p%40ss%3Aw0rd@db.internal:5432/shop"
    scrub = Scrubber(url)
    text = f"failed {url} / p@ss:w0rd / p%40ss%3Aw0rd / app:p%40ss%3Aw0rd@db / user app at db.internal"
    cleaned = scrub(text)
    for secret in (url, "p@ss:w0rd", "p%40ss%3Aw0rd"):
        assert secret not in cleaned
    assert "user app" in cleaned  # a user name alone is not the secret
    assert "db.internal" in cleaned


def test_sql_source_repr_and_name_never_show_the_url() -> None:
    url = "postgresql+psycopg://app:hunter2@db/shop"
    src = SqlSource.from_secret(MappingSecrets({"db": {"url": url}}), "db", "url", "SELECT id FROM c")
    assert "hunter2" not in repr(src) and "hunter2" not in src.name
    assert "hunter2" not in repr(MappingSecrets({"db": {"url": url}}))


def test_a_reader_that_raises_missing_reference_is_an_error_record() -> None:
    def getter() -> str:
        raise MissingReference("Secret 'db' not found", "Secret")

    recs = list(SqlSource(getter, "SELECT 1").records())
    assert [(r.where, r.error) for r in recs] == [("Secret", "Secret 'db' not found")]
