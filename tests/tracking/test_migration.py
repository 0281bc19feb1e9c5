"""A registry created at revision 0001 with data in it upgrades in place and keeps it."""

from __future__ import annotations

import sqlalchemy as sa

from featureledger import Entity, FeatureView, Field
from featureledger.model.hashing import canonical_json
from featureledger.registry import Registry
from featureledger.registry.engine import RegistryDB, head_revision


def _legacy_definition_rows(defs) -> list[dict]:
    """Rows of ``definitions`` as revision 0001 stored them (no project column)."""
    return [{"kind": d.kind, "name": d.name, "version": 1,
             "definition_hash": d.definition_hash, "spec": canonical_json(d.to_dict()),
             "docs": canonical_json(d.docs()), "docs_hash": d.docs_hash, "created_at": 1,
             "created_by": "old", "changes": "[]", "breaking_reason": None,
             "status": "active", "status_reason": None, "stale": 0} for d in defs]


def test_upgrade_from_0001_keeps_data(registry_url):
    db = RegistryDB(registry_url, migrate=False)
    db.migrate("0001")
    assert db.current_revision() == "0001"
    with db.engine.connect() as conn:
        assert not sa.inspect(conn).has_table("runs")

    # write data the 0001 way: rows in the 0001 tables, as that release wrote them
    driver = Entity(name="driver", join_keys={"driver_id": "int64"})
    stats = FeatureView(name="stats", entities=[driver], fields=[Field(name="x", dtype="int64")])
    with db.engine.begin() as conn:
        old = sa.MetaData()
        old.reflect(conn)
        conn.execute(old.tables["definitions"].insert(), _legacy_definition_rows([driver, stats]))
        conn.execute(old.tables["lineage_edges"].insert().values(
            src="source:data/x.parquet", dst="view:stats@1", relation="feeds", created_at=1))
        conn.execute(old.tables["registry_state"].update().values(generation=7))
    with db.read_all_projects() as conn:
        edges_before = conn.execute(sa.text("SELECT COUNT(*) FROM lineage_edges")).scalar()
        gen_before = conn.execute(sa.text("SELECT generation FROM registry_state")).scalar()
    db.dispose()

    reg = Registry(registry_url)  # migrates to head
    try:
        assert reg.db.current_revision() == head_revision() != "0001"
        assert reg.definitions.get("feature_view", "stats").version == 1
        assert reg.definitions.get("entity", "driver").definition.join_keys == {
            "driver_id": "int64"}
        with reg.db.read_all_projects() as conn:
            assert conn.execute(sa.text("SELECT COUNT(*) FROM lineage_edges")).scalar() == \
                edges_before
        assert reg.generation() == gen_before == 7
        with reg.db.read() as conn:
            insp = sa.inspect(conn)
            for table in ("experiments", "runs", "run_metrics", "model_versions",
                          "model_datasets", "deployments", "deployment_usage"):
                assert insp.has_table(table), table
        # and the new tables work on the upgraded database
        from featureledger.registry.runs import RunRepository

        exp = RunRepository(reg.db).create_experiment("after-upgrade")
        assert RunRepository(reg.db).get_experiment(exp.experiment_id).name == "after-upgrade"
    finally:
        reg.close()
