"""pytest fixtures for the database tier: a real PostgreSQL server (tests/harness/postgres.py).

- ``postgres`` (session): one running ``PostgresServer``; ``.url()`` is a SQLAlchemy URL,
  ``.connect()`` a psycopg connection (autocommit), ``.new_database()`` a fresh database's URL.
- ``postgres_url`` (function): the URL of a fresh, empty database for one test.

A failing test shows the tail of the server's log (printed at teardown: pytest shows captured
output of failing tests only).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness.postgres import PostgresServer, running_postgres


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    with running_postgres() as server:
        yield server


@pytest.fixture
def postgres_url(postgres: PostgresServer) -> Iterator[str]:
    yield postgres.new_database()
    tail = "\n".join(postgres.log().splitlines()[-40:])
    print(f"--- postgres log (last lines) ---\n{tail}")
