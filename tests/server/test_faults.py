"""The fault suite: a real ``featureledger serve`` under load while its backends fail, and
fed inputs far over its limits.

* Redis killed, then restarted, then stopped (SIGSTOP) and continued, under ~100 requests/s
  from an open-loop client: during each outage every answer comes within the documented
  bound (``server.request_timeout_s``, 1 s by default) and no request waits in a queue
  beyond it; from one second after Redis is back, every request succeeds at about the
  baseline latency.
* A registry partition (PostgreSQL through a proxy that stops forwarding): the health
  endpoints keep answering within 100 ms and say the registry is down; reads whose plans
  are built keep being served.
* A 100 MB body (declared, and chunked), four at once, 200 half-sent bodies, 200 requests
  whose headers never end, 1.3M keys in one request: each refused with its status, the
  connections closed, and the server's resident memory bounded.

The figures are printed (``pytest -s``) and recorded as test properties.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml

from featureledger import Entity, FeatureStore, FeatureView, Field
from server.harness import (
    Load,
    RedisProcess,
    ServeProcess,
    TcpProxy,
    quantile,
    summary,
)

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
BOUND_S = 1.0  # server.request_timeout_s, left at its default
# what an answer may take beyond the bound on this (shared, 2-core) machine: the client's
# own event loop and the scheduler, not the server's queueing
SLACK_S = 0.25
OUTAGE_CODES = {"backend_unavailable", "circuit_open", "deadline_exceeded", "overloaded"}
KEYS = 1000
BODY = {"features": ["stats:trips", "stats:rating"], "entities": {"driver_id": [1, 2, 3]}}


def _repo(tmp_path: Path, write_commit: Any, *, online_store: dict[str, Any],
          server: dict[str, Any] | None = None, registry: str | None = None) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    config: dict[str, Any] = {"project": "faults", "online_store": online_store,
                              "server": server or {}}
    if registry is not None:
        config["registry"] = registry
    (root / "featureledger.yaml").write_text(yaml.safe_dump(config))
    driver = Entity(name="driver", join_keys={"driver_id": "int64"})
    with FeatureStore(root) as store:
        store.apply([driver, FeatureView(name="stats", entities=[driver], fields=[
            Field(name="trips", dtype="int64"), Field(name="rating", dtype="float64")])])
        write_commit(store, "stats", {
            "driver_id": list(range(KEYS)), "event_timestamp": [T0] * KEYS,
            "trips": list(range(KEYS)), "rating": [float(i) / 10 for i in range(KEYS)]})
        store.materialize(end=T0 + dt.timedelta(hours=1))
    return root


def _report(record_property: Any, name: str, figures: dict[str, Any]) -> None:
    print(f"\n{name}: {figures}")
    record_property(name, figures)


def _check_outage(window: list[Any], what: str) -> None:
    assert window, f"no request was due during the {what}"
    for s in window:
        assert s.status in (200, 503), (what, s)
        assert s.status == 200 or s.code in OUTAGE_CODES, (what, s)
    latencies = [s.latency for s in window]
    assert quantile(latencies, 0.99) <= BOUND_S, (what, summary(window))
    # no request waited beyond the bound: not in a queue, not on a backend
    assert max(latencies) <= BOUND_S + SLACK_S, (what, summary(window))
    assert any(s.status == 503 for s in window), f"the {what} was not noticed"


def _check_recovered(window: list[Any], baseline_p50: float, what: str) -> None:
    assert window, f"no request was due after the {what}"
    assert all(s.status == 200 for s in window), (what, summary(window))
    p50 = quantile([s.latency for s in window], 0.5)
    assert p50 <= max(3 * baseline_p50, baseline_p50 + 0.02), (what, p50, baseline_p50)


def test_redis_killed_and_stopped_under_load(tmp_path, write_commit, record_property):
    redis = RedisProcess()
    server = None
    try:
        root = _repo(tmp_path, write_commit, online_store={
            "type": "redis", "url": redis.url, "timeout_s": 0.5, "retries": 2})
        server = ServeProcess(root)
        load = Load(server.url, BODY, rate=100)
        marks: dict[str, float] = {}

        def at(name: str, fn: Any) -> Any:
            def run() -> None:
                marks[name] = time.monotonic() - load.started
                fn()
                marks[name + "_done"] = time.monotonic() - load.started
            return run

        asyncio.run(load.run(16.0, [
            (3.0, at("killed", redis.kill)), (6.0, at("restarted", redis.start)),
            (10.0, at("stopped", redis.pause)), (13.0, at("continued", redis.resume))]))
        # a request due just before a fault may be caught by it: windows of normal service
        # end the bound before the next fault; Redis is back once it answers again
        settle = BOUND_S + SLACK_S
        baseline = load.window(0.5, marks["killed"] - settle)
        killed = load.window(marks["killed"], marks["restarted_done"])
        after_kill = load.window(marks["restarted_done"] + 1.0, marks["stopped"] - settle)
        stopped = load.window(marks["stopped"], marks["continued_done"])
        after_stop = load.window(marks["continued_done"] + 1.0, 16.0)
        first_ok = {
            what: round(min((s.scheduled for s in load.window(t, t + 3) if s.status == 200),
                            default=float("inf")) - t, 3)
            for what, t in (("restarted", marks["restarted_done"]),
                            ("continued", marks["continued_done"]))}
        figures = {"baseline": summary(baseline), "killed": summary(killed),
                   "after_restart": summary(after_kill), "stopped": summary(stopped),
                   "after_continue": summary(after_stop),
                   "first_200_after_s": first_ok, "marks_s": marks,
                   "connections": load.connections}
        _report(record_property, "redis_outage", figures)

        assert all(s.status == 200 for s in baseline), summary(baseline)
        base_p50 = quantile([s.latency for s in baseline], 0.5)
        _check_outage(killed, "Redis kill")
        _check_outage(stopped, "Redis stop")
        _check_recovered(after_kill, base_p50, "Redis restart")
        _check_recovered(after_stop, base_p50, "Redis continue")
        assert max(first_ok.values()) <= 1.0, first_ok
        metrics = httpx.get(f"{server.url}/metrics", timeout=5).text
        assert 'featureledger_breaker_opened_total{backend="online_store"}' in metrics
        opened = [ln for ln in metrics.splitlines()
                  if ln.startswith('featureledger_breaker_opened_total{backend="online_store"}')]
        assert float(opened[0].split()[-1]) >= 2  # once per outage at least
    finally:
        if server is not None:
            code, _out, err = server.stop()
            assert code == 0, err
        redis.close()


def test_registry_partition_keeps_health_fast(tmp_path, write_commit, pg_url,
                                              record_property):
    proxy = TcpProxy(("127.0.0.1", 5432))
    server = None
    try:
        url = pg_url.replace("@127.0.0.1:5432/", f"@127.0.0.1:{proxy.port}/")
        assert url != pg_url
        root = _repo(tmp_path, write_commit, online_store={"type": "sqlite"}, registry=url)
        server = ServeProcess(root)
        assert httpx.post(f"{server.url}/features/online", json=BODY,
                          timeout=5).status_code == 200  # its plan is built now
        assert httpx.get(f"{server.url}/health", timeout=5).json()["status"] == "ok"
        proxy.partition()
        t_cut = time.monotonic()
        health: list[tuple[float, float, str, int]] = []  # (since cut, latency, path, status)
        reads: list[int] = []
        catalog: list[tuple[float, int, str]] = []
        with httpx.Client(base_url=server.url, timeout=10) as client:
            while time.monotonic() - t_cut < 4.0:
                for path in ("/health", "/health/ready", "/health/live"):
                    t = time.perf_counter()
                    r = client.get(path)
                    health.append((time.monotonic() - t_cut, time.perf_counter() - t, path,
                                   r.status_code))
                reads.append(client.post("/features/online", json=BODY).status_code)
                t = time.perf_counter()
                r = client.get("/catalog/views")
                catalog.append((time.perf_counter() - t, r.status_code,
                                r.json().get("error", {}).get("code", "")
                                if r.status_code != 200 else ""))
                time.sleep(0.05)
            last = client.get("/health").json()
            proxy.heal()
            t_heal = time.monotonic()
            while client.get("/health").status_code != 200:
                assert time.monotonic() - t_heal < 10, client.get("/health").json()
                time.sleep(0.05)
            healed_after = time.monotonic() - t_heal
            assert client.get("/catalog/views").status_code == 200
            metrics = client.get("/metrics").text
        on_loop = next(float(line.split()[-1]) for line in metrics.splitlines()
                       if line.startswith("featureledger_inline_reads_total "))
        latencies = [lat for _, lat, _, _ in health]
        figures = {
            "health_requests": len(health),
            "health_p50_ms": round(quantile(latencies, 0.5) * 1000, 2),
            "health_max_ms": round(max(latencies) * 1000, 2),
            "health_503_from_s": round(min((t for t, _, p, st in health
                                            if p == "/health" and st == 503),
                                           default=float("nan")), 2),
            "reads": {str(st): reads.count(st) for st in set(reads)},
            "catalog_max_ms": round(max(lat for lat, _, _ in catalog) * 1000, 1),
            "catalog": sorted({f"{st} {code}".strip() for _, st, code in catalog}),
            "healthy_again_after_heal_s": round(healed_after, 2),
            "reads_on_the_event_loop": on_loop}
        _report(record_property, "registry_partition", figures)

        # health answers from the background checks' results, never from the hung probe:
        # had it waited for the registry, every request after the cut would take the
        # probe's bound. One stall is tolerated: on a loaded 2-core CI machine the
        # scheduler once held one request back 1.2 s while the median stayed at 2 ms.
        slow = [round(lat, 3) for lat in latencies if lat >= 0.1]
        assert len(slow) <= 1 and quantile(latencies, 0.9) < 0.05, (slow, figures)
        assert all(st == 200 for _, _, p, st in health if p == "/health/live")
        # the registry's probe hangs: after the bound it is reported down, and stays so
        assert last["status"] == "degraded" and last["checks"]["registry"]["ok"] is False
        assert last["checks"]["online_store"]["ok"] is True
        late = [st for t, _, p, st in health if p == "/health/ready" and t > BOUND_S + 0.6]
        assert late and set(late) == {503}
        # reads whose plans are built need no registry: they keep being served, on the
        # event loop (SQLite, server/inline.py), which never touches the registry
        assert set(reads) == {200}, reads
        assert on_loop > 0, figures
        # catalog reads need it: refused within the bound, by the deadline or the breaker
        assert all(lat <= BOUND_S + SLACK_S for lat, _, _ in catalog), catalog
        assert {code for _, st, code in catalog if st != 200} <= {
            "deadline_exceeded", "circuit_open", "overloaded"}
    finally:
        proxy.heal()
        if server is not None:
            code, _out, err = server.stop()
            assert code == 0, err
        proxy.close()


def _half_sent(port: int, n: int) -> list[socket.socket]:
    """``n`` connections that each send a push's headers and the first bytes of its body."""
    socks = []
    head = (b"POST /push/stats HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
            b"\r\nContent-Length: 100000\r\n\r\n")
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(head + b'{"rows": [{"driver_id": 1, ')
        socks.append(s)
    return socks


def _answer_then_eof(s: socket.socket) -> bytes:
    """What the server sends until it closes the connection."""
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return data
        data += chunk


def test_oversized_inputs_are_refused_in_bounded_time_and_memory(tmp_path, write_commit,
                                                                  record_property):
    limits = {"max_body_bytes": 32 * 2**20, "body_budget_bytes": 64 * 2**20,
              "body_timeout_s": 2.0, "max_entity_rows": 10_000}
    root = _repo(tmp_path, write_commit, online_store={"type": "sqlite"}, server=limits)
    server = ServeProcess(root)
    figures: dict[str, Any] = {}
    try:
        url = server.url
        for _ in range(20):  # warm up: plans, caches, allocator arenas
            assert httpx.post(f"{url}/features/online", json=BODY, timeout=10).status_code == 200
        rss0, fds0 = server.rss_mb(), server.open_fds()
        figures["rss_start_mb"] = round(rss0, 1)
        with server.peak_rss_mb() as peak:
            _send_oversized(server, figures, limits)
        figures["rss_peak_growth_mb"] = round(peak[0] - rss0, 1)
        figures["rss_end_growth_mb"] = round(server.rss_mb() - rss0, 1)
        # the four 100 MB bodies are never read and the chunked one is cut at the limit
        # (about 30 MB at the peak); the 1.3M keys are parsed once and refused (about
        # 80 MB at the peak, as Python objects), and nothing stays: far below the 430 MB
        # that four 100 MB bodies used to add
        assert peak[0] - rss0 < 150, figures
        assert figures["rss_end_growth_mb"] < 20, figures
        time.sleep(0.5)
        figures["fds_after"] = server.open_fds() - fds0
        assert figures["fds_after"] <= 5, figures
        assert httpx.post(f"{url}/features/online", json=BODY, timeout=10).status_code == 200
    finally:
        _report(record_property, "oversized_inputs", figures)
        code, _out, err = server.stop()
        assert code == 0, err


def _send_oversized(server: ServeProcess, figures: dict[str, Any],
                    limits: dict[str, Any]) -> None:
    url = server.url
    big = b"x" * 100_000_000

    # four 100 MB bodies at once, declared by Content-Length: refused before reading
    results: list[tuple[int, str, float]] = []

    def post_big() -> None:
        t = time.perf_counter()
        r = httpx.post(f"{url}/push/stats", content=big, timeout=30,
                       headers={"content-type": "application/json"})
        results.append((r.status_code, r.json()["error"]["code"], time.perf_counter() - t))

    threads = [threading.Thread(target=post_big) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert [(st, code) for st, code, _ in results] == [(413, "request_too_large")] * 4
    figures["declared_100MB_x4_s"] = round(max(sec for _, _, sec in results), 3)
    figures["rss_after_declared_mb"] = round(server.rss_mb(), 1)

    # a 100 MB body sent chunked (no length): refused once it passes the limit
    def chunks() -> Any:
        for i in range(0, len(big), 2**20):
            yield big[i:i + 2**20]

    t = time.perf_counter()
    r = httpx.post(f"{url}/push/stats", content=chunks(), timeout=30,
                   headers={"content-type": "application/json"})
    figures["chunked_100MB_s"] = round(time.perf_counter() - t, 3)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    assert "at most 33554432 bytes" in r.json()["error"]["message"]
    figures["rss_after_chunked_mb"] = round(server.rss_mb(), 1)

    # 1.3M keys in one request (about 11 MB, under the body limit): refused by count
    keys = orjson.dumps({"features": ["stats:trips"],
                         "entities": {"driver_id": list(range(1_300_000))}})
    t = time.perf_counter()
    r = httpx.post(f"{url}/features/online", content=keys, timeout=30,
                   headers={"content-type": "application/json"})
    figures["keys_1.3M_s"] = round(time.perf_counter() - t, 3)
    figures["keys_1.3M_body_mb"] = round(len(keys) / 2**20, 1)
    assert r.status_code == 413, r.text
    assert "1300000 entity rows" in r.json()["error"]["message"]
    assert len(r.content) < 1000  # the answer does not echo the keys
    figures["rss_after_keys_mb"] = round(server.rss_mb(), 1)

    # 200 bodies half sent and left hanging: each answered 408 and closed in time
    t = time.perf_counter()
    socks = _half_sent(server.port, 200)
    answers = [_answer_then_eof(s) for s in socks]
    figures["half_sent_200_closed_s"] = round(time.perf_counter() - t, 3)
    for s in socks:
        s.close()
    assert all(a.startswith(b"HTTP/1.1 408") for a in answers), answers[0][:200]
    assert all(b'"request_timeout"' in a for a in answers)
    assert figures["half_sent_200_closed_s"] < limits["body_timeout_s"] + 3

    # 200 requests whose headers never end (a byte at a time would do the same)
    t = time.perf_counter()
    socks = []
    for _ in range(200):
        s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        s.sendall(b"POST /push/stats HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: 1")
        socks.append(s)
    answers = [_answer_then_eof(s) for s in socks]
    figures["half_sent_heads_200_closed_s"] = round(time.perf_counter() - t, 3)
    for s in socks:
        s.close()
    assert all(a.startswith(b"HTTP/1.1 408") for a in answers), answers[0][:200]
    assert figures["half_sent_heads_200_closed_s"] < limits["body_timeout_s"] + 3
