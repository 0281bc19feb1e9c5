"""The DuckDB engine on its own: both forms of the tie-breaking order key."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from featureledger.offline.duckdb import DuckDBEngine
from featureledger.offline.engine import ViewScan

TS = pa.timestamp("us", tz="UTC")


@pytest.fixture
def files(tmp_path):
    paths = []
    for i, (vals, ts) in enumerate([([1.0, 2.0], [10, 20]), ([3.0, 4.0], [20, 30]),
                                    ([5.0], [20])]):
        p = tmp_path / f"c{i}.parquet"
        pq.write_table(pa.table({"k": pa.array([1] * len(vals), pa.int64()),
                                 "ts": pa.array(ts, TS), "v": vals}), p)
        paths.append(str(p))
    return paths


@pytest.mark.parametrize("event_range", [(10, 30), None], ids=["bigint", "hugeint"])
def test_ties_go_to_the_later_commit_with_either_order_key(files, event_range):
    scan = ViewScan(join_keys=["k"], timestamp_field="ts", features=["v"], output_names=["v"],
                    duckdb_types=["DOUBLE"], files=files, ttl_us=15, tie_break=True,
                    file_ranks=[0, 1, 2], event_range=event_range)
    assert (scan.order_bits((0, 100)) is None) == (event_range is None)
    entities = pa.table({"ts": pa.array([20, 25, 29, 9, 46, 45], TS),
                         "k": pa.array([1, 1, 1, 1, 1, 1], pa.int64()),
                         "_row": pa.array(range(6), pa.int64())})
    engine = DuckDBEngine(threads=1)
    try:
        got = engine.point_in_time(entities, "ts", [scan], (9, 46)).read_all().sort_by("_row")
    finally:
        engine.close()
    # ts 20 exists in three commits: the last one (5.0) wins; 46 is 16 > ttl past 30
    assert got.column("v").to_pylist() == [5.0, 5.0, 5.0, None, None, 4.0]
    assert got.column("_fl_matched_0").to_pylist() == [True, True, True, False, False, True]


def test_order_bits_fall_back_to_hugeint_when_the_key_would_overflow():
    scan = ViewScan(join_keys=["k"], timestamp_field="ts", features=["v"], output_names=["v"],
                    duckdb_types=["DOUBLE"], files=["x"] * 40, tie_break=True,
                    file_ranks=list(range(40)), event_range=(0, 1 << 50))
    assert scan.order_bits((0, 1 << 50)) == 6
    assert scan.order_bits((0, 1 << 57)) is None
