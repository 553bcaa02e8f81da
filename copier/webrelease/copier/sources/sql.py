"""``customers.sql``: rows of a query on a relational database, streamed with a server-side cursor.

The SQLAlchemy URL comes from a Secret key and is a secret as a whole (it usually holds a
password): it is read only when the source is read, is never stored where ``repr`` could show it,
and every message this module produces is scrubbed of it, of its password and of its
``user:password`` part — including driver errors, which are reduced to their own first line and
SQLSTATE (never SQLAlchemy's text, which can quote the statement and parameters) and raised
outside of any ``except`` block so that no traceback chains back to them.

Rows are fetched ``batch_size`` at a time (``stream_results`` + ``yield_per``: a server-side
cursor on PostgreSQL), in a read-only transaction on PostgreSQL, with a connect timeout. The query
is sent to the driver as written (no ``:name`` parameter parsing). Column values become JSON values
(``webrelease.copier.sources.values``); the query must return an ``id`` column.

Drivers: PostgreSQL (``postgresql+psycopg://``) comes with the ``sql`` extra; others are
SQLAlchemy dialects plus their driver package (``mysql+pymysql://`` needs ``pymysql``, …).
"""

from __future__ import annotations

import contextlib
import re
import urllib.parse
from collections.abc import Callable, Generator, Iterator
from typing import Any

from webrelease.copier.sources.base import RawRecord, SourceError
from webrelease.copier.sources.refs import SecretReader
from webrelease.copier.sources.values import ValueProblem, to_json_record

DEFAULT_BATCH_SIZE = 1000
DEFAULT_CONNECT_TIMEOUT = 15
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+._-]*)://")
_USERINFO_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+._-]*://([^@/?#]*)@")


class Scrubber:
    """Removes a URL and its credentials from text."""

    def __init__(self, url: str) -> None:
        secrets = {url}
        m = _USERINFO_RE.match(url)
        if m:
            userinfo = m.group(1)
            secrets.add(userinfo)
            _user, sep, password = userinfo.partition(":")
            if sep and password:
                secrets.update({password, urllib.parse.unquote(password), urllib.parse.quote(password)})
        try:
            from sqlalchemy.engine import make_url  # noqa: PLC0415 (optional extra `sql`)

            parsed = make_url(url)
            if parsed.password:
                secrets.add(str(parsed.password))
            secrets.add(parsed.render_as_string(hide_password=False))
        except Exception:  # noqa: S110 (an unparsable URL: the raw forms above are all we have)
            pass
        # longest first, so that the URL goes before its parts; ignore trivially short strings
        self._secrets = sorted((s for s in secrets if len(s) >= 3), key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


def _scheme(url: str) -> str:
    m = _SCHEME_RE.match(url)
    return m.group(1) if m else "?"


class SqlSource:
    """Rows of ``query`` on the database at a SQLAlchemy URL obtained from ``url_getter`` when read.

    A problem ends the records with one error record whose ``where`` names the cause: ``Secret``
    (the URL could not be read), ``url`` (not a usable URL, or its driver is missing),
    ``connection``, ``query`` (it failed, or returns no ``id``), or ``row N`` (failed mid-way).
    """

    def __init__(
        self,
        url_getter: Callable[[], str],
        query: str,
        *,
        name: str = "customers.sql",
        batch_size: int = DEFAULT_BATCH_SIZE,
        connect_timeout: int = DEFAULT_CONNECT_TIMEOUT,
    ) -> None:
        self._url_getter = url_getter
        self.query = query
        self.name = name
        self.batch_size = batch_size
        self.connect_timeout = connect_timeout

    @classmethod
    def from_secret(
        cls, secrets: SecretReader, secret_name: str, key: str, query: str, **kwargs: Any
    ) -> SqlSource:
        name = f"customers.sql (Secret {secret_name!r} key {key!r})"
        return cls(lambda: secrets.secret_value(secret_name, key), query, name=name, **kwargs)

    @classmethod
    def from_url(cls, url: str, query: str, **kwargs: Any) -> SqlSource:
        return cls(lambda: url, query, **kwargs)

    def __repr__(self) -> str:
        return f"SqlSource({self.name!r}, query={self.query!r})"

    def records(self) -> Iterator[RawRecord]:
        try:
            url = self._url_getter()
        except SourceError as exc:
            yield exc.record()
            return
        scrub = Scrubber(url)
        failure: tuple[str, str] | None = None
        rows = self._rows(url, scrub)
        try:
            for record in rows:
                try:
                    yield record
                except GeneratorExit:
                    # the consumer stopped early: close the cursor and the connection, quietly
                    with contextlib.suppress(Exception):
                        rows.close()
                    raise
        except _Failed as exc:
            failure = (exc.where, exc.message)
        except ImportError as exc:
            failure = (
                "url",
                f"the database driver for {_scheme(url)!r} is not installed ({exc.name or exc})",
            )
        except Exception as exc:
            failure = ("query", f"unexpected error: {_driver_message(exc)}")
        if failure is not None:
            # built here, outside the except blocks: nothing chains back to the driver's exception
            yield RawRecord(failure[0], error=scrub(failure[1]))

    def _rows(self, url: str, scrub: Callable[[str], str]) -> Generator[RawRecord]:
        from sqlalchemy import create_engine  # noqa: PLC0415 (optional extra `sql`)
        from sqlalchemy.exc import ArgumentError, NoSuchModuleError  # noqa: PLC0415
        from sqlalchemy.pool import NullPool  # noqa: PLC0415

        scheme = _scheme(url)
        if scheme == "?":
            raise _Failed(
                "url", "the Secret's value is not a SQLAlchemy URL (dialect+driver://user:password@host/db)"
            )
        connect_args: dict[str, Any] = {}
        if scheme.startswith("postgresql"):
            connect_args["connect_timeout"] = self.connect_timeout
        try:
            engine = create_engine(url, poolclass=NullPool, connect_args=connect_args)
        except NoSuchModuleError:
            raise _Failed(
                "url", f"no SQLAlchemy dialect {scheme!r}: check the URL's scheme (e.g. postgresql+psycopg)"
            ) from None
        except (ArgumentError, ValueError, TypeError):
            raise _Failed(
                "url",
                f"the Secret's value is not a valid SQLAlchemy URL (scheme {scheme!r}); "
                "expected dialect+driver://user:password@host:port/database",
            ) from None
        try:
            try:
                conn = engine.connect()
            except Exception as exc:
                raise _Failed("connection", f"cannot connect: {_driver_message(exc)}") from None
            with conn:
                # no_parameters: the query goes to the driver as written ('%' and ':x' are not placeholders)
                options: dict[str, Any] = {
                    "stream_results": True,
                    "yield_per": self.batch_size,
                    "no_parameters": True,
                }
                if engine.dialect.name == "postgresql":
                    options["postgresql_readonly"] = True
                try:
                    result = (
                        conn.execution_options(**options)
                        .exec_driver_sql(self.query)
                        .yield_per(self.batch_size)
                    )
                except Exception as exc:
                    raise _Failed("query", f"the query failed: {_driver_message(exc)}") from None
                if not result.returns_rows:
                    raise _Failed(
                        "query", "the query returns no rows (it must be a SELECT returning an id column)"
                    )
                columns = list(result.keys())
                if "id" not in columns:
                    shown = ", ".join(repr(c) for c in columns[:20])
                    raise _Failed(
                        "query",
                        f"the query returns no 'id' column (columns: {shown}); alias one: SELECT x AS id",
                    )
                twice = sorted({c for c in columns if columns.count(c) > 1})
                if twice:
                    raise _Failed(
                        "query", f"the query returns column {twice[0]!r} twice; alias the columns apart"
                    )
                yield from self._fetch(result, scrub)
        finally:
            engine.dispose()

    def _fetch(self, result: Any, scrub: Callable[[str], str]) -> Iterator[RawRecord]:
        row_number = 0
        rows = iter(result)
        while True:
            try:
                row = next(rows)
            except StopIteration:
                return
            except Exception as exc:
                raise _Failed(f"row {row_number + 1}", f"the query failed: {_driver_message(exc)}") from None
            row_number += 1
            try:
                record = to_json_record(row._mapping)
            except ValueProblem as exc:
                yield RawRecord(f"row {row_number}", error=scrub(str(exc)))
                continue
            yield RawRecord(f"row {row_number}", record)


class _Failed(Exception):
    def __init__(self, where: str, message: str) -> None:
        super().__init__(message)
        self.where = where
        self.message = message


def _driver_message(exc: BaseException) -> str:
    """The driver's own first line and SQLSTATE; never SQLAlchemy's text (it quotes the statement)."""
    from sqlalchemy.exc import DBAPIError  # noqa: PLC0415 (optional extra `sql`)

    orig: BaseException = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    lines = str(orig).strip().splitlines()
    first = lines[0] if lines and not isinstance(orig, DBAPIError) else type(orig).__name__
    sqlstate = getattr(orig, "sqlstate", None)
    return f"{first} (SQLSTATE {sqlstate})" if sqlstate else first
