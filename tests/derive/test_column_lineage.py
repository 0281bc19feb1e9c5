"""Column-level lineage of derived views: read from SQL with sqlglot, declared for Python,
recorded with each derived commit, shown by the lineage API and CLI, and emitted as the
OpenLineage columnLineage facet (validated against the official schema)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from tests.derive.conftest import DRIVER, PYTHON, T0, TRIPS, derived_view, table
from tests.helpers import run_cli

from featureledger import FeatureStore, FeatureView
from featureledger.errors import DefinitionError, DerivationError
from featureledger.lineage.columns import parent_columns, sql_column_lineage
from featureledger.model.definitions import Transformation

TRIPS_COLS = {"driver_id": "BIGINT", "event_timestamp": "TIMESTAMPTZ", "km": "DOUBLE",
              "minutes": "BIGINT"}
PROFILE_COLS = {"driver_id": "BIGINT", "event_timestamp": "TIMESTAMPTZ", "rate": "DOUBLE"}


def inputs(rec: dict, column: str) -> dict[str, str]:
    """``view.column`` -> kind, for one output column."""
    return {f"{i['view']}.{i['column']}": i["kind"] for i in rec["columns"][column]}


@pytest.mark.parametrize(("sql", "expected"), [
    # star, unqualified names, a filter
    ("SELECT * FROM trips WHERE km > 1",
     {"driver_id": {"trips.driver_id": "identity"}, "km": {"trips.km": "identity"},
      "minutes": {"trips.minutes": "identity"}}),
    # arithmetic and CASE over two columns; a rename is still identity
    ("SELECT driver_id, event_timestamp AS event_timestamp, km AS distance, "
     "CASE WHEN minutes > 0 THEN km / minutes END AS speed FROM trips",
     {"distance": {"trips.km": "identity"},
      "speed": {"trips.km": "transformation", "trips.minutes": "transformation"}}),
    # through a CTE and a subquery, then aggregated
    ("WITH x AS (SELECT driver_id, event_timestamp, km * 2 AS km2 FROM trips) "
     "SELECT driver_id, max(event_timestamp) AS event_timestamp, sum(km2) AS total "
     "FROM (SELECT * FROM x) GROUP BY driver_id",
     {"driver_id": {"trips.driver_id": "identity"},
      "event_timestamp": {"trips.event_timestamp": "aggregation"},
      "total": {"trips.km": "aggregation"}}),
    # a join with USING: the key comes from both sides, unchanged
    ("SELECT driver_id, t.event_timestamp, t.km * p.rate AS price "
     "FROM trips t JOIN profile p USING (driver_id)",
     {"driver_id": {"trips.driver_id": "identity", "profile.driver_id": "identity"},
      "price": {"trips.km": "transformation", "profile.rate": "transformation"}}),
    # a window function is a row-wise transformation of the columns it reads
    ("SELECT driver_id, event_timestamp, sum(km) OVER (PARTITION BY driver_id ORDER BY "
     "event_timestamp) AS cum FROM trips",
     {"cum": {"trips.km": "transformation", "trips.driver_id": "transformation",
              "trips.event_timestamp": "transformation"}}),
])
def test_sql_column_lineage_names_parent_columns_and_how(sql, expected):
    rec = sql_column_lineage(sql, {"trips": TRIPS_COLS, "profile": PROFILE_COLS},
                             ["driver_id", "event_timestamp", "km", "minutes", "distance",
                              "speed", "total", "price", "cum"])
    assert rec["method"] == "sqlglot"
    for column, want in expected.items():
        assert inputs(rec, column) == want, column
    assert set(rec["columns"]) <= {"driver_id", "event_timestamp", "km", "minutes",
                                   "distance", "speed", "total", "price", "cum"}


def test_rows_chosen_by_filter_join_and_group_are_dataset_lineage():
    rec = sql_column_lineage(
        "SELECT t.driver_id, max(t.event_timestamp) AS event_timestamp, count(*) AS n "
        "FROM trips t JOIN profile p ON t.driver_id = p.driver_id WHERE p.rate > 1 "
        "GROUP BY t.driver_id", {"trips": TRIPS_COLS, "profile": PROFILE_COLS},
        ["driver_id", "event_timestamp", "n"])
    got = {(d["view"], d["column"], d["kind"]) for d in rec["dataset"]}
    assert got == {("trips", "driver_id", "join"), ("profile", "driver_id", "join"),
                   ("profile", "rate", "filter"), ("trips", "driver_id", "group_by")}
    assert rec["columns"]["n"] == []  # count(*) reads no column's value


def test_parameters_are_not_parent_columns():
    rec = sql_column_lineage("SELECT driver_id, event_timestamp, km + params.fee AS x "
                             "FROM trips, params",
                             {"trips": TRIPS_COLS, "params": {"fee": "DOUBLE"}},
                             ["driver_id", "event_timestamp", "x"], params="params")
    assert inputs(rec, "x") == {"trips.km": "transformation"}
    assert rec["columns"]["x"][0]["expression"] == "trips.km + params.fee"


def test_derived_commit_records_its_column_lineage_and_lineage_shows_it(store, tmp_path):
    store.ingest("trips", table([(1, 0, 10.0, 5), (2, 1, 3.0, None), (3, 2, 1.0, 1)]))
    (d,) = store.derive("fast").commits
    rec = d.source["columns"]
    assert rec["method"] == "sqlglot"
    assert inputs(rec, "km2") == {"trips.km": "transformation"}
    assert inputs(rec, "no_minutes") == {"trips.minutes": "transformation"}
    assert inputs(rec, "driver_id") == {"trips.driver_id": "identity"}
    assert {(x["column"], x["kind"]) for x in rec["dataset"]} == {("driver_id", "filter")}
    # the lineage API: a derived feature names its parent columns
    g = store.lineage("fast:km2", direction="upstream")
    root = g.nodes["view:fast@1"]
    assert root["feature"] == "km2" and list(root["columns"]["columns"]) == ["km2"]
    assert parent_columns(root["columns"], "km2") == ["trips.km"]
    # and a derived commit node carries what it was computed with
    up = store.lineage(d.commit_id, direction="upstream")
    assert parent_columns(up.nodes[d.commit_id]["columns"]) == [
        "trips.driver_id", "trips.event_timestamp", "trips.km", "trips.minutes"]
    store.close()
    out = run_cli("lineage", "fast:km2", "--direction", "upstream", "--repo", str(tmp_path),
                  cwd=tmp_path).stdout
    assert "km2 <- trips.km  (transformation: trips.km * 2)" in out
    assert "no_minutes" not in out
    out = run_cli("lineage", "fast@1", "--format", "json", "--repo", str(tmp_path),
                  cwd=tmp_path).stdout
    cols = json.loads(out)["nodes"]["view:fast@1"]["columns"]["columns"]
    assert {i["column"] for i in cols["no_minutes"]} == {"minutes"}


def test_python_lineage_is_unknown_unless_declared(store):
    store.apply([DRIVER, TRIPS, derived_view("py", language="python")])
    store.ingest("trips", table([(1, 0, 10.0, 5)]))
    (d,) = store.derive("py").commits
    assert d.source["columns"] == {"method": "unknown", "columns": {}, "dataset": []}
    from featureledger.lineage.render import column_lines

    assert "unknown" in column_lines(d.source["columns"])[0]
    declared = FeatureView(
        name="pyd", entities=["driver"], fields=derived_view().fields,
        transformation=Transformation(language="python", parents=["trips"], code=PYTHON,
                                      imports=["pyarrow"], params={"skip": 3},
                                      columns={"km2": ["trips.km"]}))
    store.apply([DRIVER, TRIPS, declared])
    (d,) = store.derive("pyd").commits
    assert d.source["columns"]["method"] == "declared"
    assert parent_columns(d.source["columns"]) == ["trips.km"]


@pytest.mark.parametrize(("columns", "why"), [
    ({"km2": ["km"]}, "PARENT.COLUMN"),
    ({"km2": ["other.km"]}, "PARENT.COLUMN"),
    ({"km2": ["trips.k m"]}, "not valid"),
])
def test_declared_columns_must_name_parent_columns(columns, why):
    with pytest.raises(DefinitionError, match=why):
        Transformation(language="python", parents=["trips"], code=PYTHON,
                       imports=["pyarrow"], columns=columns)
    with pytest.raises(DefinitionError, match="read from its SQL"):
        Transformation(language="sql", parents=["trips"], code="SELECT * FROM trips",
                       columns={"km": ["trips.km"]})


def test_declaring_no_columns_keeps_the_definition_hash():
    t = Transformation(language="python", parents=["trips"], code=PYTHON, imports=["pyarrow"])
    assert "columns" not in t.spec()


def test_sql_sqlglot_cannot_read_has_unknown_lineage_with_the_reason():
    from featureledger.lineage.columns import column_lineage

    broken = derived_view(code="SELECT driver_id, (km FROM trips")
    rec = column_lineage(broken, {"trips": TRIPS})
    assert rec["method"] == "unknown" and rec["columns"] == {}
    assert "could not be analysed" in rec["reason"]
    with pytest.raises(DerivationError, match="could not be analysed"):
        sql_column_lineage("SELECT (", {"trips": TRIPS_COLS}, ["driver_id"])


def test_openlineage_derive_event_carries_a_valid_column_lineage_facet(tmp_path):
    from tests.integrations.test_openlineage import validate

    from featureledger.config import load_config
    from featureledger.integrations import attach

    log_file = tmp_path / "events.jsonl"
    cfg = load_config(tmp_path, overrides={"project": "ol", "openlineage": {
        "enabled": True, "namespace": "fl-test",
        "transport": {"type": "file", "log_file_path": str(log_file), "append": True}}})
    s = FeatureStore(tmp_path, config=cfg)
    attach(s.ctx)
    try:
        s.apply([DRIVER, TRIPS, derived_view()])
        c1 = s.ingest("trips", pd.DataFrame({
            "driver_id": [1, 2], "event_timestamp": [T0, T0], "km": [1.0, 2.0],
            "minutes": [3, None]})).commit_id
        (d,) = s.derive("fast").commits
    finally:
        s.close()
    events = [json.loads(line) for line in log_file.read_text().splitlines()]
    for e in events:
        validate(e)
    (ev,) = [e for e in events if e["job"]["name"] == "ol.derive.fast"]
    assert ev["eventType"] == "COMPLETE"
    (inp,) = ev["inputs"]
    assert inp["name"] == "trips@1" and inp["facets"]["featureledger"]["commitIds"] == [c1]
    (out,) = ev["outputs"]
    assert out["facets"]["featureledger"]["commitIds"] == [d.commit_id]
    facet = out["facets"]["columnLineage"]
    (km,) = facet["fields"]["km2"]["inputFields"]
    assert (km["namespace"], km["name"], km["field"]) == (inp["namespace"], "trips@1", "km")
    assert km["transformations"][0]["type"] == "DIRECT"
    assert km["transformations"][0]["subtype"] == "TRANSFORMATION"
    (key,) = facet["fields"]["driver_id"]["inputFields"]
    assert key["transformations"][0]["subtype"] == "IDENTITY"
    assert [(f["field"], f["transformations"][0]["type"], f["transformations"][0]["subtype"])
            for f in facet["dataset"]] == [("driver_id", "INDIRECT", "FILTER")]
