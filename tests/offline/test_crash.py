"""Crash safety of commits: a writer killed with SIGKILL at any instant.

A child process ingests in a loop and prints each commit id once ``ingest`` returned (an
acknowledged commit). The test kills it at random instants and at each named crash point
(``FEATURELEDGER_CRASH_AT``), then checks that every acknowledged commit is complete
(registry row, files with the recorded digest, the right rows), that no registry row
points at missing or partial data, and that ``gc`` removes exactly the orphans.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from featureledger import FeatureStore
from featureledger.config import ProjectConfig
from featureledger.offline.storage import CRASH_ENV, CRASH_POINTS

CHILD = textwrap.dedent("""
    import sys
    from pathlib import Path

    import duckdb  # noqa: F401 - loaded before "ready" so kill windows fall on ingestion
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet  # noqa: F401

    from featureledger import Entity, FeatureStore, FeatureView, Field
    from featureledger.config import ProjectConfig

    root, url, seed, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    # every commit keeps its own files here (compaction's crash test is its own)
    store = FeatureStore(root, config=ProjectConfig(
        registry=url, root=Path(root), compaction={"auto_after_commits": None}))
    store.apply([Entity(name="driver", join_keys={"driver_id": "int64"}),
                 FeatureView(name="crashy", entities=["driver"],
                             fields=[Field(name="x", dtype="float64", min=0, max=1)])])
    print("ready", flush=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        n = int(rng.integers(500, 5000))
        ts = pa.array(1_700_000_000_000_000 + np.arange(n, dtype=np.int64) * 1_000_000)
        x = rng.random(n)
        x[: int(rng.integers(0, 3))] = 2.0  # a few invalid rows, dropped
        table = pa.table({"driver_id": np.arange(n, dtype=np.int64) % 97,
                          "event_timestamp": ts.cast(pa.timestamp("us", tz="UTC")),
                          "x": x})
        result = store.ingest("crashy", table, mode="drop_invalid")
        print("ack", result.commit_id, result.row_count, flush=True)
""")


def run_child(root: Path, url: str, seed: int, *, count: int, kill_after: float | None,
              crash_at: str | None = None, after_acks: int = 0
              ) -> tuple[int, dict[str, int]]:
    """Run the child; with ``kill_after``, SIGKILL it that many seconds after it is ready,
    or, with ``after_acks``, that many seconds after its ``after_acks``-th acknowledged
    commit (so a loaded machine, where one ingestion can outlast any fixed window, still
    has acknowledged commits for the checks to hold to)."""
    env = {k: v for k, v in os.environ.items() if k != CRASH_ENV}
    if crash_at:
        env[CRASH_ENV] = crash_at
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(root), url, str(seed),
                             str(count)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    assert proc.stdout is not None
    first = proc.stdout.readline()
    if first.strip() != "ready":
        proc.kill()
        raise AssertionError(f"child failed to start: {first}{proc.stderr.read()}")
    seen = []
    while len(seen) < after_acks:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
    if kill_after is not None:
        time.sleep(kill_after)
        proc.send_signal(signal.SIGKILL)
    out, err = proc.communicate(timeout=120)
    acked = {}
    for line in [*seen, *out.splitlines()]:
        parts = line.split()
        if len(parts) == 3 and parts[0] == "ack":
            acked[parts[1]] = int(parts[2])
    if proc.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(f"child failed ({proc.returncode}):\n{err}")
    return proc.returncode, acked


def check_commits_complete(store: FeatureStore, acked: dict[str, int]) -> None:
    commits = {c.commit_id: c for c in store.commits()}
    for cid, rows in acked.items():
        assert cid in commits, f"acknowledged commit {cid} is not in the registry"
        assert commits[cid].row_count == rows
    offline = store.ctx.offline_store
    for c in commits.values():
        assert c.status == "committed"
        paths = [offline.path(f) for f in c.files]
        assert all(p.is_file() for p in paths), f"commit {c.commit_id} misses files"
        digest = hashlib.sha256(b"".join(p.read_bytes() for p in paths)).hexdigest()
        assert digest == c.content_digest, f"commit {c.commit_id} has altered files"
        table = pq.read_table(paths[0])
        assert table.num_rows == c.row_count
        assert set(table.column("_commit_id").to_pylist()) == {c.commit_id}


def orphans(store: FeatureStore) -> set[str]:
    offline = store.ctx.offline_store
    referenced = {str(Path(f).parent) for f in store.registry.commits.all_files()}
    found = {d for d in offline.commit_dirs() if d not in referenced}
    tmp = offline.root / offline.project / "_tmp"
    if tmp.exists():
        found |= {str(p.relative_to(offline.root)) for p in tmp.iterdir()}
    return found


def gc_and_check(store: FeatureStore, acked: dict[str, int]) -> None:
    expected = orphans(store)
    before = set(store.ctx.offline_store.commit_dirs())
    report = store.gc(grace_seconds=0)
    assert set(report.removed) == expected
    assert orphans(store) == set()
    assert set(store.ctx.offline_store.commit_dirs()) == before - expected
    check_commits_complete(store, acked)


@pytest.mark.slow
@pytest.mark.parametrize("point", CRASH_POINTS)
def test_named_crash_points(tmp_path, registry_url, point) -> None:
    root = tmp_path / "repo"
    code, acked = run_child(root, registry_url, 1, count=2, kill_after=None, crash_at=point)
    assert code == -signal.SIGKILL and acked == {}
    with FeatureStore(root, config=ProjectConfig(registry=registry_url, root=root)) as store:
        visible = store.commits()
        left = orphans(store)
        if point == "after_registry":
            # committed, only the acknowledgement was lost: whole and visible
            assert len(visible) == 1 and left == set()
        else:
            assert visible == []
            assert len(left) == 1
            (only,) = left
            assert only.startswith("default/_tmp/") == (point == "after_files")
        check_commits_complete(store, {})
        gc_and_check(store, {})
        # the store keeps working after the crash
        code, acked = run_child(root, registry_url, 2, count=1, kill_after=None)
        assert code == 0 and len(acked) == 1
        check_commits_complete(store, acked)


@pytest.mark.slow
def test_sigkill_at_random_instants(tmp_path, sqlite_url) -> None:
    root = tmp_path / "repo"
    rng = random.Random(20240601)
    acked: dict[str, int] = {}
    kills = 0
    for i in range(30):
        # even runs: anywhere from the start; odd runs: after an acknowledged commit,
        # within about one more ingestion
        code, got = run_child(root, sqlite_url, i, count=1000,
                              kill_after=rng.uniform(0.0, 1.2 if i % 2 == 0 else 0.4),
                              after_acks=i % 2)
        kills += code == -signal.SIGKILL
        acked.update(got)
    assert kills == 30
    assert len(acked) >= 15, acked  # every odd run acknowledged at least one
    with FeatureStore(root, config=ProjectConfig(
            registry=sqlite_url, root=root, compaction={"auto_after_commits": None})) as store:
        check_commits_complete(store, acked)
        gc_and_check(store, acked)
