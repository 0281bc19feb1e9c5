"""Push benchmark: the push log (append + fdatasync, micro-batched commits) against a
commit per request, side by side in one run on the embedded SQLite registry.

Run: ``.venv/bin/python bench/push.py [--rounds 5] [--calls 300] [--threads 4]``

What one timed call is:

* ``log``: ``store.push(view, rows)`` with the default serving settings
  (``push_flush_rows`` 10,000, ``push_flush_interval_s`` 5): validation, the append and
  ``fdatasync`` of the push log, the online write (SQLite online store); the landings
  (a Parquet commit per 10,000 rows, in the call that fills the buffer or on the
  background flusher) fall inside the timed calls, and the final ``flush()`` is counted
  in the throughput;
* ``commit``: ``store.push(view, rows, flush=True)``: validation, a commit of its own
  (Parquet file, fsyncs, rename, registry transaction), the online write.

Pushes of 1 row and of 100 rows (five float features with a declared range and a string,
keys spread over 10,000 entities, deterministic). The two contenders run interleaved in
``--rounds`` rounds, each timing ``calls / rounds`` calls of every case in a rotating
order, so a burst of load from other processes hits both alike; each case writes to its
own view, so one case's buffer never lands another's rows. Reported per case: p50 and
p99 latency, sequential throughput (calls / total time) and, with ``--threads`` threads
pushing at once, concurrent throughput (the log's syncs are shared between concurrent
pushes; commits of one view are serialised by the registry). Two more lines isolate the
parts: validation alone (common to both), and the durability step alone on validated rows
(the log append + sync, against the commit; each followed by its online write).

Prints a table and writes ``bench/results/push.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
RESULTS = HERE / "results"
ENTITIES = 10_000
T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
SIZES = (1, 100)
MODES = ("log", "commit")


def rows_for(seed: int, i: int, n: int) -> list[dict[str, Any]]:
    import random

    rng = random.Random(seed * 1_000_003 + i)
    return [{"driver_id": (i * n + j) % ENTITIES,
             "event_timestamp": T0 + dt.timedelta(seconds=i),
             **{f"f{k}": rng.random() for k in range(5)},
             "city": rng.choice(("paris", "lyon", "lille"))} for j in range(n)]


def open_store(root: Path) -> Any:
    from featureledger import Entity, FeatureStore, FeatureView, Field

    store = FeatureStore(root)
    driver = Entity(name="driver", join_keys={"driver_id": "int64"})
    fields = [Field(name=f"f{k}", dtype="float64", min=0, max=1) for k in range(5)]
    fields.append(Field(name="city", dtype="string"))
    views = [FeatureView(name=f"{prefix}_{mode}_{n}", entities=[driver], fields=fields)
             for prefix in ("seq", "par", "step") for mode in MODES for n in SIZES]
    store.apply([driver, *views])
    return store


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def timed_push(store: Any, view: str, mode: str, rows: list[dict[str, Any]]) -> float:
    t = time.perf_counter()
    store.push(view, rows, flush=mode == "commit")
    return time.perf_counter() - t


def sequential(store: Any, rounds: int, calls: int) -> dict[str, Any]:
    cases = [(mode, n) for n in SIZES for mode in MODES]
    lat: dict[tuple[str, int], list[float]] = {c: [] for c in cases}
    counter = {c: 0 for c in cases}
    per_round = max(1, calls // rounds)
    for r in range(rounds):
        order = cases[r % len(cases):] + cases[:r % len(cases)]
        for mode, n in order:
            view = f"seq_{mode}_{n}"
            timed_push(store, view, mode, rows_for(7, 10_000_000 + r, n))  # warm-up
            for _ in range(per_round):
                i = counter[(mode, n)]
                counter[(mode, n)] += 1
                lat[(mode, n)].append(timed_push(store, view, mode, rows_for(1, i, n)))
    t = time.perf_counter()
    store.online.flush()  # the log's deferred landings belong to its throughput
    final_flush = time.perf_counter() - t
    out = {}
    for (mode, n), xs in lat.items():
        total = sum(xs) + (final_flush / len(SIZES) if mode == "log" else 0.0)
        out[f"{mode}:{n}"] = {
            "mode": mode, "rows_per_push": n, "calls": len(xs),
            "p50_ms": round(pct(xs, 0.5) * 1e3, 3), "p99_ms": round(pct(xs, 0.99) * 1e3, 3),
            "mean_ms": round(statistics.fmean(xs) * 1e3, 3),
            "pushes_per_s": round(len(xs) / total, 1),
            "rows_per_s": round(len(xs) * n / total, 1),
            "commits": len(store.commits(f"seq_{mode}_{n}", status="committed")),
        }
    return out


def concurrent(store: Any, threads: int, calls: int) -> dict[str, Any]:
    out = {}
    for n in SIZES:
        for mode in MODES:
            view = f"par_{mode}_{n}"
            timed_push(store, view, mode, rows_for(9, 0, n))  # warm-up
            errors: list[BaseException] = []

            def worker(w: int, view: str = view, mode: str = mode, n: int = n,
                       errors: list[BaseException] = errors) -> None:
                try:
                    for i in range(calls):
                        store.push(view, rows_for(3, w * 1_000_000 + i + 1, n),
                                   flush=mode == "commit")
                except BaseException as exc:
                    errors.append(exc)

            pool = [threading.Thread(target=worker, args=(w,)) for w in range(threads)]
            t = time.perf_counter()
            for th in pool:
                th.start()
            for th in pool:
                th.join()
            store.online.flush()
            wall = time.perf_counter() - t
            if errors:
                raise errors[0]
            out[f"{mode}:{n}"] = {"mode": mode, "rows_per_push": n, "threads": threads,
                                  "calls": threads * calls,
                                  "pushes_per_s": round(threads * calls / wall, 1),
                                  "rows_per_s": round(threads * calls * n / wall, 1)}
    return out


def parts(store: Any, calls: int) -> dict[str, Any]:
    """Validation alone, and the durability step alone on validated rows."""
    from featureledger.online.push import to_view_table
    from featureledger.online.stores import TableRef

    out: dict[str, Any] = {}
    pusher = store.online.pusher
    for n in SIZES:
        view = store.get_view(f"step_log_{n}").definition
        val, log, commit = [], [], []
        for i in range(calls):
            rows = rows_for(5, i, n)
            t = time.perf_counter()
            data = to_view_table(view, rows)
            val.append(time.perf_counter() - t)
            # the two durability steps interleaved, each on its own view
            t = time.perf_counter()
            table = TableRef(f"step_log_{n}", 1)
            _, tagged = pusher.buffer.add(table, view, data)
            pusher._write_online(table, view, tagged)  # land_with writes online too
            log.append(time.perf_counter() - t)
            t = time.perf_counter()
            pusher.buffer.land_with(TableRef(f"step_commit_{n}", 1), view, data)
            commit.append(time.perf_counter() - t)
        for name, xs in (("validation", val), ("log_append_sync", log),
                         ("commit", commit)):
            out[f"{name}:{n}"] = {"rows_per_push": n, "calls": len(xs),
                                  "p50_ms": round(pct(xs, 0.5) * 1e3, 3),
                                  "p99_ms": round(pct(xs, 0.99) * 1e3, 3)}
    store.online.flush()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--calls", type=int, default=300, help="timed calls per case")
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--thread-calls", type=int, default=50, help="calls per thread")
    ap.add_argument("--part-calls", type=int, default=200)
    ap.add_argument("--keep", action="store_true", help="keep the repository folder")
    args = ap.parse_args()

    data = HERE / ".data"
    data.mkdir(exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="push-", dir=data))
    load_before = [round(x, 2) for x in os.getloadavg()]
    started = time.time()
    store = open_store(root)
    try:
        seq = sequential(store, args.rounds, args.calls)
        par = concurrent(store, args.threads, args.thread_calls)
        steps = parts(store, args.part_calls)
    finally:
        store.close()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    load_after = [round(x, 2) for x in os.getloadavg()]

    print(f"push: log vs commit per request, embedded SQLite registry and online store "
          f"(load {load_before[0]} -> {load_after[0]})")
    head = (f"{'case':<30}{'p50 ms':>9}{'p99 ms':>9}{'pushes/s':>10}{'rows/s':>10}"
            f"{'x' + str(args.threads) + ' pushes/s':>16}{'x' + str(args.threads) + ' rows/s':>14}"
            f"{'commits':>9}")
    print(head)
    print("-" * len(head))
    for n in SIZES:
        for mode in MODES:
            s, p = seq[f"{mode}:{n}"], par[f"{mode}:{n}"]
            label = f"{'push log' if mode == 'log' else 'commit per request'}, {n} row"
            print(f"{label + ('s' if n > 1 else ''):<30}{s['p50_ms']:>9.2f}{s['p99_ms']:>9.2f}"
                  f"{s['pushes_per_s']:>10.1f}{s['rows_per_s']:>10.0f}"
                  f"{p['pushes_per_s']:>16.1f}{p['rows_per_s']:>14.0f}{s['commits']:>9}")
    print()
    print(f"{'part':<30}{'p50 ms':>9}{'p99 ms':>9}")
    for n in SIZES:
        for name in ("validation", "log_append_sync", "commit"):
            s = steps[f"{name}:{n}"]
            print(f"{name + f', {n} row' + ('s' if n > 1 else ''):<30}"
                  f"{s['p50_ms']:>9.2f}{s['p99_ms']:>9.2f}")

    RESULTS.mkdir(exist_ok=True)
    dest = RESULTS / "push.json"
    dest.write_text(json.dumps({
        "benchmark": "push", "started": dt.datetime.fromtimestamp(started, dt.UTC).isoformat(),
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpus": os.cpu_count(), "load_before": load_before,
                    "load_after": load_after},
        "params": vars(args), "sequential": seq, "concurrent": par, "parts": steps,
    }, indent=2) + "\n")
    print(f"\nwrote {dest}")


if __name__ == "__main__":
    main()
