"""Windowed aggregation benchmark: featureledger against the same query hand-written in DuckDB.

Run (one command; data is generated once under ``bench/.data/aggregations`` and reused)::

    .venv/bin/python bench/aggregations.py                         # 10M events, 3 runs
    .venv/bin/python bench/aggregations.py --events 2M --runs 3    # a smaller size

Shape (deterministic, seed 11): ``--events`` trip events over 30 days for ``--entities``
riders (default 10,000), each at a random instant, with a float64 ``fare`` (5% null);
ingested into a featureledger store in time order, one commit per million rows (daily
batches, so commits do not overlap in event time). 100,000 entity rows (``--entity-rows``):
random riders at random instants over the 30 days. The question: 7-day sliding count,
sum and mean of ``fare`` per entity row, ``t - 7d < event_ts <= t``.

Contenders, each run in a fresh process per run (round-robin); only the call is timed
(imports, opening the store or connection and reading the entity rows are setup):

* ``featureledger``: ``store.get_historical_features(entity_rows, ["trips:fare_count_7d",
  "trips:fare_sum_7d", "trips:fare_mean_7d"])`` (the DuckDB engine's ``window_aggregate``
  over the commit files, recording the dataset and storing its entity rows);
* ``duckdb_sql``: the same query written by hand against one Parquet file of the same rows:
  a range join on rider and the window, grouped by entity row;
* ``feast_tiled`` (``--feast``, after ``bash bench/setup_feast.sh``): Feast's tiled
  aggregation on the same events, 1-hour hops (see :func:`feast_tiled`); its windows end
  at hop boundaries, so its answers are not checked, only the share of equal counts shown.

Every run's answer is checked against the hand-written one's (counts equal, sums and means
within 1e-9 relative). Output: a table (median and minimum seconds, median peak RSS) and
``bench/results/aggregations.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DATA = HERE / ".data" / "aggregations"
RESULTS = HERE / "results"
DAYS = 30
SEC = 1_000_000
START = 1_704_067_200 * SEC  # 2024-01-01T00:00:00Z
REFS = ["trips:fare_count_7d", "trips:fare_sum_7d", "trips:fare_mean_7d"]
FEAST_PYTHON = HERE / ".venv-feast" / "bin" / "python"  # bash bench/setup_feast.sh
FEAST_HOP = __import__("datetime").timedelta(hours=1)
HAND_SQL = """
SELECT e.row_id, count(f.fare) AS fare_count_7d, sum(f.fare) AS fare_sum_7d,
       avg(f.fare) AS fare_mean_7d
FROM entities e
LEFT JOIN read_parquet('{path}') f
  ON e.rider_id = f.rider_id AND f.event_timestamp <= e.event_timestamp
 AND f.event_timestamp > e.event_timestamp - INTERVAL 7 DAY
GROUP BY e.row_id
"""


def size(text: str) -> int:
    t = text.lower().replace("_", "")
    mult = {"k": 1_000, "m": 1_000_000}.get(t[-1], 1)
    return int(float(t.rstrip("km")) * mult)


def prepare(events: int, entities: int, entity_rows: int) -> Path:
    """Parquet events, a store with the same rows ingested, and the entity rows."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = DATA / f"{events}_{entities}_{entity_rows}"
    if (root / "done").exists():
        return root
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(11)
    ts = np.sort(rng.integers(START, START + DAYS * 86_400 * SEC, events))
    rider = rng.integers(0, entities, events)
    fare = rng.gamma(2.0, 8.0, events).round(2)
    null = rng.random(events) < 0.05
    table = pa.table({
        "rider_id": pa.array(rider, pa.int64()),
        "event_timestamp": pa.array(ts, pa.timestamp("us", tz="UTC")),
        "fare": pa.array(fare, pa.float64(), mask=null)})
    pq.write_table(table, root / "events.parquet", row_group_size=1_000_000)
    ents = pa.table({
        "row_id": pa.array(np.arange(entity_rows), pa.int64()),
        "rider_id": pa.array(rng.integers(0, entities, entity_rows), pa.int64()),
        "event_timestamp": pa.array(rng.integers(START, START + DAYS * 86_400 * SEC,
                                                 entity_rows), pa.timestamp("us", tz="UTC"))})
    pq.write_table(ents, root / "entities.parquet")
    from featureledger import Aggregation, Entity, FeatureStore, FeatureView, Field

    (root / "repo").mkdir(exist_ok=True)
    store = FeatureStore(root / "repo")
    store.apply([Entity(name="rider", join_keys={"rider_id": "int64"}), FeatureView(
        name="trips", entities=["rider"], fields=[Field(name="fare", dtype="float64")],
        aggregations=[Aggregation(column="fare", function=f, window="7d")
                      for f in ("count", "sum", "mean")])])
    for i in range(0, events, 1_000_000):
        store.ingest("trips", table.slice(i, 1_000_000))
    store.close()
    (root / "done").write_text("ok")
    return root


def child(contender: str, root: Path, out: Path) -> None:
    """One timed call in this (fresh) process; the answer goes to ``out``."""
    import pyarrow.parquet as pq

    entities = pq.read_table(root / "entities.parquet")
    if contender == "featureledger":
        from featureledger import FeatureStore

        store = FeatureStore(root / "repo")
        t0 = time.perf_counter()
        table = store.get_historical_features(entities, REFS).to_arrow()
        seconds = time.perf_counter() - t0
        store.close()
    elif contender == "feast_tiled":
        seconds, table = feast_tiled(root, entities)
    else:
        import duckdb

        con = duckdb.connect()
        con.execute("SET TimeZone = 'UTC'")
        con.register("entities", entities)
        t0 = time.perf_counter()
        table = con.sql(HAND_SQL.format(path=root / "events.parquet")).to_arrow_table()
        seconds = time.perf_counter() - t0
    table = table.select(["row_id", "fare_count_7d", "fare_sum_7d", "fare_mean_7d"])
    pq.write_table(table.sort_by("row_id"), out)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024  # GiB (Linux: KiB)
    print(json.dumps({"seconds": seconds, "peak_rss_gib": rss}))


def feast_tiled(root: Path, entities: Any) -> tuple[float, Any]:
    """Feast's tiled aggregation (``feast.aggregation.tiling``: cumulative tiles per hop,
    windowed by subtracting the tile one window back), called on pandas exactly as
    Feast's Ray compute engine calls it, then each entity row takes the window that ends
    at the last tile end at or before its time (``merge_asof``). Feast runs tiling only
    in its Ray and Spark compute engines, for stream feature views, and only to
    materialize the latest window per entity; its historical retrieval does not compute
    windowed aggregations at all, so this is the closest Feast comes."""
    import datetime as dt

    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq
    from feast.aggregation import Aggregation
    from feast.aggregation.tiling.orchestrator import apply_sawtooth_window_tiling
    from feast.aggregation.tiling.tile_subtraction import convert_cumulative_to_windowed

    events = pq.read_table(root / "events.parquet").to_pandas()
    ents = entities.to_pandas()
    week = dt.timedelta(days=7)
    aggs = [Aggregation(column="fare", function=f, time_window=week,
                        name=f"fare_{n}_7d")
            for f, n in (("count", "count"), ("sum", "sum"), ("mean", "mean"))]
    t0 = time.perf_counter()
    tiles = apply_sawtooth_window_tiling(df=events, aggregations=aggs,
                                         group_by_keys=["rider_id"],
                                         timestamp_col="event_timestamp", window_size=week,
                                         hop_size=FEAST_HOP)
    windows = convert_cumulative_to_windowed(tiles_df=tiles, entity_keys=["rider_id"],
                                             timestamp_col="event_timestamp",
                                             window_size=week, aggregations=aggs)
    windows = windows.sort_values("event_timestamp")
    windows["event_timestamp"] = pd.to_datetime(windows["event_timestamp"], utc=True)
    out = pd.merge_asof(ents.sort_values("event_timestamp"), windows, on="event_timestamp",
                        by="rider_id", direction="backward")
    seconds = time.perf_counter() - t0
    out = out.rename(columns={c: c for c in out.columns})
    return seconds, pa.Table.from_pandas(out[["row_id", "fare_count_7d", "fare_sum_7d",
                                              "fare_mean_7d"]], preserve_index=False)


def same_answers(a: Path, b: Path) -> bool:
    import math

    import pyarrow.parquet as pq

    x, y = pq.read_table(a).to_pydict(), pq.read_table(b).to_pydict()
    if x["row_id"] != y["row_id"] or x["fare_count_7d"] != y["fare_count_7d"]:
        return False
    for col in ("fare_sum_7d", "fare_mean_7d"):
        for u, v in zip(x[col], y[col], strict=True):
            if (u is None) != (v is None) or (u is not None and not math.isclose(
                    u, v, rel_tol=1e-9)):
                return False
    return True


def equal_counts(a: Path, b: Path) -> float:
    """The share of entity rows whose 7-day count is the same in both answers."""
    import pyarrow.parquet as pq

    x = dict(zip(*pq.read_table(a).select(["row_id", "fare_count_7d"]).to_pydict().values(),
                 strict=True))
    y = pq.read_table(b).select(["row_id", "fare_count_7d"]).to_pydict()
    same = sum(1 for r, c in zip(y["row_id"], y["fare_count_7d"], strict=True)
               if (x.get(r) or 0) == c)
    return same / max(1, len(y["row_id"]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--events", default="10M")
    p.add_argument("--entities", default="10k")
    p.add_argument("--entity-rows", default="100k")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--child", choices=["featureledger", "duckdb_sql", "feast_tiled"])
    p.add_argument("--feast", action="store_true",
                   help="also Feast's tiled aggregation (bash bench/setup_feast.sh first)")
    p.add_argument("--timeout", type=float, default=1800,
                   help="seconds a run may take before it counts as not finished")
    p.add_argument("--root")
    p.add_argument("--out")
    args = p.parse_args()
    if args.child:
        child(args.child, Path(args.root), Path(args.out))
        return
    events, entities, rows = size(args.events), size(args.entities), size(args.entity_rows)
    t0 = time.perf_counter()
    root = prepare(events, entities, rows)
    print(f"data ready in {time.perf_counter() - t0:.1f} s: {root}")
    contenders = ["featureledger", "duckdb_sql"]
    if args.feast:
        if not FEAST_PYTHON.exists():
            sys.exit("--feast needs Feast's environment: bash bench/setup_feast.sh")
        contenders.append("feast_tiled")
    runs: dict[str, list[dict[str, float]]] = {c: [] for c in contenders}
    checked = True
    for i in range(args.runs):
        for c in contenders:  # round-robin: all see the same machine state
            out = root / f"answer_{c}.parquet"
            python = str(FEAST_PYTHON) if c == "feast_tiled" else sys.executable
            try:
                proc = subprocess.run(
                    [python, __file__, "--child", c, "--root", str(root), "--out", str(out)],
                    check=True, capture_output=True, text=True, timeout=args.timeout)
            except subprocess.TimeoutExpired:
                runs[c].append({"seconds": float("inf"), "peak_rss_gib": float("nan")})
                continue
            runs[c].append(json.loads(proc.stdout.strip().splitlines()[-1]))
        checked = checked and same_answers(root / "answer_featureledger.parquet",
                                           root / "answer_duckdb_sql.parquet")
        print(f"run {i + 1}/{args.runs}: " + ", ".join(
            f"{c} {runs[c][-1]['seconds']:.2f} s" for c in contenders))
    base = statistics.median(r["seconds"] for r in runs["duckdb_sql"])
    summary = {}
    print(f"\n7-day count/sum/mean: {events:,} events, {entities:,} entities, "
          f"{rows:,} entity rows; answers equal: {checked}")
    print(f"{'contender':<15} {'median s':>9} {'min s':>7} {'ratio':>6} {'peak RSS GiB':>13}")
    for c in contenders:
        secs = [r["seconds"] for r in runs[c]]
        med = statistics.median(secs)
        rss = statistics.median(r["peak_rss_gib"] for r in runs[c])
        summary[c] = {"median_s": round(med, 3), "min_s": round(min(secs), 3),
                      "ratio_to_duckdb_sql": round(med / base, 3),
                      "peak_rss_gib": round(rss, 3), "runs_s": [round(s, 3) for s in secs]}
        print(f"{c:<15} {med:>9.2f} {min(secs):>7.2f} {med / base:>6.2f} {rss:>13.2f}")
    if "feast_tiled" in runs and (root / "answer_feast_tiled.parquet").exists():
        summary["feast_tiled"]["counts_equal_share"] = round(equal_counts(
            root / "answer_feast_tiled.parquet", root / "answer_duckdb_sql.parquet"), 4)
        print("feast_tiled answers at its hop: counts equal to the exact ones for "
              f"{summary['feast_tiled']['counts_equal_share']:.1%} of entity rows")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "aggregations.json").write_text(json.dumps({
        "events": events, "entities": entities, "entity_rows": rows, "runs": args.runs,
        "answers_equal": checked, "machine": platform.platform(),
        "cpus": __import__("os").cpu_count(), "results": summary}, indent=2) + "\n")
    if not checked:
        sys.exit("the answers differ: featureledger and the hand-written query disagree")


if __name__ == "__main__":
    main()
