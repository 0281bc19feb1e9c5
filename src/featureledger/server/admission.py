"""Admission control: bounded worker pools in front of the stores, and a circuit breaker
per backend.

Why: store calls block, so they run on threads; with a fixed pool and an unbounded queue
in front of it, an outage that makes each call wait out its timeout turns into a queue
that grows faster than it drains, and every request then waits for the ones before it
(measured: 37 s behind a Redis that had been killed, and seconds more after it was back).
Here nothing waits without bound:

* :class:`WorkerPool` runs at most ``workers`` calls at once and lets at most
  ``queue_size`` requests wait for a thread; a request beyond that is refused at once
  (``ServerOverloadedError``: 503 with Retry-After), and one that has waited until its
  deadline is refused then. A read is also answered at its deadline when its call has not
  returned (``DeadlineExceededError``, naming the backend the thread is blocked in); the
  thread finishes on its own, and counts as busy until it does, so the pool never runs
  more threads than configured.
* :class:`CircuitBreaker` per backend (online store, registry): consecutive failures open
  it, and requests that need an open backend fail at once (``CircuitOpenError``, 503
  naming it) without taking a thread or a queue place; requests already waiting for it
  are failed when it opens. After ``reset_s`` one trial request goes through (half-open);
  its success, or a successful background health probe, closes the breaker again.

A failure is charged to the backend it came from, found by where it was raised (the
innermost featureledger frame of its traceback: the Redis store, the registry engine, ...)
or, for a call still running at its deadline, by where its thread is blocked. So a
registry error met during an online read counts against the registry, not the online
store.

Counters are touched only on the event loop; breakers are shared with worker and health
threads and take a lock, except the closed-state check every request makes, which is one
attribute read.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from types import FrameType, TracebackType
from typing import Any, Literal

from featureledger.errors import (
    BackendUnavailableError,
    CircuitOpenError,
    DeadlineExceededError,
    ServerOverloadedError,
)

BreakerState = Literal["closed", "open", "half_open"]

# which backend a module belongs to: the innermost featureledger frame of a failure (or of
# a blocked thread) inside one of these is that backend's
_BACKEND_MODULES = (
    ("featureledger.online.redis", "online_store"),
    ("featureledger.online.sqlite", "online_store"),
    ("featureledger.online.stores", "online_store"),
    ("featureledger.registry", "registry"),
    ("featureledger.offline.storage", "offline_store"),
    ("featureledger.offline.s3", "offline_store"),
)
_MAX_ERROR = 300  # characters of a backend's error kept for messages and /health


def _short(text: str, limit: int = _MAX_ERROR) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _backend_of_module(name: str) -> str | None:
    for prefix, backend in _BACKEND_MODULES:
        if name == prefix or name.startswith(prefix + "."):
            return backend
    return None


def _innermost_backend(frames: Iterable[FrameType]) -> str | None:
    """The backend of the innermost featureledger frame in ``frames`` (outermost first)."""
    found: str | None = None
    for frame in frames:
        name = frame.f_globals.get("__name__", "")
        if name.startswith("featureledger."):
            found = _backend_of_module(name)
    return found


def _traceback_frames(tb: TracebackType | None) -> Iterable[FrameType]:
    while tb is not None:
        yield tb.tb_frame
        tb = tb.tb_next


def backend_of_exception(exc: BaseException) -> str | None:
    """The backend whose code raised ``exc`` (None: not raised inside a backend)."""
    return _innermost_backend(_traceback_frames(exc.__traceback__))


def backend_of_thread(ident: int) -> str | None:
    """The backend the thread ``ident`` is blocked in right now, if any."""
    frame = sys._current_frames().get(ident)
    stack: list[FrameType] = []
    while frame is not None:
        stack.append(frame)
        frame = frame.f_back
    return _innermost_backend(reversed(stack))


def is_outage(exc: BaseException) -> bool:
    """Whether ``exc`` says a backend did not answer (as opposed to refusing the request)."""
    if isinstance(exc, CircuitOpenError):
        return False  # a refusal by a breaker, already counted
    if isinstance(exc, (BackendUnavailableError, ConnectionError, TimeoutError)):
        return True
    sa = sys.modules.get("sqlalchemy")
    return sa is not None and isinstance(
        exc, (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError))


def retry_after(seconds: float) -> int:
    """Retry-After is whole seconds; never 0 (that would invite an immediate retry)."""
    return max(1, math.ceil(seconds))


class CircuitBreaker:
    """Open after ``failures`` consecutive failures; half-open after ``reset_s``.

    >>> b = CircuitBreaker("registry", "the registry", failures=2, reset_s=60)
    >>> b.failure("refused"); b.state
    'closed'
    >>> b.failure("refused"); b.state
    'open'
    >>> b.check()
    Traceback (most recent call last):
    ...
    featureledger.errors.CircuitOpenError: the registry is unavailable: 2 calls in a row failed (last: refused); requests that need it are refused at once until it answers again (a trial every 60s); retry in a minute
    >>> b.success(); b.state
    'closed'
    """

    def __init__(self, name: str, label: str, *, failures: int, reset_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.label = label
        self.failures = failures
        self.reset_s = reset_s
        self.state: BreakerState = "closed"
        self.consecutive = 0
        self.last_error: str | None = None
        self.opened_count = 0
        self._opened_at = 0.0
        self._trial_at = 0.0
        self._clock = clock
        self._lock = threading.Lock()
        self._on_open: list[Callable[[CircuitBreaker], None]] = []

    def on_open(self, callback: Callable[[CircuitBreaker], None]) -> None:
        """Call ``callback(self)`` each time the breaker opens (from the failing thread)."""
        self._on_open.append(callback)

    def refusing(self) -> bool:
        """Whether a request needing this backend would be refused now (no state change)."""
        if self.state == "closed":
            return False
        now = self._clock()
        if self.state == "open":
            return now < self._opened_at + self.reset_s
        return now < self._trial_at + self.reset_s  # half-open, a trial under way

    def check(self) -> None:
        """Return if a request may use the backend (possibly as the half-open trial);
        raise ``CircuitOpenError`` if not."""
        if self.state == "closed":
            return
        with self._lock:
            now = self._clock()
            if self.state == "closed":
                return
            if self.state == "open" and now >= self._opened_at + self.reset_s:
                self.state = "half_open"
                self._trial_at = now
                return
            # a trial that never reported (its request was shed or abandoned) does not
            # hold the breaker half-open for ever: another may try after reset_s
            if self.state == "half_open" and now >= self._trial_at + self.reset_s:
                self._trial_at = now
                return
        raise self.refusal()

    def refusal(self) -> CircuitOpenError:
        """The error a request refused by this breaker gets (no state change)."""
        since = self._opened_at if self.state == "open" else self._trial_at
        wait = max(since + self.reset_s - self._clock(), 0.0)
        return CircuitOpenError(self._message(wait), backend=self.name, retry_after_s=wait)

    def _message(self, wait: float) -> str:
        when = "in a second" if wait <= 1 else (
            "in a minute" if wait >= 30 else f"in {math.ceil(wait)} s")
        return (f"{self.label} is unavailable: {self.consecutive} calls in a row failed "
                f"(last: {self.last_error}); requests that need it are refused at once "
                f"until it answers again (a trial every {self.reset_s:g}s); retry {when}")

    def success(self) -> None:
        if self.state == "closed" and not self.consecutive:
            return
        with self._lock:
            self.state = "closed"
            self.consecutive = 0

    def failure(self, error: str) -> None:
        opened = False
        with self._lock:
            self.consecutive += 1
            self.last_error = _short(error)
            if self.state == "half_open" or (
                    self.state == "closed" and self.consecutive >= self.failures):
                self.state = "open"
                self._opened_at = self._clock()
                self.opened_count += 1
                opened = True
        if opened:
            for callback in self._on_open:
                callback(self)

    def snapshot(self) -> dict[str, Any]:
        out: dict[str, Any] = {"state": self.state, "consecutive_failures": self.consecutive}
        if self.state != "closed":
            out["open_for_s"] = round(self._clock() - self._opened_at, 3)
            out["last_error"] = self.last_error
        return out


class _Job:
    """One call on a worker thread; remembers its thread so a deadline can see where it is
    blocked, and charges its outcome to the breakers."""

    __slots__ = ("args", "breakers", "charged", "fn", "needs", "thread", "timer")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...],
                 needs: tuple[CircuitBreaker, ...],
                 breakers: dict[str, CircuitBreaker]) -> None:
        self.fn = fn
        self.args = args
        self.needs = needs
        self.breakers = breakers
        self.thread: int | None = None
        self.charged = False  # a failure was charged already (at the deadline)
        self.timer: asyncio.TimerHandle | None = None  # the read's slow check, then deadline

    def run(self) -> Any:
        self.thread = threading.get_ident()
        try:
            result = self.fn(*self.args)
        except BaseException as exc:
            if not self.charged and is_outage(exc):
                backend = backend_of_exception(exc)
                breaker = self.breakers.get(backend) if backend else None
                if breaker is not None:
                    breaker.failure(f"{type(exc).__name__}: {exc}")
            raise
        finally:
            self.thread = None
        for breaker in self.needs:
            breaker.success()
        return result


class WorkerPool:
    """At most ``workers`` blocking calls at once, at most ``queue_size`` requests waiting.

    ``run`` is awaited on the event loop; see the module docstring for what it refuses.
    """

    def __init__(self, name: str, *, workers: int, queue_size: int,
                 breakers: dict[str, CircuitBreaker], timeout_s: float) -> None:
        self.name = name
        self.workers = workers
        self.queue_size = queue_size
        self.timeout_s = timeout_s
        self.breakers = breakers
        self.busy = 0  # calls on threads, counting those whose request already gave up
        self._waiting: deque[tuple[asyncio.Future[None], tuple[CircuitBreaker, ...]]] = \
            deque()
        self._executor = ThreadPoolExecutor(max_workers=workers,
                                            thread_name_prefix=f"fl-{name}")
        self._loop: asyncio.AbstractEventLoop | None = None
        # calls that may be cut short, by the future their request awaits
        self._running: dict[asyncio.Future[Any], tuple[CircuitBreaker, ...]] = {}
        for breaker in breakers.values():
            breaker.on_open(self._breaker_opened)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    async def run(self, fn: Callable[..., Any], *args: Any,
                  needs: tuple[CircuitBreaker, ...] = (), deadline: float,
                  cut_short: bool = True) -> Any:
        """``fn(*args)`` on a worker thread.

        ``deadline`` is in ``loop.time()``: the request never waits for a thread past it,
        and with ``cut_short`` (reads) it is answered then even if the call goes on.
        Writes pass ``cut_short=False``: a write answered 503 while it completes would
        leave the client unable to tell whether it happened.
        """
        for breaker in needs:
            breaker.check()
        loop = self._loop = asyncio.get_running_loop()
        if self.busy >= self.workers or self._waiting:
            await self._wait_for_thread(loop, needs, deadline)
        else:
            self.busy += 1
        job = _Job(fn, args, needs, self.breakers)
        done: asyncio.Future[Any] = loop.create_future()
        try:
            future = self._executor.submit(job.run)
        except RuntimeError:  # shut down: the server is stopping
            self.busy -= 1
            raise ServerOverloadedError("the server is shutting down; retry against "
                                        "another instance or after it restarts") from None
        future.add_done_callback(
            lambda f: _call_soon(loop, self._finished, f, done))
        if not cut_short:
            return await done
        self._running[done] = needs
        # one timer per read: at half the bound it looks at the call, at the deadline it
        # answers the request (cheaper than a timeout context on this, the hot path)
        job.timer = loop.call_at(min(loop.time() + self.timeout_s / 2, deadline),
                                 self._slow, job, done, deadline)
        try:
            return await done
        finally:
            job.timer.cancel()
            self._running.pop(done, None)

    async def _wait_for_thread(self, loop: asyncio.AbstractEventLoop,
                               needs: tuple[CircuitBreaker, ...], deadline: float) -> None:
        if len(self._waiting) >= self.queue_size:
            raise ServerOverloadedError(
                f"the server is busy: all {self.workers} {self.name} workers are taken and "
                f"{len(self._waiting)} requests wait for them (server.queue_size); retry "
                "in a second", retry_after_s=1.0)
        slot: asyncio.Future[None] = loop.create_future()
        entry = (slot, needs)
        self._waiting.append(entry)
        # a timer that fails the slot, not a timeout context: no task needed (the
        # protocol's fast route steps a request in place until it has to wait)
        timer = loop.call_at(deadline, _time_out, slot)
        try:
            await slot
        except _WaitedTooLong:
            self._remove(entry)
            raise ServerOverloadedError(
                f"the request waited {self.timeout_s:g}s (server.request_timeout_s) for "
                f"one of the {self.workers} {self.name} workers without getting one; the "
                "server is overloaded or a backend is slow; retry in a second",
                retry_after_s=1.0) from None
        except BaseException:
            if slot.done() and not slot.cancelled() and slot.exception() is None:
                self._release()
            self._remove(entry)
            raise
        finally:
            timer.cancel()

    def _remove(self, entry: tuple[asyncio.Future[None], tuple[CircuitBreaker, ...]]
                ) -> None:
        with contextlib.suppress(ValueError):  # already taken off by a wake-up or a failure
            self._waiting.remove(entry)

    def _slow(self, job: _Job, done: asyncio.Future[Any], deadline: float) -> None:
        """Half the bound gone and the call still waits on a backend: that is a failure
        of the backend already (healthy ones answer in milliseconds). Charging it now,
        not at the deadline, opens the breaker while the first requests caught by a hang
        still have time left, so the requests behind them are refused at once instead of
        each waiting out the bound. Then the timer is set for the deadline itself."""
        if done.done():
            return
        if not job.charged and job.thread is not None:
            backend = backend_of_thread(job.thread)
            breaker = self.breakers.get(backend) if backend else None
            if breaker is not None:
                job.charged = True
                breaker.failure(f"no answer within {self.timeout_s / 2:g}s")
        if done.done():  # the failure opened the breaker, which answered the request
            return
        job.timer = done.get_loop().call_at(deadline, self._expire, job, done)

    def _expire(self, job: _Job, done: asyncio.Future[Any]) -> None:
        if not done.done():
            done.set_exception(self._missed(job))

    def _missed(self, job: _Job) -> DeadlineExceededError:
        ident = job.thread
        backend = backend_of_thread(ident) if ident is not None else None
        breaker = self.breakers.get(backend) if backend else None
        if breaker is not None:
            if not job.charged:
                job.charged = True
                breaker.failure(f"no answer within {self.timeout_s:g}s")
            where = f"{breaker.label} did not answer"
        elif ident is None:
            where = "the request finished just as its time ran out"
        else:
            where = "the request was still being computed"
        return DeadlineExceededError(
            f"{where} within {self.timeout_s:g}s (server.request_timeout_s); retry in a "
            "second, or with fewer keys if the request is large", backend=backend)

    def _finished(self, future: Future[Any], done: asyncio.Future[Any]) -> None:
        self._release()
        exc = future.exception()  # always read, so an abandoned call's error is consumed
        if done.done():
            return
        if exc is not None:
            done.set_exception(exc)
        else:
            done.set_result(future.result())

    def _release(self) -> None:
        self.busy -= 1
        while self._waiting and self.busy < self.workers:
            slot, needs = self._waiting.popleft()
            if slot.done():
                continue
            refused = next((b for b in needs if b.refusing()), None)
            if refused is not None:
                slot.set_exception(refused.refusal())
                continue
            self.busy += 1
            slot.set_result(None)

    def _breaker_opened(self, breaker: CircuitBreaker) -> None:
        loop = self._loop
        if loop is not None:
            _call_soon(loop, self._fail_waiting, breaker)

    def _fail_waiting(self, breaker: CircuitBreaker) -> None:
        """Requests that need a backend that was just found down fail now: those waiting
        for a thread (instead of getting one only to be refused) and the reads waiting on
        a call to it (instead of waiting out the bound); those calls finish on their own."""
        for done, needs in list(self._running.items()):
            if breaker in needs and not done.done():
                done.set_exception(breaker.refusal())
        keep: deque[tuple[asyncio.Future[None], tuple[CircuitBreaker, ...]]] = deque()
        for slot, needs in self._waiting:
            if slot.done():
                continue
            if breaker in needs:
                slot.set_exception(breaker.refusal())
            else:
                keep.append((slot, needs))
        self._waiting = keep

    def shutdown(self) -> None:
        # not waiting: a thread blocked on a backend that never answers must not hold the
        # server's shutdown (it ends when the call does, or with the process)
        self._executor.shutdown(wait=False, cancel_futures=True)


class _WaitedTooLong(Exception):
    """A request's wait for a worker thread reached its deadline."""


def _time_out(slot: asyncio.Future[None]) -> None:
    if not slot.done():
        slot.set_exception(_WaitedTooLong())


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[..., Any], *args: Any) -> None:
    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
        loop.call_soon_threadsafe(fn, *args)
