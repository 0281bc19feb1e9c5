"""Windowed aggregations in historical retrieval and materialization.

A view's :class:`~featureledger.model.definitions.Aggregation` is requested like a
feature (``trips:fare_sum_7d``). Retrieval plans it per view version (what column, which
function, how wide a window), reads the same commits a point-in-time join of that view
would (``as_of``, quarantine, rollback: the commits handed to the engine), and asks the
engine for every entity row at once (``OfflineEngine.window_aggregate``): set-based, never
a loop over rows. Materialization asks the same question for every key at one time, the
materialization time.

Semantics (every engine, offline and online): the value at time ``t`` aggregates the
view's effective rows of the same keys with ``t - window < event_ts <= t``; ``t`` is first
rounded down to a multiple of ``slide`` when the aggregation has one. Effective rows: of
rows with the same keys and event time, only the one with the later created time, then
the later commit, counts (once, with its values).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from featureledger.errors import StorageError
from featureledger.offline.engine import ROW_COLUMN, WindowAggregate

if TYPE_CHECKING:
    import pyarrow as pa

    from featureledger.model.definitions import Aggregation, FeatureView
    from featureledger.offline.engine import OfflineEngine, ViewScan


def aggregation_request(agg: Aggregation, view: FeatureView, output: str) -> dict[str, Any]:
    """What a request (and its manifest) records of one aggregation: JSON-ready."""
    column_dtype = view.field(agg.column).dtype
    return {"name": agg.output_name, "column": agg.column, "column_dtype": column_dtype,
            "function": agg.function, "window_us": agg.window_us, "slide_us": agg.slide_us,
            "dtype": agg.output_dtype(column_dtype), "output": output}


def aggregated_columns(specs: Sequence[dict[str, Any]]) -> list[str]:
    """The distinct fields the aggregations read, first-seen order."""
    return list(dict.fromkeys(s["column"] for s in specs))


def window_aggregates(specs: Sequence[dict[str, Any]]) -> list[WindowAggregate]:
    """The engine's form of ``specs`` (columns indexed as :func:`aggregated_columns`)."""
    columns = aggregated_columns(specs)
    return [WindowAggregate(column=columns.index(s["column"]), function=s["function"],
                            window_us=int(s["window_us"]),
                            slide_us=None if s["slide_us"] is None else int(s["slide_us"]),
                            output=s["output"], dtype=s["dtype"]) for s in specs]


def reach_us(specs: Sequence[dict[str, Any]]) -> int:
    """How far before an entity time the aggregations read (window plus slide)."""
    return max((int(s["window_us"]) + int(s["slide_us"] or 0) for s in specs), default=0)


def compute_aggregates(engine: OfflineEngine, probe: pa.Table, ts_col: str, scan: ViewScan,
                       specs: Sequence[dict[str, Any]],
                       bounds: tuple[int, int] | None) -> pa.Table:
    """The aggregations of every row of ``probe`` (``_row`` 0..n-1, the time column and
    the join keys), one column each, in ``probe``'s row order."""
    import numpy as np
    import pyarrow as pa

    n = probe.num_rows
    result = engine.window_aggregate(probe, ts_col, scan, window_aggregates(specs),
                                     bounds).read_all()
    if result.num_rows != n:
        raise StorageError(f"internal: the aggregation returned {result.num_rows} rows for "
                           f"{n} entity rows; please report this")
    order = np.empty(n, dtype=np.int64)
    order[result.column(ROW_COLUMN).to_numpy()] = np.arange(n, dtype=np.int64)
    return result.drop_columns([ROW_COLUMN]).take(pa.array(order))
