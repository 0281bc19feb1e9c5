"""A derive killed mid-way leaves whole commits or nothing; the rerun continues, with no
row doubled or lost."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time

import pytest
from tests.derive.conftest import DRIVER, T0, TRIPS, US, derived_view, table

from featureledger import FeatureStore

HOUR = 3600 * US
ROWS = [(k, h * HOUR + k, float(h), h) for k in (1, 2) for h in range(72)]


def _derive_cmd(repo, *extra: str) -> list[str]:
    return [sys.executable, "-m", "featureledger", "derive", "fast", "--repo", str(repo),
            "--json", *extra]


def _setup(repo):
    store = FeatureStore(repo)
    store.apply([DRIVER, TRIPS, derived_view()])
    for i in range(0, len(ROWS), 36):
        store.ingest("trips", table(ROWS[i:i + 36]))
    return store


def _check(store):
    got = store.get_features_in_window("fast", T0, T0 + dt.timedelta(days=4))
    assert got.num_rows == len(ROWS)  # none lost, none doubled
    assert sorted(got.column("km2").to_pylist()) == sorted(2 * r[2] for r in ROWS)
    live = store.commits("fast", status="committed")
    covered = sorted(tuple(c.source["range"]) for c in live if c.source["range"])
    assert len(covered) == len(set(covered))  # no chunk committed twice


@pytest.mark.slow
def test_killed_inside_the_transaction_leaves_nothing(tmp_path):
    store = _setup(tmp_path)
    store.close()
    env = {**os.environ, "FEATURELEDGER_CRASH_AT": "derive_before_registry"}
    proc = subprocess.run(_derive_cmd(tmp_path), env=env, capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL
    store = FeatureStore(tmp_path)
    try:
        assert store.commits("fast", status=None) == []
        store.derive("fast")
        _check(store)
    finally:
        store.close()


@pytest.mark.slow
def test_killed_backfill_resumes_without_doubling(tmp_path):
    store = _setup(tmp_path)
    store.close()
    args = ("--start", T0.isoformat(), "--end", (T0 + dt.timedelta(days=3)).isoformat(),
            "--chunk", "1h")
    proc = subprocess.Popen(_derive_cmd(tmp_path, *args), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    store = FeatureStore(tmp_path)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if len(store.commits("fast")) >= 5:
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        done = len(store.commits("fast"))
        assert done >= 1
        # the rerun continues where it stopped
        rerun = subprocess.run(_derive_cmd(tmp_path, *args), capture_output=True, timeout=300)
        assert rerun.returncode == 0, rerun.stderr.decode()[-2000:]
        assert len(store.commits("fast")) == 72
        _check(store)
        assert store.derive("fast").unchanged
    finally:
        store.close()
