"""Frames in and out: pandas, Polars, Arrow and plain Python, to and from Arrow tables.

Every part that takes rows from a caller (ingestion, push, training-set entity rows, online
entity rows) reads them through :func:`read_frame`, and every result that offers pandas
or Polars converts through :func:`to_pandas` / :func:`to_polars`, so the same input means
the same thing everywhere and a new frame library is added in one place.

>>> read_frame({"k": [1, 2], "v": ["a", "b"]}).table.num_rows
2
>>> read_frame([{"k": 1}], scalars=False).kind
'rows'
>>> read_frame(object()) is None
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

ACCEPTED = ("a pandas, Polars or Spark DataFrame, a pyarrow Table, RecordBatch or "
            "RecordBatchReader, a dict of columns or a list of row dicts")


@dataclass(frozen=True)
class Frame:
    """Rows read from a caller's object, as Arrow."""

    table: pa.Table
    kind: str  # arrow, pandas, polars, columns, rows, arrow_stream
    # pandas float columns whose NaN were kept as NaN (Arrow's own conversion makes them
    # null); the caller decides per field whether NaN is allowed
    nan_columns: tuple[str, ...] = ()


class FrameError(Exception):
    """An object that is a frame but cannot be read (``reason`` says why)."""


def read_frame(data: Any, *, scalars: bool = True, keep_nan: bool = False) -> Frame | None:
    """``data`` as an Arrow table, or None when it is no frame this module knows.

    ``scalars`` lets a dict map a column to one value (a single row, as a push may send);
    ``keep_nan`` keeps pandas NaN as NaN in float columns (and names those columns).
    Raises FrameError when ``data`` is a frame that cannot be converted.
    """
    import pyarrow as pa

    if isinstance(data, pa.Table):
        return Frame(data, "arrow")
    if isinstance(data, pa.RecordBatch):
        return Frame(pa.Table.from_batches([data]), "arrow")
    if isinstance(data, pa.RecordBatchReader):
        return Frame(data.read_all(), "arrow")
    if isinstance(data, dict):
        try:
            if scalars:
                data = {k: v if isinstance(v, (list, tuple, pa.Array, pa.ChunkedArray))
                        or hasattr(v, "__array__") else [v] for k, v in data.items()}
            return Frame(pa.table(data), "columns")
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
            raise FrameError(f"the columns cannot be read: {exc}") from None
    if isinstance(data, list) and all(isinstance(r, dict) for r in data):
        try:
            return Frame(pa.Table.from_pylist(data), "rows")
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
            # mixed types across rows, or an integer beyond 64 bits
            raise FrameError(f"the rows cannot be read: {exc}") from None
    module = type(data).__module__.split(".")[0]
    if module == "pandas" and hasattr(data, "columns"):
        return _from_pandas(data, keep_nan)
    if module == "polars":
        if hasattr(data, "collect") and not hasattr(data, "to_arrow"):
            data = data.collect()  # a LazyFrame
        if hasattr(data, "to_arrow"):
            return Frame(data.to_arrow(), "polars")
    if module == "pyspark" and hasattr(data, "schema") and hasattr(data, "collect"):
        return _from_spark(data)
    if hasattr(data, "__arrow_c_stream__"):
        return Frame(pa.table(data), "arrow_stream")
    return None


def _from_spark(data: Any) -> Frame:
    """A Spark DataFrame collected to the driver as Arrow (pyspark is not imported here:
    a Spark frame only exists where it is installed)."""
    import pyarrow as pa

    try:
        if hasattr(data, "toArrow"):  # Spark 4
            return Frame(data.toArrow(), "spark")
        from pyspark.sql.pandas.types import to_arrow_schema

        batches = data._collect_as_arrow()  # Spark 3.5
        return Frame(pa.Table.from_batches(batches, schema=to_arrow_schema(data.schema)),
                     "spark")
    except Exception as exc:  # Spark's and py4j's errors have no common base to name
        raise FrameError(f"the Spark DataFrame cannot be collected as Arrow: "
                         f"{str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r}"
                         ) from None


def _from_pandas(data: Any, keep_nan: bool) -> Frame:
    import numpy as np
    import pyarrow as pa

    # a named index holds data (e.g. the keys); an unnamed one is only positions
    keep = any(name is not None for name in data.index.names)
    try:
        table = pa.Table.from_pandas(data, preserve_index=keep)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise FrameError(f"the pandas DataFrame cannot be converted to Arrow: {exc}. Give "
                         "each column one type (mixed object columns cannot be stored)") from None
    nan_columns = []
    if keep_nan:
        for i, (name, dtype) in enumerate(data.dtypes.items()):
            # masked (Float64) and Arrow-backed columns tell NA from NaN; numpy floats cannot
            if isinstance(dtype, np.dtype) and dtype.kind == "f":
                values = data.iloc[:, i].to_numpy()
                pos = table.schema.get_field_index(str(name))  # -1: not one column of it
                if pos >= 0 and np.isnan(values).any():
                    table = table.set_column(pos, table.field(pos),
                                             pa.array(values, from_pandas=False))
                    nan_columns.append(str(name))
    return Frame(table, "pandas", tuple(nan_columns))


def to_pandas(table: pa.Table) -> pd.DataFrame:
    """``table`` as a pandas DataFrame with Arrow-backed dtypes (``pd.ArrowDtype``).

    Every column keeps its declared type: an int64 column with missing values stays
    ``int64[pyarrow]`` (not float64 with NaN), bools stay bools, strings strings, lists
    typed lists, timestamps UTC microseconds; a NaN stays NaN, apart from a null.
    """
    import pandas as pd

    # Arrow-backed rather than pandas' masked dtypes (Int64, Float64, boolean): those
    # turn a NaN into NA and have no typed lists, bytes or dates
    return table.to_pandas(types_mapper=pd.ArrowDtype)


def to_polars(table: pa.Table, what: str) -> Any:
    """``table`` as a Polars DataFrame (``what`` names the caller in a missing-extra error)."""
    try:
        import polars as pl
    except ImportError:
        from featureledger.errors import MissingDependencyError

        raise MissingDependencyError(what, "polars", "polars") from None
    return pl.from_arrow(table)
