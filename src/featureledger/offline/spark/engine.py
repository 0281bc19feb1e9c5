"""The Spark offline engine: the DuckDB engine's answers, computed by Apache Spark.

Every query is set-based DataFrame code over ``spark.read.parquet`` of exactly the files
the offline store hands over; results come back as Arrow with the schema the DuckDB engine
gives, so a training set's content hash is the same whichever engine built it.

Point in time, without a range join: Spark has no as-of join that scales (the private
``DataFrame._joinAsOf`` is rewritten into a join on ``key = key AND ts <= ts`` plus an
aggregation, which grows with rows per key squared). Instead, per view, the entity rows
and the feature rows are unioned, tagged by side, partitioned by the join keys and
ordered by (time, side, created time, commit rank); the running ``last(feature struct,
ignorenulls)`` seen by an entity row is the latest feature row at or before its time.
That is one shuffle and one sort per view, O(n log n), whatever the key skew in time.
Feature rows come before entity rows of the same time (``event_ts <= entity_ts``), and
among feature rows of the same keys and time the one sorted last wins: the later created
time (null lowest), then the later commit. The TTL is applied to the row found, inclusive,
as in DuckDB. With several views the entity side of one view's union is the result of
the previous one, so no join back on the row number is needed.

Commit ranks: like the DuckDB engine, each commit's files are read as their own branch of
a union tagged with a literal rank when commits overlap in event time (only then can rows
tie). Mapping ``input_file_name()`` back to ranks would hang exactness on how Spark spells
paths as URIs (percent-encoding, ``file:`` forms); a literal per branch cannot go wrong,
and a scan whose commits do not overlap is read with one ``parquet`` call per source
version.

Session: one SparkSession per process, created on first use and shared by every engine;
``close()`` releases an engine but leaves the session running (starting one costs
seconds, and a server opens and closes stores), so it lives until the process exits or
:func:`stop_spark_session` is called.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import pyspark
from py4j.protocol import Py4JError
from pyspark.errors import PySparkException
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from featureledger.errors import ConfigError, RetrievalError, StateError, StorageError
from featureledger.offline.engine import (
    ROW_COLUMN,
    ViewScan,
    WindowAggregate,
    aggregate_lower_bound,
    exact_columns,
    exact_scale,
)

if TYPE_CHECKING:
    import pyarrow as pa

    from featureledger.config import ProjectConfig

# Settings every session gets (``conf`` in the config can override the performance ones).
# UTC so timestamps never pass through a local zone; no UI or progress bars in a library.
_FIXED = {"spark.sql.session.timeZone": "UTC"}
_DEFAULTS = {
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    # Parquet written by pyarrow carries no legacy calendar marker: read dates as written
    "spark.sql.parquet.datetimeRebaseModeInRead": "CORRECTED",
    "spark.sql.parquet.int96RebaseModeInRead": "CORRECTED",
}

_LOCK = threading.Lock()
_SESSION: SparkSession | None = None
_MASTER: str | None = None

_SIDE_FEATURE, _SIDE_ENTITY = 0, 1  # feature rows sort before entity rows of the same time


def spark_session(master: str = "local[2]", app_name: str = "featureledger",
                  shuffle_partitions: int = 4, conf: dict[str, str] | None = None
                  ) -> SparkSession:
    """The process's Spark session, created on first call with these settings.

    A later call with another ``master`` is a ConfigError (one process talks to one
    cluster); other settings of a later call are ignored, as Spark's own are.
    """
    global _SESSION, _MASTER
    with _LOCK:
        if _SESSION is not None:
            if master != _MASTER:
                raise ConfigError(
                    f"this process already runs Spark on master {_MASTER!r}; an engine for "
                    f"{master!r} cannot share it. Use one offline_engine.master per process")
            return _SESSION
        builder = SparkSession.builder.master(master).appName(app_name)
        settings = {**_DEFAULTS, "spark.sql.shuffle.partitions": str(shuffle_partitions),
                    **(conf or {}), **_FIXED}
        for key, value in settings.items():
            builder = builder.config(key, value)
        try:
            session = builder.getOrCreate()
        except (PySparkException, Py4JError, OSError) as exc:
            raise ConfigError(
                f"Spark could not start on master {master!r}: {_first_line(exc)}. Check that "
                "Java 17 or newer is installed (JAVA_HOME) and the offline_engine settings "
                "in featureledger.yaml") from None
        session.sparkContext.setLogLevel("ERROR")
        if not _MASTER:
            atexit.register(stop_spark_session)
        _SESSION, _MASTER = session, master
        return session


def stop_spark_session() -> None:
    """Stop the process's Spark session (engines still open start a new one on next use)."""
    global _SESSION
    with _LOCK:
        session, _SESSION = _SESSION, None
    if session is not None:
        session.stop()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# Spark's error classes and Java exceptions that mean a file could not be read
_READ_FAILURES = ("PATH_NOT_FOUND", "FAILED_READ_FILE", "CANNOT_READ_FILE_FOOTER",
                  "FileNotFoundException", "Path does not exist", "is not a Parquet file")


@contextmanager
def _driver_errors(doing: str) -> Iterator[None]:
    """Spark's and py4j's errors as the project's: a file that cannot be read is a
    StorageError (the offline store then names the commit), anything else a
    RetrievalError."""
    try:
        yield
    except (PySparkException, Py4JError) as exc:
        text = str(exc)
        if any(m in text for m in _READ_FAILURES):
            raise StorageError(
                f"reading the offline store failed ({doing}): {_first_line(exc)}. A commit's "
                "files may have been removed or damaged; check them with 'featureledger "
                "commits' and the offline store path") from None
        raise RetrievalError(
            f"the {doing} query failed in Spark: {_first_line(exc)}. Check that the entity "
            "columns have the join keys' types") from None


# -- types -------------------------------------------------------------------------------
def _dtype_of(duckdb_type: str) -> str:
    """The featureledger dtype whose DuckDB type is ``duckdb_type`` (ViewScan keeps those)."""
    from featureledger.model.types import SCALAR_DTYPES, to_duckdb

    if duckdb_type.endswith("[]"):
        return f"list<{_dtype_of(duckdb_type[:-2])}>"
    for d in SCALAR_DTYPES:
        if to_duckdb(d) == duckdb_type:
            return d
    raise RetrievalError(f"internal: no dtype has the DuckDB type {duckdb_type!r}; "
                         "please report this")


def spark_type(dtype: str) -> str:
    """The Spark SQL type (DDL) storing values of ``dtype``.

    >>> spark_type("list<float32>")
    'array<float>'
    """
    from featureledger.model.types import element_dtype

    elem = element_dtype(dtype)
    if elem is not None:
        return f"array<{spark_type(elem)}>"
    return {"bool": "boolean", "int32": "int", "int64": "bigint", "float32": "float",
            "float64": "double", "string": "string", "bytes": "binary",
            "timestamp": "timestamp", "date": "date"}[dtype]


def _literal(value: Any, dtype: str) -> Column:
    """A typed literal for a field's declared default (validated against its dtype when
    the definition was made), as :func:`featureledger.offline.duckdb.engine.sql_literal`."""
    import datetime as dt

    from featureledger.model.timeutil import to_us
    from featureledger.model.types import element_dtype

    t = spark_type(dtype)
    elem = element_dtype(dtype)
    if value is None:
        return F.lit(None).cast(t)
    if elem is not None:
        return F.array(*(_literal(v, elem) for v in value)).cast(t)
    if isinstance(value, bytes):
        return F.lit(bytearray(value)).cast(t)
    if dtype == "timestamp":
        return F.timestamp_micros(F.lit(to_us(value)).cast("bigint"))
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return F.lit(value.isoformat()).cast(t)
    return F.lit(value).cast(t)


def _col(name: str) -> Column:
    """A column by its exact name (dots or backticks in it are not paths)."""
    return F.col("`" + name.replace("`", "``") + "`")


def _micros(name: str) -> Column:
    return F.unix_micros(_col(name))


def feature_columns(scan: ViewScan, source: int) -> list[Column]:
    """Each feature read from the files of ``source``, in feature order: absent fields
    null or their default, widened types cast (as the DuckDB engine's ``feature_sql``)."""
    if not scan.sources:
        return [_col(c) for c in scan.features]
    out = []
    for c in scan.sources[source]:
        if c.source is None:
            out.append(_literal(c.default, c.dtype))
        elif c.source_dtype != c.dtype:
            out.append(_col(c.source).cast(spark_type(c.dtype)))
        else:
            out.append(_col(c.source))
    return out


def _arrow_schema(fields: Sequence[tuple[str, pa.DataType]]) -> pa.Schema:
    import pyarrow as pa

    return pa.schema([pa.field(n, t) for n, t in fields])


def _normalized(table: pa.Table, types: dict[str, pa.DataType] | None = None) -> pa.Table:
    """``table`` as DuckDB would give it: every field nullable, lists with ``item``
    elements, plain (not large) strings and binaries, timestamps in µs UTC, and the
    columns named in ``types`` cast to those types."""
    import pyarrow as pa

    def plain(t: pa.DataType) -> pa.DataType:
        if pa.types.is_large_string(t):
            return pa.string()
        if pa.types.is_large_binary(t):
            return pa.binary()
        if pa.types.is_timestamp(t):
            return pa.timestamp("us", tz="UTC")
        if pa.types.is_list(t) or pa.types.is_large_list(t):
            return pa.list_(plain(t.value_type))
        return t

    target = pa.schema([pa.field(f.name, (types or {}).get(f.name, plain(f.type)))
                        for f in table.schema])
    return table if table.schema == target else table.cast(target)


_EXACT_PARTS = ((64, "_xa"), (32, "_xb"), (0, "_xc"))  # x = a * 2^64 + b * 2^32 + c


def _exact_parts(v: Column, scale: int) -> list[Column]:
    """``v * 2^scale`` (an integer below 2^126, see :func:`exact_scale`) as three exact
    DECIMAL(20, 0) parts ``a * 2^64 + b * 2^32 + c``: each part is a whole double taken
    from ``x``'s own bits, cast through BIGINT (Spark casts a double to DECIMAL through its
    shortest decimal text, which is not exact above 2^53)."""
    x = v * F.lit(2.0 ** scale)
    a = F.floor(x / F.lit(2.0 ** 64))
    r = x - a * F.lit(2.0 ** 64)  # the low 64 bits: exact, in [0, 2^64)
    b = F.floor(r / F.lit(2.0 ** 32))
    c = r - b * F.lit(2.0 ** 32)
    return [p.cast("bigint").cast("decimal(20,0)") for p in (a, b, c)]


def _exact_sum(a: WindowAggregate, w: Any, scale: int) -> Column:
    """The exact sum of ``a``'s column over ``w``, rounded once to a double: the integer
    total (DECIMAL(38, 0)) converted with correct rounding (Java's BigDecimal), scaled
    back; the mean divides it by the count, as DuckDB does."""
    parts = []
    for shift, name in _EXACT_PARTS:
        part = F.sum(F.col(f"{name}{a.column}")).over(w).cast("decimal(38,0)")
        if shift:
            part = (part * F.lit(str(2 ** shift)).cast("decimal(38,0)")).cast("decimal(38,0)")
        parts.append(part)
    total = ((parts[0] + parts[1]).cast("decimal(38,0)") + parts[2]).cast("decimal(38,0)")
    value = total.cast("double") * F.lit(2.0 ** -scale)
    if a.function == "mean":
        value = value / F.count(F.col(f"_v{a.column}")).over(w)
    return value.cast(spark_type(a.dtype))


def _window_function(a: WindowAggregate, w: Any, scales: dict[int, int]) -> Column:
    """The Spark aggregate of ``a`` over the window frame ``w``, cast to its type."""
    if a.function in ("sum", "mean") and a.column in scales:
        return _exact_sum(a, w, scales[a.column])
    v = F.col(f"_v{a.column}")
    feature = F.col("_side") == _SIDE_FEATURE
    if a.function == "last":  # the latest feature row's value, null or not
        latest = F.max(F.when(feature, F.struct(F.col("_t").alias("t"), v.alias("v"))))
        return latest.over(w).getField("v").cast(spark_type(a.dtype))
    if a.function == "approx_count_distinct":  # exact, as in DuckDB (HLL++ would differ)
        return F.size(F.collect_set(v).over(w)).cast("bigint")
    agg = {"count": F.count, "sum": F.sum, "mean": F.avg, "min": F.min, "max": F.max,
           "stddev": F.stddev_samp}[a.function]
    return agg(v).over(w).cast(spark_type(a.dtype))


def _empty_aggregate(a: WindowAggregate) -> Column:
    """The value of ``a`` over no rows."""
    if a.function in ("count", "approx_count_distinct"):
        return F.lit(0).cast("bigint")
    return F.lit(None).cast(spark_type(a.dtype))


# -- the engine --------------------------------------------------------------------------
class SparkEngine:
    """Runs point-in-time joins, windows, latest-per-key and key listings on Spark.

    Engines share the process's one Spark session (see :func:`spark_session`), created on
    the first query; ``close()`` does not stop it.
    """

    name = "spark"

    @classmethod
    def from_config(cls, config: ProjectConfig) -> SparkEngine:
        """The engine of ``offline_engine: {type: spark, master: ..., conf: {...}}``."""
        from featureledger.config import SparkEngineConfig

        e = config.offline_engine
        if not isinstance(e, SparkEngineConfig):
            raise ConfigError(f"offline_engine type {e.type!r} is not spark; the Spark engine "
                              "needs 'offline_engine: {type: spark}'")
        return cls(master=e.master, app_name=e.app_name,
                   shuffle_partitions=e.shuffle_partitions, conf=dict(e.conf))

    def __init__(self, *, master: str = "local[2]", app_name: str = "featureledger",
                 shuffle_partitions: int = 4, conf: dict[str, str] | None = None) -> None:
        self.master = master
        self._settings = (app_name, shuffle_partitions, dict(conf or {}))
        self._closed = False
        self.version = pyspark.__version__

    @property
    def spark(self) -> SparkSession:
        """The shared session (started on first use)."""
        if self._closed:
            raise StateError("this Spark engine is closed; open the store again")
        app_name, partitions, conf = self._settings
        return spark_session(self.master, app_name, partitions, conf)

    def close(self) -> None:
        """Release the engine; the process's Spark session keeps running for others."""
        self._closed = True

    # -- reading -------------------------------------------------------------------------
    def _read(self, files: Sequence[str],
              picks: Sequence[tuple[str, int]] | None = None) -> DataFrame:
        """The rows of ``files``: all of them, or (compacted files holding many commits)
        those of the picked commits, each with its commit's rank as ``_rank`` (a broadcast
        join with the small list of picks is both the filter and the rank lookup)."""
        df = self.spark.read.parquet(*files)
        if picks is None:
            return df
        ranks = self.spark.createDataFrame(
            [(cid, int(rank)) for cid, rank in picks], "_rcid string, _rank int")
        return (df.join(F.broadcast(ranks), df["_commit_id"] == ranks["_rcid"], "inner")
                .drop("_rcid"))

    def _from_arrow(self, table: pa.Table) -> DataFrame:
        """A DataFrame of an Arrow table (Spark 4 takes Arrow; 3.5 goes through pandas)."""
        if int(self.version.split(".")[0]) >= 4:
            return self.spark.createDataFrame(table)
        from pyspark.sql.pandas.types import from_arrow_schema

        return self.spark.createDataFrame(table.to_pandas(), schema=from_arrow_schema(
            table.schema))

    @staticmethod
    def _to_arrow(df: DataFrame) -> pa.Table:
        import pyarrow as pa

        if hasattr(df, "toArrow"):
            return df.toArrow()
        handle: Any = df  # Spark 3.5: no public toArrow, only the Arrow collect below
        batches = handle._collect_as_arrow()
        from pyspark.sql.pandas.types import to_arrow_schema

        return pa.Table.from_batches(batches, schema=to_arrow_schema(df.schema))

    @staticmethod
    def _reader(table: pa.Table) -> pa.RecordBatchReader:
        import pyarrow as pa

        return pa.RecordBatchReader.from_batches(table.schema, table.to_batches())

    def _union(self, frames: Sequence[DataFrame]) -> DataFrame:
        out = frames[0]
        for f in frames[1:]:
            out = out.unionByName(f)
        return out

    # -- point in time ---------------------------------------------------------------
    def _feature_side(self, s: ViewScan, ts_bounds: tuple[int, int] | None) -> DataFrame:
        """The scan's rows as union members: keys, ``_t`` (event µs), ``_side``, the
        tie-break order where rows can tie (``_o1`` created µs with a created-timestamp
        column, ``_o2`` commit rank when commits overlap) and ``_f``, the struct an entity
        row picks up (event µs, features, source index)."""
        ts = _micros(s.timestamp_field)
        frames = []
        for src, rank, files, picks in s.groups(by_rank=s.tie_break):
            vals = feature_columns(s, src)
            fields = [ts.alias("t"), *(v.alias(f"v{j}") for j, v in enumerate(vals))]
            fields.append(F.lit(src).cast("int").alias("s"))
            df = self._read(files, picks)
            cond = F.lit(True)
            for k in s.join_keys:  # a null key never equals anything
                cond = cond & _col(k).isNotNull()
            cond = cond & _col(s.timestamp_field).isNotNull()
            if ts_bounds is not None:  # rows no entity row can reach (DuckDB's pruning)
                lo, hi = ts_bounds
                cond = cond & (ts <= F.lit(hi))
                if s.ttl_us is not None:
                    cond = cond & (ts >= F.lit(lo - s.ttl_us))
            # the tie-break columns only where rows can tie: constant sort keys still cost
            # a comparison per row and bytes per shuffled row
            order = []
            if s.created_field:
                order.append(_micros(s.created_field).alias("_o1"))
            if s.tie_break:
                order.append((F.col("_rank") if picks is not None else F.lit(rank or 0))
                             .cast("int").alias("_o2"))
            frames.append(df.where(cond).select(
                *(_col(k) for k in s.join_keys), ts.alias("_t"),
                F.lit(_SIDE_FEATURE).alias("_side"), *order, F.struct(*fields).alias("_f")))
        return self._union(frames)

    def point_in_time(self, entities: pa.Table, ts_col: str, scans: Sequence[ViewScan],
                      ts_bounds: tuple[int, int] | None = None) -> pa.RecordBatchReader:
        """``_row``, every view's output columns and ``_fl_matched_<i>`` (``_fl_keyed_<i>``
        with a TTL, ``_fl_src_<i>`` over several source versions) per entity row, in no
        particular order; the same columns and types as the DuckDB engine."""
        import pyarrow as pa

        from featureledger.model.types import to_arrow

        keys = sorted({k for s in scans for k in s.join_keys})
        with _driver_errors("point-in-time"):
            df = self._from_arrow(entities.select([ROW_COLUMN, ts_col, *keys])).select(
                _col(ROW_COLUMN), _micros(ts_col).alias("_ets"), *(_col(k) for k in keys))
            carried = [ROW_COLUMN, "_ets", *keys]
            for i, s in enumerate(scans):
                if not s.files:
                    continue
                e = df.withColumn("_t", F.col("_ets")).withColumn(
                    "_side", F.lit(_SIDE_ENTITY))
                u = e.unionByName(self._feature_side(s, ts_bounds), allowMissingColumns=True)
                w = (Window.partitionBy(*(_col(k) for k in s.join_keys))
                     .orderBy(F.col("_t").asc_nulls_first(), F.col("_side").asc(),
                              *([F.col("_o1").asc_nulls_first()] if s.created_field else []),
                              *([F.col("_o2").asc()] if s.tie_break else []))
                     .rowsBetween(Window.unboundedPreceding, Window.currentRow))
                df = (u.withColumn(f"_m{i}", F.last("_f", ignorenulls=True).over(w))
                      .where(F.col("_side") == _SIDE_ENTITY).select(*carried, f"_m{i}"))
                carried.append(f"_m{i}")
            select: list[Column] = [_col(ROW_COLUMN)]
            fields: list[tuple[str, pa.DataType]] = [(ROW_COLUMN, pa.int64())]
            for i, s in enumerate(scans):
                types = [to_arrow(_dtype_of(t)) for t in s.duckdb_types]
                fields += list(zip(s.output_names, types, strict=True))
                if not s.files:  # nothing committed (or visible): typed nulls
                    select += [F.lit(None).cast(spark_type(_dtype_of(t))).alias(o)
                               for t, o in zip(s.duckdb_types, s.output_names, strict=True)]
                    select.append(F.lit(False).alias(f"_fl_matched_{i}"))
                    fields.append((f"_fl_matched_{i}", pa.bool_()))
                    continue
                m = F.col(f"_m{i}")
                found = m.getField("t").isNotNull()
                if s.ttl_us is not None:
                    valid = (F.col("_ets") - m.getField("t")) <= F.lit(int(s.ttl_us))
                    select += [F.when(valid, m.getField(f"v{j}")).alias(o)
                               for j, o in enumerate(s.output_names)]
                    select.append(F.coalesce(valid, F.lit(False)).alias(f"_fl_matched_{i}"))
                    # matched on keys but too old: tells "TTL too short" from "no such key"
                    select.append(found.alias(f"_fl_keyed_{i}"))
                    fields += [(f"_fl_matched_{i}", pa.bool_()), (f"_fl_keyed_{i}", pa.bool_())]
                    if s.multi_source:
                        select.append(F.when(valid, m.getField("s")).alias(f"_fl_src_{i}"))
                else:
                    select += [m.getField(f"v{j}").alias(o) for j, o in enumerate(s.output_names)]
                    select.append(found.alias(f"_fl_matched_{i}"))
                    fields.append((f"_fl_matched_{i}", pa.bool_()))
                    if s.multi_source:
                        select.append(m.getField("s").alias(f"_fl_src_{i}"))
                if s.multi_source:
                    fields.append((f"_fl_src_{i}", pa.int32()))
            table = self._to_arrow(df.select(*select))
        schema = _arrow_schema(fields)
        return self._reader(table.cast(schema) if table.schema != schema else table)

    # -- windows ---------------------------------------------------------------------
    def window(self, scan: ViewScan, start_us: int | None, end_us: int | None
               ) -> pa.RecordBatchReader:
        """Every effective row with ``start <= event_ts < end``, ordered by event time then
        join keys; a row superseded by a later commit (or a later created time) with the
        same keys and event time is left out."""
        if not scan.files:
            raise RetrievalError("internal: window() needs at least one file")
        created = scan.created_field
        ts = _micros(scan.timestamp_field)
        with _driver_errors("window"):
            frames = []
            for src, _rank, files, picks in scan.groups(by_rank=False):
                df = self._read(files, picks)
                if start_us is not None:
                    df = df.where(ts >= F.lit(start_us))
                if end_us is not None:
                    df = df.where(ts < F.lit(end_us))
                cols = [*(_col(k) for k in scan.join_keys), _col(scan.timestamp_field)]
                cols += [c.alias(o) for c, o in zip(feature_columns(scan, src),
                                                    scan.output_names, strict=True)]
                cols += [_col("_commit_id"), _col("_commit_time")]
                if created:
                    cols.append(_col(created).alias("_cts"))
                frames.append(df.select(*cols))
            df = self._union(frames)
            if scan.tie_break or created:
                order = ([F.col("_cts").desc_nulls_last()] if created else [])
                order.append(F.col("_commit_time").desc())
                w = Window.partitionBy(*(_col(k) for k in [*scan.join_keys,
                                                            scan.timestamp_field])).orderBy(*order)
                df = df.withColumn("_rn", F.row_number().over(w)).where(F.col("_rn") == 1)
                df = df.drop("_rn", *(["_cts"] if created else []))
            df = df.orderBy(*(_col(c).asc_nulls_last()
                              for c in [scan.timestamp_field, *scan.join_keys]))
            table = self._to_arrow(df)
        return self._reader(_normalized(table, self._feature_types(scan)))

    # -- windowed aggregations -------------------------------------------------------------
    def window_aggregate(self, entities: pa.Table, ts_col: str, scan: ViewScan,
                         aggregations: Sequence[WindowAggregate],
                         ts_bounds: tuple[int, int] | None = None) -> pa.RecordBatchReader:
        """Per entity row (``_row``), each aggregation's value; the DuckDB engine's answers
        and Arrow types. Without a range join: per slide, the entity rows (at their time,
        rounded down to the slide) and the effective feature rows are unioned,
        partitioned by the join keys and ordered by time; each aggregation is a window
        function over ``RANGE BETWEEN window - 1 PRECEDING AND CURRENT ROW`` on integer
        microseconds, which is exactly ``t - window < event_ts <= t`` (the feature rows
        of time ``t`` are the entity row's peers, so inside its frame)."""
        import pyarrow as pa

        from featureledger.model.types import to_arrow

        keys = list(scan.join_keys)
        fields = [(ROW_COLUMN, pa.int64())] + [(a.output, to_arrow(a.dtype))
                                               for a in aggregations]
        with _driver_errors("window aggregation"):
            ent = self._from_arrow(entities.select([ROW_COLUMN, ts_col, *keys])).select(
                _col(ROW_COLUMN), _micros(ts_col).alias("_et"), *(_col(k) for k in keys))
            feats = self._aggregated_rows(scan, aggregations, ts_bounds) if scan.files else None
            scales = self._exact_scales(feats, exact_columns(scan, aggregations))
            for c, scale in scales.items():
                parts = _exact_parts(F.col(f"_v{c}"), scale)
                feats = feats.select(  # type: ignore[union-attr]
                    "*", *(p.alias(f"{name}{c}")
                           for p, (_, name) in zip(parts, _EXACT_PARTS, strict=True)))
            result = ent.select(_col(ROW_COLUMN))
            by_slide: dict[int | None, list[WindowAggregate]] = {}
            for a in aggregations:
                by_slide.setdefault(a.slide_us, []).append(a)
            for slide, aggs in by_slide.items():
                t = F.col("_et")
                if slide is not None:
                    t = t - F.pmod(t, F.lit(slide))
                e = ent.select(_col(ROW_COLUMN), *(_col(k) for k in keys), t.alias("_t"),
                               F.lit(_SIDE_ENTITY).alias("_side"))
                if feats is None:
                    cols = [_empty_aggregate(a).alias(a.output) for a in aggs]
                    result = result.join(e.select(_col(ROW_COLUMN), *cols), ROW_COLUMN)
                    continue
                u = e.unionByName(feats, allowMissingColumns=True)
                order = Window.partitionBy(*(_col(k) for k in keys)).orderBy(F.col("_t"))
                cols = []
                for a in aggs:
                    w = order.rangeBetween(-(a.window_us - 1), Window.currentRow)
                    cols.append(_window_function(a, w, scales).alias(a.output))
                part = (u.select(_col(ROW_COLUMN), "_side", *cols)
                        .where(F.col("_side") == _SIDE_ENTITY).drop("_side"))
                result = result.join(part, ROW_COLUMN)
            table = self._to_arrow(result.select(*(_col(n) for n, _ in fields)))
        schema = _arrow_schema(fields)
        return self._reader(table.cast(schema) if table.schema != schema else table)

    @staticmethod
    def _exact_scales(feats: DataFrame | None, columns: Sequence[int]) -> dict[int, int]:
        """Per float column summed exactly, its scale (see :func:`exact_scale`), from the
        same statistics DuckDB computes."""
        if feats is None or not columns:
            return {}
        stats = []
        for c in columns:
            v = F.col(f"_v{c}")
            bad = F.isnan(v) | (F.abs(v) == F.lit(float("inf")))
            ok = v.isNotNull() & (v != 0) & ~bad
            e = F.floor(F.log2(F.abs(v)))
            stats += [F.min(F.when(ok, e)), F.max(F.when(ok, e)),
                      F.count(F.when(bad, 1)), F.count(v)]
        row = feats.agg(*stats).collect()[0]
        out = {}
        for i, c in enumerate(columns):
            scale = exact_scale(*row[4 * i:4 * i + 4])
            if scale is not None:
                out[c] = scale
        return out

    def _aggregated_rows(self, scan: ViewScan, aggregations: Sequence[WindowAggregate],
                         ts_bounds: tuple[int, int] | None) -> DataFrame:
        """The scan's effective rows (one per keys and event time: the later created time,
        then the later commit) as union members: keys, ``_t``, ``_side``, ``_v<i>``."""
        ts = _micros(scan.timestamp_field)
        columns = sorted({a.column for a in aggregations})
        frames = []
        for src, rank, files, picks in scan.groups(by_rank=scan.tie_break):
            vals = feature_columns(scan, src)
            cond = _col(scan.timestamp_field).isNotNull()
            for k in scan.join_keys:  # a null key never equals anything
                cond = cond & _col(k).isNotNull()
            if ts_bounds is not None:
                cond = cond & (ts <= F.lit(ts_bounds[1])) & (
                    ts > F.lit(aggregate_lower_bound(aggregations, ts_bounds[0])))
            created = (_micros(scan.created_field) if scan.created_field
                       else F.lit(None).cast("bigint"))
            frames.append(self._read(files, picks).where(cond).select(
                *(_col(k) for k in scan.join_keys), ts.alias("_t"),
                F.lit(_SIDE_FEATURE).alias("_side"), created.alias("_o1"),
                (F.col("_rank") if picks is not None else F.lit(rank or 0)).cast("int")
                .alias("_o2"), *(vals[c].alias(f"_v{c}") for c in columns)))
        df = self._union(frames)
        if scan.tie_break or scan.created_field:
            w = Window.partitionBy(*(_col(k) for k in scan.join_keys), F.col("_t")).orderBy(
                F.col("_o1").desc_nulls_last(), F.col("_o2").desc())
            df = df.withColumn("_rn", F.row_number().over(w)).where(F.col("_rn") == 1)
        return df.drop("_rn", "_o1", "_o2")

    @staticmethod
    def _feature_types(scan: ViewScan) -> dict[str, pa.DataType]:
        from featureledger.model.types import to_arrow

        return {o: to_arrow(_dtype_of(t))
                for o, t in zip(scan.output_names, scan.duckdb_types, strict=True)}

    # -- latest value per key, keys ------------------------------------------------------
    def latest_per_key(self, scan: ViewScan, *, start: int | None = None,
                       end: int | None = None, only_commits: Sequence[str] | None = None,
                       new_commits: Sequence[str] | None = None, since: int | None = None,
                       keys: pa.Table | None = None) -> pa.Table:
        """The newest row per key (greatest event time, then created time, then commit
        time): the join keys, ``_ts`` (event µs), ``_ct`` (commit time, or the created time
        for a view with a created-timestamp column), ``_commit_id`` and the features.
        ``start``/``end`` bound event time (µs, inclusive); ``only_commits`` keeps rows of
        those commits; ``new_commits``/``since`` rows of new commits or newer than
        ``since``; ``keys`` (a table of join-key columns) restricts to those keys."""
        import pyarrow as pa

        ts = _micros(scan.timestamp_field)
        created = scan.created_field
        key_cols = [_col(k) for k in scan.join_keys]
        with _driver_errors("latest-per-key"):
            wanted = None
            if keys is not None:
                wanted = self._from_arrow(keys.select(scan.join_keys))
            frames = []
            for src, _rank, files, picks in scan.groups(by_rank=False):
                df = self._read(files, picks)
                if wanted is not None:
                    df = df.join(wanted, on=list(scan.join_keys), how="left_semi")
                if start is not None:
                    df = df.where(ts >= F.lit(int(start)))
                if end is not None:
                    df = df.where(ts <= F.lit(int(end)))
                if only_commits is not None:
                    df = df.where(F.col("_commit_id").isin(list(only_commits)))
                if new_commits is not None and since is not None:
                    df = df.where(F.col("_commit_id").isin(list(new_commits))
                                  | (ts > F.lit(int(since))))
                cols = [*key_cols, ts.alias("_ts"), _micros("_commit_time").alias("_ctime"),
                        F.col("_commit_id")]
                cols += [c.alias(o) for c, o in zip(feature_columns(scan, src),
                                                    scan.output_names, strict=True)]
                cols.append((_micros(created) if created
                             else F.lit(None).cast("bigint")).alias("_cts"))
                frames.append(df.select(*cols))
            df = self._union(frames)
            order = [F.col("_ts").desc()]
            if created:
                order.append(F.col("_cts").desc_nulls_last())
            order.append(F.col("_ctime").desc())
            w = Window.partitionBy(*key_cols).orderBy(*order)
            ct = F.coalesce(F.col("_cts"), F.lit(0).cast("bigint")) if created else F.col("_ctime")
            df = (df.withColumn("_rn", F.row_number().over(w)).where(F.col("_rn") == 1)
                  .select(*key_cols, "_ts", ct.alias("_ct"), "_commit_id",
                          *(_col(o) for o in scan.output_names)))
            table = self._to_arrow(df)
        return _normalized(table, {"_ts": pa.int64(), "_ct": pa.int64(),
                                   "_commit_id": pa.string(), **self._feature_types(scan)})

    def distinct_keys(self, scan: ViewScan) -> list[tuple[Any, ...]]:
        """Every distinct join-key tuple in ``scan``'s files."""
        if not scan.files:
            return []
        with _driver_errors("key listing"):
            keys = [_col(k) for k in scan.join_keys]
            table = self._to_arrow(self._union([
                self._read(files, picks).select(*keys)
                for _src, _rank, files, picks in scan.groups(by_rank=False)]).distinct())
        columns = [table.column(k).to_pylist() for k in scan.join_keys]
        return list(zip(*columns, strict=True))

    def rows(self, scan: ViewScan, extra: Sequence[str] = ()) -> pa.Table:
        """Every stored row of ``scan``'s files, projected onto its features: the join
        keys, the timestamp, the created timestamp (if any), the features and ``extra``
        stored columns (e.g. ``_commit_id``), in no particular order."""
        created = [scan.created_field] if scan.created_field else []
        with _driver_errors("row listing"):
            frames = []
            for src, _rank, files, picks in scan.groups(by_rank=False):
                cols = [_col(c) for c in [*scan.join_keys, scan.timestamp_field, *created]]
                cols += [c.alias(o) for c, o in zip(feature_columns(scan, src),
                                                    scan.output_names, strict=True)]
                cols += [_col(c) for c in extra]
                frames.append(self._read(files, picks).select(*cols))
            table = self._to_arrow(self._union(frames))
        return _normalized(table, self._feature_types(scan))
