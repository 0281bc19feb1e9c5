"""A served feature store with data in it, and a test client for it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest

from featureledger import Entity, FeatureSet, FeatureView, Field
from featureledger.config import load_config
from featureledger.store import FeatureStore

TOKEN = "s3cret-token"
T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


@pytest.fixture
def served_store(tmp_path, write_commit) -> Iterator[FeatureStore]:
    cfg = load_config(tmp_path, environ={}, overrides={
        "online_store": {"type": "sqlite", "path": str(tmp_path / "online.db")},
        "serving": {"cache": True, "poll_interval_s": 0},
        "server": {"tokens": {TOKEN: "alice"}},
    })
    store = FeatureStore(tmp_path, config=cfg)
    driver = Entity(name="driver", join_keys={"driver_id": "int64"})
    store.apply([
        driver,
        FeatureView(name="driver_stats", entities=[driver], fields=[
            Field(name="trips", dtype="int64"), Field(name="rating", dtype="float64"),
            Field(name="seen", dtype="timestamp")]),
        FeatureSet(name="ranker", features=["driver_stats:trips", "driver_stats:rating"]),
    ])
    write_commit(store, "driver_stats", {
        "driver_id": [1, 2],
        "event_timestamp": [T0, T0],
        "trips": [10, 20], "rating": [4.5, None], "seen": [T0, None]})
    store.materialize(end=T0 + dt.timedelta(hours=1))
    yield store
    store.close()


@pytest.fixture
def client(served_store) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    from featureledger.server.app import create_app

    with TestClient(create_app(served_store)) as c:
        c.headers["Authorization"] = f"Bearer {TOKEN}"
        yield c
