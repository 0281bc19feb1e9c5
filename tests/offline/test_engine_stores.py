"""Two stores on the same files, one on DuckDB and one on Spark, give the same answers:
the same training-set content hash, each reproduces the other's datasets, and
materialization serves the same online values."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

from featureledger import Entity, FeatureStore, FeatureView, Field
from featureledger.config import load_config

pytestmark = pytest.mark.spark

BASE = dt.datetime(2024, 6, 1, tzinfo=dt.UTC)


def t(minutes: float) -> dt.datetime:
    return BASE + dt.timedelta(minutes=minutes)


@pytest.fixture
def stores(tmp_path, spark_engine):
    """(DuckDB store, Spark store) on one registry and offline store; separate online
    stores, so each engine's materialization can be read back on its own."""
    duck = FeatureStore(tmp_path, config=load_config(tmp_path, environ={}))
    spark = FeatureStore(tmp_path, config=load_config(tmp_path, environ={}, overrides={
        "offline_engine": {"type": "spark", "shuffle_partitions": 2},
        "online_store": {"path": ".featureledger/online-spark.db"}}))
    assert (duck.ctx.engine.name, spark.ctx.engine.name) == ("duckdb", "spark")
    yield duck, spark
    spark.close()
    duck.close()


def seed(store: FeatureStore) -> None:
    """Views with every kind of row the engines must agree on: ties across commits, a
    created-timestamp column, and a version carrying an older one's data (an added field
    with a default, a widened int32 -> int64)."""
    store.apply([
        Entity(name="driver", join_keys={"driver_id": "int64"}),
        FeatureView(name="trips", entities=["driver"], ttl="30m",
                    fields=[Field(name="count", dtype="int32"),
                            Field(name="fare", dtype="float64"),
                            Field(name="city", dtype="string")]),
        FeatureView(name="rating", entities=["driver"], created_timestamp_field="created",
                    fields=[Field(name="stars", dtype="float32"),
                            Field(name="tags", dtype="list<string>")]),
    ])
    store.ingest("trips", pa.table({
        "driver_id": [1, 2, 3], "event_timestamp": [t(0), t(10), t(20)],
        "count": pa.array([3, 4, None], pa.int32()), "fare": [10.0, None, 30.5],
        "city": ["rome", "oslo", None]}))
    # the same keys and event time again in a later commit: the later commit wins
    store.ingest("trips", pa.table({
        "driver_id": [1, 2], "event_timestamp": [t(0), t(25)],
        "count": pa.array([7, 8], pa.int32()), "fare": [11.0, 21.0], "city": ["rome", None]}))
    store.ingest("rating", pa.table({
        "driver_id": [1, 2], "event_timestamp": [t(5), t(5)], "created": [t(7), t(6)],
        "stars": pa.array([3.5, 4.0], pa.float32()), "tags": [[], ["b"]]}))
    # a later commit: driver 1's row was created earlier (it loses the tie), driver 2's
    # at the same time (the later commit wins)
    store.ingest("rating", pa.table({
        "driver_id": [1, 2], "event_timestamp": [t(5), t(5)], "created": [t(6), t(6)],
        "stars": pa.array([4.5, 5.0], pa.float32()), "tags": [["a"], None]}))
    # version 2: count widened, a new field with a default; it carries version 1's rows
    store.apply([FeatureView(name="trips", entities=["driver"], ttl="30m",
                             fields=[Field(name="count", dtype="int64"),
                                     Field(name="fare", dtype="float64"),
                                     Field(name="city", dtype="string"),
                                     Field(name="tip", dtype="float64", default=0.5)])])
    assert store.get_view("trips").version == 2
    store.ingest("trips", pa.table({
        "driver_id": [3], "event_timestamp": [t(30)], "count": [9], "fare": [1.0],
        "city": ["bonn"], "tip": [2.0]}))


ENTITIES = {"driver_id": [1, 2, 3, 1, 2, 4, 3],
            "event_timestamp": [t(5), t(26), t(31), t(40), t(10), t(30), t(19)],
            "label": [1, 0, 1, 0, 1, 0, 1]}
FEATURES = ["trips:count", "trips:fare", "trips:city", "trips:tip", "trips@1:count",
            "rating:stars", "rating:tags"]


def test_the_same_rows_and_commits_hash_the_same_on_duckdb_and_spark(stores):
    duck, spark = stores
    seed(duck)
    a = duck.get_historical_features(ENTITIES, FEATURES, full_feature_names=True)
    b = spark.get_historical_features(ENTITIES, FEATURES, full_feature_names=True)
    assert b.to_arrow().schema == a.to_arrow().schema
    assert b.to_arrow().to_pylist() == a.to_arrow().to_pylist()
    assert b.content_hash == a.content_hash
    assert b.commit_ids == a.commit_ids
    rows = a.to_arrow().select(["trips@2__count", "trips@2__tip", "trips@1__count",
                                "rating__stars", "rating__tags"]).to_pylist()
    assert rows[0] == {"trips@2__count": 7, "trips@2__tip": 0.5, "trips@1__count": 7,
                       "rating__stars": 3.5, "rating__tags": []}  # later commit, later created
    assert rows[2]["trips@2__tip"] == 2.0 and rows[3]["trips@2__count"] is None  # TTL: 40m old
    # a Spark DataFrame is an entity frame too (collected to the driver as Arrow)
    frame = spark.ctx.engine.spark.createDataFrame(pa.table(ENTITIES))
    c = spark.get_historical_features(frame, FEATURES, full_feature_names=True)
    assert c.content_hash == a.content_hash
    # each engine rebuilds the other's dataset bit for bit
    assert spark.reproduce(a.id).content_hash == a.content_hash
    assert duck.reproduce(b.id).content_hash == b.content_hash


def test_materialization_on_spark_serves_the_same_online_values(stores):
    duck, spark = stores
    seed(duck)
    duck.materialize(end=t(60))
    spark.materialize(end=t(60))
    keys = [{"driver_id": k} for k in (1, 2, 3, 4)]
    refs = ["trips:count", "trips:fare", "trips:city", "trips:tip", "rating:stars",
            "rating:tags"]
    a, b = duck.get_online_features(refs, keys), spark.get_online_features(refs, keys)
    assert b.values == a.values
    assert b.statuses == a.statuses
    assert [b.commits(n) for n in ("count", "stars")] == [a.commits(n) for n in ("count", "stars")]
    # (trips has a 30-minute TTL, so its 2024 values are expired when served now)
    assert a.values["stars"] == [3.5, 5.0, None, None]
    assert a.values["tags"] == [[], None, None, None]


def test_both_engines_read_the_compacted_layout_with_the_same_hashes(stores):
    duck, spark = stores
    seed(duck)
    before = duck.get_historical_features(ENTITIES, FEATURES, full_feature_names=True)
    first = duck.commits("trips")[0].commit_id
    results = duck.compact()
    assert {(r.view, r.version) for r in results if r.segment_id} == {
        ("trips", 1), ("rating", 1)}  # trips@2 has one commit: left as it is
    for store in (duck, spark):
        assert store.get_historical_features(
            ENTITIES, FEATURES, full_feature_names=True).content_hash == before.content_hash
        assert store.reproduce(before.id).content_hash == before.content_hash
    # a quarantine after compaction picks the commit's rows out of the segment on both
    duck.quarantine(first, "bad batch")
    a = duck.get_historical_features(ENTITIES, FEATURES, full_feature_names=True)
    b = spark.get_historical_features(ENTITIES, FEATURES, full_feature_names=True)
    assert a.content_hash == b.content_hash != before.content_hash
    assert first not in a.commit_ids
    assert spark.reproduce(before.id).content_hash == before.content_hash
