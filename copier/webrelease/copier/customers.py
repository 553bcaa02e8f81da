"""Reading and validating a customer list (SPEC §2, §4 step 2).

A *source* yields raw records, each with the line (or position) it came from; :func:`load_customers`
validates them all, collects every problem (parse errors, missing or unsafe ids, duplicates, two
customers sharing a site) and either returns the list sorted by id or raises
:class:`CustomerListError` listing the first :data:`MAX_REPORTED_ERRORS` problems and how many
there were in all.

Sources here: an object in storage (JSON Lines, a JSON array, or CSV with a header row) and the
spec's ``inline`` list. Other sources (ConfigMap, SQL, gzip) implement the same two-member
:class:`CustomerSource` interface.
"""

from __future__ import annotations

import csv
import io
import json
import posixpath
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from webrelease.copier.sources import ConfigMapReader, SecretReader, open_source
from webrelease.copier.sources.base import CustomerSource, RawRecord
from webrelease.copier.spec import CUSTOMER_ID_RE, Customers
from webrelease.copier.storage.base import Location, NotFound, Store
from webrelease.copier.targets import TargetError, render_target

#: A customer: a JSON object with a string ``id``; every other field is the customer's own.
Record = dict[str, Any]
Format = Literal["auto", "jsonl", "json", "csv"]

#: How many problems an error message lists before saying "... and N more".
MAX_REPORTED_ERRORS: Final = 20

ID_RULE: Final = (
    "1 to 63 characters: lowercase letters, digits, '.', '_' or '-', "
    "starting and ending with a letter or digit"
)


class CustomerListError(ValueError):
    """A customer list that cannot be released; ``problems`` holds every problem found."""

    def __init__(self, source: str, problems: Sequence[str], total: int | None = None) -> None:
        """``total``: how many problems there were, when ``problems`` holds only the first ones."""
        self.source = source
        self.problems = list(problems)
        self.total = len(self.problems) if total is None else total
        shown = self.problems[:MAX_REPORTED_ERRORS]
        more = self.total - len(shown)
        text = f"customer list {source}: {self.total} problem(s): " + "; ".join(shown)
        if more:
            text += f"; ... and {more} more"
        super().__init__(text)


# ---------------------------------------------------------------------------------------- parsing


def detect_format(name: str, text: str) -> Literal["jsonl", "json", "csv"]:
    """The format of ``text``: from the name's extension, else from its first character."""
    ext = posixpath.splitext(name.rstrip("/"))[1].lower()
    first = text.lstrip()[:1]
    if ext in (".jsonl", ".ndjson"):
        return "jsonl"
    if ext == ".csv":
        return "csv"
    if first == "[":
        return "json"
    if first == "{" or ext == ".json":
        return "jsonl"
    return "csv"


def _line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def parse_jsonl(text: str) -> Iterator[RawRecord]:
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield RawRecord(f"line {n}", json.loads(line))
        except json.JSONDecodeError as exc:
            yield RawRecord(f"line {n}", error=f"not valid JSON: {exc.msg} (column {exc.colno})")


def parse_json_array(text: str) -> Iterator[RawRecord]:
    """A JSON array, element by element, each with the line it starts on."""
    decoder = json.JSONDecoder()
    ws = " \t\r\n"
    pos = len(text) - len(text.lstrip(ws))
    if text[pos : pos + 1] != "[":
        yield RawRecord(f"line {_line_of(text, pos)}", error="expected a JSON array ('[')")
        return
    pos += 1
    item = 0
    while True:
        while pos < len(text) and text[pos] in ws:
            pos += 1
        if text[pos : pos + 1] == "]" and item == 0:
            pos += 1
            break
        item += 1
        try:
            value, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            yield RawRecord(f"line {exc.lineno}", error=f"not valid JSON: {exc.msg} (column {exc.colno})")
            return
        yield RawRecord(f"line {_line_of(text, pos)} (item {item})", value)
        pos = end
        while pos < len(text) and text[pos] in ws:
            pos += 1
        sep = text[pos : pos + 1]
        pos += 1
        if sep == "]":
            break
        if sep != ",":
            yield RawRecord(
                f"line {_line_of(text, pos - 1)}", error="expected ',' or ']' after an array item"
            )
            return
    if text[pos:].strip(ws):
        yield RawRecord(f"line {_line_of(text, pos)}", error="unexpected data after the JSON array")


def parse_csv(text: str) -> Iterator[RawRecord]:
    """CSV with a header row; every value is a string."""
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as exc:
        yield RawRecord("line 1", error=f"not valid CSV: {exc}")
        return
    names = [h.strip() for h in header]
    if "id" not in names:
        yield RawRecord("line 1", error="the CSV header has no 'id' column")
        return
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes or "" in names:
        yield RawRecord("line 1", error=f"the CSV header has empty or repeated column names: {dupes or ['']}")
        return
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield RawRecord(f"line {start}", error=f"not valid CSV: {exc}")
            return
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        where = f"line {start}"
        if len(row) != len(names):
            yield RawRecord(where, error=f"{len(row)} fields where the header has {len(names)}")
            continue
        yield RawRecord(where, dict(zip(names, row, strict=True)))


def parse_text(text: str, fmt: Format, name: str) -> Iterator[RawRecord]:
    kind = detect_format(name, text) if fmt == "auto" else fmt
    if kind == "jsonl":
        return parse_jsonl(text)
    if kind == "json":
        return parse_json_array(text)
    return parse_csv(text)


# ---------------------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class BytesSource:
    """A list already in memory (tests, stdin, a ConfigMap value)."""

    name: str
    data: bytes
    format: Format = "auto"

    def records(self) -> Iterator[RawRecord]:
        try:
            text = self.data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = self.data.count(b"\n", 0, exc.start) + 1
            yield RawRecord(f"line {line}", error=f"not UTF-8 text (byte {exc.start})")
            return
        yield from parse_text(text, self.format, self.name)


@dataclass(frozen=True)
class StoreSource:
    """One object in storage (``customers.url``)."""

    store: Store
    location: Location
    key: str
    format: Format = "auto"

    @property
    def name(self) -> str:
        return self.location.url + self.key

    def records(self) -> Iterator[RawRecord]:
        try:
            data = self.store.get(self.location, self.key)
        except NotFound:
            yield RawRecord("object", error="not found")
            return
        yield from BytesSource(self.name, data, self.format).records()


@dataclass(frozen=True)
class InlineSource:
    """The spec's ``customers.inline`` list."""

    items: Sequence[Mapping[str, Any]]
    name: str = "spec.customers.inline"

    def records(self) -> Iterator[RawRecord]:
        for n, item in enumerate(self.items):
            yield RawRecord(f"item {n}", dict(item))


# ------------------------------------------------------------------------------------- validation


def id_problem(value: Any) -> str | None:
    """Why ``value`` is not a valid customer id, or None."""
    if value is None:
        return "missing id"
    if not isinstance(value, str):
        return f"id must be a string, got {type(value).__name__} {json.dumps(value, default=str)[:40]}"
    if not CUSTOMER_ID_RE.match(value):
        return f"id {value[:80]!r} is not a valid customer id ({ID_RULE})"
    return None


def validate(
    raw: Iterable[RawRecord],
    *,
    source: str,
    target_template: str | None = None,
    allow_empty: bool = False,
) -> list[Record]:
    """Every record checked, sorted by id. With ``target_template``, two customers whose sites
    render to the same place are an error too (rendering errors are left to the shard, where
    that customer fails alone)."""
    problems: list[str] = []
    seen: dict[str, str] = {}
    sites: dict[str, tuple[str, str]] = {}
    out: list[Record] = []
    for rec in raw:
        if rec.error is not None:
            problems.append(f"{rec.where}: {rec.error}")
            continue
        if not isinstance(rec.value, dict):
            problems.append(f"{rec.where}: expected an object, got {type(rec.value).__name__}")
            continue
        cid = rec.value.get("id")
        why = id_problem(cid)
        if why is not None:
            problems.append(f"{rec.where}: {why}")
            continue
        assert isinstance(cid, str)
        if cid in seen:
            problems.append(f"{rec.where}: duplicate id {cid!r} (first at {seen[cid]})")
            continue
        seen[cid] = rec.where
        if target_template is not None:
            try:
                site = render_target(target_template, rec.value)
            except TargetError:
                site = None
            if site is not None:
                if site in sites:
                    other, where = sites[site]
                    problems.append(
                        f"{rec.where}: customer {cid!r} has the same site {site} as {other!r} ({where})"
                    )
                    continue
                sites[site] = (cid, rec.where)
        out.append({"id": cid, **{k: v for k, v in rec.value.items() if k != "id"}})
    if not out and not problems and not allow_empty:
        problems.append("the list is empty")
    if problems:
        raise CustomerListError(source, problems)
    out.sort(key=lambda r: str(r["id"]))
    return out


def load_customers(
    source: CustomerSource, *, target_template: str | None = None, allow_empty: bool = False
) -> list[Record]:
    """Read ``source`` once and validate it (see :func:`validate`)."""
    return validate(
        source.records(), source=source.name, target_template=target_template, allow_empty=allow_empty
    )


def source_for(
    customers: Customers,
    store_for: Callable[[Location], Store],
    *,
    secrets: SecretReader | None = None,
    config_maps: ConfigMapReader | None = None,
) -> CustomerSource:
    """The source ``spec.customers`` names (streaming; see :mod:`webrelease.copier.sources`).
    ``configMapRef`` needs ``config_maps`` and ``sql`` needs ``secrets`` (the operator's readers);
    without them reading the source reports that it cannot be read here."""
    return open_source(customers, store_for=store_for, secrets=secrets, config_maps=config_maps)
