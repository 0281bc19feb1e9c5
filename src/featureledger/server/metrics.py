"""Prometheus metrics of the feature server: latency, requests, errors, cache, admission,
and governance gauges (denied requests, deprecated reads, retention backlog, ...).

Each app has its own ``CollectorRegistry`` (two apps in one process never clash). The
middleware is plain ASGI: it times the request, reads the route template that FastAPI
matched (so ``/catalog/views/{name}`` is one label, not one per view) and the status sent.
Shed and refused requests are in the error counts by code (``overloaded``,
``circuit_open``, ``deadline_exceeded``, ``request_too_large``, ...); the worker pools and
breakers are read at scrape time.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class ServerMetrics:
    def __init__(self, cache_stats: Any) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.latency = Histogram(
            "featureledger_request_seconds", "Request latency by route and method.",
            ["route", "method"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.requests = Counter(
            "featureledger_requests", "Requests by route, method and status code.",
            ["route", "method", "status"], registry=self.registry)
        self.errors = Counter(
            "featureledger_errors", "Error responses by route and error code.",
            ["route", "code"], registry=self.registry)
        self.registry.register(_CacheCollector(cache_stats))

    def watch(self, serving: Any) -> None:
        """Export the worker pools and circuit breakers of ``serving`` (a ``Serving``)."""
        self.registry.register(_ServingCollector(serving))

    def watch_governance(self, gauges: Any, *, max_age_s: float = 30.0) -> None:
        """Export governance metrics: ``gauges()`` returns ``{name: value}`` (a
        ``GovernanceReport.gauges()``), computed at most every ``max_age_s`` seconds."""
        self.registry.register(_GovernanceCollector(gauges, max_age_s))
    def watch_alerts(self, open_counts: Any) -> None:
        """Export the open data-quality alerts (``open_counts()``: severity -> count)."""
        self.registry.register(_AlertCollector(open_counts))

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self.latency.labels(route, method).observe(seconds)
        self.requests.labels(route, method, str(status)).inc()


class _CacheCollector:
    """Cache statistics read at scrape time."""

    def __init__(self, cache_stats: Any) -> None:
        self._stats = cache_stats

    def collect(self) -> Any:
        stats = self._stats() or {"hits": 0, "misses": 0, "hit_ratio": 0.0, "entries": 0}
        yield GaugeMetricFamily("featureledger_cache_hit_ratio",
                                "Share of online lookups answered by the cache.",
                                value=stats["hit_ratio"])
        yield GaugeMetricFamily("featureledger_cache_entries", "Records in the online cache.",
                                value=stats["entries"])
        yield GaugeMetricFamily("featureledger_cache_hits", "Cache hits since start.",
                                value=stats["hits"])
        yield GaugeMetricFamily("featureledger_cache_misses", "Cache misses since start.",
                                value=stats["misses"])


class _AlertCollector:
    """Open data-quality alerts by severity, read from the registry at scrape time (a
    registry that does not answer leaves the gauge out rather than failing the scrape)."""

    SEVERITIES = ("info", "warning", "critical")

    def __init__(self, open_counts: Any) -> None:
        self._counts = open_counts

    def collect(self) -> Any:
        try:
            counts = self._counts()
        except Exception:
            return
        g = GaugeMetricFamily("featureledger_open_alerts",
                              "Open data-quality alerts, by severity.", labels=["severity"])
        for sev in self.SEVERITIES:
            g.add_metric([sev], counts.get(sev, 0))
        yield g


class _ServingCollector:
    """Worker pools and circuit breakers, read at scrape time."""

    def __init__(self, serving: Any) -> None:
        self._serving = serving

    def collect(self) -> Any:
        pools = (self._serving.reads, self._serving.writes)
        busy = GaugeMetricFamily("featureledger_workers_busy",
                                 "Worker threads running a store call, by pool.",
                                 labels=["pool"])
        waiting = GaugeMetricFamily("featureledger_requests_waiting",
                                    "Requests waiting for a worker, by pool.", labels=["pool"])
        for pool in pools:
            busy.add_metric([pool.name], pool.busy)
            waiting.add_metric([pool.name], pool.waiting)
        yield busy
        yield waiting
        state = GaugeMetricFamily("featureledger_breaker_open",
                                  "1 while a backend's circuit breaker is open or half-open.",
                                  labels=["backend"])
        opened = CounterMetricFamily("featureledger_breaker_opened",
                                     "Times a backend's circuit breaker opened.",
                                     labels=["backend"])
        for name, breaker in self._serving.breakers.items():
            state.add_metric([name], 0 if breaker.state == "closed" else 1)
            opened.add_metric([name], breaker.opened_count)
        yield state
        yield opened
        inline = self._serving.inline
        if inline is not None:
            yield CounterMetricFamily(
                "featureledger_inline_reads", "Online reads answered on the event loop.",
                value=inline.answered)
            yield CounterMetricFamily(
                "featureledger_inline_pauses", "Times online reads stopped being answered "
                "on the event loop for a while (one was slow or failed).",
                value=inline.pauses)


class _GovernanceCollector:
    """Governance gauges (``featureledger_governance_<name>``), read at scrape time from a
    report no older than ``max_age_s`` (a report reads the registry: not once per scrape)."""

    _HELP: ClassVar[dict[str, str]] = {
        "denied_requests": "Audit entries of denied requests.",
        "deprecated_reads": "Reads of deprecated features in the last 7 days.",
        "deprecated_features_read": "Deprecated features read in the last 7 days.",
        "undocumented": "Views and features without an owner or a description.",
        "retention_backlog_commits": "Commits the retention policies expire now.",
        "retention_backlog_rows": "Rows of the commits the retention policies expire now.",
        "unreviewed_breaking_changes": "Breaking changes no other principal reviewed.",
        "unapproved_deprecations": "Deprecations in effect without an approval.",
    }

    def __init__(self, gauges: Any, max_age_s: float) -> None:
        self._gauges = gauges
        self._max_age_s = max_age_s
        self._cached: tuple[float, dict[str, float]] | None = None

    def describe(self) -> list[Any]:
        # registering would otherwise run a whole report to learn the metric names
        return []

    def collect(self) -> Any:
        now = time.monotonic()
        if self._cached is None or now - self._cached[0] > self._max_age_s:
            self._cached = (now, dict(self._gauges()))
        for name, value in self._cached[1].items():
            yield GaugeMetricFamily(f"featureledger_governance_{name}",
                                    self._HELP.get(name, name.replace("_", " ")),
                                    value=float(value))


class MetricsMiddleware:
    """ASGI middleware recording every HTTP request in ``metrics``."""

    def __init__(self, app: Any, metrics: ServerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = [500]

        async def send_wrapper(message: Any) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            label = getattr(route, "path", None) or "unmatched"
            self.metrics.observe(label, scope.get("method", ""), status[0],
                                 time.perf_counter() - t0)
