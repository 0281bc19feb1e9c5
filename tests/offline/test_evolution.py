"""Schema evolution keeps the data: a property test over random chains of compatible
changes, against a brute-force oracle that projects every commit onto the latest schema."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featureledger import Entity, FeatureStore, FeatureView, Field
from featureledger.model.types import to_arrow

UTC = dt.UTC
BASE = dt.datetime(2024, 3, 1, tzinfo=UTC)
DRIVER = Entity(name="driver", join_keys={"driver_id": "int64"})
WIDER = {"int32": ["int64", "float64"], "float32": ["float64"]}


def t(seconds: int) -> dt.datetime:
    return BASE + dt.timedelta(seconds=seconds)


def make_value(dtype: str, draw_int: int) -> object:
    if draw_int < 0:
        return None
    if dtype in ("int32", "int64"):
        return draw_int - 3
    if dtype in ("float32", "float64"):
        return draw_int / 4  # exact in float32
    return f"s{draw_int}"


# one step of evolution: ("add", dtype, with_default), ("remove", index),
# ("widen", index, choice), ("loosen",)
step = st.one_of(
    st.tuples(st.just("add"), st.sampled_from(["int32", "float32", "string"]), st.booleans(),
              st.booleans()),
    st.tuples(st.just("remove"), st.integers(0, 9)),
    st.tuples(st.just("widen"), st.integers(0, 9), st.integers(0, 1)),
    st.tuples(st.just("loosen")),
)
rows = st.lists(st.tuples(st.integers(1, 3), st.integers(0, 20),
                          st.lists(st.integers(-1, 6), min_size=8, max_size=8)),
                max_size=6, unique_by=lambda r: (r[0], r[1]))


def evolve(fields: list[Field], s: tuple, counter: list[int], removed: list[str]
           ) -> list[Field] | None:
    """The next version's fields after step ``s`` (None when the step does not apply)."""
    kind = s[0]
    if kind == "add":
        _, dtype, with_default, reuse = s
        if reuse and removed:  # a name that existed before, removed since
            name = removed.pop(0)
        else:
            counter[0] += 1
            name = f"f{counter[0]}"
        default = make_value(dtype, 5) if with_default else None
        return [*fields, Field(name=name, dtype=dtype, default=default)]
    if kind == "remove":
        if len(fields) < 2:
            return None
        gone = fields[s[1] % len(fields)]
        removed.append(gone.name)
        return [f for f in fields if f is not gone]
    if kind == "widen":
        widenable = [f for f in fields if f.dtype in WIDER]
        if not widenable:
            return None
        f = widenable[s[1] % len(widenable)]
        options = WIDER[f.dtype]
        new = f.model_copy(update={"dtype": options[s[2] % len(options)]})
        return [new if x is f else x for x in fields]
    bounded = [f for f in fields if f.max is not None]
    if not bounded:
        return None
    f = bounded[0]
    return [f.model_copy(update={"max": None}) if x is f else x for x in fields]


def project(row: dict, written: int, versions: list[list[Field]]) -> dict:
    """``row`` (written under version ``written``) as the latest version sees it."""
    latest = versions[-1]
    out = {}
    for f in latest:
        alive = all(any(g.name == f.name for g in versions[v - 1])
                    for v in range(written, len(versions) + 1))
        if not alive:
            out[f.name] = f.default
            continue
        v = row[f.name]
        if v is not None and f.dtype in ("float32", "float64"):
            v = float(np.float32(v)) if f.dtype == "float32" else float(v)
        out[f.name] = v
    return out


def oracle(entities, stored, versions, at=None):
    """Per entity (key, ts): the latest-version features of the point-in-time row."""
    out = []
    for key, ets in entities:
        best = None
        for order, (version, r) in enumerate(stored):
            if r["driver_id"] != key or (at is None and r["ts"] > ets):
                continue
            rank = (r["ts"], order)
            if best is None or rank > best[0]:
                best = (rank, version, r)
        names = [f.name for f in versions[-1]]
        out.append({n: None for n in names} if best is None
                   else project(best[2], best[1], versions))
    return out


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@pytest.mark.filterwarnings("ignore::featureledger.errors.FeatureDataWarning")
@given(steps=st.lists(step, min_size=1, max_size=4),
       data=st.lists(rows, min_size=5, max_size=5),
       entities=st.lists(st.tuples(st.integers(1, 4), st.integers(-2, 24)), min_size=1,
                         max_size=12))
def test_latest_version_reads_every_compatible_version_like_the_oracle(
        tmp_path_factory, steps, data, entities):
    store = FeatureStore(tmp_path_factory.mktemp("evo"))
    try:
        fields = [Field(name="f0", dtype="int32", max=100), Field(name="f1", dtype="float32"),
                  Field(name="f2", dtype="string")]
        versions: list[list[Field]] = []
        stored: list[tuple[int, dict]] = []
        counter, removed = [2], []
        candidates = [fields]
        for s in steps:
            nxt = evolve(candidates[-1], s, counter, removed)
            if nxt is not None:
                candidates.append(nxt)
        for fs, batch in zip(candidates, data, strict=False):
            plan = store.apply([DRIVER, FeatureView(name="stats", entities=["driver"],
                                                    fields=fs)])
            assert not plan.refused
            versions.append(fs)
            version = store.get_view("stats").version
            assert version == len(versions)
            if not batch:
                continue
            frame = {"driver_id": [k for k, _, _ in batch],
                     "event_timestamp": [t(s_) for _, s_, _ in batch]}
            for i, f in enumerate(fs):
                frame[f.name] = [make_value(f.dtype, vals[i]) for _, _, vals in batch]
            table = pa.table({**{k: frame[k] for k in ("driver_id", "event_timestamp")},
                              **{f.name: pa.array(frame[f.name], to_arrow(f.dtype))
                                 for f in fs}})
            store.ingest("stats", table)
            for j, (k, s_, _) in enumerate(batch):
                stored.append((version, {"driver_id": k, "ts": s_,
                                         **{f.name: frame[f.name][j] for f in fs}}))

        names = [f.name for f in versions[-1]]
        refs = [f"stats:{n}" for n in names]
        ds = store.get_historical_features(
            {"driver_id": [k for k, _ in entities],
             "event_timestamp": [t(s_) for _, s_ in entities]}, refs)
        got = ds.to_arrow().select(names).to_pylist()
        assert got == oracle(entities, stored, versions)
        assert store.reproduce(ds.id).content_hash == ds.content_hash

        # online equals offline at materialization time
        store.materialize(end=t(100))
        keys = [{"driver_id": k} for k in (1, 2, 3, 4)]
        online = store.get_online_features(refs, keys)
        want = oracle([(k, 100) for k in (1, 2, 3, 4)], stored, versions)
        assert [dict(zip(names, vals, strict=True))
                for vals in zip(*[online.values[n] for n in names], strict=True)] == want
    finally:
        store.close()


# -- breaking changes, migrations, feature sets --------------------------------------------

def _view(fields, **kw):
    return FeatureView(name="stats", entities=["driver"], fields=fields, **kw)


@pytest.fixture
def evolved(tmp_path):
    """stats@1 with two commits, materialized; a feature set on it."""
    from featureledger import FeatureSet

    store = FeatureStore(tmp_path)
    v1 = _view([Field(name="trips", dtype="int64"), Field(name="rating", dtype="float32")])
    fs = FeatureSet(name="model_in", features=["stats:trips", "stats:rating"])
    store.apply([DRIVER, v1, fs])
    c1 = store.ingest("stats", pa.table({"driver_id": [1, 2], "event_timestamp": [t(0), t(0)],
                                "trips": [10, 20], "rating": [4.5, 3.0]}))
    c2 = store.ingest("stats", pa.table({"driver_id": [1], "event_timestamp": [t(5)],
                                "trips": [11], "rating": [4.0]}))
    store.materialize(end=t(10))
    yield store, fs, (c1.commit_id, c2.commit_id)
    store.close()


def test_a_compatible_change_serves_the_old_data_offline_and_online(evolved):
    from featureledger import FeatureSet

    store, _fs, (c1, c2) = evolved
    v2 = _view([Field(name="trips", dtype="int64"), Field(name="rating", dtype="float64"),
                Field(name="city", dtype="string", default="unknown")])
    plan = store.plan([DRIVER, v2, FeatureSet(name="model_in",
                                              features=["stats:trips", "stats:rating"])])
    view_item = next(i for i in plan.items if i.name == "stats")
    assert view_item.to_version == 2 and not view_item.starts_empty
    assert view_item.data_sources == [
        {"version": 1, "projection": "rating cast float32 -> float64; city filled with its "
                                     "default", "commits": 2}]
    fs_item = next(i for i in plan.items if i.name == "model_in")
    assert fs_item.to_version == 2
    assert any("re-pins stats:trips from @1 to @2" in n for n in fs_item.notes)
    store.apply([DRIVER, v2, FeatureSet(name="model_in",
                                        features=["stats:trips", "stats:rating"])])
    # online: the new version serves at once, without a materialize
    r = store.get_online_features(["stats:trips", "stats:city"],
                                  [{"driver_id": 1}, {"driver_id": 2}, {"driver_id": 3}])
    assert r.versions == {"trips": 2, "city": 2}
    assert r.values == {"trips": [11, 20, None], "city": ["unknown", "unknown", None]}
    assert [str(s) for s in r.statuses["city"]] == ["DEFAULT", "DEFAULT", "NOT_FOUND"]
    assert r.commits("trips") == [c2, c1, None]
    # offline: every commit of version 1, projected; the manifest says how many defaulted
    ds = store.get_historical_features(
        {"driver_id": [1, 2], "event_timestamp": [t(6), t(6)]}, "model_in")
    assert ds.to_arrow().select(["trips", "rating"]).to_pylist() == [
        {"trips": 11, "rating": 4.0}, {"trips": 20, "rating": 3.0}]
    assert ds.manifest["features"] == ["stats@2:trips", "stats@2:rating"]
    city = store.get_historical_features(
        {"driver_id": [1, 2], "event_timestamp": [t(6), t(6)]}, ["stats:city"])
    assert city.manifest["views"][0]["defaulted_rows"] == {"city": 2}
    assert city.to_arrow().column("city").to_pylist() == ["unknown", "unknown"]
    # new rows under version 2 win over the carried ones, offline and online
    store.ingest("stats", pa.table({"driver_id": [2], "event_timestamp": [t(7)], "trips": [21],
                           "rating": [2.5], "city": ["Oslo"]}))
    store.materialize(end=t(10))
    r = store.get_online_features(["stats:trips", "stats:city"], [{"driver_id": 2}])
    assert r.values == {"trips": [21], "city": ["Oslo"]}
    assert [str(s) for s in r.statuses["city"]] == ["PRESENT"]


def test_quarantining_an_old_version_commit_repairs_the_newer_version_online(evolved):
    store, _fs, (_c1, c2) = evolved
    store.apply([DRIVER, _view([Field(name="trips", dtype="int64"),
                                Field(name="rating", dtype="float32"),
                                Field(name="extra", dtype="int32")])])
    read = ["stats:trips"]
    assert store.get_online_features(read, [{"driver_id": 1}]).values["trips"] == [11]
    store.quarantine(c2, "bad rows")
    store.materialize(end=t(10))
    assert store.get_online_features(read, [{"driver_id": 1}]).values["trips"] == [10]
    assert store.get_online_features(["stats@1:trips"],
                                     [{"driver_id": 1}]).values["trips"] == [10]


def test_a_breaking_change_starts_empty_keeps_the_feature_set_and_a_migration_fills_it(
        evolved):
    from featureledger import FeatureSet
    from featureledger.errors import FeatureDataWarning

    store, _fs, (c1, c2) = evolved
    v2 = _view([Field(name="trips", dtype="string"), Field(name="rating", dtype="float32")])
    fs = FeatureSet(name="model_in", features=["stats:trips", "stats:rating"])
    plan = store.plan([DRIVER, v2, fs])
    item = next(i for i in plan.items if i.name == "stats")
    assert item.refused and item.starts_empty and item.data_sources == []
    assert item.notes[0].startswith(
        "stats@2 starts empty (a breaking change): 2 commits stay readable as stats@1")
    fs_item = next(i for i in plan.items if i.name == "model_in")
    assert fs_item.action == "unchanged"  # keeps stats@1: never re-pinned to no data
    assert any("keeps stats@1:trips: stats@2 starts empty" in n for n in fs_item.notes)

    # a migration that fails validation refuses the whole apply: nothing is written
    before = sorted(p.relative_to(store.repo_path) for p in store.repo_path.rglob("*.parquet"))
    bad = "SELECT driver_id, event_timestamp, NULL AS trips, rating * 10 AS rating FROM old"
    with pytest.raises(Exception, match="migration of cmt_"):
        store.apply([DRIVER, v2.model_copy(update={"fields": [
            Field(name="trips", dtype="string", nullable=False),
            Field(name="rating", dtype="float32")]}), fs],
            allow_breaking="trips become text", migrations={"stats": bad})
    assert store.get_view("stats").version == 1
    after = sorted(p.relative_to(store.repo_path) for p in store.repo_path.rglob("*.parquet"))
    assert after == before
    # stacked statements are refused before anything runs
    with pytest.raises(Exception, match="2 statements"):
        store.apply([DRIVER, v2, fs], allow_breaking="x",
                    migrations={"stats": "SELECT * FROM old; COPY old TO '/tmp/x.csv'"})

    sql = ("SELECT driver_id, event_timestamp, 'n' || CAST(trips AS VARCHAR) AS trips, "
           "rating FROM old")
    applied = store.apply([DRIVER, v2, FeatureSet(name="model_in",
                                                  features=["stats@2:trips", "stats:rating"])],
                          allow_breaking="trips become text", migrations={"stats": sql})
    item = next(i for i in applied.items if i.name == "stats")
    assert item.migration and not item.starts_empty
    migrated = store.commits("stats", version=2)
    assert sorted(c.source["from_commit"] for c in migrated) == sorted([c1, c2])
    assert all(c.steps[0]["params"]["sql"] == sql for c in migrated)
    ds = store.get_historical_features({"driver_id": [1, 2], "event_timestamp": [t(6), t(6)]},
                                       ["stats@2:trips"])
    assert ds.to_arrow().column("trips").to_pylist() == ["n11", "n20"]
    # lineage from the training set reaches the old commits through the migrated ones
    up = store.lineage(ds.id, direction="upstream")
    nodes = {e.src for e in up.edges} | {e.dst for e in up.edges}
    assert {c1, c2} <= nodes
    # the apply also put the migrated version online
    r = store.get_online_features(["stats@2:trips"], [{"driver_id": 1}])
    assert r.values["trips"] == ["n11"]
    # a version with no data says so when it is read
    store.apply([DRIVER, _view([Field(name="trips", dtype="string"),
                                Field(name="rating", dtype="float32"),
                                Field(name="km", dtype="float64", nullable=False,
                                      default=None)])],
                allow_breaking="km is required")
    with pytest.warns(FeatureDataWarning, match=r"stats@3:km is null in every one of its 1 "
                      r"rows: stats@3 has no data.*breaking change"):
        empty = store.get_historical_features({"driver_id": [1], "event_timestamp": [t(6)]},
                                              ["stats@3:km"])
    assert empty.manifest["null_features"][0]["feature"] == "stats@3:km"


def test_models_trained_on_all_null_features_need_a_recorded_reason(evolved):
    from featureledger.errors import StateError, TrackingError

    store, _fs, _ = evolved
    store.apply([DRIVER, _view([Field(name="trips", dtype="int64"),
                                Field(name="rating", dtype="float32"),
                                Field(name="km", dtype="float64")])])
    with store.start_run("exp") as run, pytest.warns(Warning, match="km"):
        ds = store.get_historical_features(
            {"driver_id": [1, 2], "event_timestamp": [t(6), t(6)]}, ["stats:trips", "stats:km"])
        assert ds.manifest["null_features"] == [{
            "feature": "stats@2:km", "column": "km",
            "cause": "every matched row comes from a version without 'km' (it was added later "
                     "and has no default): ingest new rows, or give it a default"}]
        with pytest.raises(TrackingError, match=r"stats@2:km in ds_.*allow_null_features"):
            run.log_model("m", "model.bin", training_dataset=ds)
        model = run.log_model("m", "model.bin", training_dataset=ds,
                              allow_null_features="km arrives next week")
    assert model.tags["featureledger.allow_null_features"] == "km arrives next week"
    with pytest.raises(StateError, match="allow_null_features"):
        store.deploy(model.model_id)
    dep = store.deploy(model.model_id, allow_null_features="shadow traffic only")
    assert dep.exceptions["stats@2:km"].endswith("shadow traffic only")


def test_two_versions_of_one_view_in_one_request(evolved):
    from featureledger.errors import RetrievalError

    store, _fs, _ = evolved
    store.apply([DRIVER, _view([Field(name="trips", dtype="int64"),
                                Field(name="rating", dtype="float64")])])
    store.ingest("stats", pa.table({"driver_id": [1], "event_timestamp": [t(8)], "trips": [12],
                           "rating": [1.5]}))
    refs = ["stats@1:rating", "stats:rating"]
    entity = {"driver_id": [1], "event_timestamp": [t(9)]}
    with pytest.raises(RetrievalError, match="full_feature_names=True"):
        store.get_historical_features(entity, refs)
    ds = store.get_historical_features(entity, refs, full_feature_names=True)
    assert ds.to_arrow().select(["stats@1__rating", "stats@2__rating"]).to_pylist() == [
        {"stats@1__rating": 4.0, "stats@2__rating": 1.5}]
    store.materialize(end=t(10))
    r = store.get_online_features(refs, [{"driver_id": 1}], full_feature_names=True)
    assert r.values == {"stats@1__rating": [4.0], "stats@2__rating": [1.5]}
    with pytest.raises(RetrievalError, match="list it once"):
        store.get_historical_features(entity, ["stats:trips", "stats@2:trips"])
    with pytest.raises(RetrievalError, match="list it once"):
        store.get_online_features(["stats:trips", "stats@2:trips"], [{"driver_id": 1}],
                                  full_feature_names=True)


# -- the created-timestamp tie-break ------------------------------------------------------

@pytest.mark.parametrize("order", ["as_given", "reversed"])
def test_created_timestamp_breaks_ties_then_the_later_commit(tmp_path, order):
    """Among rows with the same keys and event time the later created time wins, then the
    later commit: in point-in-time joins, windows, materialization and online reads."""
    store = FeatureStore(tmp_path)
    try:
        store.apply([DRIVER, FeatureView(name="stats", entities=["driver"],
                                         created_timestamp_field="created",
                                         fields=[Field(name="v", dtype="int64")])])
        batches = [
            # one commit: two rows of key 1 at t(0), and of key 2 at t(0), created apart
            [(1, 0, 5, 10), (1, 0, 9, 11), (2, 0, 3, 20), (2, 0, 1, 21)],
            # a later commit: key 1 at t(0) created earlier than the winner above (loses),
            # key 2 at t(0) created as late as its winner (the later commit wins), key 3
            # at t(2) created later than commit 3's row
            [(1, 0, 7, 12), (2, 0, 3, 22), (3, 2, 8, 30)],
            [(3, 2, 4, 31), (1, 4, 0, 13)],
        ]
        rows = []  # (key, ts, created, value, commit order)
        for n, batch in enumerate(batches):
            b = batch if order == "as_given" else list(reversed(batch))
            store.ingest("stats", pa.table({
                "driver_id": [r[0] for r in b], "event_timestamp": [t(r[1]) for r in b],
                "created": [t(100 + r[2]) for r in b], "v": [r[3] for r in b]}))
            rows += [(*r, n) for r in b]

        def winner(key, at):
            cands = [r for r in rows if r[0] == key and r[1] <= at]
            return max(cands, key=lambda r: (r[1], r[2], r[4]))[3] if cands else None

        entities = [(k, s) for k in (1, 2, 3, 4) for s in (0, 1, 2, 3, 5)]
        ds = store.get_historical_features(
            {"driver_id": [k for k, _ in entities],
             "event_timestamp": [t(s) for _, s in entities]}, ["stats:v"])
        assert ds.to_arrow().column("v").to_pylist() == [winner(k, s) for k, s in entities]
        assert winner(1, 0) == 11 and winner(2, 0) == 22 and winner(3, 2) == 30
        window = store.get_features_in_window("stats", t(0), t(10)).to_pylist()
        assert [(r["driver_id"], r["v"]) for r in window] == [(1, 11), (2, 22), (3, 30),
                                                              (1, 13)]
        store.materialize(end=t(3))
        online = store.get_online_features(["stats:v"], [{"driver_id": k} for k in (1, 2, 3)])
        assert online.values["v"] == [winner(1, 3), winner(2, 3), winner(3, 3)]
        # an incremental run that brings a row created earlier at the same time loses online
        store.ingest("stats", pa.table({"driver_id": [3], "event_timestamp": [t(2)],
                                        "created": [t(101)], "v": [32]}))
        store.materialize_incremental(end=t(3))
        assert store.get_online_features(["stats:v"], [{"driver_id": 3}]).values["v"] == [30]
    finally:
        store.close()


@pytest.mark.parametrize("order", ["as_given", "reversed"])
def test_created_timestamp_decides_pushed_ties_online_and_offline(tmp_path, order):
    store = FeatureStore(tmp_path)
    try:
        store.apply([DRIVER, FeatureView(name="stats", entities=["driver"],
                                         created_timestamp_field="created",
                                         fields=[Field(name="v", dtype="int64")])])
        store.ingest("stats", pa.table({"driver_id": [1], "event_timestamp": [t(0)],
                                        "created": [t(105)], "v": [1]}))
        store.materialize(end=t(1))
        rows = [{"driver_id": 1, "event_timestamp": t(0), "created": t(103), "v": 2},
                {"driver_id": 2, "event_timestamp": t(0), "created": t(101), "v": 3},
                {"driver_id": 2, "event_timestamp": t(0), "created": t(102), "v": 4}]
        for r in (rows if order == "as_given" else list(reversed(rows))):
            store.push("stats", [r])
        # key 1: the pushed row was created before the ingested one, so it loses; key 2:
        # the row created last wins, whatever order it was pushed in
        want = [1, 4]
        read = [{"driver_id": 1}, {"driver_id": 2}]
        assert store.get_online_features(["stats:v"], read).values["v"] == want
        store.flush_pushes()
        ds = store.get_historical_features({"driver_id": [1, 2],
                                            "event_timestamp": [t(1), t(1)]}, ["stats:v"])
        assert ds.to_arrow().column("v").to_pylist() == want
        store.materialize(end=t(1))
        assert store.get_online_features(["stats:v"], read).values["v"] == want
    finally:
        store.close()


def test_a_push_to_an_older_version_reaches_the_versions_that_carry_it(evolved):
    store, _fs, _ = evolved
    store.apply([DRIVER, _view([Field(name="trips", dtype="int64"),
                                Field(name="rating", dtype="float64"),
                                Field(name="city", dtype="string", default="unknown")])])
    store.push("stats@1", [{"driver_id": 3, "event_timestamp": t(8), "trips": 30,
                            "rating": 2.5}])
    r = store.get_online_features(["stats:trips", "stats:rating", "stats:city"],
                                  [{"driver_id": 3}])
    assert r.versions["trips"] == 2
    assert r.values == {"trips": [30], "rating": [2.5], "city": ["unknown"]}
    store.flush_pushes()
    ds = store.get_historical_features({"driver_id": [3], "event_timestamp": [t(9)]},
                                       ["stats:trips", "stats:city"])
    assert ds.to_arrow().select(["trips", "city"]).to_pylist() == [
        {"trips": 30, "city": "unknown"}]
