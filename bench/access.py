"""Access control benchmark: the cost of the permission check, policy on against policy off.

Run::

    .venv/bin/python bench/access.py                   # 4 rounds, 3,000 online calls each
    .venv/bin/python bench/access.py --rounds 6 --calls 5000 --historical-rounds 3

Two stores with the same data (that of ``bench/offline.py`` at 1M rows, deterministic):
one view of ten features (f0-f4 float32, f5-f9 float64) over 10,000 entities x 100 event
times = 1,000,000 rows, ingested as one commit and materialized into the SQLite online
store; its 100,000 entity rows for the retrieval. Store ``off`` has no access
policy (open, as without access control); store ``on`` has a policy in force with five
principals and four roles, including a deny rule on a ``pii`` tag and residency regions,
and reads as a principal that the policy allows (so every read passes the check).

What is timed, ``on`` and ``off`` interleaved in rounds (rotating which goes first), so
that load from other processes on a shared machine hits both alike:

* online read, 1 entity and 100 entities, all ten features (``get_online_features``);
  per call, after a warm-up (the plan and the principal's admission are cached, as they
  are in a server between registry changes);
* historical retrieval of the ten features for 100,000 entity rows over the 1M feature
  rows (``get_historical_features``, DuckDB), whole calls.

Reported: median and mean per call of each, the ratio on/off of the medians (target: at
most 1.05), and the cost of the check when nothing is cached yet (the policy compiled into
PyCasbin, and one decision per feature). Output: a table and ``bench/results/access.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

# the data of the offline benchmark (same folder): its rows, entity rows and feature names
from offline import ENTITIES, ENTITY_ROWS, FEATURES, entity_table, feature_chunks

HERE = Path(__file__).parent
RESULTS = HERE / "results"
SLOTS = 100  # x ENTITIES = 1,000,000 feature rows
SEED = 13
TARGET = 1.05
READER = "reader"

POLICY = {
    "principals": {
        READER: {"roles": ["analyst"], "regions": ["eu"]},
        "etl": {"roles": ["writer"]},
        "svc": {"roles": ["serving"], "regions": ["*"]},
        "auditor": {"roles": ["analyst"]},
        "root": {"roles": ["admin"], "regions": ["*"]},
    },
    "roles": {
        "analyst": [{"actions": ["read_offline", "read_online"], "resources": {"name": "bench*"}},
                    {"actions": ["*"], "resources": {"tag": "pii"}, "effect": "deny"}],
        "writer": [{"actions": ["write"], "resources": {"owner": "data-eng"}}],
        "serving": [{"actions": ["read_online"]}],
        "admin": [{"actions": ["*"]}],
    },
}


def feature_table():
    """The 1M feature rows of ``bench/offline.py`` (its 1M size: 10,000 entities x 100)."""
    import pyarrow as pa

    return pa.concat_tables(feature_chunks(SLOTS))


def make_store(root: Path, table, *, policy: bool):
    from featureledger import Entity, FeatureStore, FeatureView, Field
    from featureledger.governance.policy import parse_policy

    root.mkdir(parents=True)
    store = FeatureStore(root, principal="root")
    defs = [Entity(name="entity", join_keys={"entity_id": "int64"}),
            FeatureView(name="bench", entities=["entity"], owner="data-eng",
                        tags={"region": "eu"},
                        fields=[Field(name=f, dtype="float32" if i < 5 else "float64")
                                for i, f in enumerate(FEATURES)])]
    store.apply(defs)
    store.ingest("bench", table)
    store.materialize(None, None)
    if policy:
        store.apply(defs, policy=parse_policy(POLICY))
    store.close()
    return FeatureStore(root, principal=READER)


def _time_calls(fn, calls: int) -> list[float]:
    out = []
    for _ in range(calls):
        t0 = time.perf_counter_ns()
        fn()
        out.append((time.perf_counter_ns() - t0) / 1000)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--calls", type=int, default=3000, help="online calls per case")
    ap.add_argument("--historical-rounds", type=int, default=3)
    ap.add_argument("--keep", action="store_true", help="keep the stores' folder")
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) > 1:
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

    import numpy as np

    work = Path(tempfile.mkdtemp(prefix="fl-bench-access-"))
    table = feature_table()
    t0 = time.perf_counter()
    stores = {"off": make_store(work / "off", table, policy=False),
              "on": make_store(work / "on", table, policy=True)}
    print(f"prepared two stores of {table.num_rows:,} rows in {time.perf_counter() - t0:.0f} s")
    assert stores["on"].access.enabled() and not stores["off"].access.enabled()
    refs = [f"bench:{f}" for f in FEATURES]
    rng = np.random.default_rng([SEED, 2])
    keys1 = [[{"entity_id": int(k)}] for k in rng.integers(0, ENTITIES, 1000)]
    keys100 = [[{"entity_id": int(k)} for k in rng.integers(0, ENTITIES, 100)]
               for _ in range(100)]
    entities = entity_table()

    # the uncached check: compile the policy, decide each feature once
    on = stores["on"]
    from featureledger.governance.policy import parse_policy

    parse_policy(POLICY).compile().decide("svc", "write", on.access.policy_resource())  # warm
    t0 = time.perf_counter()
    compiled = parse_policy(POLICY).compile()
    compile_ms = (time.perf_counter() - t0) * 1000
    resources = on.access.feature_resources(on.get_view("bench").definition, FEATURES)
    t0 = time.perf_counter()
    for r in resources:
        assert compiled.decide(READER, "read_online", r).allowed
    decide_us = (time.perf_counter() - t0) * 1e6 / len(resources)

    samples: dict[str, dict[str, list[float]]] = {
        case: {"on": [], "off": []} for case in ("online_1", "online_100", "historical_1M")}
    for rnd in range(args.rounds):
        order = ["on", "off"] if rnd % 2 == 0 else ["off", "on"]
        for mode in order:
            store = stores[mode]
            for case, keysets in (("online_1", keys1), ("online_100", keys100)):
                it = itertools.cycle(keysets)
                read = store.get_online_features
                for _ in range(200):  # warm-up: plan built, principal admitted
                    read(refs, next(it))
                samples[case][mode].extend(_time_calls(
                    lambda read=read, it=it: read(refs, next(it)), args.calls // args.rounds))
    for store in stores.values():  # warm-up: each store's engine and file metadata
        store.get_historical_features(entities, refs)
    for rnd in range(args.historical_rounds):
        order = ["on", "off"] if rnd % 2 == 0 else ["off", "on"]
        for mode in order:
            t0 = time.perf_counter()
            ds = stores[mode].get_historical_features(entities, refs)
            samples["historical_1M"][mode].append((time.perf_counter() - t0) * 1e6)
            assert ds.manifest["row_count"] == ENTITY_ROWS
    # the checks alone, warm, on the 'on' store: what a retrieval and an online read add
    from featureledger.registry.actor import acting_principal

    retrieval = on.retrieval
    plan = retrieval._plan(refs, False)
    n = 2000
    t0 = time.perf_counter()
    for _ in range(n):
        retrieval._require_read(plan, "a historical retrieval")
    offline_check_us = (time.perf_counter() - t0) * 1e6 / n
    online_plan = on.online.plan(refs)
    own = on.registry.db.principal
    t0 = time.perf_counter()
    for _ in range(100_000):
        assert (acting_principal() or own) in online_plan.readers
    online_check_us = (time.perf_counter() - t0) * 1e6 / 100_000
    # the check really ran: a principal outside the policy is refused on the 'on' store
    from featureledger.errors import PermissionDeniedError

    with on.acting_as("nobody"):
        try:
            on.get_online_features(refs, keys1[0])
            raise AssertionError("the policy did not refuse an unknown principal")
        except PermissionDeniedError:
            pass

    report: dict[str, object] = {"rows": table.num_rows, "entity_rows": ENTITY_ROWS,
                                 "features": len(FEATURES), "rounds": args.rounds,
                                 "online_check_us": round(online_check_us, 3),
                                 "offline_check_us": round(offline_check_us, 1),
                                 "policy_compile_ms": round(compile_ms, 2),
                                 "uncached_decision_us": round(decide_us, 1), "cases": {}}
    print(f"\npolicy compiled into PyCasbin in {compile_ms:.1f} ms; an uncached decision "
          f"takes {decide_us:.0f} us per feature (once per principal and plan)\n")
    print(f"{'case':<16}{'off median':>14}{'on median':>14}{'off mean':>12}{'on mean':>12}"
          f"{'on/off':>9}")
    ok = True
    for case, by in samples.items():
        unit = "ms" if case.startswith("historical") else "us"
        scale = 1000 if unit == "ms" else 1
        med = {m: statistics.median(v) / scale for m, v in by.items()}
        mean = {m: statistics.fmean(v) / scale for m, v in by.items()}
        ratio = med["on"] / med["off"]
        ok = ok and ratio <= TARGET
        report["cases"][case] = {"unit": unit, "median": med, "mean": mean,  # type: ignore[index]
                                 "ratio": round(ratio, 4), "calls": len(by["on"])}
        print(f"{case:<16}{med['off']:>11.1f} {unit}{med['on']:>11.1f} {unit}"
              f"{mean['off']:>9.1f} {unit}{mean['on']:>9.1f} {unit}{ratio:>9.3f}")
    print(f"\nthe warm checks alone: {online_check_us * 1000:.0f} ns per online read "
          f"({online_check_us / statistics.median(samples['online_1']['off']) * 100:.2f}% of "
          f"a 1-entity read), {offline_check_us:.0f} us per retrieval ("
          f"{offline_check_us / statistics.median(samples['historical_1M']['off']) * 100:.3f}%"
          " of the 1M-row retrieval)")
    report["target_ratio"] = TARGET
    report["within_target"] = ok
    print(f"\ntarget on/off <= {TARGET}: {'met' if ok else 'NOT met'}")
    for s in stores.values():
        s.close()
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "access.json").write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
