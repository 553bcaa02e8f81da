"""Byte streams of a customer list: an object read in ranges, gzip by magic bytes, byte order marks.

``open_object`` reads an object through the ``Store`` protocol, ``READ_CHUNK_BYTES`` per ranged
GET (``Store.get_range``), so that memory never depends on the object's size (``file://`` and
``s3://`` alike; a list smaller than one chunk costs one GET, as reading it whole would).
``decoded_stream`` then peels off gzip (detected by the magic bytes ``1f 8b``; a name ending in
``.gz`` without them is an error) and a UTF-8 byte order mark, and refuses UTF-16 / UTF-32 (a BOM,
or NUL bytes at the start) with a message that says so: lists are UTF-8, as JSON requires.
"""

from __future__ import annotations

import contextlib
import gzip
import io
from collections.abc import Iterator
from typing import IO

from webrelease.copier.sources.base import READ_CHUNK_BYTES, SourceError
from webrelease.copier.storage import object_url
from webrelease.copier.storage.base import (
    AccessDenied,
    InvalidKey,
    InvalidUrl,
    Location,
    NotFound,
    StorageError,
    Store,
    StoreFor,
    UnusableFile,
)

GZIP_MAGIC = b"\x1f\x8b"
UTF8_BOM = b"\xef\xbb\xbf"
_OTHER_BOMS = (
    (b"\xff\xfe\x00\x00", "UTF-32 little-endian"),
    (b"\x00\x00\xfe\xff", "UTF-32 big-endian"),
    (b"\xff\xfe", "UTF-16 little-endian"),
    (b"\xfe\xff", "UTF-16 big-endian"),
)
_BUFFER = 1024 * 1024


class StoreRangeReader(io.RawIOBase):
    """A read-only raw stream over one object, fetched ``chunk`` bytes per ``Store.get_range``.

    The size is not asked up front (no HeadObject): a range shorter than asked for is the end.
    Only when a range request fails (an empty object, or a size that is an exact multiple of
    ``chunk``) does a HeadObject tell the end from a real error.
    """

    def __init__(self, store: Store, loc: Location, key: str, chunk: int = READ_CHUNK_BYTES) -> None:
        super().__init__()
        self._store, self._loc, self._key, self._chunk = store, loc, key, chunk
        self._pos = 0  # offset of the next byte to fetch
        self._block = b""
        self._block_pos = 0
        self._eof = False
        self.requests = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: memoryview | bytearray) -> int:  # type: ignore[override]
        if self._block_pos >= len(self._block):
            if self._eof:
                return 0
            try:
                self.requests += 1
                self._block = self._store.get_range(
                    self._loc, self._key, self._pos, self._pos + self._chunk - 1
                )
            except NotFound:
                raise
            except StorageError:
                if self._at_end():
                    self._eof, self._block = True, b""
                    return 0
                raise
            self._block_pos = 0
            self._pos += len(self._block)
            self._eof = len(self._block) < self._chunk
            if not self._block:
                return 0
        n = min(len(b), len(self._block) - self._block_pos)
        b[:n] = self._block[self._block_pos : self._block_pos + n]
        self._block_pos += n
        return n

    def _at_end(self) -> bool:
        return self._store.head(self._loc, self._key).size == self._pos


@contextlib.contextmanager
def open_object(url: str, store_for: StoreFor) -> Iterator[IO[bytes]]:
    """A buffered binary stream over the object at ``url``.

    SourceError(``object``) when the object is missing or can never be read (refused credentials,
    an unusable key or file); StorageError for a passing problem (storage unreachable)."""
    try:
        loc, key = object_url(url)
    except InvalidUrl as exc:
        raise SourceError("object", str(exc)) from None
    try:
        store = store_for(loc)
        stream = io.BufferedReader(StoreRangeReader(store, loc, key), buffer_size=_BUFFER)
        stream.peek(1)  # the first range: a missing object is known now
    except NotFound:
        raise SourceError("object", f"{url} does not exist") from None
    except (AccessDenied, InvalidKey, InvalidUrl, UnusableFile) as exc:  # no retry fixes these
        raise SourceError("object", f"cannot read {url}: {exc}") from None
    # any other StorageError (unreachable, throttled past its deadline) passes through: it is a
    # passing problem that the caller waits out, never a verdict on the list
    with stream:
        yield stream


def decoded_stream(raw: IO[bytes], *, gz_name: bool) -> IO[bytes]:
    """``raw`` without gzip and without a UTF-8 BOM; ``raw`` must be buffered (peekable).

    ``gz_name``: the list's name ends in ``.gz`` (then it must be gzip). Raises SourceError for
    a list that is not UTF-8 by its first bytes.
    """
    stream: IO[bytes] = raw
    head = _peek(stream, 4)
    if head.startswith(GZIP_MAGIC):
        stream = gzip.GzipFile(fileobj=stream, mode="rb")  # type: ignore[assignment]
        try:
            head = _peek(stream, 4)
        except (OSError, EOFError) as exc:
            raise SourceError("line 1", f"not valid gzip data ({exc})") from None
    elif gz_name:
        raise SourceError("line 1", "the name ends in .gz but the content is not gzip-compressed")
    for bom, encoding in _OTHER_BOMS:
        if head.startswith(bom):
            raise SourceError(
                "line 1",
                f"the list is encoded as {encoding} (byte order mark {bom.hex(' ').upper()});"
                " save it as UTF-8",
            )
    if head.startswith(UTF8_BOM):
        stream.read(len(UTF8_BOM))
    elif b"\x00" in head:
        raise SourceError("line 1", "NUL bytes: the list looks UTF-16 or UTF-32 encoded; save it as UTF-8")
    return stream


def _peek(stream: IO[bytes], n: int) -> bytes:
    peek = getattr(stream, "peek", None)
    if peek is None:
        raise TypeError("decoded_stream needs a peekable (buffered) stream")
    data: bytes = peek(n)
    return data[:n]
