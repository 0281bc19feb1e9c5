"""One frame adapter: every accepted input means the same rows, wherever it is passed."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

from featureledger import Entity, FeatureStore, FeatureView, Field
from featureledger.frames import FrameError, read_frame, to_pandas

ROWS = [{"k": 1, "v": 1.5}, {"k": 2, "v": None}]


@pytest.mark.parametrize("make", [
    lambda: pa.Table.from_pylist(ROWS),
    lambda: pa.Table.from_pylist(ROWS).to_batches()[0],
    lambda: pa.RecordBatchReader.from_batches(pa.Table.from_pylist(ROWS).schema,
                                              pa.Table.from_pylist(ROWS).to_batches()),
    lambda: {"k": [1, 2], "v": [1.5, None]},
    lambda: list(ROWS),
    lambda: pd.DataFrame(ROWS),
    lambda: pl.DataFrame(ROWS),
    lambda: pl.DataFrame(ROWS).lazy(),
], ids=["table", "batch", "reader", "columns", "rows", "pandas", "polars", "lazy"])
def test_every_input_reads_as_the_same_rows(make):
    frame = read_frame(make(), scalars=False)
    assert frame is not None
    assert frame.table.select(["k", "v"]).to_pylist() == ROWS


def test_unknown_objects_and_unreadable_frames():
    assert read_frame("not a frame") is None
    with pytest.raises(FrameError, match="cannot be read"):
        read_frame([{"k": 1}, {"k": "x"}])
    with pytest.raises(FrameError, match="cannot be read"):
        read_frame([{"k": 2**70}])
    assert read_frame({"k": 1}).table.to_pylist() == [{"k": 1}]  # one row of scalars


def test_declared_types_survive_in_pandas():
    df = to_pandas(pa.table({"n": pa.array([1, None], pa.int64()),
                             "b": pa.array([True, None])}))
    assert str(df["n"].dtype) == "int64[pyarrow]" and df["n"].isna().tolist() == [False, True]
    assert str(df["b"].dtype) == "bool[pyarrow]"


def test_online_vectors_to_pandas_and_polars(tmp_path):
    store = FeatureStore(tmp_path)
    try:
        store.apply([Entity(name="d", join_keys={"d_id": "int64"}),
                     FeatureView(name="s", entities=["d"],
                                 fields=[Field(name="trips", dtype="int64")])])
        t0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
        store.ingest("s", pd.DataFrame({"d_id": [1], "event_timestamp": [t0], "trips": [7]}))
        store.materialize(end=t0 + dt.timedelta(hours=1))
        r = store.get_online_features(["s:trips"], [{"d_id": 1}, {"d_id": 2}])
        df = r.to_pandas(metadata=True)
        assert df["trips"].tolist()[0] == 7 and df["trips"].isna().tolist() == [False, True]
        assert str(df["trips"].dtype) == "int64[pyarrow]"
        assert df["trips__status"].tolist() == ["PRESENT", "NOT_FOUND"]
        assert r.to_polars()["trips"].to_list() == [7, None]
        # the same entity rows as a DataFrame read the same values
        again = store.get_online_features(["s:trips"], pd.DataFrame({"d_id": [1, 2]}))
        assert again.values["trips"] == [7, None]
    finally:
        store.close()
