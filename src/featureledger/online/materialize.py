"""Materialization: the latest committed value per entity key, from the offline commit files
into the online store, tagged with the view version and commit it came from.

One set-based DuckDB query per view version picks, among the rows of the chosen commits
with ``start <= event time <= end``, the newest row per key (ties on event time go to the
later commit, as in point-in-time retrieval); the result is written in batches with the
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
from featureledger.offline.storage import commit_reads
from featureledger.online.codec import KeyCodec, ValueCodec
from featureledger.online.stores import OnlineRecord, OnlineStore, TableRef
from featureledger.registry.commits import CommitRecord

if TYPE_CHECKING:
    import pyarrow as pa

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


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def latest_per_key_sql(view: FeatureView, files: Sequence[str], *, start: int | None = None,
                       end: int | None = None, only_commits: Sequence[str] | None = None,
                       new_commits: Sequence[str] | None = None, since: int | None = None,
                       keys: Sequence[Sequence[Any]] | None = None) -> str:
    """DuckDB SQL for the newest row per key among ``files`` (µs bounds, inclusive).

    ``new_commits``/``since`` restrict to rows of new commits or newer than ``since``
    (incremental runs); ``keys`` restricts to given key tuples (repairs).
    """
    ts = _ident(view.timestamp_field)
    keys_sql = ", ".join(_ident(k) for k in view.join_keys)
    feats = ", ".join(_ident(f.name) for f in view.fields)
    where = []
    if start is not None:
        where.append(f"{ts} >= make_timestamp({int(start)}::BIGINT)::TIMESTAMPTZ")
    if end is not None:
        where.append(f"{ts} <= make_timestamp({int(end)}::BIGINT)::TIMESTAMPTZ")
    if only_commits is not None:
        where.append(f"_commit_id IN ({', '.join(map(_sql_str, only_commits)) or 'NULL'})")
    if new_commits is not None and since is not None:
        ids = ", ".join(map(_sql_str, new_commits)) or "NULL"
        where.append(f"(_commit_id IN ({ids}) OR {ts} > make_timestamp({int(since)}::BIGINT)::TIMESTAMPTZ)")
    source = "read_parquet([" + ", ".join(map(_sql_str, files)) + "])"
    if keys is not None:
        source = f"(SELECT * FROM {source} SEMI JOIN _repair_keys USING ({keys_sql}))"
    return (
        f"SELECT {keys_sql}, epoch_us({ts}) AS _ts, epoch_us(_commit_time) AS _ct, "
        f"_commit_id, {feats} FROM {source}"
        + (f" WHERE {' AND '.join(where)}" if where else "")
        # one packed sort key (event time, then commit time): several sort columns make
        # DuckDB's window sort several times slower. Commit times are unique per view
        # (each commit takes a later one than the last), so no further tie-break is needed.
        + f" QUALIFY row_number() OVER (PARTITION BY {keys_sql} ORDER BY "
        f"(epoch_us({ts})::HUGEINT << 64) + epoch_us(_commit_time) DESC) = 1"
    )


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
    """Runs materialization of view versions into one online store."""

    def __init__(self, store: OnlineStore, offline_root: Any, *,
                 duckdb_threads: int | None = None) -> None:
        self.store = store
        self.offline_root = offline_root
        self.duckdb_threads = duckdb_threads

    def _connect(self) -> Any:
        import duckdb

        con = duckdb.connect(":memory:")
        if self.duckdb_threads:
            con.execute(f"SET threads = {int(self.duckdb_threads)}")
        con.execute("SET TimeZone = 'UTC'")
        return con

    def query(self, view: FeatureView, commits: Sequence[CommitRecord], **options: Any
              ) -> pa.Table:
        files = [str(self.offline_root / f) for c in commits for f in c.files]
        con = self._connect()
        try:
            repair_keys = options.get("keys")
            if repair_keys is not None:
                import pyarrow as pa

                from featureledger.model.types import to_arrow

                cols: list[Any] = (list(zip(*repair_keys, strict=False)) if repair_keys
                                   else [[] for _ in view.join_keys])
                keys_tbl = pa.table({
                    k: pa.array(list(c), type=to_arrow(t))
                    for (k, t), c in zip(view.join_keys.items(), cols, strict=False)
                })
                con.register("_repair_keys", keys_tbl)
            with commit_reads(self.offline_root, commits):
                return con.sql(latest_per_key_sql(view, files, **options)).to_arrow_table()
        finally:
            con.close()

    def load(self, table: TableRef, view: FeatureView, commits: Sequence[CommitRecord], *,
             force: bool = False, on_rows: Callable[[int], None] | None = None,
             **options: Any) -> tuple[int, int]:
        """Query and write; return (rows considered, records written)."""
        if not commits:
            return 0, 0
        result = self.query(view, commits, **options)
        records = encode_records(view, result)
        written = 0
        for i in range(0, len(records), _BATCH):
            chunk = records[i:i + _BATCH]
            written += self.store.write(table, chunk, force=force)
            if on_rows is not None:
                on_rows(len(chunk))
        return result.num_rows, written
