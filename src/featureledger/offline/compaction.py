"""Compaction: a view version's many small commit files rewritten into a few large ones.

Every ingestion is its own commit folder, so a view fed in small batches ends up read as
thousands of small files. ``compact`` rewrites the rows of a view version's commits (their
own files, and the segments of earlier compactions) into one *segment*: files that each hold
a contiguous range of join keys (clustered by key), sorted inside by event time, with
row groups of ``compaction.row_group_rows`` rows whose statistics let the engine skip what
no entity row can reach (the engine already filters on the entity time range).

What does not change:

* **Rows.** Every row keeps its ``_commit_id`` and ``_commit_time``; every commit of any
  status (quarantined and rolled-back ones too) goes into the segment, and readers pick the
  rows of exactly the commits they would have read (``as_of``, quarantine, rollback,
  ``reproduce``), ranked by commit for ties, so every answer and content hash is the one the
  commits' own files gave.
* **Commits.** Commit rows, seals, digests and file lists are never edited; the registry
  records the segment (``registry/segments.py``) and which commits it holds.

Crash safety, as for ingestion: the segment's files are written under the offline store's
temporary folder and renamed into place, then one registry transaction makes the segment
active and retires the segments it replaces. A crash before that transaction leaves an
orphan folder no reader sees (``gc`` removes it); after it, readers read the segment. The
files it replaced stay for ``compaction.grace_seconds`` after the compaction (readers that
planned before it still find them), then ``gc`` removes them. No reader ever reads a
commit's rows twice or not at all: a plan reads each commit from exactly one place.

Automatic compaction: after an ingestion, a view version with ``compaction.
auto_after_commits`` commits outside any segment is compacted (after the ingestion's
commit is durable; a failed compaction is logged and changes nothing).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from featureledger.errors import StateError, StorageError
from featureledger.model.ids import new_id
from featureledger.model.timeutil import now_us
from featureledger.offline.storage import COMMIT_TIME_COLUMN, crash_point
from featureledger.registry.commits import EXPIRED_STATUS
from featureledger.registry.segments import SegmentRecord

if TYPE_CHECKING:
    import pyarrow as pa

    from featureledger.context import StoreContext
    from featureledger.registry.commits import CommitRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CompactionResult:
    """What one compaction of one view version did (``segment_id`` None: nothing to do)."""

    view: str
    version: int
    segment_id: str | None
    commits: int = 0  # commits whose rows the new segment holds
    rows: int = 0
    files_before: int = 0  # files a full read of the version opened before
    files_after: int = 0
    bytes: int = 0
    seconds: float = 0.0
    retired: list[str] = field(default_factory=list)  # segments it replaced
    reason: str | None = None  # why nothing was done

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _cluster(table: pa.Table, keys: Sequence[str], ts: str, file_rows: int
             ) -> list[pa.Table]:
    """``table`` cut into files of ``file_rows`` rows over contiguous join-key ranges, each
    sorted by event time (then keys and commit time, so the bytes are deterministic)."""
    by_key = table.sort_by([*((k, "ascending") for k in keys), (ts, "ascending"),
                            (COMMIT_TIME_COLUMN, "ascending")])
    order = [(ts, "ascending"), *((k, "ascending") for k in keys),
             (COMMIT_TIME_COLUMN, "ascending")]
    return [by_key.slice(i, file_rows).sort_by(order)
            for i in range(0, max(by_key.num_rows, 1), file_rows)]


class CompactionService:
    """Compaction of view versions (constructed as ``CompactionService(ctx)``)."""

    def __init__(self, ctx: StoreContext) -> None:
        self.ctx = ctx

    # -- what is there -----------------------------------------------------------------
    def segments(self, view: str | None = None, *, retired: bool = False
                 ) -> list[SegmentRecord]:
        """The active segments (with ``retired``, every segment), of ``view`` if given."""
        repo = self.ctx.registry.commits.segments
        segs = repo.all() if retired else repo.active()
        return [s for s in segs if view is None or s.view_name == view]

    def _versions(self, view: str | None) -> list[tuple[str, int]]:
        defs = self.ctx.registry.definitions
        names = [view] if view is not None else [
            r.name for r in defs.list("feature_view")]
        out = []
        for name in names:
            for rec in defs.versions("feature_view", name):
                out.append((name, rec.version))
        return out

    # -- compacting ----------------------------------------------------------------------
    def compact(self, view: str | None = None, *, version: int | None = None,
                min_commits: int = 2) -> list[CompactionResult]:
        """Compact every version of ``view`` (every view when None, one ``version`` when
        given) that has at least ``min_commits`` commits outside a segment, or more than
        one segment."""
        pairs = self._versions(view)
        if version is not None:
            pairs = [(v, n) for v, n in pairs if n == version]
            if not pairs:
                raise StateError(f"{view}@{version} does not exist; list its versions with "
                                 f"'featureledger versions {view}'")
        return [self.compact_version(v, n, min_commits=min_commits) for v, n in pairs]

    def compact_version(self, view: str, version: int, *, min_commits: int = 2
                        ) -> CompactionResult:
        """Compact one view version (see the module docstring)."""
        import pyarrow as pa
        start = time.perf_counter()
        cfg = self.ctx.config.compaction
        registry, offline = self.ctx.registry, self.ctx.offline_store
        # expired commits have no data left (retention deleted it)
        commits = [c for c in registry.commits.list(view, version, statuses=None)
                   if c.status not in ("pending", EXPIRED_STATUS) and c.files]
        loose = [c for c in commits if c.segment is None]
        held = {c.segment.segment_id: c.segment for c in commits if c.segment is not None}
        files_before = sum(len(c.files) for c in loose) + sum(len(s.files)
                                                              for s in held.values())
        if len(loose) < min_commits and len(held) < 2:
            return CompactionResult(view, version, None, files_before=files_before,
                                    files_after=files_before, reason=(
                                        f"{len(loose)} commit(s) outside a segment and "
                                        f"{len(held)} segment(s): nothing to compact"))
        rec = registry.definitions.get("feature_view", view, version)
        keys = list(rec.definition.join_keys)
        ts = rec.definition.timestamp_field
        tables: list[pa.Table] = []
        units: list[Any] = [*loose, *held.values()]
        with offline.reading(commits):
            for unit in units:
                for rel in unit.files:
                    tables.append(offline.read_table(rel))
        try:
            table = pa.concat_tables(tables, promote_options="default")
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise StorageError(
                f"the commits of {view}@{version} do not share one schema ({exc}); they are "
                "left as they are. Report this with 'featureledger commits "
                f"{view}' attached") from None
        table = table.combine_chunks()
        expected = sum(c.row_count for c in loose) + sum(s.row_count for s in held.values())
        if table.num_rows != expected:
            raise StorageError(
                f"{view}@{version}: the files of its commits hold {table.num_rows} rows, "
                f"the registry records {expected}; nothing was compacted. Run "
                "'featureledger reconcile --deep' to find the commit whose files changed")
        parts = _cluster(table, keys, ts, cfg.target_file_rows)
        segment_id = new_id("seg")
        written = offline.write_commit(view, version, segment_id, parts,
                                       row_group_size=cfg.row_group_rows)
        manifest = written.manifest()
        for rel, part in zip(written.files, parts, strict=True):
            manifest[rel]["rows"] = part.num_rows
        member_ids = tuple(c.commit_id for c in commits)  # commit order
        tcol = table.column(ts)
        import pyarrow.compute as pc

        lo, hi = pc.min(tcol).value, pc.max(tcol).value
        seg = SegmentRecord(
            segment_id=segment_id, view_name=view, view_version=version,
            created_at=now_us(), commit_ids=member_ids, files=written.files,
            file_manifest=manifest, content_digest=written.content_digest,
            row_count=table.num_rows,
            min_event_ts=None if lo is None else _us(lo),
            max_event_ts=None if hi is None else _us(hi))
        try:
            with registry.db.write(lock_key=f"commit:{view}") as conn:
                now_active = {s.segment_id for s in registry.commits.segments.active(
                    conn, views=[(view, version)])}
                if now_active != set(held):
                    raise StateError(
                        f"{view}@{version} was compacted by another process meanwhile; "
                        "nothing was changed here. Run compact again if it still has "
                        "small commits")
                registry.commits.segments.insert(conn, seg)
                registry.commits.segments.retire(conn, sorted(held))
                registry.db.audit(conn, "compact", "feature_view", f"{view}@{version}", {
                    "segment": segment_id, "commits": len(member_ids),
                    "rows": table.num_rows, "files": len(written.files),
                    "retired": sorted(held)})
                crash_point("before_registry")
        except BaseException:
            offline.remove_commit_files(written.files)
            raise
        crash_point("after_registry")
        return CompactionResult(
            view, version, segment_id, commits=len(member_ids), rows=table.num_rows,
            files_before=files_before, files_after=len(written.files), bytes=written.bytes,
            seconds=time.perf_counter() - start, retired=sorted(held))

    def maybe_compact(self, view: str, version: int) -> CompactionResult | None:
        """Compact ``view@version`` when ``compaction.auto_after_commits`` of its commits
        are outside a segment (called after an ingestion; never raises)."""
        threshold = self.ctx.config.compaction.auto_after_commits
        if threshold is None:
            return None
        try:
            if self.ctx.registry.commits.loose_count(view, version) < threshold:
                return None
            return self.compact_version(view, version, min_commits=threshold)
        except Exception as exc:  # the ingestion already succeeded; compaction can wait
            log.warning("automatic compaction of %s@%s failed (nothing was changed): %s",
                        view, version, exc)
            return None

    def retire(self, segment_id: str, reason: str) -> SegmentRecord:
        """Retire an active segment: its commits are read from their own files again (which
        must still be there: gc removes them a grace period after the compaction)."""
        registry = self.ctx.registry
        seg = registry.commits.segments.get(segment_id)
        if seg is None:
            raise StateError(f"unknown segment {segment_id!r}; list them with "
                             "'featureledger compact --list'")
        if seg.status != "active":
            raise StateError(f"segment {segment_id} is already {seg.status}")
        commits = registry.commits.get_many(list(seg.commit_ids))
        own = [replace_segment(c) for c in commits]
        offline = self.ctx.offline_store
        missing = [f for c in own for f in offline.missing_files(c.files)]
        if missing:
            raise StateError(
                f"segment {segment_id} cannot be retired: {len(missing)} file(s) of its "
                f"commits are gone (e.g. {missing[0]}), so its rows are only in the segment. "
                "Restore the segment's files from a backup instead")
        with registry.db.write(lock_key=f"commit:{seg.view_name}") as conn:
            registry.commits.segments.retire(conn, [segment_id])
            registry.db.audit(conn, "retire_segment", "feature_view", seg.view_ref,
                              {"segment": segment_id, "reason": reason})
        got = registry.commits.segments.get(segment_id)
        assert got is not None
        return got


def replace_segment(c: CommitRecord) -> CommitRecord:
    """``c`` read from its own files (not from the segment holding its rows)."""
    import dataclasses

    return dataclasses.replace(c, segment=None)


def _us(value: Any) -> int:
    from featureledger.model.timeutil import to_us

    return int(to_us(value))
