"""Reading ingestion input into one Arrow table, with a description and a content digest.

Accepted input: a pandas DataFrame, a ``pyarrow.Table`` or ``RecordBatchReader``, a Polars
DataFrame (or LazyFrame), a path or glob of Parquet / CSV files, or ``None`` for the view's
own :class:`~featureledger.model.definitions.FileSource`.

Where files may be read from: with a repository (``base``, the folder of
featureledger.yaml), a relative path is relative to it, and every file read (after ``..``
and symbolic links are followed) must lie inside it or under one of the folders listed as
``sources: {allowed_prefixes: [...]}`` in featureledger.yaml. Anything else (an absolute
path elsewhere, ``../../etc/passwd``, a link out of the repository) is refused with a
:class:`~featureledger.errors.SourcePathError` naming the path and the setting, before a
byte of it is read. An error never shows what a file holds: a line of a file that could
not be parsed is named by its number, not its text.

CSV is read strictly (:mod:`featureledger.ingest.csvstrict`): a line with a stray quote or
the wrong number of fields is a :class:`~featureledger.errors.CsvFormatError` naming the
line, or, when ingesting with ``mode="drop_invalid"``, is left out and listed in the
validation report; never are several records folded into one field.

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

from featureledger.errors import CsvFormatError, IngestionError, SourcePathError
from featureledger.ingest.csvstrict import dialect, scan_csv, without_lines
from featureledger.model.bounds import cut
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
    # CSV lines left out because they could not be parsed (bad_lines="skip"): how many,
    # and the first of them ({"file", "line", "problem"})
    unparsed_count: int = 0
    unparsed: tuple[dict[str, Any], ...] = ()

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


MAX_LISTED_LINES = 20  # lines named in a CSV error or report


@dataclass(frozen=True)
class SourceRoots:
    """Where input files may be read from: the repository and the allowed prefixes (all
    real paths: symbolic links resolved)."""

    repository: str
    prefixes: tuple[str, ...] = ()

    @classmethod
    def of(cls, base: str | os.PathLike[str], prefixes: Any = ()) -> SourceRoots:
        root = os.path.realpath(os.fspath(base))
        return cls(root, tuple(os.path.realpath(os.path.join(root, os.path.expanduser(p)))
                               for p in prefixes))

    def allows(self, real: str) -> bool:
        return any(_within(real, r) for r in (self.repository, *self.prefixes))

    def refuse(self, shown: str, real: str) -> SourcePathError:
        listed = ", ".join(self.prefixes) if self.prefixes else "none listed"
        leads = "is" if os.path.abspath(shown) == real else f"leads to {cut(real)},"
        return SourcePathError(
            f"source path {cut(shown)!r} {leads} outside the repository "
            f"{self.repository}; files elsewhere are read only under a folder listed in "
            f"featureledger.yaml as sources: {{allowed_prefixes: [...]}} (now: {listed}). "
            "Move the file into the repository, or list its folder there", path=shown)


def _within(path: str, folder: str) -> bool:
    try:
        return os.path.commonpath([path, folder]) == folder
    except ValueError:  # different drives
        return False


def _static_part(pattern: str) -> str:
    """The leading components of a glob pattern that hold no wildcard."""
    parts = Path(pattern).parts
    keep = []
    for part in parts:
        if any(ch in part for ch in "*?["):
            break
        keep.append(part)
    return os.path.join(*keep) if keep else os.sep


def _expand(path: str, shown: str, roots: SourceRoots | None) -> list[Path]:
    """The files ``path`` (absolute, or relative to the current folder when there is no
    repository) names: itself, a folder's files, or a glob's matches; each checked
    against ``roots`` with links followed."""
    p = os.path.expanduser(path)
    is_glob = any(ch in p for ch in "*?[")
    if roots is not None:
        # the part before any wildcard first: nothing outside is even listed
        real = os.path.realpath(_static_part(p) if is_glob else p)
        if not roots.allows(real):
            raise roots.refuse(shown, real)
    if is_glob:
        matches = sorted(Path(m) for m in globlib.glob(p, recursive=True))
        files = [m for m in matches if m.is_file()]
    elif os.path.isdir(p):
        files = sorted(f for f in Path(p).rglob("*") if f.is_file() and not f.name.startswith("."))
    else:
        files = [Path(p)] if os.path.isfile(p) else []
    if not files:
        where = ("relative paths are relative to the repository folder "
                 f"{roots.repository}" if roots is not None
                 else "relative paths are relative to the current folder")
        raise IngestionError(
            f"no input file matches {cut(shown)!r}; check the path ({where}) or the glob "
            "pattern"
        )
    if roots is not None:
        for f in files:  # a link inside the repository may lead out of it
            real = os.path.realpath(f)
            if not roots.allows(real):
                raise roots.refuse(str(f), real)
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
                text_types: dict[str, Any] | None = None, bad_lines: str = "error",
                unparsed: list[dict[str, Any]] | None = None) -> pa.Table:
    import pyarrow as pa

    tables = []
    for f in files:
        try:
            if fmt == "csv":
                tables.append(_read_csv(f, options, text_types, bad_lines, unparsed))
            else:
                import pyarrow.parquet as pq

                tables.append(pq.read_table(f, **options))
        except (pa.ArrowException, OSError) as exc:
            raise IngestionError(f"cannot read {f} as {fmt}: {_arrow_problem(exc)}") from None
    if len(tables) == 1:
        return tables[0]
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise IngestionError(
            f"the {len(files)} input files do not share one schema "
            f"({_arrow_problem(exc)}); ingest them separately or make their columns agree"
        ) from None


def _arrow_problem(exc: BaseException) -> str:
    """A reader's error without the data it quotes: pyarrow's CSV errors append the text
    of the row or the value they stumbled on, which may be anything (a password file)."""
    import re

    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    text = re.sub(r"(Expected \d+ columns?, got \d+).*", r"\1 (the line is not shown)", text)
    text = re.sub(r"(invalid value).*", r"\1 (not shown)", text)
    return cut(text, 300)


def _read_csv(f: Path, options: dict[str, Any], text_types: dict[str, Any] | None,
              bad_lines: str, unparsed: list[dict[str, Any]] | None) -> pa.Table:
    import numpy as np
    import pyarrow as pa
    from pyarrow import csv

    opts = dict(options)
    if "convert_options" not in opts:
        # text is parsed straight to the declared type (e.g. "0.1" to the nearest
        # float32), which is reading, not casting a double. "NaN" text is read as the
        # float NaN, not as null: like pandas, CSV writes a missing number as NaN, and the
        # field decides (see _nan_columns)
        opts["convert_options"] = csv.ConvertOptions(
            column_types=text_types or {}, null_values=list(_csv_null_values()))
    scan = dialect(options)
    if scan is None:  # the source's own parse options rule
        return csv.read_csv(f, **opts)
    # the bytes once, mapped (or decompressed), checked line by line, then parsed from
    # the same buffer
    if f.name.lower().endswith(".gz"):
        buf = pa.input_stream(str(f), compression="gzip").read_buffer()
    else:
        buf = pa.memory_map(str(f)).read_buffer()
    problems, bad = scan_csv(np.frombuffer(buf, dtype=np.uint8), *scan)
    if not problems:
        return csv.read_csv(pa.BufferReader(buf), **opts)
    listed = "; ".join(f"line {p.line}: {p.problem}" for p in problems[:MAX_LISTED_LINES])
    more = len(problems) - MAX_LISTED_LINES
    header_bad = problems[0].line == 1 or "header" in problems[0].problem
    if bad_lines == "error" or header_bad:
        raise CsvFormatError(
            f"{f} is not strict CSV, so nothing was read: {listed}"
            + (f"; and {more} more line(s)" if more > 0 else "")
            + ". Each line must be one record with the header's fields: quote a whole value "
            '("a,b"), double a quote inside it (""), and give every line the header\'s '
            "number of fields"
            + ("" if header_bad else "; or ingest with mode='drop_invalid' (CLI: --mode "
               "drop_invalid) to leave these lines out and list them in the report"),
            [p.to_dict(str(f)) for p in problems[:MAX_LISTED_LINES]], len(problems))
    if unparsed is not None:
        unparsed.extend(p.to_dict(str(f)) for p in problems)
    kept = without_lines(np.frombuffer(buf, dtype=np.uint8), bad)
    return csv.read_csv(pa.BufferReader(pa.py_buffer(kept)), **opts)


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
               allowed_prefixes: Any = (),
               text_types: dict[str, Any] | None = None,
               bad_lines: str = "error") -> InputData:
    """Read ``data`` (or the view's own file source when ``data`` is None).

    With ``base`` (the repository folder), a relative path, the view's own or one passed
    as ``data``, is relative to it, and only files inside it or under
    ``allowed_prefixes`` are read (see the module doc); without it, a path is taken as
    given. ``text_types`` maps CSV column names to the Arrow type their text is parsed
    as. ``bad_lines`` says what a CSV line that is not one record does: ``"error"``
    raises :class:`~featureledger.errors.CsvFormatError`, ``"skip"`` leaves it out and
    counts it in :attr:`InputData.unparsed_count`.

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
    nan_columns: tuple[str, ...] = ()
    unparsed: list[dict[str, Any]] = []
    if isinstance(data, (str, os.PathLike)):
        shown = os.fspath(data)
        path = os.path.expanduser(shown)
        roots = None
        if base is not None:
            roots = SourceRoots.of(base, allowed_prefixes)
            path = os.path.normpath(os.path.join(os.fspath(base), path))
        files = _expand(path, shown, roots)
        fmt = _format_of(files, file_format)
        table = _read_files(files, fmt, options, text_types, bad_lines, unparsed)
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
    out = InputData(table, desc, nan_columns, len(unparsed), tuple(unparsed[:MAX_LISTED_LINES]))
    if digest and not out.has_digest:
        out.set_digest(arrow_digest(table))
    return out
