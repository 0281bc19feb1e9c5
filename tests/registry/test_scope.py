"""Every registry table has a project column, and no statement runs without its project.

The schema checks read the database the migrations built (not ``schema.py``), so a table
added by a future revision without the column fails here. The guard checks run real
statements through a real registry: an unscoped one is refused before it runs.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from featureledger import Entity, FeatureView, Field
from featureledger.errors import ConfigError, ProjectScopeError
from featureledger.registry import Registry, schema

# what is unique by name is unique per project: the project leads these keys
NAME_KEYS = {
    "definitions": ["project", "kind", "name", "version"],
    "models": ["project", "name"],
    "lineage_edges": ["project", "src", "dst", "relation"],
    "registry_state": ["project"],
    "deployment_usage": ["project", "deployment_id", "feature_version", "bucket_start"],
}
NAME_UNIQUES = {"experiments": ["project", "name"],
                "model_versions": ["project", "name", "version"]}


@pytest.fixture
def registry(registry_url):
    r = Registry(registry_url, project="alpha")
    yield r
    r.close()


def test_every_table_of_the_migrated_database_has_a_project_column(registry) -> None:
    with registry.db.read_all_projects() as conn:
        insp = sa.inspect(conn)
        tables = set(insp.get_table_names()) - {"alembic_version"}
        assert tables == set(schema.metadata.tables)
        for table in sorted(tables):
            cols = {c["name"]: c for c in insp.get_columns(table)}
            assert "project" in cols, f"{table} has no project column"
            assert not cols["project"]["nullable"], table
            # no default: an insert that forgets the project fails instead of guessing
            assert cols["project"]["default"] is None, table
        for table, key in NAME_KEYS.items():
            assert insp.get_pk_constraint(table)["constrained_columns"] == key, table
        for table, cols in NAME_UNIQUES.items():
            uniques = [u["column_names"] for u in insp.get_unique_constraints(table)]
            uniques += [i["column_names"] for i in insp.get_indexes(table) if i["unique"]]
            assert cols in uniques, table
            assert [c for c in cols if c != "project"] not in uniques, table


def test_an_insert_that_names_no_project_fails(registry) -> None:
    with pytest.raises(sa.exc.IntegrityError), registry.db.write() as conn:
        conn.execute(schema.experiments.insert().values(
            experiment_id="exp_x", name="x", description="", tags="{}", created_at=0,
            created_by="me"))


@pytest.mark.parametrize("table", sorted(schema.metadata.tables))
def test_a_statement_without_its_project_is_refused_before_it_runs(sqlite_url, table) -> None:
    reg = Registry(sqlite_url, project="alpha")
    t = schema.metadata.tables[table]
    try:
        with reg.db.read() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(t)
                                .where(reg.db.scope(t))).scalar() is not None
            for bad in (sa.select(t), sa.select(t).where(t.c.project == "beta"),
                        sa.select(t).where(sa.or_(reg.db.scope(t), t.c.project == "beta")),
                        # subqueries that forgot it, under a scoped outer query
                        sa.select(t).where(reg.db.scope(t), t.c.project.in_(
                            sa.select(t.alias().c.project))),
                        sa.select(t).where(reg.db.scope(t), sa.exists(
                            sa.select(t.c.project).correlate(None)))):
                with pytest.raises(ProjectScopeError, match=f"reads or changes {table}"):
                    conn.execute(bad)
            with pytest.raises(ProjectScopeError, match=table):
                conn.execute(sa.text(f"SELECT COUNT(*) FROM {table}"))
            assert conn.execute(sa.text(f"SELECT COUNT(*) FROM {table} x WHERE "
                                        "x.project = :project"), {"project": "alpha"}
                                ).scalar() is not None
    finally:
        reg.close()


def test_refused_updates_and_deletes_change_nothing(sqlite_url) -> None:
    alpha, beta = Registry(sqlite_url, project="alpha"), Registry(sqlite_url, project="beta")
    view = FeatureView(name="v", entities=[Entity(name="e", join_keys={"k": "int64"})],
                       fields=[Field(name="x", dtype="int64")])
    try:
        alpha.definitions.apply([view])
        beta.definitions.apply([view])
        d = schema.definitions
        for stmt in (d.update().values(status="retired"), d.delete(),
                     d.update().where(d.c.project == "beta").values(status="retired")):
            with pytest.raises(ProjectScopeError), alpha.db.write() as conn:
                conn.execute(stmt)
        assert [r.status for r in beta.definitions.list()] == ["active"]
        assert [r.status for r in alpha.definitions.list()] == ["active"]
        with alpha.db.write() as conn:  # the scoped form touches only its own project
            conn.execute(d.update().where(alpha.db.scope(d), d.c.kind == "feature_view")
                         .values(status="deprecated"))
        assert alpha.definitions.view("v").status == "deprecated"
        assert beta.definitions.view("v").status == "active"
    finally:
        alpha.close()
        beta.close()


def test_generation_is_per_project(registry_url) -> None:
    alpha, beta = Registry(registry_url, project="alpha"), Registry(registry_url, project="beta")
    try:
        before = alpha.generation()
        beta.definitions.apply([Entity(name="e", join_keys={"k": "int64"})])
        assert alpha.generation() == before and beta.generation() == 1
        alpha.definitions.apply([Entity(name="e", join_keys={"k": "int64"})])
        assert alpha.generation() == before + 1 and beta.generation() == 1
    finally:
        alpha.close()
        beta.close()


@pytest.mark.parametrize("name", ["", "a/b", "../x", ".hidden", "views", "DATASETS", "x" * 65,
                                  "sp ace", "a:b"])
def test_bad_project_names_are_refused(sqlite_url, name) -> None:
    with pytest.raises(ConfigError, match="project name"):
        Registry(sqlite_url, project=name)
