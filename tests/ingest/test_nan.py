"""NaN and ±inf on the whole path: refused unless allowed, then kept everywhere.

A field with ``allow_nan=False`` (the default) refuses NaN and ±inf at ingestion and push;
with ``allow_nan=True`` a stored NaN comes back as NaN from the commit files, point-in-time
retrieval, window reads, ``to_pandas``, materialization and online reads. pandas float
columns write a missing value as NaN, so there NaN is null unless the field allows NaN.
"""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from featureledger import Entity, FeatureView, Field
from featureledger.errors import ValidationFailedError
from helpers import read_commit, snapshot

UTC = dt.UTC
T0 = dt.datetime(2024, 1, 1, tzinfo=UTC)
SENSOR = Entity(name="sensor", join_keys={"sensor_id": "int64"})
NAN, INF = float("nan"), float("inf")


def readings(allow_nan: bool, **field_options) -> FeatureView:
    return FeatureView(name="readings", entities=[SENSOR], fields=[
        Field(name="value", dtype="float64", allow_nan=allow_nan, **field_options),
        Field(name="series", dtype="list<float32>", allow_nan=allow_nan),
        Field(name="label", dtype="string")])


def rows() -> pa.Table:
    return pa.table({
        "sensor_id": pa.array([1, 2, 3, 4], pa.int64()),
        "event_timestamp": pa.array([T0] * 4, pa.timestamp("us", tz="UTC")),
        "value": [NAN, INF, -INF, None],
        "series": pa.array([[NAN, 1.0], [None], [-INF], None], pa.list_(pa.float32())),
        "label": ["a", "b", "c", "d"]})


def same(got: list, expected: list) -> bool:
    """Equal, with NaN equal to NaN and None kept apart from NaN."""
    if len(got) != len(expected):
        return False
    for g, e in zip(got, expected, strict=True):
        if isinstance(e, list):
            if not isinstance(g, list) or not same(g, e):
                return False
        elif isinstance(e, float) and math.isnan(e):
            if not (isinstance(g, float) and math.isnan(g)):
                return False
        elif g != e:
            return False
    return True


@pytest.fixture
def make(store_factory, sqlite_url):
    def build(view: FeatureView):
        store = store_factory(sqlite_url)
        store.apply([SENSOR, view])
        return store
    return build


def test_refused_nan_names_row_and_field_and_leaves_the_store_as_it_was(make) -> None:
    store = make(readings(False))
    before = snapshot(store)
    with pytest.raises(ValidationFailedError) as exc:
        store.ingest("readings", rows())
    msg = str(exc.value)
    assert "nan:value (NaN not allowed; set allow_nan=True or clean the value" in msg
    assert "3 row(s), e.g. row 0 value='nan'; row 1 value='inf'; row 2 value='-inf'" in msg
    assert "nan:series" in msg
    assert snapshot(store) == before
    # the push path refuses it too, before anything is online
    with pytest.raises(ValidationFailedError, match=r"nan:value"):
        store.push("readings", [{"sensor_id": 9, "event_timestamp": T0, "value": NAN}])
    assert store.get_online_features(["readings:value"], [{"sensor_id": 9}]).values == {
        "value": [None]}


def test_allowed_nan_and_inf_are_kept_on_every_read_path(make) -> None:
    store = make(readings(True))
    commit = store.ingest("readings", rows()).commit
    values = [NAN, INF, -INF, None]
    series = [[NAN, 1.0], [None], [-INF], None]
    stored = read_commit(store, commit)
    assert same(stored.column("value").to_pylist(), values)
    assert same(stored.column("series").to_pylist(), series)
    assert commit.profile["columns"]["value"]["nulls"] == 1

    entities = {"sensor_id": [1, 2, 3, 4], "event_timestamp": [T0 + dt.timedelta(hours=1)] * 4}
    ds = store.get_historical_features(entities, ["readings:value", "readings:series"])
    got = ds.to_arrow()
    assert same(got.column("value").to_pylist(), values)
    assert same(got.column("series").to_pylist(), series)
    frame = ds.to_pandas()
    # NaN stays NaN and null stays missing: the two are not merged
    assert np.isnan(frame["value"].iloc[0]) and frame["value"].iloc[1] == INF
    assert frame["value"].isna().tolist() == [False, False, False, True]
    assert store.reproduce(ds.id).content_hash == ds.content_hash

    window = store.get_features_in_window("readings", T0, T0 + dt.timedelta(hours=1))
    assert same(window.sort_by("sensor_id").column("value").to_pylist(), values)

    store.materialize(end=T0 + dt.timedelta(hours=1))
    online = store.get_online_features(["readings:value", "readings:series"],
                                       [{"sensor_id": i} for i in (1, 2, 3, 4)])
    assert same(online.values["value"], values) and same(online.values["series"], series)

    store.push("readings", [{"sensor_id": 7, "event_timestamp": T0, "value": NAN,
                             "series": [INF]}], flush=True)
    pushed = store.get_online_features(["readings:value", "readings:series"],
                                       [{"sensor_id": 7}])
    assert same(pushed.values["value"], [NAN]) and same(pushed.values["series"], [[INF]])


def test_pandas_nan_is_null_unless_the_field_allows_nan(make) -> None:
    frame = pd.DataFrame({
        "sensor_id": [1, 2, 3], "event_timestamp": [T0] * 3,
        "value": [1.5, np.nan, np.nan], "label": ["a", "b", "c"]})
    store = make(readings(False))
    commit = store.ingest("readings", frame).commit
    stored = read_commit(store, commit)
    assert stored.column("value").to_pylist() == [1.5, None, None]
    steps = [s for s in commit.steps if s["step"] == "nan_as_null"]
    assert steps == [{"step": "nan_as_null", "column": "value", "params": {
        "values": 2, "why": "the input writes a missing value as NaN"}}]
    # renamed by the column map, the reading follows the column
    commit = store.ingest("readings", frame.rename(columns={"value": "v"}),
                          column_map={"v": "value"}).commit
    assert [s["column"] for s in commit.steps if s["step"] == "nan_as_null"] == ["value"]


def test_pandas_nan_is_a_value_where_nan_is_allowed(make) -> None:
    store = make(readings(True))
    frame = pd.DataFrame({
        "sensor_id": [1, 2, 3], "event_timestamp": [T0] * 3,
        "value": [1.5, np.nan, np.inf],
        # a masked column says which values are missing, whatever the field allows
        "label": pd.array(["a", None, "c"], dtype="string")})
    commit = store.ingest("readings", frame).commit
    stored = read_commit(store, commit)
    assert same(stored.column("value").to_pylist(), [1.5, NAN, INF])
    assert stored.column("label").to_pylist() == ["a", None, "c"]
    assert not [s for s in commit.steps if s["step"] == "nan_as_null"]
    missing = pd.DataFrame({"sensor_id": [4], "event_timestamp": [T0],
                            "value": pd.array([None], dtype="Float64"), "label": ["d"]})
    commit = store.ingest("readings", missing).commit
    assert read_commit(store, commit).column("value").to_pylist() == [None]


def test_pandas_nan_in_a_required_field_is_a_missing_value(make) -> None:
    store = make(readings(False, nullable=False))
    frame = pd.DataFrame({"sensor_id": [1, 2], "event_timestamp": [T0] * 2,
                          "value": [1.0, np.nan], "label": ["a", "b"]})
    with pytest.raises(ValidationFailedError, match=r"not_null:value .*1 row\(s\), e\.g\. row 1"):
        store.ingest("readings", frame)


@pytest.mark.parametrize("allow_nan", [False, True])
def test_csv_nan_text_follows_the_field(make, allow_nan) -> None:
    store = make(readings(allow_nan))
    path = store.config.root / "r.csv"  # input files are read from the repository
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("sensor_id,event_timestamp,value,label\n"
                    "1,2024-01-01T00:00:00Z,NaN,NaN\n"
                    "2,2024-01-01T00:00:00Z,,b\n"
                    "3,2024-01-01T00:00:00Z,2.5,\n")
    commit = store.ingest("readings", str(path)).commit
    stored = read_commit(store, commit)
    # an empty cell is null; "NaN" is NaN where the field allows it, a missing value where not
    assert same(stored.column("value").to_pylist(), [NAN if allow_nan else None, None, 2.5])
    assert stored.column("label").to_pylist() == ["NaN", "b", ""]  # text stays text
    assert [s["params"]["values"] for s in commit.steps if s["step"] == "nan_as_null"] == (
        [] if allow_nan else [1])
