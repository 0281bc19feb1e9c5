"""What the routes share: limits, worker pools, circuit breakers and health checks, built
from ``server:`` in featureledger.yaml.

Two pools, so that pushes (about 25 ms of validation each) and catalog reads never take
the threads online reads need: ``reads`` for online features, ``writes`` for push and the
catalog, ``server.workers`` threads each, ``server.queue_size`` waiting places each.
Which backends a route needs decides which breakers it checks before it takes a place:
online reads the online store; pushes the online store and the registry; catalog reads
the registry. A read whose plan or change check touches the registry while the registry
breaker is open is still tried (most reads need only the online store), and a registry
failure it meets counts against the registry. Small online reads of a store that can
answer without waiting skip the pool while it stays fast (:mod:`.inline`).
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from featureledger.errors import InvalidReferenceError
from featureledger.server.admission import CircuitBreaker, WorkerPool
from featureledger.server.guard import RequestGuard
from featureledger.server.health import HealthMonitor
from featureledger.server.inline import InlineReads
from featureledger.server.payloads import parse_push, rows_to_table

BACKENDS = ("registry", "online_store", "offline_store")


def _online_label(store: Any) -> str:
    where = getattr(store, "location", None) or getattr(store, "path", None)
    return f"the online store ({store.kind}{f' at {where}' if where else ''})"


def _registry_label(url: str) -> str:
    import sqlalchemy as sa

    try:
        safe = sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # the engine would have refused it already; keep the message useful
        safe = url.rpartition("@")[2]
    return f"the registry ({safe})"


def view_version(text: str) -> tuple[str, int | None]:
    """``NAME`` or ``NAME@VERSION`` from a push path.

    >>> view_version("driver_stats@2")
    ('driver_stats', 2)
    """
    name, at, ver = text.partition("@")
    if not at:
        return name, None
    if not ver.isdigit() or not name or not 1 <= int(ver) < 2**31:
        raise InvalidReferenceError(
            f"view {text[:100]!r} is malformed; write 'NAME' or 'NAME@VERSION', e.g. "
            "'driver_stats' or 'driver_stats@2'")
    return name, int(ver)


class Serving:
    """Limits, pools, breakers and the health monitor of one app."""

    def __init__(self, store: Any) -> None:
        cfg = self.config = store.config.server
        self.store = store
        online = self.online = store.online
        opts = {"failures": cfg.breaker_failures, "reset_s": cfg.breaker_reset_s}
        self.online_store = CircuitBreaker("online_store", _online_label(online.store),
                                           **opts)
        self.registry = CircuitBreaker("registry", _registry_label(store.config.registry_url),
                                       **opts)
        self.breakers = {b.name: b for b in (self.online_store, self.registry)}
        pool = {"workers": cfg.workers, "queue_size": cfg.queue_size,
                "breakers": self.breakers, "timeout_s": cfg.request_timeout_s}
        self.reads = WorkerPool("read", **pool)
        self.writes = WorkerPool("write", **pool)
        self.guard: RequestGuard | None = None  # set by the app (it needs the metrics)
        probe = getattr(online.store, "probe", None) or online.store.ping
        offline = store.ctx.offline_store.probe

        # told each registry generation the background probe reads (the token map follows
        # the access policy through it)
        self.on_generation: Any = None
        self.monitor = HealthMonitor(
            {"registry": self._registry_probe, "online_store": probe,
             "offline_store": offline},
            self.breakers, interval_s=cfg.health_interval_s,
            timeout_s=cfg.request_timeout_s, extras=self._extras)
        # small reads on the event loop, where the store offers a reader for it
        loop_reader = getattr(online.store, "loop_reader", None)
        self.inline: InlineReads | None = None if loop_reader is None else InlineReads(
            loop_reader(), self.online_store,
            functools.partial(self.monitor.probing_s, "online_store"))

    def _registry_probe(self) -> int:
        generation = self.online.registry.generation()
        if self.on_generation is not None:
            self.on_generation(generation)
        return generation

    def _extras(self) -> dict[str, Any]:
        pusher = self.online.pusher
        return {"pending_push_rows": pusher.buffer.pending_rows, "push": pusher.health()}

    def deadline(self) -> float:
        return asyncio.get_running_loop().time() + self.config.request_timeout_s

    async def started(self) -> None:
        """Start the health checks and give them one round (bounded) before answering."""
        self.monitor.start()
        loop = asyncio.get_running_loop()
        until = loop.time() + self.config.request_timeout_s
        while not self.monitor.wait_first(0) and loop.time() < until:
            await asyncio.sleep(0.005)

    def health(self) -> tuple[bool, dict[str, Any]]:
        """(every backend ok, the checks) from the monitor's last results."""
        checks: dict[str, Any] = dict(self.monitor.snapshot())
        ok = all(checks[name]["ok"] for name in BACKENDS)
        online = self.online
        checks["cache"] = online.cache.stats() if online.cache is not None else None
        checks["generation"] = online.watcher.generation
        checks.update(self.monitor.extras)
        return ok, checks

    def push(self, view: str, body: bytes, principal: str | None) -> str:
        """The whole push on a worker thread: parse, check, convert, push (recorded as
        pushed by ``principal``)."""
        rows, flush = parse_push(body, self.config.max_push_rows)
        name, version = view_version(view)
        rec = self.store.get_view(name, version)
        table = rows_to_table(rec.definition, rows)
        return str(self.online.push(rec.name, table, version=rec.version, flush=flush,
                                    principal=principal))

    def close(self) -> None:
        self.monitor.close()
        self.reads.shutdown()
        self.writes.shutdown()
