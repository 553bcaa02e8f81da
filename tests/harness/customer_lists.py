"""Customer lists for tests and benches: the same customers in every format, and a corpus of bad lists.

``make_customers(n)`` gives ``n`` customers whose fields exercise every format's quoting (commas,
quotes, newlines, non-ASCII), all values strings so that CSV (strings only) and SQL ``text``
columns carry exactly the same records as JSON. ``encodings(rows)`` gives them as JSON Lines, a JSON
array, CSV (CRLF, like Excel), each gzip'd too, with a UTF-8 BOM variant, in a shuffled order so
that sorting matters. ``load_table`` puts them in a PostgreSQL table.

``release_from(source, tmp, name)`` freezes a source and runs every shard of it on local folders,
returning every site object, so tests compare whole releases.

``BAD_LISTS`` is the corpus of bad lists: each names a source and a fragment the error must
contain (the line, or the cause).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from webrelease.copier.shard import ShardJob, run_shard
from webrelease.copier.snapshot import shard_count
from webrelease.copier.snapshot.freeze import freeze_snapshot
from webrelease.copier.sources import (
    ConfigMapSource,
    CustomerSource,
    InlineSource,
    MappingSecrets,
    SqlSource,
    TextSource,
    missing_config_map,
)
from webrelease.copier.spec import INLINE_CUSTOMERS_MAX, WebReleaseSpec, parse_spec
from webrelease.copier.storage import parse_url
from webrelease.copier.storage.storeset import StoreSet

Row = dict[str, str]
FIELDS = ("id", "name", "plan", "domain", "apiUrl", "note")
PLANS = ("starter", "team", "enterprise")


def make_customers(n: int, seed: int = 7) -> list[Row]:
    """``n`` customers, in a shuffled order."""
    rows = [
        {
            "id": f"cust-{i:07d}",
            "name": f'Customer {i}, "Ltd" — Zürich ✓' if i % 7 == 0 else f"Customer {i}",
            "plan": PLANS[i % 3],
            "domain": f"c{i}.example.com",
            "apiUrl": f"https://api.example.com/v1/{i}",
            "note": "two\nlines" if i % 11 == 0 else "",
        }
        for i in range(n)
    ]
    random.Random(seed).shuffle(rows)
    return rows


def as_jsonl(rows: Iterable[Row]) -> bytes:
    return b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in rows)


def iter_jsonl(rows: Iterable[Row]) -> Iterator[bytes]:
    for r in rows:
        yield json.dumps(r, ensure_ascii=False).encode() + b"\n"


def as_json_array(rows: Sequence[Row]) -> bytes:
    return json.dumps(list(rows), indent=2, ensure_ascii=False).encode() + b"\n"


def as_csv(rows: Sequence[Row]) -> bytes:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=FIELDS)  # CRLF line ends, quoting where needed
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue().encode()


def encodings(rows: Sequence[Row]) -> dict[str, bytes]:
    """File name → bytes: the same customers in every format an object or a ConfigMap can hold."""
    jsonl, array, table = as_jsonl(rows), as_json_array(rows), as_csv(rows)
    return {
        "customers.jsonl": jsonl,
        "customers.json": array,
        "customers.csv": table,
        "customers-bom.csv": b"\xef\xbb\xbf" + table,
        "customers.jsonl.gz": gzip.compress(jsonl, mtime=0),
        "customers.json.gz": gzip.compress(array, mtime=0),
        "customers.csv.gz": gzip.compress(table, mtime=0),
    }


def load_table(conn_url: str, rows: Iterable[Row], table: str = "customers") -> None:
    """``rows`` into a new table of text columns (COPY, streamed) at a SQLAlchemy/libpq URL."""
    url = conn_url.replace("postgresql+psycopg://", "postgresql://")
    columns = ", ".join(f'"{f}" text' for f in FIELDS)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} ({columns}, PRIMARY KEY (id))".encode())
        names = ", ".join(f'"{f}"' for f in FIELDS)
        with conn.cursor() as cur, cur.copy(f"COPY {table} ({names}) FROM STDIN".encode()) as copy:
            for r in rows:
                copy.write_row([r[f] for f in FIELDS])


# --- a release from a list, as the Job's pods make it --------------------------------------------------


def release_spec(tmp: Path, sites: Path) -> WebReleaseSpec:
    build = tmp / "build"
    if not build.exists():
        (build / "assets").mkdir(parents=True)
        (build / "index.html").write_text("<title>{{ name|e }}</title><p>{{ plan }} {{ note|e }}</p>\n")
        (build / "config.js").write_text("window.API = {{ apiUrl|json }};\n")
        (build / "assets" / "app.js").write_text("console.log('app')\n")
    return parse_spec(
        {
            "source": {"url": build.as_uri() + "/"},
            "target": {"url": sites.as_uri() + "/{id}/"},
            "customers": {"inline": [{"id": "unused"}]},
            "reports": {"url": (tmp / "reports").as_uri() + "/"},
            "templates": ["index.html", "config.js"],
            "sharding": {"customersPerShard": 250},
        }
    )


def release_from(source: CustomerSource, tmp: Path, name: str) -> dict[str, tuple[bytes, str | None]]:
    """Freeze ``source`` and run every shard of it as a Job pod would; every site object's bytes
    and content type, as the store serves them."""
    sites = tmp / "sites" / name
    spec = release_spec(tmp, sites)
    stores = StoreSet(spec.storage, max_in_flight=16)
    report = parse_url((tmp / "reports" / name).as_uri())
    ref = freeze_snapshot(source, stores(report), report, target_template=spec.target.url)
    size = spec.sharding.customers_per_shard
    for index in range(shard_count(ref.count, size)):
        result = run_shard(ShardJob(spec, "rel", ref.url, ref.sha256, index, size, report), stores)
        assert result.error is None and all(c.ok for c in result.customers)
    root = parse_url(sites.as_uri())
    store = stores(root)
    return {o.key: (store.get(root, o.key), store.head(root, o.key).content_type) for o in store.list(root)}


# --- the corpus of bad lists ------------------------------------------------------------------------


class InMemoryConfigMaps:
    """ConfigMaps answered from memory the way the operator's reader answers from the API."""

    def __init__(self, maps: dict[str, dict[str, str | bytes]]) -> None:
        self.maps = maps

    def config_map_value(self, name: str, key: str) -> str | bytes:
        if name not in self.maps:
            raise missing_config_map(name, key, None)
        if key not in self.maps[name]:
            raise missing_config_map(name, key, list(self.maps[name]))
        return self.maps[name][key]


@dataclass(frozen=True)
class BadList:
    name: str
    make: Callable[[], CustomerSource]
    expected: tuple[str, ...]
    target: str | None = None
    #: the problem is a template field the record lacks (found by ``freeze_snapshot`` with
    #: ``required_fields``; ``load_customers`` leaves it to the shard)
    needs_required_fields: bool = False
    tags: tuple[str, ...] = field(default=())


def text(data: str | bytes, key: str = "customers.jsonl", fmt: str = "auto") -> Callable[[], CustomerSource]:
    return lambda: TextSource(data, key, key=key, format=fmt)


def _many_bad_ids() -> bytes:
    return b"".join(b'{"id": "X%d"}\n' % i for i in range(45))


def _truncated_gzip() -> bytes:
    body = b"".join(
        b'{"id":"c%06d","pad":"%s"}\n' % (i, random.Random(i).randbytes(16).hex().encode())
        for i in range(3000)
    )
    packed = gzip.compress(body, mtime=0)
    return packed[: len(packed) // 2]


SITE = "s3://sites/{domain}/"
BAD_LISTS: list[BadList] = [
    BadList("malformed JSON line", text('{"id":"a"}\n{"id": "b",}\n'), ("line 2: malformed JSON",)),
    BadList("not an object", text('{"id":"a"}\n["b"]\n'), ("line 2: expected a JSON object, got an array",)),
    BadList("missing id", text('{"id":"a"}\n{"name":"no id"}\n'), ("line 2: missing id",)),
    BadList("id with capitals", text('{"id":"Acme"}\n'), ("line 1: id 'Acme' is not a valid customer id",)),
    BadList(
        "id too long", text('{"id":"' + "a" * 64 + '"}\n'), ("line 1: id 'aaaa", "is not a valid customer id")
    ),
    BadList(
        "id escapes a path", text('{"id":"../evil"}\n'), ("line 1: id '../evil' is not a valid customer id",)
    ),
    BadList("id is a number", text('{"id": 42}\n'), ("line 1: id must be a string, got int",)),
    BadList(
        "duplicate ids name both lines",
        text('{"id":"a"}\n{"id":"b"}\n{"id":"a"}\n'),
        ("line 3: duplicate id 'a' (first at line 1)",),
    ),
    BadList(
        "two customers, one site",
        text('{"id":"a","domain":"x.example"}\n{"id":"b","domain":"x.example"}\n'),
        ("line 2: customer 'b' has the same site s3://sites/x.example/ as 'a' (line 1)",),
        target=SITE,
    ),
    BadList(
        "a field the target uses is missing",
        text('{"id":"a","domain":"a.example"}\n{"id":"b"}\n{"id":"c","domain":""}\n'),
        ("line 2: customer 'b' has no 'domain'", "line 3: customer 'c' has no 'domain'"),
        target=SITE,
        needs_required_fields=True,
    ),
    BadList("empty object", text(b""), ("the list is empty",)),
    BadList("blank lines only", text("\n \n\r\n"), ("the list is empty",)),
    BadList("empty JSON array", text("[ ]", "customers.json"), ("the list is empty",)),
    BadList("CSV header only", text("id,name\r\n", "customers.csv"), ("the list is empty",)),
    BadList(
        "BOM in the middle (two files glued)",
        text(b'{"id":"a"}\n\xef\xbb\xbf{"id":"b"}\n'),
        ("line 2: a byte order mark (U+FEFF) in the middle of the list",),
    ),
    BadList(
        "UTF-16 with a BOM",
        text('{"id":"a"}\n'.encode("utf-16")),
        ("line 1: the list is encoded as UTF-16 little-endian",),
    ),
    BadList("UTF-16 without a BOM", text('{"id":"a"}\n'.encode("utf-16-le")), ("line 1: NUL bytes",)),
    BadList(
        "Latin-1 in JSON Lines",
        text(b'{"id":"a"}\n{"id":"b","name":"Caf\xe9"}\n'),
        ("line 2: not valid UTF-8 (byte 0xe9 at column 22)",),
    ),
    BadList(
        "Latin-1 in CSV",
        text(b"id,name\r\na,ok\r\nb,Caf\xe9\r\n", "customers.csv"),
        ("line 3: not valid UTF-8 (byte 0xe9 at column 6)",),
    ),
    BadList(
        "CSV quote never closed",
        text('id,name\r\na,ok\r\nb,"open\r\nc,x\r\n', "customers.csv"),
        ("line 3: a quoted field opened here is never closed",),
    ),
    BadList(
        "CSV stray quote",
        text('id,name\r\na,"x"y\r\n', "customers.csv"),
        ("line 2: CSV quoting: ',' expected after '\"'",),
    ),
    BadList(
        "CSV row with too many fields",
        text("id,name\r\na,b,c\r\n", "customers.csv"),
        ("line 2: 3 CSV fields, the header (line 1) has 2",),
    ),
    BadList(
        "CSV without an id column",
        text("name,plan\r\nx,y\r\n", "customers.csv"),
        ("line 1: the CSV header has no 'id' column",),
    ),
    BadList(
        "CSV with a column twice",
        text("id,name,name\r\na,b,c\r\n", "customers.csv"),
        ("line 1: the CSV header names column 'name' twice",),
    ),
    BadList(
        "JSON array with a trailing comma",
        text('[\n{"id":"a"},\n{"id":"b"},\n]\n', "customers.json"),
        ("line 4: a trailing comma before ']'",),
    ),
    BadList(
        "JSON array never closed",
        text('[\n{"id":"a"},\n{"id":"b"}\n', "customers.json"),
        ("line 4: the JSON array is not closed",),
    ),
    BadList(
        "JSON array of strings",
        text('["a",\n"b"]', "customers.json"),
        ("line 1: expected a JSON object, got a string", "line 2: expected a JSON object, got a string"),
    ),
    BadList("NaN", text('{"id":"a","score":NaN}\n'), ("line 1: malformed JSON: NaN is not valid JSON",)),
    BadList(
        "a line longer than 1 MiB",
        text(b'{"id":"a","x":"' + b"y" * (1024 * 1024) + b'"}\n'),
        ("line 1: longer than 1024 KiB",),
    ),
    BadList(
        "truncated gzip",
        text(_truncated_gzip(), "customers.jsonl.gz"),
        ("the gzip data is corrupt or truncated",),
    ),
    BadList(
        ".gz that is not gzip",
        text(b'{"id":"a"}\n', "customers.jsonl.gz"),
        ("line 1: the name ends in .gz but the content is not gzip-compressed",),
    ),
    BadList(
        "inline over the cap",
        lambda: InlineSource([{"id": f"c{i}"} for i in range(INLINE_CUSTOMERS_MAX + 1)]),
        (f"more than the inline cap of {INLINE_CUSTOMERS_MAX}",),
    ),
    BadList(
        "inline item that is not an object",
        lambda: InlineSource([{"id": "a"}, "b"]),
        ("item 1: expected an object, got a string",),
    ),
    BadList(
        "missing ConfigMap",
        lambda: ConfigMapSource(InMemoryConfigMaps({}), "shop", "customers.csv"),
        ("ConfigMap: ConfigMap 'shop' not found",),
    ),
    BadList(
        "ConfigMap without the key",
        lambda: ConfigMapSource(
            InMemoryConfigMaps({"shop": {"list.csv": "id\na\n"}}), "shop", "customers.csv"
        ),
        ("ConfigMap: ConfigMap 'shop' has no key 'customers.csv' (its keys: list.csv)",),
    ),
    BadList(
        "missing Secret",
        lambda: SqlSource.from_secret(MappingSecrets({}), "shop-db", "url", "SELECT id FROM customers"),
        ("Secret: Secret 'shop-db' not found",),
    ),
    BadList(
        "Secret without the key",
        lambda: SqlSource.from_secret(
            MappingSecrets({"shop-db": {"dsn": "x"}}), "shop-db", "url", "SELECT 1"
        ),
        ("Secret: Secret 'shop-db' has no key 'url' (its keys: dsn)",),
    ),
    BadList(
        "SQL URL that is not a URL",
        lambda: SqlSource.from_secret(MappingSecrets({"db": {"url": "hunter2"}}), "db", "url", "SELECT 1"),
        ("url: the Secret's value is not a SQLAlchemy URL",),
    ),
    BadList(
        "45 bad ids: the first 20, then a count",
        text(_many_bad_ids()),
        ("45 problem(s)", "line 1: id 'X0'", "line 20: id 'X19'", "... and 25 more"),
    ),
]
