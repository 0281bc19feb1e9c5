"""The feature log: a sample of online requests with the values served, for skew checks.

A request made for a deployment or a model is logged with probability
``quality.feature_log_sample_rate`` (one row per entity row, ``{reference: value}``).
Rows are buffered in memory and written to the registry's ``feature_log`` table in
batches (``feature_log_batch_rows`` per transaction, or what has waited
``feature_log_flush_interval_s``), by a background thread: a request never waits for a
write, and there is never one write per request. ``close`` writes what is left.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from featureledger.model.timeutil import now_us
from featureledger.registry.quality import QualityRepository

log = logging.getLogger("featureledger.quality")


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, (int, float, str, bool)) or v is None:
        return v
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return str(v)


class FeatureLogger:
    """Samples served feature vectors and writes them in batches."""

    def __init__(self, repo: QualityRepository, *, sample_rate: float, batch_rows: int,
                 flush_interval_s: float, seed: int | None = None) -> None:
        self.repo = repo
        self.sample_rate = sample_rate
        self.batch_rows = batch_rows
        self.flush_interval_s = flush_interval_s
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._rows: list[tuple[int, str | None, str | None, dict[str, Any]]] = []
        self._first = 0.0
        self._writer: ThreadPoolExecutor | None = None
        self.written = 0
        self.batches = 0

    @property
    def enabled(self) -> bool:
        return self.sample_rate > 0

    def maybe_log(self, values: Mapping[str, Sequence[Any]], references: Mapping[str, str],
                  *, deployment_id: str | None, model_id: str | None) -> bool:
        """Log this request's rows with probability ``sample_rate``; True when sampled."""
        if not self.enabled or self._rng.random() >= self.sample_rate:
            return False
        names = [n for n in values if n in references]
        n = len(values[names[0]]) if names else 0
        at = now_us()
        rows = [(at, deployment_id, model_id,
                 {references[name]: _jsonable(values[name][i]) for name in names})
                for i in range(n)]
        with self._lock:
            if not self._rows:
                self._first = time.monotonic()
            self._rows.extend(rows)
            due = (len(self._rows) >= self.batch_rows
                   or time.monotonic() - self._first >= self.flush_interval_s)
            batch = self._take() if due else None
        if batch:
            self._submit(batch)
        return True

    def _take(self) -> list[tuple[int, str | None, str | None, dict[str, Any]]]:
        batch, self._rows = self._rows, []
        return batch

    def _submit(self, batch: list[tuple[int, str | None, str | None, dict[str, Any]]]) -> None:
        with self._lock:
            if self._writer is None:
                self._writer = ThreadPoolExecutor(1, thread_name_prefix="featureledger-flog")
            writer = self._writer
        writer.submit(self._write, batch)

    def _write(self, batch: list[tuple[int, str | None, str | None, dict[str, Any]]]) -> None:
        try:
            self.repo.log_features(batch)
            self.written += len(batch)
            self.batches += 1
        except Exception:
            log.warning("a batch of %d sampled feature rows could not be written to the "
                        "feature log (dropped)", len(batch), exc_info=True)

    def flush(self) -> None:
        """Write what is buffered now and wait for every pending batch."""
        with self._lock:
            batch = self._take()
            writer = self._writer
            self._writer = None
        if writer is not None:
            writer.shutdown(wait=True)
        if batch:
            self._write(batch)

    def close(self) -> None:
        self.flush()
