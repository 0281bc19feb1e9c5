"""One conformance suite for every online store backend."""

from __future__ import annotations

import socket
import time

import pytest

from featureledger.errors import BackendUnavailableError
from featureledger.online.redis import RedisOnlineStore
from featureledger.online.sqlite import SqliteOnlineStore
from featureledger.online.stores import OnlineRecord, StoredValue, TableRef

T = TableRef("stats", 1)
T2 = TableRef("stats", 2)


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def raw_store(request, tmp_path):
    if request.param == "sqlite":
        s = SqliteOnlineStore(tmp_path / "online.db")
    else:
        url, prefix = request.getfixturevalue("redis_namespace")
        s = RedisOnlineStore(url, key_prefix=prefix, timeout_s=2.0)
    yield s
    s.close()


def rec(key, ts, ct=1, cid="cmt_a", payload=b"[1]"):
    return OnlineRecord(key, ts, ct, cid, payload)


def test_write_then_read(raw_store):
    assert raw_store.write(T, [rec("1", 10, payload=b"[1,2]"), rec("2", 20)]) == 2
    out = raw_store.read([(T, ["2", "1", "3"])])
    assert out == [[StoredValue(20, 1, "cmt_a", b"[1]"), StoredValue(10, 1, "cmt_a", b"[1,2]"),
                    None]]


def test_older_event_never_overwrites_newer(raw_store):
    raw_store.write(T, [rec("1", 10, payload=b"[\"new\"]")])
    assert raw_store.write(T, [rec("1", 9, ct=99, cid="cmt_z", payload=b"[\"old\"]")]) == 0
    assert raw_store.read([(T, ["1"])])[0][0].payload == b'["new"]'
    # a newer event replaces it
    assert raw_store.write(T, [rec("1", 11, ct=0, payload=b"[\"newer\"]")]) == 1
    assert raw_store.read([(T, ["1"])])[0][0] == StoredValue(11, 0, "cmt_a", b'["newer"]')


def test_event_time_tie_goes_to_later_commit(raw_store):
    raw_store.write(T, [rec("1", 10, ct=5, cid="cmt_b", payload=b"[5]")])
    assert raw_store.write(T, [rec("1", 10, ct=4, cid="cmt_c", payload=b"[4]")]) == 0
    assert raw_store.write(T, [rec("1", 10, ct=6, cid="cmt_a", payload=b"[6]")]) == 1
    got = raw_store.read([(T, ["1"])])[0][0]
    assert (got.commit_time, got.commit_id, got.payload) == (6, "cmt_a", b"[6]")


def test_rewriting_the_same_record_is_idempotent(raw_store):
    assert raw_store.write(T, [rec("1", 10)]) == 1
    assert raw_store.write(T, [rec("1", 10)]) == 0
    assert raw_store.read([(T, ["1"])]) == [[StoredValue(10, 1, "cmt_a", b"[1]")]]


def test_force_overwrites_newer(raw_store):
    raw_store.write(T, [rec("1", 10, payload=b"[10]")])
    assert raw_store.write(T, [rec("1", 3, payload=b"[3]")], force=True) == 1
    assert raw_store.read([(T, ["1"])])[0][0].event_ts == 3


def test_tables_are_separate_and_read_together(raw_store):
    raw_store.write(T, [rec("1", 10, payload=b"[1]")])
    raw_store.write(T2, [rec("1", 20, payload=b"[2]")])
    a, b, c = raw_store.read([(T, ["1"]), (T2, ["1", "9"]), (TableRef("other", 1), ["1"])])
    assert [x.payload for x in a] == [b"[1]"]
    assert [x and x.payload for x in b] == [b"[2]", None]
    assert c == [None]


def test_keys_and_payloads_with_separators(raw_store):
    keys = ['[1,"a:b|c"]', "ünïcode key", "x|y", "*"]
    raw_store.write(T, [rec(k, i, payload=b'["a|b|c", "%d"]' % i) for i, k in enumerate(keys)])
    out = raw_store.read([(T, keys)])[0]
    assert [v.event_ts for v in out] == [0, 1, 2, 3]
    assert out[0].payload == b'["a|b|c", "0"]'


def test_many_keys_cross_batch_boundaries(raw_store):
    n = 2600
    raw_store.write(T, [rec(str(i), i, payload=b"[%d]" % i) for i in range(n)])
    keys = [str(i) for i in range(n - 1, -1, -1)] + ["missing"]
    out = raw_store.read([(T, keys)])[0]
    assert [v.event_ts for v in out[:-1]] == list(range(n - 1, -1, -1))
    assert out[-1] is None
    # a second pass with half the events older: only the newer half is written
    again = [rec(str(i), i + (1 if i % 2 else -1), payload=b"[0]") for i in range(n)]
    assert raw_store.write(T, again) == n // 2


def test_delete_keys_and_table(raw_store):
    raw_store.write(T, [rec("1", 1), rec("2", 2), rec("3", 3)])
    raw_store.write(T2, [rec("1", 1)])
    assert raw_store.delete(T, ["1", "9"]) == 1
    assert [v is None for v in raw_store.read([(T, ["1", "2"])])[0]] == [True, False]
    assert raw_store.delete(T) == 2
    assert raw_store.read([(T, ["2", "3"])]) == [[None, None]]
    assert raw_store.read([(T2, ["1"])])[0][0] is not None
    assert raw_store.delete(TableRef("never", 1)) == 0


def test_meta_and_change_token(raw_store):
    assert raw_store.get_meta("x") is None
    raw_store.set_meta("x", '{"a": 1}')
    assert raw_store.get_meta("x") == '{"a": 1}'
    before = raw_store.change_token()
    raw_store.write(T, [rec("1", 1)])
    after_write = raw_store.change_token()
    assert after_write != before
    raw_store.delete(T, ["1"])
    assert raw_store.change_token() != after_write


def test_ping(raw_store):
    raw_store.ping()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_redis_outage_is_a_clear_error_within_the_deadline():
    port = _free_port()  # nothing listens here
    store = RedisOnlineStore(f"redis://127.0.0.1:{port}/0", timeout_s=0.2, retries=2)
    deadline = (2 + 1) * 0.2 + 1.0  # attempts x timeout, plus backoff and slack
    for op in (lambda: store.read([(T, ["1"])]), lambda: store.write(T, [rec("1", 1)]),
               store.ping):
        t0 = time.monotonic()
        with pytest.raises(BackendUnavailableError) as err:
            op()
        assert time.monotonic() - t0 < deadline
        assert f"127.0.0.1:{port}" in str(err.value)
        assert "3 attempt(s)" in str(err.value)
    store.close()


def test_redis_unroutable_address_times_out_within_the_deadline():
    # a listening socket that never answers: the read timeout, not a refusal, must fire
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(16)
        port = srv.getsockname()[1]
        store = RedisOnlineStore(f"redis://127.0.0.1:{port}/0", timeout_s=0.2, retries=1)
        t0 = time.monotonic()
        with pytest.raises(BackendUnavailableError):
            store.read([(T, ["1"])])
        assert time.monotonic() - t0 < (1 + 1) * 0.2 * 2 + 1.0
        store.close()


def test_serving_reads_are_the_same_records(raw_store):
    raw_store.write(T, [rec("1", 10, ct=3, cid="cmt_b", payload=b"[1.5]"),
                        rec("2", 20, payload=b'["x|y"]')])
    keys = ["2", "9", "1", "2"]
    full = raw_store.read([(T, keys), (T2, ["1"])])
    rows = raw_store.read_rows([(T, keys), (T2, ["1"])])
    assert rows == [[(20, "cmt_a", b'["x|y"]'), None, (10, "cmt_b", b"[1.5]"),
                     (20, "cmt_a", b'["x|y"]')], [None]]
    assert rows == [[None if v is None else (v.event_ts, v.commit_id, v.payload) for v in vs]
                    for vs in full]
    assert [raw_store.read_row(T, k) for k in keys] == rows[0]
    assert raw_store.read_row(TableRef("never_written", 1), "1") is None
    many = [str(i) for i in range(1500)]  # beyond one IN list
    raw_store.write(T2, [rec(k, 5, payload=b"[%s]" % k.encode()) for k in many[::3]])
    got = raw_store.read_rows([(T2, many)])[0]
    assert [g is not None for g in got] == [i % 3 == 0 for i in range(1500)]
    assert all(g[2] == b"[%d]" % i for i, g in enumerate(got) if g is not None)
