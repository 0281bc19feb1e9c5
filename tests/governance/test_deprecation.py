"""Deprecation schedules: reads of deprecated features warn once per process and are
counted, offline and online; after retire_on they fail naming the replacement, except for
deployments with a recorded exception; deprecating what an active deployment reads is
refused unless forced; reconcile reports deprecations nobody else approved."""

from __future__ import annotations

import datetime as dt
import warnings
from pathlib import Path

import pyarrow as pa
import pytest

from featureledger import DeprecatedFeatureWarning, Entity, FeatureStore, FeatureView, Field
from featureledger.errors import FeatureRetiredError, StateError, UnknownFeatureError
from governance.stores import open_store

T0 = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)
ROWS = {"driver_id": [1, 2], "event_timestamp": [T0, T0], "trips": [3, 4],
        "rate": [0.25, 0.5]}
FUTURE = (dt.date.today() + dt.timedelta(days=30)).isoformat()


def build(root: Path, registry_url: str | None = None) -> FeatureStore:
    store = open_store(root, registry_url)
    driver = Entity(name="driver", join_keys={"driver_id": "int64"})
    store.apply([driver,
                 FeatureView(name="stats", entities=["driver"],
                             fields=[Field(name="trips", dtype="int64"),
                                     Field(name="rate", dtype="float64")]),
                 FeatureView(name="stats2", entities=["driver"],
                             fields=[Field(name="rate", dtype="float64")])])
    store.ingest("stats", pa.table(ROWS))
    store.ingest("stats2", pa.table({k: ROWS[k] for k in ("driver_id", "event_timestamp",
                                                          "rate")}))
    store.materialize()
    return store


ENTITIES = {"driver_id": [1, 2], "event_timestamp": [T0 + dt.timedelta(days=1)] * 2}


def offline(store: FeatureStore, ref: str = "stats:rate") -> list:
    return store.get_historical_features(ENTITIES, [ref]).to_arrow().column(
        ref.split(":")[1]).to_pylist()


def online(store: FeatureStore, ref: str = "stats:rate", **kw) -> list:
    resp = store.get_online_features([ref], [{"driver_id": 1}, {"driver_id": 2}], **kw)
    return resp.to_dict()[ref.split(":")[1]]


def train(store: FeatureStore, model: str = "m", ref: str = "stats:rate") -> None:
    """Log model ``model`` (version 1) trained on a training set of ``ref``."""
    with store.start_run(model) as run:
        ds = store.get_historical_features(ENTITIES, [ref])
        run.log_model(model, f"s3://{model}/1", training_dataset=ds)


def reads(store: FeatureStore) -> dict[tuple[str, str], tuple[int, int]]:
    out: dict[tuple[str, str], tuple[int, int]] = {}
    for r in store.registry.lifecycle.read_counts():
        req, rows = out.get((r["reader"], r["feature"]), (0, 0))
        out[(r["reader"], r["feature"])] = (req + r["requests"], rows + r["rows"])
    return out


def test_deprecated_feature_warns_once_and_is_counted(tmp_path, registry_url):
    store = build(tmp_path / "repo", registry_url)
    try:
        dep = store.deprecate("stats:rate", "biased by night shifts",
                              replacement="stats2:rate", retire_on=FUTURE)
        assert dep.target == "stats:rate" and dep.requested_by == "alice"
        with pytest.warns(DeprecatedFeatureWarning, match=(
                r"reading stats@1:rate: stats:rate is deprecated \(biased by night shifts\); "
                rf"use stats2:rate instead; it retires on {FUTURE}")):
            assert offline(store) == [0.25, 0.5]
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # once per process: no second warning
            assert offline(store) == [0.25, 0.5]
            assert online(store) == [0.25, 0.5]
            assert online(store) == [0.25, 0.5]
            # what it does not cover reads without a warning and is not counted
            assert offline(store, "stats:trips") == [3, 4]
            assert online(store, "stats2:rate") == [0.25, 0.5]
        assert reads(store) == {("offline", "stats@1:rate"): (2, 4),
                                ("online", "stats@1:rate"): (2, 4)}
        report = store.governance_report()
        assert report.deprecated_reads == 4
        assert report.deprecated_features_read == ["stats@1:rate"]
        # a feature-level deprecation leaves the version's status alone
        assert store.get_view("stats").status == "active"
    finally:
        store.close()


def test_after_retire_on_reads_fail_except_deployments_with_an_exception(tmp_path):
    store = build(tmp_path / "repo")
    try:
        train(store)
        plain = store.deploy("m@1", "production")
        excepted = store.deploy("m@1", "staging",
                                exceptions={"stats@1": "retrains next sprint"})
        with pytest.raises(StateError, match=(
                rf"stats@1:rate cannot be deprecated: active deployment\(s\) read it: "
                rf".*{plain.deployment_id} \(stats@1:rate\)")):
            store.retire("stats@1:rate", "biased", replacement="stats2:rate")
        assert store.deprecations() == []  # refused: nothing recorded
        assert store.registry.db.audit_trail("feature_view", "stats@1:rate") == []
        with pytest.raises(StateError, match="needs a reason"):
            store.retire("stats@1:rate", "biased", force="  ")
        dep = store.retire("stats@1:rate", "biased", replacement="stats2:rate",
                           force="both deployments move this week")
        assert dep.forced_reason == "both deployments move this week"
        with pytest.raises(FeatureRetiredError, match=(
                r"stats@1:rate was retired on .* \(biased\); read stats2:rate instead")) as err:
            offline(store)
        assert err.value.replacement == "stats2:rate" and err.value.feature == "stats@1:rate"
        with pytest.raises(FeatureRetiredError):
            online(store)
        with pytest.raises(FeatureRetiredError, match=f"deployment {plain.deployment_id} "
                           "has no exception"):
            store.get_model_features(plain.deployment_id, [{"driver_id": 1}])
        with pytest.warns(DeprecatedFeatureWarning):
            got = store.get_model_features(excepted.deployment_id, [{"driver_id": 1}])
        assert got.to_dict()["rate"] == [0.25]
        assert reads(store) == {(excepted.deployment_id, "stats@1:rate"): (1, 1)}
        # the replacement reads as ever
        assert offline(store, "stats2:rate") == [0.25, 0.5]
    finally:
        store.close()


def test_version_deprecation_sets_status_and_withdraw_restores(tmp_path):
    store = build(tmp_path / "repo")
    try:
        with pytest.raises(UnknownFeatureError, match="'speed' is not a feature of stats@1"):
            store.deprecate("stats@1:speed", "x")
        with pytest.raises(UnknownFeatureError):
            store.deprecate("stats", "x", replacement="nope:rate")
        dep = store.deprecate("stats", "superseded by stats2", replacement="stats2")
        assert store.get_view("stats", 1).status == "deprecated"
        with pytest.warns(DeprecatedFeatureWarning, match="stats is deprecated"):
            assert offline(store, "stats:trips") == [3, 4]
        withdrawn = store.withdraw_deprecation(dep.deprecation_id, "stats2 not ready")
        assert withdrawn.withdrawn_by == "alice"
        assert store.get_view("stats", 1).status == "active"
        assert store.deprecations() == []
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert offline(store, "stats:trips") == [3, 4]
        actions = [e["action"] for e in reversed(store.registry.db.audit_trail(
            "feature_view"))]
        assert actions[-4:] == ["deprecate", "set_status:deprecated", "withdraw_deprecation",
                                "set_status:active"]
    finally:
        store.close()


def test_approval_by_another_principal_and_reconcile(tmp_path, registry_url):
    root = tmp_path / "repo"
    store = build(root, registry_url)
    bob = open_store(root, registry_url, actor="bob")
    try:
        dep = store.deprecate("stats@1", "replaced", replacement="stats2")
        rep = store.reconcile()
        assert [(p.code, p.ids) for p in rep.problems] == [
            ("deprecation_unapproved", {"deprecation": dep.deprecation_id,
                                        "target": "stats@1"})]
        assert "requested by alice" in rep.problems[0].message
        assert store.governance_report().gauges()["unapproved_deprecations"] == 1
        with pytest.raises(StateError, match=r"alice requested .* cannot approve it too"):
            store.approve_deprecation(dep.deprecation_id)
        approved = bob.approve_deprecation(dep.deprecation_id, "agreed")
        assert (approved.approved_by, approved.requested_by) == ("bob", "alice")
        with pytest.raises(StateError, match="approved by bob already"):
            bob.approve_deprecation(dep.deprecation_id)
        assert store.reconcile().ok
        # a status set without a recorded deprecation is reported as such
        store.registry.definitions.set_status("feature_view", "stats2", 1, "retired", "x")
        assert [(p.code, p.ids) for p in store.reconcile().problems] == [
            ("deprecation_unrecorded", {"feature_version": "stats2@1"})]
    finally:
        bob.close()
        store.close()


def test_the_earliest_retirement_of_overlapping_deprecations_decides(tmp_path):
    store = build(tmp_path / "repo")
    try:
        store.deprecate("stats", "whole view superseded", replacement="stats2")
        store.deprecate("stats@1:rate", "biased", replacement="stats2:rate",
                        retire_on="2001-01-01")
        with pytest.raises(FeatureRetiredError, match=r"retired on 2001-01-01 \(biased\)"):
            offline(store)
        with pytest.warns(DeprecatedFeatureWarning, match="whole view superseded"):
            assert offline(store, "stats:trips") == [3, 4]
    finally:
        store.close()


def test_deploying_onto_a_retired_feature_is_refused_without_an_exception(tmp_path):
    store = build(tmp_path / "repo")
    try:
        train(store)
        store.retire("stats@1:rate", "biased", replacement="stats2:rate")
        with pytest.raises(StateError, match=(
                r"stats@1:rate is retired \(biased\).*exceptions=\{'stats@1': 'REASON'\}")):
            store.deploy("m@1", "production")
        assert store.deployments() == []
        dep = store.deploy("m@1", "production",
                           exceptions={"stats@1": "retrains next sprint"})
        with pytest.warns(DeprecatedFeatureWarning):
            got = store.get_model_features(dep.deployment_id, [{"driver_id": 1}])
        assert got.to_dict()["rate"] == [0.25]
        # a deprecation without a retirement date refuses too: the model would break later
        store.deprecate("stats2:rate", "moving", retire_on=FUTURE)
        with pytest.warns(DeprecatedFeatureWarning):
            train(store, "m2", "stats2:rate")
        with pytest.raises(StateError, match=r"stats2@1:rate is deprecated \(moving\)"):
            store.deploy("m2@1", "staging")
    finally:
        store.close()
