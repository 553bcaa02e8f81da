"""Customer sources: where a customer list comes from, read once and streamed (docs/customers.md).

``open_source(spec.customers, ...)`` returns a ``CustomerSource`` whose ``records()`` yields
``RawRecord(where, value, error)`` one at a time, never holding the whole list:

- ``url``: ``ObjectSource`` — JSON Lines, a JSON array or CSV with a header at ``file://``/``s3://``,
  read in ranges, gzip detected by its magic bytes (and required by a ``.gz`` name), UTF-8 with or
  without a BOM;
- ``configMapRef``: the value the caller's ``ConfigMapReader`` returns, parsed by ``TextSource``
  (the operator reads the ConfigMap; the parsing is here);
- ``inline``: ``InlineSource``, capped at ``spec.INLINE_CUSTOMERS_MAX`` (the cap is in the error);
- ``sql``: ``SqlSource`` — a SQLAlchemy URL from a Secret key (via the caller's ``SecretReader``)
  and a query, fetched with a server-side cursor; the URL never appears in any message.

Validation (ids, duplicates, fields the target needs) is ``webrelease.copier.customers``; the
bounded-memory validate + sort + snapshot for large lists is ``webrelease.copier.snapshot.freeze``.
"""

from __future__ import annotations

from collections.abc import Iterator

from webrelease.copier.sources.base import (
    MAX_RECORD_BYTES,
    CustomerSource,
    RawRecord,
    SourceError,
)
from webrelease.copier.sources.inline import InlineSource
from webrelease.copier.sources.objects import ObjectSource, TextSource
from webrelease.copier.sources.refs import (
    ConfigMapReader,
    DirectorySecrets,
    MappingSecrets,
    MissingReference,
    SecretReader,
    missing_config_map,
    missing_secret,
)
from webrelease.copier.sources.sql import SqlSource
from webrelease.copier.spec import Customers
from webrelease.copier.storage.base import Location, Store, StoreFor

__all__ = [
    "MAX_RECORD_BYTES",
    "ConfigMapReader",
    "ConfigMapSource",
    "CustomerSource",
    "DirectorySecrets",
    "InlineSource",
    "MappingSecrets",
    "MissingReference",
    "ObjectSource",
    "RawRecord",
    "SecretReader",
    "SourceError",
    "SqlSource",
    "StoreFor",
    "TextSource",
    "missing_config_map",
    "missing_secret",
    "open_source",
]


def open_source(
    customers: Customers,
    *,
    store_for: StoreFor | None = None,
    secrets: SecretReader | None = None,
    config_maps: ConfigMapReader | None = None,
) -> CustomerSource:
    """The source ``customers`` names. Nothing is read until ``records()`` is iterated.

    ``store_for`` gives the store for a ``url``'s location; ``secrets`` resolves ``sql.secretRef``;
    ``config_maps`` resolves ``configMapRef``. Every problem, a missing reader included, comes out
    of ``records()`` as an error record.
    """
    if customers.url is not None:
        return ObjectSource(customers.url, store_for or _no_store, customers.format)
    if customers.inline is not None:
        return InlineSource(customers.inline)
    if customers.sql is not None:
        ref = customers.sql.secret_ref
        return SqlSource.from_secret(secrets or _NoSecrets(), ref.name, ref.key, customers.sql.query)
    if customers.config_map_ref is not None:
        cm = customers.config_map_ref
        return ConfigMapSource(config_maps or _NoConfigMaps(), cm.name, cm.key, customers.format)
    raise ValueError("customers names no source")  # the spec model guarantees exactly one


class ConfigMapSource:
    """A ConfigMap key's value as a customer list, fetched when read (so a missing one is an error record)."""

    def __init__(self, reader: ConfigMapReader, config_map: str, key: str, fmt: str = "auto") -> None:
        self._reader, self._config_map, self._key, self._format = reader, config_map, key, fmt
        self.name = f"ConfigMap {config_map!r} key {key!r}"

    def records(self) -> Iterator[RawRecord]:
        try:
            value = self._reader.config_map_value(self._config_map, self._key)
        except SourceError as exc:
            yield exc.record()
            return
        yield from TextSource(value, self.name, key=self._key, format=self._format).records()


def _no_store(loc: Location) -> Store:
    raise MissingReference("no object store configured to read customers.url", "object")


class _NoSecrets:
    def secret_value(self, name: str, key: str) -> str:
        raise MissingReference(f"Secret {name!r} cannot be read here (no Secret reader configured)", "Secret")


class _NoConfigMaps:
    def config_map_value(self, name: str, key: str) -> str | bytes:
        raise MissingReference(
            f"ConfigMap {name!r} cannot be read here (no ConfigMap reader configured)", "ConfigMap"
        )
