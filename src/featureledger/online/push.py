"""Push: rows written online at once, landing offline as micro-batched commits.

Pushed rows are validated against the view version's schema, written to the online store
immediately (tagged with the commit they will land in), and buffered; a buffer becomes
one offline commit when it holds ``push_flush_rows`` rows, when its oldest row is older
than ``push_flush_interval_s`` at the next push, on ``flush()`` and on close. The commit id
and commit time are fixed when the buffer opens, so the online record and the offline row
carry the same provenance and the same tie-break order.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from featureledger.errors import ValidationFailedError
from featureledger.model.definitions import FeatureView
from featureledger.model.ids import new_id
from featureledger.model.timeutil import now_us
from featureledger.offline.storage import COMMIT_ID_COLUMN, COMMIT_TIME_COLUMN

if TYPE_CHECKING:
    import pyarrow as pa

    from featureledger.online.stores import TableRef
    from featureledger.registry.commits import CommitRecord


def to_view_table(view: FeatureView, rows: Any) -> pa.Table:
    """Rows (records, a dict of columns, pandas, Polars or Arrow) shaped and validated as
    ingestion does (exact casts, defaults of missing columns, ranges, allowed values, row
    checks, one row per key and time); any invalid row rejects the whole push.
    """
    import numpy as np

    from featureledger.ingest.casting import conform
    from featureledger.ingest.validation import validate

    table = _as_arrow(rows)
    if table.num_rows == 0:
        raise ValidationFailedError(f"push to {view.name!r} got no rows; pass at least one")
    conformed = conform(table, view)
    outcome = validate(conformed, view, raw=table,
                       row_numbers=np.arange(table.num_rows, dtype=np.int64), mode="strict")
    if outcome.bad is not None:
        raise ValidationFailedError(
            f"push to {view.name!r} rejected; nothing was written:\n"
            f"{outcome.report.summary()}\nFix the rows to match the view's schema and checks.",
            outcome.report,
        )
    return conformed.table


def _as_arrow(rows: Any) -> pa.Table:
    import pyarrow as pa

    if isinstance(rows, pa.Table):
        return rows
    if isinstance(rows, pa.RecordBatch):
        return pa.Table.from_batches([rows])
    if isinstance(rows, dict):
        return pa.table({k: v if isinstance(v, (list, pa.Array, pa.ChunkedArray)) else [v]
                         for k, v in rows.items()})
    if isinstance(rows, list):
        if not rows:
            raise ValidationFailedError("push got no rows; pass at least one row")
        return pa.Table.from_pylist(rows)
    if hasattr(rows, "to_arrow"):  # Polars
        return rows.to_arrow()
    if hasattr(rows, "to_dict") and hasattr(rows, "columns"):  # pandas
        return pa.Table.from_pandas(rows, preserve_index=False)
    raise ValidationFailedError(
        f"push cannot read rows of type {type(rows).__name__}; pass a list of dicts, a dict "
        "of columns, a pandas or Polars DataFrame, or a pyarrow Table"
    )


@dataclass
class PendingCommit:
    """Rows pushed to one view version, waiting to land offline as one commit."""

    table: TableRef
    view: FeatureView
    commit_id: str = field(default_factory=lambda: new_id("cmt"))
    commit_time: int = field(default_factory=now_us)
    opened: float = field(default_factory=time.monotonic)
    tables: list[Any] = field(default_factory=list)
    rows: int = 0

    def add(self, table: pa.Table) -> pa.Table:
        """Append rows (tagged with this commit) and return them as stored."""
        import pyarrow as pa

        n = table.num_rows
        tagged = table.append_column(
            COMMIT_ID_COLUMN, pa.array([self.commit_id] * n, type=pa.string())
        ).append_column(
            COMMIT_TIME_COLUMN,
            pa.array([self.commit_time] * n, type=pa.int64()).cast(pa.timestamp("us", "UTC")),
        )
        self.tables.append(tagged)
        self.rows += n
        return tagged


class PushBuffer:
    """Pending commits per view version, flushed through ``land``."""

    def __init__(self, land: Any, max_rows: int, max_age_s: float) -> None:
        self._land = land  # callable(PendingCommit) -> CommitRecord
        self.max_rows = max_rows
        self.max_age_s = max_age_s
        self._pending: dict[TableRef, PendingCommit] = {}
        self._lock = threading.RLock()

    def pending(self, table: TableRef, view: FeatureView) -> PendingCommit:
        with self._lock:
            p = self._pending.get(table)
            if p is None:
                p = self._pending[table] = PendingCommit(table, view)
            return p

    def due(self) -> list[TableRef]:
        now = time.monotonic()
        with self._lock:
            return [t for t, p in self._pending.items()
                    if p.rows >= self.max_rows or now - p.opened >= self.max_age_s]

    def flush(self, tables: list[TableRef] | None = None) -> list[CommitRecord]:
        out = []
        with self._lock:
            for t in list(self._pending) if tables is None else tables:
                p = self._pending.get(t)
                if p is None:
                    continue
                if p.rows:
                    out.append(self._land(p))  # on failure the rows stay buffered
                del self._pending[t]
        return out

    @property
    def pending_rows(self) -> int:
        return sum(p.rows for p in self._pending.values())
