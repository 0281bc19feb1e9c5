"""Projects are isolated: two projects on one registry database, one offline root and one
online store see nothing of each other.

Both projects run the same story (definitions with the same names, ingestion, a run with a
training set, a model, a deployment, materialization, online reads, a quarantine), with
different values, interleaved step by step; the second project also has a view of its own.
The first project's view of the world (every listing, lookup, lineage query,
reconciliation, online and offline read) must then equal, after naming ids by order of
appearance, what the same story gives when that project is alone. Any query that forgets
its project changes that picture. Ids of the other project must behave like unknown ids.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from featureledger import Entity, FeatureSet, FeatureStore, FeatureView, Field
from featureledger.config import load_config
from featureledger.errors import NotFoundError

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
DRIVER = Entity(name="driver", join_keys={"driver_id": "int64"})
STATS = FeatureView(name="driver_stats", entities=[DRIVER],
                    fields=[Field(name="trips", dtype="int64"),
                            Field(name="rating", dtype="float64")])
GEO = FeatureView(name="driver_geo", entities=[DRIVER], fields=[Field(name="city", dtype="string")])
FRAUD = FeatureSet(name="fraud", features=["driver_stats:trips", "driver_stats:rating",
                                           "driver_geo:city"])
EXTRA = FeatureView(name="extra", entities=[DRIVER], fields=[Field(name="x", dtype="int64")])
ENTITIES = pd.DataFrame({"driver_id": [1, 2, 3, 1],
                         "event_timestamp": [T0 + dt.timedelta(days=d) for d in (1, 3, 3, 3)]})
KEYS = [{"driver_id": i} for i in (1, 2, 3, 4)]
_ID = re.compile(r"\b(cmt|ds|run|mdl|dep|exp)_[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-"
                 r"[0-9a-f]{12}\b")


def day(n: float) -> dt.datetime:
    return T0 + dt.timedelta(days=n)


def story(s: FeatureStore, base: int, out: dict[str, Any], *, extra: bool = False
          ) -> Iterator[None]:
    """The steps of one project's life; ``base`` sets its values, ``out`` gets its ids."""
    s.apply([DRIVER, STATS, GEO, FRAUD] + ([EXTRA] if extra else []))
    yield
    out["c1"] = s.ingest("driver_stats", pd.DataFrame({
        "driver_id": [1, 2, 3], "event_timestamp": [day(0)] * 3,
        "trips": [base + 10, base + 20, base + 30], "rating": [4.0, 4.5, 5.0]})).commit
    yield
    out["c2"] = s.ingest("driver_geo", pd.DataFrame({
        "driver_id": [1, 3], "event_timestamp": [day(0)] * 2,
        "city": [f"Oslo{base}", f"Rome{base}"]})).commit
    yield
    run = s.start_run("fraud-detection", params={"C": 1.0, "base": base})
    out["run"] = run
    out["exp"] = s.tracking.get_experiment("fraud-detection").experiment_id
    yield
    out["c3"] = s.ingest("driver_stats", pd.DataFrame({
        "driver_id": [1, 2], "event_timestamp": [day(2)] * 2,
        "trips": [base + 11, base + 21], "rating": [3.9, 4.4]}), run_id=run.run_id).commit
    yield
    out["ds"] = s.get_historical_features(ENTITIES, "fraud", run_id=run.run_id)
    yield
    run.log_metric("auc", 0.7)
    out["model"] = run.log_model("fraud", f"s3://models/{base}", training_dataset=out["ds"])
    run.end()
    yield
    out["dep"] = s.deploy("fraud", "production")
    yield
    out["bad"] = s.ingest("driver_stats", pd.DataFrame({
        "driver_id": [3], "event_timestamp": [day(4)], "trips": [-1], "rating": [0.0]})).commit
    s.quarantine(out["bad"].commit_id, "bad upstream batch")
    yield
    if extra:
        s.ingest("extra", pd.DataFrame({"driver_id": [1, 2, 3, 4], "event_timestamp": [day(0)] * 4,
                                        "x": [7, 7, 7, 7]}))
        yield
    s.materialize()
    yield
    out["online"] = s.get_model_features(out["dep"].deployment_id, KEYS).to_dict()
    s.tracking.usage.flush()
    yield


def interleave(*stories: Iterator[None]) -> None:
    live = list(stories)
    while live:
        for st in list(live):
            if next(st, StopIteration) is StopIteration:
                live.remove(st)


class Names:
    """Replaces ids by ``<kind>#<n>`` in order of first appearance, and the project name."""

    def __init__(self, project: str) -> None:
        self.project = project
        self.ids: dict[str, str] = {}

    def __call__(self, x: Any) -> Any:
        if isinstance(x, str):
            x = x.replace(self.project, "<project>")
            return _ID.sub(lambda m: self.ids.setdefault(
                m.group(0), f"{m.group(1)}#{len(self.ids) + 1}"), x)
        if isinstance(x, dict):
            return {self(k): self(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [self(v) for v in x]
        return x


def _edges(graph: Any) -> list[tuple[str, str, str]]:
    return [(e.src, e.dst, e.relation) for e in graph.edges]


def picture(s: FeatureStore, ids: dict[str, Any]) -> dict[str, Any]:
    """Everything the project can see, by every listing, lookup and lineage call."""
    n = Names(s.config.project)
    tr = s.tracking
    model, dep, ds = ids["model"], ids["dep"], ids["ds"]
    commits = s.commits()
    p: dict[str, Any] = {
        "generation": s.registry.generation(),
        "definitions": [(r.kind, r.name, r.version, r.status) for r in s.list()],
        "all_versions": [(r.kind, r.name, r.version) for r in
                         s.registry.definitions.list(latest_only=False)],
        "stats_versions": [r.version for r in s.versions("driver_stats")],
        "feature_set": s.get_feature_set("fraud").definition.features,
        "commits": [(c.view_ref, c.row_count, c.status, c.commit_id, c.run_id, c.files)
                    for c in commits],
        "committed": [c.commit_id for c in s.commits(status="committed")],
        "lookups": [s.get_commit(c.commit_id).commit_id for c in commits],
        "datasets": [(d.dataset_id, d.features, d.row_count, d.commit_ids, d.content_hash,
                      d.entity_path) for d in s.registry.datasets.list()],
        "datasets_of_commit": [d.dataset_id for d in
                               s.registry.datasets.list(commit_id=ids["c1"].commit_id)],
        "experiments": [(e.name, e.description) for e in tr.list_experiments()],
        "runs": [(r.run_id, r.experiment, r.status, r.params, r.metrics, r.datasets,
                  r.models, r.commits) for r in s.list_runs()],
        "runs_by_version": [r.run_id for r in s.list_runs(feature_version="driver_stats@1")],
        "models": [(m.model_id, m.ref, m.features, m.datasets, m.run_id)
                   for m in tr.list_models()],
        "model_lookup": s.get_model("fraud").model_id,
        "deployments": [(d.deployment_id, d.model_ref, d.status, d.features)
                        for d in tr.deployments()],
        "snapshot_edges": [(e["src"], e["dst"], e["relation"]) for e in
                           tr.get_deployment(dep.deployment_id).lineage_snapshot["edges"]],
        "usage": [(u["deployment_id"], u["feature_version"], u["requests"], u["rows"])
                  for u in tr.deployment_usage()],
        "audit": [(a["action"], a["object_kind"], a["object_id"])
                  for a in reversed(s.registry.db.audit_trail())],
        "lineage": {node: _edges(s.lineage(node)) for node in (
            "driver_stats@1", "feature_set:fraud@1", model.model_id, dep.deployment_id,
            ids["c1"].commit_id, ds.id)},
        "lineage_depth": _edges(s.lineage("driver_stats@1", direction="downstream", depth=2)),
        "path": _edges(s.lineage_service.path(ids["c1"].commit_id, dep.deployment_id)),
        "impact": {k: v for k, v in s.impact("driver_stats@1").to_dict().items()
                   if k not in ("deployments", "active_deployments")},
        "impact_quarantined": s.impact("driver_stats@1", commit_status="quarantined").seeds,
        "reconcile": s.reconcile().to_dict(),
        "online": s.get_online_features(["driver_stats:trips", "driver_geo:city"],
                                        KEYS).to_dict(metadata=True),
        "offline": s.reproduce(ds.id).to_arrow().to_pydict(),
        "gc_dry_run": s.gc(grace_seconds=0, dry_run=True).removed,
    }
    return n(p)


@pytest.fixture(params=["sqlite", pytest.param("postgres+redis",
                                               marks=[pytest.mark.postgres, pytest.mark.redis])])
def shared(request, tmp_path) -> Iterator[Callable[[str], FeatureStore]]:
    """Open stores of any project on one registry, offline root and online store."""
    suffix = uuid.uuid4().hex[:8]  # project names are per test: Redis keys stay apart
    if request.param == "sqlite":
        registry = f"sqlite:///{tmp_path / 'shared' / 'registry.db'}"
        online: dict[str, Any] = {"type": "sqlite", "path": str(tmp_path / "shared" / "online.db")}
    else:
        from conftest import REDIS_HOST, REDIS_PORT, require_redis

        require_redis()
        registry = request.getfixturevalue("pg_url")
        db = int(os.environ.get("FEATURELEDGER_TEST_REDIS_DB", "15"))
        # the default key prefix, which is the point: nothing says the projects differ
        online = {"type": "redis", "url": f"redis://{REDIS_HOST}:{REDIS_PORT}/{db}"}
    opened: list[FeatureStore] = []

    def open_store(name: str, **serving: Any) -> FeatureStore:
        repo = tmp_path / name
        repo.mkdir(exist_ok=True)
        cfg = load_config(repo, environ={}, overrides={
            "project": f"{name}-{suffix}", "registry": registry, "online_store": online,
            "offline_store": {"type": "parquet", "path": str(tmp_path / "shared" / "offline")},
            "serving": {"poll_interval_s": 0, **serving}})
        s = FeatureStore(repo, config=cfg)
        opened.append(s)
        return s

    yield open_store
    for s in opened:
        s.close()
    if request.param != "sqlite":
        import redis

        client = redis.Redis.from_url(online["url"])
        for name in ("alpha", "beta"):
            keys = list(client.scan_iter(match=f"fl:{name}-{suffix}:*", count=1000))
            if keys:
                client.delete(*keys)
        client.close()


def alone(tmp_path: Path, project: str) -> dict[str, Any]:
    """The first project's picture when it has everything to itself (embedded stores)."""
    repo = tmp_path / "alone"
    repo.mkdir()
    s = FeatureStore(repo, config=load_config(repo, environ={}, overrides={
        "project": project, "serving": {"poll_interval_s": 0}}))
    try:
        ids: dict[str, Any] = {}
        interleave(story(s, 0, ids))
        return picture(s, ids)
    finally:
        s.close()


@pytest.mark.slow
def test_two_projects_side_by_side_see_only_their_own(shared, tmp_path) -> None:
    a, b = shared("alpha"), shared("beta")
    ida: dict[str, Any] = {}
    idb: dict[str, Any] = {}
    interleave(story(a, 0, ida), story(b, 1000, idb, extra=True))

    # values: each project reads its own, online and offline
    assert ida["online"]["trips"] == [11, 21, 30, None]
    assert ida["online"]["city"] == ["Oslo0", None, "Rome0", None]
    assert idb["online"]["trips"] == [1011, 1021, 1030, None]
    assert idb["online"]["city"] == ["Oslo1000", None, "Rome1000", None]
    for s, ids, base in ((a, ida, 0), (b, idb, 1000)):
        frame = s.reproduce(ids["ds"].id).to_arrow().to_pydict()
        assert frame["trips"] == [base + 10, base + 21, base + 30, base + 11]
        assert frame["city"] == [f"Oslo{base}", None, f"Rome{base}", f"Oslo{base}"]
        online = s.get_online_features(["driver_stats:trips"], KEYS).to_dict()
        assert online["trips"] == [base + 11, base + 21, base + 30, None]
    assert b.get_online_features(["extra:x"], KEYS).to_dict()["x"] == [7, 7, 7, 7]

    # the first project's whole picture is exactly what it is when alone
    mine = picture(a, ida)
    assert mine == alone(tmp_path, a.config.project)
    theirs = picture(b, idb)
    assert ["feature_view", "extra", 1, "active"] in theirs["definitions"]
    assert ["feature_view", "extra", 1, "active"] not in mine["definitions"]
    assert mine["reconcile"]["ok"] and theirs["reconcile"]["ok"]

    # no id of one project is known to the other
    for me, other in ((a, idb), (b, ida)):
        for cid in (other["c1"].commit_id, other["bad"].commit_id):
            with pytest.raises(NotFoundError):
                me.get_commit(cid)
            with pytest.raises(NotFoundError):
                me.quarantine(cid, "not mine")
            with pytest.raises(NotFoundError):
                me.get_historical_features(ENTITIES, "fraud", as_of=cid)
            assert me.lineage(cid).edges == []
        tr = me.tracking
        calls: list[tuple[Any, ...]] = [
            (me.get_dataset, other["ds"].id), (me.reproduce, other["ds"].id),
            (me.get_run, other["run"].run_id), (me.get_model, other["model"].model_id),
            (me.deploy, other["model"].model_id),
            (tr.get_deployment, other["dep"].deployment_id),
            (me.undeploy, other["dep"].deployment_id), (tr.get_experiment, other["exp"]),
            (me.get_model_features, other["dep"].deployment_id, KEYS)]
        for fn, *args in calls:
            with pytest.raises(NotFoundError):
                fn(*args)
        with pytest.raises(NotFoundError):
            me.tracking.log_model(None, "stolen", "s3://x", training_dataset=other["ds"].id)
        assert me.lineage(other["dep"].deployment_id).edges == []
        assert me.commits(run_id=other["run"].run_id) == []

    # gc: an orphan in each project's folder; each gc removes its own only
    root = a.ctx.offline_store.root
    orphans = {}
    for s in (a, b):
        d = root / s.config.project / "views" / "driver_stats" / "v1" / "cmt_orphan"
        d.mkdir(parents=True)
        (d / "part-00000.parquet").write_bytes(b"x")
        orphans[s.config.project] = d
    removed = a.gc(grace_seconds=0).removed
    assert removed == [f"{a.config.project}/views/driver_stats/v1/cmt_orphan"]
    assert not orphans[a.config.project].exists() and orphans[b.config.project].exists()
    assert b.gc(grace_seconds=0).removed == [
        f"{b.config.project}/views/driver_stats/v1/cmt_orphan"]
    for s, ids in ((a, ida), (b, idb)):  # nothing either project still needs went away
        assert s.reconcile().ok
        assert s.reproduce(ids["ds"].id).content_hash == ids["ds"].content_hash


def test_one_projects_writes_leave_anothers_caches_alone(shared) -> None:
    a, b = shared("alpha", cache=True), shared("beta")
    for s, base in ((a, 0), (b, 1000)):
        s.apply([DRIVER, STATS])
        s.ingest("driver_stats", pd.DataFrame({
            "driver_id": [1, 2], "event_timestamp": [day(0)] * 2,
            "trips": [base + 1, base + 2], "rating": [1.0, 2.0]}))
        s.materialize()
    assert a.get_online_features(["driver_stats:trips"], KEYS).to_dict()["trips"] == [
        1, 2, None, None]
    cache = a.online.cache
    generation, invalidations = a.registry.generation(), cache.invalidations
    # the other project applies, ingests, quarantines and materializes
    b.apply([DRIVER, STATS, EXTRA])
    bad = b.ingest("driver_stats", pd.DataFrame({
        "driver_id": [1], "event_timestamp": [day(1)], "trips": [-1], "rating": [0.0]})).commit
    b.materialize()
    b.quarantine(bad.commit_id, "bad batch")
    hits = cache.hits
    # every read checks for changes (poll interval 0): it finds none, and reads from memory
    assert a.get_online_features(["driver_stats:trips"], KEYS).to_dict()["trips"] == [
        1, 2, None, None]
    assert a.registry.generation() == generation and cache.invalidations == invalidations
    assert cache.hits > hits
