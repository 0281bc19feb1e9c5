"""Deterministic sample data for the demo repository.

Writes, next to this file (or to the folder given), covering the 7 days before END
(default 2026-01-08; ``--end today`` makes the data recent enough to serve online):
  driver_stats.parquet        hourly driver statistics
  driver_stats_bad.parquet    a batch with invalid rows (out of range, bad category, duplicates)
  driver_stats_late.parquet   a late correction of some rows already ingested
  customer_profile.parquet    daily customer profiles
  entity_rows.parquet         training examples: driver, customer, time, label

The same seed and END always produce byte-identical files.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

SEED = 7
DEFAULT_END = datetime(2026, 1, 8, tzinfo=UTC)
START = DEFAULT_END - timedelta(days=7)  # set by main()
DRIVERS = np.arange(1001, 1051, dtype=np.int64)
CUSTOMERS = np.arange(5001, 5101, dtype=np.int64)
VEHICLES = np.array(["bike", "sedan", "suv", "van"])


def _ts(hours: np.ndarray) -> pa.Array:
    start_us = int(START.timestamp() * 1_000_000)
    return pa.array(start_us + hours.astype(np.int64) * 3_600_000_000,
                    type=pa.timestamp("us", tz="UTC"))


def driver_stats(rng: np.random.Generator, hours: int = 7 * 24) -> pa.Table:
    h = np.repeat(np.arange(hours), len(DRIVERS))
    d = np.tile(DRIVERS, hours)
    n = len(h)
    rating = rng.uniform(3.0, 5.0, n)
    rating[rng.random(n) < 0.05] = np.nan  # some ratings unknown
    return pa.table({
        "driver_id": d,
        "event_timestamp": _ts(h),
        "conv_rate": rng.uniform(0.2, 0.95, n).astype(np.float32),
        "acc_rate": rng.uniform(0.5, 1.0, n).astype(np.float32),
        "avg_daily_trips": rng.integers(0, 40, n),
        "rating": pa.array(rating, from_pandas=True),
        "vehicle_type": VEHICLES[rng.integers(0, 4, n)],
    })


def bad_batch(rng: np.random.Generator) -> pa.Table:
    t = driver_stats(rng, hours=2).slice(0, 60)
    conv = t.column("conv_rate").to_numpy().copy()
    conv[:3] = 1.7  # out of range
    veh = t.column("vehicle_type").to_pylist()
    veh[10] = "rocket"  # not an allowed value
    t = t.set_column(t.schema.get_field_index("conv_rate"), "conv_rate",
                     pa.array(conv, pa.float32()))
    t = t.set_column(t.schema.get_field_index("vehicle_type"), "vehicle_type", pa.array(veh))
    return pa.concat_tables([t, t.slice(20, 2)])  # two duplicate (key, time) rows


def late_correction(rng: np.random.Generator) -> pa.Table:
    t = driver_stats(np.random.default_rng(SEED), hours=7 * 24)
    # the first 24 hours of ten drivers, recomputed with a fixed pipeline bug
    mask = np.isin(t.column("driver_id").to_numpy(), DRIVERS[:10]) & (
        np.arange(t.num_rows) < 24 * len(DRIVERS))
    t = t.filter(pa.array(mask))
    conv = np.clip(t.column("conv_rate").to_numpy() * 0.5, 0, 1).astype(np.float32)
    return t.set_column(t.schema.get_field_index("conv_rate"), "conv_rate", pa.array(conv))


def customer_profile(rng: np.random.Generator, days: int = 8) -> pa.Table:
    h = np.repeat(np.arange(days) * 24, len(CUSTOMERS))
    c = np.tile(CUSTOMERS, days)
    n = len(h)
    lo = rng.uniform(4, 12, n)
    return pa.table({
        "customer_id": c,
        "event_timestamp": _ts(h),
        "lifetime_trips": rng.integers(0, 500, n),
        "avg_fare": lo + rng.uniform(2, 10, n),
        "min_fare": lo,
        "max_fare": lo + rng.uniform(10, 30, n),
        "email": [f"rider{int(x)}@example.com" for x in c],
    })


def entity_rows(rng: np.random.Generator, n: int = 2000) -> pa.Table:
    hours = rng.uniform(12, 7 * 24, n)
    start_us = int(START.timestamp() * 1_000_000)
    ts = (start_us + (hours * 3_600_000_000).astype(np.int64))
    return pa.table({
        "driver_id": DRIVERS[rng.integers(0, len(DRIVERS), n)],
        "customer_id": CUSTOMERS[rng.integers(0, len(CUSTOMERS), n)],
        "event_timestamp": pa.array(ts, type=pa.timestamp("us", tz="UTC")),
        "completed": rng.random(n) < 0.7,
    })


def parse_end(text: str | None) -> datetime:
    if not text:
        return DEFAULT_END
    if text == "today":
        now = datetime.now(UTC)
        return datetime(now.year, now.month, now.day, tzinfo=UTC)
    end = datetime.fromisoformat(text)
    return end if end.tzinfo else end.replace(tzinfo=UTC)


def main(out: Path, end: datetime | None = None) -> list[Path]:
    global START
    START = (end or DEFAULT_END) - timedelta(days=7)
    rng = np.random.default_rng(SEED)
    tables = {
        "driver_stats.parquet": driver_stats(np.random.default_rng(SEED)),
        "driver_stats_bad.parquet": bad_batch(rng),
        "driver_stats_late.parquet": late_correction(rng),
        "customer_profile.parquet": customer_profile(rng),
        "entity_rows.parquet": entity_rows(rng),
    }
    written = []
    for name, table in tables.items():
        path = out / name
        pq.write_table(table, path)
        written.append(path)
    return written


if __name__ == "__main__":
    args = sys.argv[1:]
    end_arg = None
    if "--end" in args:
        i = args.index("--end")
        end_arg = args[i + 1]
        del args[i:i + 2]
    target = Path(args[0]) if args else Path(__file__).parent
    for p in main(target, parse_end(end_arg)):
        print(p)
