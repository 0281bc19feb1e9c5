"""Point in time on the store's own layout: a merge instead of a sort.

DuckDB's ``ASOF JOIN`` sorts the feature rows by keys and time on every call; on one plain
file that sort is most of the time a retrieval takes. A compacted segment (see
:mod:`featureledger.offline.compaction`) is already in that order: each of its files holds
join keys no other file of the segment holds, sorted by (keys, event time, created time,
commit time). So when a scan reads exactly one segment whole (:attr:`ViewScan.clustered`),
the row an entity row needs is found by a binary search, file by file:

1. read the keys and event time of the file (narrow; ``file_row_number`` restores the
   file's order, which a parallel scan does not keep);
2. number the runs of equal keys (the rows of one key are contiguous) and join the entity
   rows to those numbers (a hash join with the file's distinct keys);
3. pack (run number, event time) into one integer, ascending along the file; the last row
   at or before the entity row's (run, time) is ``searchsorted(..., 'right') - 1``, the
   entity row's key matched when that row is inside its run;
4. read the features of only the matched rows (a join on ``file_row_number``).

Ties need no extra work: among rows with the same keys and event time the file holds the
winner (the later created time, null lowest, then the later commit) last, which is the
row the search lands on. Rows that ``ts_bounds`` prunes in the SQL path (older than the
earliest entity time minus the TTL) are left out of the search as well, so "matched on
keys but too old" means the same on both paths.

When the layout does not hold what it promises (a key type with no total order in Arrow's
sense, times too wide to pack, a file not in order) the caller falls back to the SQL path;
the answers are the same either way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from featureledger.offline.engine import ViewScan, quote_ident, quote_string

if TYPE_CHECKING:
    import pyarrow as pa

_PACK_LIMIT = 1 << 62  # (runs x time span) must stay below this to pack into an int64


def _order_of(frn: Any) -> Any:
    """The permutation that puts rows back in file order (None when they are in it)."""
    import numpy as np

    if frn.size < 2 or bool(np.all(frn[1:] > frn[:-1])):
        return None
    return np.argsort(frn, kind="stable")  # runs of ordered rows: a merge, not a full sort


def clustered_point_in_time(query: Callable[[str], pa.Table], register: Callable[[str, Any],
                            None], entities: pa.Table, ts_col: str, scan: ViewScan, index: int,
                            ts_bounds: tuple[int, int] | None) -> list[tuple[str, Any]] | None:
    """Scan ``index``'s result columns (its outputs, ``_fl_matched_<i>``, ``_fl_keyed_<i>``
    with a TTL) in the order of ``entities``' rows, or None when the layout does not allow
    the merge (the caller then runs the SQL path). ``query`` runs SQL to Arrow,
    ``register`` names an Arrow table for it."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from featureledger.offline.duckdb.engine import feature_sql

    if scan.multi_source or not scan.clustered:
        return None
    keys = list(scan.join_keys)
    n = entities.num_rows
    key_types = [entities.schema.field(k).type for k in keys]
    if any(pa.types.is_floating(t) or pa.types.is_nested(t) for t in key_types):
        return None  # NaN keys: equality is not what a hash join calls equal
    ets = entities.column(ts_col).cast(pa.int64())
    valid = pc.is_valid(ets)
    for k in keys:
        valid = pc.and_(valid, pc.is_valid(entities.column(k)))
    probe = pa.table({**{k: entities.column(k) for k in keys}, "_fl_et": ets,
                      "_fl_i": pa.array(np.arange(n, dtype=np.int64))}).filter(valid)
    ts = quote_ident(scan.timestamp_field)
    conds = [f"{quote_ident(k)} IS NOT NULL" for k in keys] + [f"{ts} IS NOT NULL"]
    if ts_bounds is not None:
        conds.append(f"epoch_us({ts}) <= {int(ts_bounds[1])}")
        if scan.ttl_us is not None:
            conds.append(f"epoch_us({ts}) >= {int(ts_bounds[0] - scan.ttl_us)}")
    where = " AND ".join(conds)
    key_sql = ", ".join(quote_ident(k) for k in keys)
    fetched: list[pa.Table] = []
    keyed_rows: list[Any] = []
    srcs = scan.file_sources or [0] * len(scan.files)
    for path, src in zip(scan.files, srcs, strict=True):
        source = f"read_parquet([{quote_string(path)}], file_row_number=true)"
        narrow = query(f"SELECT file_row_number AS _fl_frn, {key_sql}, epoch_us({ts}) AS "
                       f"_fl_t FROM {source} WHERE {where}")
        m = narrow.num_rows
        if m == 0:
            continue
        frn = narrow.column("_fl_frn").to_numpy()
        order = _order_of(frn)
        if order is not None:
            narrow = narrow.take(pa.array(order))
            frn = frn[order]
        t = narrow.column("_fl_t").to_numpy()
        change = np.zeros(m, dtype=bool)
        change[0] = True
        for k in keys:
            col = narrow.column(k).combine_chunks()
            if m > 1:
                change[1:] |= pc.not_equal(col.slice(1), col.slice(0, m - 1)).to_numpy(
                    zero_copy_only=False)
        starts = np.flatnonzero(change)
        runs = narrow.select(keys).take(pa.array(starts)).append_column(
            "_fl_run", pa.array(np.arange(starts.size, dtype=np.int64)))
        try:
            hit = probe.join(runs, keys=keys, join_type="inner")
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            return None  # key types Arrow cannot join: the SQL path casts them
        if hit.num_rows == 0:
            continue
        t_min, t_max = int(t.min()), int(t.max())
        span = t_max - t_min + 1
        if starts.size * span >= _PACK_LIMIT:
            return None
        run_of = np.cumsum(change, dtype=np.int64) - 1
        packed = run_of * span + (t - t_min)
        if m > 1 and not bool(np.all(packed[1:] >= packed[:-1])):
            return None  # not the promised order: let SQL sort it
        e_run = hit.column("_fl_run").to_numpy()
        e_t = hit.column("_fl_et").to_numpy()
        e_i = hit.column("_fl_i").to_numpy()
        wanted = e_run * span + np.clip(e_t - t_min, -1, span - 1)
        pos = np.searchsorted(packed, wanted, side="right") - 1
        found = pos >= starts[e_run]
        pos, e_t, e_i = pos[found], e_t[found], e_i[found]
        keyed_rows.append(e_i)
        if scan.ttl_us is not None:
            fresh = e_t - t[pos] <= scan.ttl_us
            pos, e_i = pos[fresh], e_i[fresh]
        if e_i.size == 0:
            continue
        register("_fl_matches", pa.table({"_fl_i": e_i, "_fl_frn": frn[pos]}))
        cols = ", ".join(f"{expr} AS _v{j}" for j, expr in enumerate(feature_sql(scan, src)))
        fetched.append(query(f"SELECT _m._fl_i, {cols} FROM {source} _p JOIN _fl_matches _m "
                             "ON _p.file_row_number = _m._fl_frn"))
    return _assemble(query, scan, index, n, fetched, keyed_rows)


def _assemble(query: Callable[[str], pa.Table], scan: ViewScan, index: int, n: int,
              fetched: list[pa.Table], keyed_rows: list[Any]) -> list[tuple[str, Any]]:
    """The scan's columns in entity-row order from the matched rows' features."""
    import numpy as np
    import pyarrow as pa

    from featureledger.offline.duckdb.engine import feature_sql

    if fetched:
        table = pa.concat_tables(fetched)
    else:  # nothing matched: the features' types from an empty read
        cols = ", ".join(f"{expr} AS _v{j}" for j, expr in enumerate(feature_sql(scan, 0)))
        table = query(f"SELECT NULL::BIGINT AS _fl_i, {cols} FROM "
                      f"read_parquet([{quote_string(scan.files[0])}]) LIMIT 0")
    at = np.full(n, -1, dtype=np.int64)
    at[table.column("_fl_i").to_numpy()] = np.arange(table.num_rows, dtype=np.int64)
    missing = at < 0
    take = pa.array(at, mask=missing)
    out: list[tuple[str, Any]] = [
        (o, table.column(f"_v{j}").take(take)) for j, o in enumerate(scan.output_names)]
    out.append((f"_fl_matched_{index}", pa.array(~missing)))
    if scan.ttl_us is not None:
        keyed = np.zeros(n, dtype=bool)
        for rows in keyed_rows:
            keyed[rows] = True
        out.append((f"_fl_keyed_{index}", pa.array(keyed)))
    return out
