"""Windowed aggregations online: materialized as of the materialization time, served
like features.

A view version with aggregations has a second online table, ``<view>:agg@<version>``
(a name no view can have: ``:`` is not allowed in names), holding per key the value of
every aggregation at the materialization time ``end``: the same engine call historical
retrieval makes (:meth:`OfflineEngine.window_aggregate`) for one entity row per key at
``end``, so the online values equal a training set's at that time. Every materialization
recomputes every key the view has (a key whose window emptied gets ``count`` 0 and nulls),
and replaces the stored records (the value of an aggregation depends on the time, not only
on the newest row). A record's event time is ``end``; its commit is the newest commit read.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from featureledger.model.definitions import FeatureView, Field
from featureledger.online.stores import OnlineRecord, OnlineStore, TableRef

if TYPE_CHECKING:
    import pyarrow as pa

    from featureledger.model.projection import VersionProjection
    from featureledger.offline.engine import OfflineEngine
    from featureledger.offline.interface import OfflineStore
    from featureledger.registry.commits import CommitRecord

AGG_SUFFIX = ":agg"
_BATCH = 10_000


def aggregate_table(table: TableRef) -> TableRef:
    """The online table of ``table``'s aggregations."""
    return TableRef(f"{table.view}{AGG_SUFFIX}", table.version)


def is_aggregate_table(table: TableRef) -> bool:
    return table.view.endswith(AGG_SUFFIX)


def aggregate_view(view: FeatureView) -> FeatureView:
    """A view whose fields are ``view``'s aggregations (their names and result dtypes):
    how the read path decodes and lays out the aggregate records. Each keeps the tags of
    the field it aggregates (an aggregate of a ``pii`` field is governed as one)."""
    return view.model_copy(update={
        "fields": [Field(name=a.output_name, dtype=a.output_dtype(view.field(a.column).dtype),
                         tags=view.field(a.column).tags)
                   for a in view.aggregations],
        "aggregations": [], "ttl": None, "checks": [], "transformation": None})


def _specs(view: FeatureView) -> list[dict[str, Any]]:
    from featureledger.offline.aggregation import aggregation_request

    return [aggregation_request(a, view, a.output_name) for a in view.aggregations]


def aggregates_at(engine: OfflineEngine, offline: OfflineStore, view: FeatureView,
                  chain: Sequence[VersionProjection], commits: Sequence[CommitRecord],
                  at_us: int, keys: Sequence[tuple[Any, ...]] | None = None) -> pa.Table:
    """Every key of ``commits`` (or the given ``keys``) with each aggregation's value at
    ``at_us``: the join keys, then one column per aggregation."""
    import pyarrow as pa

    from featureledger.model.types import to_arrow
    from featureledger.offline.aggregation import aggregated_columns, compute_aggregates
    from featureledger.offline.engine import ROW_COLUMN, ViewScan
    from featureledger.offline.retrieval import commits_overlap

    specs = _specs(view)
    columns = aggregated_columns(specs)
    dtypes = {s["column"]: s["column_dtype"] for s in specs}

    def scan_of(cs: Sequence[CommitRecord]) -> ViewScan:
        return ViewScan.of(
            join_keys=list(view.join_keys), timestamp_field=view.timestamp_field,
            created_field=view.created_timestamp_field, features=columns,
            output_names=columns, dtypes=[dtypes[c] for c in columns], ttl_us=None,
            store=offline, commits=cs, chain=chain, tie_break=commits_overlap(cs),
            event_range=None)

    with offline.reading(commits):
        if keys is None:
            keys = engine.distinct_keys(scan_of(commits)) if commits else []
        keys = [k for k in keys if None not in k]
        n = len(keys)
        cols = list(zip(*keys, strict=True)) if keys else [() for _ in view.join_keys]
        probe = pa.table({
            **{k: pa.array(list(c), type=to_arrow(t))
               for (k, t), c in zip(view.join_keys.items(), cols, strict=True)},
            "_fl_at": pa.array([at_us] * n, pa.timestamp("us", tz="UTC")),
            ROW_COLUMN: pa.array(range(n), pa.int64())})
        values = compute_aggregates(engine, probe, "_fl_at", scan_of(commits), specs,
                                    (at_us, at_us) if n else None)
    return pa.Table.from_arrays(
        [probe.column(k) for k in view.join_keys] + list(values.columns),
        names=[*view.join_keys, *values.column_names])


def write_aggregates(store: OnlineStore, table: TableRef, view: FeatureView,
                     values: pa.Table, at_us: int, commit: CommitRecord | None) -> int:
    """Replace the aggregate records of ``table`` with ``values`` (see :func:`aggregates_at`)."""
    from featureledger.online.codec import KeyCodec, ValueCodec

    agg = aggregate_view(view)
    keys = KeyCodec(view.join_keys).encode_columns(
        [values.column(k).to_pylist() for k in view.join_keys])
    codec = ValueCodec([f.dtype for f in agg.fields])
    rows = zip(*(values.column(f.name).to_pylist() for f in agg.fields), strict=True)
    ct = 0 if commit is None else commit.commit_time
    cid = "" if commit is None else commit.commit_id
    records = [OnlineRecord(k, at_us, ct, cid, codec.encode(list(r)))
               for k, r in zip(keys, rows, strict=True)]
    written = 0
    target = aggregate_table(table)
    for i in range(0, len(records), _BATCH):
        written += store.write(target, records[i:i + _BATCH], force=True)
    return written


def refresh_aggregates(engine: OfflineEngine, offline: OfflineStore, store: OnlineStore,
                       table: TableRef, view: FeatureView, chain: Sequence[VersionProjection],
                       commits: Sequence[CommitRecord], at_us: int,
                       keys: Sequence[tuple[Any, ...]] | None) -> int:
    """Recompute the aggregate records of ``keys`` (None: every key; the table is then
    rebuilt) as of ``at_us``, the time the last materialization computed them for, from
    ``commits`` (the commits served now): what a quarantine, rollback or restore of a
    commit changes, without waiting for the next materialization. A key whose windows
    emptied gets ``count`` 0 and nulls, as a materialization gives it."""
    live = [c for c in commits if c.row_count
            and (c.min_event_ts is None or c.min_event_ts <= at_us)]
    values = aggregates_at(engine, offline, view, chain, live, at_us, keys)
    if keys is None:
        store.delete(aggregate_table(table))
    return write_aggregates(store, table, view, values, at_us, live[-1] if live else None)
