"""Request bodies checked by hand: online-features requests and pushes.

Both are parsed with orjson (strict: no NaN, no lone surrogates) and checked for shape,
limits and values before any store is touched, so that what a client got wrong is a 400,
413 or 422 naming the field, row and column, not an exception from deep inside:

* an integer outside int64 (JSON has no limit; no store type holds more; orjson reads an
  integer beyond uint64 as a float, which is named as such);
* a column whose rows hold different JSON types (``1`` in one row, ``"x"`` in the next);
* a time that is not ISO 8601 text in years 0001-9999 (``10**20``, ``"99999-01-01"``,
  ``"infinity"``): nothing downstream could represent it.

Float fields take NaN and infinity as the text ``"NaN"``, ``"Infinity"`` and
``"-Infinity"`` (JSON has no such numbers; the responses write them the same way), and
then follow the field's ``allow_nan`` as in the SDK. Pushed rows become an Arrow table
column by column here, over the union of the rows' keys
(a key only later rows carry is not dropped), with the type the column's JSON values
have; casting to the view's types and validation are then the push's own.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any

import orjson

from featureledger.errors import (
    InvalidJsonError,
    RequestTooLargeError,
    RetrievalError,
    ValidationFailedError,
)
from featureledger.model.types import FLOAT_DTYPES, INTEGER_DTYPES
from featureledger.server.guard import clip

if TYPE_CHECKING:
    import pyarrow as pa

    from featureledger.model.definitions import FeatureView

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
ONLINE_FIELDS = ("features", "feature_set", "deployment", "entities", "full_feature_names",
                 "fill_defaults")
PUSH_FIELDS = ("rows", "flush")
# an ISO 8601 date-time begins with a four-digit year; DuckDB's parser also takes words
# ('infinity', 'epoch') and years beyond 9999, which no reader downstream can represent
_ISO_START = re.compile(r"\s*(\d{4})-\d")
_KIND = {bool: "true/false", int: "a number", float: "a number", str: "text",
         list: "a list", dict: "an object"}


def _excerpt(value: Any) -> str:
    return clip(repr(value), 80)


def parse_json(body: bytes, example: str) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidJsonError(
            f"the request body is not valid JSON ({exc}); send an object like {example}"
        ) from None


def parse_online(body: bytes, max_rows: int) -> dict[str, Any]:
    """The online-features body checked by hand (cheaper than a model per request)."""
    data = parse_json(body, '{"features": [...], "entities": {...}}')
    if not isinstance(data, dict):
        raise RetrievalError("the request body must be a JSON object such as "
                             '{"features": ["view:feature"], "entities": {"key": [1]}}')
    unknown = set(data) - set(ONLINE_FIELDS)
    if unknown:
        raise RetrievalError(f"unknown request field(s) {sorted(unknown)}; allowed: "
                             f"{sorted(ONLINE_FIELDS)}")
    features = data.get("features")
    if features is not None and (not isinstance(features, list)
                                 or not all(isinstance(f, str) for f in features)):
        raise RetrievalError("'features' must be a list of reference strings")
    fs = data.get("feature_set")
    if fs is not None and not isinstance(fs, str):
        raise RetrievalError("'feature_set' must be a string such as 'NAME' or 'NAME@2'")
    dep = data.get("deployment")
    if dep is not None and not isinstance(dep, str):
        raise RetrievalError("'deployment' must be a deployment id such as 'dep_...'")
    entities = data.get("entities")
    if not isinstance(entities, dict) or not all(isinstance(v, list)
                                                 for v in entities.values()):
        raise RetrievalError("'entities' must map each join key to a list of values, e.g. "
                             "{\"driver_id\": [1001, 1002]}")
    rows = max((len(v) for v in entities.values()), default=0)
    if rows > max_rows:
        raise RequestTooLargeError(
            f"{rows} entity rows in one request; this server answers at most {max_rows} "
            "(server.max_entity_rows): split the keys over several requests")
    for key, values in entities.items():
        _check_keys(key, values)
    for flag in ("full_feature_names", "fill_defaults"):
        if not isinstance(data.get(flag, False), bool):
            raise RetrievalError(f"'{flag}' must be true or false")
    return data


def _check_keys(key: str, values: list[Any]) -> None:
    for i, x in enumerate(values):
        cls = x.__class__
        if cls is int or cls is str or x is None or cls is bool:
            if cls is int and not INT64_MIN <= x <= INT64_MAX:
                raise RetrievalError(
                    f"entity key {clip(key, 100)!r} row {i}: {x} is outside the int64 range "
                    f"({INT64_MIN}..{INT64_MAX}) that keys are stored in")
            continue
        if cls is float:
            if not INT64_MIN <= x <= INT64_MAX:
                raise RetrievalError(
                    f"entity key {clip(key, 100)!r} row {i}: {x!r} is outside the int64 "
                    f"range ({INT64_MIN}..{INT64_MAX}) that keys are stored in (JSON "
                    "integers beyond it are read as floats)")
            continue
        raise RetrievalError(
            f"entity key {clip(key, 100)!r} row {i}: {_excerpt(x)} is {_KIND.get(cls, cls)}; "
            "each value must be a number, text, true/false or null")


def parse_push(body: bytes, max_rows: int) -> tuple[list[dict[str, Any]], bool]:
    """The push body: its rows (objects) and ``flush``."""
    data = parse_json(body, '{"rows": [{...}, ...]}')
    if not isinstance(data, dict):
        raise ValidationFailedError('the push body must be a JSON object such as '
                                    '{"rows": [{"driver_id": 1, ...}]}')
    unknown = set(data) - set(PUSH_FIELDS)
    if unknown:
        raise ValidationFailedError(f"unknown push field(s) {clip(str(sorted(unknown)), 200)}"
                                    f"; allowed: {list(PUSH_FIELDS)}")
    rows = data.get("rows")
    if not isinstance(rows, list) or not rows:
        raise ValidationFailedError("'rows' must be a non-empty list of row objects, e.g. "
                                    '[{"driver_id": 1, "event_timestamp": '
                                    '"2024-01-01T00:00:00Z", ...}]')
    if len(rows) > max_rows:
        raise RequestTooLargeError(
            f"{len(rows)} rows in one push; this server takes at most {max_rows} "
            "(server.max_push_rows): split them over several pushes")
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ValidationFailedError(f"rows[{i}] is {_KIND.get(row.__class__, 'null')}, "
                                        "not an object of column: value")
    flush = data.get("flush", False)
    if not isinstance(flush, bool):
        raise ValidationFailedError("'flush' must be true or false")
    return rows, flush


def _time_columns(view: FeatureView) -> set[str]:
    names = {view.timestamp_field}
    if view.created_timestamp_field:
        names.add(view.created_timestamp_field)
    names.update(k for k, t in view.join_keys.items() if t in ("timestamp", "date"))
    names.update(f.name for f in view.fields if f.dtype in ("timestamp", "date"))
    return names


def rows_to_table(view: FeatureView, rows: list[dict[str, Any]]) -> pa.Table:
    """Pushed JSON rows as an Arrow table, refusing what no column type could hold."""
    import pyarrow as pa

    columns: dict[str, None] = {}
    for row in rows:
        for key in row:
            columns.setdefault(key, None)
    times = _time_columns(view)
    ints = {k for k, t in view.join_keys.items() if t in INTEGER_DTYPES}
    ints.update(f.name for f in view.fields if f.dtype in INTEGER_DTYPES)
    floats = {f.name for f in view.fields if f.dtype in FLOAT_DTYPES}
    arrays = {}
    for name in columns:
        values = [row.get(name) for row in rows]
        if name in floats:
            values = [_float_words(v) for v in values]
        arrays[name] = _column(view.name, name, values, name in times, name in ints, pa)
    return pa.table(arrays)


_FLOAT_WORDS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _float_words(v: Any) -> Any:
    """A float field's value with the JSON text for NaN and infinity ('NaN', 'Infinity',
    '-Infinity', as the responses write them) read as the float (in a list: each element).
    Whether the field takes them is validation's to say (``allow_nan``)."""
    if v.__class__ is str:
        return _FLOAT_WORDS.get(v, v)
    if v.__class__ is list:
        return [_FLOAT_WORDS.get(x, x) if x.__class__ is str else x for x in v]
    return v


def _refuse(view: str, problem: str) -> ValidationFailedError:
    return ValidationFailedError(f"push to {clip(view, 100)!r} rejected; nothing was "
                                 f"written: {problem}")


def _column(view: str, name: str, values: list[Any], is_time: bool, is_int: bool,
            pa: Any) -> Any:
    label = clip(name, 100)
    first: dict[str, int] = {}  # kind -> first row holding it
    for i, v in enumerate(values):
        if v is None:
            continue
        cls = v.__class__
        kind = _KIND.get(cls, "?")
        first.setdefault(kind, i)
        if cls is int and not INT64_MIN <= v <= INT64_MAX:
            what = "a time" if is_time else "an integer"
            raise _refuse(view, f"rows[{i}].{label} is {v}, outside the int64 range "
                          f"({INT64_MIN}..{INT64_MAX}); it cannot be {what} of any view")
        if is_int and cls is float and not INT64_MIN <= v <= INT64_MAX:
            raise _refuse(view, f"rows[{i}].{label} is {v!r}, outside the int64 range "
                          f"({INT64_MIN}..{INT64_MAX}) of the column (JSON integers beyond "
                          "it are read as floats)")
        if is_time and cls is str:
            m = _ISO_START.match(v)
            if m is None or m.group(1) == "0000":
                raise _refuse(view, f"rows[{i}].{label} is {_excerpt(v)}, not an ISO 8601 "
                              "time in years 0001-9999; send text such as "
                              "'2024-01-01T00:00:00Z'")
        if is_time and kind == "a number":
            raise _refuse(view, f"rows[{i}].{label} is the number {_excerpt(v)}, not a time;"
                          " send ISO 8601 text such as '2024-01-01T00:00:00Z'")
    if len(first) > 1:
        (k1, r1), (k2, r2) = sorted(first.items(), key=lambda kv: kv[1])[:2]
        raise _refuse(view, f"column {label!r} holds {k1} in rows[{r1}] and {k2} in "
                      f"rows[{r2}]; send one type per column (null for a missing value)")
    only = next(iter(first), None)
    try:
        if only is None:
            return pa.nulls(len(values))
        if only == "a number":
            floats = any(v.__class__ is float for v in values)
            return pa.array(values, pa.float64() if floats else pa.int64())
        if only == "text":
            return pa.array(values, pa.string())
        if only == "true/false":
            return pa.array(values, pa.bool_())
        return pa.array(values)  # lists and objects: Arrow infers, casting decides
    except (pa.ArrowException, OverflowError, TypeError, ValueError) as exc:
        raise _refuse(view, f"column {label!r} cannot be read as one column: "
                      f"{clip(str(exc), 300)}") from None
