"""Real servers and sockets for the server tests: the app on a real port in a thread,
raw HTTP/1.1 exchanges, and for the fault suite a Redis server the test owns, a
``featureledger serve`` subprocess, a TCP proxy that can stop forwarding, an open-loop
load generator and the server's resident memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

TOKEN = "s3cret-token"
T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def open_served_store(root: Path, write_commit: Any, *, server: dict[str, Any] | None = None,
                      online_store: dict[str, Any] | None = None,
                      serving: dict[str, Any] | None = None) -> Any:
    """A store under ``root`` with driver_stats (drivers 1 and 2) materialized, served
    with token TOKEN and the ``server`` (and ``serving``) settings given."""
    from featureledger import Entity, FeatureSet, FeatureView, Field
    from featureledger.config import load_config
    from featureledger.store import FeatureStore

    cfg = load_config(root, environ={}, overrides={
        "online_store": online_store or {"type": "sqlite", "path": str(root / "online.db")},
        "serving": serving or {"cache": True, "poll_interval_s": 0},
        "server": {"tokens": {TOKEN: "alice"}, **(server or {})},
    })
    store = FeatureStore(root, config=cfg)
    driver = Entity(name="driver", join_keys={"driver_id": "int64"})
    store.apply([
        driver,
        FeatureView(name="driver_stats", entities=[driver], fields=[
            Field(name="trips", dtype="int64"), Field(name="rating", dtype="float64"),
            Field(name="seen", dtype="timestamp")]),
        FeatureSet(name="ranker", features=["driver_stats:trips", "driver_stats:rating"]),
    ])
    write_commit(store, "driver_stats", {
        "driver_id": [1, 2],
        "event_timestamp": [T0, T0],
        "trips": [10, 20], "rating": [4.5, None], "seen": [T0, None]})
    store.materialize(end=T0 + dt.timedelta(hours=1))
    return store


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """The app of a store served by uvicorn on a real socket, in a thread of the test."""

    def __init__(self, store: Any, *, fast_route: bool = True) -> None:
        import uvicorn

        from featureledger.server.app import create_app, uvicorn_config

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.store = store
        self.app = create_app(store)
        # the settings serve() runs with (the head limits among them), on asyncio: uvloop
        # installs itself for the whole process
        self.server = uvicorn.Server(uvicorn_config(
            self.app, store.config.server, host="127.0.0.1", port=self.port,
            loop="asyncio", fast_route=fast_route))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "no server"
            time.sleep(0.01)

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=10)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def http_exchange(sock: socket.socket, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send one HTTP/1.1 request on ``sock`` and read one answer (status, headers, body)."""
    sock.sendall(request)
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        assert chunk, f"the connection closed before an answer: {buf!r}"
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "the connection closed inside an answer"
        rest += chunk
    return int(lines[0].split()[1]), headers, rest[:length]


def post_request(path: str, body: bytes, *, content_type: str | None = "application/json",
                 length: int | None = None, token: str = "s3cret-token") -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
    if content_type is not None:
        head += f"Content-Type: {content_type}\r\n"
    head += f"Content-Length: {len(body) if length is None else length}\r\n\r\n"
    return head.encode() + body


def require_redis_server() -> str:
    path = shutil.which("redis-server")
    if path is None:
        msg = "redis-server is not on PATH; install Redis to run the fault suite"
        if os.environ.get("CI"):
            pytest.fail(f"{msg} (CI must run every backend)")
        pytest.skip(msg)
    return path


class RedisProcess:
    """A redis-server of the test's own, on its own port: killed, restarted, stopped."""

    def __init__(self, port: int | None = None) -> None:
        self.binary = require_redis_server()
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--save", "", "--appendonly", "no",
             "--bind", "127.0.0.1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(
                    ("127.0.0.1", self.port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.02)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(timeout=10)


class ServeProcess:
    """``featureledger serve`` in a subprocess, on its own port."""

    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "FEATURELEDGER_USER": "tester"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "featureledger", "serve", "--port", str(self.port)],
            cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/health/live", timeout=1).status_code == 200:
                    return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                out, err = self.proc.communicate(timeout=10)
                raise AssertionError(f"server did not start:\n{out}\n{err}")
            time.sleep(0.05)

    def rss_mb(self) -> float:
        """Resident memory of the server process now."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS line")

    @contextlib.contextmanager
    def peak_rss_mb(self) -> Any:
        """Yields a list that holds, once the block is left, the highest resident memory
        seen while it ran (sampled every 5 ms)."""
        peak = [self.rss_mb()]
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.005):
                with contextlib.suppress(OSError, AssertionError):
                    peak[0] = max(peak[0], self.rss_mb())

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        try:
            yield peak
        finally:
            stop.set()
            thread.join()

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def stop(self) -> tuple[int, str, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, err = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate(timeout=10)
        return self.proc.returncode, out, err


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target until ``partition()``; then it keeps every
    connection open and accepts new ones, but moves no byte either way, as a network
    that drops packets would look to both ends."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self.forwarding = threading.Event()
        self.forwarding.set()
        self._closed = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._listener.settimeout(0.2)
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def partition(self) -> None:
        self.forwarding.clear()

    def heal(self) -> None:
        self.forwarding.set()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                continue
            self._sockets.append(client)
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        self.forwarding.wait()
        if self._closed.is_set():
            return
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            client.close()
            return
        self._sockets.append(upstream)
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        src.settimeout(0.1)
        while not self._closed.is_set():
            if not self.forwarding.wait(0.1):
                continue  # partitioned: read nothing, send nothing
            try:
                data = src.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if not data:
                break
            self.forwarding.wait()
            try:
                dst.sendall(data)
            except OSError:
                break
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._closed.set()
        self.forwarding.set()
        self._listener.close()
        for s in self._sockets:
            with contextlib.suppress(OSError):
                s.close()


@dataclass
class Sample:
    scheduled: float  # seconds since the run started, when the request was due
    latency: float  # seconds from when it was due to its answer
    status: int  # 0: no answer (the connection failed)
    code: str | None = None  # the error code of a non-200 answer
    message: str | None = None


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection with at most one request in flight (parsing
    only what the fault suite needs: the status and a JSON error)."""

    def __init__(self, load: Load) -> None:
        self.load = load
        self.buf = b""
        self.due = 0.0
        self.transport: asyncio.Transport | None = None
        self.busy = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def send(self, request: bytes, due: float) -> None:
        self.due, self.busy = due, True
        assert self.transport is not None
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        head_end = self.buf.find(b"\r\n\r\n")
        if head_end < 0:
            return
        head = self.buf[:head_end].lower()
        at = head.find(b"content-length:")
        eol = head.find(b"\r\n", at)
        length = int(head[at + 15:eol if eol >= 0 else len(head)]) if at >= 0 else 0
        end = head_end + 4 + length
        if len(self.buf) < end:
            return
        status = int(self.buf[9:12])
        body, self.buf = self.buf[head_end + 4:end], self.buf[end:]
        self.busy = False
        self.load.answered(self, status, body, closing=b"connection: close" in head)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.busy:
            self.busy = False
            self.load.answered(self, 0, repr(exc).encode(), closing=True)


@dataclass
class Load:
    """Open-loop requests at a fixed rate, from raw keep-alive connections (an HTTP
    client library costs too much CPU on a shared 2-core machine to keep the pace): each
    request is sent when due, on an idle connection or a new one, whatever the answers
    before it, and its latency counts from when it was due."""

    url: str
    body: dict[str, Any]
    rate: float = 100.0
    samples: list[Sample] = field(default_factory=list)
    started: float = 0.0
    connections: int = 0

    def __post_init__(self) -> None:
        import orjson

        host, _, port = self.url.removeprefix("http://").partition(":")
        self._host, self._port = host, int(port)
        payload = orjson.dumps(self.body)
        self._request = (b"POST /features/online HTTP/1.1\r\nHost: %s\r\n"
                         b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                         % (host.encode(), len(payload))) + payload
        self._idle: list[_Connection] = []

    def answered(self, conn: _Connection, status: int, body: bytes, *, closing: bool) -> None:
        import orjson

        loop = asyncio.get_running_loop()
        code = message = None
        if status != 200:
            try:
                err = orjson.loads(body)["error"]
                code, message = err["code"], err["message"]
            except Exception:
                message = body[:200].decode("latin-1")
        self.samples.append(Sample(conn.due - self.started, loop.time() - conn.due, status,
                                   code, message))
        if closing:
            if conn.transport is not None:
                conn.transport.close()
        else:
            self._idle.append(conn)

    async def _send(self, due: float) -> None:
        loop = asyncio.get_running_loop()
        while self._idle:
            conn = self._idle.pop()
            if conn.transport is not None and not conn.transport.is_closing():
                conn.send(self._request, due)
                return
        self.connections += 1
        try:
            _t, conn = await loop.create_connection(lambda: _Connection(self), self._host,
                                                    self._port)
        except OSError as exc:
            self.samples.append(Sample(due - self.started, loop.time() - due, 0, None,
                                       repr(exc)))
            return
        conn.send(self._request, due)

    async def run(self, seconds: float, events: list[tuple[float, Any]]) -> None:
        """Send for ``seconds``; at each ``(t, fn)`` of ``events`` call ``fn()`` (in a
        thread, so a slow fault does not hold the sending); then wait for the answers."""
        loop = asyncio.get_running_loop()
        self.started = loop.time()
        tasks = []
        n = int(seconds * self.rate)
        pending = sorted(events, key=lambda e: e[0])
        for i in range(n):
            due = self.started + i / self.rate
            while pending and pending[0][0] <= i / self.rate:
                tasks.append(asyncio.ensure_future(asyncio.to_thread(pending.pop(0)[1])))
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(self._send(due)))
        await asyncio.gather(*tasks)
        until = loop.time() + 30
        while len(self.samples) < n and loop.time() < until:
            await asyncio.sleep(0.01)
        for conn in self._idle:
            if conn.transport is not None:
                conn.transport.close()

    def window(self, start: float, end: float) -> list[Sample]:
        return [s for s in self.samples if start <= s.scheduled < end]


def quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q * 100) - 1] \
        if q < 1 else max(values)


def summary(samples: list[Sample]) -> dict[str, Any]:
    lat = [s.latency for s in samples]
    codes: dict[str, int] = {}
    for s in samples:
        key = str(s.status) if s.code is None else f"{s.status} {s.code}"
        codes[key] = codes.get(key, 0) + 1
    return {"n": len(samples), "p50_ms": round(quantile(lat, 0.5) * 1000, 1),
            "p99_ms": round(quantile(lat, 0.99) * 1000, 1),
            "max_ms": round(max(lat, default=float("nan")) * 1000, 1), "statuses": codes}
