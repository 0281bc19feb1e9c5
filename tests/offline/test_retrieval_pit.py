"""Point-in-time correctness of historical retrieval against a brute-force oracle.

The oracle below loops over plain Python rows: for each entity row and each view, among
the rows of the readable commits (status committed, commit_time <= as_of) with the same
keys and event_ts <= entity_ts, the one with the greatest (event_ts, commit_time); null
when none exists or when entity_ts - event_ts > ttl.
"""

from __future__ import annotations

import datetime as dt
import itertools
import warnings

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featureledger import Entity, FeatureStore, FeatureView, Field
from featureledger.config import load_config
from featureledger.errors import FeatureDataWarning

UTC = dt.UTC
BASE = dt.datetime(2024, 3, 1, tzinfo=UTC)
_names = itertools.count()


def t(seconds: int) -> dt.datetime:
    return BASE + dt.timedelta(seconds=seconds)


@pytest.fixture(scope="module", params=["duckdb", pytest.param("spark", marks=pytest.mark.spark)])
def store(request, tmp_path_factory):
    """A store on every offline engine (``offline_engine: {type: spark}`` for Spark)."""
    path = tmp_path_factory.mktemp("pit")
    overrides = {}
    if request.param == "spark":
        request.getfixturevalue("spark_engine")  # the shared session, with test settings
        overrides = {"offline_engine": {"type": "spark", "shuffle_partitions": 2}}
    s = FeatureStore(path, config=load_config(path, overrides=overrides, environ={}))
    assert s.ctx.engine.name == request.param
    s.apply([Entity(name="driver", join_keys={"driver_id": "int64"}),
             Entity(name="rider", join_keys={"rider_id": "string"})])
    yield s
    s.close()


def define_views(store, ttl_a: int | None, ttl_b: int | None) -> tuple[str, str]:
    n = next(_names)
    a, b = f"drv_{n}", f"rid_{n}"
    store.apply([
        FeatureView(name=a, entities=["driver"], ttl=None if ttl_a is None else f"{ttl_a}s",
                    fields=[Field(name="speed", dtype="float64"),
                            Field(name="trips", dtype="int64")]),
        FeatureView(name=b, entities=["rider"], ttl=None if ttl_b is None else f"{ttl_b}s",
                    fields=[Field(name="tier", dtype="string")]),
    ])
    return a, b


def oracle(entity_rows, view_rows, key_cols, feats, ttl, readable):
    """Per entity row, the features of the point-in-time row (plain loops, no engine)."""
    out = []
    for e in entity_rows:
        best = None
        for r in view_rows:
            if r["_commit_id"] not in readable:
                continue
            if any(e[k] is None or r[k] != e[k] for k in key_cols):
                continue
            if r["ts"] > e["ts"]:
                continue
            rank = (r["ts"], r["_commit_time"])
            if best is None or rank > best[0]:
                best = (rank, r)
        if best is None or (ttl is not None and e["ts"] - best[1]["ts"] > ttl):
            out.append({f: None for f in feats})
        else:
            out.append({f: best[1][f] for f in feats})
    return out


value = st.one_of(st.none(), st.integers(-5, 5))
row_a = st.tuples(st.integers(1, 3), st.integers(0, 30), value, value)
row_b = st.tuples(st.sampled_from(["x", "y", "z"]), st.integers(0, 30),
                  st.one_of(st.none(), st.sampled_from(["gold", "silver", ""])))
commit_a = st.lists(row_a, max_size=8, unique_by=lambda r: (r[0], r[1]))
commit_b = st.lists(row_b, max_size=6, unique_by=lambda r: (r[0], r[1]))
entity_row = st.tuples(st.integers(1, 4), st.sampled_from(["x", "y", "z", "w"]),
                       st.integers(-2, 40), st.integers(0, 1))


def test_point_in_time_matches_oracle(store, write_commit):
    # Spark answers each example with several jobs: fewer examples keep the suite quick
    @settings(max_examples=60 if store.ctx.engine.name == "duckdb" else 12, deadline=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(
        commits_a=st.lists(commit_a, min_size=0, max_size=4),
        commits_b=st.lists(commit_b, min_size=0, max_size=3),
        entities=st.lists(entity_row, min_size=1, max_size=14),
        ttl_a=st.one_of(st.none(), st.integers(1, 12)),
        ttl_b=st.one_of(st.none(), st.integers(1, 12)),
        quarantine=st.sets(st.integers(0, 6), max_size=2),
        as_of_pick=st.one_of(st.none(), st.tuples(st.sampled_from(["commit", "time"]),
                                                  st.integers(0, 6))),
        dup=st.booleans(),
    )
    def check(commits_a, commits_b, entities, ttl_a, ttl_b, quarantine, as_of_pick, dup):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FeatureDataWarning)
            point_in_time_matches_oracle(store, write_commit, commits_a, commits_b, entities,
                                         ttl_a, ttl_b, quarantine, as_of_pick, dup)

    check()


def point_in_time_matches_oracle(store, write_commit, commits_a, commits_b, entities,
                                 ttl_a, ttl_b, quarantine, as_of_pick, dup):
    a, b = define_views(store, ttl_a, ttl_b)
    written = []  # (view, record, rows) in commit order, interleaving the two views
    for i in range(max(len(commits_a), len(commits_b))):
        if i < len(commits_a):
            rows = [{"driver_id": k, "ts": s, "speed": None if v is None else v / 2,
                     "trips": w} for k, s, v, w in commits_a[i]]
            rec = write_commit(store, a, {
                "driver_id": [r["driver_id"] for r in rows],
                "event_timestamp": [t(r["ts"]) for r in rows],
                "speed": pa.array([r["speed"] for r in rows], pa.float64()),
                "trips": pa.array([r["trips"] for r in rows], pa.int64())})
            written.append((a, rec, rows))
        if i < len(commits_b):
            rows = [{"rider_id": k, "ts": s, "tier": v} for k, s, v in commits_b[i]]
            rec = write_commit(store, b, {
                "rider_id": pa.array([r["rider_id"] for r in rows], pa.string()),
                "event_timestamp": [t(r["ts"]) for r in rows],
                "tier": pa.array([r["tier"] for r in rows], pa.string())})
            written.append((b, rec, rows))
    for i in sorted(quarantine):
        if i < len(written):
            store.registry.commits.set_status(written[i][1].commit_id, "quarantined", "test")
    as_of = None
    cut = None
    if as_of_pick is not None and written:
        kind, i = as_of_pick
        rec = written[min(i, len(written) - 1)][1]
        as_of = rec.commit_id if kind == "commit" else rec.committed_at
        cut = rec.commit_time
    quarantined = {written[i][1].commit_id for i in quarantine if i < len(written)}
    readable = {rec.commit_id for _, rec, _ in written
                if rec.commit_id not in quarantined and (cut is None or rec.commit_time <= cut)}
    rows_of = {a: [], b: []}
    for view, rec, rows in written:
        rows_of[view] += [{**r, "_commit_id": rec.commit_id, "_commit_time": rec.commit_time}
                          for r in rows]

    ent = [{"driver_id": d, "rider_id": r, "ts": s, "label": lab} for d, r, s, lab in entities]
    if dup:
        ent = ent + ent[:3]
    entity_df = pa.table({
        "label": [e["label"] for e in ent],
        "driver_id": [e["driver_id"] for e in ent],
        "rider_id": [e["rider_id"] for e in ent],
        # naive datetimes: read as UTC
        "event_timestamp": [t(e["ts"]).replace(tzinfo=None) for e in ent],
    })
    ds = store.get_historical_features(
        entity_df, [f"{a}:speed", f"{a}:trips", f"{b}:tier"], as_of=as_of)

    exp_a = oracle(ent, rows_of[a], ["driver_id"], ["speed", "trips"], ttl_a, readable)
    exp_b = oracle(ent, rows_of[b], ["rider_id"], ["tier"], ttl_b, readable)
    got = ds.to_arrow().to_pylist()
    assert len(got) == len(ent)
    for e, g, xa, xb in zip(ent, got, exp_a, exp_b, strict=True):
        assert (g["label"], g["driver_id"], g["rider_id"]) == (e["label"], e["driver_id"],
                                                                e["rider_id"])
        assert g["event_timestamp"] == t(e["ts"])
        assert {"speed": g["speed"], "trips": g["trips"], "tier": g["tier"]} == {**xa, **xb}
    m = ds.manifest
    assert set(m["commit_ids"]) <= readable
    assert m["null_counts"] == {
        "speed": sum(x["speed"] is None for x in exp_a),
        "trips": sum(x["trips"] is None for x in exp_a),
        "tier": sum(x["tier"] is None for x in exp_b),
    }
    assert m["row_count"] == len(ent)
    assert m["as_of"] == cut
    # the registry recorded exactly the commits in the manifest
    assert sorted(store.registry.datasets.get(ds.id).commit_ids) == sorted(m["commit_ids"])


def test_ttl_edge_is_inclusive_and_ties_go_to_the_later_commit(store, write_commit):
    a, _ = define_views(store, 10, None)
    first = write_commit(store, a, {"driver_id": [1, 2], "event_timestamp": [t(0), t(0)],
                                    "speed": [1.0, 2.0], "trips": [1, 2]})
    write_commit(store, a, {"driver_id": [1], "event_timestamp": [t(0)],
                            "speed": [10.0], "trips": [None]})
    entity_df = {"driver_id": [1, 1, 2, 2, 1],
                 "event_timestamp": [t(10), t(10) + dt.timedelta(microseconds=1), t(10), t(-1),
                                     t(0)]}
    ds = store.get_historical_features(entity_df, [f"{a}:speed", f"{a}:trips"])
    got = ds.to_arrow().select(["speed", "trips"]).to_pylist()
    assert got == [
        {"speed": 10.0, "trips": None},  # exactly ttl old: kept; the later commit wins the tie
        {"speed": None, "trips": None},  # one microsecond past the ttl
        {"speed": 2.0, "trips": 2},
        {"speed": None, "trips": None},  # before any row
        {"speed": 10.0, "trips": None},  # same instant as the row: event_ts <= entity_ts
    ]
    assert ds.manifest["views"][0]["unmatched_rows"] == 2
    old = store.get_historical_features(entity_df, [f"{a}:speed"], as_of=first.commit_id)
    assert old.to_arrow().column("speed").to_pylist() == [1.0, None, 2.0, None, 1.0]
    assert old.commit_ids == [first.commit_id]


def test_pinned_versions_read_their_own_data_and_a_compatible_version_carries_it(
        store, write_commit):
    a, _ = define_views(store, None, None)
    first = write_commit(store, a, {"driver_id": [1], "event_timestamp": [t(0)],
                                    "speed": [1.0], "trips": [1]})
    store.apply([FeatureView(name=a, entities=["driver"],
                             fields=[Field(name="speed", dtype="float64"),
                                     Field(name="trips", dtype="int64"),
                                     Field(name="rating", dtype="float32")])])
    assert store.get_view(a).version == 2
    second = write_commit(store, a, {"driver_id": [1], "event_timestamp": [t(5)],
                                     "speed": [2.0], "trips": [2], "rating": [4.5]})
    entity_df = {"driver_id": [1, 1], "event_timestamp": [t(3), t(9)]}
    v1 = store.get_historical_features(entity_df, [f"{a}@1:speed"])
    latest = store.get_historical_features(entity_df, [f"{a}:speed", f"{a}:rating"])
    both = store.get_historical_features(entity_df, [f"{a}@1:speed", f"{a}@2:rating"])
    # version 1 never reads what was written under version 2
    assert v1.to_arrow().column("speed").to_pylist() == [1.0, 1.0]
    assert v1.commit_ids == [first.commit_id]
    # version 2 added a nullable field: it reads version 1's row too, rating null there
    assert latest.to_arrow().select(["speed", "rating"]).to_pylist() == [
        {"speed": 1.0, "rating": None}, {"speed": 2.0, "rating": 4.5}]
    assert latest.manifest["features"] == [f"{a}@2:speed", f"{a}@2:rating"]
    assert latest.commit_ids == [first.commit_id, second.commit_id]
    sources = latest.manifest["views"][0]["data_sources"]
    assert [(s["version"], s["commit_ids"], s["matched_rows"]) for s in sources] == [
        (2, [second.commit_id], 1), (1, [first.commit_id], 1)]
    assert sources[1]["projection"] == "rating null"
    assert both.to_arrow().select(["speed", "rating"]).to_pylist() == [
        {"speed": 1.0, "rating": None}, {"speed": 1.0, "rating": 4.5}]
    # the same reproduction, bit for bit, from the commits recorded
    assert store.reproduce(latest.id).content_hash == latest.content_hash


def test_null_keys_and_times_match_nothing_and_rows_keep_order(store, write_commit):
    a, b = define_views(store, None, None)
    write_commit(store, a, {"driver_id": [1], "event_timestamp": [t(0)], "speed": [1.5],
                            "trips": [7]})
    write_commit(store, b, {"rider_id": ["x"], "event_timestamp": [t(0)], "tier": ["gold"]})
    entity_df = pa.table({
        "driver_id": pa.array([1, None, 1, 1], pa.int64()),
        "rider_id": ["x", "x", None, "x"],
        "event_timestamp": pa.array([t(5), t(5), t(5), None], pa.timestamp("us", tz="UTC")),
        "label": ["a", "b", "c", "d"],
    })
    ds = store.get_historical_features(entity_df, [f"{a}:trips", f"{b}:tier"])
    assert ds.to_arrow().select(["label", "trips", "tier"]).to_pylist() == [
        {"label": "a", "trips": 7, "tier": "gold"},
        {"label": "b", "trips": None, "tier": "gold"},
        {"label": "c", "trips": 7, "tier": None},
        {"label": "d", "trips": None, "tier": None},
    ]
    assert [v["unmatched_rows"] for v in ds.manifest["views"]] == [2, 2]
    # every entity time null: nothing can match, nothing is read
    with pytest.warns(FeatureDataWarning, match=f"{a}@1:trips is null in every one"):
        none = store.get_historical_features(entity_df.slice(3), [f"{a}:trips"])
    assert none.to_arrow().column("trips").to_pylist() == [None]
    assert none.commit_ids == []
