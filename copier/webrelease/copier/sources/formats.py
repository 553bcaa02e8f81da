"""Streaming parsers: JSON Lines, a JSON array, CSV with a header — bytes in, ``RawRecord`` out.

Every parser reads a bounded amount at a time (a line, or ``READ_CHUNK_BYTES`` plus one element of
a JSON array), so memory does not depend on the size of the list. Text is UTF-8; a line that is not
is reported with its number and the offending byte, and the other lines still count. A record may
be at most ``MAX_RECORD_BYTES``.

The JSON array reader is hand-rolled over the standard library's C scanner
(``json.JSONDecoder.raw_decode``): it decodes one element at a time from a sliding text buffer and
counts newlines, so every element and every syntax error has a line number (the usual streaming
JSON libraries, e.g. ``ijson``, report byte offsets or nothing), and it needs no dependency.

CSV values are strings, exactly as written (an empty cell is ``""``); quoted fields may span lines
(a record's line is the line it starts on). JSON ``NaN``/``Infinity`` are rejected: a snapshot is
strict JSON.
"""

from __future__ import annotations

import codecs
import csv
import json
import re
import zlib
from collections.abc import Callable, Iterator
from typing import IO, Any, Literal

from webrelease.copier.sources.base import (
    MAX_RECORD_BYTES,
    READ_CHUNK_BYTES,
    RawRecord,
    SourceError,
    at_line,
    type_name,
)
from webrelease.copier.storage.base import StorageError

Format = Literal["jsonl", "json", "csv"]
FORMATS: tuple[Format, ...] = ("jsonl", "json", "csv")

_WS = re.compile(r"[ \t\n\r]*")
_READ_ERRORS = (OSError, EOFError, zlib.error, StorageError)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


class _Decoder:
    """JSON decoding that also notes a key given twice in one object (``{"id": "a", "id": "b"}``:
    JSON parsers keep the last one silently). One per parse (it keeps state)."""

    def __init__(self) -> None:
        self.repeated: str | None = None
        self._json = json.JSONDecoder(parse_constant=_reject_constant, object_pairs_hook=self._pairs)

    def _pairs(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out = dict(pairs)
        if len(out) != len(pairs) and self.repeated is None:
            seen: set[str] = set()
            for key, _value in pairs:
                if key in seen:
                    self.repeated = key
                    break
                seen.add(key)
        return out

    def raw_decode(self, text: str, pos: int = 0) -> tuple[Any, int]:
        self.repeated = None
        return self._json.raw_decode(text, pos)

    def decode(self, text: str) -> Any:
        self.repeated = None
        return self._json.decode(text)

    def repeated_problem(self) -> str | None:
        """Why the last value decoded may not be used (a key twice), or None."""
        if self.repeated is None:
            return None
        return (
            f"the key {self.repeated!r} appears twice in one record (JSON would keep only the last); "
            "remove one"
        )


def detect_format(stream: IO[bytes], declared: str, name: str) -> Format:
    """The format of a (decoded, peekable) list.

    ``declared`` (``auto``/``jsonl``/``json``/``csv``) wins; otherwise the name's extension
    (``.csv``/``.tsv`` → csv, ``.jsonl``/``.ndjson`` → jsonl), then the first non-blank character
    (``[`` → a JSON array, ``{`` → JSON Lines, anything else → CSV with a header).
    """
    if declared in FORMATS:
        return declared
    base = name.lower().removesuffix(".gz")
    if base.endswith(".csv"):
        return "csv"
    if base.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    peek = getattr(stream, "peek", None)
    head: bytes = peek(READ_CHUNK_BYTES) if peek is not None else b""
    first = head.lstrip(b" \t\r\n")[:1]
    if first == b"[":
        return "json"
    if first in (b"{", b""):
        return "jsonl"
    return "csv"


def parse(stream: IO[bytes], fmt: Format) -> Iterator[RawRecord]:
    """The records of ``stream``; a problem that stops the parser is the last record."""
    parsers: dict[Format, Callable[[IO[bytes]], Iterator[RawRecord]]] = {
        "jsonl": parse_jsonl,
        "json": parse_json_array,
        "csv": parse_csv,
    }
    try:
        yield from parsers[fmt](stream)
    except SourceError as exc:
        yield exc.record()


# --- lines ----------------------------------------------------------------------------------------


class _Lines:
    """Physical lines of a byte stream, each at most MAX_RECORD_BYTES, with their numbers."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self.number = 0  # of the last line returned

    def __iter__(self) -> Iterator[tuple[int, bytes | None]]:
        """(number, bytes with the line ending) or (number, None) for a line that is too long."""
        while True:
            try:
                data = self._stream.readline(MAX_RECORD_BYTES + 1)
            except _READ_ERRORS as exc:
                raise _read_error(self.number, exc) from None
            if not data:
                return
            self.number += 1
            if len(data) > MAX_RECORD_BYTES and not data.endswith(b"\n"):
                self._skip_rest()
                yield self.number, None
            else:
                yield self.number, data

    def _skip_rest(self) -> None:
        while True:
            try:
                chunk = self._stream.readline(READ_CHUNK_BYTES)
            except _READ_ERRORS as exc:
                raise _read_error(self.number, exc) from None
            if not chunk or chunk.endswith(b"\n"):
                return


def _read_error(after_line: int, exc: BaseException) -> SourceError:
    gz = isinstance(exc, EOFError | zlib.error) or type(exc).__name__ == "BadGzipFile"
    what = "the gzip data is corrupt or truncated" if gz else "reading the list failed"
    detail = str(exc) or type(exc).__name__
    return SourceError(at_line(after_line + 1), f"{what} ({detail})")


def _too_long() -> str:
    return f"longer than {MAX_RECORD_BYTES // 1024} KiB (one record per line?)"


def _utf8_error(exc: UnicodeDecodeError, before: str = "") -> str:
    """``before``: the text of the line before ``exc.object`` (when the line began earlier)."""
    bad = exc.object[exc.start : exc.start + 1].hex()
    prefix = before + bytes(exc.object[: exc.start]).decode("utf-8")
    column = len(prefix) - (prefix.rfind("\n") + 1) + 1
    return f"not valid UTF-8 (byte 0x{bad} at column {column}); save the list as UTF-8"


def _json_error(exc: ValueError, *, column: bool = True) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"malformed JSON: {exc.msg}" + (f" (column {exc.colno})" if column else "")
    return f"malformed JSON: {exc}"


# --- JSON Lines -----------------------------------------------------------------------------------


def parse_jsonl(stream: IO[bytes]) -> Iterator[RawRecord]:
    """One JSON object per line; blank lines are skipped."""
    decoder = _Decoder()
    for number, raw in _Lines(stream):
        where = at_line(number)
        if raw is None:
            yield RawRecord(where, error=_too_long())
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield RawRecord(at_line(number), error=_utf8_error(exc))
            continue
        if not text.strip():
            continue
        if text.startswith("\ufeff"):
            yield RawRecord(at_line(number), error="a byte order mark (U+FEFF) in the middle of the list")
            continue
        try:
            value = decoder.decode(text)
        except ValueError as exc:
            yield RawRecord(at_line(number), error=_json_error(exc))
            continue
        repeated = decoder.repeated_problem()
        if repeated is not None:
            yield RawRecord(at_line(number), error=repeated)
        elif isinstance(value, dict):
            yield RawRecord(where, value)
        else:
            yield RawRecord(at_line(number), error=f"expected a JSON object, got {type_name(value)}")


# --- a JSON array -----------------------------------------------------------------------------------


class _TextWindow:
    """A sliding window of decoded text over a byte stream, with the line number of its cursor."""

    def __init__(self, stream: IO[bytes], chunk: int) -> None:
        self._stream = stream
        self._chunk = chunk
        self._decoder = codecs.getincrementaldecoder("utf-8")("strict")
        self.buf = ""
        self.pos = 0
        self.line = 1  # line of buf[pos]
        self.eof = False
        self._pending: SourceError | None = None

    def fill(self) -> None:
        """Append the next chunk (dropping what is consumed); sets ``eof`` at the end.

        Bytes that are not UTF-8 end the text: what comes before them is still parsed, and the
        next ``fill`` raises the error, naming the line of the bad byte.
        """
        if self._pending is not None:
            raise self._pending
        if self.eof:
            return
        try:
            data = self._stream.read(self._chunk)
        except _READ_ERRORS as exc:
            raise _read_error(self.line + self.buf.count("\n", self.pos) - 1, exc) from None
        try:
            text = self._decoder.decode(data, final=not data)
        except UnicodeDecodeError as exc:
            text = bytes(exc.object[: exc.start]).decode("utf-8")
            n = self.line + self.buf.count("\n", self.pos) + text.count("\n")
            tail = self.buf[self.buf.rfind("\n") + 1 :]
            self._pending = SourceError(at_line(n), _utf8_error(exc, tail))
        self.buf = self.buf[self.pos :] + text
        self.pos = 0
        self.eof = not data

    def advance(self, end: int) -> None:
        self.line += self.buf.count("\n", self.pos, end)
        self.pos = end

    def skip_ws(self) -> str:
        """Skip blanks; the next character, or '' at the end of the stream."""
        while True:
            m = _WS.match(self.buf, self.pos)
            assert m is not None
            self.advance(m.end())
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if self.eof:
                return ""
            self.fill()

    def error(self, message: str, at: int | None = None) -> SourceError:
        n = self.line if at is None else self.line + self.buf.count("\n", self.pos, at)
        return SourceError(at_line(n), message)


def parse_json_array(stream: IO[bytes], chunk: int = READ_CHUNK_BYTES) -> Iterator[RawRecord]:
    """Elements of one top-level JSON array, decoded one at a time.

    A syntax error stops the list (there is no reliable way to resynchronise inside an array); an
    element that is not an object is reported and skipped.
    """
    w = _TextWindow(stream, chunk)
    decoder = _Decoder()
    first = w.skip_ws()
    if first != "[":
        found = "an empty list" if not first else repr(first)
        raise w.error(f"expected a JSON array starting with '[', found {found}")
    w.advance(w.pos + 1)
    if w.skip_ws() == "]":
        w.advance(w.pos + 1)
        _expect_end(w)
        return
    failed: tuple[int | None, str] | None = None  # the last decode error, relative to the element start
    while True:
        c = w.skip_ws()
        if not c:
            raise w.error("the JSON array is not closed: the list ends before ']'")
        start_line = w.line
        try:
            value, end = decoder.raw_decode(w.buf, w.pos)
        except ValueError as exc:
            at = exc.pos if isinstance(exc, json.JSONDecodeError) else None
            this = (None if at is None else at - w.pos, str(exc))
            # An error may just be the element going on in the next chunk: read on until the end
            # of the list or a window larger than any record; an error that stayed put is real.
            if w.eof or (len(w.buf) - w.pos > MAX_RECORD_BYTES and this == failed):
                if c == "]":
                    raise w.error("a trailing comma before ']'") from None
                raise w.error(_json_error(exc, column=False), at=at) from None
            if len(w.buf) - w.pos > MAX_RECORD_BYTES and failed is not None:
                raise w.error(f"an array element {_too_long()}") from None
            failed = this
            w.fill()
            continue
        if end == len(w.buf) and not w.eof:  # cannot tell yet whether a number/literal goes on
            w.fill()
            continue
        failed = None
        size = end - w.pos
        w.advance(end)
        repeated = decoder.repeated_problem()
        if size > MAX_RECORD_BYTES:
            yield RawRecord(at_line(start_line), error=f"an array element {_too_long()}")
        elif repeated is not None:
            yield RawRecord(at_line(start_line), error=repeated)
        elif isinstance(value, dict):
            yield RawRecord(at_line(start_line), value)
        else:
            yield RawRecord(at_line(start_line), error=f"expected a JSON object, got {type_name(value)}")
        c = w.skip_ws()
        if c == ",":
            w.advance(w.pos + 1)
        elif c == "]":
            w.advance(w.pos + 1)
            _expect_end(w)
            return
        elif not c:
            raise w.error("the JSON array is not closed: the list ends before ']'")
        else:
            raise w.error(f"expected ',' or ']' after the element, found {c!r}")


def _expect_end(w: _TextWindow) -> None:
    c = w.skip_ws()
    if c:
        raise w.error(f"data after the end of the JSON array ({c!r}); a list is one array")


# --- CSV ------------------------------------------------------------------------------------------


def parse_csv(stream: IO[bytes]) -> Iterator[RawRecord]:
    """Rows of a CSV with a header line (RFC 4180 quoting, comma-separated)."""
    lines = _Lines(stream)
    problems: dict[int, str] = {}  # line -> what was wrong with the bytes of that line

    def text_lines() -> Iterator[str]:
        for number, raw in lines:
            if raw is None:
                problems.setdefault(number, _too_long())
                yield "\n"
                continue
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                problems.setdefault(number, _utf8_error(exc))
                yield raw.decode("utf-8", "replace")

    reader = csv.reader(text_lines(), strict=True)
    header: list[str] | None = None
    header_line = 0
    last = 0  # reader.line_num after the previous row

    def pending(upto: int) -> Iterator[RawRecord]:
        for number in sorted(n for n in problems if n <= upto):
            yield RawRecord(at_line(number), error=problems.pop(number))

    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            start, end = last + 1, reader.line_num
            last = end
            if header is None:
                problems.pop(start, None)
                raise SourceError(at_line(start), f"the CSV header cannot be read: {exc}") from None
            problem = problems.pop(start, None) or _csv_error(exc, start, end)
            yield from pending(end)
            yield RawRecord(at_line(start), error=problem)
            continue
        start, end = last + 1, reader.line_num
        last = end
        if not row:  # a blank line
            yield from pending(end)
            continue
        if header is None:
            if start in problems:
                raise SourceError(at_line(start), f"the CSV header is {problems[start]}")
            header, header_line = _check_header(row, start), start
            continue
        own = [problems.pop(n) for n in range(start, end + 1) if n in problems]
        yield from pending(end)
        span = f" (lines {start}-{end})" if end > start else ""
        if own:
            yield RawRecord(at_line(start), error=own[0] + span)
        elif len(row) != len(header):
            yield RawRecord(
                at_line(start),
                error=f"{len(row)} CSV fields{span}, the header (line {header_line}) has {len(header)}",
            )
        else:
            yield RawRecord(at_line(start), dict(zip(header, row, strict=True)))
    yield from pending(lines.number)


def _csv_error(exc: csv.Error, start: int, end: int) -> str:
    msg = str(exc)
    if "unexpected end of data" in msg:
        return "a quoted field opened here is never closed (it runs to the end of the list)"
    if "field larger than field limit" in msg:
        return (
            f"a CSV field larger than {csv.field_size_limit()} bytes"
            f" (lines {start}-{end}: an unclosed quote?)"
        )
    span = f" (lines {start}-{end})" if end > start else ""
    return f"CSV quoting: {msg}{span}"


def _check_header(raw: list[str], number: int) -> list[str]:
    """The column names (blanks around a name are dropped: `` id , name`` is ``id``, ``name``)."""
    row = [column.strip() for column in raw]
    if "id" not in row:
        shown = ", ".join(repr(c) for c in row[:20])
        raise SourceError(at_line(number), f"the CSV header has no 'id' column (columns: {shown})")
    seen: set[str] = set()
    for column in row:
        if not column:
            raise SourceError(at_line(number), "the CSV header has an empty column name")
        if column in seen:
            raise SourceError(at_line(number), f"the CSV header names column {column!r} twice")
        seen.add(column)
    return row
