"""Drift benchmark: featureledger's drift of 10 features over N rows against an N-row
baseline, from stored profiles and exactly from the data, vs the same statistics computed
directly with numpy and scipy on the same arrays in memory; and what the per-ingestion
drift check adds to the 1M-row ingestion of ``bench/ingest.py``.

Run: ``.venv/bin/python bench/drift.py [--rows 10000000] [--commits 10] [--runs 3]
[--ingest-runs 5] [--ingest-only]``

Shape: features f0-f9 float64 (f0-f4 of the current side shifted by half a standard
deviation), one row per driver per commit; the baseline is ``--commits`` commits of
``rows / commits`` rows, and so is the current side. The repository is built once (not
timed). Each measurement runs in a fresh process, the contenders alternating:

* ``direct``: the arrays are generated in memory (not timed), then per feature PSI over
  the baseline's deciles (``numpy.quantile`` + ``searchsorted``), ``scipy.stats.ks_2samp``
  (asymptotic p-value), mean shift and null rate;
* ``profiles``: ``store.drift(view, baseline="commits:A..B", current="commits:C..D")``,
  merging the commits' stored t-digest sketches, no data read;
* ``data``: the same with ``exact=True``: every row read through the offline engine
  (DuckDB), then the same statistics exactly.

Targets: from profiles at least 50x faster than direct; from data at most 1.5x direct.

Then the ingestion overhead: the 1M-row table of ``bench/ingest.py`` ingested into a view
that already holds one such commit, without a quality policy and with one (drift against
the previous commit, checked inside the commit's registry transaction): target at most
10% more. ``--ingest-only`` measures only this (writes ``bench/results/drift_ingest.json``).

Prints tables and writes ``bench/results/drift.json``.
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

FEATURES = 10
SHIFTED = 5
SHIFT_SD = 0.5
PROFILE_TARGET = 50.0
DATA_TARGET = 1.5
INGEST_TARGET = 0.10


def make_commit(index: int, rows: int, current: bool) -> Any:
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(1000 * int(current) + index)
    cols: dict[str, Any] = {
        "driver_id": pa.array(np.arange(rows, dtype=np.int64)),
        "event_timestamp": pa.array(
            np.full(rows, 1_704_067_200_000_000 + index * 3_600_000_000, dtype=np.int64)
        ).cast(pa.timestamp("us", tz="UTC")),
    }
    for i in range(FEATURES):
        shift = SHIFT_SD if current and i < SHIFTED else 0.0
        cols[f"f{i}"] = pa.array(rng.normal(shift, 1.0, rows))
    return pa.table(cols)


def _view() -> list[Any]:
    from featureledger import Entity, FeatureView, Field

    return [Entity(name="driver", join_keys={"driver_id": "int64"}),
            FeatureView(name="drift_bench", entities=["driver"],
                        fields=[Field(name=f"f{i}", dtype="float64") for i in range(FEATURES)])]


def _open(repo: str) -> Any:
    from featureledger import FeatureStore
    from featureledger.config import ProjectConfig

    return FeatureStore(repo, config=ProjectConfig(root=Path(repo)))


def build(repo: str, rows: int, commits: int) -> dict[str, str]:
    store = _open(repo)
    store.apply(_view())
    ids: dict[str, list[str]] = {"base": [], "cur": []}
    for side in ("base", "cur"):
        for k in range(commits):
            r = store.ingest("drift_bench", make_commit(k, rows // commits, side == "cur"))
            ids[side].append(r.commit_id)
    store.close()
    return {"baseline": f"commits:{ids['base'][0]}..{ids['base'][-1]}",
            "current": f"commits:{ids['cur'][0]}..{ids['cur'][-1]}"}


def run_direct(rows: int, commits: int) -> dict[str, Any]:
    import numpy as np
    from scipy import stats

    per = rows // commits
    base = [make_commit(k, per, False) for k in range(commits)]
    cur = [make_commit(k, per, True) for k in range(commits)]
    arrays = {f"f{i}": (np.concatenate([t.column(f"f{i}").to_numpy() for t in base]),
                        np.concatenate([t.column(f"f{i}").to_numpy() for t in cur]))
              for i in range(FEATURES)}
    del base, cur
    t = time.perf_counter()
    out = {}
    for name, (b, c) in arrays.items():
        edges = np.quantile(b, np.linspace(0, 1, 11)[1:-1])
        e = np.bincount(np.searchsorted(edges, b, side="right"), minlength=10) / b.size
        a = np.bincount(np.searchsorted(edges, c, side="right"), minlength=10) / c.size
        e, a = np.maximum(e, 1e-4), np.maximum(a, 1e-4)
        psi = float(np.sum((a - e) * np.log(a / e)))
        ks = stats.ks_2samp(b, c, method="asymp")
        shift = (c.mean() - b.mean()) / b.std(ddof=1)
        nulls = (np.isnan(b).mean(), np.isnan(c).mean())
        out[name] = {"psi": psi, "ks": float(ks.statistic), "mean_shift": float(shift),
                     "null_rate": [float(x) for x in nulls]}
    return {"seconds": time.perf_counter() - t, "stats": out}


def _preload() -> None:
    """Import the statistics modules before timing, as the direct contender does (a
    process pays this once, at its first drift computation)."""
    import scipy.spatial.distance
    import scipy.stats  # noqa: F401


def run_store(repo: str, specs: dict[str, str], exact: bool) -> dict[str, Any]:
    _preload()
    store = _open(repo)
    store.registry.definitions.view("drift_bench")  # the registry is open before timing
    t = time.perf_counter()
    report = store.drift("drift_bench", baseline=specs["baseline"], current=specs["current"],
                         exact=exact)
    seconds = time.perf_counter() - t
    store.close()
    return {"seconds": seconds, "drifted": report.drifted,
            "stats": {f.feature: {"psi": f.metrics["psi"], "ks": f.metrics["ks"],
                                  "mean_shift": f.metrics["mean_shift"]}
                      for f in report.features}}


def run_ingest(policy: bool) -> dict[str, Any]:
    sys.path.insert(0, str(Path(__file__).parent))
    import duckdb  # noqa: F401 - imported before timing, as in bench/ingest.py

    from featureledger import Entity, FeatureView, Field
    from ingest import make_table

    _preload()
    table = make_table(1_000_000)
    with tempfile.TemporaryDirectory() as d:
        store = _open(d)
        fields = [Field(name=f"f{i}", dtype="float32" if i < 5 else "float64",
                        min=0.0, max=1.0) for i in range(10)]
        store.apply([Entity(name="driver", join_keys={"driver_id": "int64"}),
                     FeatureView(name="driver_stats", entities=["driver"], fields=fields,
                                 ttl="7d")])
        store.ingest("driver_stats", table)
        if policy:
            store.set_quality_policy("driver_stats", {"on_drift": "alert"})
        t = time.perf_counter()
        result = store.ingest("driver_stats", table)
        seconds = time.perf_counter() - t
        status = result.quality.status if result.quality else None
        store.close()
    return {"seconds": seconds, "check": status,
            "quality_s": result.timings.get("quality")}


def ingest_overhead(runs: int, dest: str | None) -> tuple[dict[str, float], float, float]:
    """The 1M-row ingestion without and with a drift policy, alternating, in fresh
    processes; printed, and written to ``bench/results/DEST`` when ``dest`` is given."""
    ing: dict[str, list[dict[str, Any]]] = {"ingest_plain": [], "ingest_policy": []}
    for _ in range(runs):
        for which in ing:
            ing[which].append(fresh(which))
    ing_med = {k: statistics.median(r["seconds"] for r in v) for k, v in ing.items()}
    ing_min = {k: min(r["seconds"] for r in v) for k, v in ing.items()}
    overhead = ing_med["ingest_policy"] / ing_med["ingest_plain"] - 1
    check_s = statistics.median(r["quality_s"] for r in ing["ingest_policy"])
    print(f"1M-row ingestion ({runs} fresh processes each): no policy "
          f"{ing_med['ingest_plain']:.3f}s (min {ing_min['ingest_plain']:.3f}), with a drift "
          f"policy {ing_med['ingest_policy']:.3f}s (min {ing_min['ingest_policy']:.3f}; check "
          f"{check_s:.3f}s in the commit's transaction): {overhead:+.1%} "
          f"(target <= +{INGEST_TARGET:.0%})")
    if dest is not None:
        path = Path(__file__).parent / "results" / dest
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({
            "benchmark": "drift_ingest", "runs": runs,
            "machine": {"python": platform.python_version(),
                        "platform": platform.platform()},
            "ingest_median_s": ing_med, "ingest_min_s": ing_min,
            "ingest_overhead": overhead, "ingest_check_s": check_s,
            "meets_target": overhead <= INGEST_TARGET}, indent=2) + "\n")
        print(f"wrote {path}")
    return ing_med, overhead, check_s


def fresh(*args: str) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, __file__, "--child", *args],
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--commits", type=int, default=10)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--ingest-runs", type=int, default=5)
    ap.add_argument("--ingest-only", action="store_true",
                    help="only the ingestion overhead of a quality policy")
    ap.add_argument("--child", nargs="+")
    args = ap.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "direct":
            out = run_direct(int(rest[0]), int(rest[1]))
        elif kind in ("profiles", "data"):
            out = run_store(rest[0], json.loads(rest[1]), kind == "data")
        else:
            out = run_ingest(kind == "ingest_policy")
        print(json.dumps(out))
        return

    if args.ingest_only:
        ingest_overhead(args.ingest_runs, "drift_ingest.json")
        return
    with tempfile.TemporaryDirectory() as repo:
        t = time.perf_counter()
        specs = build(repo, args.rows, args.commits)
        print(f"built {2 * args.rows:,} rows in {2 * args.commits} commits "
              f"({time.perf_counter() - t:.0f}s, not timed)")
        results: dict[str, list[dict[str, Any]]] = {"direct": [], "profiles": [], "data": []}
        for _ in range(args.runs):
            results["direct"].append(fresh("direct", str(args.rows), str(args.commits)))
            results["profiles"].append(fresh("profiles", repo, json.dumps(specs)))
            results["data"].append(fresh("data", repo, json.dumps(specs)))
    med = {k: statistics.median(r["seconds"] for r in v) for k, v in results.items()}
    direct = results["direct"][0]["stats"]
    agree = {}
    for which in ("profiles", "data"):
        got = results[which][0]["stats"]
        agree[which] = {m: max(abs(got[f][m] - direct[f][m]) for f in direct)
                        for m in ("psi", "ks", "mean_shift")}
    speedup = med["direct"] / med["profiles"]
    data_ratio = med["data"] / med["direct"]
    print(f"drift of {FEATURES} features, {args.rows:,} rows vs {args.rows:,} "
          f"({args.runs} fresh processes each)")
    print(f"{'contender':<44}{'median s':>10}")
    print(f"{'numpy + scipy on the arrays (direct)':<44}{med['direct']:>10.3f}")
    print(f"{'featureledger from profiles':<44}{med['profiles']:>10.3f}"
          f"   {speedup:,.0f}x faster (target >= {PROFILE_TARGET:.0f}x)")
    print(f"{'featureledger from data (read + compute)':<44}{med['data']:>10.3f}"
          f"   {data_ratio:.2f}x direct (target <= {DATA_TARGET}x)")
    print("largest difference from direct: " + "; ".join(
        f"{w}: " + ", ".join(f"{m} {v:.2g}" for m, v in d.items()) for w, d in agree.items()))
    print(f"drifted features: profiles {results['profiles'][0]['drifted']}, "
          f"data {results['data'][0]['drifted']}")

    ing_med, overhead, check_s = ingest_overhead(args.ingest_runs, None)
    out = {
        "benchmark": "drift", "rows": args.rows, "features": FEATURES,
        "commits_per_side": args.commits, "runs": args.runs,
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "median_s": med, "profiles_speedup": speedup, "data_ratio": data_ratio,
        "max_difference_from_direct": agree,
        "ingest_median_s": ing_med, "ingest_overhead": overhead, "ingest_check_s": check_s,
        "meets_targets": {"profiles": speedup >= PROFILE_TARGET,
                          "data": data_ratio <= DATA_TARGET,
                          "ingest": overhead <= INGEST_TARGET},
    }
    dest = Path(__file__).parent / "results" / "drift.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
