"""Derived views: staleness and recompute, reproduction, lineage, backfill, security."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest
from tests.derive.conftest import DRIVER, T0, TRIPS, US, derived_view, table

from featureledger import FeatureView, Field
from featureledger.derive.runner import check_transformation
from featureledger.errors import DefinitionError, DerivationError, IngestionError
from featureledger.model.definitions import Transformation

HOUR = 3600 * US


def entities(times: list[int], keys: tuple[int, ...] = (1, 2)) -> pd.DataFrame:
    base = int(T0.timestamp() * US)
    return pd.DataFrame({
        "driver_id": [k for k in keys for _ in times],
        "event_timestamp": pd.to_datetime([base + t for _ in keys for t in times], unit="us",
                                          utc=True)})


def test_derive_records_parent_commits_steps_and_edges(store):
    c1 = store.ingest("trips", table([(1, 0, 10.0, 5), (2, HOUR, 3.0, None)])).commit_id
    res = store.derive("fast")
    (d,) = res.commits
    assert d.row_count == 2 and d.source["type"] == "derive"
    assert d.source["parents"] == [{"view": "trips", "version": 1, "pinned": False,
                                    "role": "input", "commits": [c1]}]
    step = d.steps[0]
    assert step["step"] == "derive" and step["params"]["language"] == "sql"
    assert step["params"]["rows_in"] == 2 and step["params"]["rows_out"] == 2
    up = store.lineage(d.commit_id, direction="upstream")
    assert c1 in up.of_kind("cmt_")
    assert any(e.src == c1 and e.dst == d.commit_id and e.relation == "derived_from"
               for e in up.edges)
    # incremental: only the new parent commit is read
    c2 = store.ingest("trips", table([(1, 2 * HOUR, 1.0, 1)])).commit_id
    (d2,) = store.derive("fast").commits
    assert d2.source["parents"][0]["commits"] == [c2] and d2.row_count == 1
    assert store.derive("fast").unchanged


def test_quarantined_parent_marks_stale_and_derive_recomputes_exactly_that(store):
    store.ingest("trips", table([(1, 0, 10.0, 5)]))
    (d1,) = store.derive("fast").commits
    c2 = store.ingest("trips", table([(2, 0, 4.0, 1), (1, HOUR, 6.0, 2)])).commit_id
    (d2,) = store.derive("fast").commits
    store.quarantine(c2, "bad upstream batch")
    by_id = {c.commit_id: c for c in store.commits("fast")}
    assert by_id[d1.commit_id].stale == ()
    assert by_id[d2.commit_id].stale == (f"parent commit {c2} (trips@1) is quarantined",)
    assert list(store.stale("fast")) == [d2.commit_id]
    plan = store.plan([DRIVER, TRIPS, derived_view()])
    assert any("1 stale commit(s)" in n for i in plan.items for n in i.notes)
    res = store.derive("fast")
    assert res.superseded == [d2.commit_id] and res.commits == []  # c2 had nothing else
    after = {c.commit_id: c for c in store.commits("fast")}
    assert after[d2.commit_id].status == "rolled_back"
    assert after[d1.commit_id].status == "committed"
    got = store.get_features_in_window("fast", T0, T0 + dt.timedelta(days=1))
    assert got.column("km2").to_pylist() == [20.0]
    assert store.derive("fast").unchanged


def test_new_parent_version_marks_stale_and_reproduce_is_bit_for_bit(store):
    store.ingest("trips", table([(1, 0, 10.0, 5), (2, 0, 1.0, None)]))
    c2 = store.ingest("trips", table([(1, HOUR, 7.0, 5)])).commit_id
    store.derive("fast")
    ds = store.get_historical_features(entities([HOUR, 2 * HOUR]), ["fast:km2"])
    before = ds.to_arrow()
    # a new parent version (a nullable field added: it carries the old commits)
    trips2 = TRIPS.model_copy(update={"fields": [*TRIPS.fields,
                                                 Field(name="tip", dtype="float64")]})
    plan = store.apply([DRIVER, trips2, derived_view()])
    assert any("become stale with trips@2" in n for i in plan.items for n in i.notes)
    stale = store.stale("fast")
    assert len(stale) == 1 and "newer version @2 (read @1)" in next(iter(stale.values()))[0]
    res = store.derive("fast")
    assert len(res.superseded) == 1 and res.commits[0].source["parents"][0]["version"] == 2
    assert res.commits[0].row_count == 3
    # the same answers from the recomputed commit, and no doubled rows
    again = store.get_historical_features(entities([HOUR, 2 * HOUR]), ["fast:km2"]).to_arrow()
    assert again.column("km2").to_pylist() == before.column("km2").to_pylist()
    # the parent's latest row goes away: a new dataset differs, the old one reproduces
    store.quarantine(c2, "wrong")
    store.derive("fast")
    now = store.get_historical_features(entities([HOUR, 2 * HOUR]), ["fast:km2"]).to_arrow()
    assert now.column("km2").to_pylist() != before.column("km2").to_pylist()
    rebuilt = store.reproduce(ds.id)
    assert rebuilt.manifest["content_hash"] == ds.manifest["content_hash"]
    assert rebuilt.to_arrow().equals(before)


def test_lineage_of_a_model_reaches_the_parent_commits(store, tmp_path):
    c1 = store.ingest("trips", table([(1, 0, 10.0, 5), (2, 0, 3.0, 1)])).commit_id
    (d,) = store.derive("fast").commits
    artifact = tmp_path / "model.json"
    artifact.write_text("{}")
    with store.start_run(experiment="derived") as run:
        ds = store.get_historical_features(entities([HOUR]), ["fast:km2"])
        model = run.log_model("m", str(artifact), training_dataset=ds)
    up = store.lineage(model.model_id, direction="upstream")
    assert d.commit_id in up and c1 in up
    assert "view:trips@1" in up


def test_backfill_in_chunks_then_incremental_covers_the_rest(store):
    rows = [(k, h * HOUR, float(h), h) for k in (1, 2) for h in range(0, 48, 5)]
    store.ingest("trips", table(rows[:10]))
    store.ingest("trips", table(rows[10:]))
    seen = []
    res = store.derive("fast", start=T0, end=T0 + dt.timedelta(days=1), chunk="6h",
                       progress=seen.append)
    assert [p.done for p in seen] == [1, 2, 3, 4] and seen[-1].total == 4
    assert len(res.commits) == 4
    assert all(c.source["range"][1] - c.source["range"][0] == 6 * HOUR for c in res.commits)
    assert res.rows == sum(1 for _, t, _, _ in rows if t < 24 * HOUR)
    # the same backfill again: nothing pending
    assert store.derive("fast", start=T0, end=T0 + dt.timedelta(days=1), chunk="6h").unchanged
    rest = store.derive("fast")
    assert rest.rows == sum(1 for _, t, _, _ in rows if t >= 24 * HOUR)
    got = store.get_features_in_window("fast", T0, T0 + dt.timedelta(days=3))
    assert got.num_rows == len(rows)
    assert sorted(got.column("km2").to_pylist()) == sorted(2 * r[2] for r in rows)


@pytest.mark.parametrize("sql, why", [
    ("SELECT * FROM read_csv('/etc/passwd')", "table function"),
    ("COPY trips TO '/tmp/x.csv'", "COPY"),
    ("ATTACH '/tmp/other.db' AS o", "ATTACH"),
    ("INSTALL httpfs", "LOAD statement"),
    ("SELECT driver_id FROM trips; SELECT 1", "2 statements"),
    ("SELECT * FROM other_view", "other_view"),
])
def test_unsafe_sql_is_refused_and_nothing_changes(store, sql, why):
    store.ingest("trips", table([(1, 0, 10.0, 5)]))
    before = [(c.commit_id, c.status) for c in store.commits()]
    bad = derived_view("evil", code=sql)
    with pytest.raises(DefinitionError) as info:
        store.apply([DRIVER, TRIPS, bad])
    assert "refused" in str(info.value) or "statement" in str(info.value)
    assert why.split()[0].lower() in str(info.value).lower() or why == "table function"
    assert "evil" not in [r.name for r in store.list("feature_view")]
    # the derive-time guard refuses it too, before anything is read
    with pytest.raises(DerivationError):
        check_transformation(bad.transformation, "evil")
    assert [(c.commit_id, c.status) for c in store.commits()] == before


def test_python_imports_must_be_declared():
    with pytest.raises(DefinitionError, match="not declared"):
        Transformation(language="python", parents=["trips"],
                       code="import os\ndef transform(trips):\n    return trips")
    with pytest.raises(DefinitionError, match="__import__"):
        Transformation(language="python", parents=["trips"],
                       code="def transform(trips):\n    return __import__('os')")


def test_a_failing_transformation_commits_nothing(store):
    store.ingest("trips", table([(1, 0, 10.0, 5)]))
    bad = derived_view("wrong", code="SELECT driver_id, event_timestamp, 'x' AS km2, "
                                     "FALSE AS no_minutes FROM trips")
    store.apply([DRIVER, TRIPS, bad])
    with pytest.raises(Exception, match=r"nothing was written|rejected"):
        store.derive("wrong")
    assert store.commits("wrong") == []
    with pytest.raises(IngestionError, match="derived view"):
        store.ingest("fast", table([(1, 0, 1.0, 1)]).rename_columns(
            ["driver_id", "event_timestamp", "km2", "no_minutes"]))


def test_lookup_parent_and_params(store):
    profiles = FeatureView(name="profile", entities=["driver"],
                           fields=[Field(name="rate", dtype="float64")])
    joined = FeatureView(
        name="priced", entities=["driver"], fields=[Field(name="price", dtype="float64")],
        transformation=Transformation(
            language="sql", parents=["trips", "profile@1"], params={"fee": 1.5},
            code="SELECT t.driver_id, t.event_timestamp, t.km * p.rate + params.fee AS price "
                 "FROM trips t JOIN profile p USING (driver_id), params"))
    store.apply([DRIVER, TRIPS, profiles, joined, derived_view()])
    store.ingest("profile", pd.DataFrame({"driver_id": [1], "event_timestamp": [T0],
                                          "rate": [2.0]}))
    cp = store.commits("profile")[0].commit_id
    store.ingest("trips", table([(1, HOUR, 10.0, 5), (2, HOUR, 1.0, 1)]))
    (d,) = store.derive("priced").commits
    assert d.source["parents"][1] == {"view": "profile", "version": 1, "pinned": True,
                                      "role": "lookup", "commits": [cp]}
    got = store.get_features_in_window("priced", T0, T0 + dt.timedelta(days=1))
    assert got.column("price").to_pylist() == [21.5]
