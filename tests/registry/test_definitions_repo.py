"""The definition registry on every registry backend (SQLite and PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from featureledger.errors import (
    DefinitionError,
    IncompatibleChangeError,
    UnknownEntityError,
    UnknownFeatureError,
    UnknownViewError,
)
from featureledger.model.definitions import Entity, FeatureSet, FeatureView, Field, FileSource
from featureledger.registry import Registry
from featureledger.registry.schema import metadata


@pytest.fixture
def registry(registry_url):
    reg = Registry(registry_url, actor="alice")
    yield reg
    reg.close()


def driver() -> Entity:
    return Entity(name="driver", join_keys={"driver_id": "int64"})


def stats(*fields: Field, **kw) -> FeatureView:
    return FeatureView(
        name="stats", entities=["driver"],
        fields=list(fields) or [Field(name="trips", dtype="int64", min=0)],
        source=FileSource(path="data/stats.parquet"), **kw,
    )


def dump(reg: Registry) -> dict[str, list]:
    """Every row of every registry table, for before/after comparisons."""
    out = {}
    with reg.db.read_all_projects() as conn:
        for t in metadata.sorted_tables:
            if sa.inspect(conn).has_table(t.name):
                out[t.name] = sorted(map(tuple, conn.execute(sa.select(t)).all()), key=repr)
    return out


def test_apply_is_idempotent_and_versions_are_immutable(registry) -> None:
    p1 = registry.definitions.apply([driver(), stats()])
    assert [(i.name, i.action, i.to_version) for i in p1.items] == [
        ("driver", "new", 1), ("stats", "new", 1)]
    before = dump(registry)
    p2 = registry.definitions.apply([driver(), stats()])
    assert [i.action for i in p2.items] == ["unchanged", "unchanged"]
    after = dump(registry)
    # an idempotent apply writes nothing but the generation counter
    assert {k: v for k, v in after.items() if k != "registry_state"} == {
        k: v for k, v in before.items() if k != "registry_state"}

    v2 = stats(Field(name="trips", dtype="int64", min=0), Field(name="rating", dtype="float64"))
    p3 = registry.definitions.apply([driver(), v2])
    assert p3.items[1].action == "new_version" and p3.items[1].to_version == 2
    assert [c.change for c in p3.items[1].changes] == ["field_added_nullable"]
    versions = registry.definitions.versions("feature_view", "stats")
    assert [v.version for v in versions] == [1, 2]
    assert versions[0].definition.feature_names == ["trips"]
    assert versions[1].definition.feature_names == ["trips", "rating"]
    assert versions[1].created_by == "alice"
    assert versions[1].definition.join_keys == {"driver_id": "int64"}
    assert versions[1].changes == [
        {"change": "field_added_nullable", "field": "rating", "detail": "added float64"}]


def test_description_change_updates_docs_in_place(registry) -> None:
    registry.definitions.apply([driver(), stats()])
    gen = registry.generation()
    documented = stats(Field(name="trips", dtype="int64", min=0, description="trips per day"),
                       description="driver statistics")
    plan = registry.definitions.apply([driver(), documented])
    assert plan.items[1].action == "docs_update"
    recs = registry.definitions.versions("feature_view", "stats")
    assert len(recs) == 1
    assert recs[0].definition.description == "driver statistics"
    assert recs[0].definition.fields[0].description == "trips per day"
    assert registry.generation() > gen
    trail = registry.db.audit_trail("feature_view", "stats@1")
    assert trail[0]["action"] == "update_docs"


def test_refusal_applies_nothing_even_for_other_objects(registry) -> None:
    registry.definitions.apply([driver(), stats(Field(name="trips", dtype="int64"))])
    before = dump(registry)
    narrowed = stats(Field(name="trips", dtype="int32"))
    other = Entity(name="rider", join_keys={"rider_id": "int64"})
    with pytest.raises(IncompatibleChangeError) as err:
        registry.definitions.apply([driver(), narrowed, other])
    msg = str(err.value)
    assert "'trips'" in msg and "type_narrowed" in msg and "'backward'" in msg
    assert "--allow-breaking" in msg
    assert dump(registry) == before
    with pytest.raises(DefinitionError, match="needs a reason"):
        registry.definitions.apply([narrowed], allow_breaking=" ")
    registry.definitions.apply([driver(), narrowed, other], allow_breaking="backfill done")
    rec = registry.definitions.get("feature_view", "stats")
    assert (rec.version, rec.breaking_reason) == (2, "backfill done")
    assert registry.definitions.get("entity", "rider").version == 1
    created = registry.db.audit_trail("feature_view", "stats@2")[0]
    assert created["details"]["breaking_reason"] == "backfill done"


def test_feature_sets_pin_versions_and_check_features(registry) -> None:
    fs = FeatureSet(name="model_in", features=["stats:trips"])
    registry.definitions.apply([driver(), stats(), fs])
    assert registry.definitions.get("feature_set", "model_in").definition.features == [
        "stats@1:trips"]
    registry.definitions.apply([driver(), stats(Field(name="trips", dtype="int64", min=0),
                                                Field(name="x", dtype="bool")), fs])
    rec = registry.definitions.get("feature_set", "model_in")
    assert rec.version == 2 and rec.definition.features == ["stats@2:trips"]
    assert registry.definitions.get("feature_set", "model_in", 1).definition.features == [
        "stats@1:trips"]
    with pytest.raises(UnknownFeatureError, match="has no field 'nope'"):
        registry.definitions.apply([FeatureSet(name="bad", features=["stats:nope"])])
    with pytest.raises(UnknownViewError, match="'ghost' is not registered"):
        registry.definitions.apply([FeatureSet(name="bad", features=["ghost:x"])])


def test_unknown_names_and_versions(registry) -> None:
    with pytest.raises(UnknownEntityError, match="uses entity 'driver'"):
        registry.definitions.apply([stats()])
    registry.definitions.apply([driver(), stats()])
    with pytest.raises(UnknownViewError, match="has no version 7; versions are 1"):
        registry.definitions.get("feature_view", "stats", 7)
    with pytest.raises(KeyError, match="unknown feature view 'nope'"):
        registry.definitions.get("feature_view", "nope")
    ref, rec = registry.definitions.resolve("stats:trips")
    assert str(ref) == "stats@1:trips" and rec.version == 1


def test_deprecation_is_recorded_and_audited(registry) -> None:
    registry.definitions.apply([driver(), stats()])
    rec = registry.definitions.set_status("feature_view", "stats", 1, "deprecated", "use stats2")
    assert (rec.status, rec.status_reason) == ("deprecated", "use stats2")
    assert registry.db.audit_trail("feature_view", "stats@1")[0]["action"] == (
        "set_status:deprecated")
    with pytest.raises(DefinitionError, match="not valid"):
        registry.definitions.set_status("feature_view", "stats", 1, "gone")


def test_apply_writes_lineage_edges(registry) -> None:
    registry.definitions.apply([driver(), stats(), FeatureSet(name="s", features=["stats:trips"])])
    from featureledger.registry.lineage_edges import edges_of

    with registry.db.read() as conn:
        edges = {(e["src"], e["dst"], e["relation"]) for e in edges_of(conn, "view:stats@1")}
    assert edges == {
        # a relative source path names a file under the project folder (here: the cwd)
        ("source:" + (Path.cwd() / "data" / "stats.parquet").as_uri(), "view:stats@1",
         "feeds"),
        ("view:stats@1", "feature_set:s@1", "in_set"),
    }
