"""Window retrieval against an oracle, and the dataset content hash."""

from __future__ import annotations

import datetime as dt
import itertools

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featureledger import Entity, FeatureStore, FeatureView, Field
from featureledger.errors import RetrievalError
from featureledger.offline.dataset import content_hash

UTC = dt.UTC
BASE = dt.datetime(2024, 7, 1, tzinfo=UTC)
_names = itertools.count()


def t(seconds: int) -> dt.datetime:
    return BASE + dt.timedelta(seconds=seconds)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    s = FeatureStore(tmp_path_factory.mktemp("window"))
    s.apply([Entity(name="shop", join_keys={"shop_id": "string"})])
    yield s
    s.close()


row = st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 20),
                st.one_of(st.none(), st.integers(0, 100)))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(commits=st.lists(st.lists(row, max_size=6, unique_by=lambda r: (r[0], r[1])),
                        min_size=1, max_size=4),
       start=st.one_of(st.none(), st.integers(-1, 21)),
       end=st.one_of(st.none(), st.integers(-1, 22)),
       as_of_index=st.one_of(st.none(), st.integers(0, 3)),
       quarantine=st.one_of(st.none(), st.integers(0, 3)))
def test_window_matches_oracle(store, write_commit, commits, start, end, as_of_index,
                               quarantine):
    view = f"sales_{next(_names)}"
    store.apply([FeatureView(name=view, entities=["shop"], ttl="1d",
                             fields=[Field(name="amount", dtype="int32")])])
    recs = [write_commit(store, view, {"shop_id": [r[0] for r in c],
                                       "event_timestamp": [t(r[1]) for r in c],
                                       "amount": pa.array([r[2] for r in c], pa.int32())})
            for c in commits]
    if quarantine is not None and quarantine < len(recs):
        store.registry.commits.set_status(recs[quarantine].commit_id, "quarantined", "t")
    cut = None if as_of_index is None else recs[min(as_of_index, len(recs) - 1)].commit_time
    got = store.get_features_in_window(
        view, None if start is None else t(start).replace(tzinfo=None),
        None if end is None else t(end), as_of=None if cut is None else cut)

    latest: dict[tuple[str, int], tuple[int, str, int | None]] = {}
    for i, (rec, c) in enumerate(zip(recs, commits, strict=True)):
        if i == quarantine or (cut is not None and rec.commit_time > cut):
            continue
        for shop, s, amount in c:
            if (start is None or s >= start) and (end is None or s < end):
                key = (shop, s)
                if key not in latest or rec.commit_time > latest[key][0]:
                    latest[key] = (rec.commit_time, rec.commit_id, amount)
    expected = [{"shop_id": k[0], "event_timestamp": t(k[1]), "amount": v[2],
                 "_commit_id": v[1]} for k, v in sorted(latest.items(), key=lambda kv:
                                                          (kv[0][1], kv[0][0]))]
    assert got.drop_columns(["_commit_time"]).to_pylist() == expected
    assert got.schema.field("amount").type == pa.int32()


def test_window_by_references_and_errors(store, write_commit):
    view = f"sales_{next(_names)}"
    store.apply([FeatureView(name=view, entities=["shop"],
                             fields=[Field(name="amount", dtype="int32"),
                                     Field(name="note", dtype="string")])])
    empty = store.get_features_in_window([f"{view}:note"], t(0), t(10))
    assert empty.num_rows == 0 and empty.column_names == [
        "shop_id", "event_timestamp", "note", "_commit_id", "_commit_time"]
    write_commit(store, view, {"shop_id": ["a"], "event_timestamp": [t(1)], "amount": [5],
                               "note": ["hi"]})
    got = store.get_features_in_window([f"{view}:note"], t(0), t(10))
    assert got.select(["shop_id", "note"]).to_pylist() == [{"shop_id": "a", "note": "hi"}]
    store.apply([FeatureView(name=f"{view}_x", entities=["shop"],
                             fields=[Field(name="z", dtype="int32")])])
    with pytest.raises(RetrievalError, match="one view version at a time"):
        store.get_features_in_window([f"{view}:note", f"{view}_x:z"], t(0), t(10))


def test_content_hash_depends_on_content_only():
    table = pa.table({
        "k": pa.array([1, 2, None, 4], pa.int64()),
        "f": pa.array([0.5, None, float("nan"), -1.0], pa.float32()),
        "s": pa.array(["a", None, "", "dd"]),
        "ts": pa.array([0, 1, None, 3], pa.timestamp("us", tz="UTC")),
        "l": pa.array([[1.0], None, [], [2.0, 3.0]], pa.list_(pa.float64())),
        "b": pa.array([True, None, False, True]),
    })
    h = content_hash(table)
    rechunked = pa.Table.from_batches([*table.to_batches(max_chunksize=1)])
    assert content_hash(rechunked) == h
    assert content_hash(pa.concat_tables([table.slice(0, 3), table.slice(3)])) == h
    # the bytes under a null slot do not matter
    garbage = pa.Array.from_buffers(pa.int64(), 4, [table.column("k").chunk(0).buffers()[0],
                                                    pa.py_buffer(np.array([1, 2, 12345, 4]).tobytes())])
    assert content_hash(table.set_column(0, "k", garbage)) == h
    # but every value, null, name and type does
    assert content_hash(table.set_column(0, "k", pa.array([1, 2, 3, 4]))) != h
    assert content_hash(table.rename_columns(["K", "f", "s", "ts", "l", "b"])) != h
    assert content_hash(table.set_column(1, "f", table.column("f").cast(pa.float64()))) != h
    assert content_hash(table.set_column(2, "s", pa.array(["a", None, None, "dd"]))) != h
    assert content_hash(table.set_column(4, "l", pa.array([[1.0], None, None, [2.0, 3.0]],
                                                          pa.list_(pa.float64())))) != h
    assert content_hash(table.slice(0, 3)) != h


def test_duckdb_limits_come_from_the_config(tmp_path, write_commit):
    from featureledger.config import load_config
    from featureledger.errors import ConfigError

    cfg = load_config(tmp_path, overrides={"offline_store": {"type": "parquet",
        "duckdb_memory_limit": "96MB", "duckdb_threads": 1}})
    with FeatureStore(tmp_path, config=cfg) as s:
        s.apply([Entity(name="shop", join_keys={"shop_id": "string"}),
                 FeatureView(name="sales", entities=["shop"],
                             fields=[Field(name="amount", dtype="int32")])])
        write_commit(s, "sales", {"shop_id": ["a"], "event_timestamp": [t(0)], "amount": [3]})
        ds = s.get_historical_features({"shop_id": ["a"], "event_timestamp": [t(1)]},
                                       ["sales:amount"])
        assert ds.to_arrow().column("amount").to_pylist() == [3]
        engine = s.retrieval.engine
        settings = dict(engine._db.sql(
            "SELECT name, value FROM duckdb_settings() WHERE name IN ('threads', "
            "'memory_limit')").fetchall())
        assert settings["threads"] == "1"
        assert settings["memory_limit"].startswith(("91", "96"))  # DuckDB prints MiB
    bad = load_config(tmp_path, overrides={"offline_store": {"type": "parquet", "duckdb_memory_limit": "lots"}})
    with FeatureStore(tmp_path, config=bad) as s, pytest.raises(ConfigError,
                                                                match="duckdb_memory_limit"):
        s.get_historical_features({"shop_id": ["a"], "event_timestamp": [t(1)]},
                                  ["sales:amount"])
