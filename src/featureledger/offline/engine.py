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
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from featureledger.errors import RetrievalError, StorageError

if TYPE_CHECKING:
    import pyarrow as pa

ROW_COLUMN = "_row"  # entity row number, 0..n-1: output order
BATCH_ROWS = 122_880  # DuckDB's row-group size: whole vectors per Arrow batch


@dataclass(frozen=True)
class ViewScan:
    """What one view version contributes to a query."""

    join_keys: list[str]
    timestamp_field: str
    features: list[str]  # stored column names
    output_names: list[str]  # result column names, same order
    duckdb_types: list[str]  # declared types (for the all-null result of a view with no data)
    files: list[str]  # absolute paths of the chosen commits' Parquet files
    ttl_us: int | None = None
    tie_break: bool = False  # commits overlap in event time: order ties by commit
    file_ranks: list[int] = field(default_factory=list)  # commit index (in commit order) per file
    event_range: tuple[int, int] | None = None  # µs: min and max event time over the files

    def order_bits(self, ts_bounds: tuple[int, int] | None) -> int | None:
        """Bits for the commit rank when ``(event_us << bits) + rank`` fits in a BIGINT;
        None when it does not (the order key is then a HUGEINT)."""
        if ts_bounds is None or self.event_range is None:
            return None
        bits = max(1, (max(self.file_ranks, default=0) + 1).bit_length())
        biggest = max(abs(v) for v in (*ts_bounds, *self.event_range))
        return bits if (biggest + 1) << bits < 1 << 63 else None


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _quote_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _ts_literal(us: int) -> str:
    from featureledger.model.timeutil import from_us

    return f"TIMESTAMPTZ '{from_us(us).isoformat()}'"


def _order_key(ts_expr: str, rank: int, bits: int | None) -> str:
    """SQL for the (event time, commit rank) order key: BIGINT with ``bits``, else HUGEINT."""
    if bits is None:
        return f"((epoch_us({ts_expr})::HUGEINT << 64) + {rank})"
    return f"(epoch_us({ts_expr}) * {1 << bits} + {rank})"


def _parquet(files: Sequence[str]) -> str:
    return "read_parquet([" + ", ".join(_quote_str(f) for f in files) + "])"


class DuckDBEngine:
    """Runs retrieval SQL on one in-process DuckDB database (a cursor per query)."""

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
        self.version = duckdb.__version__

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
            f_cols = [quote_ident(k) for k in s.join_keys] + [f"{ts} AS _fts"]
            f_cols += [f"{quote_ident(c)} AS _v{j}" for j, c in enumerate(s.features)]
            where = ""
            if ts_bounds is not None:
                lo, hi = ts_bounds
                conds = [f"{ts} <= {_ts_literal(hi)}"]
                if s.ttl_us is not None:
                    conds.append(f"{ts} >= {_ts_literal(lo - s.ttl_us)}")
                where = " WHERE " + " AND ".join(conds)
            if s.tie_break:
                bits = s.order_bits(ts_bounds)
                top = (1 << (64 if bits is None else bits)) - 1  # above every commit rank
                e_cols.append(f"{_order_key(e_ts, top, bits)} AS _eord{i}")
                by_rank: dict[int, list[str]] = {}
                for rank, f in zip(s.file_ranks, s.files, strict=True):
                    by_rank.setdefault(rank, []).append(f)
                source = " UNION ALL ".join(
                    f"SELECT {', '.join(f_cols)}, {_order_key(ts, rank, bits)} AS _ord FROM "
                    f"{_parquet(files)}{where}" for rank, files in sorted(by_rank.items()))
                ineq = f"e._eord{i} >= {a}._ord"
            else:
                source = f"SELECT {', '.join(f_cols)} FROM {_parquet(s.files)}{where}"
                ineq = f"e._ets >= {a}._fts"
            on = " AND ".join([f"e.{quote_ident(k)} = {a}.{quote_ident(k)}" for k in s.join_keys]
                              + [ineq])
            joins.append(f"ASOF LEFT JOIN ({source}) {a} ON {on}")
            if s.ttl_us is not None:
                valid = f"(epoch_us(e._ets) - epoch_us({a}._fts) <= {int(s.ttl_us)})"
                select += [f"CASE WHEN {valid} THEN {a}._v{j} END AS {quote_ident(o)}"
                           for j, o in enumerate(s.output_names)]
                select.append(f"coalesce({valid}, false) AS _fl_matched_{i}")
            else:
                select += [f"{a}._v{j} AS {quote_ident(o)}" for j, o in enumerate(s.output_names)]
                select.append(f"({a}._fts IS NOT NULL) AS _fl_matched_{i}")
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
        cur.register(name, entities)
        sql = self.point_in_time_sql(name, ts_col, scans, ts_bounds)
        return self._stream(cur, sql)

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
        cols = keys + [ts] + [f"{quote_ident(c)} AS {quote_ident(o)}"
                              for c, o in zip(scan.features, scan.output_names, strict=True)]
        cols += ["_commit_id", "_commit_time"]
        if not scan.files:
            raise RetrievalError("internal: window() needs at least one file")
        conds = []
        if start_us is not None:
            conds.append(f"{ts} >= {_ts_literal(start_us)}")
        if end_us is not None:
            conds.append(f"{ts} < {_ts_literal(end_us)}")
        sql = f"SELECT {', '.join(cols)} FROM {_parquet(scan.files)}"
        if conds:
            sql += " WHERE " + " AND ".join(conds)
        if scan.tie_break:
            sql += (f" QUALIFY row_number() OVER (PARTITION BY {', '.join([*keys, ts])} "
                    "ORDER BY _commit_time DESC) = 1")
        sql += f" ORDER BY {ts}, {', '.join(keys)}"
        return self._stream(self._cursor(), sql)

    def _stream(self, cur: Any, sql: str) -> pa.RecordBatchReader:
        import duckdb
        import pyarrow as pa

        try:
            reader = cur.sql(sql).to_arrow_reader(BATCH_ROWS)
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

        def batches() -> Iterator[pa.RecordBatch]:
            try:
                yield from reader
            finally:
                cur.close()

        return pa.RecordBatchReader.from_batches(reader.schema, batches())
