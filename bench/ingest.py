"""Ingestion benchmark: featureledger ingest (validation + profile + commit) vs a plain
``pyarrow.parquet.write_table`` of the same table.

Run: ``.venv/bin/python bench/ingest.py [--rows 1000000] [--runs 5]``

Shape: 10,000 entities, one row per entity per time slot over 90 days, features f0-f4
float32 and f5-f9 float64, each with a declared range, plus one row check
(``f0 <= f5 + 1``). Each measurement runs in a fresh process (alternating between the two
contenders, so both see the same machine state); the data is generated deterministically
in that process and only the operation is timed. featureledger's time covers everything
``store.ingest`` does: shaping, validation, profile, Parquet write with fsync, content
digest and the registry transaction (SQLite). Module imports and opening the store are
not timed (they are once per process, not per ingestion).

A third line shows the floor of any crash-safe commit: the same plain write followed by
``fsync`` and a sha256 of the file (what featureledger's commit must also do).

Prints a table (median and minimum of the runs, their ratio) and writes
``bench/results/ingest.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ENTITIES = 10_000
DAYS = 90
TARGET_RATIO = 3.0


def make_table(rows: int) -> Any:  # a pyarrow Table; pyarrow is imported lazily
    import numpy as np
    import pyarrow as pa

    slots = max(1, rows // ENTITIES)
    n = slots * ENTITIES
    rng = np.random.default_rng(42)
    step = DAYS * 86_400_000_000 // slots
    start = 1_704_067_200_000_000  # 2024-01-01 UTC
    cols = {
        "driver_id": pa.array(np.repeat(np.arange(ENTITIES, dtype=np.int64), slots)),
        "event_timestamp": pa.array(
            start + np.tile(np.arange(slots, dtype=np.int64) * step, ENTITIES)
            + rng.integers(0, step, n), pa.int64()).cast(pa.timestamp("us", tz="UTC")),
    }
    for i in range(5):
        cols[f"f{i}"] = pa.array(rng.random(n, dtype=np.float32))
    for i in range(5, 10):
        cols[f"f{i}"] = pa.array(rng.random(n))
    return pa.table(cols)


def run_plain(rows: int) -> dict:
    import pyarrow.parquet as pq

    table = make_table(rows)
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        pq.write_table(table, Path(d) / "plain.parquet")
        return {"seconds": time.perf_counter() - t, "rows": table.num_rows}


def run_durable(rows: int) -> dict:
    """The floor any crash-safe commit pays: write, fsync, sha256 of the file."""
    import hashlib
    import os

    import pyarrow.parquet as pq

    table = make_table(rows)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "durable.parquet"
        t = time.perf_counter()
        pq.write_table(table, path)
        with open(path, "rb") as f:
            os.fsync(f.fileno())
            hashlib.sha256(f.read()).hexdigest()
        return {"seconds": time.perf_counter() - t, "rows": table.num_rows}


def run_featureledger(rows: int) -> dict:
    import duckdb  # noqa: F401 - imported before timing, like pyarrow for the plain write

    from featureledger import Entity, FeatureStore, FeatureView, Field, RowCheck
    from featureledger.config import ProjectConfig

    table = make_table(rows)
    with tempfile.TemporaryDirectory() as d:
        cfg = ProjectConfig(root=Path(d))
        store = FeatureStore(d, config=cfg)
        fields = [Field(name=f"f{i}", dtype="float32" if i < 5 else "float64",
                        min=0.0, max=1.0) for i in range(10)]
        store.apply([
            Entity(name="driver", join_keys={"driver_id": "int64"}),
            FeatureView(name="driver_stats", entities=["driver"], fields=fields, ttl="7d",
                        checks=[RowCheck(name="f0_vs_f5", expr="f0 <= f5 + 1")]),
        ])
        t = time.perf_counter()
        result = store.ingest("driver_stats", table)
        seconds = time.perf_counter() - t
        assert result.row_count == table.num_rows and result.rejected_count == 0
        store.close()
        return {"seconds": seconds, "rows": result.row_count,
                "phases": {k: round(v, 4) for k, v in result.timings.items()}}


def child(which: str, rows: int) -> None:
    runner = {"plain": run_plain, "durable": run_durable, "featureledger": run_featureledger}
    out = runner[which](rows)
    print(json.dumps(out))


def fresh(which: str, rows: int) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", which, "--rows", str(rows)],
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--child", choices=["plain", "durable", "featureledger"])
    args = ap.parse_args()
    if args.child:
        child(args.child, args.rows)
        return
    results: dict[str, list[dict]] = {"plain": [], "durable": [], "featureledger": []}
    for _ in range(args.runs):
        for which in results:
            results[which].append(fresh(which, args.rows))
    summary = {}
    for which, runs in results.items():
        secs = [r["seconds"] for r in runs]
        summary[which] = {"median_s": statistics.median(secs), "min_s": min(secs),
                          "runs_s": secs}
    phases = {k: statistics.median(r["phases"][k] for r in results["featureledger"])
              for k in results["featureledger"][0]["phases"]}
    ratio_med = summary["featureledger"]["median_s"] / summary["plain"]["median_s"]
    ratio_min = summary["featureledger"]["min_s"] / summary["plain"]["min_s"]
    rows = results["plain"][0]["rows"]
    print(f"ingestion of {rows:,} rows x 10 features, {args.runs} fresh processes each")
    print(f"{'contender':<38}{'median s':>10}{'min s':>10}")
    print(f"{'pyarrow.parquet.write_table':<38}{summary['plain']['median_s']:>10.3f}"
          f"{summary['plain']['min_s']:>10.3f}")
    print(f"{'  same + fsync + sha256 of the file':<38}{summary['durable']['median_s']:>10.3f}"
          f"{summary['durable']['min_s']:>10.3f}")
    print(f"{'featureledger ingest (validate+profile)':<38}"
          f"{summary['featureledger']['median_s']:>10.3f}{summary['featureledger']['min_s']:>10.3f}")
    print(f"{'ratio (target <= 3.0x)':<38}{ratio_med:>9.2f}x{ratio_min:>9.2f}x")
    print("featureledger phases (median s): "
          + ", ".join(f"{k} {v:.3f}" for k, v in phases.items()))
    out = {
        "benchmark": "ingest", "rows": rows, "features": 10, "runs": args.runs,
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "results": summary, "featureledger_phases_median_s": phases,
        "ratio_median": ratio_med, "ratio_min": ratio_min, "target_ratio": TARGET_RATIO,
        "meets_target": ratio_med <= TARGET_RATIO,
    }
    dest = Path(__file__).parent / "results" / "ingest.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
