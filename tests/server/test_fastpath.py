"""The protocol's fast route for ``POST /features/online`` answers exactly what the
normal route (uvicorn's ASGI cycle, the request guard, the app) answers.

Two servers run the same app code over the same store on real sockets, one with the
fast route and one without; every exchange is sent to both and the answers compared:
status, body and the headers a client acts on. Each test also checks that the fast
server really took the request on its fast route.
"""

from __future__ import annotations

import socket
import time
from typing import Any

import orjson
import pytest

from server.harness import TOKEN, LiveServer, http_exchange, open_served_store, post_request

PATH = "/features/online"
COMPARED = ("content-type", "content-length", "connection", "retry-after", "www-authenticate",
            "server")


class Served(LiveServer):
    """A served store, with or without the fast route; counts what the fast route
    answers (it must take every plain request)."""

    def __init__(self, store: Any, *, fast: bool) -> None:
        super().__init__(store, fast_route=fast)
        self.fast_taken = 0
        if fast:
            cls = self.server.config.http_protocol_class
            assert cls.__name__ == "FastRouteProtocol"
            respond = cls._fr_respond

            def counted(proto: Any, *args: Any) -> None:
                self.fast_taken += 1
                respond(proto, *args)

            cls._fr_respond = counted


def _pair(tmp_path: Any, write_commit: Any, **server: Any) -> Any:
    store = open_served_store(tmp_path, write_commit, server=server or None)
    return store, Served(store, fast=True), Served(store, fast=False)


@pytest.fixture
def pair(tmp_path, write_commit):
    store, fast, normal = _pair(tmp_path, write_commit)
    yield fast, normal
    fast.stop()
    normal.stop()
    store.close()


def exchange(served: Served, raw: bytes) -> tuple[int, dict[str, str], Any]:
    with served.connect() as sock:
        status, headers, body = http_exchange(sock, raw)
    return status, {k: headers[k] for k in COMPARED if k in headers}, orjson.loads(body)


def both(pair: tuple[Served, Served], raw: bytes) -> tuple[int, dict[str, str], Any]:
    fast, normal = pair
    taken = fast.fast_taken
    got, want = exchange(fast, raw), exchange(normal, raw)
    assert got == want
    assert fast.fast_taken == taken + 1, "the fast route did not take the request"
    return got


def read_answers(sock: socket.socket, n: int) -> list[tuple[int, bytes]]:
    """``n`` answers read off ``sock`` in order: (status, body) each."""
    buf, out = b"", []
    while len(out) < n:
        head_end = buf.find(b"\r\n\r\n")
        if head_end >= 0:
            head = buf[:head_end].decode("latin-1").lower()
            length = int(head.partition("content-length:")[2].split("\r\n")[0])
            end = head_end + 4 + length
            if len(buf) >= end:
                out.append((int(head.split()[1]), buf[head_end + 4:end]))
                buf = buf[end:]
                continue
        chunk = sock.recv(65536)
        assert chunk, f"the connection closed after {len(out)} answer(s)"
        buf += chunk
    return out


def body(doc: Any) -> bytes:
    return orjson.dumps(doc)


def test_values_statuses_and_provenance_are_the_same(pair):
    cases = [
        {"features": ["driver_stats:trips", "driver_stats:rating", "driver_stats:seen"],
         "entities": {"driver_id": [1]}},
        {"features": ["driver_stats:trips", "driver_stats:rating"],
         "entities": {"driver_id": [2, 1, 99]}},  # NULL, PRESENT, NOT_FOUND
        {"feature_set": "ranker", "entities": {"driver_id": [2]}, "full_feature_names": True},
        {"features": ["driver_stats:trips"], "entities": {"driver_id": [99]},
         "fill_defaults": True},
    ]
    for doc in cases:
        status, headers, answer = both(pair, post_request(PATH, body(doc)))
        assert status == 200 and headers["content-type"] == "application/json"
        assert answer["features"], answer
    # what the SDK says, in the answer of both
    _s, _h, answer = both(pair, post_request(PATH, body(cases[1])))
    by_name = {f["name"]: f for f in answer["features"]}
    assert by_name["trips"]["values"] == [20, 10, None]
    assert by_name["rating"]["statuses"] == ["NULL", "PRESENT", "NOT_FOUND"]
    assert by_name["trips"]["commits"][0].startswith("cmt_")
    assert by_name["trips"]["commits"][2] is None


def test_typed_errors_are_the_same(pair):
    cases = {
        b"{not json": 400,
        body({"features": ["nope:x"], "entities": {"driver_id": [1]}}): 404,
        b'{"features": ["driver_stats:trips"], "entities": {"driver_id": [1e30]}}': 422,
        body({"features": ["driver_stats:trips"], "entities": {"driver_id": [1]},
              "extra": 1}): 422,
        body({"features": ["driver_stats:trips"]}): 422,
        body([1, 2]): 422,
    }
    for raw, expected in cases.items():
        status, _headers, answer = both(pair, post_request(PATH, raw))
        assert status == expected, (raw, answer)
        assert set(answer) == {"error"} and answer["error"]["message"]
    status, _h, answer = both(pair, post_request(PATH, body(
        {"features": ["driver_stats:trips"], "entities": {"driver_id": [1]}}),
        content_type="text/plain"))
    assert status == 415 and answer["error"]["code"] == "unsupported_media_type"


def test_too_many_rows_is_the_same_413(tmp_path, write_commit):
    store, fast, normal = _pair(tmp_path, write_commit, max_entity_rows=2)
    try:
        status, _h, answer = both((fast, normal), post_request(PATH, body(
            {"features": ["driver_stats:trips"], "entities": {"driver_id": [1, 2, 3]}})))
        assert status == 413 and "server.max_entity_rows" in answer["error"]["message"]
    finally:
        fast.stop()
        normal.stop()
        store.close()


def test_auth_failures_are_the_same(pair):
    fast, normal = pair
    doc = body({"features": ["driver_stats:trips"], "entities": {"driver_id": [1]}})
    for raw in (post_request(PATH, doc, token="wrong"),
                post_request(PATH, doc).replace(f"Authorization: Bearer {TOKEN}\r\n".encode(),
                                                b"")):
        got, want = exchange(fast, raw), exchange(normal, raw)
        assert got == want
        assert got[0] == 401 and got[1]["www-authenticate"] == "Bearer"
    # and a request with a good token on the fast server is taken by the fast route
    both(pair, post_request(PATH, doc))


def test_overload_is_the_same_503(pair):
    doc = body({"features": ["driver_stats:trips"], "entities": {"driver_id": [1]}})
    for served in pair:  # every read worker busy and no waiting place: shed at once
        reads = served.app.state.serving.reads
        reads.queue_size = 0
        reads.busy = reads.workers
    try:
        status, headers, answer = both(pair, post_request(PATH, doc))
    finally:
        for served in pair:
            served.app.state.serving.reads.busy = 0
    assert status == 503 and headers["retry-after"] == "1"
    assert answer["error"]["code"] == "overloaded"


def test_connection_close_pipelining_and_metrics(pair):
    doc = body({"features": ["driver_stats:trips"], "entities": {"driver_id": [1]}})
    # two requests in one write: two answers, in order, on the same connection
    first = post_request(PATH, doc)
    second = post_request(PATH, body({"features": ["driver_stats:trips"],
                                      "entities": {"driver_id": [2]}}))
    answers = []
    for served in pair:
        with served.connect() as sock:
            sock.sendall(first + second)
            answers.append([(s, orjson.loads(b)["features"][0]["values"])
                            for s, b in read_answers(sock, 2)])
    assert answers[0] == answers[1] == [(200, [10]), (200, [20])]
    # the client asks to close: the answer says so and the connection ends
    raw = post_request(PATH, doc).replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1)
    for served in pair:
        with served.connect() as sock:
            status, headers, _b = http_exchange(sock, raw)
            assert status == 200 and headers["connection"] == "close"
            assert sock.recv(1) == b""
    # the fast route's requests are in the same metrics as the normal route's
    for served in pair:
        metrics = served.app.state.metrics
        assert metrics.requests.labels(PATH, "POST", "200")._value.get() >= 3


def test_half_sent_body_is_the_same_408(tmp_path, write_commit):
    store, fast, normal = _pair(tmp_path, write_commit, body_timeout_s=0.3)
    try:
        raw = post_request(PATH, b'{"features": [', length=100)
        answers = []
        for served in (fast, normal):
            with served.connect() as sock:
                t0 = time.monotonic()
                status, headers, answer = http_exchange(sock, raw)
                waited = time.monotonic() - t0
                assert sock.recv(1) == b""  # closed
            answers.append((status, headers["connection"], orjson.loads(answer)))
            assert 0.25 < waited < 5
        assert answers[0] == answers[1]
        assert answers[0][0] == 408 and answers[0][1] == "close"
        assert fast.app.state.serving.guard.budget.used == 0  # the held bytes released
    finally:
        fast.stop()
        normal.stop()
        store.close()
