"""MLflow link against a real MLflow tracking store (SQLite backend), read back with
MLflow's own client."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pandas as pd
import pytest

from featureledger import Entity, FeatureSet, FeatureStore, FeatureView, Field
from featureledger.config import load_config
from featureledger.errors import TrackingError, UnknownRunError
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


# -- params, metrics and tags; the model registry; scoring ---------------------------------

class TripsModel:
    """A model with predict(frame): 2 x trips + rating (an oracle the test can compute)."""

    def predict(self, frame):
        return frame["trips"] * 2 + frame["rating"]


def mlflow_experiment(client, name, tmp_path):
    """An MLflow experiment whose artifacts live under tmp_path."""
    return client.create_experiment(name, artifact_location=(tmp_path / "art").as_uri())


def test_params_metrics_and_tags_reach_the_linked_mlflow_run(tmp_path, tracking_uri):
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    exp = mlflow_experiment(client, "mirror", tmp_path)
    s = make_store(tmp_path, tracking_uri)
    try:
        with mlflow.start_run(experiment_id=exp) as mrun, \
                s.start_run("mirror", params={"lr": 0.1}, tags={"team": "risk"}) as run:
            run.log_param("depth", 3)
            run.log_params({"layers": [64, 32]})
            for loss in (0.9, 0.7, 0.4):
                run.log_metric("loss", loss)
            run.log_metric("auc", 0.8, step=10, timestamp=T0)
            run.set_tag("stage", "candidate")
            with s.start_run("mirror", params={"lr": 0.5}) as nested:
                nested.log_metric("loss", 0.1)
        got = client.get_run(mrun.info.run_id)
        # the nested run is not linked to the MLflow run its parent holds
        assert s.get_run(nested.run_id).mlflow_run_id is None
    finally:
        s.close()
    assert got.data.params == {"lr": "0.1", "depth": "3", "layers": "[64,32]"}
    assert got.data.tags["team"] == "risk" and got.data.tags["stage"] == "candidate"
    assert got.data.tags["featureledger.run_id"] == run.run_id
    history = client.get_metric_history(mrun.info.run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(0, 0.9), (1, 0.7), (2, 0.4)]
    [auc] = client.get_metric_history(mrun.info.run_id, "auc")
    assert (auc.step, auc.value, auc.timestamp) == (10, 0.8, int(T0.timestamp() * 1000))
    # the same values on both sides
    assert s.get_run(run.run_id).params == got.data.params


def test_registered_model_resolves_and_scores(tmp_path, tracking_uri, monkeypatch):
    monkeypatch.chdir(tmp_path)  # anything MLflow writes by default stays in tmp_path
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    mlflow_experiment(client, "registry", tmp_path)
    (tmp_path / "repo").mkdir()
    s = make_store(tmp_path / "repo", tracking_uri)
    try:
        s.ingest("driver_stats", pd.DataFrame({
            "driver_id": [1, 2, 1, 2], "event_timestamp": [T0, T0, T0 + dt.timedelta(2),
                                                           T0 + dt.timedelta(2)],
            "trips": [3, 4, 30, 40], "rating": [4.5, 3.0, 1.5, 2.0]}))
        ents = pd.DataFrame({"driver_id": [1, 2], "event_timestamp": [T0 + dt.timedelta(1)] * 2})
        assert mlflow.active_run() is None
        with s.start_run("registry") as run:
            ds = s.get_historical_features(ents, "fraud")
            model = run.log_model("fraud", TripsModel(), training_dataset=ds,
                                  registered_model_name="fraud-registered")
            mid = s.get_run(run.run_id).mlflow_run_id
            assert client.get_run(mid).info.status == "RUNNING"
        assert model.artifact_uri == "models:/fraud-registered/1"
        # the MLflow run featureledger started for the run is ended with it
        assert client.get_run(mid).info.status == "FINISHED"
        mv = client.get_model_version("fraud-registered", "1")
        assert mv.run_id == mid and mv.tags["featureledger.model_id"] == model.model_id
        assert mv.tags["featureledger.feature_set"] == "fraud@1"
        # the feature spec travels inside the registered model
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=client.get_model_version_download_uri("fraud-registered", "1"),
            tracking_uri=tracking_uri, dst_path=str(tmp_path / "dl"))
        spec = json.loads((Path(local) / "featureledger.json").read_text())
        assert spec["model_id"] == model.model_id and spec["feature_set"] == "fraud@1"
        assert spec["features"] == ["driver_stats@1:trips", "driver_stats@1:rating"]
        assert spec["entity_keys"] == {"driver_id": "int64"}
        assert spec["datasets"] == [{"dataset_id": ds.id, "stage": "training",
                                     "content_hash": ds.content_hash, "row_count": 2}]
        assert (Path(local) / "MLmodel").is_file()
        assert (Path(local) / "requirements.txt").read_text().splitlines()[0].startswith(
            "featureledger==")
        # models:/ resolves to the featureledger model and its features, no hand registration
        res = resolve(s, "models:/fraud-registered/1")
        assert res.model_id == model.model_id and res.run_id == run.run_id
        assert res.features == ["driver_stats@1:trips", "driver_stats@1:rating"]
        assert [d["content_hash"] for d in res.datasets] == [ds.content_hash]

        # scoring: loaded through MLflow's pyfunc flavour, features point in time
        score_df = pd.DataFrame({"driver_id": [2, 1, 1],
                                 "event_timestamp": [T0 + dt.timedelta(1),
                                                     T0 + dt.timedelta(3),
                                                     T0 + dt.timedelta(1)]})
        scored = s.score_batch(model.model_id, score_df)
        out = scored.to_pandas()
        # oracle: the latest row at or before each entity time, 2 x trips + rating
        expect = [2 * 4 + 3.0, 2 * 30 + 1.5, 2 * 3 + 4.5]
        assert list(out["driver_id"]) == [2, 1, 1]
        assert list(out["trips"]) == [4, 30, 3]
        assert out["prediction"].tolist() == expect
        assert scored.predictions.tolist() == expect
        assert list(out.columns) == ["driver_id", "event_timestamp", "trips", "rating",
                                     "prediction"]
        assert scored.to_polars()["prediction"].to_list() == expect
        # the scoring run is in the lineage: model -> run, and the run read the dataset
        rec = s.get_run(scored.run_id)
        assert rec.experiment == "scoring" and rec.datasets == [scored.dataset_id]
        down = s.lineage(model.model_id, direction="downstream")
        assert any(e.src == model.model_id and e.dst == scored.run_id
                   and e.relation == "scored" for e in down.edges)
        # the inputs-only call keeps its own name
        inputs = s.batch_features(model.model_id, score_df).to_pandas()
        pd.testing.assert_frame_equal(inputs, out.drop(columns=["prediction"]))
    finally:
        s.close()


def test_score_batch_with_a_loader_and_refusals(tmp_path, tracking_uri):
    s = make_store(tmp_path, tracking_uri)
    try:
        saved = tmp_path / "model.bin"
        saved.write_bytes(b"weights")
        with s.start_run("loader") as run:
            ds = train(s)
            model = run.log_model("plain", saved, training_dataset=ds)
            with pytest.raises(TrackingError, match="cannot register"):
                run.log_model("plain", "s3://bucket/model", training_dataset=ds,
                              registered_model_name="never")
        # a refused registration leaves nothing behind, here or in MLflow
        assert [m.ref for m in s.list_models("plain")] == ["plain@1"]
        client = mlflow.MlflowClient(tracking_uri=tracking_uri)
        assert client.search_registered_models(filter_string="name = 'never'") == []
        loaded = []

        def loader(uri):
            loaded.append(uri)
            return TripsModel()

        ents = pd.DataFrame({"driver_id": [1], "event_timestamp": [T0 + dt.timedelta(1)]})
        with s.start_run("batch") as outer:
            scored = s.score_batch(model.model_id, ents, loader=loader,
                                   prediction_column="fraud_score")
        assert loaded == [saved.absolute().as_uri()]
        assert scored.to_pandas()["fraud_score"].tolist() == [2 * 3 + 4.5]
        assert scored.run_id == outer.run_id  # the active run is the scoring run
        with pytest.raises(TrackingError, match="not an MLflow model"):
            s.score_batch(model.model_id, ents)

        class Wrong:
            def predict(self, frame):
                return [1.0, 2.0]

        with pytest.raises(TrackingError, match="2 predictions for 1 entity rows"):
            s.score_batch(model.model_id, ents, loader=lambda _uri: Wrong())
    finally:
        s.close()


def test_requirements_pin_featureledger_mlflow_and_the_models_package():
    from importlib import metadata

    from featureledger import __version__
    from featureledger.integrations.mlflow_model import requirements

    reqs = requirements(pd.DataFrame())  # a model whose class comes from pandas
    assert reqs[0] == f"featureledger=={__version__}"
    assert f"pandas=={metadata.version('pandas')}" in reqs
    assert f"cloudpickle=={metadata.version('cloudpickle')}" in reqs
    assert any(r.startswith(("mlflow==", "mlflow-skinny==")) for r in reqs)
    assert not any(r.startswith("pandas") for r in requirements(TripsModel()))
