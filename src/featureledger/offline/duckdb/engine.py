"""The offline engine: point-in-time joins and window scans in DuckDB over the commit files.

Everything is set-based SQL over ``read_parquet`` of exactly the files of the chosen
commits; results come back as a stream of Arrow record batches. DuckDB holds the working
set within its ``memory_limit`` (spilling to its temp directory when a sort or join does
not fit), so memory is bounded by configuration rather than by the size of the data.

Point in time: for each entity row, one ``ASOF LEFT JOIN`` per view picks the feature row
with the same join keys and the greatest event time ``<= `` the entity time; the TTL is then
applied to that row (``entity_ts - event_ts <= ttl``, inclusive: a row exactly ``ttl`` old
is still valid). Ties on event time are broken by the later commit. A tie needs the same
keys and event time in two commits, which is impossible when only one commit is read or
when the commits' event-time ranges do not overlap; then the join orders on event time
alone. Otherwise each commit's files are read as their own branch of a UNION ALL that tags
rows with the commit's rank, and the join orders on ``event_us * 2^b + rank``, still a
single ASOF inequality and with no separate dedupe pass over the data. The key is a BIGINT
when it fits (present-day times leave room for about 4,000 overlapping commits), else a
128-bit HUGEINT.
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from featureledger.errors import RetrievalError, StorageError
from featureledger.offline.duckdb import clustered
from featureledger.offline.engine import (
    ROW_COLUMN,
    ViewScan,
    WindowAggregate,
    aggregate_lower_bound,
    exact_columns,
    exact_scale,
    is_float,
    quote_ident,
    quote_string,
)

if TYPE_CHECKING:
    import pyarrow as pa

    from featureledger.config import ProjectConfig

BATCH_ROWS = 122_880  # DuckDB's row-group size: whole vectors per Arrow batch
_quote_str = quote_string


def sql_literal(value: Any, dtype: str) -> str:
    """A typed DuckDB literal for a field's declared default (already validated against
    the field's dtype when the definition was made)."""
    import datetime as dt
    import math

    from featureledger.model.types import element_dtype, to_duckdb

    t = to_duckdb(dtype)
    elem = element_dtype(dtype)
    if value is None:
        return f"NULL::{t}"
    if elem is not None:
        return f"[{', '.join(sql_literal(v, elem) for v in value)}]::{t}"
    if isinstance(value, bool):
        return f"{'TRUE' if value else 'FALSE'}::{t}"
    if isinstance(value, int):
        return f"{int(value)}::{t}"
    if isinstance(value, float):
        text = repr(value) if math.isfinite(value) else f"'{value}'"
        return f"{text}::{t}"
    if isinstance(value, bytes):
        return f"from_hex('{value.hex()}')"
    if isinstance(value, (dt.datetime, dt.date)):
        return f"{_quote_str(value.isoformat())}::{t}"
    return f"{_quote_str(str(value))}::{t}"


def feature_sql(scan: ViewScan, source: int) -> list[str]:
    """SQL reading each feature from the files of ``source``, in feature order."""
    if not scan.sources:
        return [quote_ident(c) for c in scan.features]
    out = []
    for c, t in zip(scan.sources[source], scan.duckdb_types, strict=True):
        if c.source is None:
            out.append(f"NULL::{t}" if c.default is None else sql_literal(c.default, c.dtype))
        elif c.source_dtype != c.dtype:
            out.append(f"CAST({quote_ident(c.source)} AS {t})")
        else:
            out.append(quote_ident(c.source))
    return out


def _ts_literal(us: int) -> str:
    from featureledger.model.timeutil import from_us

    return f"TIMESTAMPTZ '{from_us(us).isoformat()}'"


def _order_key(ts_expr: str, rank: int | str, bits: int | None) -> str:
    """SQL for the (event time, commit rank) order key: BIGINT with ``bits``, else HUGEINT."""
    if bits is None:
        return f"((epoch_us({ts_expr})::HUGEINT << 64) + {rank})"
    return f"(epoch_us({ts_expr}) * {1 << bits} + {rank})"


def _with_filter(expr: str, cond: str) -> str:
    """``expr`` (an aggregate call, possibly followed by a field access such as ``.v``)
    with ``FILTER (WHERE cond)`` after its call."""
    depth = 0
    for i, ch in enumerate(expr):
        depth += ch == "("
        depth -= ch == ")"
        if ch == ")" and depth == 0:
            return f"({expr[:i + 1]} FILTER (WHERE {cond})){expr[i + 1:]}"
    return expr


def _parquet(files: Sequence[str]) -> str:
    return "read_parquet([" + ", ".join(_quote_str(f) for f in files) + "])"


def _source(files: Sequence[str], picks: Sequence[tuple[str, int]] | None) -> str:
    """The rows to read from ``files``: all of them, or (compacted files holding many
    commits) those of the picked commits, each with its commit's rank as ``_rank``. The
    join with the small list of picked commits is both the filter and the rank lookup."""
    if picks is None:
        return _parquet(files)
    values = ", ".join(f"({_quote_str(cid)}, {int(rank)})" for cid, rank in picks)
    return (f"(SELECT _p.*, _r._rank FROM {_parquet(files)} _p JOIN (VALUES {values}) "
            "_r(_rcid, _rank) ON _p._commit_id = _r._rcid)")


def latest_per_key_sql(scan: ViewScan, *, start: int | None = None, end: int | None = None,
                       only_commits: Sequence[str] | None = None,
                       new_commits: Sequence[str] | None = None, since: int | None = None,
                       keys_relation: str | None = None) -> str:
    """DuckDB SQL for the newest row per key among ``scan``'s files (µs bounds, inclusive).

    Columns: the join keys, ``_ts`` (event µs), ``_ct`` (the online order time: the commit
    time, or the created time for a view with a created-timestamp column), ``_commit_id``
    and the features under their output names. The newest row has the greatest event time,
    then created time, then commit time. ``new_commits``/``since`` restrict to rows of new
    commits or newer than ``since`` (incremental runs); ``only_commits`` to rows of given
    commits; ``keys_relation`` names a relation of key tuples to restrict to (repairs).
    """
    ts = quote_ident(scan.timestamp_field)
    keys = [quote_ident(k) for k in scan.join_keys]
    keys_sql = ", ".join(keys)
    where = []
    if start is not None:
        where.append(f"{ts} >= make_timestamp({int(start)}::BIGINT)::TIMESTAMPTZ")
    if end is not None:
        where.append(f"{ts} <= make_timestamp({int(end)}::BIGINT)::TIMESTAMPTZ")
    if only_commits is not None:
        where.append(f"_commit_id IN ({', '.join(map(_quote_str, only_commits)) or 'NULL'})")
    if new_commits is not None and since is not None:
        ids = ", ".join(map(_quote_str, new_commits)) or "NULL"
        where.append(f"(_commit_id IN ({ids}) OR "
                     f"{ts} > make_timestamp({int(since)}::BIGINT)::TIMESTAMPTZ)")
    created = scan.created_field
    branches = []
    for src, _rank, files, picks in scan.groups(by_rank=False):
        cols = [*keys, f"epoch_us({ts}) AS _ts", "epoch_us(_commit_time) AS _ctime",
                "_commit_id"]
        cols += [f"{expr} AS {quote_ident(o)}"
                 for expr, o in zip(feature_sql(scan, src), scan.output_names, strict=True)]
        if created:
            cols.append(f"epoch_us({quote_ident(created)}) AS _cts")
        source = _source(files, picks)
        if keys_relation is not None:
            source = f"(SELECT * FROM {source} SEMI JOIN {keys_relation} USING ({keys_sql}))"
        branches.append(f"SELECT {', '.join(cols)} FROM {source}"
                        + (f" WHERE {' AND '.join(where)}" if where else ""))
    if created:
        order, ct = "_ts DESC, _cts DESC NULLS LAST, _ctime DESC", "coalesce(_cts, 0)"
    else:
        # one packed sort key (event time, then commit time): several sort columns make
        # DuckDB's window sort several times slower. Commit times are unique per view
        # (each commit takes a later one than the last), so no further tie-break is needed.
        order, ct = "(_ts::HUGEINT << 64) + _ctime DESC", "_ctime"
    feats = ", ".join(quote_ident(o) for o in scan.output_names)
    return (f"SELECT {keys_sql}, _ts, {ct} AS _ct, _commit_id, {feats} FROM "
            f"({' UNION ALL '.join(branches)}) QUALIFY row_number() OVER "
            f"(PARTITION BY {keys_sql} ORDER BY {order}) = 1")


class DuckDBEngine:
    """Runs retrieval SQL on one in-process DuckDB database (a cursor per query)."""

    name = "duckdb"

    @classmethod
    def from_config(cls, config: ProjectConfig) -> DuckDBEngine:
        """The engine of ``offline_engine: {type: duckdb, ...}`` (the older
        ``offline_store.duckdb_*`` settings still apply where it sets nothing)."""
        from featureledger.config import DuckDBEngineConfig

        o = config.offline_store
        # another engine configured (DuckDB still runs the sandboxed user SQL): its defaults
        e = (config.offline_engine if isinstance(config.offline_engine, DuckDBEngineConfig)
             else DuckDBEngineConfig())
        return cls(memory_limit=e.memory_limit or o.duckdb_memory_limit,
                   threads=e.threads or o.duckdb_threads,
                   temp_directory=str(config.resolve(e.temp_directory))
                   if e.temp_directory else None)

    def __init__(self, *, memory_limit: str | None = None, threads: int | None = None,
                 temp_directory: str | None = None) -> None:
        import duckdb

        # Result order is always explicit (ORDER BY or the _row permutation), so DuckDB
        # need not preserve insertion order, which lets it stream and parallelise more.
        config: dict[str, Any] = {"preserve_insertion_order": False}
        if memory_limit:
            config["memory_limit"] = memory_limit
        if threads:
            config["threads"] = int(threads)
        config["temp_directory"] = temp_directory or str(
            tempfile.gettempdir() + "/featureledger-duckdb")
        try:
            self._db = duckdb.connect(":memory:", config=config)
        except duckdb.Error as exc:
            from featureledger.errors import ConfigError

            raise ConfigError(
                f"DuckDB refused the offline_store settings {config}: {exc}. Fix "
                "offline_store.duckdb_memory_limit / duckdb_threads in featureledger.yaml"
            ) from None
        self._db.execute("SET TimeZone = 'UTC'")
        self._lock = threading.Lock()
        self._filesystems = False  # a file system attached (attach_filesystem)
        self.version = duckdb.__version__

    def attach_filesystem(self, fs: Any) -> None:
        """Read the offline store's files through ``fs`` (an fsspec file system, e.g. the
        s3 store's): DuckDB then opens ``s3://`` paths with it, no extension needed. The
        store hands it over once, when the context opens the engine; every cursor of this
        database sees it."""
        self._filesystems = True  # paths are no longer all local
        protocols = fs.protocol if isinstance(fs.protocol, (list, tuple)) else [fs.protocol]
        registered = set(self._db.list_filesystems())
        if not any(p in registered or f"{p}://" in registered for p in protocols):
            self._db.register_filesystem(fs)

    def close(self) -> None:
        self._db.close()

    def _cursor(self) -> Any:
        with self._lock:  # creating cursors is not thread-safe; using them is
            cur = self._db.cursor()
        cur.execute("SET TimeZone = 'UTC'")
        return cur

    # -- point in time ---------------------------------------------------------------
    def point_in_time_sql(self, entity_table: str, ts_col: str, scans: Sequence[ViewScan],
                          ts_bounds: tuple[int, int] | None) -> str:
        """The SQL of one point-in-time join: one row per entity row, in no particular order."""
        e_ts = quote_ident(ts_col)
        e_cols = [f"{quote_ident(ROW_COLUMN)}", f"{e_ts} AS _ets"]
        keys = sorted({k for s in scans for k in s.join_keys})
        e_cols += [quote_ident(k) for k in keys]
        select = [f"e.{quote_ident(ROW_COLUMN)}"]
        joins = []
        for i, s in enumerate(scans):
            a = f"f{i}"
            if not s.files:  # nothing committed (or visible): typed nulls
                select += [f"NULL::{t} AS {quote_ident(o)}"
                           for t, o in zip(s.duckdb_types, s.output_names, strict=True)]
                select.append(f"false AS _fl_matched_{i}")
                continue
            ts = quote_ident(s.timestamp_field)
            where = ""
            if ts_bounds is not None:
                lo, hi = ts_bounds
                conds = [f"{ts} <= {_ts_literal(hi)}"]
                if s.ttl_us is not None:
                    conds.append(f"{ts} >= {_ts_literal(lo - s.ttl_us)}")
                where = " WHERE " + " AND ".join(conds)
            dedupe = s.created_field is not None
            bits = s.order_bits(ts_bounds) if s.tie_break else None
            branches = []
            for src, rank, files, picks in s.groups(by_rank=s.tie_break):
                f_cols = [quote_ident(k) for k in s.join_keys] + [f"{ts} AS _fts"]
                f_cols += [f"{expr} AS _v{j}" for j, expr in enumerate(feature_sql(s, src))]
                if dedupe:
                    f_cols.append(f"{quote_ident(s.created_field or '')} AS _cts")
                if s.multi_source:
                    f_cols.append(f"{src} AS _src")
                if s.tie_break:
                    # a commit's rank: one per file, or per row in a compacted file
                    r = "_rank" if rank is None else str(rank)
                    f_cols.append(f"{r} AS _rank" if dedupe
                                  else f"{_order_key(ts, r, bits)} AS _ord")
                branches.append(f"SELECT {', '.join(f_cols)} FROM {_source(files, picks)}"
                                f"{where}")
            source = " UNION ALL ".join(branches)
            if dedupe:
                # among rows with the same keys and event time the later created time wins,
                # then the later commit: reduce to that row, then join on event time alone
                order = "_cts DESC NULLS LAST" + (", _rank DESC" if s.tie_break else "")
                part = ", ".join([*(quote_ident(k) for k in s.join_keys), "_fts"])
                source = (f"SELECT * FROM ({source}) QUALIFY row_number() OVER "
                          f"(PARTITION BY {part} ORDER BY {order}) = 1")
                ineq = f"e._ets >= {a}._fts"
            elif s.tie_break:
                top = (1 << (64 if bits is None else bits)) - 1  # above every commit rank
                e_cols.append(f"{_order_key(e_ts, top, bits)} AS _eord{i}")
                ineq = f"e._eord{i} >= {a}._ord"
            else:
                ineq = f"e._ets >= {a}._fts"
            on = " AND ".join([f"e.{quote_ident(k)} = {a}.{quote_ident(k)}" for k in s.join_keys]
                              + [ineq])
            joins.append(f"ASOF LEFT JOIN ({source}) {a} ON {on}")
            if s.ttl_us is not None:
                valid = f"(epoch_us(e._ets) - epoch_us({a}._fts) <= {int(s.ttl_us)})"
                select += [f"CASE WHEN {valid} THEN {a}._v{j} END AS {quote_ident(o)}"
                           for j, o in enumerate(s.output_names)]
                select.append(f"coalesce({valid}, false) AS _fl_matched_{i}")
                # matched on keys but too old: tells "TTL too short" from "no such key"
                select.append(f"({a}._fts IS NOT NULL) AS _fl_keyed_{i}")
                if s.multi_source:
                    select.append(f"CASE WHEN {valid} THEN {a}._src END AS _fl_src_{i}")
            else:
                select += [f"{a}._v{j} AS {quote_ident(o)}" for j, o in enumerate(s.output_names)]
                select.append(f"({a}._fts IS NOT NULL) AS _fl_matched_{i}")
                if s.multi_source:
                    select.append(f"{a}._src AS _fl_src_{i}")
        # No ORDER BY: the caller puts rows back in entity order with the _row permutation,
        # which is O(n) instead of a sort of the whole result.
        return (f"SELECT {', '.join(select)} FROM (SELECT {', '.join(e_cols)} FROM "
                f"{entity_table}) e {' '.join(joins)}")

    def point_in_time(self, entities: pa.Table, ts_col: str, scans: Sequence[ViewScan],
                      ts_bounds: tuple[int, int] | None = None) -> pa.RecordBatchReader:
        """Stream ``_row``, every view's output columns and a flag ``_fl_matched_<i>`` per view
        (in no particular order: ``_row`` says which entity row each result row belongs to).

        ``entities`` holds ``_row`` (0..n-1), the timestamp column (timestamp[us, UTC]) and
        every join key; ``ts_bounds`` (µs) is the entity time range, used to skip row
        groups that no entity row can reach.
        """
        cur = self._cursor()
        name = "_fl_entities"
        merged = self._clustered(cur, entities, ts_col, scans, ts_bounds)
        if not merged:
            cur.register(name, entities)
            sql = self.point_in_time_sql(name, ts_col, scans, ts_bounds)
            return self._stream(cur, sql)
        try:
            return self._combined(cur, entities, ts_col, scans, ts_bounds, merged)
        finally:
            cur.close()

    def _clustered(self, cur: Any, entities: pa.Table, ts_col: str, scans: Sequence[ViewScan],
                   ts_bounds: tuple[int, int] | None) -> dict[int, list[tuple[str, Any]]]:
        """The columns of each scan on the clustered layout, by a merge instead of an ASOF
        sort (see :mod:`featureledger.offline.duckdb.clustered`), in entity-row order."""
        out = {}
        for i, s in enumerate(scans):
            if s.clustered and s.files:
                cols = clustered.clustered_point_in_time(
                    lambda sql: self._query(cur, sql), cur.register, entities, ts_col, s, i,
                    ts_bounds, local=not self._filesystems)
                if cols is not None:
                    out[i] = cols
        return out

    def _combined(self, cur: Any, entities: pa.Table, ts_col: str, scans: Sequence[ViewScan],
                  ts_bounds: tuple[int, int] | None,
                  merged: dict[int, list[tuple[str, Any]]]) -> pa.RecordBatchReader:
        """The merged scans' columns beside the SQL path's for the others, in entity order
        and in the columns' usual order."""
        import re

        import pyarrow as pa
        import pyarrow.compute as pc

        rows = entities.column(ROW_COLUMN)
        columns: dict[int, list[tuple[str, Any]]] = dict(merged)
        rest = [i for i in range(len(scans)) if i not in merged]
        if rest:
            cur.register("_fl_entities", entities)
            sql = self.point_in_time_sql("_fl_entities", ts_col, [scans[i] for i in rest],
                                         ts_bounds)
            table = self._query(cur, sql)
            table = table.take(pc.index_in(rows, value_set=table.column(ROW_COLUMN)))
            flag = re.compile(r"^(_fl_[a-z]+_)(\d+)$")
            for j, i in enumerate(rest):
                cols = [(o, table.column(o)) for o in scans[i].output_names]
                for c in table.column_names:  # its flags, numbered as in the whole request
                    m = flag.match(c)
                    if m and int(m.group(2)) == j:
                        cols.append((f"{m.group(1)}{i}", table.column(c)))
                columns[i] = cols
        fields = [(ROW_COLUMN, rows)] + [c for i in range(len(scans)) for c in columns[i]]
        out = pa.table(dict(fields))
        return pa.RecordBatchReader.from_batches(out.schema, out.to_batches(BATCH_ROWS))

    # -- windows ---------------------------------------------------------------------
    def window(self, scan: ViewScan, start_us: int | None, end_us: int | None
               ) -> pa.RecordBatchReader:
        """Every effective row with ``start <= event_ts < end`` of one view's files.

        A row superseded by a later commit with the same keys and event time is left out
        (only when the commits overlap in event time, since only then can that happen).
        Rows come ordered by event time, then join keys.
        """
        ts = quote_ident(scan.timestamp_field)
        keys = [quote_ident(k) for k in scan.join_keys]
        if not scan.files:
            raise RetrievalError("internal: window() needs at least one file")
        conds = []
        if start_us is not None:
            conds.append(f"{ts} >= {_ts_literal(start_us)}")
        if end_us is not None:
            conds.append(f"{ts} < {_ts_literal(end_us)}")
        where = (" WHERE " + " AND ".join(conds)) if conds else ""
        created = scan.created_field
        branches = []
        for src, _rank, files, picks in scan.groups(by_rank=False):
            cols = keys + [ts] + [f"{expr} AS {quote_ident(o)}" for expr, o in
                                  zip(feature_sql(scan, src), scan.output_names, strict=True)]
            cols += ["_commit_id", "_commit_time"]
            if created:
                cols.append(f"{quote_ident(created)} AS _cts")
            branches.append(f"SELECT {', '.join(cols)} FROM {_source(files, picks)}{where}")
        sql = " UNION ALL ".join(branches)
        if scan.tie_break or created:
            order = ("_cts DESC NULLS LAST, " if created else "") + "_commit_time DESC"
            sql = (f"SELECT *{' EXCLUDE (_cts)' if created else ''} FROM ({sql}) QUALIFY "
                   f"row_number() OVER (PARTITION BY {', '.join([*keys, ts])} ORDER BY "
                   f"{order}) = 1")
        sql += f" ORDER BY {ts}, {', '.join(keys)}"
        return self._stream(self._cursor(), sql)

    # -- windowed aggregations -------------------------------------------------------------
    def window_aggregate_sql(self, entity_table: str, ts_col: str, scan: ViewScan,
                             aggregations: Sequence[WindowAggregate],
                             ts_bounds: tuple[int, int] | None,
                             scales: dict[int, int] | None = None) -> str:
        """The SQL of :meth:`window_aggregate`: a range join of the entity rows with the
        effective feature rows of the same keys inside the widest window, grouped by
        entity row; an aggregation with a narrower window (or a slide) filters its rows.

        ``scales`` (float column -> ``s``, see :func:`~featureledger.offline.engine.exact_scale`) sums those columns
        exactly: each value times ``2^s`` is an integer, summed as a HUGEINT (integer
        addition: the same total in any order, on any number of threads), then rounded
        once to the nearest double (through its decimal text, which DuckDB parses with
        correct rounding) and scaled back. The sum is then the correctly rounded sum of
        the values, whatever the plan, and the mean that over the count. A float column
        without a scale (non-finite values, or a range of magnitudes too wide for 126
        bits) is summed in event-time order instead: the same bits every run, slower."""
        from featureledger.model.types import to_duckdb

        scales = scales or {}
        keys = [quote_ident(k) for k in scan.join_keys]
        e_cols = [quote_ident(ROW_COLUMN), f"epoch_us({quote_ident(ts_col)}) AS _et", *keys]
        slides = sorted({a.slide_us for a in aggregations if a.slide_us is not None})
        for s in slides:  # t rounded down to a multiple of the slide (floor, also below 0)
            e_cols.append(f"(_et - (((_et % {s}) + {s}) % {s})) AS _t{s}")

        def t_of(a: WindowAggregate) -> str:
            return "e._et" if a.slide_us is None else f"e._t{a.slide_us}"

        spans = {(t_of(a), a.window_us) for a in aggregations}
        hi = [t for t, _ in spans]
        lo = [f"{t} - {w}" for t, w in spans]
        join_hi = hi[0] if len(set(hi)) == 1 else f"greatest({', '.join(sorted(set(hi)))})"
        join_lo = lo[0] if len(set(lo)) == 1 else f"least({', '.join(sorted(set(lo)))})"
        one_span = len(spans) == 1
        select = [f"e.{quote_ident(ROW_COLUMN)}"]
        for a in aggregations:
            v = f"f._v{a.column}"
            # Floating-point addition depends on its order, and a parallel aggregate adds in
            # whatever order its threads meet the rows: the same training set could differ
            # in the last bits from run to run and never reproduce. Float sums are exact
            # (scales) or, failing that, added in event-time order (unique per key once
            # ties are resolved): the same bits every time, on any plan.
            exact = a.column in scales and a.function in ("sum", "mean")
            ordered = (" ORDER BY f._ft" if is_float(scan.duckdb_types[a.column])
                       and not exact else "")
            expr = {
                "count": f"count({v})",
                "sum": f"sum({v}{ordered})",
                "mean": f"avg({v})",
                "min": f"min({v})",
                "max": f"max({v})",
                "stddev": f"stddev_samp({v}{ordered})",
                # the latest row's value, null or not (f._ft is unique per key in a window)
                "last": f"max(CASE WHEN f._ft IS NOT NULL THEN struct_pack(t := f._ft, "
                        f"v := {v}) END).v",
                "approx_count_distinct": f"count(DISTINCT {v})",
            }[a.function]
            parts = [expr]
            if exact:
                parts = [f"sum(f._x{a.column})"] + (
                    [f"count({v})"] if a.function == "mean" else [])
            elif a.function == "mean" and ordered:
                # the ordered sum over the count: the one ordered aggregate "sum" needs too
                parts = [f"sum({v}{ordered})", f"count({v})"]
            if not one_span:
                t = t_of(a)
                cond = f"f._ft <= {t} AND f._ft > {t} - {a.window_us}"
                parts = [_with_filter(p, cond) for p in parts]
            if exact:
                parts[0] = (f"(CAST(CAST({parts[0]} AS VARCHAR) AS DOUBLE) * "
                            f"{_double(2.0 ** -scales[a.column])})")
            expr = parts[0] if len(parts) == 1 else f"({parts[0]} / {parts[1]})"
            select.append(f"CAST({expr} AS {to_duckdb(a.dtype)}) AS {quote_ident(a.output)}")
        if not scan.files:
            nothing = [f"CAST({'0' if a.function in ('count', 'approx_count_distinct') else 'NULL'}"
                       f" AS {to_duckdb(a.dtype)}) AS {quote_ident(a.output)}"
                       for a in aggregations]
            return (f"SELECT {quote_ident(ROW_COLUMN)}, {', '.join(nothing)} "
                    f"FROM {entity_table}")
        source = _aggregated_source(scan, aggregations, ts_bounds, scales)
        on = " AND ".join([f"e.{k} = f.{k}" for k in keys]
                          + [f"f._ft <= {join_hi}", f"f._ft > {join_lo}"])
        return (f"SELECT {', '.join(select)} FROM (SELECT {', '.join(e_cols)} FROM "
                f"{entity_table}) e LEFT JOIN ({source}) f ON {on} "
                f"GROUP BY e.{quote_ident(ROW_COLUMN)}")

    def window_aggregate(self, entities: pa.Table, ts_col: str, scan: ViewScan,
                         aggregations: Sequence[WindowAggregate],
                         ts_bounds: tuple[int, int] | None = None) -> pa.RecordBatchReader:
        """Per entity row (``_row``), each aggregation's value, in no particular order
        (see :class:`featureledger.offline.engine.WindowAggregate` for the semantics)."""
        cur = self._cursor()
        name = "_fl_agg_entities"
        cur.register(name, entities)
        scales = {}
        wanted = exact_columns(scan, aggregations)
        if wanted and scan.files:
            branches = _aggregated_source(scan, aggregations, ts_bounds, {}, dedupe=False)
            stats = ", ".join(
                f"min(floor(log2(abs(_v{c})))) FILTER (WHERE _v{c} <> 0 AND isfinite(_v{c})), "
                f"max(floor(log2(abs(_v{c})))) FILTER (WHERE _v{c} <> 0 AND isfinite(_v{c})), "
                f"count(_v{c}) FILTER (WHERE NOT isfinite(_v{c})), count(_v{c})"
                for c in wanted)
            try:
                row = list(self._stream(self._cursor(), f"SELECT {stats} FROM ({branches})")
                           .read_all().to_pylist()[0].values())
            except BaseException:
                cur.close()
                raise
            for i, c in enumerate(wanted):
                scale = exact_scale(*row[4 * i:4 * i + 4])
                if scale is not None:
                    scales[c] = scale
        return self._stream(cur, self.window_aggregate_sql(name, ts_col, scan, aggregations,
                                                           ts_bounds, scales))

    # -- latest value per key, keys ------------------------------------------------------
    def latest_per_key(self, scan: ViewScan, *, start: int | None = None,
                       end: int | None = None, only_commits: Sequence[str] | None = None,
                       new_commits: Sequence[str] | None = None, since: int | None = None,
                       keys: pa.Table | None = None) -> pa.Table:
        """The newest row per key of ``scan`` (see :func:`latest_per_key_sql`); ``keys``
        (a table of join-key columns) restricts the result to those keys."""
        cur = self._cursor()
        try:
            relation = None
            if keys is not None:
                cur.register("_fl_keys", keys)
                relation = "_fl_keys"
            return cur.sql(latest_per_key_sql(
                scan, start=start, end=end, only_commits=only_commits,
                new_commits=new_commits, since=since, keys_relation=relation)).to_arrow_table()
        finally:
            cur.close()

    def distinct_keys(self, scan: ViewScan) -> list[tuple[Any, ...]]:
        """Every distinct join-key tuple in ``scan``'s files."""
        if not scan.files:
            return []
        keys = ", ".join(quote_ident(k) for k in scan.join_keys)
        sql = " UNION ".join(f"SELECT DISTINCT {keys} FROM {_source(files, picks)}"
                             for _src, _rank, files, picks in scan.groups(by_rank=False))
        cur = self._cursor()
        try:
            return [tuple(r) for r in cur.execute(sql).fetchall()]
        finally:
            cur.close()

    def rows(self, scan: ViewScan, extra: Sequence[str] = ()) -> pa.Table:
        """Every stored row of ``scan``'s files, projected onto its features: the join
        keys, the timestamp, the created timestamp (if any), the features and ``extra``
        stored columns (e.g. ``_commit_id``), in no particular order."""
        ts = quote_ident(scan.timestamp_field)
        keys = [quote_ident(k) for k in scan.join_keys]
        created = [quote_ident(scan.created_field)] if scan.created_field else []
        branches = []
        for src, _rank, files, picks in scan.groups(by_rank=False):
            cols = [*keys, ts, *created]
            cols += [f"{expr} AS {quote_ident(o)}" for expr, o in
                     zip(feature_sql(scan, src), scan.output_names, strict=True)]
            cols += [quote_ident(c) for c in extra]
            branches.append(f"SELECT {', '.join(cols)} FROM {_source(files, picks)}")
        return self._stream(self._cursor(), " UNION ALL ".join(branches)).read_all()

    @staticmethod
    def _translated(cur: Any, run: Any) -> Any:
        """``run()``, DuckDB's errors as the project's (the cursor closed on failure)."""
        import duckdb

        try:
            return run()
        except duckdb.IOException as exc:
            cur.close()
            raise StorageError(
                f"reading the offline store failed: {exc}. A commit's files may have been "
                "removed; check them with 'featureledger commits' and the offline store path"
            ) from None
        except duckdb.Error as exc:
            cur.close()
            raise RetrievalError(
                f"the retrieval query failed in DuckDB: {exc}. Check that the entity "
                "columns have the join keys' types"
            ) from None

    def _query(self, cur: Any, sql: str) -> pa.Table:
        """The whole result of ``sql`` as an Arrow table."""
        table: pa.Table = self._translated(cur, lambda: cur.sql(sql).to_arrow_table())
        return table

    def _stream(self, cur: Any, sql: str) -> pa.RecordBatchReader:
        import pyarrow as pa

        reader = self._translated(cur, lambda: cur.sql(sql).to_arrow_reader(BATCH_ROWS))

        def batches() -> Iterator[pa.RecordBatch]:
            try:
                yield from reader
            finally:
                cur.close()

        return pa.RecordBatchReader.from_batches(reader.schema, batches())


# -- windowed aggregations: the feature side, exact float sums ----------------------------
def _double(value: float) -> str:
    """An exact DOUBLE literal (a decimal literal would be a DECIMAL)."""
    return f"CAST('{value!r}' AS DOUBLE)"


def _aggregated_source(scan: ViewScan, aggregations: Sequence[WindowAggregate],
                       ts_bounds: tuple[int, int] | None, scales: dict[int, int], *,
                       dedupe: bool = True) -> str:
    """The effective feature rows an aggregation reads: join keys, ``_ft`` (event µs),
    ``_v<i>`` per aggregated column and ``_x<i>`` (the value times ``2^scale``, a
    HUGEINT) per exactly summed one. ``dedupe=False``: every row, ties not resolved."""
    keys = [quote_ident(k) for k in scan.join_keys]
    ts = quote_ident(scan.timestamp_field)
    conds = [f"{k} IS NOT NULL" for k in keys] + [f"{ts} IS NOT NULL"]
    if ts_bounds is not None:
        conds.append(f"{ts} <= {_ts_literal(ts_bounds[1])}")
        conds.append(f"{ts} > {_ts_literal(aggregate_lower_bound(aggregations, ts_bounds[0]))}")
    where = " WHERE " + " AND ".join(conds)
    dedupe = dedupe and (scan.tie_break or scan.created_field is not None)
    columns = sorted({a.column for a in aggregations})
    branches = []
    for src, rank, files, picks in scan.groups(by_rank=scan.tie_break):
        exprs = feature_sql(scan, src)
        f_cols = [*keys, f"epoch_us({ts}) AS _ft"]
        f_cols += [f"{exprs[c]} AS _v{c}" for c in columns]
        f_cols += [f"CAST({exprs[c]} * {_double(2.0 ** scale)} AS HUGEINT) AS _x{c}"
                   for c, scale in sorted(scales.items())]
        if dedupe and scan.created_field is not None:
            f_cols.append(f"{quote_ident(scan.created_field)} AS _cts")
        if dedupe and scan.tie_break:
            f_cols.append(f"{'_rank' if rank is None else int(rank)} AS _rk")
        branches.append(f"SELECT {', '.join(f_cols)} FROM {_source(files, picks)}{where}")
    source = " UNION ALL ".join(branches)
    if dedupe:
        order = ", ".join((["_cts DESC NULLS LAST"] if scan.created_field else [])
                          + (["_rk DESC"] if scan.tie_break else []))
        source = (f"SELECT * FROM ({source}) QUALIFY row_number() OVER (PARTITION BY "
                  f"{', '.join([*keys, '_ft'])} ORDER BY {order}) = 1")
    return source


# -- what a failed read says about the files it read (see offline/storage.py commit_reads)
def _driver_errors(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the errors it was raised from (the engine re-raises DuckDB's errors as
    its own, ``from None``: the original stays in ``__context__``)."""
    seen: BaseException | None = exc
    while seen is not None:
        yield seen
        seen = seen.__cause__ or seen.__context__


def named_file(exc: BaseException, paths: dict[str, tuple[Any, str]]
                ) -> tuple[Any, str, str] | None:
    """The commit file that a DuckDB I/O or input error names."""
    import duckdb

    for e in _driver_errors(exc):
        if isinstance(e, (duckdb.IOException, duckdb.InvalidInputException)):
            text = str(e)
            named = [p for p in paths if p in text]
            if len(named) == 1:  # several would be a query excerpt, not a diagnosis
                commit, rel = paths[named[0]]
                return commit, rel, text.splitlines()[0] if text else type(e).__name__
    return None


def may_be_damaged_data(exc: BaseException) -> bool:
    """Whether the error could come from bytes that changed: DuckDB's I/O, input,
    serialization and internal errors, and its bare ``Error`` (a page that no longer
    decodes: "Out of buffer"). Binder, catalog or parser errors are about the query."""
    import duckdb

    suspects = (duckdb.IOException, duckdb.InvalidInputException, duckdb.InternalException,
                duckdb.SerializationException)
    return any(isinstance(e, suspects) or type(e) is duckdb.Error for e in _driver_errors(exc))
