"""TrainingDataset.to_pandas keeps every declared type, with missing values as <NA>."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pyarrow as pa
import pytest

from featureledger import Entity, FeatureStore, FeatureView, Field
from featureledger.config import ProjectConfig

UTC = dt.UTC
T0 = dt.datetime(2024, 1, 1, tzinfo=UTC)
CAR = Entity(name="car", join_keys={"car_id": "int64"})
VIEW = FeatureView(name="cars", entities=[CAR], fields=[
    Field(name="seats", dtype="int64", nullable=False),
    Field(name="doors", dtype="int32"),
    Field(name="electric", dtype="bool", nullable=False),
    Field(name="model", dtype="string", nullable=False),
    Field(name="range_km", dtype="float64"),
    Field(name="options", dtype="list<int64>"),
    Field(name="built", dtype="date"),
    Field(name="serviced", dtype="timestamp"),
    Field(name="vin", dtype="bytes"),
])


@pytest.fixture
def store(tmp_path, sqlite_url):
    s = FeatureStore(tmp_path, config=ProjectConfig(registry=sqlite_url, root=tmp_path))
    s.apply([CAR, VIEW])
    s.ingest("cars", pa.table({
        "car_id": [1, 2], "event_timestamp": pa.array([T0, T0], pa.timestamp("us", tz="UTC")),
        "seats": [5, 2], "doors": pa.array([5, None], pa.int32()), "electric": [True, False],
        "model": ["estate", "roadster"], "range_km": [410.5, None],
        "options": [[1, 7], None], "built": [dt.date(2020, 5, 1), None],
        "serviced": pa.array([T0 - dt.timedelta(days=3), None], pa.timestamp("us", tz="UTC")),
        "vin": [b"\x01\x02", None]}))
    yield s
    s.close()


def test_declared_types_survive_to_pandas_with_unmatched_rows(store) -> None:
    # car 3 has no feature row: every feature is missing there, the non-nullable ones too
    entities = pd.DataFrame({"car_id": [1, 2, 3], "event_timestamp": [T0] * 3,
                             "label": [True, False, True]})
    refs = [f"cars:{f.name}" for f in VIEW.fields]
    frame = store.get_historical_features(entities, refs).to_pandas()
    dtypes = {c: str(frame[c].dtype) for c in frame.columns}
    assert dtypes == {
        "car_id": "int64[pyarrow]", "event_timestamp": "timestamp[us, tz=UTC][pyarrow]",
        "label": "bool[pyarrow]", "seats": "int64[pyarrow]", "doors": "int32[pyarrow]",
        "electric": "bool[pyarrow]", "model": "string[pyarrow]",
        "range_km": "double[pyarrow]", "options": "list<item: int64>[pyarrow]",
        "built": "date32[day][pyarrow]", "serviced": "timestamp[us, tz=UTC][pyarrow]",
        "vin": "binary[pyarrow]"}
    assert frame["seats"].tolist()[:2] == [5, 2] and frame["seats"].isna().tolist() == [
        False, False, True]
    assert isinstance(frame["seats"].iloc[0], int)  # not 5.0
    assert frame["doors"].isna().tolist() == [False, True, True]
    assert frame["electric"].tolist()[:2] == [True, False]
    assert frame["model"].tolist()[:2] == ["estate", "roadster"]
    assert frame["options"].iloc[0] == [1, 7]
    assert frame["built"].iloc[0] == dt.date(2020, 5, 1)
    assert frame["vin"].iloc[0] == b"\x01\x02"
    # NumPy-backed columns stay one call away, with the old float64 for a missing int
    numpy_frame = store.get_historical_features(entities, ["cars:seats"]).to_arrow().to_pandas()
    assert str(numpy_frame["seats"].dtype) == "float64"


def test_a_fully_matched_integer_feature_converts_to_numpy_ints(store) -> None:
    entities = pd.DataFrame({"car_id": [1, 2], "event_timestamp": [T0] * 2})
    frame = store.get_historical_features(entities, ["cars:seats", "cars:electric"]).to_pandas()
    assert frame["seats"].to_numpy().dtype == "int64"
    assert frame[["seats"]].to_numpy().tolist() == [[5], [2]]
    assert frame["electric"].to_numpy().dtype == bool
