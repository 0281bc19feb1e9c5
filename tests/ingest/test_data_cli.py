"""The data commands, run as a user would: a real process on the scaffolded demo repo."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from helpers import run_cli as fl


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("datacli")
    fl("init", "demo", cwd=root)
    fl("apply", cwd=root / "demo")
    return root / "demo"


@pytest.mark.e2e
def test_ingest_reject_drop_and_manage_commits(repo: Path) -> None:
    # the view's own source
    first = json.loads(fl("ingest", "driver_stats", "--json", cwd=repo).stdout)
    rows = pq.read_metadata(repo / "data" / "driver_stats.parquet").num_rows
    assert first["row_count"] == rows and first["status"] == "committed"

    # strict rejection: exit 3, the report as a table, nothing written
    bad = repo / "data" / "driver_stats_bad.parquet"
    proc = fl("ingest", "driver_stats", str(bad), cwd=repo, code=3)
    assert "rejected" in proc.stderr and "range:conv_rate" in proc.stderr
    assert "nothing was written" in proc.stderr
    rejected = json.loads(fl("ingest", "driver_stats", str(bad), "--json", cwd=repo,
                             code=3).stdout)
    assert rejected["error"] == "validation_failed"
    failures = {r["rule"]: r["failed"] for r in rejected["report"]["rules"] if r["failed"]}
    assert failures["range:conv_rate"] >= 1
    listed = json.loads(fl("commits", "--json", cwd=repo).stdout)
    assert [c["commit_id"] for c in listed] == [first["commit_id"]]

    # drop_invalid commits the rest and keeps the rejected rows
    dropped = json.loads(fl("ingest", "driver_stats", str(bad), "--mode", "drop_invalid",
                            "--json", cwd=repo).stdout)
    total = pq.read_metadata(bad).num_rows
    assert dropped["rejected_count"] == rejected["report"]["rows_rejected"]
    assert dropped["row_count"] + dropped["rejected_count"] == total
    rej = pq.read_table(repo / ".featureledger" / "offline" /
                        dropped["validation"]["rejected_path"])
    assert rej.num_rows == dropped["rejected_count"]

    cid = dropped["commit_id"]
    shown = fl("commit", "show", cid, cwd=repo).stdout
    assert cid in shown and "profile" in shown and "conv_rate" in shown
    assert json.loads(fl("quarantine", cid, "--reason", "bad batch", "--json",
                         cwd=repo).stdout)["status"] == "quarantined"
    assert json.loads(fl("commits", "driver_stats", "--status", "quarantined", "--json",
                         cwd=repo).stdout)[0]["commit_id"] == cid
    assert "rolled_back" in fl("rollback", cid, "--reason", "confirmed", cwd=repo).stdout
    assert "committed" in fl("restore", cid, "--reason", "fixed", cwd=repo).stdout
    fl("quarantine", cid, cwd=repo, code=2)  # --reason is required


@pytest.mark.e2e
def test_map_filter_and_gc(repo: Path, tmp_path: Path) -> None:
    import pandas as pd

    src = pd.read_parquet(repo / "data" / "driver_stats.parquet")
    renamed = src.rename(columns={"rating": "stars"}).assign(extra=1)
    path = repo / "data" / "renamed.csv"  # input files are read from the repository
    renamed.to_csv(path, index=False)
    out = json.loads(fl("ingest", "driver_stats", str(path), "--map", "stars=rating",
                        "--map", "extra=", "--filter", "driver_id < 1010", "--json",
                        cwd=repo).stdout)
    assert out["row_count"] == int((src["driver_id"] < 1010).sum())
    assert out["steps"][0] == {"step": "map_columns",
                               "params": {"extra": None, "stars": "rating"}}
    offline = repo / ".featureledger" / "offline"
    orphan = offline / "demo" / "views" / "driver_stats" / "v1" / "cmt_x"
    orphan.mkdir(parents=True)
    other = offline / "other" / "views" / "driver_stats" / "v1" / "cmt_y"  # another project's
    other.mkdir(parents=True)
    dry = json.loads(fl("gc", "--grace", "0", "--dry-run", "--json", cwd=repo).stdout)
    assert dry["removed"] == ["demo/views/driver_stats/v1/cmt_x"] and orphan.exists()
    fl("gc", "--grace", "0", cwd=repo)
    assert not orphan.exists() and other.exists()
    err = fl("ingest", "driver_stats", str(path), cwd=repo, code=2).stderr
    assert "'stars'" in err and "extra" in err
