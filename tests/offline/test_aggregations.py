"""Windowed aggregations through the store: historical retrieval on every engine against a
brute-force oracle over the rows ingested (readable commits only, a later commit wins a
tie), online values equal to offline ones at the materialization time, and how changes
to aggregations are classified."""

from __future__ import annotations

import datetime as dt
import itertools
import math
import statistics

import pyarrow as pa
import pytest

from featureledger import Aggregation, Entity, FeatureStore, FeatureView, Field
from featureledger.config import load_config
from featureledger.errors import DefinitionError, FeatureLedgerError, UnknownFeatureError

UTC = dt.UTC
BASE = dt.datetime(2024, 3, 1, tzinfo=UTC)
_names = itertools.count()
AGGS = [Aggregation(column="fare", function="sum", window="10m"),
        Aggregation(column="fare", function="mean", window="10m"),
        Aggregation(column="fare", function="stddev", window="30m"),
        Aggregation(column="trips", function="count", window="30m"),
        Aggregation(column="trips", function="max", window="10m", slide="5m"),
        Aggregation(column="trips", function="last", window="1h", name="last_trips"),
        Aggregation(column="zone", function="approx_count_distinct", window="1h",
                    name="zones_1h"),
        Aggregation(column="zone", function="min", window="1h", name="first_zone")]


def m(minutes: float) -> dt.datetime:
    return BASE + dt.timedelta(minutes=minutes)


@pytest.fixture(scope="module", params=["duckdb", pytest.param("spark", marks=pytest.mark.spark)])
def store(request, tmp_path_factory):
    path = tmp_path_factory.mktemp("agg")
    overrides = {}
    if request.param == "spark":
        request.getfixturevalue("spark_engine")
        overrides = {"offline_engine": {"type": "spark", "shuffle_partitions": 2}}
    s = FeatureStore(path, config=load_config(path, overrides=overrides, environ={}))
    s.apply([Entity(name="rider", join_keys={"rider_id": "int64"})])
    yield s
    s.close()


def define(store: FeatureStore, aggs=AGGS) -> str:
    name = f"trips_{next(_names)}"
    store.apply([FeatureView(
        name=name, entities=["rider"], ttl="5m",
        fields=[Field(name="fare", dtype="float64"), Field(name="trips", dtype="int64"),
                Field(name="zone", dtype="string")],
        aggregations=aggs)])
    return name


# commits: (rows, quarantined?) with rows (rider, minute, fare, trips, zone)
COMMITS = [
    ([(1, 0, 1.0, 1, "a"), (1, 4, 2.0, 2, "b"), (1, 9, None, 3, "a"), (2, 1, 8.0, 1, "c"),
      (1, 25, 4.0, None, "c")], False),
    ([(1, 4, 16.0, 7, "d"), (2, 50, 0.5, 2, None)], False),  # supersedes rider 1 at 4 min
    ([(1, 5, 1000.0, 100, "z"), (2, 2, 1000.0, 100, "z")], True),  # quarantined: never read
]


def ingest_all(store: FeatureStore, name: str) -> list[str]:
    ids = []
    for rows, quarantined in COMMITS:
        table = pa.table({
            "rider_id": pa.array([r[0] for r in rows], pa.int64()),
            "event_timestamp": pa.array([m(r[1]) for r in rows], pa.timestamp("us", tz="UTC")),
            "fare": pa.array([r[2] for r in rows], pa.float64()),
            "trips": pa.array([r[3] for r in rows], pa.int64()),
            "zone": pa.array([r[4] for r in rows], pa.string())})
        cid = store.ingest(name, table).commit_id
        if quarantined:
            store.quarantine(cid, "test: a bad batch")
        ids.append(cid)
    return ids


def oracle(rider: int | None, at: dt.datetime | None, commits: list[int]) -> dict:
    """Each aggregation of AGGS by brute force over the rows of ``commits`` (indexes into
    COMMITS, in commit order: a later one replaces the same rider and minute)."""
    rows: dict[tuple[int, float], tuple] = {}
    for i in commits:
        for r in COMMITS[i][0]:
            rows[(r[0], r[1])] = r
    out = {}
    for a in AGGS:
        inside = []
        if rider is not None and at is not None:
            end = at
            if a.slide is not None:  # round down to a multiple of the slide since the epoch
                epoch = dt.datetime(1970, 1, 1, tzinfo=UTC)
                end = epoch + ((at - epoch) // a.slide) * a.slide
            inside = sorted((r for r in rows.values() if r[0] == rider
                             and end - a.window < m(r[1]) <= end), key=lambda r: r[1])
        col = {"fare": 2, "trips": 3, "zone": 4}[a.column]
        vals = [r[col] for r in inside]
        present = [v for v in vals if v is not None]
        fn = a.function
        if fn == "count":
            v = len(present)
        elif fn == "approx_count_distinct":
            v = len(set(present))
        elif fn == "last":
            v = vals[-1] if vals else None
        elif not present:
            v = None
        elif fn == "sum":
            v = sum(present)
        elif fn == "mean":
            v = sum(present) / len(present)
        elif fn == "stddev":
            v = statistics.stdev(present) if len(present) > 1 else None
        else:
            v = {"min": min, "max": max}[fn](present)
        out[a.output_name] = v
    return out


def same(got: dict, want: dict) -> None:
    for k, w in want.items():
        g = got[k]
        if isinstance(w, float) and g is not None:
            assert math.isclose(g, w, rel_tol=1e-12), (k, g, w)
        else:
            assert g == w, (k, g, w)


ENTITIES = [(1, 0), (1, 4), (1, 9), (1, 10), (1, 14), (1, 14.5), (1, 30), (1, 35), (2, 2),
            (2, 60), (2, 70), (3, 5), (None, 5), (1, None)]


def test_retrieval_matches_the_oracle_with_ties_quarantine_and_as_of(store):
    name = define(store)
    ids = ingest_all(store, name)
    entity_df = pa.table({
        "rider_id": pa.array([e[0] for e in ENTITIES], pa.int64()),
        "event_timestamp": pa.array([None if e[1] is None else m(e[1]) for e in ENTITIES],
                                    pa.timestamp("us", tz="UTC"))})
    refs = [f"{name}:{a.output_name}" for a in AGGS] + [f"{name}:fare"]
    ds = store.get_historical_features(entity_df, refs)
    rows = ds.to_arrow().to_pylist()
    for (rider, minute), row in zip(ENTITIES, rows, strict=True):
        same(row, oracle(rider, None if minute is None else m(minute), [0, 1]))
    assert ds.to_arrow().schema.field("trips_count_30m").type == pa.int64()
    assert ds.to_arrow().schema.field("zones_1h").type == pa.int64()
    assert ds.to_arrow().schema.field("first_zone").type == pa.string()
    assert f"{name}@1:fare_sum_10m" in ds.manifest["features"]
    # as of the first commit: the second is not read, so rider 1 at 4 min keeps 2.0
    first = store.get_historical_features(entity_df, refs, as_of=ids[0]).to_arrow().to_pylist()
    for (rider, minute), row in zip(ENTITIES, first, strict=True):
        same(row, oracle(rider, None if minute is None else m(minute), [0]))
    # the dataset rebuilds bit for bit from the commits it recorded
    assert store.reproduce(ds.id).manifest["content_hash"] == ds.manifest["content_hash"]


def test_online_equals_offline_at_the_materialization_time(store):
    name = define(store)
    ingest_all(store, name)
    at = m(12)
    store.materialize(end=at, views=[name])
    refs = [f"{name}:{a.output_name}" for a in AGGS]
    fv = store.get_online_features(refs, [{"rider_id": 1}, {"rider_id": 2}, {"rider_id": 9}])
    offline = store.get_historical_features(
        pa.table({"rider_id": pa.array([1, 2, 9], pa.int64()),
                  "event_timestamp": pa.array([at] * 3, pa.timestamp("us", tz="UTC"))}),
        refs).to_arrow()
    online = fv.to_dict()
    for a in AGGS:
        o = a.output_name
        assert online[o][:2] == offline.column(o).to_pylist()[:2], o
        same({o: online[o][0]}, {o: oracle(1, at, [0, 1])[o]})
        assert online[o][2] is None  # rider 9 has no rows: never materialized
    assert [s.value for s in fv.statuses["trips_count_30m"]] == ["PRESENT", "PRESENT",
                                                                 "NOT_FOUND"]
    # later: rider 2's window has emptied, and materializing again says so
    store.materialize(end=m(45), views=[name])
    again = store.get_online_features([f"{name}:fare_sum_10m", f"{name}:trips_count_30m"],
                                      [{"rider_id": 2}])
    assert again.to_dict()["fare_sum_10m"] == [None]
    assert again.to_dict()["trips_count_30m"] == [0]
    assert [s.value for s in again.statuses["fare_sum_10m"]] == ["NULL"]


def test_quarantine_rollback_and_restore_recompute_online_aggregates_of_their_keys(store):
    """A status change re-serves the aggregates of the keys its commit touched, as of the
    last materialization, without another materialize; other keys are left as they were."""
    name = define(store)
    ids = ingest_all(store, name)
    at = m(12)
    store.materialize(end=at, views=[name])
    refs = [f"{name}:{a.output_name}" for a in AGGS]
    rows = [{"rider_id": 1}, {"rider_id": 2}]

    def online() -> list[dict]:
        got = store.get_online_features(refs, rows).to_dict()
        return [{a.output_name: got[a.output_name][i] for a in AGGS} for i in range(2)]

    before = online()
    for i, rider in enumerate((1, 2)):
        same(before[i], oracle(rider, at, [0, 1]))
    store.quarantine(ids[1], "test: second batch is bad")  # rider 1 at 4 min, rider 2 at 50
    after = online()
    same(after[0], oracle(1, at, [0]))
    assert after[1] == before[1]  # rider 2's commit-1 row is past the window: unchanged
    store.restore(ids[1], "test: it was fine")
    same(online()[0], oracle(1, at, [0, 1]))
    store.rollback(ids[0], "test: first batch is wrong")  # riders 1 and 2
    gone = online()
    same(gone[0], oracle(1, at, [1]))
    same(gone[1], oracle(2, at, [1]))
    assert gone[1]["trips_count_30m"] == 0


def test_changing_aggregations_is_breaking_under_backward_and_keeps_the_data(store):
    name = define(store, AGGS[:1])
    ingest_all(store, name)
    changed = FeatureView(
        name=name, entities=["rider"], ttl="5m",
        fields=[Field(name="fare", dtype="float64"), Field(name="trips", dtype="int64"),
                Field(name="zone", dtype="string")],
        aggregations=[Aggregation(column="fare", function="sum", window="20m",
                                  name="fare_sum_10m")])
    plan = store.plan([changed])
    assert [(c.change, c.field) for c in plan.items[0].changes] == [
        ("aggregations_changed", "fare_sum_10m")]
    assert plan.items[0].refused
    with pytest.raises(FeatureLedgerError, match="aggregations_changed"):
        store.apply([changed])
    store.apply([changed], allow_breaking="a wider window")
    ds = store.get_historical_features(
        pa.table({"rider_id": pa.array([1], pa.int64()),
                  "event_timestamp": pa.array([m(14)], pa.timestamp("us", tz="UTC"))}),
        [f"{name}@2:fare_sum_10m"])
    # the new version reads the old commits: (-6 min, 14 min] holds 1.0 and 16.0
    assert ds.to_arrow().column("fare_sum_10m").to_pylist() == [17.0]


def test_a_view_without_aggregations_keeps_its_definition_hash():
    fields = [Field(name="x", dtype="int64")]
    plain = FeatureView(name="v", entities=["e"], join_keys={"id": "int64"}, fields=fields)
    assert "aggregations" not in plain.spec()
    with_aggs = plain.model_copy(update={"aggregations": [
        Aggregation(column="x", function="sum", window="1d")]})
    assert "aggregations" in with_aggs.spec()
    assert with_aggs.definition_hash != plain.definition_hash


@pytest.mark.parametrize(("agg", "message"), [
    ({"column": "nope", "function": "sum", "window": "1d"}, "not a field"),
    ({"column": "zone", "function": "sum", "window": "1d"}, "needs a numeric field"),
    ({"column": "x", "function": "sum", "window": "1h", "slide": "2h"}, "longer than the window"),
    ({"column": "x", "function": "sum", "window": "0s"}, "positive"),
    ({"column": "x", "function": "sum", "window": "1d", "name": "x"}, "already a field"),
])
def test_aggregations_that_do_not_fit_the_view_are_refused(agg, message):
    with pytest.raises(DefinitionError, match=message):
        FeatureView(name="v", entities=["e"], join_keys={"id": "int64"},
                    fields=[Field(name="x", dtype="int64"), Field(name="zone", dtype="string")],
                    aggregations=[Aggregation(**agg)])


def test_an_unknown_feature_names_the_aggregations(store):
    name = define(store, AGGS[:2])
    with pytest.raises(UnknownFeatureError, match="fare_sum_10m, fare_mean_10m"):
        store.get_online_features([f"{name}:fare_sum_1d"], [{"rider_id": 1}])


def test_float_aggregates_are_the_same_bits_every_run(tmp_path):
    """Floating-point sums depend on the order of the additions; a training set with them
    must still reproduce bit for bit, on data large enough for DuckDB to use threads."""
    import numpy as np

    s = FeatureStore(tmp_path, config=load_config(tmp_path, environ={}))
    try:
        s.apply([Entity(name="rider", join_keys={"rider_id": "int64"})])
        name = define(s, AGGS[:3])
        rng = np.random.default_rng(3)
        n = 400_000
        for _ in range(2):
            s.ingest(name, pa.table({
                "rider_id": pa.array(rng.integers(0, 50, n), pa.int64()),
                "event_timestamp": pa.array(
                    1_709_251_200_000_000 + rng.choice(10**11, n, replace=False),
                    pa.timestamp("us", tz="UTC")),
                "fare": pa.array(rng.random(n) * 1e6, pa.float64()),
                "trips": pa.array(rng.integers(0, 9, n), pa.int64()),
                "zone": pa.array(["a"] * n, pa.string())}))
        entities = pa.table({
            "rider_id": pa.array(rng.integers(0, 50, 2000), pa.int64()),
            "event_timestamp": pa.array(1_709_251_200_000_000 + rng.integers(0, 10**11, 2000),
                                        pa.timestamp("us", tz="UTC"))})
        refs = [f"{name}:{a.output_name}" for a in AGGS[:3]]
        first = s.get_historical_features(entities, refs)
        hashes = {s.reproduce(first.id).content_hash for _ in range(4)}
        hashes.add(s.get_historical_features(entities, refs).content_hash)
        assert hashes == {first.content_hash}
    finally:
        s.close()
