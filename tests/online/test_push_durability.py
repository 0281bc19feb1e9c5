"""Push durability: an acknowledged push is on disk, and online values cite known commits.

In-process tests stand a "dead" process in with a store whose push buffer released its log
segments without landing them (what the kernel does for a killed process); the crash tests
kill real processes with SIGKILL at the named instants of a landing
(``FEATURELEDGER_CRASH_AT``) and replay, also with the replay itself killed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from featureledger import FeatureStore
from featureledger.errors import StateError, UnknownViewError, ValidationFailedError
from featureledger.offline.storage import CRASH_ENV

FEATS = ["driver_stats:trips", "driver_stats:city"]


def segments(root: Path) -> list[Path]:
    return sorted((root / ".featureledger" / "push-log").glob("*/*/v*/*.wal"))


def offline_rows(store: FeatureStore, view: str = "driver_stats") -> pa.Table:
    """Every stored row of every commit of ``view``, read from the Parquet files."""
    files = [store.ctx.offline_store.path(f) for c in store.commits(view) for f in c.files]
    return pa.concat_tables([pq.read_table(f) for f in files]) if files else pa.table({})


def assert_no_doubles(table: pa.Table, keys: list[str]) -> None:
    seen = list(zip(*(table.column(k).to_pylist() for k in keys), strict=True))
    assert len(seen) == len(set(seen)), "a row was stored twice"


def test_a_push_cites_a_pending_commit_until_it_lands(make_store, h, tmp_path):
    store = make_store()
    store.apply([h.DRIVER, h.stats_view()])
    cid = store.push("driver_stats", [
        {"driver_id": 1, "event_timestamp": h.ts(1), "trips": 1, "city": "a"},
        {"driver_id": 2, "event_timestamp": h.ts(1), "trips": 2}])
    # the commit the online values cite exists from the answer on, pending
    assert store.get_online_features(FEATS, [{"driver_id": 1}]).commits("trips") == [cid]
    pending = store.get_commit(cid)
    assert (pending.status, pending.row_count, pending.files) == ("pending", 0, [])
    assert pending.source["type"] == "push"
    assert store.registry.commits.list("driver_stats") == []  # not visible to readers
    assert [c.commit_id for c in store.commits(status="pending")] == [cid]
    with pytest.raises(StateError, match="is pending: its pushed rows have not landed"):
        store.quarantine(cid, "too early")
    with pytest.raises(StateError, match="pending"):
        store.registry.commits.set_status(cid, "quarantined", "too early")
    # durable before the answer: the segment, named after the commit, in its view version
    log = segments(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in log] == [
        f".featureledger/push-log/default/driver_stats/v1/{cid}.wal"]
    landed = store.online.flush()
    assert [c.commit_id for c in landed] == [cid]
    got = store.get_commit(cid)
    assert (got.status, got.row_count) == ("committed", 2)
    assert segments(tmp_path) == []
    assert store.commits(status="pending") == []


def test_a_rejected_push_leaves_nothing(make_store, h, tmp_path):
    from featureledger import Field

    store = make_store()
    store.apply([h.DRIVER, h.stats_view(fields=[Field(name="trips", dtype="int64", min=0)])])
    with pytest.raises(ValidationFailedError):
        store.push("driver_stats", [{"driver_id": 1, "event_timestamp": h.ts(1), "trips": -1}])
    with pytest.raises(UnknownViewError):
        store.push("nope", [{"driver_id": 1, "event_timestamp": h.ts(1)}])
    assert segments(tmp_path) == [] and store.commits() == []


def test_pushes_a_dead_store_acknowledged_land_on_the_next_open(make_store, h, tmp_path):
    a = make_store()
    a.apply([h.DRIVER, h.stats_view()])
    cid = a.push("driver_stats", [{"driver_id": 1, "event_timestamp": h.ts(1), "trips": 1}])
    assert a.push("driver_stats", [
        {"driver_id": 1, "event_timestamp": h.ts(2), "trips": 2, "city": "b"},
        {"driver_id": 2, "event_timestamp": h.ts(1), "trips": 20}]) == cid
    a.online.pusher.buffer.close()  # released, never landed: what a killed process leaves
    b = make_store()
    assert b.online.recovery.landed == [cid] and b.online.recovery.rows == 3
    assert b.get_commit(cid).status == "committed" and b.get_commit(cid).row_count == 3
    online = b.get_online_features(FEATS, [{"driver_id": 1}, {"driver_id": 2}])
    # a missing column takes the default; a missing value in a present column is null
    assert online.values == {"trips": [2, 20], "city": ["b", None]}
    assert online.commits("trips") == [cid, cid]
    offline = b.get_historical_features(
        {"driver_id": [1, 1, 2], "event_timestamp": [h.ts(1), h.ts(2), h.ts(1)]}, FEATS
    ).to_arrow().to_pydict()
    assert offline["trips"] == [1, 2, 20] and offline["city"] == ["unknown", "b", None]
    assert segments(tmp_path) == []
    a.close()  # the first store's close finds its commit landed: nothing written twice
    assert [c.row_count for c in b.commits("driver_stats")] == [3]


def test_replaying_a_segment_whose_commit_landed_adds_nothing(make_store, h, tmp_path):
    store = make_store()
    store.apply([h.DRIVER, h.stats_view()])
    cid = store.push("driver_stats", [
        {"driver_id": 1, "event_timestamp": h.ts(1), "trips": 1},
        {"driver_id": 2, "event_timestamp": h.ts(1), "trips": 2}])
    (seg,) = segments(tmp_path)
    saved = seg.read_bytes()
    store.online.flush()
    # a crash between the landing's registry commit and the segment's removal
    seg.write_bytes(saved)
    again = make_store()
    assert again.online.recovery.retagged == [cid] and again.online.recovery.landed == []
    assert [(c.commit_id, c.row_count) for c in again.commits("driver_stats")] == [(cid, 2)]
    rows = offline_rows(again)
    assert rows.num_rows == 2
    assert_no_doubles(rows, ["driver_id", "event_timestamp"])
    assert segments(tmp_path) == []


def test_a_torn_record_is_not_replayed(make_store, h, tmp_path):
    a = make_store()
    a.apply([h.DRIVER, h.stats_view()])
    cid = a.push("driver_stats", [{"driver_id": 1, "event_timestamp": h.ts(1), "trips": 1}])
    (seg,) = segments(tmp_path)
    one = seg.stat().st_size
    a.push("driver_stats", [{"driver_id": 2, "event_timestamp": h.ts(1), "trips": 2}])
    second = seg.read_bytes()[one:]  # the second push's record
    a.push("driver_stats", [{"driver_id": 3, "event_timestamp": h.ts(1), "trips": 3}])
    a.online.pusher.buffer.close()
    with open(seg, "ab") as f:  # a fourth push cut short by the crash: never acknowledged
        f.write(second[: len(second) // 2])
    b = make_store()
    assert b.online.recovery.landed == [cid]
    assert sorted(offline_rows(b).column("driver_id").to_pylist()) == [1, 2, 3]
    a.close()


@pytest.mark.parametrize("tail", [b"\0" * 64, b"\1\2\3"], ids=["zeros", "short"])
def test_a_zeroed_or_short_tail_is_not_a_record(make_store, h, tmp_path, tail):
    a = make_store()
    a.apply([h.DRIVER, h.stats_view()])
    cid = a.push("driver_stats", [{"driver_id": 1, "event_timestamp": h.ts(1), "trips": 1}])
    a.online.pusher.buffer.close()
    (seg,) = segments(tmp_path)
    with open(seg, "ab") as f:  # a file extended by the crash, its data never written
        f.write(tail)
    b = make_store()
    assert b.online.recovery.landed == [cid] and not b.online.recovery.failed
    assert offline_rows(b).column("driver_id").to_pylist() == [1]
    a.close()


def test_a_live_store_keeps_its_segments(make_store, h, tmp_path):
    a = make_store()
    a.apply([h.DRIVER, h.stats_view()])
    cid = a.push("driver_stats", [{"driver_id": 1, "event_timestamp": h.ts(1), "trips": 1}])
    b = make_store()  # another process opening the same repository while `a` serves
    assert not b.online.recovery
    assert b.get_commit(cid).status == "pending" and len(segments(tmp_path)) == 1
    a.online.flush()
    assert b.get_commit(cid).status == "committed" and segments(tmp_path) == []


def test_flush_true_lands_before_the_answer(make_store, h, tmp_path):
    store = make_store()
    store.apply([h.DRIVER, h.stats_view()])
    first = store.push("driver_stats", [{"driver_id": 1, "event_timestamp": h.ts(1),
                                         "trips": 1}])
    # buffered rows of the same view version join the commit of the flushing push
    cid = store.push("driver_stats", [{"driver_id": 2, "event_timestamp": h.ts(1),
                                       "trips": 2}], flush=True)
    assert cid == first and store.get_commit(cid).row_count == 2
    alone = store.push("driver_stats", [{"driver_id": 3, "event_timestamp": h.ts(1),
                                         "trips": 3}], flush=True)
    assert alone != cid and store.get_commit(alone).status == "committed"
    assert store.get_online_features(FEATS, [{"driver_id": 3}]).commits("trips") == [alone]
    assert segments(tmp_path) == []


@pytest.mark.slow
def test_concurrent_pushes_all_land_once(make_store, h):
    store = make_store(push_flush_rows=50)
    store.apply([h.DRIVER, h.stats_view()])
    acked: dict[int, str] = {}
    errors: list[BaseException] = []

    def pusher(worker: int) -> None:
        try:
            for i in range(25):
                key = worker * 1000 + i
                acked[key] = store.push("driver_stats", [
                    {"driver_id": key, "event_timestamp": h.ts(1), "trips": key}])
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=pusher, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    store.online.flush()
    commits = {c.commit_id: c for c in store.commits("driver_stats")}
    assert set(acked.values()) <= set(commits) and sum(
        c.row_count for c in commits.values()) == 150
    assert all(c.status == "committed" for c in commits.values())
    keys = sorted(acked)
    offline = store.get_historical_features(
        {"driver_id": keys, "event_timestamp": [h.ts(2)] * len(keys)}, ["driver_stats:trips"]
    ).to_arrow()
    assert offline.sort_by("driver_id").column("trips").to_pylist() == keys
    online = store.get_online_features(["driver_stats:trips"],
                                       [{"driver_id": k} for k in keys])
    assert online.values["trips"] == keys
    assert [acked[k] for k in keys] == online.commits("trips")


def test_a_quiet_buffer_lands_without_another_push(make_store, h):
    import time

    store = make_store(push_flush_interval_s=0.2)
    store.apply([h.DRIVER, h.stats_view()])
    cid = store.push("driver_stats", [{"driver_id": 1, "event_timestamp": h.ts(1),
                                       "trips": 1}])
    deadline = time.monotonic() + 10
    while store.get_commit(cid).status == "pending":
        assert time.monotonic() < deadline, "the background flush did not land the push"
        time.sleep(0.05)
    assert store.get_commit(cid).row_count == 1


# -- real processes, killed ----------------------------------------------------------------
CHILD = textwrap.dedent("""
    import datetime as dt
    import os
    import sys

    from featureledger import FeatureStore

    root, crash_at, batches = sys.argv[1], sys.argv[2], int(sys.argv[3])
    T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)

    def batch(i):
        # three keys per batch (two shared with other batches), and key 99 at one fixed
        # time in every batch: the commit keeps only the last pushed row of it
        return [{"driver_id": i % 5, "event_timestamp": T0 + dt.timedelta(hours=i),
                 "trips": 10 * i}, {"driver_id": 10 + i, "event_timestamp": T0,
                 "trips": 10 * i + 1}, {"driver_id": 99, "event_timestamp": T0,
                 "trips": 10 * i + 2}]

    store = FeatureStore(root)
    if batches == 0:  # a replay only
        if crash_at != "-":
            os.environ["FEATURELEDGER_CRASH_AT"] = crash_at
        print("replayed", store.online.recovery.summary(), flush=True)
        sys.exit(0)
    for i in range(batches):
        print("ack", i, store.push("driver_stats", batch(i)), flush=True)
    os.environ["FEATURELEDGER_CRASH_AT"] = crash_at
    if crash_at == "push_after_log":
        store.push("driver_stats", batch(batches))  # killed before its answer
    else:
        store.online.flush()  # killed while landing
    print("survived", flush=True)
""")

ACKED = 6


def _child(root: Path, crash_at: str | None, batches: int) -> tuple[int, list[str], str]:
    env = {k: v for k, v in os.environ.items() if k != CRASH_ENV}
    proc = subprocess.run([sys.executable, "-c", CHILD, str(root), crash_at or "-",
                           str(batches)], capture_output=True, text=True, env=env, timeout=120)
    if proc.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(f"child failed ({proc.returncode}):\n{proc.stderr}")
    return proc.returncode, proc.stdout.splitlines(), proc.stderr


def _repo(tmp_path: Path, registry: str, h) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    (root / "featureledger.yaml").write_text(
        f"project: crashy\nregistry: '{registry}'\n"
        # nothing lands before the flush the test crashes
        "serving: {push_flush_rows: 100000, push_flush_interval_s: 3600}\n")
    with FeatureStore(root) as store:
        store.apply([h.DRIVER, h.stats_view()])
    return root


def check_every_acknowledged_row(root: Path, acked_batches: int, cid: str, h) -> None:
    """What the pushes were answered with is there, offline and online, exactly once."""
    with FeatureStore(root) as store:
        assert store.online is not None  # opening the online part replays the push log
        commits = store.commits("driver_stats")
        assert [(c.commit_id, c.status) for c in commits] == [(cid, "committed")]
        rows = offline_rows(store)
        assert_no_doubles(rows, ["driver_id", "event_timestamp"])
        assert rows.num_rows == commits[0].row_count
        present = {i: 10 * i for i in range(acked_batches)}
        if 10 * acked_batches in rows.column("trips").to_pylist():
            present[acked_batches] = 10 * acked_batches  # durable, though unanswered
        last = max(present)
        # offline: each pushed row at its own key and event time, as pushed
        entity = {"driver_id": [], "event_timestamp": []}
        expected = []
        for i in present:
            entity["driver_id"] += [i % 5, 10 + i]
            entity["event_timestamp"] += [h.ts(i), h.ts(0)]
            expected += [10 * i, 10 * i + 1]
        entity["driver_id"].append(99)
        entity["event_timestamp"].append(h.ts(0))
        expected.append(10 * last + 2)  # key 99: the last pushed row of the commit
        got = store.get_historical_features(entity, ["driver_stats:trips"]).to_arrow()
        assert got.column("trips").to_pylist() == expected
        # online: the newest value per key, from a commit the registry has
        keys = sorted(set(entity["driver_id"]))
        online = store.get_online_features(["driver_stats:trips"],
                                           [{"driver_id": k} for k in keys])
        latest = store.get_historical_features(
            {"driver_id": keys, "event_timestamp": [h.ts(1000)] * len(keys)},
            ["driver_stats:trips"]).to_arrow().column("trips").to_pylist()
        assert online.values["trips"] == latest
        assert set(online.commits("trips")) == {cid}
        assert store.commits(status="pending") == []
        assert segments(root) == []
        store.gc(grace_seconds=0)
        referenced = {str(Path(f).parent) for f in store.registry.commits.all_files()}
        assert set(store.ctx.offline_store.commit_dirs()) == referenced


@pytest.mark.slow
@pytest.mark.parametrize(("crash_at", "replay_crash_at"), [
    ("push_after_log", None),
    ("after_files", "after_rename"),
    ("after_rename", "before_registry"),
    ("before_registry", "after_registry"),
    ("after_registry", "after_files"),
])
def test_killed_landing_then_killed_replay(tmp_path, sqlite_url, h, crash_at,
                                           replay_crash_at):
    root = _repo(tmp_path, sqlite_url, h)
    code, out, err = _child(root, crash_at, ACKED)
    assert code == -signal.SIGKILL, err
    acks = [line.split() for line in out if line.startswith("ack ")]
    assert [int(a[1]) for a in acks] == list(range(ACKED))
    (cid,) = {a[2] for a in acks}
    if replay_crash_at is not None:
        code, out, err = _child(root, replay_crash_at, 0)
        # a replay of a commit that had landed writes no files: nothing to kill it at
        assert code == (0 if crash_at == "after_registry" else -signal.SIGKILL), err
    check_every_acknowledged_row(root, ACKED, cid, h)


@pytest.mark.slow
@pytest.mark.postgres
def test_killed_landing_on_postgres(tmp_path, pg_url, h):
    root = _repo(tmp_path, pg_url, h)
    code, out, err = _child(root, "before_registry", ACKED)
    assert code == -signal.SIGKILL, err
    (cid,) = {line.split()[2] for line in out if line.startswith("ack ")}
    check_every_acknowledged_row(root, ACKED, cid, h)


def test_a_project_name_that_cannot_be_a_folder_is_refused(tmp_path):
    from featureledger.errors import ConfigError
    from featureledger.online.wal import PushLog

    for name in ("../elsewhere", "a/b", ".."):
        with pytest.raises(ConfigError, match="cannot name the push log's folder"):
            PushLog(tmp_path, name)
    assert PushLog(tmp_path, "my project").folder("v", 2) == tmp_path / "my project" / "v" / "v2"
