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
    """Rows (records, a dict of columns, pandas, Polars or Arrow) as an Arrow table with the
    view's key, timestamp and feature columns in their declared types.

    A missing feature column is filled with the field's declared default, else nulls; a
    value that does not fit its type, a null in a non-nullable field, or a value outside
    the field's range or allowed values rejects the whole push.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    from featureledger.model.types import to_arrow

    table = _as_arrow(rows)
    problems: list[str] = []
    cols: dict[str, Any] = {}
    n = table.num_rows
    wanted = [(k, t, False, None) for k, t in view.join_keys.items()]
    wanted.append((view.timestamp_field, "timestamp", False, None))
    wanted += [(f.name, f.dtype, f.nullable, f) for f in view.fields]
    for name, dtype, nullable, fld in wanted:
        arrow_type = to_arrow(dtype)
        if name not in table.column_names:
            if fld is not None and fld.default is not None:
                cols[name] = pa.array([fld.default] * n, type=arrow_type)
                continue
            if fld is not None and nullable:
                cols[name] = pa.nulls(n, type=arrow_type)
                continue
            problems.append(f"column {name!r} is missing")
            continue
        col = table.column(name)
        try:
            if dtype == "timestamp" and pa.types.is_timestamp(col.type) and col.type.tz is None:
                col = pc.assume_timezone(col, "UTC")  # naive times are UTC
            col = col.cast(arrow_type, safe=True)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
            problems.append(f"column {name!r} does not fit dtype {dtype}: {exc}")
            continue
        if not nullable and col.null_count:
            problems.append(f"column {name!r} has {col.null_count} null(s) but is not nullable")
        if fld is not None:
            problems += _range_problems(fld, col)
        cols[name] = col
    extra = sorted(set(table.column_names) - {w[0] for w in wanted})
    if extra:
        problems.append(f"unknown column(s) {', '.join(map(repr, extra))}")
    if problems:
        raise ValidationFailedError(
            f"push to {view.name!r} rejected; nothing was written: " + "; ".join(problems)
            + ". Fix the rows to match the view's schema (see 'featureledger show "
            + view.name + "')."
        )
    return pa.table(cols)


def _range_problems(fld: Any, col: Any) -> list[str]:
    import pyarrow.compute as pc

    out = []
    if fld.min is not None and not fld.dtype.startswith("list<"):
        bad = pc.sum(pc.less(col, fld.min).cast("int64")).as_py() or 0
        if bad:
            out.append(f"{bad} value(s) of {fld.name!r} below min {fld.min!r}")
    if fld.max is not None and not fld.dtype.startswith("list<"):
        bad = pc.sum(pc.greater(col, fld.max).cast("int64")).as_py() or 0
        if bad:
            out.append(f"{bad} value(s) of {fld.name!r} above max {fld.max!r}")
    if fld.allowed_values is not None and not fld.dtype.startswith("list<"):
        import pyarrow as pa

        ok = pc.is_in(col, value_set=pa.array(fld.allowed_values).cast(col.type))
        bad = pc.sum(pc.invert(pc.fill_null(ok, True)).cast("int64")).as_py() or 0
        if bad:
            out.append(f"{bad} value(s) of {fld.name!r} not among allowed_values")
    return out


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
