"""Small online reads answered on the event loop (``server/inline.py``): the answers are
the read pool's, and the pool reads whenever the loop might wait.

Each exchange goes to a server that reads on its loop and to one whose reads all go to
the pool (the same app code with the loop reader taken away), over the same store on
real sockets, and the answers are compared; the gate's counters say which way each read
went.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest

from featureledger.online.sqlite import SqliteLoopReader
from featureledger.server.admission import CircuitBreaker
from featureledger.server.inline import InlineReads
from server.harness import open_served_store, post_request
from server.test_fastpath import Served, exchange

PATH = "/features/online"
# the change check due every minute, not on every read: reads can be answered on the loop
SERVING = {"cache": False, "poll_interval_s": 60}


def read(keys: list[Any], **extra: Any) -> bytes:
    doc = {"features": ["driver_stats:trips", "driver_stats:rating", "driver_stats:seen"],
           "entities": {"driver_id": keys}, **extra}
    return post_request(PATH, orjson.dumps(doc))


@pytest.fixture(params=[False, True], ids=["cache_off", "cache_on"])
def pair(request, tmp_path, write_commit):
    store = open_served_store(tmp_path, write_commit,
                              serving={**SERVING, "cache": request.param})
    loop, pool = Served(store, fast=True), Served(store, fast=True)
    pool.app.online_path.inline = None  # every read on the read pool
    yield loop, pool
    loop.stop()
    pool.stop()
    store.close()


def gate(served: Served) -> InlineReads:
    inline = served.app.state.serving.inline
    assert isinstance(inline, InlineReads)
    return inline


def test_small_reads_are_answered_on_the_loop_as_the_pool_answers(pair):
    loop, pool = pair
    inline = gate(loop)
    cases = [read([1]), read([2]), read([99]), read([2, 1, 99]), read([1], fill_defaults=True),
             read([99], fill_defaults=True), read([1, 2], full_feature_names=True),
             post_request(PATH, orjson.dumps({"feature_set": "ranker",
                                              "entities": {"driver_id": [2]}}))]
    for raw in cases:  # the first read of a plan builds it (and checks access) on the pool
        exchange(pool, raw)
    before = inline.answered
    for raw in cases:
        got, want = exchange(loop, raw), exchange(pool, raw)
        assert got == want
        assert want[0] == 200
    assert inline.answered - before == len(cases)
    assert inline.pauses == 0
    # what the SDK says, read on the loop
    _s, _h, answer = exchange(loop, read([2, 1, 99]))
    by_name = {f["name"]: f for f in answer["features"]}
    assert by_name["trips"]["values"] == [20, 10, None]
    assert by_name["rating"]["statuses"] == ["NULL", "PRESENT", "NOT_FOUND"]
    assert by_name["trips"]["commits"][0].startswith("cmt_")
    metrics = loop.app.state.metrics.registry
    assert metrics.get_sample_value("featureledger_inline_reads_total") == inline.answered


def test_large_reads_and_deployments_go_to_the_pool(pair):
    loop, pool = pair
    inline = gate(loop)
    keys = [1, 2, *range(100, 100 + InlineReads.MAX_KEYS)]  # one more than the loop takes
    for _ in range(2):
        got, want = exchange(loop, read(keys)), exchange(pool, read(keys))
        assert got == want and got[0] == 200
        assert got[2]["features"][0]["values"][:3] == [10, 20, None]
    assert inline.answered == 0 and inline.declined == 2


def test_a_store_failing_on_the_loop_is_read_on_the_pool(pair, monkeypatch):
    loop, pool = pair
    inline = gate(loop)
    raw = read([1])
    want = exchange(pool, raw)  # the plan is built (one service behind both servers)
    assert exchange(loop, raw) == want and inline.answered == 1
    # the loop's own connection breaks: that read is answered by the pool, unchanged,
    # and the next reads go to the pool without trying the loop again
    inline._reader._conn.close()  # type: ignore[attr-defined]
    if loop.store.online.cache is not None:
        loop.store.online.cache.invalidate_all()  # so the read needs the store
    for _ in range(3):
        assert exchange(loop, raw) == want
    assert inline.pauses == 1 and inline.answered == 1 and inline.declined == 2
    breaker = loop.app.state.serving.online_store
    assert breaker.state == "closed" and breaker.consecutive == 0  # the pool's read worked


def test_the_gate_declines_whenever_the_loop_might_wait(tmp_path):
    from featureledger.online.sqlite import SqliteOnlineStore

    store = SqliteOnlineStore(tmp_path / "online.db")
    reader = store.loop_reader()
    assert isinstance(reader, SqliteLoopReader)
    now = [100.0]
    probing = [0.0]
    breaker = CircuitBreaker("online_store", "the online store", failures=2, reset_s=30,
                             clock=lambda: now[0])
    g = InlineReads(reader, breaker, lambda: probing[0], clock=lambda: now[0])
    one = {"driver_id": [1]}
    assert g.reader(one) is reader
    assert g.reader({"driver_id": list(range(InlineReads.MAX_KEYS))}) is reader
    assert g.reader({"driver_id": list(range(InlineReads.MAX_KEYS + 1))}) is None
    g.took(InlineReads.BUDGET_S / 10, g.waits())  # a usual read: nothing changes
    assert g.reader(one) is reader and not g.paused
    # slow, but this thread never blocked (the process was preempted): nothing changes
    g.took(InlineReads.BUDGET_S * 2, g.waits())
    assert g.reader(one) is reader and not g.paused
    before = g.waits()
    time.sleep(0.001)  # blocks: a voluntary context switch, as a read from a slow disk
    g.took(InlineReads.BUDGET_S * 2, before)  # slow because it waited: the pool for PAUSE_S
    assert g.paused and g.reader(one) is None and g.pauses == 1
    now[0] += InlineReads.PAUSE_S - 0.01
    assert g.reader(one) is None
    now[0] += 0.02
    assert g.reader(one) is reader
    probing[0] = InlineReads.BUDGET_S * 2  # a health probe of the store has not come back
    assert g.reader(one) is None
    probing[0] = 0.0
    breaker.failure("refused")
    breaker.failure("refused")  # open
    assert g.reader(one) is None
    breaker.success()
    assert g.reader(one) is reader
    assert g.answered == 3 and g.declined == 5
    store.close()


def test_the_loop_reader_never_waits_for_a_lock(tmp_path):
    """The loop's reader has a connection of its own without a busy timeout (a locked
    file is an error at once), where the store's connections wait; it reads the same."""
    from featureledger.online.sqlite import SqliteOnlineStore
    from featureledger.online.stores import OnlineRecord, TableRef

    store = SqliteOnlineStore(tmp_path / "online.db", busy_timeout_s=30)
    t = TableRef("stats", 1)
    store.write(t, [OnlineRecord("1", 10, 5, "cmt_a", b"[1]")])
    reader = store.loop_reader()
    assert reader._conn.execute("PRAGMA busy_timeout").fetchone() == (0,)
    assert store._conn().execute("PRAGMA busy_timeout").fetchone() == (30000,)
    assert reader.read_row(t, "1") == store.read_row(t, "1") == (10, "cmt_a", b"[1]")
    assert reader.read_rows([(t, ["2", "1"]), (TableRef("none", 1), ["1"])]) == \
        store.read_rows([(t, ["2", "1"]), (TableRef("none", 1), ["1"])]) == \
        [[None, (10, "cmt_a", b"[1]")], [None]]
    store.close()  # closes the reader's connection too
    with pytest.raises(Exception, match="closed"):
        reader.read_row(t, "1")


@pytest.mark.filterwarnings("ignore::featureledger.errors.DeprecatedFeatureWarning")
def test_deprecated_reads_are_each_counted(tmp_path, write_commit):
    """A read of deprecated features is counted in the registry: never answered on the
    loop, however often the plan was read."""
    store = open_served_store(tmp_path, write_commit, serving=SERVING)
    loop = Served(store, fast=True)
    try:
        assert exchange(loop, read([1]))[0] == 200
        assert exchange(loop, read([1]))[0] == 200 and gate(loop).answered == 1
        store.deprecate("driver_stats", "replaced by driver_stats_v2")
        for _ in range(3):
            assert exchange(loop, read([1]))[0] == 200
        assert gate(loop).answered == 1
        assert store.governance_report().deprecated_reads == 3 * 3  # 3 reads, 3 features
    finally:
        loop.stop()
        store.close()
