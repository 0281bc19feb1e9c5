"""Impact analysis and reconciliation on a real store, through the SDK and the CLI."""

from __future__ import annotations

import datetime as dt
import json
import os

import pandas as pd
import pytest

from featureledger import Entity, FeatureSet, FeatureStore, FeatureView, Field
from featureledger.cli.main import main
from featureledger.config import load_config
from featureledger.registry import schema

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def build(root, registry_url=None):
    overrides = {"registry": registry_url} if registry_url else None
    s = FeatureStore(root, config=load_config(root, overrides=overrides))
    s.apply([
        Entity(name="driver", join_keys={"driver_id": "int64"}),
        FeatureView(name="driver_stats", entities=["driver"],
                    fields=[Field(name="trips", dtype="int64")]),
        FeatureView(name="driver_geo", entities=["driver"],
                    fields=[Field(name="city", dtype="string")]),
        FeatureSet(name="fraud", features=["driver_stats:trips"]),
    ])
    c1 = s.ingest("driver_stats", pd.DataFrame({"driver_id": [1, 2], "event_timestamp": [T0] * 2,
                                                "trips": [1, 2]})).commit
    c2 = s.ingest("driver_stats", pd.DataFrame({"driver_id": [3], "event_timestamp": [T0],
                                                "trips": [3]})).commit
    c3 = s.ingest("driver_geo", pd.DataFrame({"driver_id": [1], "event_timestamp": [T0],
                                              "city": ["Oslo"]})).commit
    ents = pd.DataFrame({"driver_id": [1, 2, 3], "event_timestamp": [T0 + dt.timedelta(1)] * 3})
    with s.start_run("fraud") as run:
        ds = s.get_historical_features(ents, "fraud")
        m = run.log_model("fraud", "s3://m/1", training_dataset=ds)
    with s.start_run("geo") as run2:
        ds2 = s.get_historical_features(ents, ["driver_geo:city"])
        m2 = run2.log_model("geo", "s3://m/geo", training_dataset=ds2)
    dep = s.deploy("fraud@1", "production")
    dep2 = s.deploy("geo@1", "production")
    return s, {"c1": c1, "c2": c2, "c3": c3, "ds": ds, "m": m, "m2": m2, "dep": dep,
               "dep2": dep2, "run": run, "ds2": ds2}


def test_impact_of_view_commit_and_quarantined_commits(tmp_path, registry_url):
    s, o = build(tmp_path, registry_url)
    try:
        rep = s.impact("driver_stats@1")
        assert [d["deployment_id"] for d in rep.active_deployments] == [o["dep"].deployment_id]
        assert rep.models == [o["m"].model_id]
        assert o["ds"].id in rep.datasets and o["ds2"].id not in rep.datasets
        # nothing of driver_stats@1 is quarantined yet
        q = s.impact("driver_stats@1", commit_status="quarantined")
        assert q.seeds == [] and q.deployments == []
        s.quarantine(o["c2"].commit_id, "bad trips")
        q = s.impact("driver_stats@1", commit_status="quarantined")
        assert q.seeds == [o["c2"].commit_id]
        assert [d["model"] for d in q.active_deployments] == ["fraud@1"]
        geo = s.impact(o["c3"].commit_id)
        assert [d["model"] for d in geo.deployments] == ["geo@1"]
        s.undeploy(o["dep2"].deployment_id)
        geo = s.impact(o["c3"].commit_id)
        assert geo.active_deployments == [] and geo.deployments[0]["status"] == "undeployed"
        # lineage from the deployment reaches the exact commits and feature versions
        g = s.lineage(o["dep"].deployment_id, direction="upstream")
        assert g.of_kind("cmt_") == sorted([o["c1"].commit_id, o["c2"].commit_id])
        assert g.of_kind("view:") == ["view:driver_stats@1"]
        assert g.nodes[o["c2"].commit_id]["status"] == "quarantined"
    finally:
        s.close()


def test_reconcile_clean_then_names_each_problem(tmp_path, registry_url):
    s, o = build(tmp_path, registry_url)
    try:
        assert s.reconcile().ok
        # a referenced commit file deleted on disk
        rel = s.get_commit(o["c1"].commit_id).files[0]
        os.remove(s.ctx.offline_store.path(rel))
        # a commit file changed on disk (grown by a byte: its recorded size no longer fits)
        geo_file = s.ctx.offline_store.path(s.get_commit(o["c3"].commit_id).files[0])
        geo_file.write_bytes(geo_file.read_bytes() + b"x")
        # an active deployment reading a now-deprecated version, no exception recorded
        s.deprecate("driver_stats@1", "use v2", force="redeploy on v2 planned")
        # a model trained on a dataset whose record vanished
        with s.registry.db.write() as conn:
            conn.execute(schema.model_datasets.insert().values(
                project=s.registry.project, model_id=o["m2"].model_id, dataset_id="ds_01900000-0000-7000-8000-000000000000",
                stage="test"))
        rep = s.reconcile()
        by_code = {p.code: p for p in rep.problems}
        assert set(by_code) == {"commit_files_missing", "commit_file_size_mismatch",
                                "inactive_feature_version", "missing_dataset",
                                "deprecation_unapproved"}
        assert by_code["commit_files_missing"].ids["commit"] == o["c1"].commit_id
        assert rel in by_code["commit_files_missing"].message
        assert by_code["commit_file_size_mismatch"].ids["commit"] == o["c3"].commit_id
        assert by_code["inactive_feature_version"].ids == {
            "deployment": o["dep"].deployment_id, "feature_version": "driver_stats@1"}
        assert by_code["missing_dataset"].ids["dataset"].startswith("ds_01900000")
        # a recorded exception clears the deprecation problem
        s.tracking.add_deployment_exception(o["dep"].deployment_id, "driver_stats@1",
                                             "v2 backfill running")
        assert "inactive_feature_version" not in s.reconcile().codes()
    finally:
        s.close()


def test_reconcile_reports_missing_graph_nodes(tmp_path):
    s, o = build(tmp_path)
    try:
        with s.registry.db.write() as conn:
            for t in (schema.dataset_commits, schema.model_datasets, schema.datasets):
                conn.execute(t.delete().where(s.registry.db.scope(t),
                                              t.c.dataset_id == o["ds2"].id))
        rep = s.reconcile()
        assert [(p.code, p.ids) for p in rep.problems] == [
            ("missing_node", {"dataset": o["ds2"].id})]
    finally:
        s.close()


def test_cli_reconcile_lineage_impact_runs(tmp_path, capsys):
    s, o = build(tmp_path)
    rel = s.get_commit(o["c1"].commit_id).files[0]
    path = s.ctx.offline_store.path(rel)
    s.close()
    repo = ["--repo", str(tmp_path)]
    assert main(["reconcile", *repo]) == 0
    capsys.readouterr()
    os.remove(path)
    assert main(["reconcile", *repo]) == 1
    out = capsys.readouterr().out
    assert o["c1"].commit_id in out and "commit_files_missing" in out
    assert main(["reconcile", "--json", *repo]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is False and data["problems"][0]["ids"]["commit"] == o["c1"].commit_id

    html_out = tmp_path / "dep.html"
    assert main(["lineage", o["dep"].deployment_id, "--format", "html", "-o", str(html_out),
                 *repo]) == 0
    assert o["c1"].commit_id in html_out.read_text()
    assert main(["lineage", "driver_stats@1", "--format", "mermaid", "-d", "downstream",
                 *repo]) == 0
    assert "graph LR" in capsys.readouterr().out
    assert main(["impact", "driver_stats@1", "--json", *repo]) == 0
    imp = json.loads(capsys.readouterr().out)
    assert [d["deployment_id"] for d in imp["active_deployments"]] == [o["dep"].deployment_id]
    assert main(["runs", "list", "--feature-version", "driver_geo@1", "--json", *repo]) == 0
    runs = json.loads(capsys.readouterr().out)
    assert [r["experiment"] for r in runs] == ["geo"]
    assert main(["runs", "compare", o["run"].run_id, runs[0]["run_id"], "--json", *repo]) == 0
    cmp = json.loads(capsys.readouterr().out)
    assert cmp["feature_versions"] == {"driver_geo@1": [False, True],
                                       "driver_stats@1": [True, False]}
    assert main(["models", "--json", *repo]) == 0
    assert [m["ref"] for m in json.loads(capsys.readouterr().out)] == ["fraud@1", "geo@1"]
    assert main(["deploy", "--list", "--json", *repo]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 2
    assert main(["lineage", "nothing@7", *repo]) == 2


@pytest.mark.parametrize("fmt", ["text", "dot", "json"])
def test_cli_lineage_formats(tmp_path, capsys, fmt):
    s, o = build(tmp_path)
    s.close()
    assert main(["lineage", o["m"].model_id, "--format", fmt, "--repo", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert o["ds"].id in out
