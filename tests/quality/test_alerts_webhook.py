"""Alert notifications through a webhook, against real HTTP receivers on 127.0.0.1: one
that fails twice before accepting, one that never answers, one that refuses the payload.
Ingestion never waits for a delivery."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

N = 400


class _Receiver(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, fail_first: int, status: int = 500) -> None:
        self.fail_first = fail_first
        self.status = status
        self.bodies: list[dict[str, Any]] = []
        self.calls = 0
        self.times: list[float] = []
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        srv = self.server
        srv.calls += 1
        srv.times.append(time.monotonic())
        if srv.calls <= srv.fail_first:
            self.send_response(srv.status)
            self.end_headers()
            return
        srv.bodies.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver(request) -> Iterator[_Receiver]:
    fail_first, status = request.param
    srv = _Receiver(fail_first, status)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def silent() -> Iterator[str]:
    """A listening socket that accepts connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        sock.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
                held.append(conn)  # read nothing, answer nothing
            except TimeoutError:
                continue
            except OSError:
                return

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/hook"
    stop.set()
    t.join(1)
    for c in held:
        c.close()
    sock.close()


def _drift(store, h) -> Any:
    store.set_quality_policy("stats", {"on_drift": "alert"})
    store.ingest("stats", h.batch(1, hours=1, n=N))
    return store.ingest("stats", h.batch(2, hours=2, n=N, shift=3.0))


@pytest.mark.parametrize("receiver", [(2, 500)], indirect=True)
def test_a_receiver_that_fails_twice_gets_the_alert_on_the_third_attempt(make_store, h,
                                                                          receiver):
    url = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
    store = make_store(quality={"webhook": {"url": url, "retries": 3, "backoff_s": 0.1,
                                            "timeout_s": 2.0, "deadline_s": 20.0}})
    r = _drift(store, h)
    notifier = store.alerting.webhook
    assert notifier.wait(20)
    assert receiver.calls == 3 and notifier.stats.delivered == 1
    assert notifier.stats.failed == 0 and notifier.stats.attempts == 3
    (body,) = receiver.bodies
    (alert,) = store.alerts()
    assert body["alert_id"] == alert.alert_id and body["rule"] == "drift"
    assert body["lineage_node"] == r.commit_id and body["severity"] == "warning"
    assert body["evidence"]["features"][0]["feature"] == "x"
    # exponential backoff: the second wait is about twice the first
    gaps = [b - a for a, b in zip(receiver.times, receiver.times[1:], strict=False)]
    assert gaps[0] >= 0.1 and gaps[1] >= 0.2


@pytest.mark.parametrize("receiver", [(100, 400)], indirect=True)
def test_a_refused_payload_is_not_retried(make_store, h, receiver):
    url = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
    store = make_store(quality={"webhook": {"url": url, "retries": 3, "backoff_s": 0.05}})
    _drift(store, h)
    notifier = store.alerting.webhook
    assert notifier.wait(20)
    assert receiver.calls == 1 and notifier.stats.failed == 1
    assert notifier.stats.last_error == "HTTP 400"


def test_a_receiver_that_never_answers_is_given_up_and_never_holds_ingestion(make_store, h,
                                                                              silent):
    store = make_store(quality={"webhook": {"url": silent, "retries": 2, "backoff_s": 0.05,
                                            "timeout_s": 1.0, "deadline_s": 10.0}})
    notifier = store.alerting.webhook
    _drift(store, h)
    # the ingestion returned while the delivery is still trying
    assert notifier.stats.delivered == 0 and notifier.stats.failed == 0
    started = time.monotonic()
    assert notifier.wait(20)
    assert notifier.stats.failed == 1 and notifier.stats.attempts == 3
    assert "timed out" in (notifier.stats.last_error or "")
    assert time.monotonic() - started <= 10.0
    # the alert record is there whatever the webhook did
    assert [a.rule for a in store.alerts()] == ["drift"]


def test_a_webhook_url_must_be_http(make_store):
    from featureledger.errors import ConfigError

    with pytest.raises((ConfigError, ValueError), match="http"):
        make_store(quality={"webhook": {"url": "ftp://example.org"}})
