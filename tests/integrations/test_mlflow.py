"""MLflow link against a real MLflow tracking store (SQLite backend), read back with
MLflow's own client."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from featureledger import Entity, FeatureSet, FeatureStore, FeatureView, Field
from featureledger.config import load_config
from featureledger.errors import UnknownRunError
from featureledger.integrations.mlflow import resolve

mlflow = pytest.importorskip("mlflow")

# MLflow's own SQLAlchemy models use a loader strategy that SQLAlchemy 2.1 deprecates
pytestmark = [pytest.mark.filterwarnings(
    "ignore:The ``noload`` loader strategy:DeprecationWarning"), pytest.mark.slow]
T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory):
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    yield uri
    mlflow.set_tracking_uri(previous)


def make_store(root, uri):
    s = FeatureStore(root, config=load_config(root, overrides={"mlflow": {"tracking_uri": uri}}))
    s.apply([
        Entity(name="driver", join_keys={"driver_id": "int64"}),
        FeatureView(name="driver_stats", entities=["driver"],
                    fields=[Field(name="trips", dtype="int64"),
                            Field(name="rating", dtype="float64")]),
        FeatureSet(name="fraud", features=["driver_stats:trips", "driver_stats:rating"]),
    ])
    return s


def train(s):
    s.ingest("driver_stats", pd.DataFrame({"driver_id": [1, 2], "event_timestamp": [T0] * 2,
                                           "trips": [3, 4], "rating": [4.5, 3.0]}))
    ents = pd.DataFrame({"driver_id": [1, 2], "event_timestamp": [T0 + dt.timedelta(1)] * 2})
    return s.get_historical_features(ents, "fraud")


def test_active_mlflow_run_is_linked_both_ways(tmp_path, tracking_uri):
    s = make_store(tmp_path, tracking_uri)
    try:
        with mlflow.start_run() as mrun, s.start_run("fraud") as run:
            ds = train(s)
            model = run.log_model("fraud", "s3://m/1", training_dataset=ds)
            mlflow.log_metric("auc", 0.9)
        mid = mrun.info.run_id
        assert s.get_run(run.run_id).mlflow_run_id == mid
        got = mlflow.MlflowClient(tracking_uri=tracking_uri).get_run(mid)
        tags = got.data.tags
        assert tags["featureledger.run_id"] == run.run_id
        assert tags["featureledger.feature_versions"] == "driver_stats@1"
        assert tags["featureledger.feature_set"] == "fraud@1"
        assert tags["featureledger.datasets"] == ds.id
        assert tags[f"featureledger.dataset.{ds.id}.content_hash"] == ds.content_hash
        assert tags["featureledger.models"] == "fraud@1"
        inputs = got.inputs.dataset_inputs
        assert [i.dataset.name for i in inputs] == [ds.id]
        assert inputs[0].dataset.digest == ds.content_hash[:32]
        assert inputs[0].dataset.source_type == "featureledger"
        input_tags = {t.key: t.value for t in inputs[0].tags}
        assert input_tags["featureledger.content_hash"] == ds.content_hash
        assert input_tags["mlflow.data.context"] == "training"
        # and back: from the MLflow run id or a model URI to the exact features and data
        for ref in (mid, f"runs:/{mid}/model"):
            res = resolve(s, ref)
            assert res.run_id == run.run_id and res.mlflow_run_id == mid
            assert res.feature_versions == ["driver_stats@1"]
            assert res.features == ["driver_stats@1:trips", "driver_stats@1:rating"]
            assert [d["dataset_id"] for d in res.datasets] == [ds.id]
            assert res.datasets[0]["content_hash"] == ds.content_hash
            assert res.datasets[0]["commits"] == ds.commit_ids
            assert res.datasets[0]["stages"] == ["training"]
            assert res.models[0]["model_id"] == model.model_id
        client = mlflow.MlflowClient(tracking_uri=tracking_uri)
        client.create_registered_model("fraud-reg")
        client.create_model_version("fraud-reg", f"runs:/{mid}/model", run_id=mid)
        assert resolve(s, "models:/fraud-reg/1").run_id == run.run_id
    finally:
        s.close()


def test_explicit_mlflow_run_id_without_an_active_run(tmp_path, tracking_uri):
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    exp = client.create_experiment("explicit-link")
    mid = client.create_run(exp).info.run_id
    s = make_store(tmp_path, tracking_uri)
    try:
        assert mlflow.active_run() is None
        with s.start_run("fraud", mlflow_run_id=mid) as run:
            ds = train(s)
        got = client.get_run(mid)
        assert got.data.tags["featureledger.run_id"] == run.run_id
        assert [i.dataset.name for i in got.inputs.dataset_inputs] == [ds.id]
        assert resolve(s, mid).datasets[0]["dataset_id"] == ds.id
        other = client.create_run(exp).info.run_id
        with pytest.raises(UnknownRunError, match="not linked"):
            resolve(s, other)
    finally:
        s.close()


def test_no_link_without_mlflow_run(tmp_path, tracking_uri):
    s = make_store(tmp_path, tracking_uri)
    try:
        with s.start_run("plain") as run:
            train(s)
        assert s.get_run(run.run_id).external_ids == {}
    finally:
        s.close()
