"""The one interface every customer source implements.

A source yields ``RawRecord(where, value, error)`` one at a time, in source order, never holding
the whole list. ``where`` names the record's place the way a user finds it: ``line 12`` (the line a
record starts on in JSON Lines, a JSON array or CSV), ``row 12`` (SQL), ``item 3`` (``inline``,
0-based like the YAML list). ``value`` is the parsed record (a JSON object, as a ``dict``) or
``None`` when ``error`` says why that record could not be read.

A source never raises for bad content: a problem that stops it (an unreadable object, a broken JSON
array, a failing query, a missing Secret) is its last ``RawRecord``, with ``where`` naming the
line or the cause (``object``, ``Secret``, ``connection``, ``query``). So the validator
(``webrelease.copier.customers``) reports every problem of a list the same way: first 20, then a
count. Messages never carry secrets.

``RawRecord`` and ``CustomerSource`` have exactly the shape ``webrelease.copier.customers`` uses.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

#: One record (a JSON Lines line, a JSON array element, a CSV row) may be at most this large.
MAX_RECORD_BYTES = 1024 * 1024
#: Bytes read from an object per request / per read call.
READ_CHUNK_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class RawRecord:
    """One entry of a source before validation. ``where`` names its place (``line 12``, ``item 3``)."""

    where: str
    value: Any = None
    error: str | None = None


class CustomerSource(Protocol):
    """Where a customer list comes from."""

    @property
    def name(self) -> str:
        """A human name for messages (a URL, ``spec.customers.inline``); never contains secrets."""
        ...

    def records(self) -> Iterator[RawRecord]: ...


class SourceError(Exception):
    """Internal: the source cannot be read any further; becomes the source's last ``RawRecord``."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where
        self.message = message

    def record(self) -> RawRecord:
        return RawRecord(self.where, error=self.message)


def at_line(n: int) -> str:
    return f"line {n}"


def type_name(value: Any) -> str:
    """The JSON name of a parsed value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
