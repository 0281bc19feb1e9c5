"""Schema drift: reported before anything is written, with what to do."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from featureledger.errors import SchemaDriftError


def _kinds(report) -> dict[str, tuple[str | None, str]]:
    return {f.column: (f.kind, f.severity) for f in report.findings}


def test_added_missing_renamed_and_retyped_columns(store, h):
    store.ingest("stats", h.batch(1, hours=1, n=200))
    rows = h.batch(2, hours=2, n=200)
    src = (rows.rename_columns(["driver_id", "event_timestamp", "x_value", "c"])
           .set_column(3, "c", pc.cast(pc.multiply(rows.column("x"), 0), pa.int64()))
           .append_column("extra", pa.array(range(200))))
    report = store.schema_drift("stats", src)
    kinds = _kinds(report)
    assert kinds["x_value"] == ("renamed", "error")
    (renamed,) = [f for f in report.findings if f.kind == "renamed"]
    assert renamed.field == "x" and "column_map={'x_value': 'x'}" in renamed.action
    assert kinds["c"] == ("retyped", "error") and kinds["extra"] == ("added", "error")
    # mapped and cast, nothing is left
    fixed = src.set_column(3, "c", rows.column("c")).drop_columns(["extra"])
    assert store.schema_drift("stats", fixed, column_map={"x_value": "x"}).findings == []


def test_values_tell_a_renamed_column_whose_name_is_unlike(store, h):
    store.ingest("stats", h.batch(1, hours=1, n=500))
    rows = h.batch(2, hours=2, n=500).rename_columns(["driver_id", "event_timestamp", "x",
                                                      "segment"])
    report = store.schema_drift("stats", rows)
    (f,) = [f for f in report.findings if f.kind == "renamed"]
    assert (f.column, f.field) == ("segment", "c") and "values like" in f.detail


def test_ingestion_under_a_policy_refuses_a_breaking_source_and_writes_nothing(store, h):
    store.set_quality_policy("stats", {"on_drift": "alert"})
    store.ingest("stats", h.batch(1, hours=1, n=100))
    before = store.commits("stats", status=None)
    bad = h.batch(2, hours=2, n=100).drop_columns(["driver_id"])
    with pytest.raises(SchemaDriftError, match="driver_id") as exc:
        store.ingest("stats", bad)
    assert [f.kind for f in exc.value.report.errors] == ["missing"]
    assert store.commits("stats", status=None) == before
    (alert,) = [a for a in store.alerts() if a.rule == "schema_drift"]
    assert alert.severity == "critical" and alert.lineage_node == "view:stats@1"
    # a nullable field the source lacks only informs: the commit is written, with nulls
    ok = store.ingest("stats", h.batch(3, hours=3, n=100).drop_columns(["c"]))
    assert ok.commit.status == "committed"
    (info,) = [a for a in store.alerts() if a.rule == "schema_drift" and a.severity ==
               "warning"]
    assert info.evidence["findings"][0]["kind"] == "missing"
