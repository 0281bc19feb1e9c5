"""Request-time features: the same inputs give identical values online and in historical
retrieval, for SQL (run in the sandbox) and Python source alike, checked against values
worked out by hand; bad definitions and unsafe SQL are refused."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

from featureledger import (
    Aggregation,
    Entity,
    FeatureStore,
    FeatureView,
    Field,
    RequestFeatureView,
)
from featureledger.errors import DefinitionError, RetrievalError

UTC = dt.UTC
B = dt.datetime(2024, 3, 1, tzinfo=UTC)
TS = pa.timestamp("us", tz="UTC")
PY = """
import pandas as pd

def transform(df):
    ratio = df["fare_sum_1h"] / df["km"]
    return pd.DataFrame({"per_km_py": ratio, "long_trip": df["km"] > 5})
"""


@pytest.fixture
def store(tmp_path):
    s = FeatureStore(tmp_path)
    rider = Entity(name="rider", join_keys={"rider_id": "int64"})
    trips = FeatureView(
        name="trips", entities=[rider],
        fields=[Field(name="fare", dtype="float64"), Field(name="n", dtype="int64")],
        aggregations=[Aggregation(column="fare", function="sum", window="1h")])
    sql = RequestFeatureView(
        name="quote", inputs=["trips:fare_sum_1h", "trips:n"], request_schema={"km": "float64"},
        fields=[Field(name="per_km", dtype="float64"), Field(name="busy", dtype="bool")],
        sql={"per_km": "fare_sum_1h / nullif(km, 0)", "busy": "coalesce(n, 0) > 2"})
    py = RequestFeatureView(
        name="quote_py", inputs=["trips:fare_sum_1h"], request_schema={"km": "float64"},
        fields=[Field(name="per_km_py", dtype="float64"), Field(name="long_trip", dtype="bool")],
        python=PY)
    s.apply([rider, trips, sql, py])
    s.ingest("trips", pa.table({
        "rider_id": pa.array([1, 1, 1, 2], pa.int64()),
        "event_timestamp": pa.array([B + dt.timedelta(minutes=x) for x in (0, 30, 90, 0)], TS),
        "fare": [1.0, 2.0, 4.0, 8.0], "n": pa.array([1, 2, 3, 4], pa.int64())}))
    yield s
    s.close()


REFS = ["quote:per_km", "quote:busy", "quote_py:per_km_py", "quote_py:long_trip"]


def test_online_and_offline_give_identical_values(store):
    at = B + dt.timedelta(minutes=100)
    riders, km = [1, 2, 3, 1], [2.0, 0.0, 1.0, 8.0]
    ds = store.get_historical_features(
        pa.table({"rider_id": pa.array(riders, pa.int64()),
                  "event_timestamp": pa.array([at] * 4, TS), "km": km}), REFS)
    offline = ds.to_arrow()
    store.materialize(end=at)
    online = store.get_online_features(REFS, [{"rider_id": r} for r in riders],
                                       request_data={"km": km})
    # by hand: rider 1's window (00:40, 01:40] holds 4.0; rider 2's holds nothing
    want = {"per_km": [2.0, None, None, 0.5], "busy": [True, True, False, True],
            "per_km_py": [2.0, None, None, 0.5], "long_trip": [False, False, False, True]}
    for name, values in want.items():
        assert offline.column(name).to_pylist() == values, name
        assert online.to_dict()[name] == values, name
    assert [s.value for s in online.statuses["per_km"]] == ["PRESENT", "NULL", "NULL",
                                                           "PRESENT"]
    assert online.references["per_km"] == "quote@1:per_km"
    assert "quote@1:per_km" in ds.manifest["features"]
    assert store.reproduce(ds.id).manifest["content_hash"] == ds.manifest["content_hash"]


def test_one_request_value_serves_every_row_and_a_missing_one_is_named(store):
    got = store.get_online_features(["quote:per_km"], [{"rider_id": 1}, {"rider_id": 2}],
                                    request_data={"km": 4.0})
    assert got.to_dict()["per_km"] == [None, None]  # nothing materialized yet
    with pytest.raises(RetrievalError, match="request value 'km'"):
        store.get_online_features(["quote:per_km"], [{"rider_id": 1}])


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"sql": {"x": "read_text('/etc/passwd')"}}, "refused"),
    ({"sql": {"x": "(SELECT 1)"}}, "refused"),
])
def test_unsafe_sql_is_refused_before_it_runs(store, kwargs, message):
    rv = RequestFeatureView(name="bad", inputs=["trips:n"], fields=[
        Field(name="x", dtype="int64")], **kwargs)
    store.apply([rv])
    with pytest.raises(DefinitionError, match=message):
        store.get_online_features(["bad:x"], [{"rider_id": 1}])


@pytest.mark.parametrize(("kwargs", "message"), [
    ({}, "exactly one"),
    ({"python": "def transform(df) return df"}, "does not compile"),
    ({"sql": {"y": "n"}}, "one expression per field"),
])
def test_malformed_request_views_are_refused(kwargs, message):
    with pytest.raises(DefinitionError, match=message):
        RequestFeatureView(name="bad", inputs=["trips:n"],
                           fields=[Field(name="x", dtype="int64")], **kwargs)


def test_request_views_in_a_feature_set_are_pinned_like_views(store):
    """A feature set lists request-time features; apply pins them to the request view's
    version, and a new version of the request view does not move the set."""
    from featureledger import FeatureSet

    store.apply([FeatureSet(name="pricing", features=["quote:per_km", "trips:fare_sum_1h"])])
    assert store.registry.definitions.get("feature_set", "pricing").definition.features == [
        "quote@1:per_km", "trips@1:fare_sum_1h"]
    at = B + dt.timedelta(minutes=100)
    ents = pa.table({"rider_id": pa.array([1, 2], pa.int64()),
                     "event_timestamp": pa.array([at] * 2, TS), "km": [2.0, 1.0]})
    ds = store.get_historical_features(ents, feature_set="pricing")
    assert ds.to_arrow().column("per_km").to_pylist() == [2.0, None]
    assert "quote@1:per_km" in ds.manifest["features"]
    store.materialize(end=at)
    online = store.get_online_features(entity_rows=[{"rider_id": 1}, {"rider_id": 2}],
                                       feature_set="pricing", request_data={"km": [2.0, 1.0]})
    assert online.to_dict()["per_km"] == [2.0, None]
    # a new version of the request view (another formula) leaves the pinned set alone
    store.apply([RequestFeatureView(
        name="quote", inputs=["trips:fare_sum_1h", "trips:n"],
        request_schema={"km": "float64"},
        fields=[Field(name="per_km", dtype="float64"), Field(name="busy", dtype="bool")],
        sql={"per_km": "2 * fare_sum_1h / nullif(km, 0)", "busy": "coalesce(n, 0) > 2"})])
    again = store.get_historical_features(ents, feature_set="pricing")
    assert again.to_arrow().column("per_km").to_pylist() == [2.0, None]
    newest = store.get_historical_features(ents, ["quote:per_km"])
    assert newest.to_arrow().column("per_km").to_pylist() == [4.0, None]
    from featureledger.errors import UnknownFeatureError

    with pytest.raises(UnknownFeatureError, match="no field 'nope'"):
        store.apply([FeatureSet(name="bad", features=["quote:nope"])])


def test_inputs_appear_only_when_asked_for(store):
    """A request view's input features are read to compute it, and left out of the
    result unless they are asked for themselves; reproduce gives the same columns."""
    at = B + dt.timedelta(minutes=100)
    ents = pa.table({"rider_id": pa.array([1, 2], pa.int64()),
                     "event_timestamp": pa.array([at] * 2, TS), "km": [2.0, 1.0]})
    ds = store.get_historical_features(ents, ["quote:per_km"])
    assert ds.to_arrow().column_names == ["rider_id", "event_timestamp", "km", "per_km"]
    assert ds.manifest["features"] == ["quote@1:per_km"]
    assert ds.to_arrow().column("per_km").to_pylist() == [2.0, None]
    assert store.reproduce(ds.id).manifest["content_hash"] == ds.manifest["content_hash"]
    both = store.get_historical_features(ents, ["quote:per_km", "trips:n"])
    assert both.to_arrow().column_names == ["rider_id", "event_timestamp", "km", "n",
                                            "per_km"]
    store.materialize(end=at)
    rows = [{"rider_id": 1}, {"rider_id": 2}]
    online = store.get_online_features(["quote:per_km"], rows, request_data={"km": [2.0, 1.0]})
    assert list(online.to_dict()) == ["rider_id", "per_km"]
    assert online.to_dict()["per_km"] == [2.0, None]
    asked = store.get_online_features(["trips:n", "quote:per_km"], rows,
                                      request_data={"km": [2.0, 1.0]})
    assert list(asked.to_dict()) == ["rider_id", "n", "per_km"]
    assert asked.to_dict()["n"] == [3, 4]
