"""The SQL customer source against a real PostgreSQL server (tests/harness/postgres.py)."""

from __future__ import annotations

import logging
import time
from collections.abc import Generator

import psycopg
import pytest

from tests.harness.postgres import PostgresServer
from webrelease.copier.sources import MappingSecrets, RawRecord, SqlSource, open_source
from webrelease.copier.spec import Customers

pytestmark = pytest.mark.database


def sql_records(url: str, query: str, **kwargs: object) -> list[RawRecord]:
    return list(SqlSource.from_url(url, query, **kwargs).records())


def run_sql(url: str, *statements: str) -> None:
    """Run statements on the database at a SQLAlchemy ``url`` (set-up only)."""
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement.encode())


@pytest.fixture
def shop(postgres_url: str) -> str:
    run_sql(
        postgres_url,
        """CREATE TABLE customers (
            id text PRIMARY KEY, name text, plan text, price numeric(8,2), seats integer,
            since timestamptz, settings jsonb, ref uuid, active boolean, note text)""",
        """INSERT INTO customers
           SELECT 'c' || lpad(g::text, 4, '0'), 'Customer ' || g,
                  CASE WHEN g % 2 = 0 THEN 'gold' ELSE 'free' END,
                  g / 4.0, g, timestamptz '2024-01-01 00:00:00+00' + g * interval '1 hour',
                  jsonb_build_object('theme', 'dark', 'flags', jsonb_build_array(g, true)),
                  ('00000000-0000-0000-0000-' || lpad(g::text, 12, '0'))::uuid, g % 3 = 0, NULL
           FROM generate_series(1, 1000) g""",
    )
    return postgres_url


def test_rows_become_records_with_row_numbers_and_json_values(shop: str) -> None:
    recs = sql_records(shop, "SELECT * FROM customers ORDER BY id")
    assert len(recs) == 1000
    assert all(r.error is None for r in recs)
    assert [r.where for r in recs[:3]] == ["row 1", "row 2", "row 3"]
    assert recs[1].value == {
        "id": "c0002",
        "name": "Customer 2",
        "plan": "gold",
        "price": "0.50",
        "seats": 2,
        "since": "2024-01-01T02:00:00+00:00",
        "settings": {"theme": "dark", "flags": [2, True]},
        "ref": "00000000-0000-0000-0000-000000000002",
        "active": False,
        "note": None,
    }


def test_the_query_goes_to_the_database_as_written(shop: str) -> None:
    query = (
        "SELECT id, '100%' AS pct, 'a:b :name' AS colons, seats::text AS seats FROM customers "
        "WHERE name LIKE 'Customer 1%' AND plan <> ':plan' ORDER BY id LIMIT 2"
    )
    recs = sql_records(shop, query)
    assert [r.value for r in recs] == [
        {"id": "c0001", "pct": "100%", "colons": "a:b :name", "seats": "1"},
        {"id": "c0010", "pct": "100%", "colons": "a:b :name", "seats": "10"},
    ]


def test_rows_are_fetched_in_batches_from_a_server_side_cursor(shop: str, postgres: PostgresServer) -> None:
    database = shop.rsplit("/", 1)[1]
    run_sql(shop, f"ALTER DATABASE {database} SET log_statement = 'all'")
    log_mark = len(postgres.log())
    records = SqlSource.from_url(shop, "SELECT id FROM customers ORDER BY id", batch_size=50).records()
    first = next(records)
    assert first.value == {"id": "c0001"}
    with postgres.connect(database) as conn:
        rows = conn.execute(
            "SELECT query, state FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid() AND state <> 'idle'",
            (database,),
        ).fetchall()
    # the source's session sits in an open transaction, between FETCHes from its cursor (the
    # set-up connections, closed, may linger a moment as 'idle')
    assert [(str(q).split(" FROM ")[0], st) for q, st in rows] == [("FETCH FORWARD 1", "idle in transaction")]
    rest = list(records)
    assert len(rest) == 999 and rest[-1].where == "row 1000"
    statements = [
        line.split("statement: ", 1)[1]
        for line in postgres.log()[log_mark:].splitlines()
        if "statement: " in line
    ]
    assert "BEGIN READ ONLY" in statements
    fetches = [int(s.split()[2]) for s in statements if s.startswith("FETCH FORWARD")]
    assert max(fetches) == 50
    assert len(fetches) >= 1000 // 50


def test_the_source_only_reads(shop: str) -> None:
    run_sql(shop, "CREATE SEQUENCE counter")
    recs = sql_records(shop, "SELECT 'c' || nextval('counter') AS id")
    assert [(r.where, r.error) for r in recs] == [
        ("query", "the query failed: cannot execute nextval() in a read-only transaction (SQLSTATE 25006)")
    ]
    recs = sql_records(shop, "DELETE FROM customers RETURNING id")
    assert recs[-1].where == "query" and recs[-1].error is not None
    assert len(sql_records(shop, "SELECT id FROM customers")) == 1000


@pytest.mark.parametrize(
    ("query", "where", "message"),
    [
        (
            "SELECT id FROM customerz",
            "query",
            'the query failed: relation "customerz" does not exist (SQLSTATE 42P01)',
        ),
        (
            "SELEC id FROM customers",
            "query",
            'the query failed: syntax error at or near "SELEC" (SQLSTATE 42601)',
        ),
        (
            "SELECT name, plan FROM customers",
            "query",
            "the query returns no 'id' column (columns: 'name', 'plan'); alias one: SELECT x AS id",
        ),
        (
            "SELECT id, name AS plan, plan FROM customers",
            "query",
            "the query returns column 'plan' twice; alias the columns apart",
        ),
        (
            "SELECT id, convert_to(name, 'UTF8') AS raw FROM customers WHERE id = 'c0001'",
            "row 1",
            "binary data",
        ),
    ],
)
def test_a_bad_query_is_named(shop: str, query: str, where: str, message: str) -> None:
    recs = sql_records(shop, query)
    assert recs[-1].where == where
    assert recs[-1].error is not None and message in recs[-1].error


def test_a_query_that_fails_midway_names_the_row(shop: str) -> None:
    query = "SELECT id, 10 / (600 - seats) AS x FROM customers ORDER BY id"
    recs = sql_records(shop, query, batch_size=100)
    assert recs[-1].error == "the query failed: division by zero (SQLSTATE 22012)"
    good = [r for r in recs if r.error is None]
    assert recs[-1].where == f"row {len(good) + 1}"
    assert len(good) < 600


def test_the_url_never_appears_in_messages_or_logs(
    shop: str, postgres: PostgresServer, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    password = postgres.password
    wrong = shop.replace(password, "Wr0ng-" + password[::-1])
    refused = shop.replace(f":{postgres.port}/", ":1/")
    cases = {
        "wrong password": (wrong, "SELECT id FROM customers"),
        "refused": (refused, "SELECT id FROM customers"),
        "bad query": (shop, "SELECT id FROM nowhere WHERE x = 'p'"),
        "bad port": (shop.replace(f":{postgres.port}/", ":port/"), "SELECT 1 AS id"),
        "unknown dialect": (shop.replace("postgresql+psycopg", "postgresqlx"), "SELECT 1 AS id"),
        "missing driver": (shop.replace("postgresql+psycopg", "mysql+pymysql"), "SELECT 1 AS id"),
        "not a url": (f"host=127.0.0.1 password={password}", "SELECT 1 AS id"),
    }
    caplog.set_level(logging.DEBUG)
    messages: dict[str, str] = {}
    for name, (url, query) in cases.items():
        recs = list(SqlSource.from_url(url, query, connect_timeout=5).records())
        assert len(recs) == 1 and recs[0].error is not None, name
        messages[name] = f"{recs[0].where}: {recs[0].error}"
        for secret in (
            url,
            password,
            wrong.split("@", maxsplit=1)[0],
            shop.split("@", maxsplit=1)[0],
            "Wr0ng-",
        ):
            assert secret not in messages[name], name
    assert messages["wrong password"].startswith("connection: cannot connect:")
    assert "password authentication failed" in messages["wrong password"]
    assert messages["refused"].startswith("connection: cannot connect:")
    assert messages["bad query"].startswith("query: the query failed: relation")
    assert messages["bad port"].startswith("url: the Secret's value is not a valid SQLAlchemy URL")
    assert messages["unknown dialect"].startswith("url: no SQLAlchemy dialect 'postgresqlx'")
    assert messages["missing driver"].startswith(
        "url: the database driver for 'mysql+pymysql' is not installed"
    )
    assert messages["not a url"].startswith("url: the Secret's value is not a SQLAlchemy URL")
    out, err = capfd.readouterr()
    logged = "\n".join(r.getMessage() for r in caplog.records) + out + err
    assert password not in logged
    assert "Wr0ng-" not in logged


def test_sql_from_a_secret_through_open_source(shop: str) -> None:
    spec = Customers.model_validate(
        {"sql": {"secretRef": {"name": "shop-db", "key": "url"}, "query": "SELECT id, plan FROM customers"}}
    )
    source = open_source(spec, secrets=MappingSecrets({"shop-db": {"url": shop}}))
    assert source.name == "customers.sql (Secret 'shop-db' key 'url')"
    recs = list(source.records())
    assert len(recs) == 1000 and all(r.error is None for r in recs)
    missing = list(open_source(spec, secrets=MappingSecrets({"other": {"url": shop}})).records())
    assert [(r.where, r.error) for r in missing] == [("Secret", "Secret 'shop-db' not found")]


def test_abandoning_the_records_closes_the_connection(shop: str, postgres: PostgresServer) -> None:
    records = SqlSource.from_url(shop, "SELECT id FROM customers", batch_size=10).records()
    assert isinstance(records, Generator)
    next(records)
    database = shop.rsplit("/", 1)[1]
    assert sessions(postgres, database) == 1
    records.close()
    # the server ends the backend shortly after the client goes: poll with a deadline
    deadline = time.monotonic() + 10
    while sessions(postgres, database) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sessions(postgres, database) == 0


def sessions(postgres: PostgresServer, database: str) -> int:
    """Sessions on ``database`` doing something (closed set-up connections may linger as 'idle')."""
    with postgres.connect(database) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid() AND state <> 'idle'",
            (database,),
        ).fetchone()
    assert row is not None
    return int(str(row[0]))
