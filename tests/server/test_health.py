"""Health endpoints answer from background checks: the documented shape, liveness and
readiness, a hanging probe reported without waiting for it, and a probe that closes an
open breaker."""

from __future__ import annotations

import threading
import time

from featureledger.server.admission import CircuitBreaker
from featureledger.server.health import HealthMonitor
from server.harness import TOKEN, open_served_store


def test_health_keeps_its_documented_shape(client):
    r = client.get("/health", headers={"Authorization": ""})
    assert r.status_code == 200
    doc = r.json()
    assert doc["status"] == "ok"
    for name in ("registry", "online_store", "offline_store"):
        check = doc["checks"][name]
        assert check["ok"] is True and check["ms"] >= 0 and check["age_s"] >= 0
    assert doc["checks"]["online_store"]["breaker"] == "closed"
    assert doc["checks"]["registry"]["breaker"] == "closed"
    assert doc["checks"]["cache"]["entries"] >= 0
    assert doc["checks"]["pending_push_rows"] == 0
    assert doc["checks"]["push"]["log_segments"] == 0
    assert doc["checks"]["generation"] is not None


def test_liveness_and_readiness(client):
    live = client.get("/health/live", headers={"Authorization": ""})
    assert live.status_code == 200 and live.json() == {"status": "alive"}
    ready = client.get("/health/ready", headers={"Authorization": ""})
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    assert set(ready.json()["backends"]) == {"registry", "online_store", "offline_store"}


def test_an_open_breaker_makes_the_server_not_ready_until_a_probe_closes_it(tmp_path,
                                                                          write_commit):
    from fastapi.testclient import TestClient

    from featureledger.server.app import create_app

    # probes only when asked, so that nothing closes the breaker before the checks
    store = open_served_store(tmp_path, write_commit, server={"health_interval_s": 3600})
    with TestClient(create_app(store)) as client:
        client.headers["Authorization"] = f"Bearer {TOKEN}"
        serving = client.app.state.serving
        breaker = serving.online_store
        for _ in range(breaker.failures):
            breaker.failure("connection refused")
        ready = client.get("/health/ready")
        assert ready.status_code == 503 and ready.json()["status"] == "not_ready"
        backend = ready.json()["backends"]["online_store"]
        assert backend["breaker"] == "open" and "connection refused" in backend["error"]
        assert client.get("/health").json()["status"] == "degraded"
        # reads that need the store are refused at once, naming it
        r = client.post("/features/online", json={"features": ["driver_stats:trips"],
                                                  "entities": {"driver_id": [1]}})
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert r.json()["error"]["code"] == "circuit_open"
        assert r.json()["error"]["message"].startswith("the online store (sqlite at ")
        # the store answers: the next probe closes the breaker
        serving.monitor.check_now()
        deadline = time.monotonic() + 5
        while client.get("/health/ready").status_code != 200:
            assert time.monotonic() < deadline, client.get("/health/ready").json()
            time.sleep(0.02)
        assert breaker.state == "closed"
        r = client.post("/features/online", json={"features": ["driver_stats:trips"],
                                                  "entities": {"driver_id": [1]}})
        assert r.status_code == 200 and r.json()["features"][0]["values"] == [10]
    store.close()


def test_a_hanging_probe_is_reported_without_waiting_for_it():
    hang = threading.Event()
    breakers = {"registry": CircuitBreaker("registry", "the registry", failures=2,
                                           reset_s=5)}
    monitor = HealthMonitor({"registry": lambda: hang.wait(30), "online_store": lambda: None},
                            breakers, interval_s=0.05, timeout_s=0.2)
    monitor.start()
    try:
        assert monitor.wait_first(0.3) is False  # the registry never answers
        time.sleep(0.5)
        t0 = time.perf_counter()
        snap = monitor.snapshot()
        took = time.perf_counter() - t0
        assert took < 0.1  # the probe hangs for 30 s: reading its state never waits
        assert snap["online_store"] == {"ok": True, "ms": snap["online_store"]["ms"],
                                        "age_s": snap["online_store"]["age_s"]}
        assert snap["registry"]["ok"] is False
        assert "no answer to the health probe for" in snap["registry"]["error"]
        # its silence counts as failures, tick after tick: the breaker opened
        assert breakers["registry"].state == "open"
        assert snap["registry"]["breaker"] == "open"
        hang.set()  # it answers again: the next probe closes the breaker
        deadline = time.monotonic() + 2
        while monitor.snapshot()["registry"]["ok"] is not True:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert breakers["registry"].state == "closed"
    finally:
        hang.set()
        monitor.close()
