"""Materialization and feature vectors, on every online store."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest

from featureledger import Field
from featureledger.errors import RetrievalError, UnknownFeatureError
from featureledger.events import MaterializeCompleted
from featureledger.model.timeutil import to_us
from featureledger.online.response import FeatureStatus

FEATS = ["driver_stats:trips", "driver_stats:rating", "driver_stats:city"]


def test_latest_value_per_key_with_status_version_and_commit(store, h):
    c1 = h.write_commit(store, "driver_stats", [
        {"driver_id": 1, "event_timestamp": h.ts(1), "trips": 10, "rating": 4.5, "city": "a"},
        {"driver_id": 1, "event_timestamp": h.ts(3), "trips": 30, "rating": None, "city": "c"},
        {"driver_id": 2, "event_timestamp": h.ts(2), "trips": 20, "rating": 3.0, "city": "b"},
    ])
    res = store.materialize(end=h.ts(10))
    assert res.keys_written == 2 and res.commits == [c1]
    r = store.get_online_features(FEATS, [{"driver_id": 1}, {"driver_id": 2},
                                          {"driver_id": 3}])
    assert r.to_dict() == {"driver_id": [1, 2, 3], "trips": [30, 20, None],
                           "rating": [None, 3.0, None], "city": ["c", "b", None]}
    assert r.statuses["rating"] == [FeatureStatus.NULL, FeatureStatus.PRESENT,
                                    FeatureStatus.NOT_FOUND]
    assert r.statuses["trips"] == ["PRESENT", "PRESENT", "NOT_FOUND"]
    assert r.versions == {"trips": 1, "rating": 1, "city": 1}
    assert r.commits("trips") == [c1, c1, None]
    assert r.event_timestamps("city") == [to_us(h.ts(3)), to_us(h.ts(2)), None]
    assert r.references["trips"] == "driver_stats@1:trips"
    meta = r.to_dict(metadata=True)
    assert meta["trips__status"] == ["PRESENT", "PRESENT", "NOT_FOUND"]
    assert meta["trips__commit"] == [c1, c1, None]
    assert meta["trips__version"] == [1, 1, 1]


def test_conversions(store, h):
    h.write_commit(store, "driver_stats", [
        {"driver_id": 1, "event_timestamp": h.ts(1), "trips": 10, "rating": 4.5, "city": "a"},
    ])
    store.materialize(end=h.ts(10))
    r = store.get_online_features(["driver_stats:trips", "driver_stats:rating"],
                                  {"driver_id": [1, 5]}, full_feature_names=True)
    assert r.names == ["driver_stats__trips", "driver_stats__rating"]
    t = r.to_arrow()
    assert t.schema.field("driver_stats__trips").type == pa.int64()
    assert t.column("driver_stats__rating").to_pylist() == [4.5, None]
    m = r.to_numpy()
    assert m.shape == (2, 2) and m[0, 0] == 10.0 and m[0, 1] == 4.5
    assert np.isnan(m[1, 0]) and np.isnan(m[1, 1])
    mt = r.to_arrow(metadata=True)
    assert mt.column("driver_stats__trips__status").to_pylist() == ["PRESENT", "NOT_FOUND"]
    doc = r.to_json_dict()
    assert doc["entities"] == {"driver_id": [1, 5]}
    assert doc["features"][0]["statuses"] == ["PRESENT", "NOT_FOUND"]
    assert doc["features"][0]["version"] == 1


def test_window_bounds_are_inclusive(store, h):
    h.write_commit(store, "driver_stats", [
        {"driver_id": 1, "event_timestamp": h.ts(1), "trips": 1},
        {"driver_id": 1, "event_timestamp": h.ts(5), "trips": 5},
        {"driver_id": 2, "event_timestamp": h.ts(6), "trips": 6},
    ])
    store.materialize(h.ts(1), h.ts(5))
    r = store.get_online_features(["driver_stats:trips"], [{"driver_id": 1}, {"driver_id": 2}])
    assert r.values["trips"] == [5, None]


def test_idempotent_and_older_never_overwrites_newer(store, h):
    h.write_commit(store, "driver_stats", [
        {"driver_id": 1, "event_timestamp": h.ts(5), "trips": 5}])
    store.materialize(end=h.ts(10))
    again = store.materialize(end=h.ts(10))
    assert again.keys_written == 0
    # a later commit carrying an older event time
    h.write_commit(store, "driver_stats", [
        {"driver_id": 1, "event_timestamp": h.ts(2), "trips": 2}])
    store.materialize(end=h.ts(10))
    assert store.get_online_features(["driver_stats:trips"],
                                     [{"driver_id": 1}]).values["trips"] == [5]
    # materializing only the older window does not roll the value back either
    store.materialize(h.ts(0), h.ts(3))
    assert store.get_online_features(["driver_stats:trips"],
                                     [{"driver_id": 1}]).values["trips"] == [5]


def test_event_time_tie_goes_to_later_commit(store, h):
    h.write_commit(store, "driver_stats", [
        {"driver_id": 1, "event_timestamp": h.ts(5), "trips": 1}], commit_time=1000)
    c2 = h.write_commit(store, "driver_stats", [
        {"driver_id": 1, "event_timestamp": h.ts(5), "trips": 2}], commit_time=2000)
    store.materialize(end=h.ts(10))
    r = store.get_online_features(["driver_stats:trips"], [{"driver_id": 1}])
    assert r.values["trips"] == [2] and r.commits("trips") == [c2]


def test_incremental_loads_new_commits_and_late_data(store, h):
    h.write_commit(store, "driver_stats", [
        {"driver_id": 1, "event_timestamp": h.ts(1), "trips": 1},
        {"driver_id": 2, "event_timestamp": h.ts(8), "trips": 8}])
    first = store.materialize_incremental(h.ts(5))
    assert first.keys_written == 1
    ids = [{"driver_id": 1}, {"driver_id": 2}, {"driver_id": 3}]
    assert store.get_online_features(["driver_stats:trips"], ids).values["trips"] == [
        1, None, None]
    # late data (event before the mark) in a new commit, and a row past the old mark
    h.write_commit(store, "driver_stats", [
        {"driver_id": 3, "event_timestamp": h.ts(2), "trips": 3},
        {"driver_id": 1, "event_timestamp": h.ts(4), "trips": 4}])
    store.materialize_incremental(h.ts(9))
    assert store.get_online_features(["driver_stats:trips"], ids).values["trips"] == [4, 8, 3]
    nothing = store.materialize_incremental(h.ts(9))
    assert nothing.keys_written == 0 and nothing.commits == []


def test_materialize_emits_an_event(store, h):
    seen = []
    store.ctx.events.subscribe(MaterializeCompleted, seen.append)
    c1 = h.write_commit(store, "driver_stats", [
        {"driver_id": 1, "event_timestamp": h.ts(1), "trips": 1}])
    store.materialize(end=h.ts(2))
    assert seen and seen[0].views == ["driver_stats@1"] and seen[0].commits == [c1]


def test_version_qualified_reads(store, h):
    h.write_commit(store, "driver_stats", [
        {"driver_id": 1, "event_timestamp": h.ts(1), "trips": 1, "rating": 1.0}])
    v2 = h.stats_view(fields=[Field(name="trips", dtype="int64"),
                              Field(name="rating", dtype="float64"),
                              Field(name="city", dtype="string", default="unknown"),
                              Field(name="acc", dtype="float32")])
    store.apply([h.DRIVER, v2])
    h.write_commit(store, "driver_stats", [
        {"driver_id": 1, "event_timestamp": h.ts(2), "trips": 2, "acc": 0.5}])
    store.materialize(end=h.ts(3))
    r = store.get_online_features(
        ["driver_stats@1:trips", "driver_stats@2:acc", "driver_stats:rating"],
        [{"driver_id": 1}], full_feature_names=False)
    assert r.values == {"trips": [1], "acc": [0.5], "rating": [None]}
    assert r.versions == {"trips": 1, "acc": 2, "rating": 2}
    assert r.statuses["rating"] == ["NULL"]


@pytest.mark.parametrize("cache", [False, True])
def test_ttl_and_documented_defaults(make_store, h, cache):
    store = make_store(cache=cache)
    store.apply([h.DRIVER, h.stats_view(ttl="1d")])
    now = dt.datetime.now(dt.UTC)
    h.write_commit(store, "driver_stats", [
        {"driver_id": 1, "event_timestamp": now - dt.timedelta(days=3), "trips": 1,
         "city": "x"},
        {"driver_id": 2, "event_timestamp": now - dt.timedelta(hours=1), "trips": 2}])
    store.materialize(end=now)
    rows = [{"driver_id": 1}, {"driver_id": 2}, {"driver_id": 3}]
    feats = ["driver_stats:trips", "driver_stats:city"]
    for _ in range(2):  # with the cache on, the second pass is answered from it
        for shape in (rows, {"driver_id": [1, 2, 3]}):
            r = store.get_online_features(feats, shape)
            assert r.statuses["trips"] == ["OUTSIDE_TTL", "PRESENT", "NOT_FOUND"]
            assert r.values["trips"] == [None, 2, None]
            assert r.values["city"] == [None, None, None]  # no default unless asked for
            assert r.statuses["city"] == ["OUTSIDE_TTL", "NULL", "NOT_FOUND"]
            assert r.commits("trips")[0] == r.commits("trips")[1] is not None
        singles = [store.get_online_features(feats, [row]) for row in rows]
        assert [x.statuses["trips"][0] for x in singles] == ["OUTSIDE_TTL", "PRESENT",
                                                             "NOT_FOUND"]
        assert [x.values["trips"][0] for x in singles] == [None, 2, None]
    filled = store.get_online_features(["driver_stats:trips", "driver_stats:city"], rows,
                                       fill_defaults=True)
    # the default fills missing values only; a stored null stays null
    assert filled.values["city"] == ["unknown", None, "unknown"]
    assert filled.statuses["city"] == ["OUTSIDE_TTL", "NULL", "NOT_FOUND"]
    assert filled.values["trips"] == [None, 2, None]  # trips declares no default


def test_feature_set_reads(store, h):
    from featureledger import FeatureSet

    store.apply([h.DRIVER, h.stats_view(),
                 FeatureSet(name="model_in", features=["driver_stats:trips"])])
    h.write_commit(store, "driver_stats", [
        {"driver_id": 1, "event_timestamp": h.ts(1), "trips": 7}])
    store.materialize(end=h.ts(2))
    r = store.get_online_features(feature_set="model_in", entity_rows=[{"driver_id": 1}])
    assert r.values == {"trips": [7]} and r.references == {"trips": "driver_stats@1:trips"}


def test_errors_name_the_problem(store, h):
    with pytest.raises(UnknownFeatureError, match="has no field 'nope'"):
        store.get_online_features(["driver_stats:nope"], [{"driver_id": 1}])
    with pytest.raises(RetrievalError, match="lacks join key"):
        store.get_online_features(["driver_stats:trips"], [{"id": 1}])
    with pytest.raises(RetrievalError, match="needs a int64 value"):
        store.get_online_features(["driver_stats:trips"], [{"driver_id": 1.5}])
    with pytest.raises(RetrievalError, match="no features requested"):
        store.get_online_features(None, [{"driver_id": 1}])


def test_composite_and_string_keys(make_store, h):
    from featureledger import Entity, FeatureView

    store = make_store()
    pair = Entity(name="pair", join_keys={"a": "string", "b": "int64"})
    view = FeatureView(name="pairs", entities=[pair], fields=[Field(name="x", dtype="float64"),
                                                              Field(name="when",
                                                                    dtype="timestamp"),
                                                              Field(name="v",
                                                                    dtype="list<float32>")])
    store.apply([pair, view])
    when = h.ts(1)
    h.write_commit(store, "pairs", [
        {"a": "p:q|r", "b": 1, "event_timestamp": h.ts(1), "x": float("nan"), "when": when,
         "v": [1.0, None]},
        {"a": "p:q|r", "b": 2, "event_timestamp": h.ts(1), "x": 2.0, "when": None,
         "v": None}])
    store.materialize(end=h.ts(2))
    r = store.get_online_features(["pairs:x", "pairs:when", "pairs:v"],
                                  [{"a": "p:q|r", "b": 1}, {"a": "p:q|r", "b": 2},
                                   {"a": "p:q|r", "b": 3}])
    assert np.isnan(r.values["x"][0]) and r.values["x"][1:] == [2.0, None]
    assert r.values["when"] == [when, None, None]
    assert r.values["v"] == [[1.0, None], None, None]
    assert r.statuses["when"] == ["PRESENT", "NULL", "NOT_FOUND"]


def test_reads_by_model_and_deployment(store, h):
    h.write_commit(store, "driver_stats", [
        {"driver_id": 1, "event_timestamp": h.ts(1), "trips": 7, "rating": 2.5}])
    store.materialize(end=h.ts(2))
    with store.start_run() as run:
        mv = run.log_model("ranker", "s3://models/ranker/1",
                           features=["driver_stats:trips", "driver_stats:rating"])
    dep = store.deploy(f"{mv.name}@{mv.version}")
    for kwargs in ({"model": f"{mv.name}@{mv.version}"}, {"deployment": dep.deployment_id}):
        r = store.get_online_features(entity_rows=[{"driver_id": 1}], **kwargs)
        assert r.values == {"trips": [7], "rating": [2.5]}
        assert r.references == {"trips": "driver_stats@1:trips",
                                "rating": "driver_stats@1:rating"}


def test_reads_through_a_deployment_are_counted_as_usage(store, h):
    store.apply([h.stats_view(fields=[Field(name="trips", dtype="int64"),
                                      Field(name="rating", dtype="float64"),
                                      Field(name="city", dtype="string", default="unknown"),
                                      Field(name="bonus", dtype="int64")])])  # version 2
    h.write_commit(store, "driver_stats", [
        {"driver_id": 1, "event_timestamp": h.ts(1), "trips": 7, "rating": 2.5}], version=1)
    h.write_commit(store, "driver_stats", [
        {"driver_id": 1, "event_timestamp": h.ts(1), "trips": 8, "bonus": 3}])
    store.materialize(end=h.ts(2))
    from featureledger import FeatureSet

    store.apply([FeatureSet(name="ranking", features=["driver_stats@1:rating",
                                                      "driver_stats:bonus"])])
    with store.start_run() as run:
        by_list = run.log_model("ranker", "s3://m/1", features=["driver_stats@1:trips",
                                                                 "driver_stats:bonus"])
        by_set = run.log_model("ranker", "s3://m/2", feature_set="ranking")
    dep = store.deploy(by_list.model_id)
    dep_set = store.deploy(by_set.model_id, "staging")
    sizes = [1, 3, 2] * 20  # 60 reads, 120 entity rows
    for n in sizes:
        r = store.get_online_features(deployment=dep.deployment_id,
                                      entity_rows=[{"driver_id": 1}] * n)
        assert r.values == {"trips": [7] * n, "bonus": [3] * n}
    r = store.get_online_features(deployment=dep_set.deployment_id,
                                  entity_rows={"driver_id": [1, 2]})
    assert r.values == {"rating": [2.5, None], "bonus": [3, None]}
    assert r.statuses["bonus"] == ["PRESENT", "NOT_FOUND"]
    # a read by model id is not a deployment's read: not counted
    store.get_online_features(model=by_list.model_id, entity_rows=[{"driver_id": 1}])
    usage = store.tracking.deployment_usage(dep.deployment_id)
    # one counter per (deployment, view version, hour), never a row per request (two
    # hours at most, should the test straddle an hour)
    got = sorted((u["feature_version"], u["requests"], u["rows"]) for u in usage)
    assert len(usage) <= 4
    by_version: dict[str, list[int]] = {}
    for fv, req, rows in got:
        acc = by_version.setdefault(fv, [0, 0])
        acc[0] += req
        acc[1] += rows
    assert by_version == {"driver_stats@1": [len(sizes), sum(sizes)],
                          "driver_stats@2": [len(sizes), sum(sizes)]}
    other = store.tracking.deployment_usage(dep_set.deployment_id)
    assert sorted((u["feature_version"], u["requests"], u["rows"]) for u in other) == [
        ("driver_stats@1", 1, 2), ("driver_stats@2", 1, 2)]


def test_a_model_or_deployment_read_names_one_source(store, h):
    with pytest.raises(RetrievalError, match="not several"):
        store.get_online_features(["driver_stats:trips"], [{"driver_id": 1}],
                                  model="ranker")


def test_push_refuses_a_malformed_version(store, h):
    from featureledger.errors import InvalidReferenceError

    for bad in ("driver_stats@two", "driver_stats@", "@1", "driver_stats@0",
                f"driver_stats@{2**63}"):
        with pytest.raises(InvalidReferenceError, match="NAME@VERSION"):
            store.push(bad, [{"driver_id": 1, "event_timestamp": h.ts(1), "trips": 1}])


def test_a_version_beyond_any_stored_one_is_a_reference_error(store):
    from featureledger.errors import InvalidReferenceError

    with pytest.raises(InvalidReferenceError, match="beyond any possible version"):
        store.get_online_features([f"driver_stats@{2**63}:trips"], [{"driver_id": 1}])
