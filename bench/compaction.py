"""Compaction benchmark: point-in-time retrieval over 1,000 small commits, before and after
``featureledger compact``, and the time compaction takes.

Run::

    .venv/bin/python bench/compaction.py              # 1,000 commits x 1,000 rows, 5 runs
    .venv/bin/python bench/compaction.py --commits 200 --runs 3   # a quick run

Shape (deterministic, seed 11): 10,000 entities, ``--commits`` commits of ``--rows`` rows
each, ingested in event-time order (a view fed by a small batch every few minutes); features
f0-f4 float32, f5-f9 float64; TTL 7 days; 100,000 entity rows at random times over the
span. The store is built once under ``bench/.data/compaction`` and copied: one copy is
compacted (timed, in a fresh process whose peak RSS is reported beside the size of the
rows in memory: compaction streams, holding about one output file of ``--file-rows``
rows), the other left as it is.

Contenders, each a fresh process per run, round-robin (only the retrieval is timed):

* ``small_commits``: ``get_historical_features`` over the 1,000 commit folders;
* ``compacted``: the same call on the compacted copy;
* ``duckdb_asof``: a hand-written DuckDB ASOF join over the same rows in one Parquet file.

Every contender's answer is checked against ``small_commits`` (the content hash for the two
store layouts, the feature values for DuckDB). Output: a table and
``bench/results/compaction.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE / ".data" / "compaction"
RESULTS = HERE / "results"
ENTITIES = 10_000
ENTITY_ROWS = 100_000
SEED = 11
START_US = 1_704_067_200_000_000  # 2024-01-01 UTC
FEATURES = [f"f{i}" for i in range(10)]
METHODS = ("small_commits", "compacted", "duckdb_asof")


def _chunks(commits: int, rows: int):
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(SEED)
    step = 300_000_000  # 5 minutes per commit
    for i in range(commits):
        ts = START_US + i * step + np.sort(rng.integers(0, step, rows))
        cols = {"driver_id": rng.integers(0, ENTITIES, rows).astype(np.int64),
                "event_timestamp": pa.array(ts, pa.timestamp("us", tz="UTC"))}
        for j, f in enumerate(FEATURES):
            cols[f] = rng.random(rows).astype(np.float32 if j < 5 else np.float64)
        yield pa.table(cols)


def _entities(commits: int):
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(SEED + 1)
    span = commits * 300_000_000
    return pa.table({
        "driver_id": rng.integers(0, ENTITIES, ENTITY_ROWS).astype(np.int64),
        "event_timestamp": pa.array(START_US + rng.integers(0, span, ENTITY_ROWS),
                                    pa.timestamp("us", tz="UTC"))})


def _definitions():
    from featureledger import Entity, FeatureView, Field

    return [Entity(name="driver", join_keys={"driver_id": "int64"}),
            FeatureView(name="stats", entities=["driver"], ttl="7d",
                        fields=[Field(name=f, dtype="float32" if i < 5 else "float64")
                                for i, f in enumerate(FEATURES)])]


def _config(root: Path):
    from featureledger.config import ProjectConfig

    return ProjectConfig(root=root, compaction={"auto_after_commits": None})


def prepare(commits: int, rows: int, file_rows: int) -> tuple[Path, float, dict]:
    """The data folder (small-commit and compacted stores, one Parquet file, entities) and
    the compaction's seconds and result."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from featureledger import FeatureStore

    d = DATA / f"{commits}x{rows}-{file_rows}"
    small, compacted = d / "small", d / "compacted"
    done = d / "compaction.json"
    if done.exists():
        info = json.loads(done.read_text())
        return d, info["seconds"], info
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    store = FeatureStore(small, config=_config(small))
    store.apply(_definitions())
    tables = []
    for t in _chunks(commits, rows):
        store.ingest("stats", t)
        tables.append(t)
    store.close()
    pq.write_table(pa.concat_tables(tables), d / "features.parquet", row_group_size=1_000_000)
    pq.write_table(_entities(commits), d / "entities.parquet")
    shutil.copytree(small, compacted)
    out = d / "compact_child.json"
    subprocess.run([sys.executable, __file__, "--child", "compact", "--dir", str(d),
                    "--out", str(out), "--file-rows", str(file_rows)], check=True)
    info = json.loads(out.read_text())
    done.write_text(json.dumps(info))
    return d, info["seconds"], info


def _rss() -> int:
    import os

    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def compact_child(d: Path, out: Path, file_rows: int) -> None:
    """Compact the copy in this fresh process: seconds, and peak RSS against the rows'
    size in memory (compaction streams: it holds about one output file, not the view)."""
    import resource

    import pyarrow.parquet as pq

    from featureledger import FeatureStore

    root = d / "compacted"
    from featureledger.config import ProjectConfig

    store = FeatureStore(root, config=ProjectConfig(root=root, compaction={
        "auto_after_commits": None, "target_file_rows": file_rows}))
    data_bytes = sum(pq.ParquetFile(store.ctx.offline_store.path(f)).metadata.row_group(i)
                     .total_byte_size
                     for c in store.commits("stats", status=None) for f in c.files
                     for i in range(pq.ParquetFile(store.ctx.offline_store.path(f))
                                    .metadata.num_row_groups))
    before = _rss()
    start = time.perf_counter()
    (result,) = store.compact("stats")
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    store.close()
    out.write_text(json.dumps({
        "seconds": seconds, "peak_rss": peak, "rss_before": before,
        "peak_growth": peak - before, "data_bytes": data_bytes, "file_rows": file_rows,
        **{k: v for k, v in result.to_dict().items()
           if k in ("commits", "rows", "files_before", "files_after", "bytes")}}))


def child(method: str, d: Path, out: Path) -> None:
    import pyarrow.parquet as pq

    entities = pq.read_table(d / "entities.parquet")
    if method == "duckdb_asof":
        import duckdb

        con = duckdb.connect()
        con.register("e", entities)
        feats = ", ".join(f"CASE WHEN f.event_timestamp >= e.event_timestamp - INTERVAL 7 DAY "
                          f"THEN f.{c} END AS {c}" for c in FEATURES)
        sql = (f"SELECT e.driver_id, e.event_timestamp, {feats} FROM e ASOF LEFT JOIN "
               f"read_parquet('{d / 'features.parquet'}') f ON e.driver_id = f.driver_id "
               "AND e.event_timestamp >= f.event_timestamp")
        con.sql("SELECT 1").fetchall()
        start = time.perf_counter()
        table = con.sql(sql).to_arrow_table()
        seconds = time.perf_counter() - start
        total = sum(table.column(c).null_count for c in FEATURES)
        out.write_text(json.dumps({"seconds": seconds, "nulls": total}))
        return
    from featureledger import FeatureStore

    root = d / ("small" if method == "small_commits" else "compacted")
    store = FeatureStore(root, config=_config(root))
    refs = [f"stats:{f}" for f in FEATURES]
    store.registry.definitions.view("stats")  # open the registry before timing
    store.retrieval.engine  # connect DuckDB (setup, untimed as for duckdb_asof)  # noqa: B018
    start = time.perf_counter()
    ds = store.get_historical_features(entities, refs)
    seconds = time.perf_counter() - start
    table = ds.to_arrow()
    total = sum(table.column(c).null_count for c in FEATURES)
    store.close()
    out.write_text(json.dumps({"seconds": seconds, "hash": ds.content_hash, "nulls": total}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--commits", type=int, default=1000)
    ap.add_argument("--rows", type=int, default=1000, help="rows per commit")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--file-rows", type=int, default=100_000,
                    help="compaction.target_file_rows (rows per compacted file)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child == "compact":
        compact_child(args.dir, args.out, args.file_rows)
        return 0
    if args.child:
        child(args.child, args.dir, args.out)
        return 0
    d, compact_s, info = prepare(args.commits, args.rows, args.file_rows)
    runs: dict[str, list[dict]] = {m: [] for m in METHODS}
    tmp = d / "result.json"
    for _ in range(args.runs):
        for m in METHODS:
            subprocess.run([sys.executable, __file__, "--child", m, "--dir", str(d),
                            "--out", str(tmp)], check=True)
            runs[m].append(json.loads(tmp.read_text()))
    hashes = {r["hash"] for m in ("small_commits", "compacted") for r in runs[m]}
    nulls = {r["nulls"] for m in METHODS for r in runs[m]}
    same = len(hashes) == 1 and len(nulls) == 1
    med = {m: statistics.median(r["seconds"] for r in runs[m]) for m in METHODS}
    print(f"{args.commits} commits x {args.rows} rows, {ENTITY_ROWS} entity rows, "
          f"{args.runs} runs (median / min seconds)")
    print(f"{'contender':<15}{'median':>9}{'min':>9}{'x duckdb':>10}")
    for m in METHODS:
        secs = [r["seconds"] for r in runs[m]]
        print(f"{m:<15}{med[m]:>9.3f}{min(secs):>9.3f}{med[m] / med['duckdb_asof']:>10.2f}")
    print(f"compaction: {compact_s:.2f} s, {info['files_before']} -> {info['files_after']} "
          f"file(s); speed-up {med['small_commits'] / med['compacted']:.1f}x; "
          f"answers identical: {same}")
    print(f"compaction memory: peak RSS {info['peak_rss'] / 2**20:.0f} MiB, growth during "
          f"compact {info['peak_growth'] / 2**20:.0f} MiB for {info['data_bytes'] / 2**20:.0f} "
          f"MiB of rows (uncompressed), {info['file_rows']:,} rows per file")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "compaction.json").write_text(json.dumps({
        "machine": platform.platform(), "commits": args.commits, "rows": args.rows,
        "runs": runs, "median_seconds": med, "compaction": info,
        "answers_identical": same}, indent=2))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
