"""``customers.inline``: a small list written in the release itself, capped.

Values YAML gives beyond JSON (dates, timestamps) become ISO 8601 text, as from a database.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from webrelease.copier.sources.base import RawRecord, type_name
from webrelease.copier.sources.values import ValueProblem, to_json_record
from webrelease.copier.spec import INLINE_CUSTOMERS_MAX


@dataclass(frozen=True)
class InlineSource:
    items: Sequence[Any]
    cap: int = INLINE_CUSTOMERS_MAX
    name: str = "spec.customers.inline"

    def records(self) -> Iterator[RawRecord]:
        if len(self.items) > self.cap:
            yield RawRecord(
                "customers.inline",
                error=f"{len(self.items)} customers, more than the inline cap of {self.cap}; put larger "
                "lists in an object (customers.url), a ConfigMap (customers.configMapRef) or a database "
                "(customers.sql)",
            )
            return
        for n, item in enumerate(self.items):
            where = f"item {n}"
            if not isinstance(item, dict):
                yield RawRecord(where, error=f"expected an object, got {type_name(item)}")
                continue
            try:
                yield RawRecord(where, to_json_record(item))
            except ValueProblem as exc:
                yield RawRecord(where, error=str(exc))
