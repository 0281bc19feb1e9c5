"""A registry created at revision 0002 (before projects), with rows in every table and
commit files in the offline store's old layout, upgrades in place: every row goes to the
project that opens it, nothing is lost, old commits are read where they are, and another
project opening the same registry afterwards starts empty."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from featureledger import Entity, FeatureSet, FeatureStore, FeatureView, Field
from featureledger.config import load_config
from featureledger.errors import NotFoundError, StorageError
from featureledger.model.hashing import canonical_json
from featureledger.model.ids import new_id
from featureledger.model.timeutil import to_us
from featureledger.offline.storage import file_digest
from featureledger.registry import schema
from featureledger.registry.engine import RegistryDB, head_revision

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
DRIVER = Entity(name="driver", join_keys={"driver_id": "int64"})
STATS = FeatureView(name="driver_stats", entities=[DRIVER],
                    fields=[Field(name="trips", dtype="int64")])
FRAUD = FeatureSet(name="fraud", features=["driver_stats@1:trips"])


def _definition(d, created: int) -> dict:
    return {"kind": d.kind, "name": d.name, "version": 1, "definition_hash": d.definition_hash,
            "spec": canonical_json(d.to_dict()), "docs": canonical_json(d.docs()),
            "docs_hash": d.docs_hash, "created_at": created, "created_by": "old",
            "changes": "[]", "breaking_reason": None, "status": "active",
            "status_reason": None, "stale": 0}


def write_0002_registry(url: str, offline_root) -> dict[str, str]:
    """Rows in every table as release 0002 wrote them, and the commit's file at
    ``views/...`` under the offline root (the layout before projects). Returns the ids."""
    ids = {k: new_id(k) for k in ("cmt", "ds", "run", "mdl", "dep", "exp")}
    t = to_us(T0)
    rel = f"views/driver_stats/v1/{ids['cmt']}/part-00000.parquet"
    path = offline_root / rel
    path.parent.mkdir(parents=True)
    ts = pa.timestamp("us", tz="UTC")
    pq.write_table(pa.table({
        "driver_id": pa.array([1, 2], pa.int64()),
        "event_timestamp": pa.array([t, t], pa.int64()).cast(ts),
        "trips": pa.array([5, 6], pa.int64()),
        "_commit_id": pa.array([ids["cmt"]] * 2, pa.string()),
        "_commit_time": pa.array([t + 1] * 2, pa.int64()).cast(ts)}), path)
    digest, _ = file_digest([path])
    entities = offline_root / "datasets" / ids["ds"] / "entities.parquet"
    entities.parent.mkdir(parents=True)
    pq.write_table(pa.table({"driver_id": [1], "event_timestamp": pa.array([t + 5],
                                                                          pa.int64()).cast(ts)}),
                   entities)
    fv = "driver_stats@1"
    rows = {
        "definitions": [_definition(d, t) for d in (DRIVER, STATS, FRAUD)],
        "commits": [{"commit_id": ids["cmt"], "view_name": "driver_stats", "view_version": 1,
                     "commit_time": t + 1, "user": "old", "run_id": ids["run"],
                     "source": canonical_json({"uri": "file:///data/stats.parquet"}),
                     "steps": "[]", "row_count": 2, "rejected_count": 0, "validation": "{}",
                     "profile": "{}", "files": canonical_json([rel]), "content_digest": digest,
                     "min_event_ts": t, "max_event_ts": t, "status": "committed",
                     "status_reason": None, "status_changed_at": None}],
        "datasets": [{"dataset_id": ids["ds"], "created_at": t + 2, "created_by": "old",
                      "run_id": ids["run"], "feature_set": "fraud@1",
                      "features": canonical_json(["driver_stats@1:trips"]), "as_of": None,
                      "entity_digest": "e" * 64,
                      "entity_path": f"datasets/{ids['ds']}/entities.parquet",
                      "content_hash": "c" * 64, "row_count": 1, "arrow_schema": "",
                      "manifest": canonical_json({"commit_ids": [ids["cmt"]]})}],
        "dataset_commits": [{"dataset_id": ids["ds"], "commit_id": ids["cmt"]}],
        "lineage_edges": [
            {"src": s, "dst": d, "relation": r, "created_at": t, "details": None}
            for s, d, r in [("view:driver_stats@1", "feature_set:fraud@1", "in_set"),
                            ("view:driver_stats@1", ids["cmt"], "has_commit"),
                            ("source:file:///data/stats.parquet", ids["cmt"], "ingested"),
                            (ids["exp"], ids["run"], "has_run"),
                            (ids["run"], ids["cmt"], "wrote"),
                            (ids["cmt"], ids["ds"], "read"), (ids["ds"], ids["run"], "used_by"),
                            (ids["run"], ids["mdl"], "produced"),
                            (ids["ds"], ids["mdl"], "trained_on"),
                            ("feature_set:fraud@1", ids["mdl"], "consumes"),
                            (ids["mdl"], ids["dep"], "deployed_as")]],
        "audit_log": [{"at": t, "actor": "old", "action": "commit", "object_kind": "commit",
                       "object_id": ids["cmt"], "details": "{}"}],
        "experiments": [{"experiment_id": ids["exp"], "name": "churn", "description": "h",
                         "tags": "{}", "created_at": t, "created_by": "old"}],
        "runs": [{"run_id": ids["run"], "experiment_id": ids["exp"], "name": "r1",
                  "parent_run_id": None, "status": "finished", "start_time": t,
                  "end_time": t + 9, "user": "old", "git_commit": None, "git_dirty": None,
                  "source": None, "error": None}],
        "run_external_ids": [{"run_id": ids["run"], "system": "mlflow", "external_id": "m1"}],
        "run_params": [{"run_id": ids["run"], "key": "C", "value": "1.0"}],
        "run_metrics": [{"run_id": ids["run"], "key": "auc", "value": 0.8, "step": 0,
                         "timestamp": t}],
        "run_tags": [{"run_id": ids["run"], "key": "team", "value": "risk"}],
        "models": [{"name": "fraud", "description": "", "created_at": t, "created_by": "old"}],
        "model_versions": [{"model_id": ids["mdl"], "name": "fraud", "version": 1,
                            "run_id": ids["run"], "artifact_uri": "s3://m/1",
                            "feature_set": "fraud@1",
                            "features": canonical_json(["driver_stats@1:trips"]),
                            "description": "", "tags": "{}", "created_at": t,
                            "created_by": "old"}],
        "model_features": [{"model_id": ids["mdl"], "position": 0, "view_name": "driver_stats",
                            "view_version": 1, "feature": "trips"}],
        "model_datasets": [{"model_id": ids["mdl"], "dataset_id": ids["ds"],
                            "stage": "training"}],
        "deployments": [{"deployment_id": ids["dep"], "model_id": ids["mdl"],
                         "model_ref": "fraud@1", "environment": "production",
                         "status": "active", "feature_set": "fraud@1",
                         "features": canonical_json(["driver_stats@1:trips"]),
                         "lineage_snapshot": "{}", "deployed_at": t, "deployed_by": "old",
                         "ended_at": None, "ended_by": None, "end_reason": None,
                         "description": ""}],
        "deployment_exceptions": [{"deployment_id": ids["dep"], "feature_version": fv,
                                   "reason": "kept", "created_at": t, "created_by": "old"}],
        "deployment_usage": [{"deployment_id": ids["dep"], "feature_version": fv,
                              "bucket_start": t, "requests": 3, "rows": 6}],
    }
    db = RegistryDB(url, migrate=False)
    try:
        db.migrate("0002")
        with db.engine.begin() as conn:
            old = sa.MetaData()
            old.reflect(conn)
            assert all("project" not in old.tables[name].c for name in rows)
            for name, table_rows in rows.items():
                conn.execute(old.tables[name].insert(), table_rows)
            conn.execute(old.tables["registry_state"].update().values(generation=42))
    finally:
        db.dispose()
    return ids


def open_store(tmp_path, url: str, project: str) -> FeatureStore:
    repo = tmp_path / project
    repo.mkdir(exist_ok=True)
    return FeatureStore(repo, config=load_config(repo, environ={}, overrides={
        "project": project, "registry": url,
        "offline_store": {"type": "parquet", "path": str(tmp_path / "offline")},
        "online_store": {"type": "sqlite", "path": str(tmp_path / "online.db")}}))


@pytest.mark.slow
def test_upgrade_from_0002_gives_every_row_to_the_opening_project(registry_url, tmp_path):
    root = tmp_path / "offline"
    ids = write_0002_registry(registry_url, root)
    engine = sa.create_engine(registry_url)
    try:
        tables_at_0002 = set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()

    s = open_store(tmp_path, registry_url, "risk")  # upgrades in place
    try:
        db = s.registry.db
        assert db.current_revision() == head_revision()
        with db.read_all_projects() as conn:
            for table in schema.metadata.sorted_tables:
                projects = conn.execute(sa.select(table.c.project).distinct()).scalars().all()
                if table.name not in tables_at_0002:  # created by a later revision
                    assert projects in ([], ["risk"]), table.name
                    continue
                assert projects == ["risk"], table.name
        assert s.registry.generation() == 42  # the counter is now this project's
        # the rows, read through the ordinary API of the project that owns them
        assert [(r.kind, r.name, r.version) for r in s.list()] == [
            ("entity", "driver", 1), ("feature_set", "fraud", 1),
            ("feature_view", "driver_stats", 1)]
        old = s.get_commit(ids["cmt"])
        assert old.files == [f"views/driver_stats/v1/{ids['cmt']}/part-00000.parquet"]
        assert old.seal == "unsealed"  # written before 0005: served, not taken as tampered
        assert s.registry.datasets.get(ids["ds"]).commit_ids == [ids["cmt"]]
        run = s.get_run(ids["run"])
        assert (run.experiment, run.params, run.metrics, run.tags, run.external_ids,
                run.datasets, run.models, run.commits) == (
            "churn", {"C": "1.0"}, {"auc": 0.8}, {"team": "risk"}, {"mlflow": "m1"},
            [ids["ds"]], ["fraud@1"], [ids["cmt"]])
        assert s.get_model("fraud@1").model_id == ids["mdl"]
        dep = s.tracking.get_deployment(ids["dep"])
        assert dep.status == "active" and dep.exceptions == {"driver_stats@1": "kept"}
        assert [(u["requests"], u["rows"]) for u in s.tracking.deployment_usage()] == [(3, 6)]
        assert [a["action"] for a in db.audit_trail()] == ["adopt_unscoped_rows", "commit"]
        up = s.lineage(ids["dep"], direction="upstream")
        assert up.of_kind("cmt_") == [ids["cmt"]] and up.of_kind("run_") == [ids["run"]]
        assert s.reconcile().ok  # includes the old commit's file and digest

        # old commits are read where they are, beside new ones in the project's folder
        new = s.ingest("driver_stats", pd.DataFrame({
            "driver_id": [2], "event_timestamp": [T0 + dt.timedelta(days=1)],
            "trips": [60]})).commit
        assert new.files[0].startswith("risk/views/driver_stats/v1/")
        entity_df = pd.DataFrame({"driver_id": [1, 2],
                                  "event_timestamp": [T0 + dt.timedelta(days=2)] * 2})
        ds = s.get_historical_features(entity_df, ["driver_stats:trips"])
        assert ds.to_arrow().column("trips").to_pylist() == [5, 60]
        assert ds.manifest["entity"]["path"] == f"risk/datasets/{ds.id}/entities.parquet"
        s.materialize()
        got = s.get_online_features(["driver_stats:trips"], [{"driver_id": 1}]).to_dict()
        assert got["trips"] == [5]

        # gc: this project owns the old layout, so it collects orphans there too
        orphan = root / "views" / "driver_stats" / "v1" / "cmt_orphan"
        orphan.mkdir(parents=True)
        tmp = root / "_tmp" / "cmt_half.1"
        tmp.mkdir(parents=True)
        assert sorted(s.gc(grace_seconds=0).removed) == [
            "_tmp/cmt_half.1", "views/driver_stats/v1/cmt_orphan"]
        assert s.ctx.offline_store.path(old.files[0]).is_file()

        # names are unique per project now: the same names in a newcomer are new
        newcomer = open_store(tmp_path, registry_url, "growth")
        try:
            assert newcomer.list() == [] and newcomer.commits() == []
            assert newcomer.registry.generation() == 0
            with pytest.raises(NotFoundError):
                newcomer.get_commit(ids["cmt"])
            newcomer.apply([DRIVER, STATS, FRAUD])
            assert newcomer.get_view("driver_stats").version == 1
            assert newcomer.tracking.create_experiment("churn").experiment_id != ids["exp"]
            orphan.mkdir(parents=True)  # the old layout is not the newcomer's to collect
            assert newcomer.gc(grace_seconds=0).removed == [] and orphan.is_dir()
        finally:
            newcomer.close()
        assert s.registry.generation() > 42 and len(s.list()) == 3
        assert s.reconcile().checked["runs"] == 1
    finally:
        s.close()


def test_a_registry_upgraded_by_a_newer_featureledger_is_refused_untouched(registry_url):
    db = RegistryDB(registry_url, project="default")
    db.engine.dispose()
    engine = sa.create_engine(registry_url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
        tables = sorted(sa.inspect(conn).get_table_names())
    with pytest.raises(StorageError) as refused:
        RegistryDB(registry_url, project="default")
    message = str(refused.value)
    assert "schema revision 9999" in message and f"its newest is {head_revision()}" in message
    assert "Upgrade featureledger" in message and "nothing was changed" in message
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() \
            == "9999"
        assert sorted(sa.inspect(conn).get_table_names()) == tables
    engine.dispose()
