"""The catalog (search, listing by tag and owner, show with versions, hypotheses, decision
log and leaderboard), the governance report, its Prometheus gauges and the CLI."""

from __future__ import annotations

import datetime as dt
import json

import pyarrow as pa
import pytest

from featureledger import Entity, FeatureStore, FeatureView, Field
from featureledger.errors import DefinitionError, StateError
from governance.stores import open_store
from helpers import run_cli as fl

T0 = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)
DRIVER = Entity(name="driver", join_keys={"driver_id": "int64"})
ENTITIES = {"driver_id": [1, 2], "event_timestamp": [T0 + dt.timedelta(days=1)] * 2}


def stats(extra: bool = False, rate_type: str = "float64") -> FeatureView:
    fields = [Field(name="trips", dtype="int64", unit="trips/day",
                    description="Completed trips per day", tags={"kpi": "core"}),
              Field(name="rate", dtype=rate_type, description="Share of accepted rides at "
                    "night", tags=["pii"])]
    if extra:
        fields.append(Field(name="km", dtype="float64"))
    return FeatureView(name="stats", entities=["driver"], owner="mobility-team",
                       description="Driver activity", tags={"domain": "rides"},
                       fields=fields)


GEO = FeatureView(name="geo", entities=["driver"], fields=[Field(name="city", dtype="string")])


def ingest(store: FeatureStore, view: str, **cols) -> str:
    n = len(next(iter(cols.values())))
    table = pa.table({"driver_id": pa.array(range(1, n + 1), pa.int64()),
                      "event_timestamp": pa.array([T0] * n, pa.timestamp("us", tz="UTC")),
                      **cols})
    return store.ingest(view, table).commit_id


def test_search_and_listing(tmp_path):
    store = open_store(tmp_path / "repo")
    try:
        store.apply([DRIVER, stats(), GEO])
        names = lambda rows: [e.name for e in rows]  # noqa: E731
        assert names(store.search("night")) == ["stats:rate"]
        assert names(store.search("TRIPS")) == ["stats:trips"]  # names first
        assert names(store.search("mobility")) == ["stats", "stats:rate", "stats:trips"]
        assert names(store.search("rides")) == ["stats", "stats:rate"]  # tag value, text
        assert names(store.search("pii")) == ["stats:rate"]  # tag key
        assert names(store.search("driver activity")) == ["stats"]
        assert store.search("nothing like this") == []
        assert names(store.catalog_entries(tag="kpi=core")) == ["stats:trips"]
        assert names(store.catalog_entries(tag="kpi=other")) == []
        # in the view's field order
        assert names(store.catalog_entries(owner="Mobility-Team", kind="feature")) == [
            "stats:trips", "stats:rate"]
        (trips,) = store.catalog_entries(tag="kpi")
        assert (trips.unit, trips.dtype, trips.owner, trips.version) == (
            "trips/day", "int64", "mobility-team", 1)
        # the undocumented: geo has neither owner nor description, nor has its field
        report = store.governance_report()
        assert report.undocumented == [
            {"kind": "feature_view", "name": "geo", "missing": ["owner", "description"]},
            {"kind": "feature", "name": "geo:city", "missing": ["owner", "description"]}]
    finally:
        store.close()


def test_show_versions_hypotheses_decisions_and_leaderboard(tmp_path, registry_url):
    root = tmp_path / "repo"
    store = open_store(root, registry_url)
    bob = open_store(root, registry_url, actor="bob")
    try:
        store.apply([DRIVER, stats()])
        c1 = ingest(store, "stats", trips=pa.array([3, 4], pa.int64()),
                    rate=pa.array([0.25, 0.5]))
        with pytest.raises(DefinitionError, match="go together"):
            store.apply([DRIVER, stats(extra=True)], experiment="eta-v2")
        plan = store.apply([DRIVER, stats(extra=True)], experiment="eta-v2",
                           hypothesis="distance driven improves ETA error")
        assert [(i.name, i.to_version) for i in plan.items if i.action == "new_version"] == [
            ("stats", 2)]
        ingest(store, "stats", trips=pa.array([5, 6], pa.int64()), rate=pa.array([0.1, 0.2]),
               km=pa.array([10.0, 20.0]))
        exp = store.registry.runs.get_experiment("eta-v2")
        graph = store.lineage(exp.experiment_id, direction="downstream")
        assert "view:stats@2" in graph.nodes
        # runs: A reads stats@1 (auc 0.71), B reads stats@2 and geo (auc 0.83), C reads
        # only trips (no auc)
        with store.start_run("eta", name="A") as run_a:
            ds = store.get_historical_features(ENTITIES, ["stats@1:rate", "stats@1:trips"])
            run_a.log_model("eta", "s3://m/a", training_dataset=ds)
            run_a.log_metrics({"auc": 0.71})
        with store.start_run("eta", name="B") as run_b:
            store.get_historical_features(ENTITIES, ["stats@2:rate", "stats@2:km"])
            run_b.log_metrics({"auc": 0.83})
        with store.start_run("eta", name="C") as run_c:
            store.get_historical_features(ENTITIES, ["stats@2:trips"])
        store.quarantine(c1, "late batch")
        store.set_retention("stats", keep_days=90, reason="GDPR: 90 days")
        dep = store.deprecate("stats@1:rate", "night bias", replacement="stats@2:rate")
        bob.approve_deprecation(dep.deprecation_id, "agreed")

        info = store.catalog_show("stats:rate", metric="auc")
        assert info["entry"]["name"] == "stats:rate" and info["entry"]["version"] == 2
        assert info["entry"]["tags"] == {"pii": "true"}
        assert [(v["version"], v["experiment"], v["hypothesis"]) for v in info["versions"]] == [
            (1, None, None), (2, "eta-v2", "distance driven improves ETA error")]
        assert info["retention"]["keep_days"] == 90
        assert [d["target"] for d in info["deprecations"]] == ["stats@1:rate"]
        decisions = [(d["action"], d["object"], d["reason"], d["actor"])
                     for d in info["decisions"]]
        assert decisions == [
            ("create_version", "stats@1", None, "alice"),
            ("create_version", "stats@2", None, "alice"),
            ("hypothesis", "stats@2", "distance driven improves ETA error", "alice"),
            ("commit_status:quarantined", c1, "late batch", "alice"),
            ("retention_policy", "stats", "GDPR: 90 days", "alice"),
            ("deprecate", "stats@1:rate", "night bias", "alice"),
            ("approve_deprecation", "stats@1:rate", "agreed", "bob")]
        board = info["leaderboard"]
        assert [(r["run"], r["metrics"].get("auc"), r["feature_versions"]) for r in board] == [
            ("B", 0.83, ["stats@2:rate"]), ("A", 0.71, ["stats@1:rate"])]
        assert board[0]["features"] == ["stats@2:km", "stats@2:rate"]
        assert board[1]["models"] == ["eta@1"]
        # a view's board has every run that read it; a pinned version only its own
        assert [r["run"] for r in store.leaderboard("stats", metric="auc")] == ["B", "A", "C"]
        assert [r["run_id"] for r in store.leaderboard("stats@1")] == [run_a.run_id]
        assert run_b.run_id and run_c.run_id
    finally:
        bob.close()
        store.close()


def test_governance_report_counts_and_metrics_gauges(tmp_path, registry_url):
    root = tmp_path / "repo"
    store = open_store(root, registry_url)
    bob = open_store(root, registry_url, actor="bob")
    try:
        store.apply([DRIVER, stats()])
        for i in range(3):
            ingest(store, "stats", trips=pa.array([i], pa.int64()), rate=pa.array([0.5]))
        store.set_retention("stats", keep_last=1, reason="latest only")
        store.apply([DRIVER, stats(rate_type="int64")], allow_breaking="rate becomes a count")
        store.registry.db.audit_now("read_offline", "feature_view", "stats@1",
                                    {"feature": "stats:rate"}, actor="eve",
                                    reason="no grant")
        store.registry.db.audit_now("read_offline", "feature_view", "stats@1",
                                    decision="allow")  # not a denial
        report = store.governance_report()
        assert report.denied_requests == 1
        assert report.retention_backlog == 2 and report.retention_backlog_rows == 2
        assert [u["feature_version"] for u in report.unreviewed_breaking_changes] == ["stats@2"]
        assert report.unreviewed_breaking_changes[0]["reason"] == "rate becomes a count"
        with pytest.raises(StateError, match="cannot review it too"):
            store.registry.lifecycle.review_breaking("stats", 2, "ok")
        bob.registry.lifecycle.review_breaking("stats", 2, "checked the consumers")
        assert store.governance_report().unreviewed_breaking_changes == []

        from fastapi.testclient import TestClient

        from featureledger.server.app import create_app

        with TestClient(create_app(store)) as client:
            text = client.get("/metrics").text
        gauges = {ln.split()[0]: float(ln.split()[1]) for ln in text.splitlines()
                  if ln.startswith("featureledger_governance_")}
        assert gauges == {
            "featureledger_governance_denied_requests": 1.0,
            "featureledger_governance_deprecated_reads": 0.0,
            "featureledger_governance_deprecated_features_read": 0.0,
            "featureledger_governance_undocumented": 0.0,
            "featureledger_governance_retention_backlog_commits": 2.0,
            "featureledger_governance_retention_backlog_rows": 2.0,
            "featureledger_governance_unreviewed_breaking_changes": 0.0,
            "featureledger_governance_unapproved_deprecations": 0.0}
    finally:
        bob.close()
        store.close()


@pytest.mark.e2e
def test_cli(tmp_path):
    root = tmp_path / "repo"
    store = open_store(root)
    store.apply([DRIVER, stats(), GEO])
    ids = [ingest(store, "stats", trips=pa.array([i], pa.int64()), rate=pa.array([0.5]))
           for i in range(3)]
    store.close()
    repo = ["--repo", str(root)]
    found = json.loads(fl(*repo, "search", "night", "--json", cwd=tmp_path).stdout)
    assert [e["name"] for e in found] == ["stats:rate"]
    listed = json.loads(fl(*repo, "catalog", "list", "--owner", "mobility-team", "--kind",
                           "feature_view", "--json", cwd=tmp_path).stdout)
    assert [e["name"] for e in listed] == ["stats"]
    fl(*repo, "retention", "set", "stats", "--keep-last", "1", "--reason", "one", cwd=tmp_path)
    shown = json.loads(fl(*repo, "retention", "show", "--json", cwd=tmp_path).stdout)
    assert [e["commit_id"] for e in shown["backlog"]] == ids[:2]
    dry = json.loads(fl(*repo, "retention", "apply", "--dry-run", "--json",
                        cwd=tmp_path).stdout)
    assert [e["commit_id"] for e in dry["expired"]] == ids[:2] and dry["dry_run"]
    done = json.loads(fl(*repo, "retention", "apply", "--json", cwd=tmp_path).stdout)
    assert [e["commit_id"] for e in done["expired"]] == ids[:2]
    assert done["files_deleted"] == 2
    dep = json.loads(fl(*repo, "deprecate", "stats:rate", "--reason", "biased",
                        "--replacement", "stats:trips", "--retire-on", "2031-01-01", "--json",
                        cwd=tmp_path).stdout)
    assert dep["target"] == "stats:rate" and dep["retire_on_iso"].startswith("2031-01-01")
    listed = json.loads(fl(*repo, "deprecations", "--json", cwd=tmp_path).stdout)
    assert [d["deprecation_id"] for d in listed] == [dep["deprecation_id"]]
    refused = fl(*repo, "deprecations", "--approve", dep["deprecation_id"], cwd=tmp_path,
                 code=2)
    assert "cannot approve it too" in refused.stderr
    shown = json.loads(fl(*repo, "catalog", "show", "stats:rate", "--json",
                          cwd=tmp_path).stdout)
    assert [d["action"] for d in shown["decisions"]] == [
        "create_version", "retention_policy", "commit_status:expired",
        "commit_status:expired", "deprecate"]
    text = fl(*repo, "catalog", "show", "stats", cwd=tmp_path).stdout
    assert "decision log" in text and "retention: keep the last 1 commit(s)" in text
    report = json.loads(fl(*repo, "governance", "report", "--json", cwd=tmp_path).stdout)
    assert report["gauges"]["retention_backlog_commits"] == 0
    assert report["gauges"]["unapproved_deprecations"] == 1
    assert [u["name"] for u in report["undocumented"]] == ["geo", "geo:city"]
    assert "unapproved deprecations" in fl(*repo, "governance", "report", cwd=tmp_path).stdout
