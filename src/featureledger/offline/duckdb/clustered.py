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
3. binary-search every entity row's time within its run, all entity rows at once (one
   vectorised step per bit of the longest run's length; no sort of the entity rows): the
   last row of the run at or before that time, if any, is the match;
4. read the features of only the matched rows: locally a row group at a time, skipping
   groups no matched row is in (through DuckDB, a join on ``file_row_number``).

Ties need no extra work: among rows with the same keys and event time the file holds the
winner (the later created time, null lowest, then the later commit) last, which is the
row the search lands on. Rows that ``ts_bounds`` prunes in the SQL path (older than the
earliest entity time minus the TTL) do not count as matched on keys here either, so
"matched on keys but too old" means the same on both paths (the local read keeps them in
the search, which saves a copy of the file's keys and times, and then discounts them).

When the layout does not hold what it promises (a key type with no total order in Arrow's
sense, times not ascending within a key) the caller falls back to the SQL path;
the answers are the same either way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from featureledger.errors import StorageError
from featureledger.offline.engine import ViewScan, quote_ident, quote_string

if TYPE_CHECKING:
    import pyarrow as pa



def _order_of(frn: Any) -> Any:
    """The permutation that puts rows back in file order (None when they are in it)."""
    import numpy as np

    if frn.size < 2 or bool(np.all(frn[1:] > frn[:-1])):
        return None
    return np.argsort(frn, kind="stable")  # runs of ordered rows: a merge, not a full sort


def _plain(t: pa.DataType) -> bool:
    """Arrow types a Parquet file gives back exactly as DuckDB would (no list field names,
    no large strings): what the local read may hand over without going through DuckDB."""
    import pyarrow as pa

    return (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)
            or pa.types.is_string(t) or pa.types.is_date32(t)
            or t == pa.timestamp("us", tz="UTC"))


@contextmanager
def _read_errors(path: str) -> Iterator[None]:
    """pyarrow's errors reading a commit file as a StorageError (the offline store's read
    guard then names the commit when a stat or the footer shows what is wrong)."""
    import pyarrow as pa

    try:
        yield
    except (OSError, pa.ArrowException) as exc:
        raise StorageError(f"reading the offline store failed: {path}: {exc}. A commit's "
                           "files may have been removed or damaged; check them with "
                           "'featureledger reconcile --deep'") from exc


def _reach(scan: ViewScan, ts_bounds: tuple[int, int] | None) -> tuple[int | None, int | None]:
    """(oldest, newest) event µs a row can have and still be some entity row's match (the
    earliest entity time less the TTL, the latest entity time); None: no bound."""
    if ts_bounds is None:
        return None, None
    return (None if scan.ttl_us is None else ts_bounds[0] - scan.ttl_us), ts_bounds[1]


def _rows_of(pf: Any, columns: list[str], rows: Any) -> tuple[pa.Table, Any]:
    """``columns`` of the file rows ``rows`` (any order, repeats allowed), a row group at
    a time, and which of ``rows`` each result row is (the results come group by group):
    a row group no row is in is never decoded, and memory holds one decoded row group,
    not the file (a whole 1M-row file is ~60 MB of fresh allocations, whose first touch
    costs more kernel time than the decoding, and varies run to run)."""
    import numpy as np
    import pyarrow as pa

    meta = pf.metadata
    parts, which = [], []
    start = 0
    for g in range(meta.num_row_groups):
        end = start + meta.row_group(g).num_rows
        picked = np.flatnonzero((rows >= start) & (rows < end))
        if picked.size:
            # the columns decode in parallel (the hand-written ASOF join uses every core too)
            group = pf.read_row_group(g, columns=columns, use_threads=True)
            parts.append(group.take(pa.array(rows[picked] - start)))
            which.append(picked)
        start = end
    if not parts:
        return pf.schema_arrow.empty_table().select(columns), np.zeros(0, dtype=np.int64)
    return pa.concat_tables(parts), np.concatenate(which)


class _Files:
    """How the merge reads a file: with pyarrow for a local file (in file order, no row
    numbers needed), else through DuckDB (any file system DuckDB reads, e.g. S3)."""

    def __init__(self, query: Callable[[str], pa.Table], register: Callable[[str, Any], None],
                 scan: ViewScan, local: bool) -> None:
        self.query, self.register, self.scan, self.local = query, register, scan, local

    def narrow(self, path: str, ts_bounds: tuple[int, int] | None
               ) -> tuple[pa.Table, Any, Any]:
        """The keys (a table), event µs and file row numbers (None: every row, in order) of
        the rows that can match: keys and time not null, in file order. Through DuckDB
        also within ``ts_bounds`` (less the TTL); the local read keeps the rows outside
        them, which the search never lands on (newer than every entity row) or counts as
        matched on keys only when inside them (older), so both mean the same."""
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        s = self.scan
        keys = list(s.join_keys)
        if not self.local:
            lo, hi = _reach(s, ts_bounds)
            ts = quote_ident(s.timestamp_field)
            conds = [f"{quote_ident(k)} IS NOT NULL" for k in keys] + [f"{ts} IS NOT NULL"]
            if hi is not None:
                conds.append(f"epoch_us({ts}) <= {int(hi)}")
            if lo is not None:
                conds.append(f"epoch_us({ts}) >= {int(lo)}")
            narrow = self.query(
                f"SELECT file_row_number AS _fl_frn, {', '.join(quote_ident(k) for k in keys)},"
                f" epoch_us({ts}) AS _fl_t FROM {self.source(path)} WHERE {' AND '.join(conds)}")
            frn = narrow.column("_fl_frn").to_numpy()
            order = _order_of(frn)
            if order is not None:
                narrow = narrow.take(pa.array(order))
                frn = frn[order]
            return narrow.select(keys), narrow.column("_fl_t").to_numpy(), frn
        with _read_errors(path):
            table = pq.ParquetFile(path).read(columns=[*keys, s.timestamp_field],
                                              use_threads=True)
        t_col = table.column(s.timestamp_field).cast(pa.int64())
        if not t_col.null_count and not any(table.column(k).null_count for k in keys):
            return table.select(keys), t_col.to_numpy(), None  # no copy, no row numbers
        mask = pc.is_valid(t_col)
        for k in keys:
            mask = pc.and_(mask, pc.is_valid(table.column(k)))
        frn = np.flatnonzero(mask.to_numpy(zero_copy_only=False))
        pick = pa.array(frn)
        return table.select(keys).take(pick), t_col.take(pick).to_numpy(), frn

    def fetch(self, path: str, src: int, rows: Any, frn: Any) -> pa.Table:
        """``_fl_i`` (entity rows, from ``rows``) and the features ``_v<j>`` of the file
        rows ``frn`` they matched."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        from featureledger.offline.duckdb.engine import feature_sql

        s = self.scan
        if self.local and not s.sources:
            with _read_errors(path):
                pf = pq.ParquetFile(path)
                plain = all(_plain(pf.schema_arrow.field(f).type) for f in s.features)
                table, which = _rows_of(pf, list(s.features), frn) if plain else (None, None)
            if table is not None:
                return pa.table({"_fl_i": rows[which], **{f"_v{j}": table.column(f)
                                                          for j, f in enumerate(s.features)}})
        self.register("_fl_matches", pa.table({"_fl_i": rows, "_fl_frn": frn}))
        cols = ", ".join(f"{expr} AS _v{j}" for j, expr in enumerate(feature_sql(s, src)))
        return self.query(f"SELECT _m._fl_i, {cols} FROM {self.source(path)} _p JOIN "
                          "_fl_matches _m ON _p.file_row_number = _m._fl_frn")

    @staticmethod
    def source(path: str) -> str:
        return f"read_parquet([{quote_string(path)}], file_row_number=true)"


def clustered_point_in_time(query: Callable[[str], pa.Table], register: Callable[[str, Any],
                            None], entities: pa.Table, ts_col: str, scan: ViewScan, index: int,
                            ts_bounds: tuple[int, int] | None, *, local: bool
                            ) -> list[tuple[str, Any]] | None:
    """Scan ``index``'s result columns (its outputs, ``_fl_matched_<i>``, ``_fl_keyed_<i>``
    with a TTL) in the order of ``entities``' rows, or None when the layout does not allow
    the merge (the caller then runs the SQL path). ``query`` runs SQL to Arrow,
    ``register`` names an Arrow table for it; ``local``: the files are local paths."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

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
    files = _Files(query, register, scan, local)
    oldest = _reach(scan, ts_bounds)[0]
    fetched: list[pa.Table] = []
    keyed_rows: list[Any] = []
    srcs = scan.file_sources or [0] * len(scan.files)
    reaches = _key_reach(probe.column(keys[0]), scan.file_key_ranges)
    for i, (path, src) in enumerate(zip(scan.files, srcs, strict=True)):
        if not reaches(i):
            continue  # no entity row's key is in the file's range: not even opened
        file_keys, t, frn = files.narrow(path, ts_bounds)
        m = file_keys.num_rows
        if m == 0:
            continue
        change = np.zeros(m, dtype=bool)
        change[0] = True
        for k in keys:
            col = file_keys.column(k).combine_chunks()
            if m > 1:
                change[1:] |= pc.not_equal(col.slice(1), col.slice(0, m - 1)).to_numpy(
                    zero_copy_only=False)
        starts = np.flatnonzero(change)
        hit = _runs_of(probe, file_keys.take(pa.array(starts)), keys)
        if hit is None:
            return None
        if hit.num_rows == 0:
            continue
        if m > 1 and not bool(np.all((t[1:] >= t[:-1]) | change[1:])):
            return None  # times not ascending within a key: let SQL sort it
        e_run = hit.column("_fl_run").to_numpy()
        e_t = hit.column("_fl_et").to_numpy()
        e_i = hit.column("_fl_i").to_numpy()
        ends = np.append(starts[1:], m)
        pos = _last_at_or_before(t, starts[e_run], ends[e_run], e_t)
        found = pos >= starts[e_run]
        pos, e_t, e_i = pos[found], e_t[found], e_i[found]
        # matched on keys: a row the SQL path reads too (not older than any entity row
        # can reach; those it prunes)
        keyed_rows.append(e_i if oldest is None else e_i[t[pos] >= oldest])
        if scan.ttl_us is not None:
            fresh = e_t - t[pos] <= scan.ttl_us
            pos, e_i = pos[fresh], e_i[fresh]
        if e_i.size:
            fetched.append(files.fetch(path, src, e_i, pos if frn is None else frn[pos]))
    return _assemble(query, scan, index, n, fetched, keyed_rows)


def _last_at_or_before(t: Any, lo: Any, hi: Any, at: Any) -> Any:
    """Per needle ``j``, the last index in ``[lo[j], hi[j])`` whose ``t`` is ``<= at[j]``
    (``t`` ascending within each range), ``lo[j] - 1`` when there is none: a binary
    search of every needle at once, in as many steps as the longest range has bits (no
    sort of the needles, no combined key over the file)."""
    import numpy as np

    lo, hi = lo.copy(), hi.copy()  # the first index past the needle's time, once lo == hi
    while True:
        active = lo < hi
        if not active.any():
            return lo - 1
        mid = (lo + hi) >> 1
        right = active & (t[np.minimum(mid, t.size - 1)] <= at)
        lo = np.where(right, mid + 1, lo)
        hi = np.where(active & ~right, mid, hi)


def _key_reach(column: pa.ChunkedArray, ranges: list[tuple[Any, Any] | None]
               ) -> Callable[[int], bool]:
    """Whether some value of ``column`` (the entity rows' first join key) lies in file
    ``i``'s key range (a file without one: yes). One file is always read: the distinct
    keys cost more than they would save."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    if len(ranges) < 2 or not any(r is not None for r in ranges):
        return lambda i: True
    t = column.type
    if pa.types.is_integer(t):
        values = np.unique(column.to_numpy())  # no nulls: the probe holds valid keys only
    elif pa.types.is_string(t) or pa.types.is_large_string(t):
        # Arrow orders text by UTF-8 bytes, which is Python's order of code points
        values = np.array(pc.unique(column).drop_null().to_pylist(), dtype=object)
        values.sort()
    else:
        return lambda i: True

    def reaches(i: int) -> bool:
        r = ranges[i]
        if r is None:
            return True
        try:
            first = int(np.searchsorted(values, r[0], side="left"))
            return first < values.size and bool(values[first] <= r[1])
        except TypeError:  # a range of another kind of value than the keys: read it
            return True

    return reaches


def _runs_of(probe: pa.Table, runs: pa.Table, keys: list[str]) -> pa.Table | None:
    """The entity rows whose keys are those of a run of the file, with the run's number
    (``_fl_run``); None when Arrow cannot compare the key types (the SQL path casts)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        if len(keys) == 1:  # the runs' keys are distinct: a lookup, no join needed
            at = pc.index_in(probe.column(keys[0]), value_set=runs.column(keys[0]))
            found = pc.is_valid(at)
            return probe.filter(found).append_column("_fl_run", at.filter(found).cast(
                pa.int64()))
        numbered = runs.append_column("_fl_run", pa.array(np.arange(runs.num_rows,
                                                                    dtype=np.int64)))
        return probe.join(numbered, keys=keys, join_type="inner")
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return None


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
    matched = pa.array(~missing)
    out: list[tuple[str, Any]] = [
        (o, _spread(table.column(f"_v{j}"), at, matched))
        for j, o in enumerate(scan.output_names)]
    out.append((f"_fl_matched_{index}", matched))
    if scan.ttl_us is not None:
        keyed = np.zeros(n, dtype=bool)
        for rows in keyed_rows:
            keyed[rows] = True
        out.append((f"_fl_keyed_{index}", pa.array(keyed)))
    return out


def _spread(column: pa.ChunkedArray, at: Any, matched: pa.BooleanArray) -> pa.Array:
    """``column``'s rows ``at`` (-1: none), null where ``matched`` is false. A take with
    null indices costs ~6x one without (measured: 1.4 vs 0.23 ms per 100k float64 rows),
    so a fixed-width column without nulls of its own is taken with plain indices and
    given ``matched`` as its validity bitmap (what lies under a null slot never matters)."""
    import numpy as np
    import pyarrow as pa

    arr = column.combine_chunks()
    t = arr.type
    missing = len(matched) - matched.true_count
    if missing == 0:
        return arr.take(pa.array(at))
    if arr.null_count == 0 and len(arr) and (pa.types.is_integer(t) or pa.types.is_floating(t)
                                             or pa.types.is_temporal(t)):
        taken = arr.take(pa.array(np.maximum(at, 0)))
        return pa.Array.from_buffers(t, len(at), [matched.buffers()[1], taken.buffers()[1]],
                                     null_count=missing)
    return arr.take(pa.array(at, mask=at < 0))
