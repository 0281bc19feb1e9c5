"""A registry created at revision 0001 with data in it upgrades in place and keeps it."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import command

from featureledger import Entity, FeatureView, Field
from featureledger.registry import Registry
from featureledger.registry.definitions import DefinitionRepository
from featureledger.registry.engine import RegistryDB, _alembic_config, head_revision


def test_upgrade_from_0001_keeps_data(registry_url):
    db = RegistryDB(registry_url, migrate=False)
    with db.engine.connect() as conn:
        command.upgrade(_alembic_config(conn), "0001")
        conn.commit()
    assert db.current_revision() == "0001"
    with db.engine.connect() as conn:
        assert not sa.inspect(conn).has_table("runs")
    db.dispose()

    # write data the 0001 way, through the definitions repository on the old schema
    old_db = RegistryDB(registry_url, migrate=False)
    DefinitionRepository(old_db).apply([
        Entity(name="driver", join_keys={"driver_id": "int64"}),
        FeatureView(name="stats", entities=["driver"], fields=[Field(name="x", dtype="int64")]),
    ])
    with old_db.engine.connect() as conn:
        edges_before = conn.execute(sa.text("SELECT COUNT(*) FROM lineage_edges")).scalar()
        gen_before = conn.execute(sa.text("SELECT generation FROM registry_state")).scalar()
    old_db.dispose()

    reg = Registry(registry_url)  # migrates to head
    try:
        assert reg.db.current_revision() == head_revision() != "0001"
        assert reg.definitions.get("feature_view", "stats").version == 1
        assert reg.definitions.get("entity", "driver").definition.join_keys == {
            "driver_id": "int64"}
        with reg.db.read() as conn:
            assert conn.execute(sa.text("SELECT COUNT(*) FROM lineage_edges")).scalar() == \
                edges_before
            assert conn.execute(sa.text("SELECT generation FROM registry_state")).scalar() \
                == gen_before
            insp = sa.inspect(conn)
            for table in ("experiments", "runs", "run_metrics", "model_versions",
                          "model_datasets", "deployments", "deployment_usage"):
                assert insp.has_table(table), table
        # and the new tables work on the upgraded database
        from featureledger.tracking.runs import RunRepository

        exp = RunRepository(reg.db).create_experiment("after-upgrade")
        assert RunRepository(reg.db).get_experiment(exp.experiment_id).name == "after-upgrade"
    finally:
        reg.close()
