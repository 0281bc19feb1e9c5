"""Experiments and runs: logging, failure handling, the run context, filters, comparison."""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
import threading

import pandas as pd
import pytest

from featureledger import Entity, FeatureSet, FeatureStore, FeatureView, Field
from featureledger.config import load_config
from featureledger.context import current_run_id
from featureledger.errors import StateError, TrackingError, UnknownRunError

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def open_store(root, registry_url=None):
    overrides = {"registry": registry_url} if registry_url else None
    return FeatureStore(root, config=load_config(root, overrides=overrides))


def define(store):
    store.apply([
        Entity(name="driver", join_keys={"driver_id": "int64"}),
        FeatureView(name="driver_stats", entities=["driver"],
                    fields=[Field(name="trips", dtype="int64"),
                            Field(name="rating", dtype="float64")]),
        FeatureSet(name="fraud", features=["driver_stats:trips", "driver_stats:rating"]),
    ])


def rows(trips, day=0):
    n = len(trips)
    return pd.DataFrame({"driver_id": list(range(1, n + 1)),
                         "event_timestamp": [T0 + dt.timedelta(days=day)] * n,
                         "trips": trips, "rating": [4.0 + i / 10 for i in range(n)]})


def entities(n=3, day=5):
    return pd.DataFrame({"driver_id": list(range(1, n + 1)),
                         "event_timestamp": [T0 + dt.timedelta(days=day)] * n,
                         "label": [i % 2 for i in range(n)]})


@pytest.fixture
def store(tmp_path, registry_url):
    s = open_store(tmp_path, registry_url)
    define(s)
    yield s
    s.close()


def test_run_logs_params_metrics_tags_and_finishes(store):
    with store.start_run("baseline", params={"lr": 0.1, "depth": 6}, tags={"team": "risk"},
                         name="first") as run:
        assert current_run_id() == run.run_id
        p1 = run.log_metric("loss", 0.9)
        p2 = run.log_metric("loss", 0.5)
        run.log_metric("auc", 0.7, step=10, timestamp=T0)
        run.log_params({"optimizer": "adam"})
        run.set_tag("stage", "exp")
    assert current_run_id() is None
    rec = store.get_run(run.run_id)
    assert rec.status == "finished" and rec.end_time >= rec.start_time
    assert rec.experiment == "baseline" and rec.name == "first"
    assert rec.params == {"depth": "6", "lr": "0.1", "optimizer": "adam"}
    assert rec.metrics == {"auc": 0.7, "loss": 0.5}
    assert rec.tags == {"stage": "exp", "team": "risk"}
    assert (p1.step, p2.step) == (0, 1)
    hist = run.metric_history("auc")
    assert [(h.step, h.timestamp) for h in hist] == [(10, 1704067200000000)]
    assert [h.value for h in run.metric_history("loss")] == [0.9, 0.5]


def test_failing_block_marks_failed_and_keeps_what_was_logged(store):
    run = store.start_run("baseline", params={"lr": 0.2})
    with pytest.raises(RuntimeError, match="boom"), run:
        run.log_metric("loss", 0.3)
        store.ingest("driver_stats", rows([1, 2]))
        raise RuntimeError("boom")
    rec = store.get_run(run.run_id)
    assert rec.status == "failed"
    assert rec.error == "RuntimeError: boom"
    assert rec.params == {"lr": "0.2"} and rec.metrics == {"loss": 0.3}
    assert len(rec.commits) == 1  # the ingestion inside the block is linked to the run
    with pytest.raises(StateError, match="failed"):
        run.log_metric("late", 1.0)


def test_params_are_immutable_and_metrics_finite(store):
    with store.start_run("baseline", params={"lr": 0.1}) as run:
        run.log_param("lr", 0.1)  # same value: fine
        with pytest.raises(TrackingError, match="immutable"):
            run.log_param("lr", 0.2)
        with pytest.raises(TrackingError, match="finite"):
            run.log_metric("auc", float("nan"))
        with pytest.raises(TrackingError, match="number"):
            run.log_metric("auc", "high")
    with pytest.raises(UnknownRunError):
        store.get_run("run_0190b0b0-0000-7000-8000-000000000000")


def test_run_context_is_isolated_across_threads_and_tasks(store):
    seen: dict[str, str | None] = {}

    def worker():
        seen["thread"] = current_run_id()

    async def task(name, run_id):
        with store.start_run("ctx", name=name) as r:
            await asyncio.sleep(0.01)
            seen[name] = current_run_id()
            assert r.run_id == current_run_id()
        return r.run_id

    with store.start_run("ctx") as outer:
        th = threading.Thread(target=worker)
        th.start()
        th.join()

        async def main():
            return await asyncio.gather(task("a", None), task("b", None))

        ids = asyncio.run(main())
        assert current_run_id() == outer.run_id
    assert seen["thread"] is None  # a new thread does not inherit another thread's run
    assert seen["a"] == ids[0] and seen["b"] == ids[1] and ids[0] != ids[1]
    # nested runs record their parent
    assert store.get_run(ids[0]).parent_run_id == outer.run_id


def test_explicit_run_id_links_without_context(store):
    run = store.start_run("explicit")
    result = store.ingest("driver_stats", rows([5, 6]), run_id=run.run_id)
    run.end()
    rec = store.get_run(run.run_id)
    assert rec.commits == [result.commit.commit_id]
    assert rec.status == "finished"


def test_list_filters_and_compare(store):
    with store.start_run("cmp", params={"lr": 0.1, "depth": 3}) as a:
        store.ingest("driver_stats", rows([1, 2, 3]))
        store.get_historical_features(entities(), "fraud")
        a.log_metric("auc", 0.7)
    with store.start_run("cmp", params={"lr": 0.2, "depth": 3}) as b:
        store.ingest("driver_stats", rows([7, 8, 9], day=1))
        store.get_historical_features(entities(), "fraud")
        b.log_metric("auc", 0.6)
        b.log_metric("auc", 0.9)
    with store.start_run("other") as c:
        c.log_metric("auc", 0.95)
    assert [r.run_id for r in store.list_runs(experiment="cmp")] == [b.run_id, a.run_id]
    # the latest value counts: b's auc is 0.9 now
    assert {r.run_id for r in store.list_runs(metric="auc>0.8")} == {b.run_id, c.run_id}
    assert {r.run_id for r in store.list_runs(metric=("auc", "<=", 0.7))} == {a.run_id}
    assert {r.run_id for r in store.list_runs(feature_version="driver_stats@1")} == {
        a.run_id, b.run_id}
    assert store.list_runs(feature_version="driver_stats@2") == []
    cmp = store.compare_runs(a.run_id, b.run_id)
    assert cmp.params == {"depth": ("3", "3"), "lr": ("0.1", "0.2")}
    assert cmp.differing_params == ["lr"]
    assert cmp.metrics == {"auc": (0.7, 0.9)}
    assert cmp.feature_versions == {"driver_stats@1": (True, True)}
    commit_a = store.get_run(a.run_id).commits[0]
    commit_b = store.get_run(b.run_id).commits[0]
    # a's dataset read only a's commit; b's read both
    assert cmp.commits_only_a == {}
    assert cmp.commits_only_b == {"driver_stats@1": [commit_b]}
    assert cmp.commits_common == 1 and not cmp.same_data
    assert commit_a != commit_b
    with pytest.raises(TrackingError, match="malformed"):
        store.list_runs(metric="auc>>1")


def test_git_commit_and_dirty_flag(tmp_path):
    repo = tmp_path / "proj"
    repo.mkdir()

    def git(*args):
        subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)

    git("init", "-q")
    git("-c", "user.email=a@b", "-c", "user.name=a", "commit", "-q", "--allow-empty", "-m", "x")
    (repo / "f.txt").write_text("1")
    git("add", "f.txt")
    git("-c", "user.email=a@b", "-c", "user.name=a", "commit", "-q", "-m", "y")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                          text=True, check=True).stdout.strip()
    s = open_store(repo)
    try:
        with s.start_run("git") as clean:
            pass
        (repo / "f.txt").write_text("2")
        with s.start_run("git") as dirty:
            pass
        assert (s.get_run(clean.run_id).git_commit, s.get_run(clean.run_id).git_dirty) == (
            head, False)
        assert s.get_run(dirty.run_id).git_dirty is True
    finally:
        s.close()
