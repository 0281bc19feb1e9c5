"""Ingestion end to end on every registry backend: what a commit records and stores."""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import sqlalchemy as sa

from featureledger.context import active_run
from featureledger.errors import (
    IngestionError,
    StateError,
    UnknownViewError,
    ValidationFailedError,
)
from featureledger.events import CommitCompleted, CommitFailed
from featureledger.ingest import stored_schema
from featureledger.registry import schema
from helpers import read_commit, snapshot

UTC = dt.UTC
T0 = dt.datetime(2024, 1, 1, tzinfo=UTC)


def good_frame(n: int = 8, start: int = 0) -> pd.DataFrame:
    i = np.arange(start, start + n)
    return pd.DataFrame({
        "driver_id": i % 4,
        "event_timestamp": pd.to_datetime(T0) + pd.to_timedelta(i, unit="h"),
        "n": (i * 3) % 100,
        "min_fare": i * 1.0,
        "max_fare": i * 1.0 + 5,
        "score": (i % 10 / 10).astype(np.float32),
        "city": np.where(i % 2 == 0, "ams", "ber"),
        "code": [f"AB{k % 10}" for k in i],
    })


def test_commit_records_everything_and_stores_the_contract(store) -> None:
    events = []
    store.ctx.events.subscribe_all(events.append)
    df = good_frame()
    result = store.ingest("trips", df, user="alice", source_name="trips_batch")
    c = store.get_commit(result.commit_id)
    assert c == result.commit
    assert c.commit_id.startswith("cmt_") and c.view_ref == "trips@1"
    assert (c.user, c.run_id, c.row_count, c.rejected_count, c.status) == (
        "alice", None, 8, 0, "committed")
    assert c.min_event_ts == int(T0.timestamp() * 1e6)
    assert c.max_event_ts == int((T0 + dt.timedelta(hours=7)).timestamp() * 1e6)
    assert c.source["kind"] == "pandas" and c.source["rows"] == 8
    assert c.source["name"] == "trips_batch" and len(c.source["digest"]) == 64
    # in-memory data is named by its content digest (its name is only a description)
    assert c.source["uri"] == f"memory:sha256:{c.source['digest']}"
    # pandas text columns arrive as large_string and are stored as string
    assert {(s["step"], s.get("column")) for s in c.steps} == {("cast", "city"),
                                                               ("cast", "code")}
    assert c.validation["rows_valid"] == 8 and c.validation["rejected_path"] is None
    assert c.profile["columns"]["n"]["max"] == int(df["n"].max())
    # the files: exactly the contract's layout, schema and values
    assert c.files == [f"default/views/trips/v1/{c.commit_id}/part-00000.parquet"]
    # a commit's file holds its rows by join key and event time; n is the input order
    stored = read_commit(store, c).sort_by("n")
    view = store.get_view("trips").definition
    assert stored.schema.equals(stored_schema(view))
    assert set(stored.column("_commit_id").to_pylist()) == {c.commit_id}
    assert set(stored.column("_commit_time").cast(pa.int64()).to_pylist()) == {c.commit_time}
    assert stored.column("n").to_pylist() == df["n"].tolist()
    assert stored.column("score").to_pylist() == df["score"].tolist()
    assert stored.column("event_timestamp").to_pylist() == [
        T0 + dt.timedelta(hours=h) for h in range(8)]
    digest = hashlib.sha256(b"".join(store.ctx.offline_store.path(f).read_bytes()
                                     for f in c.files)).hexdigest()
    assert c.content_digest == digest
    # lineage and audit, written with the commit
    with store.registry.db.read() as conn:
        t = schema.lineage_edges
        edges = {(r.src, r.relation) for r in conn.execute(
            sa.select(t).where(store.registry.db.scope(t), t.c.dst == c.commit_id))}
    assert edges == {(f"source:{c.source['uri']}", "ingested"), ("view:trips@1", "has_commit")}
    audit = store.registry.db.audit_trail("commit", c.commit_id)
    assert [(a["action"], a["actor"], a["details"]["rows"]) for a in audit] == [
        ("commit", "alice", 8)]
    assert [e.name for e in events] == ["commit.started", "commit.completed"]
    done = events[1]
    assert isinstance(done, CommitCompleted)
    assert done.commit == c and done.source == "ingest"
    assert done.schema.equals(stored_schema(view))


def test_active_run_is_recorded_with_a_wrote_edge(store) -> None:
    with active_run("run_0193aaaa-0000-7000-8000-000000000001"):
        c = store.ingest("trips", good_frame()).commit
    explicit = store.ingest("trips", good_frame(start=100), run_id="run_explicit").commit
    assert c.run_id == "run_0193aaaa-0000-7000-8000-000000000001"
    assert explicit.run_id == "run_explicit"
    with store.registry.db.read() as conn:
        t = schema.lineage_edges
        wrote = conn.execute(sa.select(t.c.src, t.c.dst).where(
            store.registry.db.scope(t), t.c.relation == "wrote")).all()
    assert sorted(wrote) == sorted([(c.run_id, c.commit_id),
                                    ("run_explicit", explicit.commit_id)])
    assert [x.commit_id for x in store.commits("trips", run_id="run_explicit")] == [
        explicit.commit_id]


def test_commit_times_increase_strictly_in_commit_order(store) -> None:
    ids = [store.ingest("trips", good_frame(3, start=10 * k)).commit_id for k in range(5)]
    listed = store.commits("trips")
    assert [c.commit_id for c in listed] == ids
    times = [c.commit_time for c in listed]
    assert all(b > a for a, b in itertools.pairwise(times))


def test_strict_rejection_leaves_the_store_byte_for_byte(store) -> None:
    store.ingest("trips", good_frame())
    before = snapshot(store)
    events = []
    store.ctx.events.subscribe(CommitFailed, events.append)
    bad = good_frame()
    bad.loc[2, "n"] = 500
    bad.loc[5, "n"] = -4
    bad.loc[3, "city"] = "par"
    with pytest.raises(ValidationFailedError) as err:
        store.ingest("trips", bad)
    msg = str(err.value)
    assert "3 of 8 rows fail validation; nothing was written" in msg
    assert "range:n (0 <= n <= 100): 2 row(s), e.g. row 2 n=500; row 5 n=-4" in msg
    assert "allowed_values:city" in msg and "row 3 city='par'" in msg
    report = err.value.report
    assert report.rule("range:n").failed == 2 and report.rows_rejected == 3
    assert snapshot(store) == before
    assert len(events) == 1 and events[0].view_ref == "trips@1"


def test_drop_invalid_keeps_the_exact_good_rows_and_the_rejected_set(store) -> None:
    df = good_frame(10)
    df.loc[1, "n"] = 101
    df.loc[4, "code"] = "zz"
    df.loc[4, "min_fare"] = 1e9  # also breaks the fares check
    df.loc[7, "driver_id"] = df.loc[3, "driver_id"]
    df.loc[7, "event_timestamp"] = df.loc[3, "event_timestamp"]
    result = store.ingest("trips", df, mode="drop_invalid")
    bad_rows = [1, 3, 4, 7]
    expected = df.drop(index=bad_rows).reset_index(drop=True)
    stored = read_commit(store, result.commit).sort_by("n").to_pandas()
    for col in expected.columns:
        assert stored[col].tolist() == expected[col].tolist(), col
    assert result.row_count == 6 and result.rejected_count == 4
    rej = result.rejected()
    assert rej.column("_row").to_pylist() == bad_rows
    assert rej.column("_reasons").to_pylist() == [
        ["range:n"], ["unique_key"], ["regex:code", "check:fares"], ["unique_key"]]
    assert rej.column("n").to_pylist() == df.loc[bad_rows, "n"].tolist()
    # the rejected file is beside the data, never among the commit's files
    assert result.rejected_path == \
        f"default/views/trips/v1/{result.commit_id}/rejected.parquet"
    assert result.rejected_path not in result.commit.files
    assert store.get_commit(result.commit_id).validation["rows_rejected"] == 4


def test_drop_invalid_with_no_valid_row_commits_nothing(store) -> None:
    df = good_frame(3)
    df["n"] = -1
    before = snapshot(store)
    with pytest.raises(ValidationFailedError, match="every one of the 3 rows"):
        store.ingest("trips", df, mode="drop_invalid")
    assert snapshot(store) == before


def test_column_map_filter_and_casts_are_recorded(store) -> None:
    df = good_frame(6).rename(columns={"n": "trip_count"})
    df["junk"] = 1
    df["driver_id"] = df["driver_id"].astype(np.int32)
    df["event_timestamp"] = df["event_timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    result = store.ingest("trips", df, column_map={"trip_count": "n", "junk": None},
                          filter="min_fare >= 2")
    steps = result.commit.steps
    assert steps[0] == {"step": "map_columns", "params": {"junk": None, "trip_count": "n"}}
    assert steps[1] == {"step": "filter", "params": {"sql": "min_fare >= 2"},
                        "rows_in": 6, "rows_out": 4}
    casts = {s["column"]: s["params"] for s in steps if s["step"] == "cast"}
    assert casts["driver_id"]["from"] == "int32" and casts["driver_id"]["to"] == "int64"
    assert casts["event_timestamp"]["to"] == "timestamp"
    stored = read_commit(store, result.commit).sort_by("n")
    assert stored.column("min_fare").to_pylist() == [2.0, 3.0, 4.0, 5.0]
    assert stored.column("event_timestamp").to_pylist() == [
        T0 + dt.timedelta(hours=h) for h in (2, 3, 4, 5)]


def test_input_errors_are_clear(store) -> None:
    with pytest.raises(UnknownViewError, match="unknown feature view 'nope'"):
        store.ingest("nope", good_frame())
    with pytest.raises(IngestionError, match="mode 'lenient' is not known"):
        store.ingest("trips", good_frame(), mode="lenient")
    with pytest.raises(IngestionError, match="no rows after the filter"):
        store.ingest("trips", good_frame(), filter="n > 1000")
    with pytest.raises(IngestionError, match=r"filter 'bogus_col > 1' names column.s. "
                                             r"'bogus_col', which are not among its columns"):
        store.ingest("trips", good_frame(), filter="bogus_col > 1")
    with pytest.raises(IngestionError, match="cannot ingest a list"):
        store.ingest("trips", [1, 2])
    with pytest.raises(IngestionError, match="column map names input column"):
        store.ingest("trips", good_frame(), column_map={"missing": "n"})
    assert store.commits() == []


def test_status_changes_are_audited_and_checked(store) -> None:
    cid = store.ingest("trips", good_frame()).commit_id
    with pytest.raises(StateError, match="needs a reason"):
        store.quarantine(cid, "")
    q = store.quarantine(cid, "suspicious spike")
    assert (q.status, q.status_reason) == ("quarantined", "suspicious spike")
    assert store.commits("trips", status="committed") == []
    r = store.rollback(cid, "confirmed bad")
    assert r.status == "rolled_back"
    with pytest.raises(StateError, match="cannot become quarantined directly"):
        store.quarantine(cid, "again")
    back = store.restore(cid, "fixed upstream")
    assert back.status == "committed" and store.commits("trips", status="committed") == [back]
    actions = [a["action"] for a in reversed(store.registry.db.audit_trail("commit", cid))]
    assert actions == ["commit", "commit_status:quarantined", "commit_status:rolled_back",
                       "commit_status:committed"]


def test_gc_removes_orphans_and_nothing_else(store) -> None:
    kept = store.ingest("trips", good_frame(), mode="drop_invalid").commit
    root = store.ctx.offline_store.root / "default"
    orphan = root / "views" / "trips" / "v1" / "cmt_orphan"
    orphan.mkdir(parents=True)
    (orphan / "part-00000.parquet").write_bytes(b"x" * 10)
    tmp = root / "_tmp" / "cmt_half.123"
    tmp.mkdir(parents=True)
    (tmp / "part-00000.parquet").write_bytes(b"y" * 5)
    # a training set (its entity rows are referenced by its registry row), the entity
    # rows of one whose registry write never happened, and a staging folder a crash left
    frame = good_frame()
    ds = store.get_historical_features(
        {"driver_id": list(frame["driver_id"]),
         "event_timestamp": list(frame["event_timestamp"])}, ["trips:n"])
    lost = root / "datasets" / "ds_lost"
    lost.mkdir()
    (lost / "entities.parquet").write_bytes(b"z" * 7)
    staged = root / "datasets" / ".ds_half.123.tmp"
    staged.mkdir()
    (staged / "entities.parquet").write_bytes(b"w" * 3)
    assert store.gc().removed == []  # younger than the default grace
    dry = store.gc(grace_seconds=0, dry_run=True)
    assert sorted(dry.removed) == ["default/_tmp/cmt_half.123", "default/datasets/.ds_half.123.tmp",
                                   "default/datasets/ds_lost",
                                   "default/views/trips/v1/cmt_orphan"]
    assert orphan.exists() and lost.exists()
    done = store.gc(grace_seconds=0)
    assert sorted(done.removed) == sorted(dry.removed) and done.bytes_freed == 25
    assert not orphan.exists() and not tmp.exists() and not lost.exists()
    assert not staged.exists()
    assert all(store.ctx.offline_store.path(f).is_file() for f in kept.files)
    assert store.reproduce(ds.id).content_hash == ds.content_hash


@pytest.mark.parametrize("kind", ["parquet", "csv", "glob", "view_source", "view_source_by_path",
                                  "polars", "reader"])
def test_every_input_kind(sqlite_store, tmp_path, kind, make_view) -> None:
    df = good_frame(6)
    data_dir = tmp_path / "repo" / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    files = []
    if kind in ("parquet", "view_source", "view_source_by_path"):
        files = [data_dir / "trips.parquet"]
        df.to_parquet(files[0], index=False)
        data = str(files[0])
    elif kind == "csv":
        files = [data_dir / "trips.csv"]
        df.to_csv(files[0], index=False)
        data = str(files[0])
    elif kind == "glob":
        files = [data_dir / "part-a.parquet", data_dir / "part-b.parquet"]
        df.iloc[:3].to_parquet(files[0], index=False)
        df.iloc[3:].to_parquet(files[1], index=False)
        data = str(data_dir / "part-*.parquet")
    elif kind == "polars":
        import polars as pl

        data = pl.from_pandas(df)
    else:
        data = pa.Table.from_pandas(df, preserve_index=False).to_reader(max_chunksize=2)
    if kind.startswith("view_source"):
        sqlite_store.apply([make_view(source="data/trips.parquet")])
        # the view's own file, read by default or named by its full path
        data = None if kind == "view_source" else str(files[0])
    c = sqlite_store.ingest("trips", data).commit
    stored = read_commit(sqlite_store, c).sort_by("n")
    assert stored.column("n").to_pylist() == df["n"].tolist()
    assert stored.column("event_timestamp").to_pylist() == [
        T0 + dt.timedelta(hours=h) for h in range(6)]
    if kind.startswith("view_source"):  # one lineage node for the source, fed and ingested from
        node = "source:" + (tmp_path / "repo" / "data" / "trips.parquet").as_uri()
        with sqlite_store.registry.db.read() as conn:
            t = schema.lineage_edges
            rels = set(conn.execute(sa.select(t.c.relation, t.c.dst).where(
                sqlite_store.registry.db.scope(t), t.c.src == node)).all())
        assert rels == {("feeds", "view:trips@2"), ("ingested", c.commit_id)}
        assert c.source["uri"] == node[len("source:"):]
        if kind == "view_source":  # read as the view declares it
            assert c.source["declared_path"] == "data/trips.parquet"
    if files:
        assert c.source["kind"] == "file"
        assert [f["path"] for f in c.source["files"]] == [str(f) for f in files]
        assert c.source["digest"] == hashlib.sha256(
            b"".join(f.read_bytes() for f in files)).hexdigest()
    else:
        assert c.source["kind"] == ("polars" if kind == "polars" else "arrow")
    json.dumps(c.to_dict())


def test_pandas_index_is_data_only_when_named(sqlite_store) -> None:
    df = good_frame(8)
    sliced = df.iloc[2:]  # an unnamed, non-range index: positions, not data
    assert sqlite_store.ingest("trips", sliced).row_count == 6
    keyed = df.set_index("driver_id")  # a named index: the join key
    stored = read_commit(sqlite_store, sqlite_store.ingest("trips", keyed.iloc[:4]).commit)
    assert stored.column("driver_id").to_pylist() == df["driver_id"].tolist()[:4]


def test_concurrent_ingestions_get_strictly_increasing_commit_times(store) -> None:
    from concurrent.futures import ThreadPoolExecutor

    frames = [good_frame(50, start=100 * k) for k in range(6)]
    with ThreadPoolExecutor(max_workers=3) as pool:
        ids = list(pool.map(lambda f: store.ingest("trips", f).commit_id, frames))
    listed = store.commits("trips")
    assert sorted(c.commit_id for c in listed) == sorted(ids)
    times = [c.commit_time for c in listed]
    assert len(set(times)) == 6 and times == sorted(times)
    for c in listed:  # the rows carry the registry's commit time
        stored = read_commit(store, c)
        assert set(stored.column("_commit_time").cast(pa.int64()).to_pylist()) == {
            c.commit_time}


def test_ingest_into_an_older_version(store, make_view) -> None:
    from featureledger import Field

    v2 = make_view(fields=[*make_view().fields, Field(name="tip", dtype="float64")])
    store.apply([v2])
    old = store.ingest("trips", good_frame(4), version=1).commit
    new = store.ingest("trips", good_frame(4).assign(tip=1.5)).commit
    assert (old.view_ref, new.view_ref) == ("trips@1", "trips@2")
    assert "tip" not in read_commit(store, old).column_names
    assert read_commit(store, new).column("tip").to_pylist() == [1.5] * 4
    assert new.files[0].startswith(f"default/views/trips/v2/{new.commit_id}/")
    assert [c.commit_id for c in store.commits("trips", version=1)] == [old.commit_id]


def test_polars_lists_of_strings_ingest_push_and_read_back(store_factory, sqlite_url) -> None:
    import polars as pl

    from featureledger import Entity, FeatureView, Field

    store = store_factory(sqlite_url)
    rider = Entity(name="rider", join_keys={"rider_id": "int64"})
    view = FeatureView(name="prefs", entities=[rider], fields=[
        Field(name="tags", dtype="list<string>"), Field(name="scores", dtype="list<float64>"),
        Field(name="note", dtype="string"), Field(name="raw", dtype="bytes")])
    store.apply([rider, view])
    tags = [["vegan", None], None, [], ["late", "quiet"]]
    frame = pl.DataFrame({
        "rider_id": [1, 2, 3, 4],
        "event_timestamp": [T0 + dt.timedelta(hours=h) for h in range(4)],
        "tags": tags, "scores": [[0.5, None], [1.0], None, []],
        "note": ["a", None, "c", "d"], "raw": [b"x", None, b"", b"\xff"]})
    c = store.ingest("prefs", frame).commit
    stored = read_commit(store, c)
    assert stored.schema.field("tags").type == pa.list_(pa.string())
    assert stored.column("tags").to_pylist() == tags
    assert stored.column("scores").to_pylist() == [[0.5, None], [1.0], None, []]
    assert stored.column("raw").to_pylist() == [b"x", None, b"", b"\xff"]
    got = store.get_historical_features(
        {"rider_id": [1, 2, 3, 4], "event_timestamp": [T0 + dt.timedelta(hours=5)] * 4},
        ["prefs:tags", "prefs:note"]).to_arrow()
    assert got.column("tags").to_pylist() == tags
    # the push path shapes rows with the same casts
    store.push("prefs", pl.DataFrame({
        "rider_id": [5], "event_timestamp": [T0], "tags": [["new", None]],
        "scores": [[2.0]], "note": ["p"], "raw": [b"p"]}), flush=True)
    online = store.get_online_features(["prefs:tags", "prefs:raw"], [{"rider_id": 5}])
    assert online.values == {"tags": [["new", None]], "raw": [b"p"]}
    pushed = store.commits("prefs")[-1]
    assert read_commit(store, pushed).column("tags").to_pylist() == [["new", None]]
