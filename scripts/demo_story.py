"""The model part of the demo: a derived feature is computed from driver_stats, a run
builds a training set (with it), trains a small model, logs metrics and the model, deploys
it, scores a batch, prints the derived feature's lineage back to its parent commits and
writes the deployment's lineage.

Usage: python scripts/demo_story.py REPO
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from featureledger import FeatureStore, FeatureView, Field, Transformation

FEATURES = ["conv_rate", "acc_rate", "avg_daily_trips", "avg_fare", "lifetime_trips",
            "completion_score"]

# a derived feature: computed from driver_stats by one SQL SELECT (run on the sandbox)
DRIVER_QUALITY = FeatureView(
    name="driver_quality",
    entities=["driver"],
    fields=[Field(name="completion_score", dtype="float64", min=0, max=1,
                  description="conv_rate x acc_rate: the share of offers that end in a ride")],
    ttl="7d",
    transformation=Transformation(
        language="sql", parents=["driver_stats"],
        code="SELECT driver_id, event_timestamp, conv_rate * acc_rate AS completion_score "
             "FROM driver_stats"),
    description="Derived from driver_stats",
)


def derive_feature(store: FeatureStore) -> list[str]:
    """Apply and compute the derived view; the training set's feature references."""
    store.apply([DRIVER_QUALITY])
    result = store.derive("driver_quality")
    for c in result.commits:
        parents = c.source["parents"][0]
        print(f"derived {c.commit_id} into {c.view_ref}: {c.row_count} rows from "
              f"{len(parents['commits'])} commit(s) of {parents['view']}@{parents['version']}")
    print(f"derive again: {'nothing to do' if store.derive('driver_quality').unchanged else '?'}")
    refs = store.get_feature_set("ride_model_features").definition.features
    return [*refs, "driver_quality:completion_score"]


def print_derived_lineage(store: FeatureStore, model_id: str) -> None:
    graph = store.lineage(model_id, direction="upstream", describe=False)
    for e in graph.edges:
        if e.relation == "derived_from":
            print(f"  {e.src} (driver_stats) --derived_from--> {e.dst} (driver_quality)")


def standardise(x: np.ndarray, mean: np.ndarray | None = None, std: np.ndarray | None = None):
    mean = np.nanmean(x, axis=0) if mean is None else mean
    std = np.nanstd(x, axis=0) + 1e-9 if std is None else std
    return np.nan_to_num((x - mean) / std), mean, std


def train_logistic(x: np.ndarray, y: np.ndarray, steps: int = 300, lr: float = 0.5):
    """Plain gradient-descent logistic regression: small, dependency-free, deterministic."""
    w, b = np.zeros(x.shape[1]), 0.0
    for _ in range(steps):
        p = 1 / (1 + np.exp(-(x @ w + b)))
        w -= lr * x.T @ (p - y) / len(y)
        b -= lr * float(np.mean(p - y))
    return w, b


def main(repo: Path) -> None:
    store = FeatureStore(repo)
    entity_rows = pq.read_table(repo / "data" / "entity_rows.parquet")
    train_rows, test_rows = entity_rows.slice(0, 1500), entity_rows.slice(1500)

    features = derive_feature(store)
    with store.start_run(experiment="ride-completion",
                         params={"model": "logistic", "steps": 300, "lr": 0.5}) as run:
        train = store.get_historical_features(train_rows, features)
        test = store.get_historical_features(test_rows, features)
        df = train.to_pandas()
        x, mean, std = standardise(df[FEATURES].to_numpy(dtype=float))
        y = df["completed"].to_numpy(dtype=float)
        w, b = train_logistic(x, y)
        tdf = test.to_pandas()
        xt, _, _ = standardise(tdf[FEATURES].to_numpy(dtype=float), mean, std)
        acc = float(np.mean(((xt @ w + b) > 0) == tdf["completed"].to_numpy()))
        run.log_metrics({"train_rows": float(len(df)), "test_accuracy": acc})
        artifact = repo / "models" / "ride_completion.json"
        artifact.parent.mkdir(exist_ok=True)
        artifact.write_text(json.dumps({"features": FEATURES, "w": w.tolist(), "b": b,
                                        "mean": mean.tolist(), "std": std.tolist()}))
        model = run.log_model("ride_completion", str(artifact), training_dataset=train,
                              test_dataset=test)
    print(f"run {run.run_id}: test accuracy {acc:.3f}")
    print(f"model {model.ref} ({model.model_id}) consumes: {', '.join(model.features)}")

    print(f"lineage of {model.ref} back to the parent commits of its derived feature:")
    print_derived_lineage(store, model.model_id)

    deployment = store.deploy(model.model_id, "production")
    print(f"deployment {deployment.deployment_id} in {deployment.environment}")

    batch = store.batch_features(model.model_id, test_rows.slice(0, 5)).to_pandas()
    xb, _, _ = standardise(batch[FEATURES].to_numpy(dtype=float), mean, std)
    batch["score"] = 1 / (1 + np.exp(-(xb @ w + b)))
    print("scored batch (features read point in time, without naming them again):")
    print(batch[["driver_id", "customer_id", "event_timestamp", *FEATURES, "score"]]
          .to_string(index=False))

    (repo / "last_deployment").write_text(deployment.deployment_id)
    store.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
