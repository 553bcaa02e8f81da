"""What a run's report looks like, independent of its run id and its numbers: the relative file
names under the run's folder and the shape (the keys, recursively) of its ``index.json``."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

#: a shard's files, with its index replaced: ``main/shards/3.jsonl`` -> ``main/shards/N.jsonl``
_SHARD_FILE = re.compile(r"(shards/)\d+(\.)")


def layout(keys: Iterable[str], run_prefix: str) -> set[str]:
    """The files of the run whose folder is ``run_prefix``, relative to it, shard numbers as ``N``."""
    return {_SHARD_FILE.sub(r"\1N\2", k[len(run_prefix) :]) for k in keys if k.startswith(run_prefix)}


def shape(doc: Any) -> Any:
    """The keys of a JSON document, recursively (a list: the union of its items' shapes; values
    become their JSON type, ``null`` matching anything)."""
    if isinstance(doc, dict):
        return {k: shape(v) for k, v in sorted(doc.items())}
    if isinstance(doc, list):
        merged: dict[str, Any] = {}
        for item in doc:
            s = shape(item)
            if isinstance(s, dict):
                merged.update(s)
        return [merged] if merged else []
    return "any"
