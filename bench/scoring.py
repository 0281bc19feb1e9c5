"""Batch scoring and MLflow registration: what the MLflow path costs over the plain one.

A store with 10,000 drivers (two features), a real MLflow tracking store and model
registry on SQLite in a temporary folder, and a model with ``predict(frame)``. Timed, in
one process, interleaved over ``--runs`` rounds:

* ``log_model`` with ``registered_model_name`` (pyfunc save, artifacts logged into the
  MLflow run, registry version) against a plain ``log_model`` (a URI recorded);
* ``score_batch`` (features point in time, the model loaded through MLflow's pyfunc
  flavour, its predictions beside the inputs, a scoring run) against ``batch_features``
  (the features alone, the same retrieval).

    python bench/scoring.py            # prints a table, writes bench/results/scoring.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from featureledger import Entity, FeatureSet, FeatureStore, FeatureView, Field
from featureledger.config import load_config

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


class Model:
    def predict(self, frame: pd.DataFrame) -> pd.Series:
        return frame["trips"] * 2 + frame["rating"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "scoring.json"))
    args = ap.parse_args()
    warnings.simplefilter("ignore")  # MLflow's notes on type hints and pickling
    import mlflow

    root = Path(tempfile.mkdtemp(prefix="fl-bench-scoring-"))
    os.chdir(root)  # anything MLflow writes by default stays here
    uri = f"sqlite:///{root / 'mlflow.db'}"
    store = FeatureStore(root, config=load_config(root, overrides={
        "mlflow": {"tracking_uri": uri}}))
    store.apply([Entity(name="driver", join_keys={"driver_id": "int64"}),
                 FeatureView(name="stats", entities=["driver"],
                             fields=[Field(name="trips", dtype="int64"),
                                     Field(name="rating", dtype="float64")]),
                 FeatureSet(name="fs", features=["stats:trips", "stats:rating"])])
    n = args.rows
    rng = np.random.default_rng(0)
    store.ingest("stats", pd.DataFrame({
        "driver_id": np.arange(n), "event_timestamp": [T0] * n,
        "trips": rng.integers(0, 100, n), "rating": rng.random(n)}))
    ents = pd.DataFrame({"driver_id": np.arange(n), "event_timestamp": [T0 + dt.timedelta(1)] * n})
    mlflow.MlflowClient(tracking_uri=uri).create_experiment(
        "bench", artifact_location=(root / "artifacts").as_uri())
    times: dict[str, list[float]] = {k: [] for k in (
        "log_model_registered", "log_model_plain", "score_batch", "batch_features")}
    model_id = None
    with store.start_run("bench") as run:
        ds = store.get_historical_features(ents, "fs")
        for i in range(args.runs):
            t = time.perf_counter()
            m = run.log_model("m", Model(), training_dataset=ds, registered_model_name="m")
            times["log_model_registered"].append(time.perf_counter() - t)
            t = time.perf_counter()
            run.log_model("plain", f"s3://models/plain/{i}", training_dataset=ds)
            times["log_model_plain"].append(time.perf_counter() - t)
            model_id = m.model_id
    assert model_id is not None
    for _ in range(args.runs):
        t = time.perf_counter()
        store.batch_features(model_id, ents)
        times["batch_features"].append(time.perf_counter() - t)
        t = time.perf_counter()
        scored = store.score_batch(model_id, ents)
        times["score_batch"].append(time.perf_counter() - t)
    expect = ds.to_pandas()
    assert scored.predictions.tolist() == (expect["trips"] * 2 + expect["rating"]).tolist()
    store.close()
    load = os.getloadavg()[0]
    report = {"rows": n, "runs": args.runs, "load_average_1m": round(load, 2),
              "python": platform.python_version(), "mlflow": mlflow.__version__,
              "seconds": {k: {"median": statistics.median(v), "min": min(v)}
                          for k, v in times.items()}}
    print(f"{n:,} entity rows, {args.runs} runs, load average {load:.1f}")
    print(f"{'call':<26} {'median s':>9} {'min s':>9}")
    for k, v in report["seconds"].items():
        print(f"{k:<26} {v['median']:>9.3f} {v['min']:>9.3f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
