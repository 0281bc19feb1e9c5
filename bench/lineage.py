"""Lineage query benchmark: a generated graph of 100,000 nodes and 300,000 edges.

The graph has the shape featureledger writes: sources feed view versions, view versions
have commits (written by ingestion runs), training datasets read commits, training runs use
datasets and produce models, models are deployed. Measured on the embedded default
(SQLite) unless ``--url`` names another registry: upstream and downstream of a deployment,
downstream of a view version and of a commit (impact), the impact query of a view's
quarantined commits, and the path between a source and a deployment.

    python bench/lineage.py            # prints a table, writes bench/results/lineage.json
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

from featureledger.lineage.graph import path, reachable, walk
from featureledger.registry import Registry, schema

N_NODES, N_EDGES = 100_000, 300_000


def generate(rng: random.Random) -> tuple[list[tuple[str, str, str]], dict[str, list[str]]]:
    n = {"source": 300, "view": 1_700, "commit": 60_000, "ingest_run": 3_000,
         "dataset": 20_000, "train_run": 8_000, "model": 4_000, "deployment": 3_000}
    assert sum(n.values()) == N_NODES
    ids = {k: [f"{p}{i:06d}" for i in range(v)] for k, v, p in (
        (k, v, {"source": "source:s3://lake/t", "view": "view:v", "commit": "cmt_",
                "ingest_run": "run_i", "dataset": "ds_", "train_run": "run_t",
                "model": "mdl_", "deployment": "dep_"}[k]) for k, v in n.items())}
    ids["view"] = [f"view:v{i // 5}@{i % 5 + 1}" for i in range(n["view"])]
    edges: set[tuple[str, str, str]] = set()
    for v in ids["view"]:
        edges.add((rng.choice(ids["source"]), v, "feeds"))
    for i, v in enumerate(ids["view"]):
        if i % 5:  # later versions of a view derive from a parent view version
            edges.add((rng.choice(ids["view"]), v, "derives"))
    commit_view = {}
    for c in ids["commit"]:
        v = rng.choice(ids["view"])
        commit_view[c] = v
        edges.add((v, c, "has_commit"))
        edges.add((rng.choice(ids["source"]), c, "ingested"))
        edges.add((rng.choice(ids["ingest_run"]), c, "wrote"))
    for d in ids["dataset"]:
        edges.add((d, rng.choice(ids["train_run"]), "used_by"))
    for m in ids["model"]:
        run = rng.choice(ids["train_run"])
        edges.add((run, m, "produced"))
        for d in rng.sample(ids["dataset"], 2):
            edges.add((d, m, "trained_on"))
    for dep in ids["deployment"]:
        edges.add((rng.choice(ids["model"]), dep, "deployed_as"))
    used = {x for e in edges for x in e[:2]}
    for kind, make in (("source", lambda x: (x, rng.choice(ids["view"]), "feeds")),
                       ("ingest_run", lambda x: (x, rng.choice(ids["commit"]), "wrote")),
                       ("train_run", lambda x: (rng.choice(ids["dataset"]), x, "used_by"))):
        edges.update(make(x) for x in ids[kind] if x not in used)  # no isolated nodes
    # the rest: datasets reading commits (the bulk of a real graph)
    while len(edges) < N_EDGES:
        edges.add((rng.choice(ids["commit"]), rng.choice(ids["dataset"]), "read"))
    return sorted(edges), ids


def timed(fn, repeat: int) -> dict[str, float]:
    fn()  # warm the page cache and the statement cache
    samples = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
    samples.sort()
    return {"median_ms": round(statistics.median(samples), 3),
            "p95_ms": round(samples[max(0, int(len(samples) * 0.95) - 1)], 3),
            "max_ms": round(samples[-1], 3)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", help="registry URL (default: a fresh SQLite file)")
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "lineage.json"))
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    tmp = tempfile.TemporaryDirectory()
    url = args.url or f"sqlite:///{tmp.name}/registry.db"
    reg = Registry(url)
    try:
        return _run(reg, url, rng, args)
    finally:
        reg.close()
        tmp.cleanup()


def _run(reg: Registry, url: str, rng: random.Random, args: argparse.Namespace) -> int:
    t = time.perf_counter()
    edges, ids = generate(rng)
    gen_s = time.perf_counter() - t
    t = time.perf_counter()
    with reg.db.write() as conn:
        conn.execute(schema.lineage_edges.insert(), [
            {"project": reg.project, "src": s, "dst": d, "relation": r, "created_at": 0,
             "details": None} for s, d, r in edges])
    load_s = time.perf_counter() - t
    with reg.db.read() as conn:
        e = schema.lineage_edges
        n_edges = conn.execute(sa.select(sa.func.count()).select_from(e)
                               .where(reg.db.scope(e))).scalar()
        nodes = conn.execute(sa.select(sa.func.count()).select_from(sa.union(
            sa.select(e.c.src).where(reg.db.scope(e)),
            sa.select(e.c.dst).where(reg.db.scope(e))).subquery())).scalar()
    dep = ids["deployment"][17]
    view = "view:v100@1"
    commit = ids["commit"][12345]
    with reg.db.read() as conn:  # a source that does flow into the deployment
        source = next(n for n in reachable(conn, [dep], "upstream") if n.startswith("source:"))
    results = {}
    sizes = {}
    with reg.db.read() as conn:
        cases = {
            "upstream of a deployment": lambda: walk(conn, [dep], "upstream"),
            "downstream of a deployment": lambda: walk(conn, [dep], "downstream"),
            "downstream of a view version": lambda: walk(conn, [view], "downstream"),
            "downstream of a commit": lambda: walk(conn, [commit], "downstream"),
            "impact: deployments reading a view": lambda: reachable(
                conn, [view], "downstream", like="dep_%"),
            "path source -> deployment": lambda: path(conn, source, dep),
        }
        for name, fn in cases.items():
            out = fn()
            sizes[name] = len(getattr(out, "edges", out))
            results[name] = timed(fn, args.repeat)
    report = {
        "benchmark": "lineage",
        "registry": sa.engine.make_url(url).get_backend_name(),
        "nodes": nodes, "edges": n_edges, "generate_s": round(gen_s, 2),
        "load_s": round(load_s, 2), "repeat": args.repeat,
        "results": {k: {**v, "result_size": sizes[k]} for k, v in results.items()},
        "python": platform.python_version(), "platform": platform.platform(),
        "sqlite": __import__("sqlite3").sqlite_version,
    }
    print(f"lineage benchmark on {report['registry']}: {nodes:,} nodes, {n_edges:,} edges "
          f"(loaded in {load_s:.1f}s)")
    print(f"{'query (result = edges or nodes)':38} {'result':>8} {'median ms':>10} {'p95 ms':>9} {'max ms':>9}")
    for k, v in results.items():
        print(f"{k:38} {sizes[k]:>8} {v['median_ms']:>10.2f} {v['p95_ms']:>9.2f} "
              f"{v['max_ms']:>9.2f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
