"""Customers from a real PostgreSQL table freeze to the same snapshot, and make the same release, as
the same customers in a JSON Lines file; a bad query or a bad URL stops the run before anything
is written, and says why without the URL."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness.customer_lists import as_jsonl, load_table, make_customers, release_from
from tests.harness.postgres import PostgresServer
from webrelease.copier.customers import CustomerListError
from webrelease.copier.snapshot import SNAPSHOT_NAME
from webrelease.copier.snapshot.freeze import freeze_snapshot
from webrelease.copier.sources import MappingSecrets, SqlSource, TextSource, open_source
from webrelease.copier.spec import Customers
from webrelease.copier.storage import LocalStore, parse_url

pytestmark = pytest.mark.database

N = 1000
QUERY = 'SELECT id, name, plan, domain, "apiUrl", note FROM customers'


@pytest.fixture
def shop(postgres_url: str) -> str:
    load_table(postgres_url, make_customers(N, seed=11))
    return postgres_url


def test_a_table_freezes_to_the_same_bytes_as_the_same_customers_in_a_file(
    shop: str, postgres: PostgresServer, tmp_path: Path
) -> None:
    store = LocalStore()
    from_file = parse_url((tmp_path / "file").as_uri())
    from_sql = parse_url((tmp_path / "sql").as_uri())
    file_ref = freeze_snapshot(TextSource(as_jsonl(make_customers(N)), "customers.jsonl"), store, from_file)
    spec = Customers.model_validate({"sql": {"secretRef": {"name": "shop-db", "key": "url"}, "query": QUERY}})
    source = open_source(spec, secrets=MappingSecrets({"shop-db": {"url": shop}}))
    sql_ref = freeze_snapshot(source, store, from_sql)
    assert (sql_ref.sha256, sql_ref.count) == (file_ref.sha256, N)
    assert store.get(from_sql, SNAPSHOT_NAME) == store.get(from_file, SNAPSHOT_NAME)
    # what a run writes holds nothing of the database's URL
    for path in (tmp_path / "sql").rglob("*"):
        if path.is_file():
            assert postgres.password.encode() not in path.read_bytes(), path


def test_a_table_makes_the_same_release_as_the_same_customers_in_a_file(shop: str, tmp_path: Path) -> None:
    from_file = release_from(TextSource(as_jsonl(make_customers(N)), "customers.jsonl"), tmp_path, "file")
    from_sql = release_from(SqlSource.from_url(shop, QUERY), tmp_path, "sql")
    assert len(from_file) == 3 * N
    assert from_sql == from_file


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (
            "SELECT id FROM customerz",
            'query: the query failed: relation "customerz" does not exist (SQLSTATE 42P01)',
        ),
        ("SELECT name FROM customers", "query: the query returns no 'id' column"),
        (
            "SELECT upper(id) AS id FROM customers ORDER BY id LIMIT 3",
            "row 1: id 'CUST-0000000' is not a valid",
        ),
        (
            "SELECT id FROM customers UNION ALL SELECT id FROM customers",
            "1000 problem(s): row 1001: duplicate id 'cust-",
        ),
    ],
)
def test_a_bad_query_stops_the_snapshot(shop: str, tmp_path: Path, query: str, expected: str) -> None:
    folder = tmp_path / "run"
    with pytest.raises(CustomerListError) as info:
        freeze_snapshot(SqlSource.from_url(shop, query), LocalStore(), parse_url(folder.as_uri()))
    assert expected in str(info.value)
    assert not folder.exists()


def test_a_wrong_password_stops_the_snapshot_without_showing_the_url(
    shop: str, postgres: PostgresServer, tmp_path: Path
) -> None:
    wrong = shop.replace(postgres.password, "not-" + postgres.password)
    secrets = MappingSecrets({"shop-db": {"url": wrong}})
    folder = tmp_path / "run"
    with pytest.raises(CustomerListError) as info:
        freeze_snapshot(
            SqlSource.from_secret(secrets, "shop-db", "url", QUERY), LocalStore(), parse_url(folder.as_uri())
        )
    message = str(info.value)
    assert message.startswith(
        "customer list customers.sql (Secret 'shop-db' key 'url'): 1 problem(s): connection:"
    )
    assert "password authentication failed" in message
    assert postgres.password not in message and wrong not in message
    assert not folder.exists()
