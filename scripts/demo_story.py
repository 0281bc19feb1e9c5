"""The model part of the demo: a run builds a training set, trains a small model, logs
metrics and the model, deploys it, scores a batch, and writes the deployment's lineage.

Usage: python scripts/demo_story.py REPO
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from featureledger import FeatureStore

FEATURES = ["conv_rate", "acc_rate", "avg_daily_trips", "avg_fare", "lifetime_trips"]


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

    with store.start_run(experiment="ride-completion",
                         params={"model": "logistic", "steps": 300, "lr": 0.5}) as run:
        train = store.get_historical_features(train_rows, feature_set="ride_model_features")
        test = store.get_historical_features(test_rows, feature_set="ride_model_features")
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

    deployment = store.deploy(model.model_id, "production")
    print(f"deployment {deployment.deployment_id} in {deployment.environment}")

    batch = store.score_batch(model.model_id, test_rows.slice(0, 5)).to_pandas()
    xb, _, _ = standardise(batch[FEATURES].to_numpy(dtype=float), mean, std)
    batch["score"] = 1 / (1 + np.exp(-(xb @ w + b)))
    print("scored batch (features read point in time, without naming them again):")
    print(batch[["driver_id", "customer_id", "event_timestamp", *FEATURES, "score"]]
          .to_string(index=False))

    (repo / "last_deployment").write_text(deployment.deployment_id)
    store.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
