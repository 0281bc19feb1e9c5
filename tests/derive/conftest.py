"""Fixtures for derived views: a store per engine, a parent view and its derivations."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pyarrow as pa
import pytest

from featureledger import Entity, FeatureStore, FeatureView, Field
from featureledger.model.definitions import Transformation

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
US = 1_000_000

DRIVER = Entity(name="driver", join_keys={"driver_id": "int64"})
TRIPS = FeatureView(name="trips", entities=["driver"], fields=[
    Field(name="km", dtype="float64"), Field(name="minutes", dtype="int64")])
SQL = ("SELECT driver_id, event_timestamp, km * 2 AS km2, minutes IS NULL AS no_minutes "
       "FROM trips WHERE driver_id <> 3")
PYTHON = '''
import pyarrow
import pyarrow.compute as pc

def transform(trips, params):
    kept = trips.filter(pc.not_equal(trips["driver_id"], params["skip"]))
    return pyarrow.table({
        "driver_id": kept["driver_id"], "event_timestamp": kept["event_timestamp"],
        "km2": pc.multiply(kept["km"], 2.0), "no_minutes": pc.is_null(kept["minutes"])})
'''
DERIVED_FIELDS = [Field(name="km2", dtype="float64"), Field(name="no_minutes", dtype="bool")]


def derived_view(name: str = "fast", language: str = "sql", parents: list[str] | None = None,
                 code: str | None = None, **extra: Any) -> FeatureView:
    if language == "sql":
        t = Transformation(language="sql", parents=parents or ["trips"], code=code or SQL)
    else:
        t = Transformation(language="python", parents=parents or ["trips"],
                           code=code or PYTHON, imports=["pyarrow"], params={"skip": 3})
    return FeatureView(name=name, entities=["driver"], fields=DERIVED_FIELDS,
                       transformation=t, **extra)


def table(rows: list[tuple[int, int, float | None, int | None]]) -> pa.Table:
    """(driver_id, µs after T0, km, minutes) rows as an input table."""
    base = int(T0.timestamp() * US)
    return pa.table({
        "driver_id": pa.array([r[0] for r in rows], pa.int64()),
        "event_timestamp": pa.array([base + r[1] for r in rows], pa.timestamp("us", tz="UTC")),
        "km": pa.array([r[2] for r in rows], pa.float64()),
        "minutes": pa.array([r[3] for r in rows], pa.int64()),
    })


@pytest.fixture
def store(tmp_path, duckdb_engine):
    s = FeatureStore(tmp_path, offline_engine=duckdb_engine)
    s.apply([DRIVER, TRIPS, derived_view()])
    yield s
    s.close()
