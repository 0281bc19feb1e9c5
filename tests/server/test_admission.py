"""Admission control on real threads and sockets: the bounded pool sheds, waits at most
the bound, cuts reads short at their deadline, and charges failures to the backend they
came from; the circuit breaker opens, fails fast, lets one trial through and closes."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from featureledger.errors import (
    BackendUnavailableError,
    CircuitOpenError,
    DeadlineExceededError,
    ServerOverloadedError,
)
from featureledger.online.redis import RedisOnlineStore
from featureledger.online.stores import TableRef
from featureledger.registry.engine import RegistryDB
from featureledger.server.admission import (
    CircuitBreaker,
    WorkerPool,
    backend_of_exception,
    is_outage,
)


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) and never answers: a
    backend that hangs."""
    with socket.create_server(("127.0.0.1", 0), backlog=64) as listener:
        yield listener.getsockname()[1]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _breakers(**opts) -> dict[str, CircuitBreaker]:
    opts = {"failures": 2, "reset_s": 0.2, **opts}
    return {"online_store": CircuitBreaker("online_store", "the online store", **opts),
            "registry": CircuitBreaker("registry", "the registry", **opts)}


def _pool(breakers, **opts) -> WorkerPool:
    opts = {"workers": 1, "queue_size": 1, "timeout_s": 0.4, **opts}
    return WorkerPool("test", breakers=breakers, **opts)


def test_failures_are_charged_to_the_backend_that_raised_them():
    redis = RedisOnlineStore(f"redis://127.0.0.1:{_closed_port()}/0", timeout_s=0.1,
                             retries=0)
    with pytest.raises(BackendUnavailableError) as got:
        redis.read([(TableRef("v", 1), ["1"])])
    assert is_outage(got.value) and backend_of_exception(got.value) == "online_store"
    registry = RegistryDB(f"postgresql+psycopg://postgres@127.0.0.1:{_closed_port()}/x",
                          migrate=False)
    with pytest.raises(BackendUnavailableError) as got:
        registry.generation()
    assert is_outage(got.value) and backend_of_exception(got.value) == "registry"
    assert backend_of_exception(ValueError("raised here")) is None
    assert not is_outage(CircuitOpenError("open", backend="registry"))


def test_full_queue_sheds_at_once_and_a_waiter_gives_up_at_its_deadline():
    pool = _pool(_breakers())
    release = threading.Event()
    ran: list[str] = []

    async def scenario() -> list[object]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 0.4
        first = asyncio.ensure_future(pool.run(release.wait, 5, deadline=deadline,
                                               cut_short=False))
        await asyncio.sleep(0.05)
        second = asyncio.ensure_future(pool.run(ran.append, "second", deadline=deadline))
        await asyncio.sleep(0.01)
        t0 = time.perf_counter()
        with pytest.raises(ServerOverloadedError) as shed:
            await pool.run(ran.append, "third", deadline=deadline)
        shed_after = time.perf_counter() - t0
        got = await asyncio.gather(second, return_exceptions=True)
        waited = time.perf_counter() - t0
        release.set()
        await first
        return [shed.value, shed_after, got[0], waited]

    shed, shed_after, second, waited = asyncio.run(scenario())
    assert shed_after < 0.2 and "server.queue_size" in str(shed)  # not after the 0.4 s wait
    assert shed.retry_after_s == 1.0
    assert isinstance(second, ServerOverloadedError) and "waited 0.4s" in str(second)
    assert waited < 0.6
    assert ran == []  # neither ran: the waiter left, the third was never queued
    assert pool.busy == 0 and pool.waiting == 0
    pool.shutdown()


def test_a_read_blocked_on_a_hanging_backend_is_answered_at_its_deadline(silent_port):
    breakers = _breakers(failures=1, reset_s=60)
    pool = _pool(breakers, workers=2, queue_size=4, timeout_s=0.4)
    redis = RedisOnlineStore(f"redis://127.0.0.1:{silent_port}/0", timeout_s=1.5,
                             retries=0)

    async def scenario() -> tuple[BaseException, float, BaseException]:
        loop = asyncio.get_running_loop()
        needs = (breakers["online_store"],)
        t0 = loop.time()
        with pytest.raises((DeadlineExceededError, CircuitOpenError)) as late:
            await pool.run(redis.read, [(TableRef("v", 1), ["1"])], needs=needs,
                           deadline=t0 + 0.4)
        answered = loop.time() - t0
        with pytest.raises(CircuitOpenError) as refused:
            await pool.run(redis.read, [(TableRef("v", 1), ["1"])], needs=needs,
                           deadline=loop.time() + 0.4)
        return late.value, answered, refused.value

    late, answered, refused = asyncio.run(scenario())
    # the call was still waiting on Redis: charged to the online store at half the bound,
    # which opened its breaker (threshold 1) and answered the read then
    assert 0.15 <= answered <= 0.35, answered
    assert breakers["online_store"].state == "open"
    assert breakers["registry"].state == "closed"
    assert "the online store" in str(late)
    assert refused.backend == "online_store" and "is unavailable" in str(refused)
    assert pool.busy == 1  # the thread is still blocked on Redis, and counted
    pool.shutdown()
    redis.close()


def test_breaker_opens_fails_fast_lets_one_trial_through_and_closes():
    now = [0.0]
    b = CircuitBreaker("online_store", "the online store (redis)", failures=3, reset_s=0.5,
                       clock=lambda: now[0])
    opened: list[str] = []
    b.on_open(lambda br: opened.append(br.name))
    b.failure("refused")
    b.success()  # consecutive failures only
    b.failure("refused")
    b.failure("refused")
    assert b.state == "closed"
    b.failure("connection refused")
    assert b.state == "open" and opened == ["online_store"]
    with pytest.raises(CircuitOpenError) as refused:
        b.check()
    assert "the online store (redis) is unavailable: 3 calls in a row failed (last: " \
        "connection refused)" in str(refused.value)
    assert 0 < refused.value.retry_after_s <= 0.5
    now[0] = 0.6
    b.check()  # the trial
    assert b.state == "half_open"
    with pytest.raises(CircuitOpenError):
        b.check()  # only one trial at a time
    b.failure("still refused")  # the trial failed: open again, for another reset_s
    assert b.state == "open" and opened == ["online_store"] * 2
    now[0] = 1.2
    b.check()
    b.success()
    assert b.state == "closed" and b.consecutive == 0
    b.check()
    assert b.snapshot() == {"state": "closed", "consecutive_failures": 0}


def test_an_opening_breaker_fails_the_requests_waiting_for_it():
    breakers = _breakers(failures=1, reset_s=60)
    pool = _pool(breakers, workers=1, queue_size=4, timeout_s=2.0)
    release = threading.Event()

    def fail() -> None:
        release.wait(5)
        breakers["registry"].failure("gone")

    async def scenario() -> list[object]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 2.0
        busy = asyncio.ensure_future(pool.run(fail, deadline=deadline, cut_short=False))
        await asyncio.sleep(0.05)
        waiting = [asyncio.ensure_future(pool.run(time.sleep, 0, deadline=deadline,
                                                  needs=(breakers[name],)))
                   for name in ("registry", "online_store")]
        await asyncio.sleep(0.05)
        t0 = loop.time()
        release.set()
        results = await asyncio.gather(*waiting, return_exceptions=True)
        await busy
        return [*results, loop.time() - t0]

    registry_waiter, online_waiter, took = asyncio.run(scenario())
    assert isinstance(registry_waiter, CircuitOpenError)
    assert registry_waiter.backend == "registry"
    assert online_waiter is None  # it needs another backend: it ran
    assert took < 0.5
    pool.shutdown()
