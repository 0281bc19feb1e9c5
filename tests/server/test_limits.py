"""Request limits on a real socket: body size, body budget, body-read deadline, entity
rows and pushed rows; and bad input answered as typed JSON on a connection that stays
open."""

from __future__ import annotations

import time

import orjson
import pytest

from server.harness import LiveServer, http_exchange, open_served_store, post_request

ONLINE = {"features": ["driver_stats:trips"], "entities": {"driver_id": [1, 2]}}


@pytest.fixture(scope="module")
def shared_live(tmp_path_factory, write_commit):
    """One server with the default limits for the many bad-input cases."""
    store = open_served_store(tmp_path_factory.mktemp("live"), write_commit)
    live = LiveServer(store)
    yield live
    live.stop()
    store.close()


def _row(**values):
    return {"driver_id": 3, "event_timestamp": "2024-01-02T00:00:00Z", "trips": 30, **values}


def test_declared_body_over_the_limit_is_refused_before_it_is_read(live_server):
    live = live_server(server={"max_body_bytes": 64 * 1024})
    with live.connect() as sock:
        # only the headers are sent: the answer must not wait for the body
        status, headers, body = http_exchange(
            sock, post_request("/push/driver_stats", b"", length=10_000_000))
        assert status == 413 and headers["connection"] == "close"
        err = orjson.loads(body)["error"]
        assert err["code"] == "request_too_large"
        assert "10000000 bytes declared" in err["message"] and "65536" in err["message"]
        assert sock.recv(1) == b""  # closed: the rest of the body is not waited for


def test_chunked_body_is_cut_at_the_limit(live_server):
    live = live_server(server={"max_body_bytes": 64 * 1024})
    with live.connect() as sock:
        head = (b"POST /features/online HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                b"s3cret-token\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n")
        chunk = b"%x\r\n%s\r\n" % (16 * 1024, b" " * 16 * 1024)
        sock.sendall(head + chunk * 5)  # 80 KiB, no end: refused once past 64 KiB
        status, headers, body = http_exchange(sock, b"")
        assert status == 413 and headers["connection"] == "close"
        assert "more than 65536 bytes" in orjson.loads(body)["error"]["message"]


def test_half_sent_body_is_dropped_with_408(live_server):
    live = live_server(server={"body_timeout_s": 0.3})
    with live.connect() as sock:
        t0 = time.monotonic()
        status, headers, body = http_exchange(
            sock, post_request("/push/driver_stats", b'{"rows": [', length=1000))
        waited = time.monotonic() - t0
        assert status == 408 and headers["connection"] == "close"
        err = orjson.loads(body)["error"]
        assert err["code"] == "request_timeout" and "10 bytes came" in err["message"]
        assert 0.25 <= waited < 2.0
        assert sock.recv(1) == b""


def test_trickled_body_is_dropped_at_the_deadline_not_per_chunk(live_server):
    live = live_server(server={"body_timeout_s": 0.5})
    with live.connect() as sock:
        sock.sendall(post_request("/features/online", b"{", length=100))
        t0 = time.monotonic()
        status = None
        for _ in range(20):  # a byte every 0.1 s: each read is quick, the whole is not
            time.sleep(0.1)
            try:
                sock.sendall(b" ")
            except OSError:
                break
            sock.settimeout(0.01)
            try:
                status = int(sock.recv(100)[9:12])
                break
            except TimeoutError:
                continue
        assert status == 408 and time.monotonic() - t0 < 1.5


def test_request_heads_have_a_deadline_and_a_size_limit(live_server):
    live = live_server(server={"body_timeout_s": 0.3, "max_header_bytes": 4096})
    with live.connect() as idle, live.connect() as slow, live.connect() as endless:
        slow.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        endless.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        for i in range(40):  # 40 kB of headers, never ended
            endless.sendall(b"X-Pad-%d: %s\r\n" % (i, b"a" * 1000))
        t0 = time.monotonic()
        answers = {}
        for name, sock in (("idle", idle), ("slow", slow), ("endless", endless)):
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
            answers[name] = data
        assert time.monotonic() - t0 < 2.0
    for name in ("idle", "slow"):
        assert answers[name].startswith(b"HTTP/1.1 408"), answers[name]
        assert b'"request_timeout"' in answers[name]
    assert answers["endless"].startswith(b"HTTP/1.1 431"), answers["endless"]
    assert b"longer than 4096 bytes" in answers["endless"]
    # a request sent at once is not affected, nor a connection kept alive between two
    with live.connect() as sock:
        for _ in range(2):
            status, _, _ = http_exchange(sock, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert status == 200
            time.sleep(0.4)  # longer than the head deadline, shorter than keep-alive


def test_bodies_held_at_once_share_a_budget(live_server):
    live = live_server(server={"max_body_bytes": 64 * 1024, "body_budget_bytes": 96 * 1024,
                               "body_timeout_s": 5})
    with live.connect() as first, live.connect() as second:
        first.sendall(post_request("/push/driver_stats", b" " * 60_000, length=64_000))
        time.sleep(0.2)  # the first body's 60 kB are held while it waits for the rest
        status, headers, body = http_exchange(
            second, post_request("/push/driver_stats", b" " * 60_000, length=64_000))
        assert status == 503 and headers["retry-after"] == "1"
        assert orjson.loads(body)["error"]["code"] == "overloaded"
        # the budget is given back when a request ends
        first.close()
    time.sleep(0.2)
    with live.connect() as third:
        status, _, _ = http_exchange(third, post_request(
            "/features/online", orjson.dumps(ONLINE)))
        assert status == 200


def test_entity_rows_and_pushed_rows_are_limited(live_server):
    live = live_server(server={"max_entity_rows": 3, "max_push_rows": 2})
    with live.connect() as sock:
        ok = orjson.dumps({**ONLINE, "entities": {"driver_id": [1, 2, 3]}})
        assert http_exchange(sock, post_request("/features/online", ok))[0] == 200
        many = orjson.dumps({**ONLINE, "entities": {"driver_id": [1, 2, 3, 4]}})
        status, _, body = http_exchange(sock, post_request("/features/online", many))
        err = orjson.loads(body)["error"]
        assert status == 413 and err["code"] == "request_too_large"
        assert "4 entity rows" in err["message"] and "server.max_entity_rows" in err["message"]
        rows = orjson.dumps({"rows": [_row(driver_id=i) for i in range(3)]})
        status, _, body = http_exchange(sock, post_request("/push/driver_stats", rows))
        assert status == 413 and "3 rows in one push" in orjson.loads(body)["error"]["message"]


BAD_PUSHES = [
    ("not JSON", b'{"rows": [', None, 400, "invalid_json", "not valid JSON"),
    ("JSON of another type", b'[1, 2]', None, 422, "validation_failed", "JSON object"),
    ("text/plain", orjson.dumps({"rows": [_row()]}), "text/plain", 415,
     "unsupported_media_type", "'text/plain'"),
    ("form data", b"rows=1", "application/x-www-form-urlencoded", 415,
     "unsupported_media_type", "application/json"),
    ("integer beyond int64 (2**70)", b'{"rows": [{"driver_id": 3, "event_timestamp": '
     b'"2024-01-02T00:00:00Z", "trips": 1180591620717411303424}]}', None, 422,
     "validation_failed", "rows[0].trips is 1.1805916207174113e+21, outside the int64 range"),
    ("integer of uint64", b'{"rows": [{"driver_id": 3, "event_timestamp": '
     b'"2024-01-02T00:00:00Z", "trips": 18446744073709551615}]}', None, 422,
     "validation_failed", "rows[0].trips is 18446744073709551615, outside the int64 range"),
    ("mixed types across rows", orjson.dumps({"rows": [_row(), _row(driver_id=4, trips="x")]}),
     None, 422, "validation_failed", "'trips' holds a number in rows[0] and text in rows[1]"),
    ("timestamp of 10**20", b'{"rows": [{"driver_id": 3, "event_timestamp": '
     b'100000000000000000000, "trips": 1}]}', None, 422, "validation_failed",
     "rows[0].event_timestamp is the number 1e+20, not a time"),
    ("year 99999", orjson.dumps({"rows": [_row(event_timestamp="99999-01-01")]}), None, 422,
     "validation_failed", "not an ISO 8601 time in years 0001-9999"),
    ("'infinity' in a timestamp field", orjson.dumps({"rows": [_row(seen="infinity")]}), None,
     422, "validation_failed", "rows[0].seen is 'infinity'"),
    ("NaN literal", b'{"rows": [{"driver_id": NaN}]}', None, 400, "invalid_json",
     "not valid JSON"),
    ("lone surrogate", b'{"rows": [{"driver_id": 3, "x": "\\ud800"}]}', None, 400,
     "invalid_json", "surrogate"),
    ("unknown field", orjson.dumps({"rows": [_row()], "flsh": True}), None, 422,
     "validation_failed", "unknown push field(s) ['flsh']"),
    ("row that is not an object", b'{"rows": [1]}', None, 422, "validation_failed",
     "rows[0] is a number"),
    ("empty rows", b'{"rows": []}', None, 422, "validation_failed", "non-empty list"),
    ("empty body", b"", None, 400, "invalid_json", "not valid JSON"),
]


@pytest.mark.parametrize(("body", "content_type", "status", "code", "says"),
                         [c[1:] for c in BAD_PUSHES], ids=[c[0] for c in BAD_PUSHES])
def test_bad_push_is_a_typed_error_and_the_connection_stays_open(
        shared_live, body, content_type, status, code, says):
    live = shared_live
    with live.connect() as sock:
        got, headers, answer = http_exchange(sock, post_request(
            "/push/driver_stats", body, content_type=content_type or "application/json"))
        assert headers["content-type"] == "application/json"
        err = orjson.loads(answer)["error"]
        assert (got, err["code"]) == (status, code), err
        assert says in err["message"]
        assert "connection" not in headers  # kept alive: the next request is answered
        again, _, answer = http_exchange(sock, post_request(
            "/push/driver_stats", orjson.dumps({"rows": [_row()]})))
        assert again == 200, answer
    # nothing of the refused push was written: driver 3 has only the good row
    served = live.store.get_online_features(["driver_stats:trips"], {"driver_id": [3]})
    assert served.values["trips"] == [30]


BAD_READS = [
    ("not JSON", b"{not json", 400, "invalid_json"),
    ("integer beyond uint64", b'{"features": ["driver_stats:trips"], "entities": '
     b'{"driver_id": [1180591620717411303424]}}', 422, "retrieval_error"),
    ("integer of uint64", b'{"features": ["driver_stats:trips"], "entities": '
     b'{"driver_id": [18446744073709551615]}}', 422, "retrieval_error"),
    ("an object as a key", b'{"features": ["driver_stats:trips"], "entities": '
     b'{"driver_id": [{"a": 1}]}}', 422, "retrieval_error"),
    ("entities not an object", b'{"features": ["driver_stats:trips"], "entities": [1]}',
     422, "retrieval_error"),
]


@pytest.mark.parametrize(("body", "status", "code"), [c[1:] for c in BAD_READS],
                         ids=[c[0] for c in BAD_READS])
def test_bad_read_is_a_typed_error_and_the_connection_stays_open(shared_live, body, status,
                                                                 code):
    live = shared_live
    with live.connect() as sock:
        got, _, answer = http_exchange(sock, post_request("/features/online", body))
        assert (got, orjson.loads(answer)["error"]["code"]) == (status, code)
        assert http_exchange(sock, post_request("/features/online",
                                                orjson.dumps(ONLINE)))[0] == 200


def test_error_messages_are_a_bounded_excerpt(client):
    from featureledger.server.guard import MAX_MESSAGE

    huge = "x" * 1_000_000
    r = client.post("/push/driver_stats", json={"rows": [_row(trips=huge)]})
    message = r.json()["error"]["message"]
    assert r.status_code == 422 and len(r.content) < MAX_MESSAGE + 200
    assert message.startswith("push to 'driver_stats' rejected")
    assert message.endswith("schema and checks.")  # the advice is kept
    r = client.get(f"/catalog/views/{'v' * 10_000}")
    assert r.status_code == 404 and len(r.content) < MAX_MESSAGE + 200
    # whatever a message quotes, the server cuts it in the middle, keeping its end
    r = client.get(f"/{'v' * 10_000}")
    message = r.json()["error"]["message"]
    assert r.status_code == 404 and len(r.content) < MAX_MESSAGE + 200
    assert "characters cut ...]" in message and message.endswith("listed at /docs")


def test_limits_are_configured_under_server(tmp_path):
    from featureledger.config import load_config
    from featureledger.errors import ConfigError

    cfg = load_config(tmp_path, environ={"FEATURELEDGER__SERVER__MAX_ENTITY_ROWS": "50"})
    assert cfg.server.max_entity_rows == 50
    assert (cfg.server.max_body_bytes, cfg.server.request_timeout_s) == (8 * 2**20, 1.0)
    with pytest.raises(ConfigError, match=r"body_budget_bytes .* is below max_body_bytes"):
        load_config(tmp_path, environ={}, overrides={"server": {"max_body_bytes": 2**27}})
    with pytest.raises(ConfigError, match="request_timeout_s"):
        load_config(tmp_path, environ={}, overrides={"server": {"request_timeout_s": 0}})


def test_unknown_routes_and_methods_are_json(client):
    r = client.get("/nope")
    assert r.status_code == 404 and r.json()["error"] == {
        "code": "not_found", "message": "there is no /nope on this server; the API is "
        "listed at /docs"}
    r = client.delete("/features/online")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
    assert r.json()["error"]["message"] == "DELETE is not allowed on /features/online; use POST"
    r = client.post("/push/driver_stats@x", json={"rows": [_row()]})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_reference"
    r = client.post("/push/nope", json={"rows": [_row()]})
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_view"
