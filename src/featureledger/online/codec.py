"""How entity keys and feature values are laid out in an online store.

Every online store holds, per view version, one record per entity key: the event time,
the commit time and commit id of the row it came from, and a payload with the values of
every field of the view in field order. Stores treat the key and payload as opaque text
and bytes; this module is the only place that knows their format, so a value written by
one store reads back the same from any other.

* Entity key: a single integer key is its decimal text, a single string key the string
  itself, anything else (composite keys, other dtypes) the compact JSON array of the
  normalised values.
* Payload: a JSON array (orjson) of the values. JSON has no bytes, timestamps, dates or
  non-finite floats, so timestamps are stored as integer microseconds, dates as days since
  the epoch, bytes as base64 text; a payload holding a NaN or infinity starts with ``!``
  and stores those floats as the strings ``NaN``, ``Infinity``, ``-Infinity``.

>>> keys = KeyCodec({"driver_id": "int64"})
>>> keys.encode_row({"driver_id": 1001})
'1001'
>>> vals = ValueCodec(["float64", "timestamp", "string"])
>>> payload = vals.encode([1.5, dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc), None])
>>> payload
b'[1.5,1704067200000000,null]'
>>> vals.decode(payload)
[1.5, datetime.datetime(2024, 1, 1, 0, 0, tzinfo=datetime.timezone.utc), None]
"""

from __future__ import annotations

import base64
import datetime as dt
import math
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from featureledger.errors import RetrievalError
from featureledger.model.timeutil import to_us
from featureledger.model.types import element_dtype

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_EPOCH_DATE = dt.date(1970, 1, 1)
_INT_KEY_TYPES = frozenset({"int32", "int64"})


# -- entity keys ------------------------------------------------------------------------
def _key_scalar(name: str, dtype: str, value: Any) -> Any:
    """A join-key value normalised to a JSON scalar, or RetrievalError naming the key."""
    try:
        if dtype in _INT_KEY_TYPES:
            if isinstance(value, str) and value.strip().lstrip("-").isdigit():
                return int(value)  # keys typed on a command line or in a URL
            if isinstance(value, bool) or not hasattr(value, "__index__"):
                raise TypeError
            return int(value.__index__())
        if dtype == "string":
            if not isinstance(value, str):
                raise TypeError
            return value
        if dtype == "bool":
            if not isinstance(value, bool) and type(value).__name__ != "bool_":
                raise TypeError
            return bool(value)
        if dtype == "timestamp":
            return to_us(value)
        if dtype == "date":
            if isinstance(value, dt.datetime) or not isinstance(value, dt.date):
                raise TypeError
            return (value - _EPOCH_DATE).days
        if dtype == "bytes":
            if not isinstance(value, (bytes, bytearray)):
                raise TypeError
            return bytes(value).hex()
    except (TypeError, ValueError):
        pass
    raise RetrievalError(
        f"entity key {name!r} needs a {dtype} value, got {value!r} "
        f"({type(value).__name__}); pass e.g. {{{name!r}: {_example(dtype)}}}"
    )


def _example(dtype: str) -> str:
    return {"string": "'abc'", "bool": "True", "timestamp": "'2024-01-01T00:00:00Z'",
            "date": "datetime.date(2024, 1, 1)", "bytes": "b'...'"}.get(dtype, "1001")


class KeyCodec:
    """Encodes the join-key values of one view into the store's key text."""

    __slots__ = ("dtypes", "encode_row", "names", "single")

    def __init__(self, join_keys: dict[str, str]) -> None:
        self.names = tuple(join_keys)
        self.dtypes = tuple(join_keys.values())
        self.single = len(self.names) == 1
        name, dtype = self.names[0], self.dtypes[0]
        if self.single and dtype in _INT_KEY_TYPES:
            def encode_int(row: dict[str, Any]) -> str:
                try:
                    v = row[name]
                except KeyError:
                    raise self._missing(row) from None
                if v.__class__ is int:  # the common case, without the checks below
                    return str(v)
                return str(_key_scalar(name, dtype, v))
            self.encode_row: Callable[[dict[str, Any]], str] = encode_int
        elif self.single and dtype == "string":
            def encode_str(row: dict[str, Any]) -> str:
                try:
                    v = row[name]
                except KeyError:
                    raise self._missing(row) from None
                if v.__class__ is str:
                    return v
                return _key_scalar(name, dtype, v)
            self.encode_row = encode_str
        else:
            self.encode_row = self._encode_generic

    def _missing(self, row: Any) -> RetrievalError:
        return RetrievalError(
            f"entity row {row!r} lacks join key(s) "
            f"{', '.join(n for n in self.names if n not in row)}; "
            f"each row needs {', '.join(self.names)}"
        )

    def _encode_generic(self, row: dict[str, Any]) -> str:
        try:
            vals = [_key_scalar(n, t, row[n]) for n, t in zip(self.names, self.dtypes, strict=False)]
        except KeyError:
            raise self._missing(row) from None
        except TypeError:
            raise self._missing(row) from None
        return encode_key_values(vals, self.single, self.dtypes[0])

    def encode_rows(self, rows: Sequence[dict[str, Any]]) -> list[str]:
        """Keys for a list of entity rows (dicts), as ``encode_row`` gives them."""
        if self.single:
            name = self.names[0]
            try:
                col = [r[name] for r in rows]
            except KeyError:
                raise self._missing(next(r for r in rows if name not in r)) from None
            return self.encode_columns([col])
        encode = self.encode_row
        return [encode(r) for r in rows]

    def encode_columns(self, columns: Sequence[Sequence[Any]]) -> list[str]:
        """Keys for whole columns of join-key values (one sequence per key, in order);
        values are checked as ``encode_row`` checks them."""
        if self.single:
            name, dtype = self.names[0], self.dtypes[0]
            col = columns[0]
            if dtype in _INT_KEY_TYPES:
                return [str(v) if v.__class__ is int else str(_key_scalar(name, dtype, v))
                        for v in col]
            if dtype == "string":
                return [v if v.__class__ is str else _key_scalar(name, dtype, v) for v in col]
        return [self._encode_generic(dict(zip(self.names, vals, strict=True)))
                for vals in zip(*columns, strict=True)]


def encode_key_values(values: list[Any], single: bool, first_dtype: str) -> str:
    if single and first_dtype in _INT_KEY_TYPES:
        return str(values[0])
    if single and first_dtype == "string":
        return values[0]
    return orjson.dumps(values).decode()


# -- values -----------------------------------------------------------------------------
def _enc_ts(v: Any) -> Any:
    return None if v is None else to_us(v)


def _dec_ts(v: Any) -> Any:
    return None if v is None else _EPOCH + dt.timedelta(microseconds=v)


def _enc_date(v: Any) -> Any:
    if v is None:
        return None
    if isinstance(v, dt.datetime):
        v = v.date()
    return (v - _EPOCH_DATE).days


def _dec_date(v: Any) -> Any:
    return None if v is None else _EPOCH_DATE + dt.timedelta(days=v)


def _enc_bytes(v: Any) -> Any:
    return None if v is None else base64.b64encode(bytes(v)).decode()


def _dec_bytes(v: Any) -> Any:
    return None if v is None else base64.b64decode(v)


_SCALAR_CODECS: dict[str, tuple[Any, Any]] = {
    "timestamp": (_enc_ts, _dec_ts),
    "date": (_enc_date, _dec_date),
    "bytes": (_enc_bytes, _dec_bytes),
}
_NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _nonfinite_text(v: float) -> str:
    return "NaN" if v != v else ("Infinity" if v > 0 else "-Infinity")


def _list_codec(inner: tuple[Any, Any] | None) -> tuple[Any, Any] | None:
    if inner is None:
        return None
    enc, dec = inner
    return (
        lambda v: None if v is None else [enc(x) for x in v],
        lambda v: None if v is None else [dec(x) for x in v],
    )


def dtype_codec(dtype: str) -> tuple[Any, Any] | None:
    """(encode, decode) for values of ``dtype`` that JSON cannot hold as they are."""
    elem = element_dtype(dtype)
    if elem is not None:
        return _list_codec(_SCALAR_CODECS.get(elem))
    return _SCALAR_CODECS.get(dtype)


class ValueCodec:
    """Encodes one record's values (all fields of a view version, in order)."""

    def __init__(self, dtypes: Sequence[str]) -> None:
        self.dtypes = list(dtypes)
        codecs = [dtype_codec(t) for t in self.dtypes]
        self.encoders = [(i, c[0]) for i, c in enumerate(codecs) if c is not None]
        self.decoders = [(i, c[1]) for i, c in enumerate(codecs) if c is not None]
        self.float_idx = [i for i, t in enumerate(self.dtypes)
                          if t in ("float32", "float64", "list<float32>", "list<float64>")]

    def encode(self, values: list[Any]) -> bytes:
        """The payload for one record; ``values`` is changed in place."""
        for i, enc in self.encoders:
            values[i] = enc(values[i])
        special = False
        for i in self.float_idx:
            v = values[i]
            if v is None:
                continue
            if isinstance(v, list):
                if not all(x is None or math.isfinite(x) for x in v):
                    values[i] = [x if x is None or math.isfinite(x) else _nonfinite_text(x)
                                 for x in v]
                    special = True
            elif not math.isfinite(v):
                values[i] = _nonfinite_text(v)
                special = True
        try:
            data = orjson.dumps(values, option=orjson.OPT_SERIALIZE_NUMPY)
        except TypeError as exc:
            raise RetrievalError(
                f"a feature value cannot be stored online ({exc}); check that the values "
                f"match the view's dtypes {self.dtypes}"
            ) from None
        return b"!" + data if special else data

    def decode_many(self, payloads: Sequence[bytes]) -> list[list[Any]]:
        """The values of many records; one JSON parse for the whole batch when no payload
        holds a non-finite float (a ``!`` anywhere, even inside a string, only sends the
        batch to the per-record path, which gives the same values)."""
        if len(payloads) > 1:
            joined = b",".join(payloads)
            if b"!" not in joined:
                rows: list[list[Any]] = orjson.loads(b"[" + joined + b"]")
                if self.decoders:
                    for values in rows:
                        for i, dec in self.decoders:
                            values[i] = dec(values[i])
                return rows
        return [self.decode(p) for p in payloads]

    def decode(self, payload: bytes) -> list[Any]:
        """The values of one record, in field order, as Python objects."""
        if payload[:1] == b"!":
            values = orjson.loads(payload[1:])
            for i in self.float_idx:
                v = values[i]
                if isinstance(v, str):
                    values[i] = _NONFINITE[v]
                elif isinstance(v, list):
                    values[i] = [_NONFINITE[x] if isinstance(x, str) else x for x in v]
        else:
            values = orjson.loads(payload)
        for i, dec in self.decoders:
            values[i] = dec(values[i])
        return values
