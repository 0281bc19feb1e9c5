"""Usage counters: online reads per (deployment, feature version, time bucket).

Serving never writes a row per request. Callers add counts to a ``UsageRecorder`` (in
memory, thread-safe); it flushes them as upserts, summed per key, when its interval has
passed, when asked, and when the store closes. ``record_usage`` is the upsert itself, for a
caller that already aggregated (the online service, a server's periodic flush).

>>> bucket_start(3_700_000_000, 3600)
3600000000
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import sqlalchemy as sa

from featureledger.model.timeutil import now_us
from featureledger.registry import schema
from featureledger.registry.engine import RegistryDB

DEFAULT_BUCKET_SECONDS = 3600
UsageKey = tuple[str, str, int]  # deployment id, view@version, bucket start (µs)


def bucket_start(ts_us: int, bucket_seconds: int = DEFAULT_BUCKET_SECONDS) -> int:
    """The start (µs) of the bucket holding ``ts_us``."""
    width = bucket_seconds * 1_000_000
    return ts_us - ts_us % width


def record_usage(db: RegistryDB, counts: Mapping[UsageKey, tuple[int, int]]) -> int:
    """Add ``(requests, rows)`` to each ``(deployment, feature version, bucket)`` counter.

    One transaction; an insert-or-increment per key, so concurrent writers add up.
    Returns the number of counters touched.
    """
    return upsert_counters(db, schema.deployment_usage,
                           ("deployment_id", "feature_version", "bucket_start"), counts)


def upsert_counters(db: RegistryDB, table: Any, key_columns: tuple[str, str, str],
                    counts: Mapping[UsageKey, tuple[int, int]]) -> int:
    """Add ``(requests, rows)`` to the counters of ``table`` keyed by the project and
    ``key_columns``, in one transaction (an insert-or-increment per key)."""
    if not counts:
        return 0
    t = table
    rows = [{"project": db.project, **dict(zip(key_columns, key, strict=True)),
             "requests": int(req), "rows": int(n)}
            for key, (req, n) in counts.items()]
    with db.write(bump=False) as conn:  # counters change no definition or data
        from sqlalchemy.dialects import postgresql, sqlite

        dialect: Any = postgresql if conn.dialect.name == "postgresql" else sqlite
        stmt = dialect.insert(t)
        stmt = stmt.on_conflict_do_update(
            index_elements=[t.c.project, *(t.c[k] for k in key_columns)],
            set_={"requests": t.c.requests + stmt.excluded.requests,
                  "rows": t.c.rows + stmt.excluded.rows})
        conn.execute(stmt, rows)
    return len(rows)


def read_usage(db: RegistryDB, deployment_id: str | None = None) -> list[dict[str, Any]]:
    """Counters, oldest bucket first."""
    t = schema.deployment_usage
    q = (sa.select(t).where(db.scope(t))
         .order_by(t.c.bucket_start, t.c.deployment_id, t.c.feature_version))
    if deployment_id is not None:
        q = q.where(t.c.deployment_id == deployment_id)
    with db.read() as conn:
        return [dict(r._mapping) for r in conn.execute(q)]


class UsageRecorder:
    """Aggregates usage in memory and flushes it as counters."""

    def __init__(self, db: RegistryDB, *, bucket_seconds: int = DEFAULT_BUCKET_SECONDS,
                 flush_interval_s: float = 10.0,
                 record: Callable[[RegistryDB, Mapping[UsageKey, tuple[int, int]]], int]
                 = record_usage) -> None:
        self.db = db
        # the upsert of the summed counts (default: the deployments' usage counters)
        self._record = record
        self.bucket_seconds = bucket_seconds
        self.flush_interval_s = flush_interval_s
        self._pending: Counter[tuple[UsageKey, str]] = Counter()
        self._lock = threading.Lock()
        self._last_flush = time.monotonic()

    def add(self, deployment_id: str, feature_versions: Iterable[str], rows: int = 1,
            at_us: int | None = None) -> None:
        """Count one request of ``rows`` entity rows reading ``feature_versions`` (for
        another ``record``: one read by reader ``deployment_id`` of those features)."""
        b = bucket_start(now_us() if at_us is None else at_us, self.bucket_seconds)
        with self._lock:
            for fv in dict.fromkeys(feature_versions):
                self._pending[((deployment_id, fv, b), "requests")] += 1
                self._pending[((deployment_id, fv, b), "rows")] += rows
            due = time.monotonic() - self._last_flush >= self.flush_interval_s
        if due:
            self.flush()

    def flush(self) -> int:
        with self._lock:
            pending, self._pending = self._pending, Counter()
            self._last_flush = time.monotonic()
        counts: dict[UsageKey, tuple[int, int]] = {}
        for (key, what), n in pending.items():
            req, rows = counts.get(key, (0, 0))
            counts[key] = (req + n, rows) if what == "requests" else (req, rows + n)
        try:
            return self._record(self.db, counts)
        except Exception:
            with self._lock:  # keep the counts for the next flush rather than lose them
                self._pending.update(pending)
            raise
