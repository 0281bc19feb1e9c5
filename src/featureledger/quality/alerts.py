"""Alerts: records, notifications (log, webhook) and what the Prometheus gauge reads.

An alert is raised by a rule (``drift``, ``quarantine``, ``validation``, ``schema_drift``,
``skew``, ``bias``) about a subject (``view@version``, a commit, a deployment), with a
severity (``info``, ``warning``, ``critical``), its evidence (the statistics that tripped)
and the lineage node it concerns. Records are deduplicated: while an alert with the same
key is open, raising it again counts an occurrence instead of adding a row, and notifies
nobody.

Notifications of a new alert go to the ``featureledger.quality`` logger and, when
``quality.webhook`` is configured, to a webhook: a JSON POST sent by one background thread,
never by the thread that raised the alert (an ingestion never waits for it). A delivery
is retried on a connection error, a timeout or a 5xx / 429 answer, ``retries`` times, with
exponential backoff from ``backoff_s``; each attempt is bounded by ``timeout_s`` and the
whole delivery by ``deadline_s``, after which it is given up and logged. The queue is
bounded: past :data:`QUEUE_LIMIT` waiting alerts, new notifications are dropped (and
counted), never blocking the caller.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from featureledger.registry.quality import Alert, QualityRepository

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from featureledger.config import WebhookConfig
    from featureledger.context import StoreContext

log = logging.getLogger("featureledger.quality")
SEVERITIES = ("info", "warning", "critical")
QUEUE_LIMIT = 1000


@dataclass
class DeliveryStats:
    """What the webhook notifier did since it started."""

    delivered: int = 0
    failed: int = 0
    dropped: int = 0
    attempts: int = 0
    last_error: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)  # the last outcomes


class WebhookNotifier:
    """POSTs alerts as JSON from one background thread, with bounded retries."""

    def __init__(self, cfg: WebhookConfig) -> None:
        self.cfg = cfg
        self.stats = DeliveryStats()
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(QUEUE_LIMIT)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._idle = threading.Event()
        self._idle.set()
        self._closed = threading.Event()

    def send(self, payload: dict[str, Any]) -> bool:
        """Queue ``payload`` for delivery; False when the queue is full (dropped)."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="featureledger-webhook")
                self._thread.start()
        self._idle.clear()
        try:
            self._queue.put_nowait(payload)
        except queue.Full:
            self.stats.dropped += 1
            log.error("alert webhook queue full: dropped the notification of %s",
                      payload.get("alert_id"))
            return False
        return True

    def wait(self, timeout: float) -> bool:
        """Wait until every queued alert was delivered or given up; False on timeout."""
        return self._idle.wait(timeout)

    def _run(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=0.5)
            except queue.Empty:
                if self._closed.is_set():
                    return
                continue
            if item is None:
                self._idle.set()
                return
            self._deliver(item)
            if self._queue.empty():
                self._idle.set()

    def _deliver(self, payload: dict[str, Any]) -> None:
        cfg = self.cfg
        body = json.dumps(payload, default=str).encode()
        headers = {"Content-Type": "application/json", **cfg.headers}
        deadline = time.monotonic() + cfg.deadline_s
        wait = cfg.backoff_s
        error = "no attempt"
        for attempt in range(cfg.retries + 1):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.stats.attempts += 1
            req = urllib.request.Request(cfg.url, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(req, timeout=min(cfg.timeout_s, left)) as resp:
                    resp.read()
                self.stats.delivered += 1
                self._record(payload, "delivered", attempt + 1, None)
                return
            except urllib.error.HTTPError as exc:
                error = f"HTTP {exc.code}"
                if exc.code < 500 and exc.code != 429:
                    break  # the receiver refuses this payload: retrying will not help
            except (OSError, TimeoutError) as exc:  # refused, reset, timed out
                error = f"{type(exc).__name__}: {exc}"
            if attempt < cfg.retries:
                pause = min(wait, deadline - time.monotonic())
                if pause > 0 and self._closed.wait(pause):
                    break
                wait *= 2
        self.stats.failed += 1
        self.stats.last_error = error
        self._record(payload, "failed", None, error)
        log.error("alert %s not delivered to the webhook %s: %s (gave up)",
                  payload.get("alert_id"), cfg.url, error)

    def _record(self, payload: dict[str, Any], outcome: str, attempts: int | None,
                error: str | None) -> None:
        self.stats.history.append({"alert_id": payload.get("alert_id"), "outcome": outcome,
                                   "attempts": attempts, "error": error})
        del self.stats.history[:-100]

    def close(self, timeout: float = 2.0) -> None:
        """Stop after what is queued, waiting at most ``timeout`` seconds (a delivery
        still running then is abandoned: the thread is a daemon)."""
        self._closed.set()
        t = self._thread
        if t is not None:
            with contextlib.suppress(queue.Full):
                self._queue.put_nowait(None)
            t.join(timeout)


class AlertService:
    """Raise, list and acknowledge alerts; notify new ones."""

    def __init__(self, ctx: StoreContext) -> None:
        self.ctx = ctx
        self.repo = QualityRepository(ctx.registry.db)
        cfg = ctx.config.quality
        self.webhook = WebhookNotifier(cfg.webhook) if cfg.webhook is not None else None

    def raise_alert(self, *, rule: str, severity: str, subject: str, message: str,
                    evidence: dict[str, Any], lineage_node: str | None = None,
                    dedup_key: str | None = None) -> Alert:
        """Record an alert (deduplicated on ``dedup_key``, default ``rule:subject``) and
        notify when it is new."""
        with self.ctx.registry.db.write(bump=False) as conn:
            alert, new = self.raise_alert_in(
                conn, rule=rule, severity=severity, subject=subject, message=message,
                evidence=evidence, lineage_node=lineage_node, dedup_key=dedup_key)
        if new:
            self._notify(alert)
        return alert

    def raise_alert_in(self, conn: Connection, *, rule: str, severity: str, subject: str,
                       message: str, evidence: dict[str, Any],
                       lineage_node: str | None = None, dedup_key: str | None = None
                       ) -> tuple[Alert, bool]:
        """Record an alert inside the caller's write transaction ``conn``; returns it and
        whether it is new. Nobody is notified: the caller passes the new ones to
        :meth:`notify` once its transaction committed (a rolled-back alert is never sent)."""
        if severity not in SEVERITIES:
            from featureledger.errors import QualityError

            raise QualityError(f"alert severity {severity!r} is not known; use one of "
                               f"{', '.join(SEVERITIES)}")
        return self.repo.raise_alert_in(
            conn, dedup_key=dedup_key or f"{rule}:{subject}", rule=rule, severity=severity,
            subject=subject, message=message, evidence=evidence, lineage_node=lineage_node)

    def notify(self, alerts: list[Alert]) -> None:
        """Notify ``alerts`` (new ones, recorded by a transaction that committed)."""
        for alert in alerts:
            self._notify(alert)

    def _notify(self, alert: Alert) -> None:
        if self.ctx.config.quality.log_alerts:
            level = logging.ERROR if alert.severity == "critical" else logging.WARNING
            log.log(level, "alert %s [%s] %s: %s", alert.alert_id, alert.severity,
                    alert.subject, alert.message)
        if self.webhook is not None:
            self.webhook.send({"type": "featureledger.alert", "project": self.ctx.registry.project,
                               **alert.to_dict()})

    def alerts(self, *, status: str | None = None, subject: str | None = None,
               limit: int | None = None) -> list[Alert]:
        return self.repo.alerts(status=status, subject=subject, limit=limit)

    def acknowledge(self, alert_id: str, reason: str | None = None) -> Alert:
        return self.repo.acknowledge(alert_id, reason)

    def open_counts(self) -> dict[str, int]:
        return self.repo.open_counts()

    def close(self) -> None:
        if self.webhook is not None:
            self.webhook.close()
