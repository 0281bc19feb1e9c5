"""Retention: policies expire commits one at a time, delete their files (also out of
compacted segments), keep what active deployments depend on unless forced, and make the
datasets that read them irreproducible with an error naming them; the others reproduce
bit for bit. A crash at any point leaves every commit whole or expired."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pytest

from featureledger import Entity, FeatureStore, FeatureView, Field
from featureledger.config import load_config
from featureledger.errors import CommitExpiredError, StateError
from featureledger.offline.storage import CRASH_ENV

BASE = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)
VIEW = "trips"


def t(s: int) -> dt.datetime:
    return BASE + dt.timedelta(seconds=s)


def make_store(root: Path, registry_url: str | None = None) -> FeatureStore:
    overrides: dict = {"compaction": {"auto_after_commits": None}}
    if registry_url:
        overrides["registry"] = registry_url
    root.mkdir(parents=True, exist_ok=True)
    store = FeatureStore(root, config=load_config(root, overrides=overrides))
    store.apply([Entity(name="driver", join_keys={"driver_id": "int64"}),
                 FeatureView(name=VIEW, entities=["driver"],
                             fields=[Field(name="speed", dtype="float64")])])
    return store


# commit i holds driver i+1 at second 10*i with speed 10*i + 0.5 (and driver 9 at 10*i)
def ingest(store: FeatureStore, n: int) -> list[str]:
    ids = []
    for i in range(n):
        table = pa.table({"driver_id": pa.array([i + 1, 9], pa.int64()),
                          "event_timestamp": pa.array([t(10 * i)] * 2,
                                                      pa.timestamp("us", tz="UTC")),
                          "speed": pa.array([10 * i + 0.5, float(i)], pa.float64())})
        ids.append(store.ingest(VIEW, table).commit_id)
    return ids


def entities(drivers: list[int]) -> dict:
    return {"driver_id": drivers, "event_timestamp": [t(1000)] * len(drivers)}


def files_exist(store: FeatureStore, commit_id: str) -> bool:
    c = store.get_commit(commit_id)
    return any(store.ctx.offline_store.path(f).exists() for f in c.files)


def test_keep_last_expires_oldest_deletes_files_and_blocks_reproduce(tmp_path, registry_url):
    store = make_store(tmp_path / "repo", registry_url)
    try:
        ids = ingest(store, 5)
        # read only the newest two commits' drivers... every dataset reads every commit
        # whose rows it can reach: one reading drivers 4 and 5 only still lists all five
        old = store.get_historical_features(entities([1, 2]), [f"{VIEW}:speed"])
        assert old.to_arrow().column("speed").to_pylist() == [0.5, 10.5]
        want_old = old.content_hash
        store.set_retention(VIEW, keep_last=2, reason="two batches are enough")
        backlog = store.retention_backlog()
        assert [e.commit_id for e in backlog] == ids[:3]
        assert {e.rule for e in backlog} == {"keep the last 2 commit(s)"}

        dry = store.apply_retention(dry_run=True)
        assert [e.commit_id for e in dry.expired] == ids[:3]
        assert all(files_exist(store, c) for c in ids)  # a dry run changes nothing

        report = store.apply_retention()
        assert [e.commit_id for e in report.expired] == ids[:3]
        assert report.files_deleted == 3 and not report.undeleted
        for cid in ids[:3]:
            c = store.get_commit(cid)
            assert c.status == "expired" and c.status_reason == (
                "retention: keep the last 2 commit(s)")
            assert not files_exist(store, cid)
            assert not store.ctx.offline_store.path(c.files[0]).parent.exists()
        assert all(files_exist(store, c) for c in ids[3:])
        assert store.retention_backlog() == []
        assert store.apply_retention().expired == []  # idempotent

        # a dataset that read expired commits cannot be rebuilt; the error names them
        with pytest.raises(CommitExpiredError) as err:
            store.reproduce(old.id)
        assert set(err.value.expired) == set(ids[:3])
        for cid in ids[:3]:
            assert cid in str(err.value)
            assert err.value.expired[cid] == store.get_commit(cid).status_changed_at
        assert want_old  # recorded, not rebuilt

        # new reads see only the kept commits; a dataset of them reproduces bit for bit
        new = store.get_historical_features(entities([1, 4, 5, 9]), [f"{VIEW}:speed"])
        assert new.to_arrow().column("speed").to_pylist() == [None, 30.5, 40.5, 4.0]
        assert store.reproduce(new.id).content_hash == new.content_hash
        assert store.reproduce(new.id).to_arrow().equals(new.to_arrow())

        # an expired commit never comes back; each expiry is audited with the policy
        with pytest.raises(StateError, match="expired under its view's retention"):
            store.restore(ids[0], "oops")
        trail = store.registry.db.audit_trail("commit", ids[0])
        assert trail[0]["action"] == "commit_status:expired"
        assert trail[0]["details"]["reason"] == "retention: keep the last 2 commit(s)"
        assert store.reconcile().ok
        assert store.verify_audit().ok
    finally:
        store.close()


def test_unaffected_dataset_reproduces_bit_for_bit(tmp_path):
    store = make_store(tmp_path / "repo")
    try:
        ids = ingest(store, 4)
        # as_of the third commit: reads commits 0..2 only
        early = store.get_historical_features(entities([1, 2, 3, 9]), [f"{VIEW}:speed"],
                                              as_of=ids[2])
        late_view = FeatureView(name="other", entities=["driver"],
                                fields=[Field(name="x", dtype="int64")])
        store.apply([Entity(name="driver", join_keys={"driver_id": "int64"}), late_view])
        store.ingest("other", pa.table({
            "driver_id": pa.array([1], pa.int64()),
            "event_timestamp": pa.array([t(0)], pa.timestamp("us", tz="UTC")),
            "x": pa.array([7], pa.int64())}))
        untouched = store.get_historical_features(entities([1]), ["other:x"])
        store.set_retention(VIEW, keep_days=1, reason="short")
        # commits are minutes old: nothing expires now, everything two days from now
        assert store.retention_backlog() == []
        later = dt.datetime.now(dt.UTC) + dt.timedelta(days=2)
        assert [e.commit_id for e in store.retention_backlog(at=later)] == ids
        store.apply_retention(at=later)
        with pytest.raises(CommitExpiredError):
            store.reproduce(early.id)
        again = store.reproduce(untouched.id)
        assert again.content_hash == untouched.content_hash
        assert again.to_arrow().equals(untouched.to_arrow())
    finally:
        store.close()


def test_compacted_segment_is_rewritten_without_expired_rows(tmp_path):
    store = make_store(tmp_path / "repo")
    try:
        ids = ingest(store, 5)
        store.compact(VIEW)
        old_seg = store.segments(VIEW)[0]
        before = store.get_historical_features(entities([3, 4, 5, 9]), [f"{VIEW}:speed"])
        store.set_retention(VIEW, keep_last=3, reason="three")
        report = store.apply_retention()
        assert [e.commit_id for e in report.expired] == ids[:2]
        (rewrite,) = report.rewritten
        assert rewrite["segment"] == old_seg.segment_id
        (new_seg,) = store.segments(VIEW)
        assert new_seg.segment_id == rewrite["new_segment"]
        assert new_seg.commit_ids == tuple(ids[2:])
        assert new_seg.row_count == 6
        # the old segment's files (holding the expired rows) are gone
        assert not any(store.ctx.offline_store.path(f).exists() for f in old_seg.files)
        rows = pa.concat_tables([store.ctx.offline_store.read_table(f) for f in new_seg.files])
        assert set(rows.column("_commit_id").to_pylist()) == set(ids[2:])
        # the kept commits read the same; datasets of them reproduce
        after = store.get_historical_features(entities([3, 4, 5, 9]), [f"{VIEW}:speed"])
        assert after.to_arrow().column("speed").to_pylist() == (
            before.to_arrow().column("speed").to_pylist())
        assert store.reproduce(after.id).content_hash == after.content_hash
        with pytest.raises(CommitExpiredError):
            store.reproduce(before.id)
        assert store.reconcile().ok
    finally:
        store.close()


def test_commits_a_deployment_depends_on_are_kept_unless_forced(tmp_path, registry_url):
    store = make_store(tmp_path / "repo", registry_url)
    try:
        ids = ingest(store, 4)
        with store.start_run("m") as run:
            ds = store.get_historical_features(entities([1]), [f"{VIEW}:speed"], as_of=ids[0])
            run.log_model("m", "s3://m/1", training_dataset=ds)
        dep = store.deploy("m@1", "production")
        store.set_retention(VIEW, keep_last=1, reason="latest only")
        report = store.apply_retention()
        assert [e.commit_id for e in report.expired] == ids[1:3]
        assert [(e.commit_id, e.deployments) for e in report.kept] == [
            (ids[0], (dep.deployment_id,))]
        assert store.get_commit(ids[0]).status == "committed"
        assert [e.commit_id for e in store.retention_backlog()] == [ids[0]]
        with pytest.raises(StateError, match="needs a reason"):
            store.apply_retention(force=" ")
        forced = store.apply_retention(force="model retires this week")
        assert [e.commit_id for e in forced.expired] == [ids[0]]
        reason = store.get_commit(ids[0]).status_reason
        assert dep.deployment_id in reason and "model retires this week" in reason
    finally:
        store.close()


def test_policy_needs_a_reason_and_one_bound(tmp_path):
    store = make_store(tmp_path / "repo")
    try:
        with pytest.raises(StateError, match="needs a reason"):
            store.set_retention(VIEW, keep_days=3, reason="")
        with pytest.raises(StateError, match="not both"):
            store.set_retention(VIEW, keep_days=3, keep_last=2, reason="x")
        with pytest.raises(StateError, match="at least 1"):
            store.set_retention(VIEW, keep_last=0, reason="x")
        assert store.retention.policies() == []
        policy = store.set_retention(VIEW, keep_days=30, reason="GDPR")
        assert policy is not None and (policy.keep_days, policy.keep_last) == (30, None)
        assert store.set_retention(VIEW, reason="keep all again") is None
        assert store.retention.policies() == []
    finally:
        store.close()


# -- crash safety -----------------------------------------------------------------------
CHILD = textwrap.dedent("""
    import sys
    from pathlib import Path

    from featureledger import FeatureStore
    from featureledger.config import load_config

    root = Path(sys.argv[1])
    store = FeatureStore(root, config=load_config(
        root, overrides={"compaction": {"auto_after_commits": None}}))
    print("ready", flush=True)
    store.apply_retention()
    print("done", flush=True)
""")


def _retention_in_child(root: Path, crash_at: str) -> int:
    env = {**{k: v for k, v in os.environ.items() if k != CRASH_ENV}, CRASH_ENV: crash_at}
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(root)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode in (0, -signal.SIGKILL), err
    return proc.returncode


def _whole_or_expired(store: FeatureStore, ids: list[str]) -> dict[str, str]:
    """Each commit's state: 'whole' (committed, files there) or 'expired' (row expired);
    fails on anything in between."""
    out = {}
    for cid in ids:
        c = store.get_commit(cid)
        if c.status == "expired":
            out[cid] = "expired"
        else:
            assert c.status == "committed", c
            unit = c.segment or c
            assert not store.ctx.offline_store.missing_files(unit.files), cid
            out[cid] = "whole"
    return out


@pytest.mark.slow
@pytest.mark.parametrize("compacted", [False, True])
@pytest.mark.parametrize("crash_at", ["retention_after_files", "retention_before_registry",
                                      "retention_after_registry"])
def test_crash_leaves_every_commit_whole_or_expired(tmp_path, crash_at, compacted):
    root = tmp_path / "repo"
    store = make_store(root)
    ids = ingest(store, 4)
    if compacted:
        store.compact(VIEW)
    earlier = store.get_historical_features(entities([4, 9]), [f"{VIEW}:speed"])
    store.set_retention(VIEW, keep_last=1, reason="one")
    store.close()

    rc = _retention_in_child(root, crash_at)
    store = FeatureStore(root, config=load_config(
        root, overrides={"compaction": {"auto_after_commits": None}}))
    try:
        states = _whole_or_expired(store, ids)
        if crash_at == "retention_after_files" and not compacted:
            assert rc == 0  # loose commits write no files: that point is never reached
        else:
            assert rc == -signal.SIGKILL
        if crash_at in ("retention_after_files", "retention_before_registry") and rc:
            assert set(states.values()) == {"whole"}  # the transaction never committed
        # a reader sees exactly the kept commits' rows, or every row: never half
        speed = store.get_historical_features(entities([4, 9]), [f"{VIEW}:speed"])
        assert speed.to_arrow().column("speed").to_pylist() == [30.5, 3.0]
        # the next apply finishes the job: files of expired commits swept
        store.apply_retention()
        states = _whole_or_expired(store, ids)
        assert states == {**{c: "expired" for c in ids[:3]}, ids[3]: "whole"}
        for cid in ids[:3]:
            assert not files_exist(store, cid)
        for seg in store.segments(VIEW, retired=True):
            if seg.status != "active":
                assert store.ctx.offline_store.missing_files(seg.files) == seg.files
        with pytest.raises(CommitExpiredError):
            store.reproduce(earlier.id)
        store.gc(grace_seconds=0)
        assert store.reconcile().ok
        assert store.verify_audit().ok
    finally:
        store.close()


def test_expired_parent_commits_leave_derived_commits_fresh(tmp_path):
    from featureledger import Transformation

    store = make_store(tmp_path / "repo")
    try:
        fast = FeatureView(
            name="fast", entities=["driver"], fields=[Field(name="kmh", dtype="float64")],
            transformation=Transformation(
                language="sql", parents=[VIEW],
                code=f"SELECT driver_id, event_timestamp, speed * 2 AS kmh FROM {VIEW}"))
        store.apply([Entity(name="driver", join_keys={"driver_id": "int64"}), fast])
        ids = ingest(store, 3)
        store.derive("fast")
        derived = store.commits("fast")
        assert len(derived) == 1 and derived[0].row_count == 6
        store.set_retention(VIEW, keep_last=1, reason="raw speeds: latest only")
        store.apply_retention()
        assert [store.get_commit(c).status for c in ids] == ["expired", "expired", "committed"]
        # retention of an input is not a wrong input: nothing to recompute
        assert store.stale("fast") == {}
        (again,) = store.commits("fast")
        assert again.status == "committed" and again.stale == ()
        rows = store.get_features_in_window("fast", None, None)
        assert sorted(rows.column("kmh").to_pylist()) == [0.0, 1.0, 2.0, 4.0, 21.0, 41.0]
    finally:
        store.close()
