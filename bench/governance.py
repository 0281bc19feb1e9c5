"""What lifecycle governance costs: retention enforcement per expired commit (loose commits
and commits inside a compacted segment), and an online read of a deprecated feature next
to a read of a plain one (the deprecation gate: a match computed once per read plan, then
a retirement check, a once-per-process warning and a counter per read).

Run::

    .venv/bin/python bench/governance.py                 # 200 commits, 1,000 reads
    .venv/bin/python bench/governance.py --commits 50 --reads 300

Shape: one view (int64 key, event time, two float64 features), ``--commits`` commits of
100 rows each. ``retention loose``: a ``keep_last=1`` policy expires all commits but one
(one registry transaction and one folder deletion each). ``retention compacted``: the
same after compacting the commits into one segment (the segment is rewritten once without
the expired rows). Online: ``--reads`` reads of 10 entities of a plain feature and of a
deprecated one, alternating, through one store. Output: a table and
``bench/results/governance.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import pyarrow as pa

from featureledger import DeprecatedFeatureWarning, Entity, FeatureStore, FeatureView, Field
from featureledger.config import ProjectConfig

HERE = Path(__file__).resolve().parent
T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def build(root: Path, commits: int) -> FeatureStore:
    store = FeatureStore(root, config=ProjectConfig(
        root=root, compaction={"auto_after_commits": None}))
    store.apply([Entity(name="driver", join_keys={"driver_id": "int64"}),
                 FeatureView(name="stats", entities=["driver"],
                             fields=[Field(name="a", dtype="float64"),
                                     Field(name="b", dtype="float64")])])
    for i in range(commits):
        keys = list(range(100))
        store.ingest("stats", pa.table({
            "driver_id": pa.array(keys, pa.int64()),
            "event_timestamp": pa.array([T0 + dt.timedelta(minutes=i)] * 100,
                                        pa.timestamp("us", tz="UTC")),
            "a": pa.array([float(i)] * 100), "b": pa.array([float(k) for k in keys])}))
    return store


def retention(commits: int, compacted: bool) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        store = build(Path(tmp), commits)
        try:
            if compacted:
                store.compact("stats")
            store.set_retention("stats", keep_last=1, reason="bench")
            start = time.perf_counter()
            report = store.apply_retention()
            seconds = time.perf_counter() - start
            assert len(report.expired) == commits - 1
            return seconds
        finally:
            store.close()


def online(reads: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        store = build(Path(tmp), 2)
        try:
            store.materialize()
            store.deprecate("stats:b", "bench", retire_on="2999-01-01")
            rows = [{"driver_id": k} for k in range(10)]
            times: dict[str, list[float]] = {"plain": [], "deprecated": []}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecatedFeatureWarning)
                for ref in ("stats:a", "stats:b"):  # plans built, caches warm
                    store.get_online_features([ref], rows)
                for _ in range(reads):
                    for name, ref in (("plain", "stats:a"), ("deprecated", "stats:b")):
                        t = time.perf_counter()
                        store.get_online_features([ref], rows)
                        times[name].append(time.perf_counter() - t)
            return {k: statistics.median(v) * 1e6 for k, v in times.items()}
        finally:
            store.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--commits", type=int, default=200)
    ap.add_argument("--reads", type=int, default=1000)
    args = ap.parse_args()
    loose = retention(args.commits, compacted=False)
    packed = retention(args.commits, compacted=True)
    reads = online(args.reads)
    n = args.commits - 1
    results = {
        "machine": platform.machine(), "python": platform.python_version(),
        "commits_expired": n,
        "retention_loose_s": loose, "retention_loose_ms_per_commit": loose / n * 1e3,
        "retention_compacted_s": packed,
        "retention_compacted_ms_per_commit": packed / n * 1e3,
        "online_plain_us": reads["plain"], "online_deprecated_us": reads["deprecated"],
    }
    print(f"{'measure':<40}{'value':>12}")
    print(f"{f'retention, {n} loose commits (s)':<40}{loose:>12.3f}")
    print(f"{'  per commit (ms)':<40}{loose / n * 1e3:>12.2f}")
    print(f"{f'retention, {n} commits in a segment (s)':<40}{packed:>12.3f}")
    print(f"{'  per commit (ms)':<40}{packed / n * 1e3:>12.2f}")
    print(f"{'online read, plain feature (µs, median)':<40}{reads['plain']:>12.1f}")
    print(f"{'online read, deprecated feature (µs)':<40}{reads['deprecated']:>12.1f}")
    out = HERE / "results" / "governance.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
