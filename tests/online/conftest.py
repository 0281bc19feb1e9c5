"""Fixtures of the online tests: a feature store on every online backend, and a helper that
writes offline commits exactly as the storage contract lays them out."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa
import pytest

from featureledger import Entity, FeatureView, Field
from featureledger.config import load_config
from featureledger.model.ids import new_id
from featureledger.model.timeutil import now_us, to_us
from featureledger.model.types import to_arrow
from featureledger.registry.commits import CommitRecord
from featureledger.store import FeatureStore

UTC = dt.UTC
T0 = dt.datetime(2024, 1, 1, tzinfo=UTC)


def ts(hours: float) -> dt.datetime:
    """T0 plus ``hours``."""
    return T0 + dt.timedelta(hours=hours)


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def online_backend(request, tmp_path) -> dict[str, Any]:
    """online_store settings for each backend in turn."""
    if request.param == "sqlite":
        return {"type": "sqlite", "path": str(tmp_path / "online.db")}
    url, prefix = request.getfixturevalue("redis_namespace")
    return {"type": "redis", "url": url, "key_prefix": prefix, "timeout_s": 2.0}


@pytest.fixture
def make_store(tmp_path, online_backend) -> Iterator[Callable[..., FeatureStore]]:
    """Open FeatureStores on one repository folder (several = several processes' views)."""
    opened: list[FeatureStore] = []

    def make(**serving: Any) -> FeatureStore:
        overrides = {"online_store": online_backend,
                     "serving": {"poll_interval_s": 0, **serving}}
        cfg = load_config(tmp_path, overrides=overrides, environ={})
        store = FeatureStore(tmp_path, config=cfg)
        opened.append(store)
        return store

    yield make
    for s in opened:
        s.close()


DRIVER = Entity(name="driver", join_keys={"driver_id": "int64"})


def stats_view(**changes: Any) -> FeatureView:
    fields = changes.pop("fields", None) or [
        Field(name="trips", dtype="int64"),
        Field(name="rating", dtype="float64"),
        Field(name="city", dtype="string", default="unknown"),
    ]
    return FeatureView(name="driver_stats", entities=[DRIVER], fields=fields,
                       **changes)


@pytest.fixture
def store(make_store) -> FeatureStore:
    s = make_store()
    s.apply([DRIVER, stats_view()])
    return s


def write_commit(store: FeatureStore, view: str, rows: list[dict[str, Any]], *,
                 version: int | None = None, commit_time: int | None = None) -> str:
    """Write ``rows`` as one committed commit of ``view`` (Parquet files + registry row)."""
    rec = store.registry.definitions.get("feature_view", view, version)
    fv = rec.definition
    commit_id = new_id("cmt")
    ct = commit_time if commit_time is not None else now_us()
    cols: dict[str, Any] = {}
    for k, t in fv.join_keys.items():
        cols[k] = pa.array([r[k] for r in rows], type=to_arrow(t))
    cols[fv.timestamp_field] = pa.array([to_us(r[fv.timestamp_field]) for r in rows],
                                        type=pa.int64()).cast(pa.timestamp("us", "UTC"))
    for f in fv.fields:
        cols[f.name] = pa.array([r.get(f.name) for r in rows], type=to_arrow(f.dtype))
    cols["_commit_id"] = pa.array([commit_id] * len(rows), type=pa.string())
    cols["_commit_time"] = pa.array([ct] * len(rows), type=pa.int64()).cast(
        pa.timestamp("us", "UTC"))
    table = pa.table(cols)
    written = store.ctx.offline_store.write_commit(fv.name, rec.version, commit_id, table)
    event = [to_us(r[fv.timestamp_field]) for r in rows]
    record = CommitRecord(
        commit_id=commit_id, view_name=fv.name, view_version=rec.version, commit_time=ct,
        user="test", run_id=None, source={"type": "test"}, steps=[], row_count=len(rows),
        rejected_count=0, validation={}, profile={}, files=written.files,
        content_digest=written.content_digest, min_event_ts=min(event), max_event_ts=max(event),
    )
    with store.registry.db.write() as conn:
        store.registry.commits.insert(conn, record)
    return commit_id


@pytest.fixture
def h() -> Any:
    """Helpers for test modules (conftest modules are not importable under importlib mode)."""
    import types

    return types.SimpleNamespace(ts=ts, T0=T0, DRIVER=DRIVER, stats_view=stats_view,
                                 write_commit=write_commit)
