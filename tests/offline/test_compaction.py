"""Compaction: many small commits rewritten into clustered segments, with every answer kept.

Point-in-time results are checked against a brute-force oracle over the rows as ingested
(plain loops, no engine); content hashes before and after compaction, after quarantines
and rollbacks that happen after it, after ``gc`` removed the replaced files, and of
``reproduce`` of datasets made before it, must be equal. A crash test kills compaction
at random instants and at each named point while checking that a reader always sees every
row once.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from featureledger import Entity, FeatureStore, FeatureView, Field
from featureledger.config import ProjectConfig
from featureledger.errors import CommitTamperedError
from featureledger.offline.storage import CRASH_ENV

BASE = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)
VIEW = "trips"


def t(s: int) -> dt.datetime:
    return BASE + dt.timedelta(seconds=s)


def make_store(root: Path, ttl: str | None = "60s", **compaction) -> FeatureStore:
    cfg = ProjectConfig(root=root, compaction={"auto_after_commits": None, **compaction})
    store = FeatureStore(root, config=cfg)
    store.apply([Entity(name="driver", join_keys={"driver_id": "int64"}),
                 FeatureView(name=VIEW, entities=["driver"], ttl=ttl,
                             fields=[Field(name="speed", dtype="float64")])])
    return store


def commit_rows(rng: random.Random, n_commits: int) -> list[list[tuple[int, int, float]]]:
    """Per commit, (driver, second, speed) rows: keys 1..6, times 0..80 so commits overlap
    and tie on (key, time)."""
    out = []
    for _ in range(n_commits):
        seen, rows = set(), []
        for _ in range(rng.randint(1, 6)):
            k, s = rng.randint(1, 6), rng.randint(0, 80)
            if (k, s) not in seen:
                seen.add((k, s))
                rows.append((k, s, round(rng.uniform(0, 100), 3)))
        out.append(rows)
    return out


def ingest_all(store: FeatureStore, commits: list[list[tuple[int, int, float]]]) -> list[str]:
    ids = []
    for rows in commits:
        table = pa.table({"driver_id": pa.array([r[0] for r in rows], pa.int64()),
                          "event_timestamp": pa.array([t(r[1]) for r in rows],
                                                      pa.timestamp("us", tz="UTC")),
                          "speed": pa.array([r[2] for r in rows], pa.float64())})
        ids.append(store.ingest(VIEW, table).commit_id)
    return ids


def oracle(entities, commits, ids, readable, ttl=60):
    """Per entity (driver, second): the speed of the latest row with time <= the entity's,
    the later commit winning a tie, among readable commits; None past the TTL."""
    out = []
    for k, s in entities:
        best = None
        for rank, (cid, rows) in enumerate(zip(ids, commits, strict=True)):
            if cid not in readable:
                continue
            for rk, rs, v in rows:
                if rk == k and rs <= s and (best is None or (rs, rank) > best[0]):
                    best = ((rs, rank), v)
        out.append(None if best is None or s - best[0][0] > ttl else best[1])
    return out


ENTITIES = [(k, s) for k in range(0, 8) for s in (0, 10, 35, 50, 79, 90, 150)]


def retrieve(store, as_of=None):
    df = {"driver_id": [k for k, _ in ENTITIES],
          "event_timestamp": [t(s) for _, s in ENTITIES]}
    return store.get_historical_features(df, [f"{VIEW}:speed"], as_of=as_of)


def speeds(ds) -> list[float | None]:
    return ds.to_arrow().column("speed").to_pylist()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_compaction_keeps_every_answer(tmp_path, seed):
    rng = random.Random(seed)
    store = make_store(tmp_path / "repo", target_file_rows=7, row_group_rows=3)
    try:
        commits = commit_rows(rng, 12)
        ids = ingest_all(store, commits)
        store.quarantine(ids[2], "bad batch")
        readable = set(ids) - {ids[2]}
        before = retrieve(store)
        assert speeds(before) == oracle(ENTITIES, commits, ids, readable)
        mid = store.get_commit(ids[6]).commit_time
        before_as_of = retrieve(store, as_of=mid)
        window_before = store.get_features_in_window([f"{VIEW}:speed"], t(0), t(100))

        (result,) = store.compact(VIEW)
        assert result.segment_id is not None and result.commits == 12
        # files of about 7 rows that never split a key: a key's rows are in one file
        per_key: dict[int, int] = {}
        for rows in commits:
            for k, _, _ in rows:
                per_key[k] = per_key.get(k, 0) + 1
        starts, before_k = set(), 0
        for k in sorted(per_key):
            starts.add(before_k // 7)
            before_k += per_key[k]
        assert result.files_before == 12 and result.files_after == len(starts)
        seg = store.segments(VIEW)[0]
        seen_keys: set[int] = set()
        for f in seg.files:
            part = pq.read_table(store.ctx.offline_store.path(f))
            rows = list(zip(part.column("driver_id").to_pylist(),
                            part.column("event_timestamp").to_pylist(),
                            part.column("_commit_time").to_pylist(), strict=True))
            assert rows == sorted(rows)  # by key, event time, commit time
            assert not seen_keys & {r[0] for r in rows}
            seen_keys |= {r[0] for r in rows}
        assert set(seg.commit_ids) == set(ids)  # the quarantined commit's rows too
        assert all(c.segment is not None for c in store.commits(VIEW, status=None))

        after = retrieve(store)
        assert after.content_hash == before.content_hash
        assert speeds(after) == oracle(ENTITIES, commits, ids, readable)
        assert retrieve(store, as_of=mid).content_hash == before_as_of.content_hash
        window_after = store.get_features_in_window([f"{VIEW}:speed"], t(0), t(100))
        assert window_after.equals(window_before)

        # status changes after compaction pick rows out of the segment
        store.rollback(ids[8], "late correction")
        store.restore(ids[2], "was fine")
        readable = set(ids) - {ids[8]}
        assert speeds(retrieve(store)) == oracle(ENTITIES, commits, ids, readable)
        # the old datasets reproduce bit for bit, also once gc removed the replaced files
        store.gc(grace_seconds=0)
        assert not any(store.ctx.offline_store.path(f).exists()
                       for c in store.commits(VIEW, status=None) for f in c.files)
        assert store.reproduce(before.id).content_hash == before.content_hash
        assert store.reproduce(before_as_of.id).content_hash == \
            before_as_of.content_hash
        assert speeds(retrieve(store)) == oracle(ENTITIES, commits, ids, readable)
        # reconcile checks the segment's files in place of the removed commit files
        assert store.reconcile(deep=True).codes() == []
        seg_file = store.ctx.offline_store.path(seg.files[-1])
        seg_file.write_bytes(seg_file.read_bytes()[:-3])
        problems = store.reconcile().problems
        assert [p.code for p in problems] == ["commit_file_size_mismatch"]
        assert seg.segment_id in problems[0].message and "--retire" in problems[0].message
    finally:
        store.close()


def test_compacting_again_merges_the_segment_with_new_commits(tmp_path):
    rng = random.Random(7)
    store = make_store(tmp_path / "repo")
    try:
        commits = commit_rows(rng, 5)
        ids = ingest_all(store, commits)
        first = store.compact(VIEW)[0]
        more = commit_rows(rng, 4)
        ids += ingest_all(store, more)
        commits += more
        ds = retrieve(store)
        assert speeds(ds) == oracle(ENTITIES, commits, ids, set(ids))
        second = store.compact(VIEW)[0]
        assert second.retired == [first.segment_id]
        assert second.commits == 9 and second.files_before == 5
        assert [s.segment_id for s in store.segments(VIEW)] == [second.segment_id]
        assert retrieve(store).content_hash == ds.content_hash
        # nothing left to do
        assert store.compact(VIEW)[0].segment_id is None
        # the retired segment's files stay for the grace period, then go
        old = store.segments(VIEW, retired=True)[0]
        assert old.status == "retired"
        store.gc(grace_seconds=3600)
        assert all(store.ctx.offline_store.path(f).exists() for f in old.files)
        store.gc(grace_seconds=0)
        assert not any(store.ctx.offline_store.path(f).exists() for f in old.files)
        assert retrieve(store).content_hash == ds.content_hash
    finally:
        store.close()


def test_materialization_after_compaction_serves_the_latest_rows(tmp_path):
    rng = random.Random(11)
    store = make_store(tmp_path / "repo", ttl=None)  # online TTLs count from now
    try:
        commits = commit_rows(rng, 8)
        ids = ingest_all(store, commits)
        store.compact(VIEW)
        store.quarantine(ids[-1], "suspect")
        store.materialize(t(0), t(1000))
        keys = [{"driver_id": k} for k in range(1, 7)]
        got = store.get_online_features([f"{VIEW}:speed"], keys).to_dict()["speed"]
        expected = oracle([(k, 10_000) for k in range(1, 7)], commits, ids,
                          set(ids) - {ids[-1]}, ttl=10**9)
        assert got == expected
    finally:
        store.close()


def test_automatic_compaction_past_the_threshold(tmp_path):
    store = make_store(tmp_path / "repo", auto_after_commits=4)
    try:
        commits = commit_rows(random.Random(5), 3)
        ids = ingest_all(store, commits)
        assert store.segments(VIEW) == []
        more = commit_rows(random.Random(6), 1)
        ids += ingest_all(store, more)
        (seg,) = store.segments(VIEW)
        assert list(seg.commit_ids) == ids
        assert speeds(retrieve(store)) == oracle(ENTITIES, commits + more, ids, set(ids))
    finally:
        store.close()


def test_an_edited_segment_row_is_refused_and_retiring_reads_the_commits_again(tmp_path):
    store = make_store(tmp_path / "repo")
    try:
        commits = commit_rows(random.Random(9), 4)
        ids = ingest_all(store, commits)
        ds = retrieve(store)
        (res,) = store.compact(VIEW)
        import sqlalchemy as sa

        from featureledger.registry import schema

        with store.registry.db.write() as conn:  # hide a commit's rows by SQL
            conn.execute(schema.segments.update().where(
                schema.segments.c.project == store.registry.project)
                .values(commit_ids=f'["{ids[0]}"]'))
        with pytest.raises(CommitTamperedError, match=res.segment_id):
            retrieve(store)
        store.retire_segment(res.segment_id, "row edited")
        assert retrieve(store).content_hash == ds.content_hash
        trail = store.registry.db.audit_trail("feature_view", f"{VIEW}@1")
        assert {"compact", "retire_segment"} <= {e["action"] for e in trail}
        assert sa  # used above
    finally:
        store.close()


# -- crash safety -----------------------------------------------------------------------
CHILD = textwrap.dedent("""
    import sys
    from pathlib import Path

    from featureledger import FeatureStore
    from featureledger.config import ProjectConfig

    root = Path(sys.argv[1])
    store = FeatureStore(root, config=ProjectConfig(
        root=root, compaction={"auto_after_commits": None, "target_file_rows": 50}))
    print("ready", flush=True)
    store.compact("trips")
    print("done", flush=True)
""")


def _compact_in_child(root: Path, *, kill_after: float | None, crash_at: str | None) -> None:
    env = {k: v for k, v in os.environ.items() if k != CRASH_ENV}
    if crash_at:
        env[CRASH_ENV] = crash_at
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(root)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    if kill_after is not None:
        time.sleep(kill_after)
        proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode in (0, -signal.SIGKILL), err


@pytest.mark.slow
def test_compaction_killed_at_any_point_never_loses_or_doubles_a_row(tmp_path):
    root = tmp_path / "repo"
    rng = random.Random(42)
    store = make_store(root)
    commits = commit_rows(rng, 30)
    ids = ingest_all(store, commits)
    store.quarantine(ids[4], "bad")
    expected = oracle(ENTITIES, commits, ids, set(ids) - {ids[4]})
    want = retrieve(store).content_hash
    store.close()
    kills = [(None, p) for p in ("after_files", "after_rename", "before_registry",
                                 "after_registry")]
    kills += [(rng.uniform(0.5, 3.0), None) for _ in range(6)]
    for kill_after, crash_at in kills:
        _compact_in_child(root, kill_after=kill_after, crash_at=crash_at)
        reader = FeatureStore(root, config=ProjectConfig(
            root=root, compaction={"auto_after_commits": None}))
        try:
            ds = retrieve(reader)
            assert ds.content_hash == want, (kill_after, crash_at)
            assert speeds(ds) == expected
            assert len(reader.segments(VIEW)) <= 1
            reader.gc(grace_seconds=0)  # orphans go; what a segment replaced goes too
            assert retrieve(reader).content_hash == want
            tmp = reader.ctx.offline_store.root / "default" / "_tmp"
            assert not tmp.exists() or not any(tmp.iterdir())
            # add commits so the next round has something to compact
            more = commit_rows(rng, 2)
            ids += ingest_all(reader, more)
            commits += more
            expected = oracle(ENTITIES, commits, ids, set(ids) - {ids[4]})
            want = retrieve(reader).content_hash
            assert speeds(retrieve(reader)) == expected
        finally:
            reader.close()


def test_two_join_keys_compact_into_disjoint_key_ranges_with_the_same_answers(tmp_path):
    root = tmp_path / "repo"
    cfg = ProjectConfig(root=root, compaction={"auto_after_commits": None,
                                               "target_file_rows": 5, "row_group_rows": 2})
    store = FeatureStore(root, config=cfg)
    try:
        store.apply([Entity(name="rider", join_keys={"rider_id": "int64", "city": "string"}),
                     FeatureView(name="rides", entities=["rider"], ttl="30s",
                                 fields=[Field(name="score", dtype="float64")])])
        rng = random.Random(5)
        for _ in range(6):
            rows = {(rng.randint(1, 3), rng.choice(["ams", "ber", "cdg"]), rng.randint(0, 40))
                    for _ in range(5)}
            store.ingest("rides", pa.table({
                "rider_id": pa.array([r[0] for r in rows], pa.int64()),
                "city": pa.array([r[1] for r in rows], pa.string()),
                "event_timestamp": pa.array([t(r[2]) for r in rows],
                                            pa.timestamp("us", tz="UTC")),
                "score": pa.array([rng.uniform(0, 1) for _ in rows], pa.float64())}))
        entities = {"rider_id": [k for k in (1, 2, 3, 4) for _ in range(6)] * 2,
                    "city": ["ams"] * 24 + ["ber"] * 24,
                    "event_timestamp": [t(s) for s in (0, 9, 20, 33, 41, 75)] * 8}
        before = store.get_historical_features(entities, ["rides:score"])
        assert before.to_arrow().column("score").null_count < 48
        (result,) = store.compact("rides")
        seg = store.segments("rides")[0]
        assert result.files_after == len(seg.files) > 1
        seen: set[tuple] = set()
        for f in seg.files:
            part = pq.read_table(store.ctx.offline_store.path(f))
            keys = set(zip(part.column("rider_id").to_pylist(), part.column("city").to_pylist(),
                           strict=True))
            assert not seen & keys  # no key tuple in two files
            seen |= keys
        after = store.get_historical_features(entities, ["rides:score"])
        assert after.content_hash == before.content_hash
        assert store.reproduce(before.id).content_hash == before.content_hash
    finally:
        store.close()


def test_a_segment_whose_unread_commits_no_entity_row_can_reach_is_merged(tmp_path,
                                                                          monkeypatch):
    """Commits left out only because no entity row reaches them (newer than every entity
    time, or older than the TTL allows) do not stop the merge over the clustered layout."""
    import featureledger.offline.duckdb.clustered as clustered

    merged = []
    real = clustered.clustered_point_in_time

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        merged.append(out is not None)
        return out

    monkeypatch.setattr(clustered, "clustered_point_in_time", spy)
    store = make_store(tmp_path / "repo")
    try:
        commits = [[(k, s, float(k * 100 + s)) for k in (1, 2, 3)] for s in (0, 30, 200, 400)]
        ingest_all(store, commits)
        ents = [(k, s) for k in (1, 2, 3, 4) for s in (210, 230, 250)]
        df = {"driver_id": [k for k, _ in ents], "event_timestamp": [t(s) for _, s in ents]}
        before = store.get_historical_features(df, [f"{VIEW}:speed"])
        # as ingested, the one commit an entity row reaches (200 s) is one file written in
        # the clustered order: merged as well
        assert merged == [True]
        store.compact(VIEW)
        after = store.get_historical_features(df, [f"{VIEW}:speed"])
        assert merged == [True, True]  # the commits at 0 s (past the TTL) and 400 s are idle
        assert after.content_hash == before.content_hash
        assert speeds(after) == [float(k * 100 + 200) if k < 4 and s - 200 <= 60 else None
                                 for k, s in ents]
        assert store.reproduce(after.id).content_hash == before.content_hash
    finally:
        store.close()


@pytest.mark.parametrize("seed", [4, 5])
def test_the_merge_reads_only_the_row_groups_its_matches_are_in(tmp_path, monkeypatch, seed):
    """Files of many small row groups, entity rows reaching a few keys and times: the merge
    decodes only the row groups holding a matched row, and gives the rows, the content
    hash and the match counts (within the TTL, and on keys only) of the files as ingested."""
    rng = random.Random(seed)
    decoded: list[int] = []
    real = pq.ParquetFile.read_row_group

    def spy(self, i, *args, **kwargs):
        decoded.append(i)
        return real(self, i, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "read_row_group", spy)
    store = make_store(tmp_path / "repo", ttl="20s", row_group_rows=3, target_file_rows=40)
    try:
        commits = [[(k, s, float(k * 1000 + s)) for k in range(1, 13) if rng.random() < 0.7]
                   for s in range(0, 100, 7)]
        commits = [c for c in commits if c]
        ids = ingest_all(store, commits)
        ents = [(rng.choice([2, 3, 11, 40]), rng.randint(60, 120)) for _ in range(25)]
        df = {"driver_id": [k for k, _ in ents], "event_timestamp": [t(s) for _, s in ents]}
        before = store.get_historical_features(df, [f"{VIEW}:speed"])
        store.compact(VIEW)
        after = store.get_historical_features(df, [f"{VIEW}:speed"])
        groups = sum(pq.ParquetFile(store.ctx.offline_store.uri(f)).metadata.num_row_groups
                     for s in store.compaction.segments(VIEW) for f in s.files)
        assert 0 < len(decoded) < groups  # only the groups holding keys 2, 3 and 11
        assert speeds(after) == oracle(ents, commits, ids, set(ids), ttl=20)
        assert after.content_hash == before.content_hash
        for key in ("unmatched_rows", "outside_ttl_rows"):
            assert after.manifest["views"][0][key] == before.manifest["views"][0][key]
    finally:
        store.close()


def test_files_whose_key_range_no_entity_row_reaches_are_not_opened(tmp_path, monkeypatch):
    """Each compacted file's manifest entry records its first join key's range; the merge
    opens only the files whose range holds an entity row's key, with the same answers."""
    import featureledger.offline.duckdb.clustered as clustered

    opened: list[str] = []
    real = clustered._Files.narrow

    def spy(self, path, ts_bounds):
        opened.append(path)
        return real(self, path, ts_bounds)

    monkeypatch.setattr(clustered._Files, "narrow", spy)
    store = make_store(tmp_path / "repo", target_file_rows=10)
    try:
        commits = [[(k, s, float(k * 1000 + s)) for k in range(1, 21)] for s in (0, 20, 40)]
        ids = ingest_all(store, commits)
        ents = [(k, s) for k in (3, 4, 17, 99) for s in (10, 45)]
        df = {"driver_id": [k for k, _ in ents], "event_timestamp": [t(s) for _, s in ents]}
        before = store.get_historical_features(df, [f"{VIEW}:speed"])
        store.compact(VIEW)
        (seg,) = store.compaction.segments(VIEW)
        ranges = [seg.file_manifest[f]["key_range"] for f in seg.files]
        assert len(ranges) == 6 and ranges[0] == [1, 4] and ranges[-1] == [18, 20]
        after = store.get_historical_features(df, [f"{VIEW}:speed"])
        reached = [f for f, (lo, hi) in zip(seg.files, ranges, strict=True)
                   if any(lo <= k <= hi for k, _ in ents)]
        assert sorted(opened) == sorted(store.ctx.offline_store.uri(f) for f in reached)
        assert len(reached) == 2
        assert speeds(after) == oracle(ents, commits, ids, set(ids))
        assert after.content_hash == before.content_hash
    finally:
        store.close()


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_one_commit_as_ingested_is_merged_with_the_sql_paths_answers(tmp_path, monkeypatch,
                                                                     seed):
    """A commit written as one file is stored by join key and event time and marked so in
    its manifest: a view version holding just that commit is read by the merge, with the
    oracle's answers and the content hash of the ASOF join over the same file."""
    import featureledger.offline.duckdb.clustered as clustered

    rng = random.Random(seed)
    pairs = rng.sample([(k, s) for k in range(1, 7) for s in range(0, 81)], 60)  # shuffled
    rows = [(k, s, round(rng.uniform(0, 100), 3)) for k, s in pairs]
    merged: list[bool] = []
    real = clustered.clustered_point_in_time

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        merged.append(out is not None)
        return out

    monkeypatch.setattr(clustered, "clustered_point_in_time", spy)
    store = make_store(tmp_path / "repo")
    try:
        ids = ingest_all(store, [rows])
        c = store.get_commit(ids[0])
        entry = c.file_manifest[c.files[0]]
        assert entry["order"] == "keys,time,created,commit"
        assert entry["key_range"] == [min(k for k, _ in pairs), max(k for k, _ in pairs)]
        part = pq.read_table(store.ctx.offline_store.path(c.files[0]))
        stored = list(zip(part.column("driver_id").to_pylist(),
                          part.column("event_timestamp").to_pylist(), strict=True))
        assert stored == sorted(stored)
        ds = retrieve(store)
        assert merged == [True]
        assert speeds(ds) == oracle(ENTITIES, [rows], ids, set(ids))
        monkeypatch.setattr(clustered, "clustered_point_in_time", lambda *a, **k: None)
        assert retrieve(store).content_hash == ds.content_hash  # the ASOF join's answer
        assert store.reproduce(ds.id).content_hash == ds.content_hash
        # a second commit: two files whose keys overlap, read by the ASOF join
        monkeypatch.setattr(clustered, "clustered_point_in_time", spy)
        more = [(k, s + 1, v + 1) for k, s, v in rows[:10] if s + 1 <= 80
                and (k, s + 1) not in set(pairs)]
        ids += ingest_all(store, [more])
        both = retrieve(store)
        assert merged == [True]
        assert speeds(both) == oracle(ENTITIES, [rows, more], ids, set(ids))
    finally:
        store.close()


def test_a_commit_above_the_clustering_bound_is_written_as_it_came(tmp_path, monkeypatch):
    import featureledger.ingest.commit as commit

    monkeypatch.setattr(commit, "CLUSTER_MAX_ROWS", 6)
    store = make_store(tmp_path / "repo")
    try:
        rows = [(k, s, float(k * 100 + s)) for s in (5, 1, 3) for k in (3, 1, 2, 4)]
        (small,) = ingest_all(store, [rows[:4]])
        (large,) = ingest_all(store, [rows[4:]])
        manifests = {cid: store.get_commit(cid) for cid in (small, large)}
        marks = {cid: c.file_manifest[c.files[0]].get("order")
                 for cid, c in manifests.items()}
        assert marks == {small: "keys,time,created,commit", large: None}
        c = manifests[large]
        part = pq.read_table(store.ctx.offline_store.path(c.files[0]))
        assert part.column("driver_id").to_pylist() == [r[0] for r in rows[4:]]
    finally:
        store.close()
