"""Every constraint kind, checked on exact values: counts, sample rows, reasons."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featureledger import FeatureView, Field, RowCheck
from featureledger.errors import IngestionError
from featureledger.ingest import conform, validate

UTC = dt.UTC
T0 = dt.datetime(2024, 1, 1, tzinfo=UTC)


def base_rows(n: int) -> dict:
    return {
        "driver_id": list(range(n)),
        "event_timestamp": [T0 + dt.timedelta(hours=i) for i in range(n)],
        "n": [1] * n,
        "min_fare": [1.0] * n,
        "max_fare": [2.0] * n,
        "score": pa.array([0.5] * n, pa.float32()),
        "city": ["ams"] * n,
        "code": ["AB1"] * n,
    }


def run(view: FeatureView, rows: dict, keep: np.ndarray | None = None):
    table = pa.table(rows)
    numbers = np.arange(table.num_rows) if keep is None else keep
    conformed = conform(table, view)
    return validate(conformed, view, raw=table, row_numbers=numbers, mode="drop_invalid")


def failed(outcome, rule: str) -> tuple[int, list[int]]:
    r = outcome.report.rule(rule)
    return r.failed, [s["row"] for s in r.sample]


def test_clean_rows_pass_every_rule(make_view) -> None:
    out = run(make_view(), base_rows(6))
    assert out.bad is None and out.reasons is None
    assert out.report.ok and out.report.rows_valid == 6
    rules = {r.rule for r in out.report.rules}
    assert rules == {"not_null:driver_id", "not_null:event_timestamp", "not_null:n",
                     "range:n", "range:score", "allowed_values:city", "regex:code",
                     "nan:min_fare", "nan:max_fare", "nan:score", "check:fares", "unique_key"}
    assert all(r.failed == 0 and r.sample == [] for r in out.report.rules)


def test_range_inclusive_bounds_and_nan(make_view) -> None:
    rows = base_rows(7)
    rows["n"] = [0, 100, -1, 101, 50, None, 7]
    rows["score"] = pa.array([0.0, 1.0, float("nan"), 1.5, -0.25, None, 0.75], pa.float32())
    out = run(make_view(), rows)
    assert failed(out, "range:n") == (2, [2, 3])
    # NaN is reported once, as NaN, not also as out of range
    assert failed(out, "range:score") == (2, [3, 4])
    assert failed(out, "nan:score") == (1, [2])
    assert failed(out, "not_null:n") == (1, [5])
    sample = out.report.rule("range:n").sample
    assert sample == [{"row": 2, "values": {"n": -1}}, {"row": 3, "values": {"n": 101}}]
    assert out.bad.tolist() == [False, False, True, True, True, True, False]


def nan_view(allow_nan: bool) -> FeatureView:
    return FeatureView(name="v", entities=["driver"], join_keys={"driver_id": "int64"},
                       fields=[Field(name="x", dtype="float64", min=0, max=10,
                                     allowed_values=[1.0, 2.0, 20.0], allow_nan=allow_nan),
                               Field(name="xs", dtype="list<float32>", allow_nan=allow_nan)])


NAN_ROWS = {
    "driver_id": [0, 1, 2, 3, 4, 5],
    "event_timestamp": [T0 + dt.timedelta(hours=i) for i in range(6)],
    "x": [1.0, float("nan"), float("inf"), -float("inf"), None, 20.0],
    "xs": pa.array([[1.0], [None, float("nan")], None, [], [float("-inf")], [2.0]],
                   pa.list_(pa.float32())),
}


def test_nan_and_inf_fail_a_field_that_does_not_allow_them() -> None:
    out = run(nan_view(False), NAN_ROWS)
    rule = out.report.rule("nan:x")
    assert (rule.failed, [s["row"] for s in rule.sample]) == (3, [1, 2, 3])
    assert rule.detail == ("NaN not allowed; set allow_nan=True or clean the value "
                           "(±inf likewise)")
    assert [s["values"] for s in rule.sample] == [{"x": "nan"}, {"x": "inf"}, {"x": "-inf"}]
    # a list fails when any element is not finite
    assert failed(out, "nan:xs") == (2, [1, 4])
    # each bad value under one rule: non-finite values are not also out of range
    assert failed(out, "range:x") == (1, [5])
    assert failed(out, "allowed_values:x") == (0, [])
    assert out.reasons.to_pylist() == [["nan:x", "nan:xs"], ["nan:x"], ["nan:x"],
                                       ["nan:xs"], ["range:x"]]


def test_allow_nan_stores_nan_and_compares_inf_with_the_range() -> None:
    out = run(nan_view(True), NAN_ROWS)
    assert not any(r.rule.startswith("nan:") for r in out.report.rules)
    # NaN is neither inside nor outside [0, 10]; ±inf are numbers outside it
    assert failed(out, "range:x") == (3, [2, 3, 5])
    # NaN passes allowed values as a null does; inf is not among them
    assert failed(out, "allowed_values:x") == (2, [2, 3])
    assert out.bad.tolist() == [False, False, True, True, False, True]


def test_float32_range_compares_exact_value() -> None:
    view = FeatureView(name="v", entities=["driver"], join_keys={"driver_id": "int64"},
                       fields=[Field(name="x", dtype="float32", max=0.1)])
    rows = {"driver_id": [1, 2], "event_timestamp": [T0, T0],
            "x": pa.array([0.1, 0.0999], pa.float32())}
    out = run(view, rows)
    # float32(0.1) is 0.10000000149..., above the bound 0.1
    assert failed(out, "range:x") == (1, [0])


def test_allowed_values_and_regex_ignore_nulls(make_view) -> None:
    rows = base_rows(6)
    rows["city"] = ["ams", "ber", "par", None, "AMS", "ams"]
    rows["code"] = ["AB1", "ab1", None, "AB12", "XY9", "AB1 "]
    out = run(make_view(), rows)
    assert failed(out, "allowed_values:city") == (2, [2, 4])
    # the regex must match the whole value
    assert failed(out, "regex:code") == (3, [1, 3, 5])
    reasons = dict(zip(np.flatnonzero(out.bad).tolist(), out.reasons.to_pylist(), strict=True))
    assert reasons == {1: ["regex:code"], 2: ["allowed_values:city"], 3: ["regex:code"],
                       4: ["allowed_values:city"], 5: ["regex:code"]}


def test_not_null_on_keys_and_timestamp(make_view) -> None:
    rows = base_rows(4)
    rows["driver_id"] = [1, None, 3, 4]
    rows["event_timestamp"] = [T0, T0, None, T0]
    out = run(make_view(), rows)
    assert failed(out, "not_null:driver_id") == (1, [1])
    assert failed(out, "not_null:event_timestamp") == (1, [2])
    # rows with a null key are left to not_null, not counted as duplicates
    assert failed(out, "unique_key") == (0, [])


def test_duplicate_keys_flag_every_row_of_the_group(make_view) -> None:
    rows = base_rows(6)
    rows["driver_id"] = [1, 1, 2, 1, 3, 2]
    t1 = T0 + dt.timedelta(hours=1)
    rows["event_timestamp"] = [T0, t1, T0, T0, T0, T0]
    out = run(make_view(), rows)
    # (1, T0) at rows 0 and 3; (2, T0) at rows 2 and 5
    assert failed(out, "unique_key") == (4, [0, 2, 3, 5])
    assert out.report.rule("unique_key").sample[0]["values"] == {
        "driver_id": 1, "event_timestamp": "2024-01-01T00:00:00+00:00"}


def test_duplicates_include_created_timestamp_when_declared(make_view) -> None:
    view = make_view(created_timestamp_field="created")
    rows = base_rows(3)
    rows["driver_id"] = [1, 1, 1]
    rows["event_timestamp"] = [T0, T0, T0]
    rows["created"] = [T0, T0 + dt.timedelta(seconds=1), T0]
    out = run(view, rows)
    assert failed(out, "unique_key") == (2, [0, 2])


def test_row_check_cross_field_and_null_policy(make_view) -> None:
    rows = base_rows(5)
    rows["min_fare"] = [1.0, 3.0, None, 2.0, 2.0]
    rows["max_fare"] = [2.0, 2.0, 1.0, None, 2.0]
    out = run(make_view(), rows)
    # NULL results pass because the nullable fields it reads are null
    assert failed(out, "check:fares") == (1, [1])
    assert out.report.rule("check:fares").sample[0]["values"] == {"min_fare": 3.0,
                                                                   "max_fare": 2.0}


def test_row_check_null_result_without_null_inputs_fails() -> None:
    view = FeatureView(name="v", entities=["driver"], join_keys={"driver_id": "int64"},
                       fields=[Field(name="a", dtype="int64", nullable=False),
                               Field(name="b", dtype="int64", nullable=False)],
                       checks=[RowCheck(name="ratio", expr="a / NULLIF(b, 0) > 1")])
    rows = {"driver_id": [1, 2, 3], "event_timestamp": [T0] * 3, "a": [4, 4, 1],
            "b": [2, 0, 2]}
    out = run(view, rows)
    assert failed(out, "check:ratio") == (2, [1, 2])


def test_bad_row_check_is_a_clear_error(make_view) -> None:
    view = make_view(checks=[RowCheck(name="broken", expr="no_such_column > 1")])
    with pytest.raises(IngestionError, match=r"row check 'broken': 'no_such_column > 1' names "
                                             r"column.s. 'no_such_column', which are not"):
        run(view, base_rows(2))


def test_sample_rows_keep_input_row_numbers_after_a_filter(make_view) -> None:
    rows = base_rows(3)
    rows["n"] = [5, -5, 500]
    out = run(make_view(), rows, keep=np.array([10, 12, 17]))
    assert failed(out, "range:n") == (2, [12, 17])


def test_sample_is_capped_but_count_is_exact(make_view) -> None:
    rows = base_rows(40)
    rows["n"] = [-1] * 40
    out = run(make_view(), rows)
    assert failed(out, "range:n") == (40, [0, 1, 2, 3, 4])


def test_report_round_trips_and_summarises(make_view) -> None:
    from featureledger.ingest import ValidationReport

    rows = base_rows(3)
    rows["n"] = [1, 200, 3]
    report = run(make_view(), rows).report
    again = ValidationReport.from_dict(report.to_dict())
    assert again.to_dict() == report.to_dict()
    assert report.summary() == "  range:n (0 <= n <= 100): 1 row(s), e.g. row 1 n=200"


# -- against a row-by-row oracle ------------------------------------------------------------

ROW = st.fixed_dictionaries({
    "driver_id": st.integers(0, 3),
    "hour": st.integers(0, 3),
    "n": st.one_of(st.none(), st.integers(-3, 103)),
    "min_fare": st.one_of(st.none(), st.floats(0, 10, width=32)),
    "max_fare": st.one_of(st.none(), st.floats(0, 10, width=32)),
    "score": st.one_of(st.none(), st.floats(-0.5, 1.5, width=32),
                       st.sampled_from([float("nan"), float("inf"), -float("inf")])),
    "city": st.sampled_from(["ams", "ber", "par", None]),
    "code": st.sampled_from(["AB1", "ab1", "XY22", None]),
})


def oracle_reasons(rows: list[dict]) -> list[list[str]]:
    """The failed rules of each row, in the report's rule order, by plain Python."""
    import math
    import re
    from collections import Counter

    groups = Counter((r["driver_id"], r["hour"]) for r in rows)
    out = []
    for r in rows:
        reasons = []
        if r["n"] is None:
            reasons.append("not_null:n")
        if r["n"] is not None and not 0 <= r["n"] <= 100:
            reasons.append("range:n")
        s = r["score"]
        if s is not None and not math.isfinite(s):
            reasons.append("nan:score")
        elif s is not None and not 0.0 <= s <= 1.0:
            reasons.append("range:score")
        if r["city"] is not None and r["city"] not in ("ams", "ber"):
            reasons.append("allowed_values:city")
        if r["code"] is not None and not re.fullmatch(r"[A-Z]{2}\d", r["code"]):
            reasons.append("regex:code")
        if r["min_fare"] is not None and r["max_fare"] is not None \
                and not r["min_fare"] <= r["max_fare"]:
            reasons.append("check:fares")
        if groups[(r["driver_id"], r["hour"])] > 1:
            reasons.append("unique_key")
        out.append(reasons)
    return out


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(ROW, min_size=1, max_size=25))
def test_validation_matches_a_row_by_row_oracle(make_view, rows) -> None:
    table = {
        "driver_id": [r["driver_id"] for r in rows],
        "event_timestamp": [T0 + dt.timedelta(hours=r["hour"]) for r in rows],
        **{k: [r[k] for r in rows] for k in ("n", "min_fare", "max_fare", "city", "code")},
        "score": pa.array([r["score"] for r in rows], pa.float32()),
    }
    out = run(make_view(), table)
    expected = oracle_reasons(rows)
    got = [[] for _ in rows]
    if out.bad is not None:
        for pos, reasons in zip(np.flatnonzero(out.bad), out.reasons.to_pylist(), strict=True):
            got[pos] = reasons
    assert got == expected
    counts = {r.rule: r.failed for r in out.report.rules}
    for rule in counts:
        assert counts[rule] == sum(rule in e for e in expected)
    assert out.report.rows_rejected == sum(bool(e) for e in expected)
