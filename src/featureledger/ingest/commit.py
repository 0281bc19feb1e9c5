"""Making rows one visible commit: the single place where a commit is written.

Ingestion and online push both land data offline through :func:`write_commit`, so every
commit gets the same guarantees: a commit time strictly after the view's last commit (taken
inside the registry write transaction), ``_commit_id`` / ``_commit_time`` on every row,
files written under a temporary name and renamed (on object storage: straight under the
commit's own prefix, read by nobody until its row exists), then the commit row, its lineage edges
and its audit entry in the same transaction; for a view with a quality policy, the policy's
verdict too (the row is inserted already quarantined when the policy says so, with its
check and alerts). Files of a transaction that surely rolled
back are removed at once; otherwise ``gc`` removes what no commit row references.

A push's commit exists as a ``pending`` row before it lands (:func:`open_pending`); its
landing replaces that row in the same transaction (``replaces_pending=True``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Connection

from featureledger.errors import DiskFullError, RegistryReadOnlyError
from featureledger.model.timeutil import now_us
from featureledger.offline.compaction import clustered_order, key_range
from featureledger.offline.engine import KEY_CLUSTERED
from featureledger.offline.storage import (
    COMMIT_ID_COLUMN,
    COMMIT_TIME_COLUMN,
    WrittenFiles,
    crash_point,
)
from featureledger.registry.lineage_edges import (
    HAS_COMMIT,
    INGESTED,
    WROTE,
    record_edges,
    source_node,
    view_node,
)

if TYPE_CHECKING:
    import pyarrow as pa

    from featureledger.context import StoreContext
    from featureledger.quality.service import CommitGate
    from featureledger.registry.commits import CommitRecord

# build(commit_time, stamped rows, written files) -> the commit's record
RecordBuilder = Callable[[int, "pa.Table", WrittenFiles], "CommitRecord"]
# (join keys, event timestamp field, created timestamp field or None) of the view a commit
# belongs to: given, a commit written as one file is written in the clustered order (see
# ``ViewScan.clustered``), so point-in-time reads of a view version holding just that
# commit take the merge instead of an ASOF join
ClusterOrder = tuple[tuple[str, ...], str, "str | None"]
# commits of up to this many rows are written in the clustered order. The sort is about
# 0.15 s per million rows (measured on the ingestion benchmark: 0.74 -> 0.89 s for 1M
# rows, past its 3x-the-plain-write target) and pays most where a read's fixed costs
# dominate (100k rows: 2.3x -> 1.2x the fastest plain library); larger commits are put
# in that order by compaction
CLUSTER_MAX_ROWS = 262_144


def cluster_order(fv: Any) -> ClusterOrder:
    """The :data:`ClusterOrder` of a feature view definition."""
    return (tuple(fv.join_keys), fv.timestamp_field, fv.created_timestamp_field)


def stamp(rows: pa.Table, commit_id: str, commit_time: int) -> pa.Table:
    """``rows`` with ``_commit_id`` and ``_commit_time`` set (replaced if present)."""
    import pyarrow as pa

    rows = rows.drop_columns([c for c in (COMMIT_ID_COLUMN, COMMIT_TIME_COLUMN)
                              if c in rows.column_names])
    n = rows.num_rows
    return rows.append_column(
        COMMIT_ID_COLUMN, pa.repeat(pa.scalar(commit_id, pa.string()), n)
    ).append_column(
        COMMIT_TIME_COLUMN, pa.repeat(pa.scalar(commit_time, pa.timestamp("us", tz="UTC")), n)
    )


def write_commit(ctx: StoreContext, *, view: str, version: int, commit_id: str,
                 rows: pa.Table, build: RecordBuilder,
                 source_uri: str | Callable[[], str] | None,
                 run: str | None, audit: dict[str, Any], actor: str | None = None,
                 extra_tables: dict[str, pa.Table] | None = None,
                 replaces_pending: bool = False, gate: CommitGate | None = None,
                 order: ClusterOrder | None = None,
                 ) -> tuple[CommitRecord, pa.Table, WrittenFiles]:
    """Write ``rows`` as commit ``commit_id`` of ``view@version`` and make it visible.

    ``source_uri`` names the source node (a callable is read after ``build``, when the
    source's digest is known); None records no source edge. ``gate`` (a view's quality
    policy) decides in the same transaction how the commit lands (``quarantined`` or
    ``committed``), and is notified once it committed. Returns the record, the stored
    (stamped) rows and the files written.
    """
    db = ctx.registry.db
    out = None
    try:
        with db.write(lock_key=f"commit:{view}") as conn:
            out = commit_in(ctx, conn, view=view, version=version, commit_id=commit_id,
                            rows=rows, build=build, source_uri=source_uri, run=run,
                            audit=audit, actor=actor, extra_tables=extra_tables,
                            replaces_pending=replaces_pending, gate=gate, order=order)
            crash_point("before_registry")
    except (DiskFullError, RegistryReadOnlyError):
        # the database answered that the commit failed, so it surely rolled back: the
        # files go now (and free the space), rather than waiting for gc
        if out is not None:
            ctx.offline_store.remove_commit_files(out[2].files)
        raise
    if gate is not None:
        gate.notify()
    return out


def commit_in(ctx: StoreContext, conn: Connection, *, view: str, version: int,
              commit_id: str, rows: pa.Table, build: RecordBuilder,
              source_uri: str | Callable[[], str] | None, run: str | None,
              audit: dict[str, Any], actor: str | None = None,
              extra_tables: dict[str, pa.Table] | None = None,
              edges: list[tuple[str, str, str]] | None = None,
              replaces_pending: bool = False, gate: CommitGate | None = None,
              order: ClusterOrder | None = None,
              ) -> tuple[CommitRecord, pa.Table, WrittenFiles]:
    """:func:`write_commit` inside the caller's write transaction ``conn`` (which must hold
    the ``commit:<view>`` lock); ``edges`` are extra lineage edges to record with it;
    ``replaces_pending`` turns the pending row of a push (see ``open_pending``) into it;
    ``gate`` decides the status it lands with and records its check (the caller notifies
    it after committing).

    If anything here fails the files are removed and the error propagates, so the
    caller's transaction rolls back with nothing left behind.
    """
    offline = ctx.offline_store
    written = None
    try:
        last = ctx.registry.commits.last_commit_time(conn, view)
        commit_time = max(now_us(), (last or 0) + 1)
        if order is not None and 1 < rows.num_rows <= CLUSTER_MAX_ROWS:
            # sorted before the stamp: one commit's rows share it, and the stamp's text
            # column would be the costliest to reorder
            rows = clustered_order(rows, list(order[0]), order[1], order[2], by_commit=False)
        stored = stamp(rows, commit_id, commit_time)
        written = offline.write_commit(view, version, commit_id, stored,
                                       extra_tables=extra_tables)
        record = build(commit_time, stored, written)
        # sizes for reconcile, whoever built the record
        manifest = dict(record.file_manifest if record.file_manifest is not None
                        else written.manifest())
        if order is not None and rows.num_rows <= CLUSTER_MAX_ROWS and len(written.files) == 1:
            (rel,) = written.files
            manifest[rel] = {**manifest.get(rel, {}), "order": KEY_CLUSTERED}
            bounds = key_range(stored, order[0][0])
            if bounds is not None:
                manifest[rel]["key_range"] = list(bounds)
        if manifest != record.file_manifest:
            record = replace(record, file_manifest=manifest)
        uri = source_uri() if callable(source_uri) else source_uri
        if gate is not None:  # before the insert: the row lands with its verdict
            record = gate.decide(record)
        if replaces_pending:  # the push's pending row becomes the committed one
            ctx.registry.commits.delete_pending(conn, commit_id)
        ctx.registry.commits.insert(conn, record)
        all_edges: list[tuple[str, str, str]] = [
            (view_node(view, version), commit_id, HAS_COMMIT), *(edges or [])]
        if uri is not None:
            all_edges.append((source_node(uri), commit_id, INGESTED))
        if run:
            all_edges.append((run, commit_id, WROTE))
        record_edges(conn, all_edges)
        ctx.registry.db.audit(conn, "commit", "commit", commit_id,
                              {"view": f"{view}@{version}", "rows": stored.num_rows,
                               "run_id": run, "source": uri, **audit}, actor=actor)
        if gate is not None:
            gate.record_in(conn, record)
    except BaseException:
        # Before the commit statement the transaction surely rolls back: remove the files
        # now. If the commit statement itself failed, its outcome is unknown; the files
        # stay and gc removes them if no row references them.
        if written is not None:
            offline.remove_commit_files(written.files)
        raise
    return record, stored, written


def open_pending(ctx: StoreContext, record: CommitRecord) -> None:
    """Record ``record`` (status ``pending``): the commit a push's rows will land in.

    The registry generation is not bumped: nothing a reader caches depends on a commit
    that holds no rows yet.
    """
    with ctx.registry.db.write(bump=False) as conn:
        ctx.registry.commits.insert(conn, record)


def drop_pending(ctx: StoreContext, commit_id: str) -> bool:
    """Remove a pending commit that will never land (none of its rows was acknowledged)."""
    with ctx.registry.db.write(bump=False) as conn:
        return ctx.registry.commits.delete_pending(conn, commit_id)
