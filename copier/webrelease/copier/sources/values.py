"""Turning values from a database driver or YAML into JSON values, the same way everywhere.

- ``None``, booleans, integers, strings: unchanged; finite floats unchanged (NaN/Infinity refused);
- ``Decimal``: an integer when it has no fractional digits (``NUMERIC(12)`` ids, counts), else its
  exact text (``NUMERIC(8,2)`` 10.50 → ``"10.50"``, 10.00 → ``"10.00"``: one type per column);
- dates, times, datetimes: ISO 8601 text; ``timedelta``: total seconds; ``UUID`` and other scalars
  (network addresses, enums…): their text;
- lists/tuples and mappings (JSON columns, arrays): converted element by element;
- bytes: refused (binary columns have no JSON form; cast them in the query).
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
import uuid
from collections.abc import Mapping
from typing import Any


class ValueProblem(ValueError):
    """A value with no JSON form; the message names the field."""


def to_json_value(value: Any, field: str) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueProblem(f"field {field!r} is {value}, which JSON cannot hold")
        return value
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            raise ValueProblem(f"field {field!r} is {value}, which JSON cannot hold")
        exponent = value.as_tuple().exponent
        if isinstance(exponent, int) and exponent >= 0:
            return int(value)
        return str(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        raise ValueProblem(f"field {field!r} is binary data; cast it to text in the query")
    if isinstance(value, Mapping):
        return {str(k): to_json_value(v, f"{field}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json_value(v, f"{field}[{i}]") for i, v in enumerate(value)]
    return str(value)


def to_json_record(record: Mapping[Any, Any]) -> dict[str, Any]:
    return {str(k): to_json_value(v, str(k)) for k, v in record.items()}
