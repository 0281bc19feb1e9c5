"""The quality commands, end to end in a real process."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from helpers import run_cli

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_drift_policy_alerts_scoreboard_and_rollback_from_the_cli(store, h, tmp_path):
    store.ingest("stats", h.batch(1, hours=1, n=300))
    store.ingest("stats", h.batch(2, hours=2, n=300))
    pq.write_table(h.batch(3, hours=3, n=300, shift=3.0), tmp_path / "shifted.parquet")
    run_cli("quality-policy", "stats", "--set", "{on_drift: quarantine}", cwd=tmp_path)
    pol = json.loads(run_cli("quality-policy", "stats", "--json", cwd=tmp_path).stdout)
    assert pol["on_drift"] == "quarantine"
    out = json.loads(run_cli("ingest", "stats", "shifted.parquet", "--json",
                             cwd=tmp_path).stdout)
    assert out["status"] == "quarantined"
    doc = json.loads(run_cli("drift", "stats", "--baseline", "previous",
                             "--current", f"commit:{out['commit_id']}", "--json",
                             cwd=tmp_path).stdout)
    assert doc["status"] == "drift" and doc["drifted"] == ["x"]
    table = run_cli("drift", "stats", "--current", f"commit:{out['commit_id']}", "--exact",
                    cwd=tmp_path).stdout
    assert "from data" in table and "PSI" in table
    alerts = json.loads(run_cli("alerts", "--json", cwd=tmp_path).stdout)
    assert {a["rule"] for a in alerts} == {"drift", "quarantine"}
    run_cli("alerts", "--ack", alerts[0]["alert_id"], "--reason", "seen", cwd=tmp_path)
    assert len(json.loads(run_cli("alerts", "--json", cwd=tmp_path).stdout)) == 1
    board = json.loads(run_cli("scoreboard", "--json", cwd=tmp_path).stdout)
    (view,) = [r for r in board["rows"] if r["kind"] == "view"]
    assert view["subject"] == "stats@1" and view["quarantined"] == 1
    assert view["drift"] == "drift" and view["open_alerts"] == 1
    first = store.commits("stats")[0].commit_id
    done = json.loads(run_cli("rollback-view", "stats", "--to-commit", first, "--reason",
                              "bad week", "--json", cwd=tmp_path).stdout)
    assert len(done) == 1 and store.get_commit(done[0]).status == "rolled_back"
    run_cli("drift", "stats", "--baseline", "yesterday", cwd=tmp_path, code=2)
