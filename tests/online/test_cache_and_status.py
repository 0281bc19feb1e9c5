"""The cache never serves a stale value, and quarantines reach the online store."""

from __future__ import annotations

import time

import pytest

from featureledger import Field

IDS = [{"driver_id": 1}, {"driver_id": 2}]


def trips(store):
    return store.get_online_features(["driver_stats:trips"], IDS).values["trips"]


@pytest.fixture
def cached(make_store, h):
    store = make_store(cache=True)
    store.apply([h.DRIVER, h.stats_view()])
    h.write_commit(store, "driver_stats", [
        {"driver_id": 1, "event_timestamp": h.ts(1), "trips": 1}])
    store.materialize(end=h.ts(2))
    assert trips(store) == [1, None]
    assert trips(store) == [1, None]  # now cached, including the "not found"
    assert store.online.cache.stats()["hits"] >= 2
    return store


def test_materialization_invalidates(cached, h):
    h.write_commit(cached, "driver_stats", [
        {"driver_id": 1, "event_timestamp": h.ts(3), "trips": 3},
        {"driver_id": 2, "event_timestamp": h.ts(3), "trips": 30}])
    assert trips(cached) == [1, None]  # not materialized yet: the online value is still 1
    cached.materialize(end=h.ts(4))
    assert trips(cached) == [3, 30]


def test_push_invalidates(cached, h):
    cached.push("driver_stats", [{"driver_id": 2, "event_timestamp": h.ts(5), "trips": 50}])
    assert trips(cached) == [1, 50]


def test_quarantine_and_restore_invalidate_and_repair(cached, h):
    bad = h.write_commit(cached, "driver_stats", [
        {"driver_id": 1, "event_timestamp": h.ts(3), "trips": 999},
        {"driver_id": 2, "event_timestamp": h.ts(3), "trips": 998}])
    cached.materialize(end=h.ts(4))
    assert trips(cached) == [999, 998]
    cached.quarantine(bad, "bad upstream batch")
    # key 1 falls back to the previous committed value, key 2 had none
    r = cached.get_online_features(["driver_stats:trips"], IDS)
    assert r.values["trips"] == [1, None]
    assert r.statuses["trips"] == ["PRESENT", "NOT_FOUND"]
    cached.restore(bad, "false alarm")
    assert trips(cached) == [999, 998]
    cached.rollback(bad, "really bad")
    assert trips(cached) == [1, None]


def test_version_bump_invalidates(cached, h):
    v2 = h.stats_view(fields=[Field(name="trips", dtype="int64"),
                              Field(name="rating", dtype="float64"),
                              Field(name="city", dtype="string", default="unknown"),
                              Field(name="extra", dtype="int64")])
    plan = cached.apply([h.DRIVER, v2])
    assert any("driver_stats@2 materialized online" in n for n in plan.items[1].notes)
    # "driver_stats:trips" now means version 2, which carries version 1's data and was
    # materialized by the apply: the cached reads of version 1 are not served for it
    r = cached.get_online_features(["driver_stats:trips", "driver_stats:extra"], IDS)
    assert r.versions["trips"] == 2 and r.values["trips"] == [1, None]
    assert r.statuses["extra"] == ["NULL", "NOT_FOUND"]  # added after the row was written
    h.write_commit(cached, "driver_stats", [
        {"driver_id": 2, "event_timestamp": h.ts(6), "trips": 60}])
    cached.materialize(end=h.ts(7))
    assert trips(cached) == [1, 60]


def test_changes_by_another_process_are_seen(cached, make_store, h):
    other = make_store()  # a second FeatureStore on the same repository and online store
    h.write_commit(other, "driver_stats", [
        {"driver_id": 1, "event_timestamp": h.ts(8), "trips": 8}])
    other.materialize(end=h.ts(9))
    assert trips(cached) == [8, None]  # poll_interval_s=0 in tests: checked on every read
    other.push("driver_stats", [{"driver_id": 2, "event_timestamp": h.ts(9), "trips": 9}])
    assert trips(cached) == [8, 9]


def test_quarantine_without_cache_repairs_online_store(make_store, h):
    store = make_store()
    store.apply([h.DRIVER, h.stats_view()])
    good = h.write_commit(store, "driver_stats", [
        {"driver_id": 1, "event_timestamp": h.ts(1), "trips": 1, "city": "a"}])
    bad = h.write_commit(store, "driver_stats", [
        {"driver_id": 1, "event_timestamp": h.ts(2), "trips": 2, "city": "b"}])
    store.materialize(end=h.ts(3))
    store.quarantine(bad, "wrong city")
    r = store.get_online_features(["driver_stats:trips", "driver_stats:city"], [IDS[0]])
    assert r.values == {"trips": [1], "city": ["a"]} and r.commits("city") == [good]
    # materializing again does not bring the quarantined value back
    store.materialize(end=h.ts(3))
    assert store.get_online_features(["driver_stats:trips"], [IDS[0]]).values["trips"] == [1]


def test_memory_only_reads_answer_from_the_cache_or_not_at_all(make_store, h):
    store = make_store(cache=True, poll_interval_s=3600)
    store.apply([h.DRIVER, h.stats_view()])
    h.write_commit(store, "driver_stats", [
        {"driver_id": 1, "event_timestamp": h.ts(1), "trips": 1}])
    store.materialize(end=h.ts(2))
    svc = store.online
    feats = ["driver_stats:trips", "driver_stats:city"]
    assert svc.get_online_features_nowait(feats, IDS) is None  # no plan built yet
    full = store.get_online_features(feats, IDS)  # caches key 1 and key 2 ("not found")
    before = svc.cache.stats()
    quick = svc.get_online_features_nowait(feats, {"driver_id": [1, 2]})
    assert quick is not None
    assert quick.to_dict(metadata=True) == full.to_dict(metadata=True)
    assert quick.statuses["trips"] == ["PRESENT", "NOT_FOUND"]
    assert svc.cache.stats()["hits"] == before["hits"] + 2
    # a key that is not cached: declined, and nothing counted
    assert svc.get_online_features_nowait(feats, [{"driver_id": 3}]) is None
    assert svc.cache.stats()["misses"] == before["misses"]
    # a push in this process drops the table at once: declined until a full read
    store.push("driver_stats", [{"driver_id": 2, "event_timestamp": h.ts(3), "trips": 30}])
    assert svc.get_online_features_nowait(feats, IDS) is None
    assert store.get_online_features(feats, IDS).values["trips"] == [1, 30]
    assert svc.get_online_features_nowait(feats, IDS).values["trips"] == [1, 30]
    # a registry write in this process (a new version) is seen before the poll interval
    store.apply([h.DRIVER, h.stats_view(fields=[Field(name="trips", dtype="int64"),
                                               Field(name="city", dtype="string")])])
    assert svc.get_online_features_nowait(feats, IDS) is None
    r = store.get_online_features(feats, IDS)
    # version 2 carries version 1's data (the pushed row included) and serves it at once
    assert r.versions == {"trips": 2, "city": 2} and r.values["trips"] == [1, 30]


def test_memory_only_reads_need_the_cache_and_a_fresh_check(make_store, h):
    plain = make_store(poll_interval_s=3600)
    plain.apply([h.DRIVER, h.stats_view()])
    plain.get_online_features(["driver_stats:trips"], IDS)
    assert plain.online.get_online_features_nowait(["driver_stats:trips"], IDS) is None
    polling = make_store(cache=True)  # poll_interval_s=0: the check is due on every read
    polling.get_online_features(["driver_stats:trips"], IDS)
    assert polling.online.get_online_features_nowait(["driver_stats:trips"], IDS) is None


def test_reads_leave_change_polling_to_a_background_thread(make_store, h):
    import threading
    import time

    import sqlalchemy as sa

    reader = make_store(cache=True, poll_interval_s=0.05)
    reader.apply([h.DRIVER, h.stats_view()])
    writer = make_store()
    h.write_commit(writer, "driver_stats", [
        {"driver_id": 1, "event_timestamp": h.ts(1), "trips": 1}])
    writer.materialize(end=h.ts(2))
    time.sleep(0.2)  # the poller sees the materialization: the next read refreshes
    assert trips(reader) == [1, None]
    engine = reader.registry.db.engine
    on_reader_thread = []

    def seen(conn, cursor, statement, *args):
        if threading.get_ident() == threading.main_thread().ident:
            on_reader_thread.append(statement)

    sa.event.listen(engine, "before_cursor_execute", seen)
    try:
        deadline = time.monotonic() + 0.3
        reads = 0
        while time.monotonic() < deadline:  # several poll intervals of reads
            assert trips(reader) == [1, None]
            reads += 1
        assert reads > 10 and on_reader_thread == []
        # another process's change is still seen, within about one poll interval
        writer.push("driver_stats", [{"driver_id": 2, "event_timestamp": h.ts(3),
                                      "trips": 20}])
        deadline = time.monotonic() + 5
        while trips(reader) != [1, 20] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert trips(reader) == [1, 20]
    finally:
        sa.event.remove(engine, "before_cursor_execute", seen)


def test_the_poller_stops_with_its_store(tmp_path, h):
    import gc

    from featureledger.config import load_config
    from featureledger.store import FeatureStore

    def opened():
        cfg = load_config(tmp_path, environ={}, overrides={
            "online_store": {"type": "sqlite", "path": str(tmp_path / "online.db")},
            "serving": {"poll_interval_s": 0.05}})
        s = FeatureStore(tmp_path, config=cfg)
        s.apply([h.DRIVER, h.stats_view()])
        assert trips(s) == [None, None]
        return s

    closed = opened()
    poller = closed.online.watcher._poller
    assert poller is not None and poller.is_alive()
    closed.close()
    poller.join(2)
    assert not poller.is_alive()
    dropped = opened()  # never closed: the thread must not keep polling for it
    poller = dropped.online.watcher._poller
    del dropped
    # a collection that runs while the poller holds the watcher for a check leaves the
    # watcher's own cycle (the registry's write hook) for the next one
    deadline = time.monotonic() + 5
    while poller.is_alive() and time.monotonic() < deadline:
        gc.collect()
        poller.join(0.1)
    assert not poller.is_alive()


@pytest.mark.parametrize("cache", [False, True])
def test_reads_with_a_loop_reader_are_the_full_reads(make_store, h, cache):
    """``get_online_features_nowait(..., reader=store.loop_reader())``, what the server
    answers on its event loop, reads what the full read reads (checked against the latest
    row per key computed here), and declines what needs the registry."""
    store = make_store(cache=cache, poll_interval_s=3600)
    store.apply([h.DRIVER, h.stats_view()])
    svc = store.online
    make_reader = getattr(svc.store, "loop_reader", None)
    if svc.store.kind != "sqlite":
        assert make_reader is None  # reads over a network never run on an event loop
        return
    rows = [{"driver_id": k % 9, "event_timestamp": h.ts(k % 5),
             "trips": None if k % 7 == 0 else k, "rating": k / 4,
             "city": None if k % 3 == 0 else f"c{k}"} for k in range(40)]
    h.write_commit(store, "driver_stats", rows)
    store.materialize(end=h.ts(10))
    latest: dict[int, dict] = {}
    for r in rows:  # the oracle: per key, the row with the newest event time (ties: later)
        if r["driver_id"] not in latest or \
                r["event_timestamp"] >= latest[r["driver_id"]]["event_timestamp"]:
            latest[r["driver_id"]] = r
    reader = make_reader()
    feats = ["driver_stats:trips", "driver_stats:rating", "driver_stats:city"]
    assert svc.get_online_features_nowait(feats, IDS, reader=reader) is None  # no plan yet
    store.get_online_features(feats, IDS)
    for keys in ([1], [0], [42], [3, 42, 8, 3], list(range(12))):
        entity_rows = [{"driver_id": k} for k in keys]
        for fill in (False, True):
            quick = svc.get_online_features_nowait(feats, entity_rows, reader=reader,
                                                   fill_defaults=fill)
            full = store.get_online_features(feats, entity_rows, fill_defaults=fill)
            assert quick is not None
            assert quick.to_dict(metadata=True) == full.to_dict(metadata=True)
            assert quick.to_json_dict() == full.to_json_dict()
            for name in ("trips", "rating"):
                assert quick.values[name] == [latest[k][name] if k in latest else None
                                              for k in keys]
            # a default fills a key not found, not a stored null
            assert quick.values["city"] == [
                latest[k]["city"] if k in latest else ("unknown" if fill else None)
                for k in keys]
    columns = svc.get_online_features_nowait(feats, {"driver_id": [8, 42]}, reader=reader)
    assert columns.values["rating"] == [latest[8]["rating"], None]
    if cache:  # what the loop read is cached: answered from memory alone next time
        svc.cache.invalidate_all()
        assert svc.get_online_features_nowait(feats, [{"driver_id": 5}]) is None
        svc.get_online_features_nowait(feats, [{"driver_id": 5}], reader=reader)
        again = svc.get_online_features_nowait(feats, [{"driver_id": 5}])
        assert again.values["trips"] == [latest[5]["trips"]]
    # a read of deprecated features is counted in the registry: declined
    from featureledger.errors import DeprecatedFeatureWarning

    store.deprecate("driver_stats", "replaced by driver_stats_v2")
    with pytest.warns(DeprecatedFeatureWarning):
        store.get_online_features(feats, IDS)  # the plan again, now deprecated
    assert svc.get_online_features_nowait(feats, IDS, reader=reader) is None
