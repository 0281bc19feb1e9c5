"""Canonical serialisation and content hashes.

The canonical form is JSON with sorted keys, no insignificant white space, UTF-8, and
only JSON-native values (timedeltas as whole microseconds, floats via ``repr``). It does
not depend on dict order, ``PYTHONHASHSEED``, the platform or the Python version.

>>> canonical_json({"b": 1, "a": [1.5, None]})
'{"a":[1.5,null],"b":1}'
>>> sha256_hex(b"")[:12]
'e3b0c44298fc'
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from typing import Any

from featureledger.errors import DefinitionError


def _normalise(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _normalise(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_normalise(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((_normalise(v) for v in value), key=canonical_json)
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise DefinitionError(f"non-finite number {value!r} cannot be part of a definition")
        return int(value) if value.is_integer() and abs(value) < 2**53 else value
    if isinstance(value, dt.timedelta):
        return {"__timedelta_us__": value // dt.timedelta(microseconds=1)}
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC).isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, bytes):
        return {"__bytes_hex__": value.hex()}
    raise DefinitionError(f"value {value!r} of type {type(value).__name__} is not serialisable")


def canonical_json(value: Any) -> str:
    """The canonical JSON text of ``value``."""
    return json.dumps(
        _normalise(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False,
        allow_nan=False,
    )


def sha256_hex(data: bytes | str) -> str:
    if isinstance(data, str):
        data = data.encode("utf-8")
    return hashlib.sha256(data).hexdigest()


def content_hash(value: Any) -> str:
    """sha256 of the canonical JSON of ``value``."""
    return sha256_hex(canonical_json(value))
