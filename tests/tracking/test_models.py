"""Model versions, deployments, deployment exceptions and usage counters."""

from __future__ import annotations

import datetime as dt
import json

import pandas as pd
import pytest
import sqlalchemy as sa

from featureledger import Entity, FeatureSet, FeatureStore, FeatureView, Field
from featureledger.config import load_config
from featureledger.errors import StateError, TrackingError, UnknownModelError
from featureledger.registry import schema
from featureledger.registry.usage import bucket_start, read_usage, record_usage

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


@pytest.fixture
def store(tmp_path, registry_url):
    s = FeatureStore(tmp_path, config=load_config(tmp_path, overrides={"registry": registry_url}))
    s.apply([
        Entity(name="driver", join_keys={"driver_id": "int64"}),
        FeatureView(name="driver_stats", entities=["driver"],
                    fields=[Field(name="trips", dtype="int64"),
                            Field(name="rating", dtype="float64")]),
        FeatureView(name="driver_geo", entities=["driver"],
                    fields=[Field(name="city", dtype="string")]),
        FeatureSet(name="fraud", features=["driver_stats:trips", "driver_geo:city"]),
    ])
    s.ingest("driver_stats", pd.DataFrame({
        "driver_id": [1, 2], "event_timestamp": [T0, T0], "trips": [3, 4],
        "rating": [4.5, 3.0]}))
    s.ingest("driver_geo", pd.DataFrame({
        "driver_id": [1, 2], "event_timestamp": [T0, T0], "city": ["Oslo", "Rome"]}))
    yield s
    s.close()


def ents():
    return pd.DataFrame({"driver_id": [1, 2], "event_timestamp": [T0 + dt.timedelta(days=1)] * 2})


def edges(store, node):
    t = schema.lineage_edges
    with store.registry.db.read() as c:
        return {(r.src, r.dst, r.relation) for r in c.execute(
            sa.select(t).where(store.registry.db.scope(t),
                               sa.or_(t.c.src == node, t.c.dst == node)))}


def test_log_model_pins_features_and_records_datasets_and_edges(store, tmp_path):
    with store.start_run("m") as run:
        train = store.get_historical_features(ents(), "fraud")
        valid = store.get_historical_features(ents(), ["driver_stats:rating"])
        artifact = tmp_path / "model.bin"
        artifact.write_bytes(b"weights")
        m1 = run.log_model("fraud", artifact, training_dataset=train, validation_dataset=valid)
        m2 = run.log_model("fraud", "s3://models/fraud/2", training_dataset=train.id,
                           features=["driver_stats:rating"])
    assert (m1.ref, m2.ref) == ("fraud@1", "fraud@2")
    assert m1.model_id.startswith("mdl_")
    assert m1.features == ["driver_stats@1:trips", "driver_geo@1:city"]
    assert m1.feature_set == "fraud@1"
    assert m1.feature_versions == ["driver_stats@1", "driver_geo@1"]
    assert m1.datasets == {"training": [train.id], "validation": [valid.id]}
    assert m1.artifact_uri == artifact.absolute().as_uri()
    assert m2.features == ["driver_stats@1:rating"] and m2.feature_set is None
    assert store.get_model("fraud").model_id == m2.model_id  # latest
    assert store.get_model("fraud@1") == m1
    assert store.get_model(m1.model_id).datasets == m1.datasets
    assert edges(store, m1.model_id) == {
        (run.run_id, m1.model_id, "produced"),
        (train.id, m1.model_id, "trained_on"),
        (valid.id, m1.model_id, "trained_on"),
        ("feature_set:fraud@1", m1.model_id, "consumes"),
    }
    assert (("view:driver_stats@1", m2.model_id, "consumes") in edges(store, m2.model_id))
    assert store.get_run(run.run_id).models == ["fraud@1", "fraud@2"]
    with pytest.raises(UnknownModelError):
        store.get_model("fraud@9")
    with pytest.raises(TrackingError, match="training_dataset"):
        run2 = store.start_run("m")
        run2.log_model("x", "s3://x")


def test_deploy_supersede_undeploy_history(store):
    with store.start_run("m") as run:
        ds = store.get_historical_features(ents(), "fraud")
        m1 = run.log_model("fraud", "s3://m/1", training_dataset=ds)
        m2 = run.log_model("fraud", "s3://m/2", training_dataset=ds)
    d1 = store.deploy("fraud@1", "production")
    assert d1.active and d1.features == m1.features and d1.feature_set == "fraud@1"
    snap = d1.lineage_snapshot
    assert snap["model_id"] == m1.model_id
    snap_edges = {(e["src"], e["dst"], e["relation"]) for e in snap["edges"]}
    assert (ds.id, m1.model_id, "trained_on") in snap_edges
    assert any(e[2] == "read" and e[1] == ds.id for e in snap_edges)
    staging = store.deploy("fraud@2", "staging")
    d2 = store.deploy("fraud@2", "production")
    svc = store.tracking
    assert svc.get_deployment(d1.deployment_id).status == "superseded"
    assert svc.get_deployment(staging.deployment_id).status == "active"
    hist = svc.deployments(environment="production")
    assert [d.deployment_id for d in hist] == [d2.deployment_id, d1.deployment_id]
    ended = store.undeploy(d2.deployment_id, reason="rollback")
    assert ended.status == "undeployed" and ended.end_reason == "rollback"
    with pytest.raises(StateError, match="already undeployed"):
        store.undeploy(d2.deployment_id)
    assert [d.deployment_id for d in svc.deployments(active_only=True)] == [
        staging.deployment_id]
    assert store.get_model(staging.deployment_id).model_id == m2.model_id
    assert edges(store, d1.deployment_id) == {(m1.model_id, d1.deployment_id, "deployed_as")}


def test_deploy_refuses_deprecated_features_without_exception(store):
    with store.start_run("m") as run:
        ds = store.get_historical_features(ents(), "fraud")
        run.log_model("fraud", "s3://m/1", training_dataset=ds)
    store.deprecate("driver_geo@1", "city moved to driver_geo_v2")
    with pytest.raises(StateError, match=r"driver_geo@1 is deprecated \(city moved"):
        store.deploy("fraud@1", "production")
    dep = store.deploy("fraud@1", "production",
                       exceptions={"driver_geo@1": "migration next sprint"})
    assert dep.exceptions == {"driver_geo@1": "migration next sprint"}
    with pytest.raises(TrackingError, match="needs a reason"):
        store.deploy("fraud@1", "staging", exceptions={"driver_geo@1": " "})


def test_usage_counters_aggregate_per_bucket(store):
    with store.start_run("m") as run:
        ds = store.get_historical_features(ents(), "fraud")
        run.log_model("fraud", "s3://m/1", training_dataset=ds)
    dep = store.deploy("fraud@1", "production")
    svc = store.tracking
    h = 3600 * 1_000_000
    generation = store.registry.generation()
    for i in range(250):  # many requests, few rows in the table
        svc.usage.add(dep.deployment_id, ["driver_stats@1", "driver_geo@1"], rows=2,
                      at_us=10 * h + (i % 2) * h)
    record_usage(store.registry.db, {(dep.deployment_id, "driver_stats@1", 10 * h): (5, 7)})
    usage = svc.deployment_usage(dep.deployment_id)
    # counters are bookkeeping: serving plans and caches keyed on the generation stay valid
    assert store.registry.generation() == generation
    got = {(u["feature_version"], u["bucket_start"]): (u["requests"], u["rows"]) for u in usage}
    assert got == {("driver_geo@1", 10 * h): (125, 250), ("driver_geo@1", 11 * h): (125, 250),
                   ("driver_stats@1", 10 * h): (130, 257),
                   ("driver_stats@1", 11 * h): (125, 250)}
    assert len(read_usage(store.registry.db)) == 4
    assert bucket_start(10 * h + 5, 3600) == 10 * h


def test_model_features_rows_match_features(store):
    with store.start_run("m") as run:
        ds = store.get_historical_features(ents(), "fraud")
        m = run.log_model("fraud", "s3://m/1", training_dataset=ds)
    t = schema.model_features
    with store.registry.db.read() as c:
        got = [tuple(r) for r in c.execute(
            sa.select(t.c.position, t.c.view_name, t.c.view_version, t.c.feature)
            .where(store.registry.db.scope(t), t.c.model_id == m.model_id)
            .order_by(t.c.position))]
        mv = schema.model_versions
        stored = json.loads(c.execute(sa.select(mv.c.features).where(
            store.registry.db.scope(mv), mv.c.model_id == m.model_id)).scalar())
    assert got == [(0, "driver_stats", 1, "trips"), (1, "driver_geo", 1, "city")]
    assert stored == m.features
