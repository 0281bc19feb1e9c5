"""Health checks run in the background; the health endpoints answer from their results.

Why: a health endpoint that probes the backends itself takes as long as the slowest of
them, so it blocked for seconds exactly when it mattered (measured: 2-15 s during a
registry partition), and a load balancer polling it piled up threads. Here each backend
has its own probe thread (a probe that hangs holds up only its own backend's result), a
ticker starts a probe every ``interval_s`` and marks a probe that has not come back
within ``timeout_s`` as failing, and ``/health`` only reads what they recorded: it
answers in well under a millisecond, whatever the backends do.

Probe outcomes feed the backend's circuit breaker: a success closes an open breaker (so
service resumes within one interval of the backend coming back, whether or not requests
arrive), and a failure, or a probe left hanging, counts as a failure.

Threads hold the monitor weakly: an app dropped without its shutdown does not keep
threads probing for it.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from featureledger.server.admission import CircuitBreaker

_MAX_ERROR = 300


class _Check:
    """The last result of one backend's probe, and the probe under way if any."""

    __slots__ = ("error", "finished_at", "hang_charged", "ms", "ok", "started_at", "wake")

    def __init__(self) -> None:
        self.ok: bool | None = None
        self.ms: float | None = None
        self.error: str | None = None
        self.finished_at: float | None = None
        self.started_at: float | None = None  # set while a probe runs
        self.hang_charged = False
        self.wake = threading.Event()


class HealthMonitor:
    """Background probes of each backend, read by the health endpoints."""

    def __init__(self, probes: dict[str, Callable[[], Any]],
                 breakers: dict[str, CircuitBreaker], *, interval_s: float,
                 timeout_s: float, extras: Callable[[], dict[str, Any]] | None = None
                 ) -> None:
        self.probes = probes
        self.breakers = breakers
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self._extras_fn = extras
        self.extras: dict[str, Any] = {}
        self._checks = {name: _Check() for name in probes}
        self._stop = threading.Event()
        self._started = False
        self._lock = threading.Lock()
        self._first_round = threading.Event()

    # -- threads -------------------------------------------------------------------------
    def start(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
        ref = weakref.ref(self)
        for name, check in self._checks.items():
            threading.Thread(target=_probe_loop, args=(ref, name, check.wake, self._stop),
                             daemon=True, name=f"fl-health-{name}").start()
        threading.Thread(target=_tick_loop, args=(ref, self._stop), daemon=True,
                         name="fl-health").start()

    @property
    def started(self) -> bool:
        return self._started

    def wait_first(self, timeout: float) -> bool:
        """Wait (up to ``timeout``) until every probe has answered once."""
        return self._first_round.wait(timeout)

    def probing_s(self, name: str) -> float:
        """Seconds the probe of ``name`` under way has been running (0: none is)."""
        started = self._checks[name].started_at
        return 0.0 if started is None else time.monotonic() - started

    def check_now(self) -> None:
        """Start a probe of every backend now (those not already being probed)."""
        for check in self._checks.values():
            if check.started_at is None:
                check.wake.set()

    def close(self) -> None:
        self._stop.set()
        for check in self._checks.values():
            check.wake.set()

    def _tick(self) -> None:
        now = time.monotonic()
        for name, check in self._checks.items():
            started = check.started_at
            if started is None:
                check.wake.set()
            elif now - started > self.timeout_s:
                # a probe that hangs never reports: its silence is the failure, once per
                # tick, so a backend that hangs opens its breaker without any traffic
                check.hang_charged = True
                breaker = self.breakers.get(name)
                if breaker is not None:
                    breaker.failure(f"no answer to a health probe within {self.timeout_s:g}s")
        if self._extras_fn is not None:
            try:
                self.extras = self._extras_fn()
            except Exception as exc:  # reported, never raised: health must answer
                self.extras = {"error": _short(f"{type(exc).__name__}: {exc}")}

    def _probe(self, name: str) -> None:
        check = self._checks[name]
        breaker = self.breakers.get(name)
        check.hang_charged = False
        t0 = check.started_at = time.monotonic()
        try:
            self.probes[name]()
        except Exception as exc:  # reported, never raised: health must answer
            check.ok, check.ms = False, None
            check.error = _short(f"{type(exc).__name__}: {exc}")
            if breaker is not None and not check.hang_charged:
                breaker.failure(check.error)
        else:
            check.ok, check.error = True, None
            check.ms = round((time.monotonic() - t0) * 1000, 2)
            if breaker is not None:
                breaker.success()
        finally:
            check.finished_at = time.monotonic()
            check.started_at = None
        if all(c.finished_at is not None for c in self._checks.values()):
            self._first_round.set()

    # -- reading -------------------------------------------------------------------------
    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Per backend: ok, ms of the last probe, age_s of that result, error, breaker."""
        now = time.monotonic()
        out: dict[str, dict[str, Any]] = {}
        for name, check in self._checks.items():
            started, finished = check.started_at, check.finished_at
            entry: dict[str, Any]
            if started is not None and now - started > self.timeout_s:
                entry = {"ok": False, "error": f"no answer to the health probe for "
                         f"{now - started:.1f}s (limit {self.timeout_s:g}s)"}
            elif finished is None:
                entry = {"ok": False, "error": "not checked yet"}
            elif now - finished > 2 * self.interval_s + self.timeout_s + 1:
                # the prober is stuck behind a hung probe or stopped: the result is stale
                entry = {"ok": False, "error": f"no health result for {now - finished:.1f}s"}
            else:
                entry = {"ok": bool(check.ok), "ms": check.ms}
                if check.error:
                    entry["error"] = check.error
            entry["age_s"] = None if finished is None else round(now - finished, 3)
            breaker = self.breakers.get(name)
            if breaker is not None:
                entry["breaker"] = breaker.state
                if breaker.state == "open" and entry["ok"]:
                    entry["ok"] = False
                    entry["error"] = f"circuit breaker open: {breaker.last_error}"
            out[name] = entry
        return out


def _probe_loop(ref: weakref.ref[HealthMonitor], name: str, wake: threading.Event,
                stop: threading.Event) -> None:
    while True:
        if not wake.wait(1.0):
            if ref() is None or stop.is_set():
                return  # the monitor is gone: so is the reason to probe
            continue
        wake.clear()
        if stop.is_set():
            return
        monitor = ref()
        if monitor is None:
            return
        monitor._probe(name)
        del monitor


def _tick_loop(ref: weakref.ref[HealthMonitor], stop: threading.Event) -> None:
    while True:
        monitor = ref()
        if monitor is None:
            return
        monitor._tick()
        interval = monitor.interval_s
        del monitor
        if stop.wait(interval):
            return


def _short(text: str) -> str:
    return text if len(text) <= _MAX_ERROR else f"{text[:_MAX_ERROR]}... ({len(text)} chars)"
