"""Sampling bias of a training set, training-serving skew from the sampled feature log,
and the scoreboard."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest

from featureledger.errors import QualityError

N = 1000


def _entities(h, ids: np.ndarray, hours: float = 5) -> pa.Table:
    return pa.table({"driver_id": ids.astype(np.int64),
                     "event_timestamp": pa.array([h.T0 + dt.timedelta(hours=hours)] * len(ids),
                                                 pa.timestamp("us", tz="UTC"))})


def _population(store, h) -> None:
    # x grows with the driver id, so a set of the highest ids is biased
    rows = h.batch(1, hours=1, n=N)
    rows = rows.set_column(2, "x", pa.array(np.arange(N) / N + rows.column("x").to_numpy()
                                            * 0.05))
    store.ingest("stats", rows)


def test_a_biased_training_set_is_reported_with_its_entity_coverage(store, h):
    _population(store, h)
    fair = store.get_historical_features(_entities(h, np.arange(0, N, 2)), ["stats:x"])
    biased = store.get_historical_features(_entities(h, np.arange(N - 100, N + 50)),
                                           ["stats:x"])
    ok = store.training_bias(fair.id)
    assert ok.status == "ok", ok.to_dict()
    cov = ok.coverage["stats@1"]
    assert cov["covered_entities"] == N // 2 and cov["coverage"] == 0.5
    assert cov["unknown_entities"] == 0
    bad = store.training_bias(biased.id, exact=True)
    assert bad.skewed == ["x"]
    cov = bad.coverage["stats@1"]
    assert cov["covered_entities"] == 100 and cov["unknown_entities"] == 50
    (alert,) = [a for a in store.alerts() if a.rule == "bias"]
    assert alert.subject == biased.id and alert.lineage_node == biased.id


def test_served_values_are_sampled_in_batches_and_compared_with_training(make_store, h):
    store = make_store(quality={"feature_log_sample_rate": 1.0,
                                "feature_log_batch_rows": 256})
    store.ingest("stats", h.batch(1, hours=1, n=N))
    store.materialize(end=h.T0 + dt.timedelta(hours=10))
    train = store.get_historical_features(_entities(h, np.arange(N)), ["stats:x", "stats:c"])
    with store.start_run("skew") as run:
        model = run.log_model("m", "s3://models/m/1", training_dataset=train)
    dep = store.deploy(model.model_id, "production")
    flog = store.online.feature_log
    for i in range(0, N, 100):
        store.get_online_features(entity_rows={"driver_id": list(range(i, i + 100))},
                                  deployment=dep.deployment_id)
    flog.flush()
    assert flog.written == N and flog.batches == 4  # 256 + 256 + 256 + the rest at flush
    report = store.serving_skew(dep.deployment_id)
    assert report.sample_rows == N and report.status == "ok"
    # serving moves away from training: new values land online
    store.push("stats", h.batch(2, hours=6, n=N, shift=3.0), flush=True)
    for i in range(0, N, 100):
        store.get_online_features(entity_rows={"driver_id": list(range(i, i + 100))},
                                  deployment=dep.deployment_id)
    flog.flush()
    later = store.serving_skew(dep.deployment_id)
    assert "stats@1:x" in later.skewed and "stats@1:c" not in later.skewed
    with pytest.raises(QualityError, match="feature_log_sample_rate"):
        store.serving_skew(model.model_id)


def test_scoreboard_kpis_per_view_commit_experiment_and_deployment(store, h):
    store.set_quality_policy("stats", {"on_drift": "quarantine",
                                       "thresholds": {"null_rate": 0.5}})
    a = store.ingest("stats", h.batch(1, hours=1, n=400))
    rows = h.batch(2, hours=2, n=400)
    rows = rows.set_column(3, "c", pa.array([None] * 100 + rows.column("c").to_pylist()[100:]))
    b = store.ingest("stats", pa.concat_tables([rows, rows.slice(0, 40)]),
                     mode="drop_invalid")
    bad = store.ingest("stats", h.batch(3, hours=3, n=400, shift=5.0))
    with store.start_run("exp1"):
        store.get_historical_features(_entities(h, np.arange(400)), ["stats:x"])
    board = store.scoreboard()
    (view,) = board.of("view")
    assert view.subject == "stats@1" and view.commits == 3 and view.quarantined == 1
    checked = 400 + 440 + 400
    assert view.validation_pass_rate == pytest.approx((400 + 360 + 400) / checked)
    assert view.drift == "drift" and view.open_alerts == 2  # drift + quarantine
    # completeness over served (committed) rows: 60 nulls of c among 1520 values
    nulls = sum(1 for v in rows.column("c").to_pylist()[40:] if v is None)
    assert view.completeness == pytest.approx(1 - nulls / (2 * (400 + 360)))
    by_commit = {r.subject: r for r in board.of("commit")}
    assert by_commit[a.commit_id].drift == "skipped"
    assert by_commit[b.commit_id].validation_pass_rate == pytest.approx(360 / 440)
    assert by_commit[bad.commit_id].drift == "drift" and by_commit[bad.commit_id].quarantined
    (exp,) = board.of("experiment")
    assert exp.subject == "exp1" and exp.commits == 2 and exp.drift == "ok"
    assert board.to_dict()["rows"][0]["kind"] == "view"
