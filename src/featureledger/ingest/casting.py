"""Shaping input columns into a view's stored schema: mapping, defaults and exact casts.

Stored columns, in order: the join keys, the event-timestamp column, the created-timestamp
column (if the view declares one), then the fields, each with its declared Arrow type
(:func:`featureledger.model.types.to_arrow`).

Casts are explicit and exact, with one deliberate exception: a float64 value stored in a
float32 field is rounded to the nearest float32, because declaring float32 declares that
precision (and pandas produces float64 by default); a finite value beyond float32's range
fails its row. Otherwise a value is cast only when the stored value means the same thing; a
value that would change is a ``dtype`` validation failure of its row, naming the column.
The cast rules:

============================  ===================================================
input                         stored as
============================  ===================================================
int8/16/32/64, uint8/16/32/64 int32 / int64 / float32 / float64, when the value is
float16/32/64                 exactly representable (so int32→int64, float32→float64
                              always; int64→float64 up to 2**53; 2.0→int64 yes,
                              2.5→int64 no; float64→float32 rounds to nearest and
                              fails only beyond ±3.4e38; NaN and ±inf stay as they are)
timestamp (s, ms, us, ns)     timestamp[us, UTC]; naive timestamps are taken as UTC,
                              zoned ones converted to UTC; ns values must be whole µs
date                          timestamp: midnight UTC
string (ISO 8601 text)        timestamp / date, parsed by DuckDB; text without an
                              offset is UTC; unparsable text fails its row
large_string, string_view,    string / bytes (same values)
dictionary<string>, binary,
large_binary, binary_view
list<x>, large_list<x>,       list<y>, element by element with these rules (so Polars'
list_view<x>, fixed_size_list large_list<large_string> is list<string>); a list with an
                              element that has no exact cast fails its row
all-null column               any type
============================  ===================================================

Anything else (text to numbers, numbers to text, bool to or from numbers, timestamp to
date) is not cast: every non-null value of the column fails the ``dtype`` rule.

NaN and ±inf are values, never nulls: a float field refuses them unless it declares
``allow_nan=True`` (the ``nan`` rule of :mod:`.validation`). The exceptions are pandas float
columns and CSV text, which write a missing value as NaN: there NaN is read as null
(recorded as a ``nan_as_null`` step with its count), unless the field allows NaN, in which
case it is kept; pandas' masked and Arrow-backed dtypes tell NA from NaN themselves.

Columns the view declares but the input lacks: a join key, the timestamp columns and a
non-nullable field without a default are required (an :class:`IngestionError`); a missing
field with a ``default`` is filled with that default, a missing nullable field with nulls.
Nulls *present* in the input are never replaced by defaults: they are judged by the
nullability rule. Input columns the view does not declare are an error; drop or rename
them with a column map (``{"old": "new"}``, ``{"unwanted": None}`` drops a column).

>>> import pyarrow as pa
>>> out, bad, rule = cast_exact(pa.chunked_array([pa.array([1, 2], pa.int32())]), "int64")
>>> out.type, bad, rule
(DataType(int64), None, 'int32->int64')
>>> _, bad, _ = cast_exact(pa.chunked_array([pa.array([1.0, 2.5])]), "int64")
>>> bad.tolist()
[False, True]
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from featureledger.errors import IngestionError
from featureledger.model.bounds import shorten
from featureledger.model.definitions import check_name
from featureledger.model.types import to_arrow

if TYPE_CHECKING:
    import pyarrow as pa

    from featureledger.model.definitions import FeatureView

COMMIT_ID_COLUMN = "_commit_id"
COMMIT_TIME_COLUMN = "_commit_time"


@dataclass(frozen=True)
class StoredColumn:
    name: str
    dtype: str
    role: str  # key, timestamp, created_timestamp, feature
    nullable: bool
    default: Any = None
    allow_nan: bool = False


def stored_columns(view: FeatureView) -> list[StoredColumn]:
    """The columns every stored row of ``view`` has, before the commit columns."""
    cols = [StoredColumn(k, t, "key", False) for k, t in view.join_keys.items()]
    cols.append(StoredColumn(view.timestamp_field, "timestamp", "timestamp", False))
    if view.created_timestamp_field:
        cols.append(StoredColumn(view.created_timestamp_field, "timestamp",
                                 "created_timestamp", False))
    cols += [StoredColumn(f.name, f.dtype, "feature", f.nullable, f.default, f.allow_nan)
             for f in view.fields]
    return cols


def stored_schema(view: FeatureView) -> pa.Schema:
    """The Arrow schema of the view's stored Parquet files (with the commit columns)."""
    import pyarrow as pa

    fields = [pa.field(c.name, to_arrow(c.dtype)) for c in stored_columns(view)]
    fields += [pa.field(COMMIT_ID_COLUMN, pa.string()),
               pa.field(COMMIT_TIME_COLUMN, pa.timestamp("us", tz="UTC"))]
    return pa.schema(fields)


@dataclass
class Conformed:
    """The input shaped to the stored schema."""

    table: pa.Table
    cast_failures: dict[str, np.ndarray] = field(default_factory=dict)  # column -> bad rows
    cast_notes: dict[str, str] = field(default_factory=dict)  # column -> what failed
    steps: list[dict[str, Any]] = field(default_factory=list)


def names_text(names: Collection[str], limit: int = 30) -> str:
    """Column names for a message: each cut, at most ``limit`` of them, then a count (an
    input's header is data too, and may be of any size)."""
    names = list(names)
    shown = ", ".join(shorten(n, 60) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def apply_column_map(table: pa.Table, column_map: dict[str, str | None] | None
                     ) -> tuple[pa.Table, dict[str, Any] | None]:
    """Rename (``{"old": "new"}``) and drop (``{"old": None}``) input columns; a new name
    follows the name rule of every column (:func:`~featureledger.model.definitions.check_name`)."""
    if not column_map:
        return table, None
    for src, dst in column_map.items():
        if dst is not None:
            try:
                check_name("column map target", dst)
            except ValueError as exc:
                raise IngestionError(f"column map {shorten(src, 60)} -> {exc}") from None
    missing = [c for c in column_map if c not in table.column_names]
    if missing:
        raise IngestionError(
            f"column map names input column(s) {names_text(missing)} that the "
            f"data does not have; its columns are: {names_text(table.column_names)}"
        )
    keep = [c for c in table.column_names if column_map.get(c, c)]
    names = [column_map.get(c) or c for c in keep]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise IngestionError(
            f"after the column map, column(s) {', '.join(dupes)} appear twice; map only one "
            "input column to each name"
        )
    out = table.select(keep).rename_columns(names)
    return out, {"step": "map_columns",
                 "params": {k: v for k, v in sorted(column_map.items())}}


def _is_string(t: pa.DataType) -> bool:
    import pyarrow as pa

    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def _is_binary(t: pa.DataType) -> bool:
    import pyarrow as pa

    return (pa.types.is_binary(t) or pa.types.is_large_binary(t)
            or pa.types.is_binary_view(t) or pa.types.is_fixed_size_binary(t))


def _is_list(t: pa.DataType) -> bool:
    import pyarrow as pa

    return (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_list_view(t)
            or pa.types.is_large_list_view(t) or pa.types.is_fixed_size_list(t))


def _cast_list(arr: pa.ChunkedArray, dtype: str, rule: str
               ) -> tuple[pa.ChunkedArray, np.ndarray | None, str]:
    """A list column cast element by element with the scalar rules; a list with any
    element that has no exact cast fails its row (Polars gives large_list<large_string>,
    Arrow list<string>: the same values)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    elem = dtype[5:-1]
    target = to_arrow(dtype)
    out_chunks, bad_chunks, inner_rule = [], [], None
    for chunk in arr.chunks:
        n = len(chunk)
        flat = pc.list_flatten(chunk)  # the elements of non-null lists, nulls inside kept
        values, bad_values, inner_rule = cast_exact(pa.chunked_array([flat], flat.type), elem)
        lengths = pc.fill_null(pc.list_value_length(chunk), 0).to_numpy(zero_copy_only=False)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
        out_chunks.append(pa.ListArray.from_arrays(
            pa.array(offsets), values.combine_chunks(), type=target,
            mask=pc.is_null(chunk) if chunk.null_count else None))
        if bad_values is None:
            bad_chunks.append(np.zeros(n, dtype=bool))
        else:
            parents = pc.list_parent_indices(chunk).to_numpy(zero_copy_only=False)
            bad_chunks.append(np.bincount(parents[bad_values], minlength=n) > 0)
    bad = np.concatenate(bad_chunks) if bad_chunks else np.zeros(0, dtype=bool)
    out = pa.chunked_array(out_chunks, target)
    if bad.any():
        out = pc.if_else(pa.chunked_array([pa.array(bad)]), pa.scalar(None, target), out)
        return out, bad, rule
    return out, None, rule + (f" (elements: {inner_rule})" if inner_rule else "")


def _mask(arr: Any) -> np.ndarray | None:
    """A boolean numpy mask from an Arrow boolean (nulls = False); None when all False."""
    import pyarrow.compute as pc

    filled = pc.fill_null(arr, False)
    if not pc.any(filled).as_py():
        return None
    return np.asarray(filled.to_numpy(zero_copy_only=False), dtype=bool)


def _parse_text(arr: pa.ChunkedArray, dtype: str) -> pa.ChunkedArray:
    import pyarrow as pa

    from featureledger.offline.duckdb.sandbox import sandboxed_connection

    con = sandboxed_connection()
    try:
        con.register("_in", pa.table({"v": arr}))
        sql_type = "TIMESTAMPTZ" if dtype == "timestamp" else "DATE"
        out = con.sql(f"SELECT TRY_CAST(v AS {sql_type}) AS v FROM _in").to_arrow_table()
    finally:
        con.close()
    return out.column(0).cast(to_arrow(dtype))


def cast_exact(arr: pa.ChunkedArray, dtype: str
               ) -> tuple[pa.ChunkedArray, np.ndarray | None, str | None]:
    """Cast ``arr`` to ``dtype`` exactly.

    Returns the cast column (failed values become null), a mask of the rows whose value
    has no exact cast (None when there are none) and the rule applied (None: no cast).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    target = to_arrow(dtype)
    src = arr.type
    if src == target:
        return arr, None, None
    if pa.types.is_dictionary(src):
        arr = arr.cast(src.value_type)
        out, bad, rule = cast_exact(arr, dtype)
        return out, bad, f"decode dictionary; {rule}" if rule else "decode dictionary"
    rule = f"{src}->{dtype}"
    if pa.types.is_null(src):
        return pa.chunked_array([pa.nulls(len(arr), target)]), None, rule
    numeric = (pa.types.is_integer(src) or pa.types.is_floating(src))
    if pa.types.is_floating(src) and dtype == "float32":
        out = pc.cast(arr, target, safe=False)
        # rounding is accepted (see the module doc); overflow to infinity is not
        bad = _mask(pc.and_(pc.is_inf(out), pc.is_finite(arr)))
        if bad is not None:
            out = pc.if_else(pa.chunked_array([pa.array(bad)]), pa.scalar(None, target), out)
        return out, bad, rule + " (rounded to nearest)" if src != pa.float16() else rule
    if numeric and dtype in ("int32", "int64", "float32", "float64"):
        out = pc.cast(arr, target, safe=False)
        back = pc.cast(out, src, safe=False)
        differs = pc.not_equal(back, arr)
        if pa.types.is_floating(src) and pa.types.is_floating(target):
            differs = pc.and_(differs, pc.invert(pc.is_nan(arr)))  # NaN is NaN in any float
        bad = _mask(differs)
        if bad is not None:
            out = pc.if_else(pa.chunked_array([pa.array(bad)]), pa.scalar(None, target), out)
        return out, bad, rule
    if dtype == "string" and _is_string(src):
        return arr.cast(target), None, rule
    if dtype == "bytes" and _is_binary(src):
        return arr.cast(target), None, rule
    if dtype == "timestamp" and pa.types.is_timestamp(src):
        bad = None
        if src.unit == "ns":
            ints = arr.cast(pa.int64())
            bad = _mask(pc.not_equal(pc.multiply(pc.divide(ints, 1000), 1000), ints))
        out = pc.cast(arr, pa.timestamp("us", tz=src.tz), safe=False)
        if src.tz is None:
            rule += " (naive = UTC)"
        out = out.cast(target)  # same instants; naive values are read as UTC
        if bad is not None:
            out = pc.if_else(pa.chunked_array([pa.array(bad)]), pa.scalar(None, target), out)
        return out, bad, rule
    if dtype == "timestamp" and pa.types.is_date(src):
        return pc.cast(pc.cast(arr, pa.timestamp("us")), target), None, rule + " (midnight UTC)"
    if dtype in ("timestamp", "date") and _is_string(src):
        out = _parse_text(arr, dtype)
        bad = _mask(pc.and_(pc.is_valid(arr), pc.is_null(out)))
        return out, bad, rule + " (ISO 8601; no offset = UTC)"
    if dtype == "date" and pa.types.is_date(src):
        return arr.cast(target), None, rule
    if dtype.startswith("list<") and _is_list(src):
        return _cast_list(arr, dtype, rule)
    # no exact cast: every present value fails its row
    bad = _mask(pc.is_valid(arr))
    return pa.chunked_array([pa.nulls(len(arr), target)]), bad, None


def _default_column(col: StoredColumn, n: int) -> pa.Array:
    import pyarrow as pa

    target = to_arrow(col.dtype)
    try:
        scalar = pa.scalar(col.default)
        if scalar.type != target:
            arr, bad, _ = cast_exact(pa.chunked_array([pa.array([col.default])]), col.dtype)
            if bad is not None:
                raise IngestionError(
                    f"default {shorten(col.default)} of field {col.name!r} cannot be stored "
                    f"as {col.dtype}; fix the definition"
                )
            scalar = arr[0]
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        raise IngestionError(
            f"default {shorten(col.default)} of field {col.name!r} cannot be stored as "
            f"{col.dtype}; fix the definition"
        ) from None
    return pa.repeat(scalar, n)


def _nan_to_null(arr: pa.ChunkedArray) -> tuple[pa.ChunkedArray, int]:
    import pyarrow as pa
    import pyarrow.compute as pc

    if not pa.types.is_floating(arr.type):
        return arr, 0
    nan = pc.fill_null(pc.is_nan(arr), False)
    count = int(pc.sum(nan).as_py() or 0)
    if count == 0:
        return arr, 0
    return pc.if_else(nan, pa.scalar(None, arr.type), arr), count


def conform(table: pa.Table, view: FeatureView, *,
            nan_marks_missing: Collection[str] = ()) -> Conformed:
    """Shape ``table`` (already mapped) to ``view``'s stored columns (see module doc).

    ``nan_marks_missing`` names input columns whose NaN is how the input writes a missing
    value (pandas float columns, "NaN" text in CSV): there NaN is read as null, unless the
    field declares ``allow_nan=True``, which says that NaN is a value.
    """
    import pyarrow as pa

    cols = stored_columns(view)
    declared = {c.name for c in cols}
    extra = [c for c in table.column_names if c not in declared]
    if extra:
        raise IngestionError(
            f"input column(s) {names_text(extra)} are not in feature view "
            f"{view.name!r} (its columns: {', '.join(c.name for c in cols)}); map them to "
            "field names or drop them with a column map (e.g. --map old=new, --map unwanted=)"
        )
    missing_required = [c.name for c in cols
                        if c.name not in table.column_names and not c.nullable
                        and c.default is None]
    if missing_required:
        raise IngestionError(
            f"input lacks required column(s) {names_text(missing_required)} of "
            f"feature view {view.name!r}; add them or map input columns onto them "
            "(join keys and timestamps are always required; so is a non-nullable field "
            "without a default)"
        )
    n = table.num_rows
    result = Conformed(table)
    arrays: list[Any] = []
    for col in cols:
        if col.name not in table.column_names:
            if col.default is not None:
                arrays.append(pa.chunked_array([_default_column(col, n)]))
                result.steps.append({"step": "fill_default", "column": col.name,
                                     "params": {"value": col.default}})
            else:
                arrays.append(pa.chunked_array([pa.nulls(n, to_arrow(col.dtype))]))
                result.steps.append({"step": "fill_null", "column": col.name, "params": {}})
            continue
        src = table.column(col.name)
        if col.name in nan_marks_missing and not col.allow_nan:
            src, count = _nan_to_null(src)
            if count:
                result.steps.append({"step": "nan_as_null", "column": col.name, "params": {
                    "values": count, "why": "the input writes a missing value as NaN"}})
        out, bad, rule = cast_exact(src, col.dtype)
        if rule is not None:
            result.steps.append({"step": "cast", "column": col.name,
                                 "params": {"from": str(src.type), "to": col.dtype,
                                            "rule": rule}})
        if bad is not None:
            result.cast_failures[col.name] = bad
            result.cast_notes[col.name] = (
                f"{src.type} value has no exact {col.dtype} form; convert the column to "
                f"{col.dtype} before ingesting if the change is intended" if rule
                else f"{src.type} cannot be stored as {col.dtype}; convert the column first"
            )
        arrays.append(out)
    result.table = pa.Table.from_arrays(
        arrays, schema=pa.schema([pa.field(c.name, to_arrow(c.dtype)) for c in cols])
    )
    return result
