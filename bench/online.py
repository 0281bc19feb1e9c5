"""Online serving benchmark: featureledger against Feast and the raw floors.

Run (the Feast rows need ``bash bench/setup_feast.sh`` once, else they are reported as
missing; the Redis rows need Redis at 127.0.0.1:6379)::

    .venv/bin/python bench/online.py              # 3,000 calls per read case
    .venv/bin/python bench/online.py --calls 2000 --http-seconds 3

Data (deterministic, seed 11): 10,000 entities x 100 event times = 1,000,000 rows, ten
features (f0-f4 float32, f5-f9 float64); one Parquet file feeds every contender, and the
same rows are ingested into a featureledger store as one commit.

Reads (p50 / p99 of single calls, after a warm-up; 1 entity and 100 entities, all ten
features; the same random keys for every contender):

* ``featureledger`` in-process on SQLite and on Redis (values plus per-value status,
  version and commit), and with its in-process cache warm;
* ``feast`` 0.67 ``get_online_features`` on its SQLite online store, holding the same latest
  values (written with ``write_to_online_store``), run in ``bench/.venv-feast``;
* raw floors: a SQLite primary-key SELECT of the ten columns (``IN`` list for 100) from a
  plain table, a Redis HMGET pipeline over plain hashes, and a Python dict.

Materialization of the 1M rows into a fresh online store: featureledger (SQLite) against
the raw floor (the same DuckDB latest-per-key query + SQLite ``executemany`` into a plain
table) and Feast's ``materialize`` (DuckDB offline store, SQLite online store).

HTTP: ``featureledger serve`` in its own process, 1 entity x 10 features per request:
latency at a fixed 500 requests/s (an open-loop raw-asyncio client over 32 keep-alive
connections, latency from the scheduled send time), and requests/s at saturation
(``wrk``, 64 connections). Client and server share this machine's cores.

Output: a table and ``bench/results/online.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE / ".data" / "online"
RESULTS = HERE / "results"
FEAST_PYTHON = HERE / ".venv-feast" / "bin" / "python"

ENTITIES = 10_000
SLOTS = 100
SEED = 11
START_US = 1_704_067_200_000_000  # 2024-01-01 UTC
STEP_US = 3_600_000_000  # one hour between slots
FEATURES = [f"f{i}" for i in range(10)]
TTL_DAYS = 36_500  # no value expires during the benchmark


def percentiles(samples: list[float]) -> dict[str, float]:
    s = sorted(samples)
    return {"p50_us": s[len(s) // 2] * 1e6, "p99_us": s[min(len(s) - 1, int(len(s) * 0.99))] * 1e6,
            "calls": len(s)}


def time_calls(fn, args_list, warmup: int = 200) -> dict[str, float]:
    for a in args_list[:warmup]:
        fn(a)
    out = []
    perf = time.perf_counter
    for a in args_list:
        t0 = perf()
        fn(a)
        out.append(perf() - t0)
    return percentiles(out)


def key_samples(calls: int, per_call: int) -> list[list[int]]:
    rnd = random.Random(SEED + per_call)
    return [rnd.sample(range(ENTITIES), per_call) for _ in range(calls)]


# -- data -----------------------------------------------------------------------------------
def prepare() -> Path:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = DATA / "features.parquet"
    if path.exists():
        return path
    DATA.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    n = ENTITIES * SLOTS
    ids = np.tile(np.arange(ENTITIES, dtype=np.int64), SLOTS)
    slot = np.repeat(np.arange(SLOTS, dtype=np.int64), ENTITIES)
    ts = START_US + slot * STEP_US + rng.integers(0, STEP_US, n)
    cols = {"entity_id": ids,
            "event_timestamp": pa.array(ts, pa.int64()).cast(pa.timestamp("us", "UTC"))}
    for i, f in enumerate(FEATURES):
        vals = rng.random(n)
        cols[f] = pa.array(vals.astype(np.float32) if i < 5 else vals)
    pq.write_table(pa.table(cols), path, row_group_size=1_000_000)
    return path


def latest_sql(path: Path) -> str:
    return (f"SELECT entity_id, event_timestamp, {', '.join(FEATURES)} FROM read_parquet('{path}') "
            "QUALIFY row_number() OVER (PARTITION BY entity_id ORDER BY event_timestamp DESC)"
            " = 1")


# -- featureledger ----------------------------------------------------------------------------
def fl_repo(path: Path, online: dict, cache: bool = False) -> Path:
    import yaml

    repo = Path(tempfile.mkdtemp(prefix="fl_online_"))
    (repo / "featureledger.yaml").write_text(yaml.safe_dump({
        "project": "bench", "online_store": online,
        "serving": {"cache": cache, "cache_max_entries": 1_000_000}}))
    return repo


def fl_setup(repo: Path, data: Path):
    from featureledger import Entity, FeatureStore, FeatureView, Field

    store = FeatureStore(repo)
    ent = Entity(name="entity", join_keys={"entity_id": "int64"})
    store.apply([ent, FeatureView(
        name="bench", entities=[ent], ttl=f"{TTL_DAYS}d",
        fields=[Field(name=f, dtype="float32" if i < 5 else "float64")
                for i, f in enumerate(FEATURES)])])
    store.ingest("bench", str(data))
    return store


def bench_materialize(data: Path, runs: int) -> dict:
    import duckdb

    repo = fl_repo(data, {"type": "sqlite", "path": ".featureledger/online.db"})
    store = fl_setup(repo, data)
    fl_times = []
    for _ in range(runs):
        store.close()
        (repo / ".featureledger" / "online.db").unlink(missing_ok=True)
        for extra in ("-wal", "-shm"):
            (repo / ".featureledger" / f"online.db{extra}").unlink(missing_ok=True)
        from featureledger import FeatureStore

        store = FeatureStore(repo)
        _ = store._online  # open the service (registry, online store) outside the timing
        t0 = time.perf_counter()
        res = store.materialize(end="2030-01-01T00:00:00Z")
        fl_times.append(time.perf_counter() - t0)
        assert res.keys_written == ENTITIES, res.keys_written
    commit = store.registry.commits.list("bench")[0]
    files = [str(store.ctx.offline_store.root / f) for f in commit.files]
    store.close()
    raw_times = []
    for i in range(runs):
        db = DATA / f"raw_mat_{i}.db"
        db.unlink(missing_ok=True)
        t0 = time.perf_counter()
        con = duckdb.connect()
        rows = con.sql(latest_sql(Path(files[0])).replace(
            "event_timestamp,", "epoch_us(event_timestamp),", 1)).fetchall()
        con.close()
        lite = sqlite3.connect(db, isolation_level=None)
        lite.execute("PRAGMA journal_mode=WAL")
        lite.execute("PRAGMA synchronous=NORMAL")
        lite.execute(f"CREATE TABLE raw (entity_id INTEGER PRIMARY KEY, ts INTEGER, "
                     f"{', '.join(f + ' REAL' for f in FEATURES)})")
        lite.execute("BEGIN")
        lite.executemany(f"INSERT INTO raw VALUES ({', '.join('?' * 12)})", rows)
        lite.execute("COMMIT")
        lite.close()
        raw_times.append(time.perf_counter() - t0)
    shutil.copy(DATA / "raw_mat_0.db", DATA / "raw.db")
    return {"featureledger_s": statistics.median(fl_times), "raw_floor_s":
            statistics.median(raw_times), "featureledger_runs": fl_times,
            "raw_runs": raw_times, "repo": str(repo)}


def bench_fl_reads(repo: Path, samples: dict, label: str, cache: bool = False) -> dict:
    from featureledger import FeatureStore

    store = FeatureStore(repo)
    if cache:
        store.ctx.config.serving.cache = True
    feats = [f"bench:{f}" for f in FEATURES]
    out = {}
    for n, keys in samples.items():
        args = [[{"entity_id": k} for k in ks] for ks in keys]
        get = store.get_online_features
        r = get(feats, args[0])
        assert all(s == "PRESENT" for s in r.statuses["f0"]), r.statuses["f0"]
        if cache:  # warm every key used, so the timed calls measure cache hits
            for a in args:
                get(feats, a)
        out[f"{label}_{n}"] = time_calls(lambda a, get=get: get(feats, a), args)
    store.close()
    return out


def fl_cached_repo(repo: Path) -> Path:
    import yaml

    cfg = yaml.safe_load((repo / "featureledger.yaml").read_text())
    cfg["serving"]["cache"] = True
    cfg["online_store"]["path"] = str(repo / ".featureledger" / "online.db")
    cached = Path(tempfile.mkdtemp(prefix="fl_cached_"))
    cfg["registry"] = f"sqlite:///{repo / '.featureledger' / 'registry.db'}"
    cfg["offline_store"] = {"type": "parquet", "path": str(repo / ".featureledger" / "offline")}
    (cached / "featureledger.yaml").write_text(yaml.safe_dump(cfg))
    return cached


# -- raw floors -----------------------------------------------------------------------------
def bench_raw(samples: dict, redis_ok: bool) -> dict:
    out = {}
    lite = sqlite3.connect(DATA / "raw.db", isolation_level=None, check_same_thread=False)
    one = f"SELECT {', '.join(FEATURES)} FROM raw WHERE entity_id = ?"
    many = (f"SELECT entity_id, {', '.join(FEATURES)} FROM raw WHERE entity_id IN "
            f"({', '.join('?' * 100)})")
    out["raw_sqlite_1"] = time_calls(lambda ks: lite.execute(one, ks).fetchone(), samples[1])
    out["raw_sqlite_100"] = time_calls(lambda ks: lite.execute(many, ks).fetchall(),
                                       samples[100])
    table = {r[0]: r[1:] for r in lite.execute(f"SELECT entity_id, {', '.join(FEATURES)} "
                                               "FROM raw")}
    lite.close()

    def dict_read(ks: list[int]) -> list:
        return [table.get(k) for k in ks]

    out["dict_1"] = time_calls(dict_read, samples[1])
    out["dict_100"] = time_calls(dict_read, samples[100])
    if redis_ok:
        import redis

        r = redis.Redis(host="127.0.0.1", port=6379, db=14)
        pipe = r.pipeline(transaction=False)
        for k, vals in table.items():
            pipe.hset(f"rawbench:{k}", mapping=dict(zip(FEATURES, map(str, vals), strict=True)))
        pipe.execute()

        def hmget(ks: list[int]) -> list:
            p = r.pipeline(transaction=False)
            for k in ks:
                p.hmget(f"rawbench:{k}", FEATURES)
            return p.execute()

        out["raw_redis_1"] = time_calls(hmget, samples[1])
        out["raw_redis_100"] = time_calls(hmget, samples[100])
        for i in range(0, ENTITIES, 1000):
            r.delete(*[f"rawbench:{k}" for k in range(i, min(i + 1000, ENTITIES))])
        r.close()
    return out


# -- Feast (child process in bench/.venv-feast) -----------------------------------------------
def feast_child(data: Path, result: Path, calls: int) -> None:
    import datetime as dt

    import pyarrow.parquet as pq
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource
    from feast.types import Float32, Float64
    from feast.value_type import ValueType

    repo = Path(tempfile.mkdtemp(prefix="feast_online_"))
    (repo / "feature_store.yaml").write_text(
        f"project: bench\nregistry: {repo / 'registry.db'}\nprovider: local\n"
        "offline_store:\n  type: duckdb\n"
        f"online_store:\n  type: sqlite\n  path: {repo / 'online.db'}\n"
        "entity_key_serialization_version: 3\n")
    store = FeatureStore(repo_path=str(repo))
    entity = Entity(name="entity", join_keys=["entity_id"], value_type=ValueType.INT64)
    source = FileSource(path=str(data), timestamp_field="event_timestamp")
    view = FeatureView(name="bench", entities=[entity], ttl=dt.timedelta(days=TTL_DAYS),
                       schema=[Field(name=f, dtype=Float32 if i < 5 else Float64)
                               for i, f in enumerate(FEATURES)], source=source, online=True)
    store.apply([entity, view])
    out: dict = {}
    t0 = time.perf_counter()
    store.materialize(dt.datetime(2023, 1, 1, tzinfo=dt.UTC),
                      dt.datetime(2030, 1, 1, tzinfo=dt.UTC))
    out["feast_materialize_s"] = time.perf_counter() - t0
    latest = pq.read_table(DATA / "latest.parquet").to_pandas()
    store.write_to_online_store("bench", latest)
    feats = [f"bench:{f}" for f in FEATURES]
    for n in (1, 100):
        samples = key_samples(calls, n)
        args = [[{"entity_id": k} for k in ks] for ks in samples]
        first = store.get_online_features(feats, args[0]).to_dict()
        assert first["f0"][0] is not None
        out[f"feast_{n}"] = time_calls(
            lambda a: store.get_online_features(feats, a).to_dict(), args)
    result.write_text(json.dumps(out))


def bench_feast(data: Path, calls: int) -> dict:
    if not FEAST_PYTHON.exists():
        return {"feast_error": "bench/.venv-feast is missing; run: bash bench/setup_feast.sh"}
    import duckdb

    con = duckdb.connect()
    con.sql(f"COPY ({latest_sql(data)}) TO '{DATA / 'latest.parquet'}' (FORMAT parquet)")
    con.close()
    result = DATA / "feast.json"
    result.unlink(missing_ok=True)
    proc = subprocess.run([str(FEAST_PYTHON), __file__, "--feast-child", "--calls", str(calls)],
                          capture_output=True, text=True)
    if proc.returncode != 0 or not result.exists():
        return {"feast_error": proc.stderr[-2000:]}
    return json.loads(result.read_text())


# -- HTTP -------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _fixed_rate(port: int, bodies: list[bytes], rate: float, seconds: float,
                      conns: int = 32) -> dict:
    """Open-loop load at ``rate`` requests/s over keep-alive connections (raw asyncio).

    Latency counts from the scheduled send time, so queueing behind a slow server is
    included (no coordinated omission).
    """
    reqs = [(b"POST /features/online HTTP/1.1\r\nHost: 127.0.0.1\r\n"
             b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(b)) + b
            for b in bodies]
    queue: asyncio.Queue = asyncio.Queue()
    lat: list[float] = []
    errors = 0

    async def conn() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while True:
                item = await queue.get()
                if item is None:
                    return
                due, req = item
                writer.write(req)
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await reader.readexactly(length)
                if not head.startswith(b"HTTP/1.1 200"):
                    errors += 1
                lat.append(time.perf_counter() - due)
        finally:
            writer.close()

    workers = [asyncio.create_task(conn()) for _ in range(conns)]
    start = time.perf_counter()
    sent = 0
    while (now := time.perf_counter()) - start < seconds:
        due = start + sent / rate
        if due > now:
            await asyncio.sleep(due - now)
        queue.put_nowait((due, reqs[sent % len(reqs)]))
        sent += 1
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    elapsed = time.perf_counter() - start
    out = percentiles(lat)
    out.update({"requests": len(lat), "errors": errors, "rps": len(lat) / elapsed,
                "target_rps": rate})
    return out


def _wrk(port: int, body: bytes, seconds: float, conns: int = 64) -> dict:
    """Saturation with wrk (closed loop, ``conns`` connections, 2 threads)."""
    script = DATA / "post.lua"
    script.write_text('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                      f"wrk.body = {json.dumps(body.decode())}\n")
    proc = subprocess.run(["wrk", "-t2", f"-c{conns}", f"-d{int(seconds)}s", "--latency",
                           "-s", str(script), f"http://127.0.0.1:{port}/features/online"],
                          capture_output=True, text=True)
    out: dict = {"raw": proc.stdout[-1500:]}
    unit = {"us": 1, "ms": 1e3, "s": 1e6}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if line.startswith("Requests/sec:"):
            out["rps"] = float(parts[1])
        elif len(parts) == 2 and parts[0] in ("50%", "99%"):
            num = parts[1].rstrip("usm")
            suffix = parts[1][len(num):]
            out[f"p{parts[0][:-1]}_us"] = float(num) * unit[suffix]
        elif "Non-2xx" in line:
            out["errors"] = int(parts[-1])
    out.setdefault("errors", 0)
    return out


def bench_http(repo: Path, seconds: float) -> dict:
    import httpx

    port = _free_port()
    env = {**os.environ}
    server = subprocess.Popen([sys.executable, "-m", "featureledger", "serve", "--port",
                               str(port), "--repo", str(repo)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                return {"http_error": server.stderr.read().decode()[-2000:]}
            time.sleep(0.2)
        rnd = random.Random(SEED)
        bodies = [json.dumps({"features": [f"bench:{f}" for f in FEATURES],
                              "entities": {"entity_id": [rnd.randrange(ENTITIES)]}}).encode()
                  for _ in range(1000)]
        asyncio.run(_fixed_rate(port, bodies, 200, 1))  # warm-up
        fixed = asyncio.run(_fixed_rate(port, bodies, 500, seconds))
        if shutil.which("wrk"):
            saturated = _wrk(port, bodies[0], seconds)
        else:
            saturated = {"error": "wrk is not installed (apt-get install wrk)"}
        return {"http_500rps": fixed, "http_saturation": saturated}
    finally:
        server.terminate()
        server.wait(timeout=10)


# -- main ---------------------------------------------------------------------------------------
def redis_available() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1):
            return True
    except OSError:
        return False


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=3000, help="timed calls per read case")
    ap.add_argument("--runs", type=int, default=3, help="materialization runs (median)")
    ap.add_argument("--http-seconds", type=float, default=5.0)
    ap.add_argument("--feast-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--http-only", metavar="REPO", help="only rerun the HTTP part against an "
                    "existing benchmark repository; merge into bench/results/online.json")
    args = ap.parse_args()
    if args.http_only:
        res = json.loads((RESULTS / "online.json").read_text())
        res["http"] = bench_http(Path(args.http_only), args.http_seconds)
        (RESULTS / "online.json").write_text(json.dumps(res, indent=2))
        print_table(res)
        return 0
    data = DATA / "features.parquet"
    if args.feast_child:
        feast_child(data, DATA / "feast.json", args.calls)
        return 0
    t_all = time.perf_counter()
    data = prepare()
    samples = {1: key_samples(args.calls, 1), 100: key_samples(args.calls, 100)}
    redis_ok = redis_available()
    res: dict = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                             "platform": platform.platform()},
                 "rows": ENTITIES * SLOTS, "entities": ENTITIES, "features": len(FEATURES),
                 "calls": args.calls}
    print("materializing 1M rows ...", flush=True)
    mat = bench_materialize(data, args.runs)
    res["materialize"] = mat
    repo = Path(mat.pop("repo"))
    print("reads ...", flush=True)
    res["reads"] = {}
    res["reads"].update(bench_fl_reads(repo, samples, "featureledger_sqlite"))
    res["reads"].update(bench_fl_reads(fl_cached_repo(repo), samples, "featureledger_cached",
                                       cache=True))
    if redis_ok:
        import yaml

        from featureledger import FeatureStore

        cfg = yaml.safe_load((repo / "featureledger.yaml").read_text())
        cfg["online_store"] = {"type": "redis", "url": "redis://127.0.0.1:6379/14",
                               "key_prefix": "flbench"}
        rrepo = Path(tempfile.mkdtemp(prefix="fl_redis_"))
        cfg["registry"] = f"sqlite:///{repo / '.featureledger' / 'registry.db'}"
        cfg["offline_store"] = {"type": "parquet",
                                "path": str(repo / ".featureledger" / "offline")}
        (rrepo / "featureledger.yaml").write_text(yaml.safe_dump(cfg))
        with FeatureStore(rrepo) as s:
            t0 = time.perf_counter()
            s.materialize(end="2030-01-01T00:00:00Z")
            res["materialize"]["featureledger_redis_s"] = time.perf_counter() - t0
        res["reads"].update(bench_fl_reads(rrepo, samples, "featureledger_redis"))
        with FeatureStore(rrepo) as s:
            s.ctx.online_store.delete(__import__("featureledger.online.stores",
                                                 fromlist=["TableRef"]).TableRef("bench", 1))
    res["reads"].update(bench_raw(samples, redis_ok))
    print("feast ...", flush=True)
    feast = bench_feast(data, args.calls)
    if "feast_error" in feast:
        res["feast_error"] = feast["feast_error"]
    else:
        res["materialize"]["feast_s"] = feast.pop("feast_materialize_s")
        res["reads"].update(feast)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "online.json").write_text(json.dumps(res, indent=2))
    print("http ...", flush=True)
    res["http"] = bench_http(repo, args.http_seconds)
    res["seconds"] = time.perf_counter() - t_all
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "online.json").write_text(json.dumps(res, indent=2))
    print_table(res)
    return 0


def print_table(res: dict) -> None:
    reads = res["reads"]
    print(f"\nonline reads, 10 features, p50 / p99 in µs over {res['calls']} calls")
    print(f"{'contender':<24}{'1 entity':>22}{'100 entities':>24}")
    for name in ("featureledger_sqlite", "featureledger_redis", "featureledger_cached",
                 "feast", "raw_sqlite", "raw_redis", "dict"):
        if f"{name}_1" not in reads:
            continue
        a, b = reads[f"{name}_1"], reads[f"{name}_100"]
        print(f"{name:<24}{a['p50_us']:>10.1f} / {a['p99_us']:<9.1f}"
              f"{b['p50_us']:>12.1f} / {b['p99_us']:<9.1f}")
    m = res["materialize"]
    print(f"\nmaterialize {res['rows']:,} rows ({res['entities']:,} keys), seconds (median)")
    for k in ("featureledger_s", "featureledger_redis_s", "raw_floor_s", "feast_s"):
        if k in m:
            print(f"  {k[:-2]:<22}{m[k]:>8.2f}")
    h = res.get("http", {})
    if "http_500rps" in h:
        a, b = h["http_500rps"], h["http_saturation"]
        print("\nHTTP, 1 entity x 10 features")
        print(f"  at 500 req/s:  p50 {a['p50_us'] / 1000:.2f} ms  p99 {a['p99_us'] / 1000:.2f} ms"
              f"  ({a['rps']:.0f} req/s achieved, {a['errors']} errors)")
        if "rps" in b:
            print(f"  saturation:    {b['rps']:.0f} req/s  p50 {b['p50_us'] / 1000:.2f} ms  "
                  f"p99 {b['p99_us'] / 1000:.2f} ms  ({b['errors']} non-2xx; wrk, 64 conns)")
    if "feast_error" in res:
        print("\nFeast not measured:", res["feast_error"][-300:])


if __name__ == "__main__":
    sys.exit(main())
