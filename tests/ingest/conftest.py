"""Fixtures for the ingestion tests: stores on every registry backend, a standard view."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from featureledger import Entity, FeatureStore, FeatureView, Field, RowCheck
from featureledger.config import ProjectConfig

DRIVER = Entity(name="driver", join_keys={"driver_id": "int64"})


def trips_view(**overrides) -> FeatureView:
    """A view exercising every constraint kind."""
    spec = dict(
        name="trips",
        entities=[DRIVER],
        fields=[
            Field(name="n", dtype="int64", min=0, max=100, nullable=False),
            Field(name="min_fare", dtype="float64"),
            Field(name="max_fare", dtype="float64"),
            Field(name="score", dtype="float32", min=0.0, max=1.0),
            Field(name="city", dtype="string", allowed_values=["ams", "ber"]),
            Field(name="code", dtype="string", regex=r"[A-Z]{2}\d"),
        ],
        checks=[RowCheck(name="fares", expr="min_fare <= max_fare")],
        ttl="7d",
    )
    spec.update(overrides)
    return FeatureView(**spec)


def open_store(root: Path, url: str) -> FeatureStore:
    return FeatureStore(root, config=ProjectConfig(registry=url, root=root))


@pytest.fixture
def store_factory(tmp_path) -> Iterator[Callable[[str], FeatureStore]]:
    """``store_factory(url)``: a store rooted at tmp_path/repo, registry at ``url``."""
    opened: list[FeatureStore] = []

    def make(url: str) -> FeatureStore:
        s = open_store(tmp_path / "repo", url)
        opened.append(s)
        return s

    yield make
    for s in opened:
        s.close()


@pytest.fixture
def store(store_factory, registry_url) -> FeatureStore:
    """A store on each registry backend with the driver entity and the trips view."""
    s = store_factory(registry_url)
    s.apply([DRIVER, trips_view()])
    return s


@pytest.fixture
def sqlite_store(store_factory, sqlite_url) -> FeatureStore:
    s = store_factory(sqlite_url)
    s.apply([DRIVER, trips_view()])
    return s


@pytest.fixture
def make_view() -> Callable[..., FeatureView]:
    """``make_view(**overrides)``: the trips view with some settings replaced."""
    return trips_view
