"""define -> ingest -> run -> training set -> metrics -> model -> deploy -> lineage, scoring,
online model features and reconciliation, on one store."""

from __future__ import annotations

import datetime as dt
import os

import pandas as pd
import pytest

from featureledger import Entity, FeatureSet, FeatureStore, FeatureView, Field
from featureledger.cli.main import main
from featureledger.config import load_config

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def day(n: float) -> dt.datetime:
    return T0 + dt.timedelta(days=n)


def oracle(entity_df, history, keys, feats):
    """Per entity row: the latest history row with event_ts <= entity ts (plain loops)."""
    out = []
    for _, e in entity_df.iterrows():
        best = None
        for _, r in history.iterrows():
            if (all(r[k] == e[k] for k in keys) and r["event_timestamp"] <= e["event_timestamp"]
                    and (best is None or r["event_timestamp"] > best["event_timestamp"])):
                best = r
        out.append([None if best is None else best[f] for f in feats])
    return out


@pytest.mark.slow
def test_full_story(tmp_path, registry_url, capsys):
    s = FeatureStore(tmp_path, config=load_config(tmp_path,
                                                  overrides={"registry": registry_url}))
    try:
        s.apply([
            Entity(name="driver", join_keys={"driver_id": "int64"}),
            FeatureView(name="driver_stats", entities=["driver"],
                        fields=[Field(name="trips", dtype="int64"),
                                Field(name="rating", dtype="float64")]),
            FeatureView(name="driver_geo", entities=["driver"],
                        fields=[Field(name="city", dtype="string")]),
            FeatureSet(name="fraud", features=["driver_stats:trips", "driver_stats:rating",
                                               "driver_geo:city"]),
        ])
        stats1 = pd.DataFrame({"driver_id": [1, 2, 3], "event_timestamp": [day(0)] * 3,
                               "trips": [10, 20, 30], "rating": [4.0, 4.5, 5.0]})
        stats2 = pd.DataFrame({"driver_id": [1, 2], "event_timestamp": [day(2)] * 2,
                               "trips": [11, 21], "rating": [3.9, 4.4]})
        geo = pd.DataFrame({"driver_id": [1, 3], "event_timestamp": [day(0)] * 2,
                            "city": ["Oslo", "Rome"]})
        c1 = s.ingest("driver_stats", stats1).commit
        c2 = s.ingest("driver_stats", stats2).commit
        c3 = s.ingest("driver_geo", geo).commit
        entity_df = pd.DataFrame({"driver_id": [1, 2, 3, 1],
                                  "event_timestamp": [day(1), day(3), day(3), day(3)],
                                  "label": [0, 1, 0, 1]})
        with s.start_run("fraud-detection", params={"model": "logreg", "C": 1.0}) as run:
            train = s.get_historical_features(entity_df, "fraud")
            frame = train.to_pandas()
            # a "model": mean label per city, scored as a metric over two steps
            for step, value in enumerate([0.61, 0.74]):
                run.log_metric("auc", value, step=step)
            (tmp_path / "model.pkl").write_bytes(b"the fitted model")  # saved, then logged
            model = run.log_model("fraud", tmp_path / "model.pkl", training_dataset=train)
        assert sorted(train.commit_ids) == sorted([c1.commit_id, c2.commit_id, c3.commit_id])
        dep = s.deploy(model.ref, "production")

        # lineage from the deployment reaches the exact commits and feature versions
        g = s.lineage(dep.deployment_id, direction="upstream")
        assert g.of_kind("cmt_") == sorted([c1.commit_id, c2.commit_id, c3.commit_id])
        assert g.of_kind("view:") == ["view:driver_geo@1", "view:driver_stats@1"]
        assert g.of_kind("ds_") == [train.id]
        assert g.of_kind("run_") == [run.run_id]
        assert g.of_kind("feature_set:") == ["feature_set:fraud@1"]
        assert model.model_id in g
        rec = s.get_run(run.run_id)
        assert rec.status == "finished" and rec.metrics == {"auc": 0.74}
        assert rec.datasets == [train.id] and rec.models == ["fraud@1"]

        # batch_features equals a hand-written retrieval, and both equal the oracle
        score_df = pd.DataFrame({"driver_id": [3, 2, 1], "event_timestamp": [day(5)] * 3})
        scored = s.batch_features("fraud", score_df).to_pandas()
        by_hand = s.get_historical_features(
            score_df, ["driver_stats@1:trips", "driver_stats@1:rating", "driver_geo@1:city"]
        ).to_pandas()
        pd.testing.assert_frame_equal(scored, by_hand)
        history = pd.concat([stats1, stats2])
        expect_stats = oracle(score_df, history, ["driver_id"], ["trips", "rating"])
        assert [[int(a), float(b)] for a, b in zip(scored["trips"], scored["rating"],
                                                   strict=True)] == expect_stats
        expect_geo = oracle(score_df, geo, ["driver_id"], ["city"])
        assert [[None if pd.isna(c) else c] for c in scored["city"]] == expect_geo
        assert len(frame) == 4

        # online: the model's input vector without naming features, counted for the deployment
        s.materialize()
        resp = s.get_model_features(dep.deployment_id, [{"driver_id": 1}, {"driver_id": 3}])
        online = resp.to_dict() if hasattr(resp, "to_dict") else resp
        assert online["trips"] == [11, 30] and online["city"] == ["Oslo", "Rome"]
        usage = s.tracking.deployment_usage(dep.deployment_id)
        assert {(u["feature_version"], u["requests"], u["rows"]) for u in usage} == {
            ("driver_stats@1", 1, 2), ("driver_geo@1", 1, 2)}
        assert s.reconcile().ok
        path = s.ctx.offline_store.path(c2.files[0])
    finally:
        s.close()

    if registry_url.startswith("sqlite"):  # the CLI reads the repository's own config
        os.remove(path)
        repo = tmp_path
        (repo / "featureledger.yaml").write_text(f"registry: {registry_url}\n")
        capsys.readouterr()
        assert main(["reconcile", "--repo", str(repo)]) == 1
        out = capsys.readouterr().out
        assert c2.commit_id in out and c2.files[0] in out
