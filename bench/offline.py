"""Offline (point-in-time) retrieval benchmark: featureledger against Feast and plain libraries.

Run (one command; the Feast columns need ``bash bench/setup_feast.sh`` once, else they are
reported as missing)::

    .venv/bin/python bench/offline.py                      # sizes 100k,1M,5M,20M, 5 runs
    .venv/bin/python bench/offline.py --sizes 100k --runs 3   # a quick run

Shape (deterministic, seed 7): 10,000 entities, one row per entity per time slot over 90
days (10 / 100 / 500 / 2000 slots give 100k / 1M / 5M / 20M rows), each row at a random
instant inside its slot; features f0-f4 float32, f5-f9 float64; TTL 7 days. 100,000 entity
rows with random entities and random times over the 90 days, plus ``row_id`` and ``label``
columns. The same rows feed every contender: one Parquet file (snappy, 1M-row groups, as
featureledger writes its commits) for Feast, raw DuckDB and pandas; the same rows ingested
into a featureledger store with ``store.ingest`` (one commit per million rows). Data is
generated once under ``bench/.data/offline`` and reused.

Contenders, each measured in a fresh process per run (round-robin, so all see the same
machine state); only the retrieval is timed (imports, opening the store, connecting DuckDB
-- about 0.1 s per connection here, paid alike by both DuckDB-based contenders -- and reading
the entity frame are setup, not timed), and peak memory is the child's peak RSS
(``VmHWM``):

* ``featureledger``: ``store.get_historical_features`` (DuckDB ASOF joins over the commit
  files, recording the dataset in the registry and storing its entity rows);
* ``duckdb_asof``: a hand-written DuckDB ``ASOF LEFT JOIN`` on the Parquet file, TTL applied;
* ``pandas_merge_asof``: ``pd.read_parquet`` + ``pd.merge_asof(by=..., tolerance=7d)``;
* ``featureledger_compacted``: the same call on a copy of the store compacted with
  ``store.compact`` (files clustered by key, sorted by time, small row groups);
* ``spark`` / ``spark_sql`` / ``featureledger_lowmem`` (only with ``--methods``): the Spark
  engine (local[2]) on the compacted store, a hand-written Spark SQL range join on the
  plain file, and the DuckDB engine held to a ``memory_limit`` of 256MB on the commit
  files as ingested (its ASOF join spills);
* ``feast_file`` / ``feast_duckdb``: Feast 0.67 ``get_historical_features(...).to_df()``
  with its file (Dask) and DuckDB offline stores, run in ``bench/.venv-feast``.

Every contender's answer is compared with featureledger's, row by row on ``row_id``: the
same feature values (null where no row is within the TTL). Feast's file store drops entity
rows whose feature rows are all outside the TTL and collapses duplicate entity rows; the
table reports how many rows each contender returned and compares on those.

Output: a table (median and minimum seconds; median peak RSS of the child and its growth
during the call, "+GiB" = peak RSS minus the RSS just before the timed call, which leaves
out the interpreter and imports; ratios to the fastest plain library from the same run) and
``bench/results/offline.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE / ".data" / "offline"
RESULTS = HERE / "results"
FEAST_PYTHON = HERE / ".venv-feast" / "bin" / "python"

ENTITIES = 10_000
DAYS = 90
TTL_DAYS = 7
ENTITY_ROWS = 100_000
SEED = 7
START_US = 1_704_067_200_000_000  # 2024-01-01 UTC
SPAN_US = DAYS * 86_400_000_000
COMMIT_ROWS = 1_000_000
SIZES = {"100k": 10, "1M": 100, "5M": 500, "20M": 2000}  # name -> slots
FEATURES = [f"f{i}" for i in range(10)]
METHODS = ["featureledger", "featureledger_compacted", "duckdb_asof", "pandas_merge_asof",
           "feast_duckdb", "feast_file"]
# engines beyond the embedded default: --methods spark,spark_sql,featureledger_lowmem
MORE_METHODS = ["spark", "spark_sql", "featureledger_lowmem"]
LOWMEM = "256MB"  # below the working set from 5M rows up: DuckDB spills
REFERENCES = ("duckdb_asof", "pandas_merge_asof")
TARGET_TIME_RATIO = 1.3
TARGET_MEMORY_RATIO = 1.2
TARGET_20M_GIB = 3.0
GENERATION = 5  # bump when the data shape or the stored layout changes, so cached data is regenerated


# -- data ---------------------------------------------------------------------------------
def feature_chunks(slots: int):
    """The feature rows as Arrow tables of at most COMMIT_ROWS rows, in slot order."""
    import numpy as np
    import pyarrow as pa

    step = SPAN_US // slots
    per_chunk = max(1, COMMIT_ROWS // ENTITIES)
    for first in range(0, slots, per_chunk):
        n_slots = min(per_chunk, slots - first)
        rng = np.random.default_rng([SEED, slots, first])
        n = n_slots * ENTITIES
        slot = np.repeat(np.arange(first, first + n_slots, dtype=np.int64), ENTITIES)
        cols = {
            "entity_id": pa.array(np.tile(np.arange(ENTITIES, dtype=np.int64), n_slots)),
            "event_timestamp": pa.array(START_US + slot * step + rng.integers(0, step, n),
                                        pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        }
        for i in range(5):
            cols[f"f{i}"] = pa.array(rng.random(n, dtype=np.float32))
        for i in range(5, 10):
            cols[f"f{i}"] = pa.array(rng.random(n))
        yield pa.table(cols)


def entity_table():
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng([SEED, 0])
    return pa.table({
        "row_id": pa.array(np.arange(ENTITY_ROWS, dtype=np.int64)),
        "entity_id": pa.array(rng.integers(0, ENTITIES, ENTITY_ROWS, dtype=np.int64)),
        "event_timestamp": pa.array(START_US + rng.integers(0, SPAN_US, ENTITY_ROWS),
                                    pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        "label": pa.array(rng.integers(0, 2, ENTITY_ROWS, dtype=np.int8)),
    })


def prepare(size: str) -> Path:
    """Generate (once) the Parquet file, the entity rows and the featureledger store."""
    import pyarrow.parquet as pq

    d = DATA / size
    marker = d / "READY.json"
    if marker.exists() and json.loads(marker.read_text()).get("generation") == GENERATION:
        return d
    import shutil

    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    pq.write_table(entity_table(), d / "entities.parquet")
    from featureledger import Entity, FeatureStore, FeatureView, Field

    (d / "store").mkdir()
    store = FeatureStore(d / "store")
    store.apply([
        Entity(name="entity", join_keys={"entity_id": "int64"}),
        FeatureView(name="bench", entities=["entity"], ttl=f"{TTL_DAYS}d",
                    fields=[Field(name=f, dtype="float32" if i < 5 else "float64")
                            for i, f in enumerate(FEATURES)]),
    ])
    writer = None
    rows = 0
    t0 = time.perf_counter()
    for chunk in feature_chunks(SIZES[size]):
        if writer is None:
            # the settings featureledger's commit files use (snappy, 1M-row groups), so
            # every contender decodes the same kind of file
            writer = pq.ParquetWriter(d / "features.parquet", chunk.schema, compression="snappy")
        writer.write_table(chunk, row_group_size=COMMIT_ROWS)
        store.ingest("bench", chunk)
        rows += chunk.num_rows
    assert writer is not None
    writer.close()
    store.close()
    marker.write_text(json.dumps({"generation": GENERATION, "rows": rows,
                                  "seconds": time.perf_counter() - t0}))
    return d


# -- contenders (run in a child process) --------------------------------------------------
_BASELINE = {"rss": 0, "cpu": 0.0}


def cpu_seconds() -> float:
    """CPU time of this process so far, every thread (user + system)."""
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def peak_rss_bytes(resource) -> int:
    """This process's peak resident memory: ``VmHWM`` (the high-water mark of this
    program's memory) where /proc has it, else ``ru_maxrss``, which on Linux survives
    ``execve`` and so carries the launching process's peak into a fresh child."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def mark_baseline() -> None:
    """Remember the RSS and CPU time right before the timed call (imports and setup done)."""
    with open("/proc/self/statm") as f:
        _BASELINE["rss"] = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    _BASELINE["cpu"] = cpu_seconds()


def run_featureledger(d: Path, entities):
    return _timed_featureledger(d / "store", entities)


def compacted_store(d: Path) -> Path:
    """(Once) a copy of the store with its commits compacted: the store's own layout."""
    import shutil

    from featureledger import FeatureStore

    dst = d / "store_compacted"
    if (dst / "COMPACTED").exists():
        return dst
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(d / "store", dst)
    store = FeatureStore(dst)
    t0 = time.perf_counter()
    results = store.compact("bench", min_commits=1)
    store.gc(grace_seconds=0)
    store.close()
    (dst / "COMPACTED").write_text(json.dumps({
        "seconds": time.perf_counter() - t0, "files": [r.files_after for r in results]}))
    return dst


def _timed_featureledger(root: Path, entities, config=None):
    from featureledger import FeatureStore

    store = FeatureStore(root, config=config)
    store.registry.definitions.view("bench")  # open the registry before timing
    store.retrieval.engine  # connect the engine (setup, untimed)  # noqa: B018
    mark_baseline()
    t0 = time.perf_counter()
    ds = store.get_historical_features(entities, [f"bench:{f}" for f in FEATURES])
    out = ds.to_arrow()
    return time.perf_counter() - t0, out


def run_featureledger_compacted(d: Path, entities):
    return _timed_featureledger(compacted_store(d), entities)


def run_featureledger_lowmem(d: Path, entities):
    """DuckDB held to a memory limit below the working set: it spills and finishes. On the
    commit files as ingested, so that the ASOF join (a sort DuckDB spills) does the work;
    the compacted layout's merge holds one file at a time anyway."""
    from featureledger.config import load_config

    root = d / "store"
    cfg = load_config(root, environ={}, overrides={
        "offline_engine": {"type": "duckdb", "memory_limit": LOWMEM,
                           "temp_directory": str(DATA / "spill")}})
    return _timed_featureledger(root, entities, cfg)


def run_spark(d: Path, entities):
    """The Spark engine (local[2]) on the store's compacted layout; the session starts
    before the timed call."""
    from featureledger.config import load_config

    root = compacted_store(d)
    cfg = load_config(root, environ={}, overrides={
        "offline_engine": {"type": "spark", "master": "local[2]", "shuffle_partitions": 8,
                           "conf": {"spark.driver.memory": "6g"}}})
    from featureledger import FeatureStore

    FeatureStore(root, config=cfg).retrieval.engine.spark.range(1).count()  # warm the JVM
    return _timed_featureledger(root, entities, cfg)


def run_spark_sql(d: Path, entities):
    """A hand-written Spark SQL range join on the plain Parquet file: feature rows of the
    same key within the TTL before the entity time, the latest one per entity row."""
    from featureledger.offline.spark.engine import spark_session

    spark = spark_session("local[2]", conf={"spark.driver.memory": "6g"},
                          shuffle_partitions=8)
    spark.range(1).count()
    edf = spark.createDataFrame(entities)
    edf.createOrReplaceTempView("e")
    spark.read.parquet(str(d / "features.parquet")).createOrReplaceTempView("f")
    ttl_us = TTL_DAYS * 86_400_000_000
    feats = ", ".join(f"f.{c}" for c in FEATURES)
    sql = (f"SELECT row_id, entity_id, event_timestamp, label, {', '.join(FEATURES)} FROM ("
           f"SELECT e.*, {feats}, row_number() OVER (PARTITION BY e.row_id ORDER BY "
           "f.event_timestamp DESC) AS rn FROM e LEFT JOIN f ON e.entity_id = f.entity_id "
           "AND f.event_timestamp <= e.event_timestamp AND "
           f"unix_micros(e.event_timestamp) - unix_micros(f.event_timestamp) <= {ttl_us}"
           ") WHERE rn = 1")
    mark_baseline()
    t0 = time.perf_counter()
    out = spark.sql(sql).toArrow()
    return time.perf_counter() - t0, out


def run_duckdb_asof(d: Path, entities):
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    mark_baseline()
    t0 = time.perf_counter()
    con.register("entities", entities)
    ttl_us = TTL_DAYS * 86_400_000_000
    feats = ", ".join(f"CASE WHEN epoch_us(e.event_timestamp) - epoch_us(f.event_timestamp) "
                      f"<= {ttl_us} THEN f.{c} END AS {c}" for c in FEATURES)
    out = con.sql(
        f"SELECT e.*, {feats} FROM entities e ASOF LEFT JOIN "
        f"read_parquet('{d / 'features.parquet'}') f ON e.entity_id = f.entity_id "
        "AND e.event_timestamp >= f.event_timestamp").to_arrow_table()
    return time.perf_counter() - t0, out


def run_pandas_merge_asof(d: Path, entities):
    import pandas as pd
    import pyarrow as pa

    edf = entities.to_pandas()
    mark_baseline()
    t0 = time.perf_counter()
    fdf = pd.read_parquet(d / "features.parquet")
    fdf = fdf.sort_values("event_timestamp", kind="stable")
    edf = edf.sort_values("event_timestamp", kind="stable")
    out = pd.merge_asof(edf, fdf.rename(columns={"event_timestamp": "feature_ts"}),
                        left_on="event_timestamp", right_on="feature_ts", by="entity_id",
                        tolerance=pd.Timedelta(days=TTL_DAYS), direction="backward")
    elapsed = time.perf_counter() - t0
    return elapsed, pa.Table.from_pandas(out.drop(columns=["feature_ts"]), preserve_index=False)


def _feast_store(d: Path, kind: str):
    import datetime as dt
    import tempfile

    from feast import Entity, FeatureStore, FeatureView, Field, FileSource
    from feast.types import Float32, Float64
    from feast.value_type import ValueType

    repo = Path(tempfile.mkdtemp(prefix=f"feast_{kind}_"))
    (repo / "feature_store.yaml").write_text(
        f"project: bench\nregistry: {repo / 'registry.db'}\nprovider: local\n"
        f"offline_store:\n  type: {kind}\n"
        f"online_store:\n  type: sqlite\n  path: {repo / 'online.db'}\n"
        "entity_key_serialization_version: 3\n")
    store = FeatureStore(repo_path=str(repo))
    entity = Entity(name="entity", join_keys=["entity_id"], value_type=ValueType.INT64)
    source = FileSource(path=str(d / "features.parquet"), timestamp_field="event_timestamp")
    view = FeatureView(name="bench", entities=[entity], ttl=dt.timedelta(days=TTL_DAYS),
                       schema=[Field(name=f, dtype=Float32 if i < 5 else Float64)
                               for i, f in enumerate(FEATURES)], source=source)
    store.apply([entity, view])
    return store


def _run_feast(kind: str, d: Path, entities):
    import pyarrow as pa

    store = _feast_store(d, kind)
    edf = entities.to_pandas()
    mark_baseline()
    t0 = time.perf_counter()
    job = store.get_historical_features(entity_df=edf,
                                        features=[f"bench:{f}" for f in FEATURES])
    df = job.to_df()
    elapsed = time.perf_counter() - t0
    return elapsed, pa.Table.from_pandas(df, preserve_index=False)


def run_feast_file(d: Path, entities):
    return _run_feast("file", d, entities)


def run_feast_duckdb(d: Path, entities):
    return _run_feast("duckdb", d, entities)


def child(method: str, size: str, result: Path, save: Path | None) -> None:
    """One measurement in this (fresh) process; writes seconds and peak RSS as JSON."""
    import resource

    import pyarrow.parquet as pq

    d = DATA / size
    entities = pq.read_table(d / "entities.parquet")
    elapsed, out = globals()[f"run_{method}"](d, entities)
    cpu = cpu_seconds() - _BASELINE["cpu"]
    peak = peak_rss_bytes(resource)
    if save is not None:
        cols = ["row_id", *FEATURES]
        pq.write_table(out.select(cols).sort_by("row_id"), save)
    result.write_text(json.dumps({"seconds": elapsed, "cpu_s": cpu, "peak_rss": peak,
                                  "peak_delta": peak - _BASELINE["rss"],
                                  "rows": out.num_rows}))


# -- the parent -----------------------------------------------------------------------------
def measure(method: str, size: str, run: int, save: Path | None) -> dict | None:
    python = str(FEAST_PYTHON) if method.startswith("feast") else sys.executable
    result = DATA / size / f"result_{method}.json"
    result.unlink(missing_ok=True)
    cmd = [python, str(Path(__file__).resolve()), "--child", method, "--size", size,
           "--result", str(result)]
    if save is not None:
        cmd += ["--save", str(save)]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    if proc.returncode != 0 or not result.exists():
        err = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        print(f"  {method} {size} run {run}: FAILED ({' | '.join(err)})", flush=True)
        return {"error": "\n".join(err)}
    return json.loads(result.read_text())


def compare(base: Path, other: Path) -> dict:
    """Row-by-row comparison on row_id; counts rows returned and value mismatches."""
    import numpy as np
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    a, b = pq.read_table(base), pq.read_table(other)
    ids_b = b.column("row_id")
    unique_b = pc.unique(ids_b)
    mask = pc.is_in(a.column("row_id"), value_set=unique_b)
    a_sub = a.filter(mask)
    b_sub = b.group_by("row_id", use_threads=False).aggregate(
        [(f, "first") for f in FEATURES]).sort_by("row_id")
    mismatches = 0
    for f in FEATURES:
        x = a_sub.column(f).to_numpy(zero_copy_only=False).astype(np.float64)
        y = b_sub.column(f"{f}_first").to_numpy(zero_copy_only=False).astype(np.float64)
        same = (x == y) | (np.isnan(x) & np.isnan(y))
        mismatches += int((~same).sum())
    return {"rows_returned": b.num_rows, "distinct_rows": len(unique_b),
            "rows_dropped": a.num_rows - len(unique_b), "rows_compared": a_sub.num_rows,
            "value_mismatches": mismatches}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="100k,1M,5M,20M", help="comma-separated: 100k,1M,5M,20M")
    ap.add_argument("--runs", type=int, default=5, help="fresh-process runs per contender")
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated contenders")
    ap.add_argument("--feast-max-size", default="5M",
                    help="largest size Feast runs at (its file store needs ~12 GiB at 5M)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--size", help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--save", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.size, args.result, args.save)
        return 0

    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [s for s in sizes if s not in SIZES] + [m for m in methods
                                                     if m not in METHODS + MORE_METHODS]
    if unknown:
        ap.error(f"unknown size/method: {', '.join(unknown)}")
    feast_ok = FEAST_PYTHON.exists()
    if not feast_ok and any(m.startswith("feast") for m in methods):
        print("Feast is not set up (run: bash bench/setup_feast.sh); skipping its columns")
        methods = [m for m in methods if not m.startswith("feast")]
    order = list(SIZES)
    report: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                "platform": platform.platform()},
                    "runs": args.runs, "sizes": {}}
    for size in sizes:
        d = prepare(size)
        meta = json.loads((d / "READY.json").read_text())
        print(f"== {size}: {meta['rows']:,} feature rows, {ENTITY_ROWS:,} entity rows", flush=True)
        todo = [m for m in methods if not (m.startswith("feast")
                                           and order.index(size) > order.index(args.feast_max_size))]
        runs: dict[str, list[dict]] = {m: [] for m in todo}
        outputs = {m: d / f"output_{m}.parquet" for m in todo}
        for r in range(args.runs):
            for m in todo:
                if runs[m] and "error" in runs[m][-1]:
                    continue
                res = measure(m, size, r, outputs[m] if r == 0 else None)
                runs[m].append(res)
                if "error" not in res:
                    print(f"  {m:18s} run {r}: {res['seconds']:.3f} s, "
                          f"{res['peak_rss'] / 2**30:.2f} GiB", flush=True)
        entry: dict = {"feature_rows": meta["rows"], "methods": {}}
        for m in todo:
            ok = [x for x in runs[m] if "error" not in x]
            if not ok:
                entry["methods"][m] = {"error": runs[m][-1]["error"] if runs[m] else "not run"}
                continue
            secs = [x["seconds"] for x in ok]
            rss = [x["peak_rss"] for x in ok]
            delta = [x["peak_delta"] for x in ok]
            e = {"median_s": statistics.median(secs), "min_s": min(secs), "runs_s": secs,
                 "cpu_median_s": statistics.median(x.get("cpu_s", 0.0) for x in ok),
                 "peak_rss_median": statistics.median(rss), "peak_rss_max": max(rss),
                 "peak_delta_median": statistics.median(delta)}
            if m != "featureledger" and "featureledger" in todo and outputs[m].exists() \
                    and outputs["featureledger"].exists():
                e["check"] = compare(outputs["featureledger"], outputs[m])
            entry["methods"][m] = e
        refs = [entry["methods"][m]["median_s"] for m in REFERENCES
                if "median_s" in entry["methods"].get(m, {})]
        fl = entry["methods"].get("featureledger", {})
        if refs and "median_s" in fl:
            fastest = min(refs)
            entry["fastest_reference_s"] = fastest
            entry["time_ratio"] = fl["median_s"] / fastest
            ddb = entry["methods"].get("duckdb_asof", {})
            if "peak_rss_median" in ddb:
                entry["memory_ratio"] = fl["peak_rss_median"] / ddb["peak_rss_median"]
                entry["memory_delta_ratio"] = (fl["peak_delta_median"]
                                               / max(ddb["peak_delta_median"], 1))
        meth = entry["methods"]
        for name, a, b in (("compacted_vs_duckdb_asof", "featureledger_compacted",
                            "duckdb_asof"), ("spark_vs_spark_sql", "spark", "spark_sql"),
                           ("spark_vs_duckdb", "spark", "featureledger_compacted")):
            if "median_s" in meth.get(a, {}) and "median_s" in meth.get(b, {}):
                entry[name] = meth[a]["median_s"] / meth[b]["median_s"]
                if not name.startswith("spark") and meth[b]["cpu_median_s"]:
                    # CPU time: steadier than wall time on a machine other jobs share
                    entry[f"{name}_cpu"] = meth[a]["cpu_median_s"] / meth[b]["cpu_median_s"]
        if "peak_rss_median" in meth.get("featureledger_compacted", {}) and \
                "peak_rss_median" in meth.get("duckdb_asof", {}):
            entry["compacted_memory_ratio"] = (meth["featureledger_compacted"]["peak_rss_median"]
                                               / meth["duckdb_asof"]["peak_rss_median"])
        report["sizes"][size] = entry
        print_table({size: entry})
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "offline.json"
    if out.exists():  # a quick run of some sizes keeps the others' last results
        try:
            previous = json.loads(out.read_text()).get("sizes", {})
        except (OSError, ValueError):
            previous = {}
        report["sizes"] = {**{k: v for k, v in previous.items() if k not in report["sizes"]},
                           **report["sizes"]}
    out.write_text(json.dumps(report, indent=2))
    print()
    print_table(report["sizes"])
    print(f"\nwrote {out}")
    return 0


def print_table(sizes: dict) -> None:
    head = (f"{'rows':>5} {'contender':18} {'median s':>9} {'min s':>8} {'cpu s':>6} "
            f"{'peak GiB':>9} "
            f"{'+GiB':>6} {'x fastest ref':>13} {'rows back':>9} {'mismatch':>8}")
    print(head)
    print("-" * len(head))
    for size, entry in sizes.items():
        fastest = entry.get("fastest_reference_s")
        for m, e in entry["methods"].items():
            if "error" in e:
                print(f"{size:>5} {m:18} failed: {e['error'][:60]}")
                continue
            ratio = f"{e['median_s'] / fastest:.2f}" if fastest else "-"
            chk = e.get("check", {})
            print(f"{size:>5} {m:18} {e['median_s']:9.3f} {e['min_s']:8.3f} "
                  f"{e.get('cpu_median_s', 0.0):6.2f} "
                  f"{e['peak_rss_median'] / 2**30:9.2f} {e['peak_delta_median'] / 2**30:6.2f} "
                  f"{ratio:>13} "
                  f"{chk.get('distinct_rows', ENTITY_ROWS):>9} "
                  f"{chk.get('value_mismatches', '-'):>8}")
        if "time_ratio" in entry:
            mem = entry.get("memory_ratio")
            line = (f"{'':>5} featureledger / fastest reference: time "
                    f"{entry['time_ratio']:.2f}x (target <= {TARGET_TIME_RATIO})")
            if mem:
                line += (f"; peak RSS vs raw DuckDB {mem:.2f}x, growth during the call "
                         f"{entry['memory_delta_ratio']:.2f}x (target <= {TARGET_MEMORY_RATIO})")
            print(line)
        for key, what in (("compacted_vs_duckdb_asof", "compacted layout / hand-written "
                           "DuckDB ASOF on one file (target <= 0.8)"),
                          ("spark_vs_spark_sql", "Spark engine / hand-written Spark SQL range "
                           "join (target <= 1.2)"),
                          ("spark_vs_duckdb", "Spark engine / DuckDB engine, same layout")):
            if key in entry:
                cpu = (f" (CPU time {entry[key + '_cpu']:.2f}x)" if key + "_cpu" in entry
                       else "")
                print(f"{'':>5} {what}: {entry[key]:.2f}x{cpu}")
        if "compacted_memory_ratio" in entry:
            print(f"{'':>5} compacted layout peak RSS / hand-written DuckDB: "
                  f"{entry['compacted_memory_ratio']:.2f}x (target <= 1.2)")


if __name__ == "__main__":
    sys.exit(main())
