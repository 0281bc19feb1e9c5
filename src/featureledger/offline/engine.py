"""The offline engine seam: what an engine reads (a ViewScan) and what it must answer.

An offline engine runs point-in-time joins, window scans, latest value per key and key
listings over the files of exactly the commits the offline store hands it; DuckDB
(:mod:`featureledger.offline.duckdb`) is the embedded one. Engines are chosen from the
backend table (:mod:`featureledger.backends`) and every engine passes the same
conformance suite.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from featureledger.errors import RetrievalError
from featureledger.model.projection import ColumnSource, VersionProjection

if TYPE_CHECKING:

    import pyarrow as pa

    from featureledger.registry.commits import CommitRecord

ROW_COLUMN = "_row"  # entity row number, 0..n-1: output order


@dataclass(frozen=True)
class ViewScan:
    """What one view version contributes to a query.

    The files may belong to several source versions (a version reads the commits of the
    versions it carries data from); ``sources`` then says, per source version, how each
    feature is read from that version's files (see :mod:`featureledger.model.projection`)
    and ``file_sources`` which source each file belongs to. Without ``sources`` every file
    holds the features as stored.
    """

    join_keys: list[str]
    timestamp_field: str
    features: list[str]  # stored column names
    output_names: list[str]  # result column names, same order
    duckdb_types: list[str]  # declared types (for the all-null result of a view with no data)
    files: list[str]  # the chosen commits' Parquet files, as the store names them for engines
    ttl_us: int | None = None
    tie_break: bool = False  # commits overlap in event time: order ties by commit
    file_ranks: list[int] = field(default_factory=list)  # commit index (in commit order) per file
    event_range: tuple[int, int] | None = None  # µs: min and max event time over the files
    created_field: str | None = None  # created-timestamp column: the later one wins a tie
    sources: list[tuple[ColumnSource, ...]] = field(default_factory=list)
    file_sources: list[int] = field(default_factory=list)  # index into ``sources`` per file
    # per file: None when every row of the file is read (with the file's rank), else the
    # ``(commit id, rank)`` pairs whose rows are read from it: a compacted segment's file
    # holds the rows of many commits, of which a request may read some (as_of, quarantine)
    # and which tie by commit rank row by row. Empty list: no compacted files.
    file_commits: list[tuple[tuple[str, int], ...] | None] = field(default_factory=list)
    # every file is a file of one compacted segment holding exactly the commits read, each
    # file a range of join keys no other file holds, its rows sorted by (keys, event time,
    # created time with nulls first, commit time): the last row at or before a time is
    # the one point in time wants, ties included (``file_commits`` still ranks the rows
    # for engines that do not use the order)
    clustered: bool = False
    # per file (a compacted file's manifest entry): (min, max) of the first join key, an
    # int or a str, or None; empty list: none known. A file whose range holds no entity
    # row's key is never opened by the clustered merge.
    file_key_ranges: list[tuple[Any, Any] | None] = field(default_factory=list)

    def order_bits(self, ts_bounds: tuple[int, int] | None) -> int | None:
        """Bits for the commit rank when ``(event_us << bits) + rank`` fits in a BIGINT;
        None when it does not (the order key is then a HUGEINT)."""
        if ts_bounds is None or self.event_range is None:
            return None
        bits = max(1, (max(self.file_ranks, default=0) + 1).bit_length())
        biggest = max(abs(v) for v in (*ts_bounds, *self.event_range))
        return bits if (biggest + 1) << bits < 1 << 63 else None

    @classmethod
    def of(cls, *, join_keys: Sequence[str], timestamp_field: str, created_field: str | None,
           features: Sequence[str], output_names: Sequence[str], dtypes: Sequence[str],
           ttl_us: int | None, store: Any, commits: Sequence[CommitRecord],
           chain: Sequence[VersionProjection], tie_break: bool,
           event_range: tuple[int, int] | None, idle: Collection[str] = ()) -> ViewScan:
        """The scan of ``commits`` (in commit order, of any version in ``chain``) read as
        the chain's first version: each commit's files projected from its own version.
        ``store`` (the offline store) says where each commit's files are. ``idle``: ids
        of visible commits left out because no entity row can reach their rows (every row
        newer than the latest entity time, or older than the earliest less the TTL); a
        segment holding only those besides ``commits`` still counts as read whole for the
        clustered merge, which filters on the same bounds."""
        from featureledger.model.types import to_duckdb

        by_version = {p.version: p for p in chain}
        used = [p.version for p in chain if any(c.view_version == p.version for c in commits)]
        missing = {c.view_version for c in commits} - set(by_version)
        if missing:
            raise RetrievalError(
                f"internal: commits of version(s) {sorted(missing)} are not in the data chain "
                f"{[p.version for p in chain]}; please report this")
        index = {v: i for i, v in enumerate(used)}
        own_identity = len(used) == 1 and by_version[used[0]].select(features).identity
        files: list[str] = []
        ranks: list[int] = []
        srcs: list[int] = []
        picks: list[tuple[tuple[str, int], ...] | None] = []
        in_segments: dict[str, tuple[Any, list[tuple[str, int]]]] = {}
        loose = False
        for i, c in enumerate(commits):
            seg = c.segment
            if seg is not None:  # read from the compacted segment holding its rows
                in_segments.setdefault(seg.segment_id, (seg, []))[1].append((c.commit_id, i))
                continue
            loose = True
            for p in store.data_uris(c):
                files.append(p)
                ranks.append(i)
                srcs.append(index[c.view_version])
                picks.append(None)
        clustered = False
        key_ranges: list[tuple[Any, Any] | None] = [None] * len(files)
        if not in_segments and len(commits) == 1 and len(files) == 1:
            # one commit written as one file in the clustered order: it holds every row
            # read and no other file holds its keys
            entry = (commits[0].file_manifest or {}).get(commits[0].files[0], {}) \
                if len(commits[0].files) == 1 else {}
            clustered = entry.get("order") == KEY_CLUSTERED
            bounds = entry.get("key_range")
            key_ranges = [None if bounds is None else (bounds[0], bounds[1])]
        for seg, chosen in in_segments.values():
            # every row of the segment is wanted and no tie is ranked: read it whole
            whole = len(chosen) == len(seg.commit_ids) and not tie_break
            unread = set(seg.commit_ids) - {cid for cid, _ in chosen}
            clustered = (not loose and len(in_segments) == 1 and unread <= set(idle)
                         and key_clustered(seg))
            manifest = seg.file_manifest or {}
            for rel, p in zip(seg.files, store.data_uris(seg), strict=True):
                bounds = manifest.get(rel, {}).get("key_range")
                key_ranges.append(None if bounds is None else (bounds[0], bounds[1]))
                files.append(p)
                ranks.append(max(r for _, r in chosen))
                srcs.append(index[seg.view_version])
                picks.append(None if whole else tuple(chosen))
        return cls(
            join_keys=list(join_keys), timestamp_field=timestamp_field,
            features=list(features), output_names=list(output_names),
            duckdb_types=[to_duckdb(t) for t in dtypes],
            files=files, ttl_us=ttl_us, tie_break=tie_break, file_ranks=ranks,
            event_range=event_range, created_field=created_field,
            sources=[] if own_identity else [by_version[v].select(features).columns
                                             for v in used],
            file_sources=[] if own_identity else srcs,
            file_commits=picks if any(p is not None for p in picks) else [],
            clustered=clustered,
            file_key_ranges=key_ranges if any(r is not None for r in key_ranges) else [])

    @property
    def multi_source(self) -> bool:
        return len(self.sources) > 1

    def segments(self, by_rank: bool) -> list[tuple[int, int | None, list[str]]]:
        """``(source, rank, files)`` groups to read as the branches of one UNION ALL:
        one per source version, and one per commit too when ``by_rank``. For a scan with
        compacted files (``file_commits``) use :meth:`groups`."""
        if self.file_commits:
            raise RetrievalError("internal: a scan with compacted files is read by groups(); "
                                 "please report this")
        return [(src, rank, files) for src, rank, files, _ in self.groups(by_rank)]

    def groups(self, by_rank: bool
               ) -> list[tuple[int, int | None, list[str], tuple[tuple[str, int], ...] | None]]:
        """``(source, rank, files, picks)`` groups to read as the branches of one UNION ALL:
        one per source version, and one per commit too when ``by_rank``. ``picks`` is None
        for files read whole (every row with ``rank``), else the ``(commit id, rank)``
        pairs whose rows are read from them (``rank`` is then None: it comes per row)."""
        groups: dict[tuple[int, int | None, tuple[tuple[str, int], ...] | None],
                     list[str]] = {}
        srcs = self.file_sources or [0] * len(self.files)
        ranks = self.file_ranks or [0] * len(self.files)
        picks = self.file_commits or [None] * len(self.files)
        for f, src, rank, pick in zip(self.files, srcs, ranks, picks, strict=True):
            key = (src, None if pick is not None or not by_rank else rank, pick)
            groups.setdefault(key, []).append(f)
        return [(src, rank, files, pick) for (src, rank, pick), files in groups.items()]


KEY_CLUSTERED = "keys,time,created,commit"  # a compacted file's row order (its manifest)


def key_clustered(segment: Any) -> bool:
    """Whether every file of ``segment`` (a SegmentRecord) is written in the clustered
    order (see :attr:`ViewScan.clustered`); segments written before it was are not."""
    manifest = segment.file_manifest or {}
    return bool(segment.files) and all(
        manifest.get(f, {}).get("order") == KEY_CLUSTERED for f in segment.files)


AGGREGATION_FUNCTIONS = ("count", "sum", "mean", "min", "max", "stddev", "last",
                         "approx_count_distinct")


@dataclass(frozen=True)
class WindowAggregate:
    """One windowed aggregation an engine computes (a resolved
    :class:`featureledger.model.definitions.Aggregation`).

    Per entity row at time ``t`` (rounded down to a multiple of ``slide_us`` when set):
    the ``function`` of the scan's feature ``column`` (an index into ``scan.features``)
    over the scan's effective rows with the entity row's keys and ``t - window_us <
    event_ts <= t``. Nulls are skipped (``count`` counts non-null values, 0 over an empty
    window; the others are null there) except by ``last``, the value of the latest row,
    null or not. ``stddev`` is the sample deviation (null below two values);
    ``approx_count_distinct`` is computed exactly, so that every engine agrees.
    """

    column: int
    function: str
    window_us: int
    slide_us: int | None
    output: str
    dtype: str  # featureledger dtype of the result

    def __post_init__(self) -> None:
        if self.function not in AGGREGATION_FUNCTIONS or self.window_us <= 0 or (
                self.slide_us is not None and self.slide_us <= 0):
            raise RetrievalError(f"internal: aggregation {self} is not valid; please report "
                                 "this")


EXACT_BITS = 126  # a signed 128-bit integer (DuckDB HUGEINT, Spark DECIMAL(38, 0)), with room


def exact_scale(min_exp: float | None, max_exp: float | None, non_finite: int,
                count: int) -> int | None:
    """The power of two ``s`` that makes every value of a float column an integer small
    enough for ``count`` of them to add up exactly in :data:`EXACT_BITS` bits, given
    ``floor(log2(|v|))`` over the column's non-zero finite values (min and max), how many
    values are NaN or infinite, and how many there are. None when there is no such ``s``:
    the column has non-finite values (whose sum IEEE defines by order-free rules the
    integers cannot follow) or magnitudes too far apart.

    A double's lowest set bit is at most 52 places below its leading one, at
    ``2^floor(log2|v|)``; one more place covers ``log2`` rounding across a power of two.

    >>> exact_scale(-7.0, 9.0, 0, 10_000_000)   # 0.01 .. 999.99, ten million of them
    61
    >>> exact_scale(-1074.0, 0.0, 0, 10) is None, exact_scale(0.0, 1.0, 1, 10) is None
    (True, True)
    >>> exact_scale(None, None, 0, 3)  # zeros and nulls only
    0
    """
    if non_finite:
        return None
    if min_exp is None or max_exp is None:
        return 0
    scale = 54 - int(min_exp)
    bits = int(max_exp) + 2 + scale + max(1, int(count)).bit_length()
    if bits > EXACT_BITS or abs(scale) > 1000:
        return None
    return scale


def is_float(duckdb_type: str) -> bool:
    return duckdb_type.upper() in ("FLOAT", "DOUBLE", "REAL")


def exact_columns(scan: ViewScan, aggregations: Sequence[WindowAggregate]) -> list[int]:
    """The float columns some sum or mean aggregates: every engine sums them exactly (see
    :func:`exact_scale`) when it can, so that they are the same bits on every engine,
    plan and run: the correctly rounded sum of the window's values."""
    return sorted({a.column for a in aggregations if a.function in ("sum", "mean")
                   and is_float(scan.duckdb_types[a.column])})


def aggregate_lower_bound(aggregations: Sequence[WindowAggregate], lo: int) -> int:
    """The oldest event time (exclusive) any aggregation of an entity row at ``lo`` or
    later can reach: what an engine may prune below."""
    return lo - max(a.window_us + (a.slide_us or 0) for a in aggregations)


class OfflineEngine(Protocol):
    """What an offline engine does over the files of a set of commits (a :class:`ViewScan`).

    The engine never chooses files: the offline store hands it the paths of exactly the
    commits to read. Every engine gives the same answers (the engine conformance suite in
    ``tests/offline/test_engine_conformance.py`` holds them to it).
    """

    name: str
    version: str

    def point_in_time(self, entities: pa.Table, ts_col: str, scans: Sequence[ViewScan],
                      ts_bounds: tuple[int, int] | None = None) -> pa.RecordBatchReader:
        """Per entity row (``_row``), each scan's features as of the row's time (with the
        ``_fl_matched_<i>`` / ``_fl_keyed_<i>`` / ``_fl_src_<i>`` columns), any order."""

    def window(self, scan: ViewScan, start_us: int | None, end_us: int | None
               ) -> pa.RecordBatchReader:
        """Every effective row with ``start <= event time < end``, by time then keys."""

    def window_aggregate(self, entities: pa.Table, ts_col: str, scan: ViewScan,
                         aggregations: Sequence[WindowAggregate],
                         ts_bounds: tuple[int, int] | None = None) -> pa.RecordBatchReader:
        """Per entity row (``_row``), each aggregation's value (see
        :class:`WindowAggregate`) as a column named by its ``output``, in any order.
        Effective rows: among rows with the same keys and event time, the later created
        time, then the later commit. An entity row with a null key or time aggregates
        nothing."""

    def latest_per_key(self, scan: ViewScan, *, start: int | None = None,
                       end: int | None = None, only_commits: Sequence[str] | None = None,
                       new_commits: Sequence[str] | None = None, since: int | None = None,
                       keys: pa.Table | None = None) -> pa.Table:
        """The newest row per key (materialization): keys, ``_ts``, ``_ct``,
        ``_commit_id`` and the features."""

    def distinct_keys(self, scan: ViewScan) -> list[tuple[Any, ...]]:
        """Every distinct join-key tuple in the scan's files."""

    def rows(self, scan: ViewScan, extra: Sequence[str] = ()) -> pa.Table:
        """Every stored row, projected (keys, timestamp, created timestamp, features)."""

    def close(self) -> None:
        """Release the engine's resources."""


def quote_ident(name: str) -> str:
    """The one way an identifier enters SQL: double-quoted, inner quotes doubled (names
    are validated by :func:`featureledger.model.definitions.check_name` before that).

    >>> quote_ident('fare')
    '"fare"'
    """
    return '"' + name.replace('"', '""') + '"'


def quote_string(value: str) -> str:
    """The one way a text value enters SQL: single-quoted, inner quotes doubled.

    >>> quote_string("it's")
    "'it''s'"
    """
    return "'" + value.replace("'", "''") + "'"


_quote_str = quote_string
