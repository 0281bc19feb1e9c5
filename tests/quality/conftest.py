"""Fixtures of the quality tests: a store on a temporary repository and synthetic data."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from featureledger import Entity, FeatureView, Field
from featureledger.config import load_config
from featureledger.store import FeatureStore

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
DRIVER = Entity(name="driver", join_keys={"driver_id": "int64"})
CATS = ["a", "b", "c", "d"]


def stats_view(**changes: Any) -> FeatureView:
    fields = changes.pop("fields", None) or [
        Field(name="x", dtype="float64", nullable=True),
        Field(name="c", dtype="string", nullable=True),
    ]
    return FeatureView(name="stats", entities=[DRIVER], fields=fields, **changes)


def batch(seed: int, *, hours: float, n: int = 2000, shift: float = 0.0,
          mix: tuple[float, ...] = (0.4, 0.3, 0.2, 0.1), keys: np.ndarray | None = None
          ) -> pa.Table:
    """``n`` rows (one per driver 0..n-1) at T0 + ``hours``: x ~ N(shift, 1), c from ``mix``."""
    rng = np.random.default_rng(seed)
    ids = np.arange(n, dtype=np.int64) if keys is None else keys
    when = T0 + dt.timedelta(hours=hours)
    return pa.table({
        "driver_id": ids,
        "event_timestamp": pa.array([when] * len(ids), pa.timestamp("us", tz="UTC")),
        "x": rng.normal(shift, 1.0, len(ids)),
        "c": rng.choice(CATS, len(ids), p=list(mix)),
    })


@pytest.fixture
def make_store(tmp_path) -> Iterator[Callable[..., FeatureStore]]:
    opened: list[FeatureStore] = []

    def make(**overrides: Any) -> FeatureStore:
        cfg = load_config(tmp_path, overrides={
            "serving": {"poll_interval_s": 0}, **overrides}, environ={})
        store = FeatureStore(tmp_path, config=cfg)
        store.apply([DRIVER, stats_view()])
        opened.append(store)
        return store

    yield make
    for s in opened:
        s.close()


@pytest.fixture
def store(make_store) -> FeatureStore:
    return make_store()


@pytest.fixture
def h() -> Any:
    """Helpers for test modules (conftest modules are not importable under importlib mode)."""
    import types

    return types.SimpleNamespace(T0=T0, DRIVER=DRIVER, CATS=CATS, stats_view=stats_view,
                                 batch=batch)
