"""Reading ingestion input into one Arrow table, with a description and a content digest.

Accepted input: a pandas DataFrame, a ``pyarrow.Table`` or ``RecordBatchReader``, a Polars
DataFrame (or LazyFrame), a path or glob of Parquet / CSV files, or ``None`` for the view's
own :class:`~featureledger.model.definitions.FileSource`.

The description's ``uri`` names the source in the lineage graph and in OpenLineage events
(:mod:`featureledger.registry.lineage_edges` has the scheme): the absolute ``file://`` URI
of a path or glob (for the view's own source, its declared path resolved against the
project folder, which is the node its definition's ``feeds`` edge names), or
``memory:sha256:<digest>`` for in-memory data, the same frame always being the same node.

The digest identifies what was read:

* files: sha256 over the bytes of every matched file, in sorted path order;
* in-memory data: sha256 over the Arrow form of the data as received (column names, types
  and the bytes of every buffer of every chunk), so the same frame gives the same digest.

>>> import pyarrow as pa
>>> src = read_input(pa.table({"x": [1, 2]}), None)
>>> src.description["kind"], src.description["rows"], len(src.description["digest"])
('arrow', 2, 64)
"""

from __future__ import annotations

import functools
import glob as globlib
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from featureledger.errors import IngestionError
from featureledger.registry.lineage_edges import file_source_uri, frame_source_uri

if TYPE_CHECKING:
    import pyarrow as pa

    from featureledger.model.definitions import FeatureView


@dataclass
class InputData:
    """The input as one Arrow table, and how to describe it in the commit."""

    table: pa.Table
    description: dict[str, Any]  # kind, uri, format, files, rows, columns, digest
    # columns whose NaN is how the input writes a missing value (pandas float columns,
    # "NaN" in CSV); their NaN stays NaN here, and becomes null unless the field allows NaN
    nan_marks_missing: tuple[str, ...] = ()

    @property
    def uri(self) -> str:
        return str(self.description["uri"])

    @property
    def has_digest(self) -> bool:
        return "digest" in self.description

    def set_digest(self, digest: str) -> None:
        """Record the digest of in-memory data (computed later, e.g. on another thread)."""
        self.description["digest"] = digest
        self.description["uri"] = frame_source_uri(digest)


def arrow_digest(table: pa.Table) -> str:
    """sha256 over an Arrow table's column names, types and buffers (no copies)."""
    h = hashlib.sha256()
    for name, col in zip(table.column_names, table.columns, strict=True):
        h.update(f"{name}\x00{col.type}\x00".encode())
        for chunk in col.chunks:
            h.update(f"{chunk.offset}:{len(chunk)}\x00".encode())
            for buf in chunk.buffers():
                if buf is not None:
                    h.update(buf)
    return h.hexdigest()


def _from_pandas(data: Any) -> tuple[pa.Table, tuple[str, ...]]:
    """A pandas frame as Arrow, NaN kept as NaN in numpy float columns (Arrow's own
    conversion makes it null); returns the table and the names of those columns."""
    import numpy as np
    import pyarrow as pa

    # a named index holds data (e.g. the keys); an unnamed one is only positions
    keep = any(name is not None for name in data.index.names)
    try:
        table = pa.Table.from_pandas(data, preserve_index=keep)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise IngestionError(
            f"the pandas DataFrame cannot be converted to Arrow: {exc}. Give each "
            "column one type (mixed object columns cannot be stored)."
        ) from None
    nan_columns = []
    for i, (name, dtype) in enumerate(data.dtypes.items()):
        # masked (Float64) and Arrow-backed columns tell NA from NaN; numpy floats cannot
        if isinstance(dtype, np.dtype) and dtype.kind == "f":
            values = data.iloc[:, i].to_numpy()
            pos = table.schema.get_field_index(str(name))  # -1: not one column of that name
            if pos >= 0 and np.isnan(values).any():
                table = table.set_column(pos, table.field(pos),
                                         pa.array(values, from_pandas=False))
                nan_columns.append(str(name))
    return table, tuple(nan_columns)


def _from_memory(data: Any) -> tuple[pa.Table, str, tuple[str, ...]] | None:
    import pyarrow as pa

    if isinstance(data, pa.Table):
        return data, "arrow", ()
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data]), "arrow", ()
    if isinstance(data, pa.RecordBatchReader):
        return data.read_all(), "arrow", ()
    module = type(data).__module__.split(".")[0]
    if module == "pandas":
        import pandas as pd

        if isinstance(data, pd.DataFrame):
            table, nan_columns = _from_pandas(data)
            return table, "pandas", nan_columns
    if module == "polars":
        if hasattr(data, "collect") and not hasattr(data, "to_arrow"):
            data = data.collect()  # a LazyFrame
        if hasattr(data, "to_arrow"):
            return data.to_arrow(), "polars", ()
    return None


def _expand(path: str) -> list[Path]:
    p = os.path.expanduser(path)
    if any(ch in p for ch in "*?["):
        matches = sorted(Path(m) for m in globlib.glob(p, recursive=True))
        files = [m for m in matches if m.is_file()]
    elif os.path.isdir(p):
        files = sorted(f for f in Path(p).rglob("*") if f.is_file() and not f.name.startswith("."))
    else:
        files = [Path(p)] if os.path.isfile(p) else []
    if not files:
        raise IngestionError(
            f"no input file matches {path!r}; check the path (relative paths are relative "
            "to the current folder) or the glob pattern"
        )
    return [f.absolute() for f in files]


def _format_of(files: list[Path], declared: str | None) -> str:
    if declared:
        return declared
    names = {f.name.lower() for f in files}
    if all(n.endswith((".csv", ".csv.gz")) for n in names):
        return "csv"
    if all(n.endswith((".parquet", ".pq", ".parq")) for n in names):
        return "parquet"
    raise IngestionError(
        f"cannot tell the format of {', '.join(sorted(names)[:5])}; name files *.parquet or "
        "*.csv, or declare format= on the view's FileSource"
    )


def _read_files(files: list[Path], fmt: str, options: dict[str, Any],
                text_types: dict[str, Any] | None = None) -> pa.Table:
    import pyarrow as pa

    tables = []
    for f in files:
        try:
            if fmt == "csv":
                from pyarrow import csv

                opts = dict(options)
                if "convert_options" not in opts:
                    # text is parsed straight to the declared type (e.g. "0.1" to the
                    # nearest float32), which is reading, not casting a double. "NaN" text
                    # is read as the float NaN, not as null: like pandas, CSV writes a
                    # missing number as NaN, and the field decides (see _csv_nan_columns)
                    opts["convert_options"] = csv.ConvertOptions(
                        column_types=text_types or {}, null_values=list(_csv_null_values()))
                tables.append(csv.read_csv(f, **opts))
            else:
                import pyarrow.parquet as pq

                tables.append(pq.read_table(f, **options))
        except (pa.ArrowException, OSError) as exc:
            raise IngestionError(f"cannot read {f} as {fmt}: {exc}") from None
    if len(tables) == 1:
        return tables[0]
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise IngestionError(
            f"the {len(files)} input files do not share one schema ({exc}); ingest them "
            "separately or make their columns agree"
        ) from None


@functools.cache
def _csv_null_values() -> tuple[str, ...]:
    """pyarrow's CSV null markers but the NaN spellings."""
    from pyarrow import csv

    return tuple(v for v in csv.ConvertOptions().null_values if v.lstrip("-").lower() != "nan")


def _nan_columns(table: pa.Table) -> tuple[str, ...]:
    """Float columns holding a NaN."""
    import pyarrow as pa
    import pyarrow.compute as pc

    return tuple(name for name, col in zip(table.column_names, table.columns, strict=True)
                 if pa.types.is_floating(col.type) and pc.any(pc.is_nan(col)).as_py())


def _file_digest(files: list[Path]) -> str:
    h = hashlib.sha256()
    for f in files:
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()


def read_input(data: Any, view: FeatureView | None, *, source_name: str | None = None,
               file_format: str | None = None, digest: bool = True,
               base: str | os.PathLike[str] | None = None,
               text_types: dict[str, Any] | None = None) -> InputData:
    """Read ``data`` (or the view's own file source when ``data`` is None).

    A relative path of the view's own source is relative to ``base`` (the project
    folder); a path passed as ``data`` is taken as given (relative to the current folder).
    ``text_types`` maps CSV column names to the Arrow type their text is parsed as.

    ``digest=False`` leaves the digest of in-memory data to the caller
    (:func:`arrow_digest`, then :meth:`InputData.set_digest`).
    """
    options: dict[str, Any] = {}
    declared = None
    if data is None:
        src = getattr(view, "source", None)
        if src is None or getattr(src, "type", None) != "file":
            name = view.name if view is not None else "?"
            raise IngestionError(
                f"feature view {name!r} has no file source to read; pass the data "
                "(a DataFrame, an Arrow table or a file path) to ingest"
            )
        data, file_format, options = src.path, src.format, dict(src.options)
        declared = src.path
        if base is not None and not os.path.isabs(os.path.expanduser(data)):
            data = os.path.join(base, data)
    nan_columns: tuple[str, ...] = ()
    if isinstance(data, (str, os.PathLike)):
        path = os.fspath(data)
        files = _expand(path)
        fmt = _format_of(files, file_format)
        table = _read_files(files, fmt, options, text_types)
        if fmt == "csv" and "convert_options" not in options:
            nan_columns = _nan_columns(table)
        desc: dict[str, Any] = {
            "kind": "file",
            "format": fmt,
            # absolute, so the view's own source, however it was named, is one node
            "uri": file_source_uri(path),
            "files": [{"path": str(f), "bytes": f.stat().st_size} for f in files],
            "digest": _file_digest(files),
        }
        if declared is not None:
            desc["declared_path"] = declared
    else:
        got = _from_memory(data)
        if got is None:
            raise IngestionError(
                f"cannot ingest a {type(data).__name__}; pass a pandas or Polars DataFrame, "
                "a pyarrow Table / RecordBatchReader, or a Parquet/CSV path or glob"
            )
        table, kind, nan_columns = got
        desc = {"kind": kind, "uri": "memory:"}  # named by its digest once that is known
    if source_name:
        desc["name"] = source_name
    desc["rows"] = table.num_rows
    desc["columns"] = {n: str(t) for n, t in
                       zip(table.column_names, table.schema.types, strict=True)}
    out = InputData(table, desc, nan_columns)
    if digest and not out.has_digest:
        out.set_digest(arrow_digest(table))
    return out
