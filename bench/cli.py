"""Command-line start-up benchmark: what a user waits for each command, in fresh processes.

A demo repository (``featureledger init``, ``apply``, one ingested commit) and a 48,000-row
Parquet file of driver statistics are made once in a temporary folder. Each command then
runs ``--runs`` times as ``python -m featureledger ...`` in a fresh process (the way the
installed ``featureledger`` script runs it), the contenders interleaved run by run; the
table gives the median and the fastest wall time. Beside the CLI, the same 48k-row ingest
is timed inside one warm Python process (the store open, the ingestion code loaded).

``--baseline REF`` also runs every command with the source tree of git revision REF
(``git archive REF src``, put first on PYTHONPATH) in the same interleaved rounds, so the
ratio is measured side by side on the same machine at the same time.

    python bench/cli.py                        # prints a table, writes bench/results/cli.json
    python bench/cli.py --runs 11 --baseline main
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INGEST_ROWS = 48_000

COMMANDS: list[tuple[str, list[str]]] = [
    ("--help", ["--help"]),
    ("--version", ["--version"]),
    ("list", ["list"]),
    ("show driver_stats", ["show", "driver_stats"]),
    ("commits", ["commits"]),
    ("versions driver_stats", ["versions", "driver_stats"]),
    (f"ingest ({INGEST_ROWS // 1000}k rows)", ["ingest", "driver_stats", "data/bench_48k.parquet"]),
]
TARGETS = {"--help": 0.3, "list": 0.6}

IN_PROCESS = """
import sys, time
from featureledger import FeatureStore
store = FeatureStore(sys.argv[1])
store.ingest("driver_stats", "data/driver_stats.parquet")  # load the ingestion code
t = time.perf_counter()
store.ingest("driver_stats", "data/bench_48k.parquet")
print(time.perf_counter() - t)
store.close()
"""


def _env(src: Path | None) -> dict[str, str]:
    env = {**os.environ, "COLUMNS": "80", "FEATURELEDGER_USER": "bench"}
    env.pop("FEATURELEDGER_REPO", None)
    if src is not None:
        env["PYTHONPATH"] = str(src) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_cli(args: list[str], repo: Path, src: Path | None) -> tuple[float, float] | None:
    """(wall seconds, CPU seconds) of one fresh ``featureledger ARGS``; None when a
    baseline tree does not have the command (``--version`` is new).

    CPU time (user + system, of the process and its threads) is what the command costs
    whatever else the machine runs; wall time is what the user waits, which on a loaded
    machine includes waiting for a core."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "featureledger", *args], cwd=repo,
                          env=_env(src), capture_output=True, text=True)
    elapsed = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        if src is not None and "No such option" in proc.stderr:
            return None
        raise SystemExit(f"featureledger {' '.join(args)} failed:\n{proc.stderr}")
    return elapsed, cpu


def make_repo(tmp: Path) -> Path:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    subprocess.run([sys.executable, "-m", "featureledger", "init", "demo"], cwd=tmp,
                   env=_env(None), check=True, capture_output=True)
    repo = tmp / "demo"
    for args in (["apply"], ["ingest", "driver_stats", "data/driver_stats.parquet"]):
        subprocess.run([sys.executable, "-m", "featureledger", *args], cwd=repo,
                       env=_env(None), check=True, capture_output=True)
    # 48k rows: the sample week repeated over earlier weeks (distinct keys and times)
    week = pq.read_table(repo / "data" / "driver_stats.parquet")
    copies = []
    for i in range(INGEST_ROWS // week.num_rows + 1):
        shift = pa.scalar(dt.timedelta(days=7 * (i + 1)), pa.duration("us"))
        ts = week.column("event_timestamp")
        shifted = pc.subtract(ts.cast(pa.timestamp("us", tz=ts.type.tz)), shift)
        copies.append(week.set_column(week.schema.get_field_index("event_timestamp"),
                                      "event_timestamp", shifted.cast(ts.type)))
    big = pa.concat_tables(copies).slice(0, INGEST_ROWS)
    pq.write_table(big, repo / "data" / "bench_48k.parquet")
    return repo


def baseline_tree(ref: str, tmp: Path) -> Path:
    archive = tmp / "baseline.tar"
    with archive.open("wb") as out:
        subprocess.run(["git", "archive", ref, "src"], cwd=ROOT, stdout=out, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(tmp / "baseline", filter="data")
    return tmp / "baseline" / "src"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="fresh processes per command")
    parser.add_argument("--baseline", metavar="REF", help="also time git revision REF")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="fl-bench-cli-") as tmpdir:
        tmp = Path(tmpdir)
        repo = make_repo(tmp)
        contenders: dict[str, Path | None] = {"now": None}
        if args.baseline:
            contenders[args.baseline] = baseline_tree(args.baseline, tmp)
        times: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for _ in range(args.runs):
            for label, argv in COMMANDS:
                for name, src in contenders.items():
                    elapsed = run_cli(argv, repo, src)
                    if elapsed is not None:
                        times.setdefault((label, name), []).append(elapsed)
        warm = []
        for _ in range(max(3, args.runs // 2)):
            out = subprocess.run([sys.executable, "-c", IN_PROCESS, str(repo)], cwd=repo,
                                 env=_env(None), capture_output=True, text=True, check=True)
            warm.append(float(out.stdout.strip().splitlines()[-1]))

    rows = []
    for label, _ in COMMANDS:
        row = {"command": f"featureledger {label}"}
        for name in contenders:
            ts = times.get((label, name))
            if not ts:
                continue
            wall, cpu = [t[0] for t in ts], [t[1] for t in ts]
            row[name] = {"median_s": round(statistics.median(wall), 3),
                         "min_s": round(min(wall), 3),
                         "cpu_median_s": round(statistics.median(cpu), 3), "runs": len(ts)}
        if label in TARGETS:
            row["target_s"] = TARGETS[label]
        rows.append(row)
    rows.append({"command": f"in process: store.ingest ({INGEST_ROWS // 1000}k rows, warm)",
                 "now": {"median_s": round(statistics.median(warm), 3),
                         "min_s": round(min(warm), 3), "runs": len(warm)}})

    names = list(contenders)
    header = ["command", *(f"{n}: wall median / min, CPU median (s)" for n in names)]
    if args.baseline:
        header.append("ratio (wall, CPU)")
    header.append("target")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        cells = [row["command"]]
        for n in names:
            r = row.get(n)
            cpu = f", {r['cpu_median_s']:.3f}" if r and "cpu_median_s" in r else ""
            cells.append(f"{r['median_s']:.3f} / {r['min_s']:.3f}{cpu}" if r else "-")
        if args.baseline:
            a, b = row.get("now"), row.get(args.baseline)
            cells.append(f"{b['median_s'] / a['median_s']:.1f}x, "
                         f"{b['cpu_median_s'] / a['cpu_median_s']:.1f}x" if a and b else "-")
        cells.append(f"< {row['target_s']} s" if "target_s" in row else "")
        print("| " + " | ".join(cells) + " |")

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    result = {
        "benchmark": "cli",
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(), "machine": platform.machine(),
        "cpus": os.cpu_count(), "load_average_1m": load, "runs": args.runs,
        "baseline": args.baseline, "rows": rows,
    }
    out = ROOT / "bench" / "results" / "cli.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)} (load average {load})")


if __name__ == "__main__":
    main()
