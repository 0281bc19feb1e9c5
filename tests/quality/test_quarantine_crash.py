"""Quarantine by policy is part of the commit: a writer killed at the worst instant.

A child process ingests (or pushes) two good batches into a view whose quality policy
quarantines drift, then a drifted batch, and is killed with SIGKILL right after the
drifted commit's registry transaction committed (``after_registry``: before ``ingest``
returned, before any later step could run). Whatever the instant, no reader may ever see
the drifted commit as ``committed``: the commit list, a new training set, a
materialization and the online store (after the push log's replay) all serve the second
good batch, checked against a brute-force oracle; the commit's check, its alerts and its
audited status landed with it.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from featureledger import FeatureStore
from featureledger.offline.storage import CRASH_ENV

N = 300

CHILD = textwrap.dedent("""
    import datetime as dt
    import os
    import sys

    import numpy as np
    import pyarrow as pa

    from featureledger import FeatureStore

    root, mode, crash_at = sys.argv[1], sys.argv[2], sys.argv[3]
    T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    N = %(n)d

    def batch(seed, hours, shift):
        rng = np.random.default_rng(seed)
        return pa.table({
            "driver_id": np.arange(N, dtype=np.int64),
            "event_timestamp": pa.array([T0 + dt.timedelta(hours=hours)] * N,
                                        pa.timestamp("us", tz="UTC")),
            "x": rng.normal(shift, 1.0, N),
            "c": rng.choice(["a", "b", "c", "d"], N, p=[0.4, 0.3, 0.2, 0.1]),
        })

    store = FeatureStore(root)

    def write(table):
        if mode == "push":
            return store.push("stats", table, flush=True)
        return store.ingest("stats", table).commit_id

    for i in (1, 2):
        print("ack", write(batch(i, i, 0.0)), flush=True)
    os.environ["FEATURELEDGER_CRASH_AT"] = crash_at
    print("drifted", write(batch(3, 3, 4.0)), flush=True)  # killed before this answer
""") % {"n": N}


def _batch(seed: int, hours: float, shift: float) -> pa.Table:
    """The child's batch, rebuilt here for the oracle."""
    rng = np.random.default_rng(seed)
    return pa.table({"driver_id": np.arange(N, dtype=np.int64),
                     "x": rng.normal(shift, 1.0, N),
                     "c": rng.choice(["a", "b", "c", "d"], N, p=[0.4, 0.3, 0.2, 0.1])})


def _repo(tmp_path: Path, registry: str, h) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    (root / "featureledger.yaml").write_text(
        f"project: crashy\nregistry: '{registry}'\nserving: {{poll_interval_s: 0}}\n")
    with FeatureStore(root) as store:
        store.apply([h.DRIVER, h.stats_view()])
        store.set_quality_policy("stats", {"on_drift": "quarantine"})
    return root


def _run(root: Path, mode: str, crash_at: str) -> tuple[int, list[str]]:
    env = {k: v for k, v in os.environ.items() if k != CRASH_ENV}
    proc = subprocess.run([sys.executable, "-c", CHILD, str(root), mode, crash_at],
                          capture_output=True, text=True, env=env, timeout=180)
    if proc.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(f"child failed ({proc.returncode}):\n{proc.stderr}")
    return proc.returncode, [line.split()[1] for line in proc.stdout.splitlines()
                             if line.startswith("ack ")]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["ingest", "push"])
@pytest.mark.parametrize("crash_at", ["after_registry", "before_registry"])
def test_a_writer_killed_around_a_drifted_commit_never_exposes_it(tmp_path, registry_url, h,
                                                                   mode, crash_at) -> None:
    root = _repo(tmp_path, registry_url, h)
    code, acked = _run(root, mode, crash_at)
    assert code == -signal.SIGKILL and len(acked) == 2
    good = _batch(2, 2, 0.0)
    expected = dict(zip(good.column("driver_id").to_pylist(), good.column("x").to_pylist(),
                        strict=True))
    with FeatureStore(root) as store:
        online = store.get_online_features(["stats:x"], {"driver_id": list(range(N))}) \
            if mode == "push" else None  # opening serving replays the push log first
        assert [c.commit_id for c in store.commits("stats", status="committed")] == acked
        every = store.commits("stats", status=None)
        suspect = [c for c in every if c.commit_id not in acked]
        if crash_at == "before_registry":
            # the transaction never committed: nothing of the drifted commit exists, and
            # a push's pending row (its segment replayed) landed quarantined, or not at all
            assert all(c.status in ("quarantined", "pending") for c in suspect)
        else:
            (bad,) = suspect
            assert bad.status == "quarantined"
            assert bad.status_reason.startswith("quality policy: drift in x")
            (check,) = store.quality_checks("stats", commit_ids=[bad.commit_id])
            assert check.status == "drift" and check.action == "quarantine"
            quarantine = [a for a in store.alerts() if a.rule == "quarantine"]
            assert [a.subject for a in quarantine] == [bad.commit_id]
            trail = store.audit_trail(kind="commit", object_id=bad.commit_id)
            assert [e.action for e in trail] == ["commit_status:quarantined", "commit"]
        assert not [p for p in store.reconcile().problems
                    if p.code == "commit_status_unaudited"]
        # a new training set reads the last good commit only (the oracle: batch 2 at 2 h)
        entities = pa.table({"driver_id": np.arange(N, dtype=np.int64),
                             "event_timestamp": pa.array(
                                 [h.T0 + dt.timedelta(hours=5)] * N,
                                 pa.timestamp("us", tz="UTC"))})
        ds = store.get_historical_features(entities, ["stats:x"])
        assert set(ds.commit_ids) <= set(acked)
        got = ds.to_arrow()
        assert got.column("x").to_pylist() == [expected[k] for k in
                                               got.column("driver_id").to_pylist()]
        # online: what the push log replay and the status sync left, or a materialization
        if online is None:
            store.materialize(end=h.T0 + dt.timedelta(hours=10))
        online = store.get_online_features(["stats:x"], {"driver_id": list(range(N))})
        assert online.values["x"] == [expected[k] for k in range(N)]
