"""What ``offline_store.verify_digests`` costs: historical retrieval and materialization
with and without digesting each commit's files before reading them.

Run::

    .venv/bin/python bench/verify_digests.py              # 1M feature rows, 5 runs
    .venv/bin/python bench/verify_digests.py --rows 100000 --runs 3

Shape (seed 7): ``--rows`` feature rows over 10,000 entities in ``--commits`` commits,
features f0-f4 float32 and f5-f9 float64; 100,000 entity rows at random times. One store
is built under a temporary folder; each mode reads it through its own FeatureStore:

* ``off``: verification off (the default);
* ``on, first read``: on, with the process's record of verified files cleared before each
  run, so every commit file is digested (what the first read of a process pays);
* ``on, repeated``: on, files verified by an earlier read of the same process (a ``stat``
  per file).

The files are in the page cache in every mode (they were just written), so "first read"
measures hashing, not the disk. Output: a table of median and minimum seconds, and
``bench/results/verify_digests.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from featureledger import Entity, FeatureStore, FeatureView, Field
from featureledger.config import ParquetOfflineStoreConfig, ProjectConfig
from featureledger.offline import storage

HERE = Path(__file__).resolve().parent
T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
ENTITIES = 10_000


def build(root: Path, rows: int, commits: int) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    store = FeatureStore(root, config=ProjectConfig(root=root))
    fields = [Field(name=f"f{i}", dtype="float32" if i < 5 else "float64") for i in range(10)]
    store.apply([Entity(name="driver", join_keys={"driver_id": "int64"}),
                 FeatureView(name="stats", entities=["driver"], fields=fields, ttl="7d")])
    per = rows // commits
    for _ in range(commits):
        frame = pd.DataFrame({
            "driver_id": rng.integers(0, ENTITIES, per),
            "event_timestamp": pd.to_datetime(
                T0 + pd.to_timedelta(rng.integers(0, 90 * 86400, per), unit="s")),
            **{f"f{i}": rng.random(per).astype("float32" if i < 5 else "float64")
               for i in range(10)}})
        frame = frame.drop_duplicates(["driver_id", "event_timestamp"])
        store.ingest("stats", frame)
    store.close()
    return pd.DataFrame({
        "driver_id": rng.integers(0, ENTITIES, 100_000),
        "event_timestamp": pd.to_datetime(
            T0 + pd.to_timedelta(rng.integers(0, 90 * 86400, 100_000), unit="s"))})


def timed(root: Path, verify: bool, forget: bool, what: str, entity_rows: pd.DataFrame
          ) -> float:
    store = FeatureStore(root, config=ProjectConfig(
        root=root, offline_store=ParquetOfflineStoreConfig(verify_digests=verify)))
    try:
        if forget:
            storage._VERIFIED.clear()
        features = [f"stats:f{i}" for i in range(10)]
        t = time.perf_counter()
        if what == "retrieval":
            store.get_historical_features(entity_rows, features)
        else:
            store.materialize(end=T0 + dt.timedelta(days=91))
        return time.perf_counter() - t
    finally:
        store.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--commits", type=int, default=1)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    modes = {"off": (False, False), "on, first read": (True, True),
             "on, repeated": (True, False)}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "repo"
        root.mkdir()
        entity_rows = build(root, args.rows, args.commits)
        files = sorted((root / ".featureledger" / "offline").rglob("part-*.parquet"))
        size = sum(f.stat().st_size for f in files)
        t = time.perf_counter()
        storage.file_digest(files)
        digest_s = time.perf_counter() - t
        results: dict[str, dict[str, list[float]]] = {}
        for what in ("retrieval", "materialize"):
            timed(root, True, False, what, entity_rows)  # warm-up: caches, imports, plans
            for _ in range(args.runs):
                for name, (verify, forget) in modes.items():  # round-robin
                    results.setdefault(what, {}).setdefault(name, []).append(
                        timed(root, verify, forget, what, entity_rows))
    print(f"{args.rows:,} feature rows in {len(files)} file(s), {size / 2**20:.1f} MiB; "
          f"sha256 of the files alone: {digest_s:.3f} s; {args.runs} runs")
    print(f"{'operation':<12} {'mode':<16} {'median s':>9} {'min s':>9} {'vs off':>8}")
    out = {"rows": args.rows, "files": len(files), "bytes": size, "digest_s": digest_s,
           "machine": platform.platform(), "results": {}}
    for what, by_mode in results.items():
        base = statistics.median(by_mode["off"])
        for name, runs in by_mode.items():
            med = statistics.median(runs)
            print(f"{what:<12} {name:<16} {med:>9.3f} {min(runs):>9.3f} "
                  f"{(med - base) / base:>+8.1%}")
            out["results"].setdefault(what, {})[name] = {"median_s": med, "min_s": min(runs),
                                                         "runs": runs}
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "verify_digests.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
