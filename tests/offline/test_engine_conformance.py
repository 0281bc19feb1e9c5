"""The engine conformance suite: every offline engine gives the same answers.

Each test runs on every engine (``duckdb``; ``spark`` with the ``spark`` marker) over small
Parquet files written here the way the offline store writes commits (features plus
``_commit_id`` / ``_commit_time``), and compares the engine's answer with a brute-force
oracle in plain Python below: no engine code is used to compute what is expected. Results
must also have DuckDB's Arrow schema and content hash, since training-set hashes are
computed from the engines' Arrow columns and must not depend on the engine.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from featureledger.model.projection import ColumnSource
from featureledger.model.types import to_arrow
from featureledger.offline.dataset import content_hash
from featureledger.offline.engine import ROW_COLUMN, ViewScan, WindowAggregate

TS = pa.timestamp("us", tz="UTC")
SEC = 1_000_000
BASE = 1_700_000_000 * SEC  # event times: BASE + seconds (present-day, like real data)
COMMIT_BASE = BASE + 10_000 * SEC
FEATURES = ["speed", "trips", "rating", "level"]
DTYPES = ["float64", "int64", "float32", "int64"]
DUCK = {"float64": "DOUBLE", "int64": "BIGINT", "float32": "FLOAT"}
LEVEL_DEFAULT = 3
_dirs = itertools.count()


def examples(engine: Any, many: int) -> dict[str, Any]:
    """Hypothesis settings per engine. Spark answers each example with several jobs: a few
    examples, and no shrinking (minutes on Spark; a failing case replays on DuckDB in
    seconds), keep it quick."""
    if engine.name == "duckdb":
        return {"max_examples": many}
    return {"max_examples": 15, "phases": [Phase.explicit, Phase.reuse, Phase.generate]}


# -- data: commits as the store writes them ----------------------------------------------
@dataclass
class Row:
    k: int | None
    ts: int  # µs
    speed: float | None
    trips: int | None
    rating: float | None
    level: int | None
    created: int | None
    commit: int  # index = commit rank
    source: int  # source version (0: the read version; 1: an older one)


@dataclass
class Scenario:
    rows: list[Row]
    commits: list[int]  # source version per commit
    multi: bool
    created: bool

    def commit_id(self, i: int) -> str:
        return f"cmt_{i:04d}"

    def commit_time(self, i: int) -> int:
        return COMMIT_BASE + i * 1000

    def value(self, r: Row, f: str) -> Any:
        """The oracle's projection: version 1 lacks ``rating`` (null) and ``level``
        (its default) and stores ``trips`` as int32 (same values once widened)."""
        if r.source == 1 and f == "rating":
            return None
        if r.source == 1 and f == "level":
            return LEVEL_DEFAULT
        return getattr(r, f)

    def overlap(self) -> bool:
        spans = sorted((min(r.ts for r in rs), max(r.ts for r in rs))
                       for i in range(len(self.commits))
                       if (rs := [r for r in self.rows if r.commit == i]))
        return any(lo <= prev_hi for (_, prev_hi), (lo, _) in itertools.pairwise(spans))


DECOY = 9999  # a commit compacted into the same file that the request does not read


def clustered_files(sc: Scenario, folder: Any) -> list[str]:
    """The rows of every commit as compaction lays out a segment: files of disjoint key
    sets (here: key 1; keys 2 and 3; null keys), each sorted by key (nulls last), event
    time, created time (nulls first) and commit."""
    groups: list[list[Row]] = [[r for r in sc.rows if r.k == 1],
                               [r for r in sc.rows if r.k in (2, 3)],
                               [r for r in sc.rows if r.k is None]]
    paths = []
    for n, rows in enumerate(g for g in groups if g):
        rows = sorted(rows, key=lambda r: (null_last(r.k), r.ts, r.created is not None,
                                           r.created or 0, r.commit))
        path = folder / f"cl{n}.parquet"
        table = {"k": pa.array([r.k for r in rows], pa.int64()),
                 "ts": pa.array([r.ts for r in rows], TS)}
        if sc.created:
            table["created"] = pa.array([r.created for r in rows], TS)
        table.update({f: pa.array([getattr(r, f) for r in rows], to_arrow(t))
                      for f, t in zip(FEATURES, DTYPES, strict=True)})
        table["_commit_id"] = pa.array([sc.commit_id(r.commit) for r in rows], pa.string())
        table["_commit_time"] = pa.array([sc.commit_time(r.commit) for r in rows], TS)
        pq.write_table(pa.table(table), path, row_group_size=2)
        paths.append(str(path))
    return paths


def write_scan(sc: Scenario, root: Any, *, ttl: int | None = None, prefix: str = "",
               files: bool = True, compact: bool = False, cluster: bool = False) -> ViewScan:
    """Write each commit as one Parquet file and describe the scan as ViewScan.of would.

    With ``compact``, the commits of each source version go into one file, as compaction
    writes a segment, together with rows of a commit the request does not pick (which
    would win every key if it were read); the scan then lists the picked commits and their
    ranks per file. With ``cluster`` (one source version, rows in every commit), every
    commit is read from one segment in the clustered layout (:func:`clustered_files`)."""
    folder = root / f"s{next(_dirs)}"
    folder.mkdir()
    times = [r.ts for r in sc.rows]
    if cluster and files and sc.rows and set(sc.commits) == {0} and all(
            any(r.commit == i for r in sc.rows) for i in range(len(sc.commits))):
        paths = clustered_files(sc, folder)
        every = tuple((sc.commit_id(i), i) for i in range(len(sc.commits)))
        return ViewScan(
            join_keys=["k"], timestamp_field="ts", features=list(FEATURES),
            output_names=[f"{prefix}{f}" for f in FEATURES],
            duckdb_types=[DUCK[t] for t in DTYPES], files=paths, ttl_us=ttl,
            tie_break=sc.overlap(), file_ranks=[len(sc.commits) - 1] * len(paths),
            event_range=(min(times), max(times)),
            created_field="created" if sc.created else None,
            file_commits=[every] * len(paths) if sc.overlap() else [], clustered=True)
    paths, ranks, used_by_file = [], [], []
    picks: list[tuple[tuple[str, int], ...] | None] = []
    units: list[tuple[int, list[int]]] = []  # (source version, commits) per file
    for i, src in enumerate(sc.commits):
        if any(r.commit == i for r in sc.rows):  # the store never hands over an empty commit
            units.append((src, [i]))
    if compact:
        merged: dict[int, list[int]] = {}
        for src, cs in units:
            merged.setdefault(src, []).extend(cs)
        units = list(merged.items())
    for n, (src, members) in enumerate(units):
        rows = [r for r in sc.rows if r.commit in members]
        if compact:
            rows = rows + [Row(k=k, ts=BASE + 12 * SEC, speed=999.0, trips=999, rating=9.0,
                               level=9, created=BASE + 9 * SEC if sc.created else None,
                               commit=DECOY, source=src) for k in (1, 2, 3)]
        cols: dict[str, pa.Array] = {
            "k": pa.array([r.k for r in rows], pa.int64()),
            "ts": pa.array([r.ts for r in rows], TS),
        }
        if sc.created:
            cols["created"] = pa.array([r.created for r in rows], TS)
        cols["speed"] = pa.array([r.speed for r in rows], pa.float64())
        if src == 0:
            cols["trips"] = pa.array([r.trips for r in rows], pa.int64())
            cols["rating"] = pa.array([r.rating for r in rows], pa.float32())
            cols["level"] = pa.array([r.level for r in rows], pa.int64())
        else:
            cols["trips"] = pa.array([r.trips for r in rows], pa.int32())
        cols["_commit_id"] = pa.array([sc.commit_id(r.commit) for r in rows], pa.string())
        cols["_commit_time"] = pa.array([sc.commit_time(r.commit) for r in rows], TS)
        path = folder / f"c{n}.parquet"
        pq.write_table(pa.table(cols), path)
        paths.append(str(path))
        ranks.append(max(members))
        used_by_file.append(src)
        picks.append(tuple((sc.commit_id(i), i) for i in members) if compact else None)
    used = sorted(set(used_by_file))
    own = [ColumnSource(f, f, t, t) for f, t in zip(FEATURES, DTYPES, strict=True)]
    old = [ColumnSource("speed", "speed", "float64", "float64"),
           ColumnSource("trips", "trips", "int32", "int64"),
           ColumnSource("rating", None, None, "float32"),
           ColumnSource("level", None, None, "int64", LEVEL_DEFAULT)]
    projections = {0: tuple(own), 1: tuple(old)}
    identity = used in ([], [0])
    return ViewScan(
        join_keys=["k"], timestamp_field="ts", features=list(FEATURES),
        output_names=[f"{prefix}{f}" for f in FEATURES],
        duckdb_types=[DUCK[t] for t in DTYPES], files=paths if files else [], ttl_us=ttl,
        tie_break=sc.overlap(), file_ranks=ranks if files else [],
        event_range=(min(times), max(times)) if times else None,
        created_field="created" if sc.created else None,
        sources=[] if identity else [projections[v] for v in used],
        file_sources=[] if identity or not files else [used.index(s) for s in used_by_file],
        file_commits=picks if compact and files else [])


value = st.one_of(st.none(), st.integers(-4, 4))


@st.composite
def scenarios(draw: Any, max_commits: int = 4, multi: bool | None = None) -> Scenario:
    multi = draw(st.booleans()) if multi is None else multi
    created = draw(st.booleans())
    commits = draw(st.lists(st.integers(0, 1) if multi else st.just(0), max_size=max_commits))
    rows = []
    for i, src in enumerate(commits):
        drawn = draw(st.lists(
            st.tuples(st.sampled_from([1, 2, 3, None]), st.integers(0, 12), value, value, value,
                      value, st.one_of(st.none(), st.integers(0, 2))),
            max_size=6, unique_by=lambda r: (r[0], r[1])))  # unique (keys, time) per commit
        for k, s, v1, v2, v3, v4, c in drawn:
            rows.append(Row(k=k, ts=BASE + s * SEC, speed=None if v1 is None else v1 / 2,
                            trips=v2, rating=None if v3 is None else v3 / 4, level=v4,
                            created=None if c is None or not created else BASE + c * SEC,
                            commit=i, source=src))
    return Scenario(rows=rows, commits=commits, multi=multi, created=created)


entity_rows = st.lists(st.tuples(
    st.sampled_from([1, 2, 3, 4, None]),
    st.one_of(st.none(), st.tuples(st.integers(-1, 14), st.sampled_from([-1, 0, 1])))),
    min_size=1, max_size=12)


def entity_table(drawn: list[Any]) -> tuple[pa.Table, list[tuple[int | None, int | None]]]:
    ents = [(k, None if t is None else BASE + t[0] * SEC + t[1]) for k, t in drawn]
    table = pa.table({"ets": pa.array([t for _, t in ents], TS),
                      "k": pa.array([k for k, _ in ents], pa.int64()),
                      ROW_COLUMN: pa.array(range(len(ents)), pa.int64())})
    return table, ents


# -- the oracle --------------------------------------------------------------------------
def tie_order(sc: Scenario, r: Row) -> tuple[Any, ...]:
    """Among rows with the same keys and time: the later created time (null lowest), then
    the later commit."""
    created = (r.created is not None, r.created or 0) if sc.created else (False, 0)
    return (*created, r.commit)


def oracle_pit(sc: Scenario, scan: ViewScan, ents: list[tuple[int | None, int | None]],
               i: int, ts_bounds: tuple[int, int] | None) -> list[dict[str, Any]]:
    out = []
    used = sorted({s for s in sc.commits})
    multi = len({r.source for r in sc.rows}) > 1
    rows = sc.rows
    if ts_bounds is not None and scan.ttl_us is not None:
        # rows older than every entity time minus the TTL are not read at all, so they do
        # not count as "keyed" either (the engines prune them before the join)
        rows = [r for r in rows if r.ts >= ts_bounds[0] - scan.ttl_us]
    for k, t in ents:
        best = None
        if scan.files and k is not None and t is not None:
            for r in rows:
                if r.k == k and r.ts <= t and (
                        best is None or (r.ts, *tie_order(sc, r)) > (best.ts, *tie_order(sc, best))):
                    best = r
        valid = best is not None and (scan.ttl_us is None or t - best.ts <= scan.ttl_us)
        row = {o: (sc.value(best, f) if valid else None)
               for f, o in zip(FEATURES, scan.output_names, strict=True)}
        row[f"_fl_matched_{i}"] = valid
        if scan.files and scan.ttl_us is not None:
            row[f"_fl_keyed_{i}"] = best is not None
        if scan.files and multi:
            row[f"_fl_src_{i}"] = used.index(best.source) if valid else None
        out.append(row)
    return out


def effective(sc: Scenario, rows: list[Row], dedupe: bool) -> list[Row]:
    """Rows left when a later commit (or created time) supersedes the same keys and time."""
    if not dedupe:
        return rows
    best: dict[tuple[Any, int], Row] = {}
    for r in rows:
        key = (r.k, r.ts)
        if key not in best or tie_order(sc, r) > tie_order(sc, best[key]):
            best[key] = r
    return list(best.values())


def null_last(v: Any) -> tuple[bool, Any]:
    return (v is None, v if v is not None else 0)


# -- point in time -------------------------------------------------------------------------
def check_pit(engine: Any, sc: Scenario, entities: pa.Table, ents: list[Any], a: ViewScan,
              b: ViewScan, bounds: bool) -> tuple[pa.Table, tuple[int, int] | None]:
    """The engine's point in time of scans ``a`` and ``b`` against the oracle; returns the
    engine's table and the time bounds it was given."""
    times = [t for _, t in ents if t is not None]
    ts_bounds = (min(times), max(times)) if bounds and times else None
    table = engine.point_in_time(entities, "ets", [a, b], ts_bounds).read_all()
    got = table.sort_by(ROW_COLUMN).drop_columns([ROW_COLUMN]).to_pylist()
    want = [{**x, **y} for x, y in zip(oracle_pit(sc, a, ents, 0, ts_bounds),
                                       oracle_pit(sc, b, ents, 1, ts_bounds), strict=True)]
    assert got == want
    return table, ts_bounds


def test_point_in_time_matches_the_oracle(engine, tmp_path_factory):
    root = tmp_path_factory.mktemp("pit")

    @settings(**examples(engine, 80), deadline=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(sc=scenarios(), drawn=entity_rows, ttl=st.one_of(st.none(), st.integers(0, 6)),
           ttl_b=st.one_of(st.none(), st.integers(0, 6)), b_files=st.booleans(),
           bounds=st.booleans(), compact=st.booleans(), cluster=st.booleans(),
           cluster_b=st.booleans())
    def check(sc, drawn, ttl, ttl_b, b_files, bounds, compact, cluster, cluster_b):
        entities, ents = entity_table(drawn)
        a = write_scan(sc, root, ttl=None if ttl is None else ttl * SEC, prefix="a_",
                       compact=compact, cluster=cluster)
        b = write_scan(sc, root, ttl=None if ttl_b is None else ttl_b * SEC, prefix="b_",
                       files=b_files, cluster=cluster_b)
        check_pit(engine, sc, entities, ents, a, b, bounds)

    check()


def test_point_in_time_on_the_clustered_layout_matches_the_oracle(engine, tmp_path_factory):
    """A scan of one compacted segment read whole, in the clustered layout (the DuckDB
    engine merges instead of sorting; ties, created times, the TTL and pruning alike)."""
    root = tmp_path_factory.mktemp("clustered")

    @settings(**examples(engine, 80), deadline=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(sc=scenarios(multi=False), drawn=entity_rows,
           ttl=st.one_of(st.none(), st.integers(0, 6)), bounds=st.booleans())
    def check(sc, drawn, ttl, bounds):
        entities, ents = entity_table(drawn)
        a = write_scan(sc, root, ttl=None if ttl is None else ttl * SEC, prefix="a_",
                       cluster=True)
        b = write_scan(sc, root, prefix="b_")  # beside a scan the SQL path reads
        table, ts_bounds = check_pit(engine, sc, entities, ents, a, b, bounds)
        # the same Arrow schema and bytes as the same files read without the layout's help
        plain = engine.point_in_time(entities, "ets", [dataclasses.replace(a, clustered=False),
                                                       b], ts_bounds).read_all()
        assert table.schema == plain.schema
        assert content_hash(table.sort_by(ROW_COLUMN)) == content_hash(plain.sort_by(ROW_COLUMN))

    check()


@pytest.mark.parametrize("event_range", [(10, 30), None], ids=["bigint", "hugeint"])
def test_ties_go_to_the_later_commit_with_either_order_key(engine, tmp_path, event_range):
    paths = []
    for i, (vals, ts) in enumerate([([1.0, 2.0], [10, 20]), ([3.0, 4.0], [20, 30]),
                                    ([5.0], [20])]):
        p = tmp_path / f"c{i}.parquet"
        pq.write_table(pa.table({"k": pa.array([1] * len(vals), pa.int64()),
                                 "ts": pa.array(ts, TS), "v": vals}), p)
        paths.append(str(p))
    scan = ViewScan(join_keys=["k"], timestamp_field="ts", features=["v"], output_names=["v"],
                    duckdb_types=["DOUBLE"], files=paths, ttl_us=15, tie_break=True,
                    file_ranks=[0, 1, 2], event_range=event_range)
    assert (scan.order_bits((0, 100)) is None) == (event_range is None)
    entities = pa.table({"ts": pa.array([20, 25, 29, 9, 46, 45], TS),
                         "k": pa.array([1, 1, 1, 1, 1, 1], pa.int64()),
                         "_row": pa.array(range(6), pa.int64())})
    got = engine.point_in_time(entities, "ts", [scan], (9, 46)).read_all().sort_by("_row")
    # ts 20 exists in three commits: the last one (5.0) wins; 46 is 16 > ttl past 30
    assert got.column("v").to_pylist() == [5.0, 5.0, 5.0, None, None, 4.0]
    assert got.column("_fl_matched_0").to_pylist() == [True, True, True, False, False, True]


def test_order_bits_fall_back_to_hugeint_when_the_key_would_overflow():
    scan = ViewScan(join_keys=["k"], timestamp_field="ts", features=["v"], output_names=["v"],
                    duckdb_types=["DOUBLE"], files=["x"] * 40, tie_break=True,
                    file_ranks=list(range(40)), event_range=(0, 1 << 50))
    assert scan.order_bits((0, 1 << 50)) == 6
    assert scan.order_bits((0, 1 << 57)) is None


# -- windows, latest per key, keys, rows ----------------------------------------------------
def test_window_matches_the_oracle(engine, tmp_path_factory):
    root = tmp_path_factory.mktemp("window")
    bound = st.one_of(st.none(), st.integers(-1, 13))

    @settings(**examples(engine, 60), deadline=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(sc=scenarios(), start=bound, end=bound, compact=st.booleans())
    def check(sc, start, end, compact):
        if not any(r.commit == i for r in sc.rows for i in range(len(sc.commits))):
            return  # a window is never asked of a scan without files
        scan = write_scan(sc, root, compact=compact)
        lo = None if start is None else BASE + start * SEC
        hi = None if end is None else BASE + end * SEC
        got = engine.window(scan, lo, hi).read_all()
        rows = [r for r in sc.rows if (lo is None or r.ts >= lo) and (hi is None or r.ts < hi)]
        rows = effective(sc, rows, scan.tie_break or sc.created)
        rows.sort(key=lambda r: (r.ts, null_last(r.k)))
        assert got.to_pylist() == [
            {"k": r.k, "ts": pa.scalar(r.ts, TS).as_py(), **{f: sc.value(r, f) for f in FEATURES},
             "_commit_id": sc.commit_id(r.commit),
             "_commit_time": pa.scalar(sc.commit_time(r.commit), TS).as_py()} for r in rows]

    check()


def test_latest_per_key_matches_the_oracle_with_every_option(engine, tmp_path_factory):
    root = tmp_path_factory.mktemp("latest")
    bound = st.one_of(st.none(), st.integers(-1, 13))
    picks = st.one_of(st.none(), st.sets(st.integers(0, 4), max_size=3))

    @settings(**examples(engine, 60), deadline=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(sc=scenarios(), start=bound, end=bound, only=picks, new=picks,
           since=st.integers(-1, 13),
           keys=st.one_of(st.none(), st.lists(st.sampled_from([1, 2, 4, None]), max_size=3)),
           compact=st.booleans())
    def check(sc, start, end, only, new, since, keys, compact):
        if not any(r.commit == i for r in sc.rows for i in range(len(sc.commits))):
            return  # materialization never queries a scan without files
        scan = write_scan(sc, root, compact=compact)
        opts: dict[str, Any] = {}
        rows = sc.rows
        if start is not None:
            opts["start"] = BASE + start * SEC
            rows = [r for r in rows if r.ts >= opts["start"]]
        if end is not None:
            opts["end"] = BASE + end * SEC
            rows = [r for r in rows if r.ts <= opts["end"]]
        if only is not None:
            opts["only_commits"] = [sc.commit_id(i) for i in sorted(only)]
            rows = [r for r in rows if r.commit in only]
        if new is not None:
            opts["new_commits"] = [sc.commit_id(i) for i in sorted(new)]
            opts["since"] = BASE + since * SEC
            rows = [r for r in rows if r.commit in new or r.ts > opts["since"]]
        if keys is not None:
            opts["keys"] = pa.table({"k": pa.array(keys, pa.int64())})
            rows = [r for r in rows if r.k is not None and r.k in keys]
        best: dict[Any, Row] = {}
        for r in rows:
            if r.k not in best or (r.ts, *tie_order(sc, r)) > (best[r.k].ts,
                                                               *tie_order(sc, best[r.k])):
                best[r.k] = r
        want = sorted(({"k": r.k, "_ts": r.ts,
                        "_ct": (r.created or 0) if sc.created else sc.commit_time(r.commit),
                        "_commit_id": sc.commit_id(r.commit),
                        **{f: sc.value(r, f) for f in FEATURES}} for r in best.values()),
                      key=lambda d: null_last(d["k"]))
        got = engine.latest_per_key(scan, **opts)
        assert sorted(got.to_pylist(), key=lambda d: null_last(d["k"])) == want

    check()


def test_distinct_keys_and_rows_match_the_oracle(engine, tmp_path_factory):
    root = tmp_path_factory.mktemp("rows")

    @settings(**examples(engine, 40), deadline=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(sc=scenarios(), compact=st.booleans())
    def check(sc, compact):
        scan = write_scan(sc, root, compact=compact)
        assert sorted(engine.distinct_keys(scan), key=lambda t: null_last(t[0])) == sorted(
            {(r.k,) for r in sc.rows}, key=lambda t: null_last(t[0]))
        if not scan.files:
            return
        got = engine.rows(scan, extra=["_commit_id"])
        order = ["k", "ts", *(["created"] if sc.created else []), *FEATURES, "_commit_id"]
        assert got.column_names == order

        def key(d: dict[str, Any]) -> tuple[Any, ...]:
            return (null_last(d["k"]), d["_commit_id"], d["ts"])

        want = [{"k": r.k, "ts": pa.scalar(r.ts, TS).as_py(),
                 **({"created": pa.scalar(r.created, TS).as_py()} if sc.created else {}),
                 **{f: sc.value(r, f) for f in FEATURES}, "_commit_id": sc.commit_id(r.commit)}
                for r in sc.rows]
        assert sorted(got.to_pylist(), key=key) == sorted(want, key=key)

    check()


# -- the same Arrow schema and content hash as DuckDB -------------------------------------
def _fixed_scenario() -> Scenario:
    rows = []
    for i, (src, k, s) in enumerate([(1, 1, 0), (1, 2, 1), (0, 1, 1), (0, 1, 0), (0, 3, 2),
                                     (1, 2, 2), (0, None, 2)]):
        commit = 0 if src == 1 and i < 2 else (1 if src == 0 and i < 4 else 2)
        rows.append(Row(k=k, ts=BASE + s * SEC, speed=i / 2, trips=i, rating=i / 4,
                        level=None if i % 3 else i, created=BASE + (i % 2) * SEC,
                        commit=commit, source=src))
    return Scenario(rows=rows, commits=[1, 0, 1], multi=True, created=True)


@pytest.mark.parametrize("ttl", [None, 1], ids=["no-ttl", "ttl"])
def test_results_have_duckdb_schema_and_content_hash(engine, duckdb_engine, tmp_path, ttl):
    sc = _fixed_scenario()
    scan = write_scan(sc, tmp_path, ttl=None if ttl is None else ttl * SEC)
    empty = write_scan(sc, tmp_path, prefix="e_", files=False)
    entities, _ = entity_table([(k, (s, d)) for k in (1, 2, 3, None)
                                for s in (0, 1, 2, 5) for d in (0, 1)] + [(1, None)])

    def pit(e: Any) -> pa.Table:
        return e.point_in_time(entities, "ets", [scan, empty], (BASE, BASE + 5 * SEC + 1)
                               ).read_all().sort_by(ROW_COLUMN)

    def by_key(t: pa.Table) -> pa.Table:
        return t.sort_by([("k", "ascending"), *(
            [("ts", "ascending")] if "ts" in t.column_names else []), ("speed", "ascending")])

    results = {
        "point_in_time": pit,
        "window": lambda e: e.window(scan, BASE, BASE + 2 * SEC).read_all(),
        "latest_per_key": lambda e: by_key(e.latest_per_key(scan)),
        "rows": lambda e: by_key(e.rows(scan, extra=["_commit_id", "_commit_time"])),
    }
    for name, run in results.items():
        want, got = run(duckdb_engine), run(engine)
        assert got.schema == want.schema, name
        assert [f.nullable for f in got.schema] == [f.nullable for f in want.schema], name
        assert got.to_pylist() == want.to_pylist(), name
        assert content_hash(got) == content_hash(want), name
    assert sorted(engine.distinct_keys(scan), key=lambda t: null_last(t[0])) == sorted(
        duckdb_engine.distinct_keys(scan), key=lambda t: null_last(t[0]))


# -- errors ----------------------------------------------------------------------------------
def test_a_missing_file_is_a_storage_error_naming_what_to_check(engine, tmp_path):
    from featureledger.errors import StorageError

    sc = Scenario(rows=[Row(k=1, ts=BASE, speed=1.0, trips=1, rating=None, level=None,
                            created=None, commit=0, source=0)], commits=[0], multi=False,
                  created=False)
    scan = write_scan(sc, tmp_path)
    import os

    os.remove(scan.files[0])
    entities, _ = entity_table([(1, (1, 0))])
    with pytest.raises(StorageError, match="offline store"):
        engine.point_in_time(entities, "ets", [scan], None).read_all()
    with pytest.raises(StorageError, match="offline store"):
        engine.rows(scan)


def test_spark_without_pyspark_names_the_extra_to_install(monkeypatch):
    import sys

    from featureledger.backends import backend_class
    from featureledger.errors import MissingDependencyError

    # an interpreter without pyspark: importing it fails as it would there
    monkeypatch.setitem(sys.modules, "pyspark", None)
    for name in [m for m in sys.modules if m.startswith("featureledger.offline.spark")]:
        monkeypatch.delitem(sys.modules, name)
    with pytest.raises(MissingDependencyError,
                       match=r"offline_engine type 'spark' needs the package 'pyspark'.*"
                             r"pip install 'featureledger\[spark\]'"):
        backend_class("offline_engine", "spark")


# -- windowed aggregations ------------------------------------------------------------------
# Every engine computes them set-based (window_aggregate); the oracle below is a brute-force
# loop over the rows in plain Python.
AGG_FUNCTIONS = ["count", "sum", "mean", "min", "max", "stddev", "last",
                 "approx_count_distinct"]
APPROX = {"stddev"}  # a square root of a running deviation: equal to within rounding
FLOATS = {"float64", "float32"}  # summed exactly: the same bits as math.fsum


def agg_dtype(function: str, column: int) -> str:
    dtype = DTYPES[column]
    if function in ("count", "approx_count_distinct"):
        return "int64"
    if function == "sum":
        return "int64" if dtype == "int64" else "float64"
    if function in ("mean", "stddev"):
        return "float64"
    return dtype


@st.composite
def aggregate_specs(draw: Any) -> list[WindowAggregate]:
    out = []
    for i in range(draw(st.integers(1, 4))):
        fn = draw(st.sampled_from(AGG_FUNCTIONS))
        col = draw(st.integers(0, len(FEATURES) - 1))
        window = draw(st.integers(1, 8))
        slide = draw(st.one_of(st.none(), st.integers(1, window)))
        out.append(WindowAggregate(column=col, function=fn, window_us=window * SEC,
                                   slide_us=None if slide is None else slide * SEC,
                                   output=f"a{i}", dtype=agg_dtype(fn, col)))
    return out


def oracle_aggregate(sc: Scenario, ents: list[tuple[int | None, int | None]],
                     aggs: list[WindowAggregate], files: bool) -> list[dict[str, Any]]:
    """Per entity row, each aggregation over the effective rows (the later created time,
    then the later commit, per keys and time) of its key with ``t - window < ts <= t``."""
    import statistics

    rows = effective(sc, [r for r in sc.rows if r.k is not None], dedupe=True) if files else []
    out = []
    for k, t in ents:
        got: dict[str, Any] = {}
        for a in aggs:
            inside: list[Row] = []
            if k is not None and t is not None:
                end = t if a.slide_us is None else t - t % a.slide_us
                inside = [r for r in rows if r.k == k and end - a.window_us < r.ts <= end]
            values = [sc.value(r, FEATURES[a.column]) for r in inside]
            present = [v for v in values if v is not None]
            if a.function == "count":
                v: Any = len(present)
            elif a.function == "approx_count_distinct":
                v = len(set(present))
            elif a.function == "last":
                v = values[max(range(len(inside)), key=lambda i: inside[i].ts)] if inside else None
            elif not present:
                v = None
            elif a.function == "sum":  # floats: the correctly rounded sum, on every engine
                v = math.fsum(present) if DTYPES[a.column] in FLOATS else sum(present)
            elif a.function == "mean":
                v = (math.fsum(present) if DTYPES[a.column] in FLOATS
                     else sum(present)) / len(present)
            elif a.function == "min":
                v = min(present)
            elif a.function == "max":
                v = max(present)
            else:  # stddev
                v = statistics.stdev(present) if len(present) > 1 else None
            if v is not None and a.dtype in ("float64", "float32"):
                v = float(v)
            got[a.output] = v
        out.append(got)
    return out


def assert_aggregates(got: list[dict[str, Any]], want: list[dict[str, Any]],
                      aggs: list[WindowAggregate]) -> None:
    import math

    for g, w in zip(got, want, strict=True):
        for a in aggs:
            x, y = g[a.output], w[a.output]
            approx = a.function in APPROX or (a.function == "mean"
                                              and DTYPES[a.column] not in FLOATS)
            if approx and x is not None and y is not None:
                assert math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12), (a, x, y)
            else:
                assert x == y, (a, g, w)


def test_window_aggregate_matches_the_oracle(engine, tmp_path_factory):
    root = tmp_path_factory.mktemp("aggregate")

    @settings(**examples(engine, 80), deadline=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(sc=scenarios(), drawn=entity_rows, aggs=aggregate_specs(), files=st.booleans(),
           bounds=st.booleans(), compact=st.booleans())
    def check(sc, drawn, aggs, files, bounds, compact):
        entities, ents = entity_table(drawn)
        scan = write_scan(sc, root, files=files, compact=compact)
        times = [t for _, t in ents if t is not None]
        ts_bounds = (min(times), max(times)) if bounds and times else None
        table = engine.window_aggregate(entities, "ets", scan, aggs, ts_bounds).read_all()
        assert table.schema == pa.schema(
            [pa.field(ROW_COLUMN, pa.int64())]
            + [pa.field(a.output, to_arrow(a.dtype)) for a in aggs])
        got = table.sort_by(ROW_COLUMN).drop_columns([ROW_COLUMN]).to_pylist()
        assert_aggregates(got, oracle_aggregate(sc, ents, aggs, bool(scan.files)), aggs)

    check()


def test_window_ends_start_exclusive_end_inclusive_and_slides_round_down(engine, tmp_path):
    """Events at 10 s, 20 s and 30 s; a 10 s window. At t = 30 s the event at 20 s is
    exactly one window old and is out; the one at 30 s is in. A 7 s slide rounds 30 s
    down to 28 s: the event at 30 s is then not in yet."""
    p = tmp_path / "c0.parquet"
    pq.write_table(pa.table({"k": pa.array([1, 1, 1, 2], pa.int64()),
                             "ts": pa.array([BASE + s * SEC for s in (10, 20, 30, 30)], TS),
                             "v": pa.array([1, 2, 4, 8], pa.int64())}), p)
    scan = ViewScan(join_keys=["k"], timestamp_field="ts", features=["v"], output_names=["v"],
                    duckdb_types=["BIGINT"], files=[str(p)])
    aggs = [WindowAggregate(0, "sum", 10 * SEC, None, "s10", "int64"),
            WindowAggregate(0, "count", 10 * SEC, 7 * SEC, "c10_slide7", "int64"),
            WindowAggregate(0, "last", 10 * SEC, None, "last10", "int64")]
    at = [(1, 30 * SEC), (1, 30 * SEC - 1), (1, 20 * SEC + 1), (1, 9 * SEC), (2, 30 * SEC),
          (3, 30 * SEC), (None, 30 * SEC), (1, None)]
    entities = pa.table({"ets": pa.array([None if t is None else BASE + t for _, t in at], TS),
                         "k": pa.array([k for k, _ in at], pa.int64()),
                         ROW_COLUMN: pa.array(range(len(at)), pa.int64())})
    got = engine.window_aggregate(entities, "ets", scan, aggs, None).read_all().sort_by(ROW_COLUMN)
    assert got.column("s10").to_pylist() == [4, 2, 2, None, 8, None, None, None]
    # BASE is a multiple of 7 s? no: count relative to the rounded time, as the oracle does
    rounded = [None if t is None else (BASE + t) - (BASE + t) % (7 * SEC) for _, t in at]
    want = []
    for (k, _), end in zip(at, rounded, strict=True):
        evs = [(1, 10), (1, 20), (1, 30), (2, 30)]
        want.append(0 if end is None or k is None else sum(
            1 for kk, s in evs if kk == k and end - 10 * SEC < BASE + s * SEC <= end))
    assert got.column("c10_slide7").to_pylist() == want
    assert got.column("last10").to_pylist() == [4, 2, 2, None, 8, None, None, None]


def _wide_floats(tmp_path, n: int, seed: int, extra: list[float] | None = None):
    """Floats over twelve orders of magnitude, both signs, for 3 keys, one per µs."""
    import numpy as np

    rng = np.random.default_rng(seed)
    values = rng.standard_normal(n) * 10.0 ** rng.uniform(-3, 9, n)
    values = [*values.tolist(), *(extra or [])]
    p = tmp_path / f"wide{seed}.parquet"
    pq.write_table(pa.table({
        "k": pa.array([i % 3 for i in range(len(values))], pa.int64()),
        "ts": pa.array([BASE + i for i in range(len(values))], TS),
        "v": pa.array(values, pa.float64())}), p)
    scan = ViewScan(join_keys=["k"], timestamp_field="ts", features=["v"],
                    output_names=["v"], duckdb_types=["DOUBLE"], files=[str(p)])
    at = [(k, t) for k in range(3) for t in (len(values) // 3, len(values) // 2, len(values))]
    entities = pa.table({"ets": pa.array([BASE + t for _, t in at], TS),
                         "k": pa.array([k for k, _ in at], pa.int64()),
                         ROW_COLUMN: pa.array(range(len(at)), pa.int64())})
    aggs = [WindowAggregate(0, "sum", len(values) // 2, None, "s", "float64"),
            WindowAggregate(0, "mean", len(values) // 2, None, "m", "float64"),
            WindowAggregate(0, "sum", len(values) + 1, None, "s_all", "float64")]
    want = []
    for k, t in at:
        for w in (len(values) // 2, len(values) + 1):
            inside = [v for i, v in enumerate(values) if i % 3 == k and t - w < i <= t]
            want.append(math.fsum(inside) if inside else None)
    return scan, entities, aggs, values, at, want


def test_float_sums_are_correctly_rounded_whatever_the_order(duckdb_engine, tmp_path):
    """Exact sums: the correctly rounded sum of the window's values (math.fsum), though
    the values span twelve orders of magnitude and both signs; the mean is that sum over
    the count."""
    scan, entities, aggs, values, at, want = _wide_floats(tmp_path, 30_000, 5)
    got = duckdb_engine.window_aggregate(entities, "ets", scan, aggs).read_all().sort_by(
        ROW_COLUMN)
    s, m, s_all = (got.column(c).to_pylist() for c in ("s", "m", "s_all"))
    assert s == want[0::2] and s_all == want[1::2]
    counts = [sum(1 for i in range(30_000) if i % 3 == k and t - 15_000 < i <= t)
              for k, t in at]
    assert m == [x / n for x, n in zip(s, counts, strict=True)]
    # the data tells the difference: a left-to-right sum is not the correctly rounded one
    naive = [sum(v for i, v in enumerate(values) if i % 3 == k and t - 15_000 < i <= t)
             for k, t in at]
    assert s != naive


def test_non_finite_floats_are_summed_in_event_order(duckdb_engine, tmp_path):
    """An infinity in the column: no exact integer form, so the sum adds in event-time
    order (IEEE: the same bits every run); inf + finite values is inf."""
    scan, entities, aggs, values, at, _ = _wide_floats(tmp_path, 3_000, 6,
                                                       extra=[float("inf")])
    got = duckdb_engine.window_aggregate(entities, "ets", scan, aggs).read_all().sort_by(
        ROW_COLUMN)
    last = len(values) - 1  # the infinity: key last % 3, time `last`
    for (k, t), x in zip(at, got.column("s_all").to_pylist(), strict=True):
        ordered = 0.0
        for i, v in enumerate(values):
            if i % 3 == k and i <= t:
                ordered += v
        assert x == ordered or (x != x and ordered != ordered)
        if k == last % 3 and t >= last:
            assert x == float("inf")


@pytest.mark.spark
def test_float_sums_are_the_same_bits_on_duckdb_and_spark(duckdb_engine, spark_engine,
                                                          tmp_path):
    """Both engines sum floats exactly and round once: the same bits, not merely close."""
    scan, entities, aggs, _, _, want = _wide_floats(tmp_path, 6_000, 7)
    duck, spark = (e.window_aggregate(entities, "ets", scan, aggs).read_all()
                   .sort_by(ROW_COLUMN) for e in (duckdb_engine, spark_engine))
    assert duck.equals(spark)
    assert duck.column("s").to_pylist() == want[0::2]
