"""Materialization: the latest committed value per entity key, from the offline commit files
into the online store, tagged with the view version and commit it came from.

One set-based DuckDB query per view version picks, among the rows of the chosen commits
(the version's own and those of the older versions it carries data from, projected onto
its schema) with ``start <= event time <= end``, the newest row per key (ties on event
time go to the later created time, then the later commit, as in point-in-time retrieval;
the SQL is :func:`featureledger.offline.engine.latest_per_key_sql`); the result is written in batches with the
store's conditional upsert, so an older event time never overwrites a newer one and a
rerun changes nothing (idempotent).

Progress is recorded per view version in the online store's metadata (``mat:<view>@<v>``:
the event-time high-water mark and the commits already loaded). A run that stops halfway
leaves the versions it finished recorded; running again redoes only the rest (resumable).
``materialize_incremental(end)`` loads exactly what is missing up to ``end``: rows of new
commits with event time ``<= end``, and rows of known commits newer than the mark.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from featureledger.model.definitions import FeatureView
from featureledger.model.projection import VersionProjection
from featureledger.offline.engine import ViewScan
from featureledger.online.codec import KeyCodec, ValueCodec
from featureledger.online.stores import OnlineRecord, OnlineStore, TableRef
from featureledger.registry.commits import CommitRecord

if TYPE_CHECKING:
    import pyarrow as pa

    from featureledger.offline.engine import OfflineEngine
    from featureledger.offline.interface import OfflineStore

_BATCH = 10_000


def state_key(table: TableRef) -> str:
    return f"mat:{table}"


@dataclass
class ViewProgress:
    """What has been loaded into one table: every row of ``commits`` with event time <= end."""

    end: int | None = None
    commits: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, store: OnlineStore, table: TableRef) -> ViewProgress | None:
        raw = store.get_meta(state_key(table))
        if raw is None:
            return None
        data = json.loads(raw)
        return cls(data.get("end"), list(data.get("commits", [])))

    def save(self, store: OnlineStore, table: TableRef) -> None:
        store.set_meta(state_key(table), json.dumps({"end": self.end, "commits": self.commits}))


@dataclass
class TableResult:
    """What materializing one view version did."""

    table: TableRef
    commits: list[str]
    rows_read: int
    keys_written: int
    seconds: float


def encode_records(view: FeatureView, table: pa.Table) -> list[OnlineRecord]:
    """Online records from the result of ``latest_per_key_sql``."""
    import pyarrow.compute as pc

    keys = KeyCodec(view.join_keys)
    codec = ValueCodec([f.dtype for f in view.fields])
    key_cols = [table.column(k).to_pylist() for k in view.join_keys]
    key_text = keys.encode_columns(key_cols)
    ts = table.column("_ts").to_pylist()
    ct = table.column("_ct").to_pylist()
    cid = table.column("_commit_id").to_pylist()
    cols = [table.column(f.name) for f in view.fields]
    simple = not codec.encoders
    for i in codec.float_idx:  # vectorised check: only non-finite floats need the slow path
        col = cols[i]
        if view.fields[i].dtype.startswith("list<"):
            col = pc.list_flatten(col)
        if col.null_count < len(col) and not pc.all(
            pc.or_kleene(pc.is_finite(col), pc.is_null(col))
        ).as_py():
            simple = False
    py = [c.to_pylist() for c in cols]
    import orjson

    if simple:
        dumps = orjson.dumps
        payloads = [dumps(row) for row in zip(*py, strict=False)]
    else:
        payloads = [codec.encode(list(row)) for row in zip(*py, strict=False)]
    return [OnlineRecord(*r) for r in zip(key_text, ts, ct, cid, payloads, strict=False)]


class Materializer:
    """Runs materialization of view versions into one online store, reading through the
    offline engine and the offline store (which owns the files)."""

    def __init__(self, store: OnlineStore, engine: OfflineEngine,
                 offline: OfflineStore) -> None:
        self.store = store
        self.engine = engine
        self.offline = offline

    def scan(self, view: FeatureView, chain: Sequence[VersionProjection],
             commits: Sequence[CommitRecord]) -> ViewScan:
        """The files of ``commits`` (of any version in ``chain``) read as ``chain[0]``."""
        return ViewScan.of(
            join_keys=list(view.join_keys), timestamp_field=view.timestamp_field,
            created_field=view.created_timestamp_field, features=view.feature_names,
            output_names=view.feature_names, dtypes=[f.dtype for f in view.fields],
            ttl_us=None, store=self.offline, commits=commits, chain=chain,
            tie_break=False, event_range=None)

    def query(self, view: FeatureView, chain: Sequence[VersionProjection],
              commits: Sequence[CommitRecord], *,
              keys: Sequence[Sequence[Any]] | None = None, **options: Any) -> pa.Table:
        """The newest row per key among ``commits``; ``keys`` restricts to those key tuples."""
        keys_tbl = None
        if keys is not None:
            import pyarrow as pa

            from featureledger.model.types import to_arrow

            cols: list[Any] = (list(zip(*keys, strict=False)) if keys
                               else [[] for _ in view.join_keys])
            keys_tbl = pa.table({
                k: pa.array(list(c), type=to_arrow(t))
                for (k, t), c in zip(view.join_keys.items(), cols, strict=False)})
        with self.offline.reading(commits):
            return self.engine.latest_per_key(self.scan(view, chain, commits), keys=keys_tbl,
                                              **options)

    def load(self, table: TableRef, view: FeatureView, chain: Sequence[VersionProjection],
             commits: Sequence[CommitRecord], *, force: bool = False,
             on_rows: Callable[[int], None] | None = None, **options: Any) -> tuple[int, int]:
        """Query and write; return (rows considered, records written)."""
        if not commits:
            return 0, 0
        result = self.query(view, chain, commits, **options)
        records = encode_records(view, result)
        written = 0
        for i in range(0, len(records), _BATCH):
            chunk = records[i:i + _BATCH]
            written += self.store.write(table, chunk, force=force)
            if on_rows is not None:
                on_rows(len(chunk))
        return result.num_rows, written
