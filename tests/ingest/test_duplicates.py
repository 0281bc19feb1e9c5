"""duplicates="keep_last": among rows with the same keys and event time, the row with the
latest created timestamp, then the latest input position, is kept; the others are dropped
and counted, never rejected. Checked against a brute-force oracle over random inputs."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featureledger.errors import IngestionError
from helpers import read_commit, run_cli, snapshot

UTC = dt.UTC
T0 = dt.datetime(2024, 1, 1, tzinfo=UTC)

ROW = st.fixed_dictionaries({
    "driver_id": st.integers(0, 2),
    "hour": st.integers(0, 2),
    "created": st.integers(0, 2),
    "valid": st.booleans(),
})


def table_of(rows: list[dict], created: bool) -> pa.Table:
    # n is the input position, so every stored row says which input row it was; an
    # invalid row breaks the range 0 <= n <= 100
    cols = {
        "driver_id": [r["driver_id"] for r in rows],
        "event_timestamp": pa.array([T0 + dt.timedelta(hours=r["hour"]) for r in rows],
                                    pa.timestamp("us", tz="UTC")),
        "n": [i if r["valid"] else 1000 + i for i, r in enumerate(rows)],
    }
    if created:
        cols["created"] = pa.array([T0 + dt.timedelta(minutes=r["created"]) for r in rows],
                                   pa.timestamp("us", tz="UTC"))
    return pa.table(cols)


def oracle(rows: list[dict], created: bool) -> list[int]:
    """Input positions of the kept rows, in input order, by plain Python."""
    best: dict[tuple[int, int], int] = {}
    for i, r in enumerate(rows):
        key = (r["driver_id"], r["hour"])
        j = best.get(key)
        rank = ((r["created"] if created else 0), i)
        if j is None or rank > ((rows[j]["created"] if created else 0), j):
            best[key] = i
    return sorted(best.values())


@pytest.fixture
def stores(store_factory, sqlite_url, make_view):
    store = store_factory(sqlite_url)
    from featureledger import Entity

    driver = Entity(name="driver", join_keys={"driver_id": "int64"})
    store.apply([driver, make_view(), make_view(name="trips_created",
                                                created_timestamp_field="created")])
    return store


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(ROW, min_size=1, max_size=12), created=st.booleans(),
       mode=st.sampled_from(["strict", "drop_invalid"]))
def test_keep_last_matches_a_brute_force_oracle(stores, rows, created, mode) -> None:
    view = "trips_created" if created else "trips"
    kept = oracle(rows, created)
    valid = [i for i in kept if rows[i]["valid"]]
    invalid = [i for i in kept if not rows[i]["valid"]]
    data = table_of(rows, created)
    if not valid or (invalid and mode == "strict"):
        from featureledger.errors import ValidationFailedError

        with pytest.raises(ValidationFailedError) as exc:
            stores.ingest(view, data, mode=mode, duplicates="keep_last")
        report = exc.value.report
        assert report.rows_rejected == len(invalid)
        assert report.rows_superseded == len(rows) - len(kept)
        return
    result = stores.ingest(view, data, mode=mode, duplicates="keep_last")
    # the file holds the rows by join key and event time: n is the input position
    stored = read_commit(stores, result.commit).sort_by("n")
    assert stored.column("n").to_pylist() == valid
    report = result.report
    assert report.duplicates == "keep_last"
    assert report.rows_superseded == len(rows) - len(kept)
    assert report.rows_rejected == len(invalid)
    assert report.rows_checked == len(rows)
    assert report.rows_valid + report.rows_rejected + report.rows_superseded == len(rows)
    assert report.rule("unique_key").failed == 0
    if invalid:
        assert result.rejected().column("_row").to_pylist() == invalid
    # each superseded sample names the row kept in its place
    for s in report.superseded:
        r, k = rows[s["row"]], rows[s["kept"]]
        assert (r["driver_id"], r["hour"]) == (k["driver_id"], k["hour"])
        assert s["kept"] in kept and s["row"] not in kept
    again = stores.get_commit(result.commit_id).validation
    assert again["rows_superseded"] == report.rows_superseded


def test_created_timestamp_beats_input_order_both_ways(stores) -> None:
    early, late = T0 + dt.timedelta(minutes=1), T0 + dt.timedelta(minutes=2)
    for order in ((early, late), (late, early)):
        data = pa.table({
            "driver_id": [7, 7], "event_timestamp": pa.array([T0, T0],
                                                             pa.timestamp("us", tz="UTC")),
            "created": pa.array(list(order), pa.timestamp("us", tz="UTC")),
            "n": [1, 2]})
        result = stores.ingest("trips_created", data, duplicates="keep_last")
        stored = read_commit(stores, result.commit)
        assert stored.column("created").to_pylist() == [late]
        assert stored.column("n").to_pylist() == [order.index(late) + 1]
        assert result.report.superseded == [{"row": order.index(early),
                                             "kept": order.index(late)}]
        assert [s for s in result.commit.steps if s["step"] == "deduplicate"] == [{
            "step": "deduplicate", "params": {
                "duplicates": "keep_last", "keys": ["driver_id", "event_timestamp"],
                "order": ["created", "input position"]},
            "rows_in": 2, "rows_out": 1}]


def test_reject_stays_the_default_and_unknown_policies_are_refused(stores) -> None:
    data = pa.table({"driver_id": [1, 1, 2],
                     "event_timestamp": pa.array([T0] * 3, pa.timestamp("us", tz="UTC")),
                     "n": [1, 2, 3]})
    result = stores.ingest("trips", data, mode="drop_invalid")
    assert result.rejected().column("_row").to_pylist() == [0, 1]
    assert result.report.rows_superseded == 0 and result.report.duplicates == "reject"
    before = snapshot(stores)
    with pytest.raises(IngestionError, match=r"duplicates='last' is not known; use 'reject'"):
        stores.ingest("trips", data, duplicates="last")
    assert snapshot(stores) == before


@pytest.mark.e2e
def test_cli_duplicates_keep_last(tmp_path) -> None:
    import json

    run_cli("init", "demo", cwd=tmp_path)
    repo = tmp_path / "demo"
    run_cli("apply", cwd=repo)
    bad = repo / "data" / "driver_stats_bad.parquet"  # holds two duplicated rows
    proc = run_cli("ingest", "driver_stats", str(bad), "--mode", "drop_invalid",
                   "--duplicates", "keep_last", cwd=repo)
    assert "2 superseded by a later duplicate (dropped)" in proc.stdout
    out = json.loads(run_cli("ingest", "driver_stats", str(bad), "--mode", "drop_invalid",
                             "--duplicates", "keep_last", "--json", cwd=repo).stdout)
    report = out["validation"]
    assert report["rows_superseded"] == 2 and report["duplicates"] == "keep_last"
    rules = {r["rule"]: r["failed"] for r in report["rules"]}
    assert rules["unique_key"] == 0
    assert out["row_count"] + out["rejected_count"] + 2 == 62
