"""Datasets recorded in the registry (SQLite and PostgreSQL), reproduction, and lineage."""

from __future__ import annotations

import datetime as dt
import shutil

import pandas as pd
import pyarrow as pa
import pytest

from featureledger import Entity, FeatureSet, FeatureStore, FeatureView, Field
from featureledger.config import load_config
from featureledger.context import active_run
from featureledger.errors import (
    FeatureDataWarning,
    RetrievalError,
    StorageError,
    UnknownDatasetError,
    UnknownFeatureError,
)
from featureledger.events import DatasetCreated
from featureledger.registry.lineage_edges import READ, USED_BY, edges_of

UTC = dt.UTC
BASE = dt.datetime(2024, 5, 1, tzinfo=UTC)


def t(minutes: float) -> dt.datetime:
    return BASE + dt.timedelta(minutes=minutes)


def ingest(store, view, columns):
    """One commit through the real ingestion pipeline (validation, profile, files, registry)."""
    return store.ingest(view, pa.table(columns)).commit


@pytest.fixture
def offline_engine() -> str:
    """The offline engine type of the store (a test parametrizes it to run on others)."""
    return "duckdb"


@pytest.fixture
def store(request, tmp_path, registry_url, offline_engine):
    overrides: dict = {"registry": registry_url}
    if offline_engine == "spark":
        request.getfixturevalue("spark_engine")  # the shared session, with test settings
        overrides["offline_engine"] = {"type": "spark", "shuffle_partitions": 2}
    cfg = load_config(tmp_path, overrides=overrides)
    s = FeatureStore(tmp_path, config=cfg)
    assert s.ctx.engine.name == offline_engine
    s.apply([
        Entity(name="driver", join_keys={"driver_id": "int64"}),
        FeatureView(name="trips", entities=["driver"], ttl="1h",
                    fields=[Field(name="count", dtype="int64"),
                            Field(name="fare", dtype="float64")]),
        FeatureView(name="rating", entities=["driver"],
                    fields=[Field(name="stars", dtype="float32"),
                            Field(name="count", dtype="int32")]),
        FeatureSet(name="model_in", features=["trips:fare", "rating:stars"]),
    ])
    yield s
    s.close()


def same(a: pa.Table, b: pa.Table) -> bool:
    """Equal schemas and values (a dictionary column may be stored in another order)."""
    return a.schema == b.schema and a.to_pylist() == b.to_pylist()


def entity_frame() -> pd.DataFrame:
    return pd.DataFrame({
        "driver_id": [1, 2, 1, 3, 1],
        "event_timestamp": [t(30), t(30), t(5), t(30), t(30)],  # pandas datetime64[us, UTC]
        "label": [True, False, True, False, True],
        "city": pd.Categorical(["rome", "oslo", None, "rome", "oslo"]),  # a dictionary column
    })


def seed(store):
    c1 = ingest(store, "trips", {"driver_id": [1, 2], "event_timestamp": [t(0), t(10)],
                                       "count": [3, 4], "fare": [10.0, 20.0]})
    c2 = ingest(store, "rating", {"driver_id": [1, 3], "event_timestamp": [t(0), t(0)],
                                        "stars": [4.5, 3.0], "count": [10, 20]})
    return c1, c2


def test_dataset_is_recorded_with_its_commits_and_lineage(store):
    c1, c2 = seed(store)
    seen = []
    store.ctx.events.subscribe(DatasetCreated, seen.append)
    with active_run("run_0000test"):
        ds = store.get_historical_features(entity_frame(), feature_set="model_in")
    rec = store.registry.datasets.get(ds.id)
    assert ds.id.startswith("ds_") and rec.run_id == "run_0000test"
    assert rec.feature_set == "model_in@1"
    assert rec.features == ["trips@1:fare", "rating@1:stars"]
    assert sorted(rec.commit_ids) == sorted([c1.commit_id, c2.commit_id])
    assert rec.content_hash == ds.content_hash and rec.row_count == 5
    assert [e.dataset_id for e in seen] == [ds.id]
    with store.registry.db.read() as conn:
        edges = {(e["src"], e["dst"], e["relation"]) for e in edges_of(conn, ds.id)}
    assert edges == {(c1.commit_id, ds.id, READ), (c2.commit_id, ds.id, READ),
                     (ds.id, "run_0000test", USED_BY)}
    assert [d.dataset_id for d in store.registry.datasets.list(commit_id=c2.commit_id)] == [ds.id]
    assert store.registry.datasets.list(run_id="run_other") == []
    got = ds.to_pandas()
    assert list(got.columns) == ["driver_id", "event_timestamp", "label", "city", "fare",
                                 "stars"]
    assert got["city"].tolist()[:2] == ["rome", "oslo"]
    assert got["label"].tolist() == [True, False, True, False, True]
    assert got["fare"].tolist()[:3] == [10.0, 20.0, 10.0]
    assert pd.isna(got["fare"][3])
    assert got["stars"].tolist()[0] == 4.5
    assert ds.manifest["null_counts"] == {"fare": 1, "stars": 1}
    # a bare feature set name works as the features argument too
    by_name = store.get_historical_features(entity_frame(), "model_in@1")
    assert by_name.content_hash == ds.content_hash and by_name.id != ds.id


@pytest.mark.parametrize("offline_engine", ["duckdb", pytest.param("spark", marks=pytest.mark.spark)])
def test_reproduce_is_bit_for_bit_after_later_ingestions_and_quarantines(store,
                                                                         tmp_path):
    _c1, c2 = seed(store)
    ds = store.get_historical_features(entity_frame(), ["trips:count", "rating:stars"],
                                       full_feature_names=True)
    before = ds.to_arrow()
    # a late correction that would change the answer, and a quarantine of a read commit
    ingest(store, "trips", {"driver_id": [1, 3], "event_timestamp": [t(0), t(20)],
                                  "count": [99, 7], "fare": [1.0, 2.0]})
    store.quarantine(c2.commit_id, "bad ratings")
    # the only rating commit is quarantined: the warning names the feature and the cause
    with pytest.warns(FeatureDataWarning,
                      match=r"rating@1:stars is null in every one of its 5 rows: rating@1 "
                            r"has no data: no committed commit of it"):
        now = store.get_historical_features(entity_frame(), ["trips:count", "rating:stars"],
                                            full_feature_names=True)
    assert [p["feature"] for p in now.manifest["null_features"]] == ["rating@1:stars"]
    assert now.content_hash != ds.content_hash
    assert now.to_arrow().column("trips__count").to_pylist() == [99, 4, 99, 7, 99]
    assert now.to_arrow().column("rating__stars").null_count == 5

    again = store.reproduce(ds.id)
    assert again.content_hash == ds.content_hash
    assert same(again.to_arrow(), before)
    assert again.to_arrow().column("trips__count").to_pylist() == [3, 4, 3, None, 3]
    # a fresh store on the same files loads it by id and rebuilds the rows lazily
    other = FeatureStore(store.repo_path, config=store.config)
    try:
        loaded = other.get_dataset(ds.id)
        assert loaded.manifest == ds.manifest
        assert same(loaded.to_arrow(), before)
        assert loaded.to_polars().shape == (5, 6)
        path = loaded.to_parquet(tmp_path / "out" / "train.parquet")
        import pyarrow.parquet as pq

        back = pq.read_table(path)
        assert back.schema.metadata[b"featureledger.content_hash"] == ds.content_hash.encode()
        assert back.to_pylist() == before.to_pylist()
    finally:
        other.close()


def test_reproduce_fails_loudly_when_files_are_gone(store):
    c1, _ = seed(store)
    ds = store.get_historical_features(entity_frame(), ["trips:fare"])
    shutil.rmtree(store.ctx.offline_store.path(c1.files[0]).parent)
    with pytest.raises(StorageError, match=f"commit {c1.commit_id} .* is missing"):
        store.reproduce(ds.id)
    with pytest.raises(UnknownDatasetError, match="unknown dataset"):
        store.reproduce("ds_00000000-0000-7000-8000-000000000000")


def test_request_errors_say_what_to_do(store):
    seed(store)
    with pytest.raises(RetrievalError, match="full_feature_names=True"):
        store.get_historical_features(entity_frame(), ["trips:count", "rating:count"])
    with pytest.raises(UnknownFeatureError, match="its fields are"):
        store.get_historical_features(entity_frame(), ["trips:nope"])
    with pytest.raises(RetrievalError, match="lacks driver_id"):
        store.get_historical_features(entity_frame().drop(columns=["driver_id"]),
                                      ["trips:fare"])
    with pytest.raises(RetrievalError, match="already has column"):
        store.get_historical_features(entity_frame().assign(fare=1.0), ["trips:fare"])
    with pytest.raises(RetrievalError, match="timestamp_column"):
        store.get_historical_features(
            pa.table({"driver_id": [1], "a": [t(0)], "b": [t(1)]}), ["trips:fare"])
    with pytest.raises(RetrievalError, match="declares int64"):
        store.get_historical_features(
            {"driver_id": ["x"], "event_timestamp": [t(0)]}, ["trips:fare"])
    # an explicit timestamp column and a Polars frame
    import polars as pl

    ds = store.get_historical_features(
        pl.DataFrame({"driver_id": [2], "when": [t(11)]}), ["trips:fare"],
        timestamp_column="when")
    assert ds.to_arrow().to_pylist() == [{"driver_id": 2, "when": t(11), "fare": 20.0}]
