"""The retrieval commands, run as a user would: a real process, real files."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from helpers import run_cli as fl


@pytest.mark.e2e
@pytest.mark.slow
def test_historical_show_reproduce_window(tmp_path: Path) -> None:
    fl("init", "demo", cwd=tmp_path)
    repo = tmp_path / "demo"
    fl("apply", cwd=repo)
    fl("ingest", "driver_stats", "data/driver_stats.parquet", cwd=repo)
    fl("ingest", "customer_profile", "data/customer_profile.parquet", cwd=repo)
    out = json.loads(fl("historical", "data/entity_rows.parquet", "--features",
                        "driver_stats:conv_rate,customer_profile:avg_fare", "--out",
                        "out/train.parquet", "--json", cwd=repo).stdout)
    ds_id = out["dataset_id"]
    entities = pq.read_table(repo / "data" / "entity_rows.parquet")
    train = pq.read_table(repo / "out" / "train.parquet")
    assert train.num_rows == entities.num_rows == out["row_count"]
    assert train.column_names == [*entities.column_names, "conv_rate", "avg_fare"]
    assert train.select(entities.column_names).equals(entities)

    shown = json.loads(fl("datasets", "show", ds_id, "--json", cwd=repo).stdout)
    assert shown["content_hash"] == out["content_hash"]
    assert shown["features"] == ["driver_stats@1:conv_rate", "customer_profile@1:avg_fare"]
    assert len(shown["commit_ids"]) == 2
    table = fl("datasets", "show", ds_id, cwd=repo).stdout
    assert "driver_stats@1" in table and out["content_hash"] in table

    # a late correction changes new training sets, not the reproduction of this one
    fl("ingest", "driver_stats", "data/driver_stats_late.parquet", cwd=repo)
    rep = json.loads(fl("reproduce", ds_id, "--out", "out/again.parquet", "--json",
                        cwd=repo).stdout)
    assert rep["content_hash"] == out["content_hash"]
    assert pq.read_table(repo / "out" / "again.parquet").equals(train)
    listed = json.loads(fl("datasets", "list", "--json", cwd=repo).stdout)
    assert [d["dataset_id"] for d in listed] == [ds_id]

    fl("window", "driver_stats", "--start", "2026-01-01", "--end", "2026-01-02", "--out",
       "out/window.csv", cwd=repo)
    lines = (repo / "out" / "window.csv").read_text().splitlines()
    assert lines[0].startswith('"driver_id","event_timestamp","conv_rate"')
    assert len(lines) > 1

    bad = fl("reproduce", "ds_00000000-0000-7000-8000-000000000000", "--out", "x.parquet",
             cwd=repo, code=None)
    assert bad.returncode == 2 and "unknown dataset" in bad.stderr
