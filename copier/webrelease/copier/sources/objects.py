"""Customer lists held as bytes: an object (``customers.url``) or a ConfigMap value (``configMapRef``).

Both run the same pipeline: gzip? → UTF-8 BOM → format (declared, extension, or first character)
→ streaming parser. Fetching a ConfigMap needs the Kubernetes API, so the operator does that and
hands the value to ``TextSource`` as ``str`` (``data``) or ``bytes`` (``binaryData``, e.g. gzip).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass

from webrelease.copier.sources.base import RawRecord, SourceError
from webrelease.copier.sources.formats import detect_format, parse
from webrelease.copier.sources.streams import decoded_stream, open_object
from webrelease.copier.storage.base import StoreFor


@dataclass(frozen=True)
class ObjectSource:
    """``customers.url``: JSON Lines, a JSON array or CSV at a ``file://`` or ``s3://`` URL, maybe gzip.

    ``store_for`` gives the store of a location (``webrelease.copier.storage.storeset.StoreSet`` does).
    """

    url: str
    store_for: StoreFor
    format: str = "auto"

    @property
    def name(self) -> str:
        return self.url

    def records(self) -> Iterator[RawRecord]:
        try:
            with open_object(self.url, self.store_for) as raw:
                stream = decoded_stream(raw, gz_name=self.url.lower().endswith(".gz"))
                fmt = detect_format(stream, self.format, self.url)
                yield from parse(stream, fmt)
        except SourceError as exc:
            yield exc.record()


@dataclass(frozen=True)
class TextSource:
    """A list given as text or bytes, e.g. a ConfigMap key's value.

    ``name`` names it in messages (``ConfigMap shop/customers key customers.csv``); ``key`` is used
    like a file name for format detection (``.csv``, ``.jsonl``, ``.gz``).
    """

    data: str | bytes
    name: str
    key: str = ""
    format: str = "auto"

    def records(self) -> Iterator[RawRecord]:
        raw = self.data.encode("utf-8") if isinstance(self.data, str) else self.data
        try:
            with io.BufferedReader(io.BytesIO(raw)) as buffered:
                stream = decoded_stream(buffered, gz_name=self.key.lower().endswith(".gz"))
                fmt = detect_format(stream, self.format, self.key)
                yield from parse(stream, fmt)
        except SourceError as exc:
            yield exc.record()
