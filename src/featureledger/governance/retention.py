"""Retention: a view's commits kept for N days, or its last N commits; older data deleted.

A policy belongs to a view (every version; ``featureledger retention set VIEW --keep-days
N`` or ``--keep-last N``, audited with its reason); a view without one keeps everything,
and definitions (and their hashes) do not change. ``keep_days`` expires commits whose commit
time is more than N days ago; ``keep_last`` keeps the newest N commits of the view (every
version, whatever their status) and expires the rest. Pending pushes never expire.

``apply`` (``featureledger retention apply``, meant for a schedule) expires what the
policies say, **one commit at a time**: one registry transaction marks the commit
``expired`` (its row stays, sealed, with the time) and writes its audit entry; only after
it commits are the files deleted. A crash before that transaction leaves the commit whole;
after it, the commit is expired and the next ``apply`` deletes any file left behind (the
sweep). So every commit is either whole or expired, never half.

**Compacted segments** hold the rows of many commits. Expiring a commit held by one
rewrites the segment without its rows (the segment's other commits keep theirs, read from
the new segment) in the same transaction that expires it: the new segment's files are
written first, then one transaction makes it active, retires the old one and expires the
commits, then the old segment's files are deleted. So expired rows never stay readable in
a segment, and the commits still kept are never rewritten by anything but a new segment
written and verified like a compaction. (Waiting until every commit of a segment expires
would keep deleted data for as long as the newest commit in it lives.)

**What expiry means downstream.** Retrieval, windows, materialization and derivation read
committed commits only, so expired ones are no longer read; the online store recomputes the
keys they wrote from the commits still kept (as after a rollback). A dataset that read an
expired commit cannot be reproduced: ``reproduce`` raises
:class:`~featureledger.errors.CommitExpiredError` naming the commits and when they expired,
before reading anything.

**Deployments.** A commit that an active deployment's frozen lineage depends on (its model
was trained on a dataset that read it) is kept, and reported as kept, unless ``apply`` is
given ``force="reason"``: the reason is recorded in each such commit's audit entry.

The **backlog** (:meth:`RetentionService.backlog`) is what would expire now.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from featureledger.errors import StateError
from featureledger.model.ids import new_id
from featureledger.model.timeutil import from_us, now_us, to_us
from featureledger.offline.storage import COMMIT_ID_COLUMN, crash_point
from featureledger.registry.commits import EXPIRED_STATUS, PENDING_STATUS
from featureledger.registry.lifecycle import RetentionPolicy
from featureledger.registry.segments import SegmentRecord

if TYPE_CHECKING:
    import pyarrow as pa

    from featureledger.context import StoreContext
    from featureledger.registry.commits import CommitRecord

DAY_US = 86_400 * 1_000_000


@dataclass(frozen=True)
class Expiry:
    """A commit the policies expire (or expired), and why."""

    commit_id: str
    view: str
    version: int
    commit_time: int
    rows: int
    rule: str  # the policy, in words
    deployments: tuple[str, ...] = ()  # active deployments whose lineage reads it
    segment: str | None = None  # the active segment holding its rows, if any

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["deployments"] = list(self.deployments)
        d["commit_time_iso"] = from_us(self.commit_time).isoformat()
        return d


@dataclass
class RetentionReport:
    """What one ``apply`` did (or, with ``dry_run``, would do)."""

    dry_run: bool
    expired: list[Expiry] = field(default_factory=list)
    kept: list[Expiry] = field(default_factory=list)  # protected by active deployments
    rewritten: list[dict[str, Any]] = field(default_factory=list)  # old -> new segments
    files_deleted: int = 0
    swept: list[str] = field(default_factory=list)  # files an earlier apply left behind
    undeleted: list[str] = field(default_factory=list)  # files that could not be deleted

    def to_dict(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, "expired": [e.to_dict() for e in self.expired],
                "kept": [e.to_dict() for e in self.kept], "rewritten": self.rewritten,
                "files_deleted": self.files_deleted, "swept": self.swept,
                "undeleted": self.undeleted}


def _protected(ctx: StoreContext) -> dict[str, list[str]]:
    """commit id -> the active deployments whose frozen lineage reads it."""
    out: dict[str, list[str]] = {}
    for dep in ctx.registry.models.list_deployments(active_only=True):
        snapshot = dep.lineage_snapshot or {}
        for edge in snapshot.get("edges", []):
            for node in (edge.get("src"), edge.get("dst")):
                if isinstance(node, str) and node.startswith("cmt_"):
                    out.setdefault(node, [])
                    if dep.deployment_id not in out[node]:
                        out[node].append(dep.deployment_id)
    return out


class RetentionService:
    """Retention policies and their enforcement (constructed as ``RetentionService(ctx)``)."""

    def __init__(self, ctx: StoreContext) -> None:
        self.ctx = ctx

    # -- policies -------------------------------------------------------------------------
    def set_policy(self, view: str, *, keep_days: int | None = None,
                   keep_last: int | None = None, reason: str) -> RetentionPolicy | None:
        """Keep ``view``'s commits ``keep_days`` days, or its newest ``keep_last``; neither
        removes the policy. Audited with ``reason``."""
        if keep_days is not None and keep_last is not None:
            raise StateError("give one of keep_days and keep_last, not both")
        for name, value in (("keep_days", keep_days), ("keep_last", keep_last)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise StateError(f"{name} must be a whole number of at least 1, not {value!r}")
        if not reason or not reason.strip():
            raise StateError("a retention policy needs a reason (it is recorded in the "
                             "catalog's decision log), e.g. 'GDPR: 90 days'")
        self.ctx.registry.definitions.get("feature_view", view)  # UnknownViewError
        return self.ctx.registry.lifecycle.set_retention(view, keep_days=keep_days,
                                                         keep_last=keep_last, reason=reason)

    def policies(self) -> list[RetentionPolicy]:
        """Every view's retention policy."""
        return self.ctx.registry.lifecycle.retention_policies()

    # -- what expires -----------------------------------------------------------------------
    def backlog(self, *, view: str | None = None, at: Any = None) -> list[Expiry]:
        """The commits the policies expire at ``at`` (default now), oldest first, those
        active deployments depend on included (with their ``deployments``)."""
        now = now_us() if at is None else to_us(at)
        registry = self.ctx.registry
        protected = _protected(self.ctx)
        out: list[Expiry] = []
        for policy in registry.lifecycle.retention_policies(view):
            commits = [c for c in registry.commits.list(policy.view, statuses=None)
                       if c.status not in (PENDING_STATUS, EXPIRED_STATUS)]
            if policy.keep_days is not None:
                cutoff = now - policy.keep_days * DAY_US
                doomed = [c for c in commits if c.commit_time < cutoff]
            else:
                keep = policy.keep_last or 0
                doomed = commits[:-keep] if len(commits) > keep else []
            out += [Expiry(c.commit_id, c.view_name, c.view_version, c.commit_time,
                           c.row_count, policy.describe(),
                           tuple(protected.get(c.commit_id, ())),
                           c.segment.segment_id if c.segment else None) for c in doomed]
        return sorted(out, key=lambda e: (e.commit_time, e.commit_id))

    # -- enforcement --------------------------------------------------------------------
    def apply(self, *, view: str | None = None, dry_run: bool = False,
              force: str | None = None, at: Any = None) -> RetentionReport:
        """Expire what the policies say (see the module docstring); ``force`` (a reason)
        expires commits active deployments depend on too. Idempotent: a second run finds
        nothing to do, and deletes files an interrupted run left."""
        if force is not None and not force.strip():
            raise StateError("force needs a reason (it is recorded with each commit it "
                             "expires), e.g. 'legal hold lifted'")
        report = RetentionReport(dry_run=dry_run)
        due = self.backlog(view=view, at=at)
        todo = [e for e in due if force is not None or not e.deployments]
        report.kept = [e for e in due if e.deployments and force is None]
        if dry_run:
            report.expired = todo
            return report
        report.swept = self._sweep(report)
        loose = [e for e in todo if e.segment is None]
        held: dict[str, list[Expiry]] = {}
        for e in todo:
            if e.segment is not None:
                held.setdefault(e.segment, []).append(e)
        for e in loose:
            self._expire_loose(e, force, report)
        for segment_id, group in held.items():
            self._expire_held(segment_id, group, force, report)
        return report

    def _reason(self, e: Expiry, force: str | None) -> str:
        why = f"retention: {e.rule}"
        if e.deployments:
            why += f"; forced over deployment(s) {', '.join(e.deployments)}: {force}"
        return why

    def _expire_in(self, conn: Any, e: Expiry, force: str | None) -> None:
        self.ctx.registry.commits.set_status_in(conn, e.commit_id, EXPIRED_STATUS,
                                                self._reason(e, force))

    def _expire_loose(self, e: Expiry, force: str | None, report: RetentionReport) -> None:
        registry = self.ctx.registry
        with registry.db.write(lock_key=f"commit:{e.view}") as conn:
            moved = any(e.commit_id in s.commit_ids for s in registry.commits.segments.active(
                conn, views=[(e.view, e.version)]))
            if moved or not self._still_due(conn, [e]):
                return  # compacted or expired meanwhile: the next apply sees it as it is
            self._expire_in(conn, e, force)
            crash_point("retention_before_registry")
        crash_point("retention_after_registry")
        report.expired.append(e)
        commit = registry.commits.get(e.commit_id)
        self._delete(_all_files(commit), report)

    def _still_due(self, conn: Any, group: Sequence[Expiry]) -> bool:
        """Whether the commits of ``group`` are still unexpired and where they were
        planned to be read from (under the write lock: another apply may have run)."""
        import sqlalchemy as sa

        from featureledger.registry import schema

        t = schema.commits
        rows = conn.execute(sa.select(t.c.commit_id, t.c.status).where(
            self.ctx.registry.db.scope(t),
            t.c.commit_id.in_([e.commit_id for e in group]))).all()
        return len(rows) == len(group) and all(s != EXPIRED_STATUS for _c, s in rows)

    def _expire_held(self, segment_id: str, group: list[Expiry], force: str | None,
                     report: RetentionReport) -> None:
        """Expire the commits ``group`` of active segment ``segment_id``: the segment is
        rewritten without their rows in the transaction that expires them."""
        registry, offline = self.ctx.registry, self.ctx.offline_store
        seg = registry.commits.segments.get(segment_id)
        if seg is None or seg.status != "active":
            return  # compacted again meanwhile: the next apply sees where the rows are now
        gone = {e.commit_id for e in group}
        keep_ids = tuple(c for c in seg.commit_ids if c not in gone)
        new_seg = self._rewrite(seg, gone, keep_ids) if keep_ids else None
        try:
            with registry.db.write(lock_key=f"commit:{seg.view_name}") as conn:
                active = {s.segment_id for s in registry.commits.segments.active(
                    conn, views=[(seg.view_name, seg.view_version)])}
                if segment_id not in active or not self._still_due(conn, group):
                    raise _Moved()
                if new_seg is not None:
                    registry.commits.segments.insert(conn, new_seg)
                registry.commits.segments.retire(conn, [segment_id])
                for e in group:
                    self._expire_in(conn, e, force)
                registry.db.audit(conn, "retention_rewrite_segment", "feature_view",
                                  seg.view_ref, {
                                      "segment": segment_id,
                                      "new_segment": new_seg.segment_id if new_seg else None,
                                      "expired": sorted(gone), "kept": list(keep_ids)},
                                  reason=group[0].rule)
                crash_point("retention_before_registry")
        except _Moved:
            if new_seg is not None:
                offline.remove_commit_files(new_seg.files)
            return
        except BaseException:
            if new_seg is not None:
                offline.remove_commit_files(new_seg.files)
            raise
        crash_point("retention_after_registry")
        report.expired += group
        report.rewritten.append({"segment": segment_id,
                                 "new_segment": new_seg.segment_id if new_seg else None,
                                 "expired": sorted(gone)})
        files = list(seg.files)
        for commit in registry.commits.get_many(sorted(gone)):
            files += _all_files(commit)
        self._delete(files, report)

    def _rewrite(self, seg: SegmentRecord, gone: set[str], keep_ids: tuple[str, ...]
                 ) -> SegmentRecord:
        """A new segment holding ``seg``'s rows but those of ``gone``, its files written
        (not yet registered)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        offline, registry = self.ctx.offline_store, self.ctx.registry
        ts = registry.definitions.get("feature_view", seg.view_name,
                                      seg.view_version).definition.timestamp_field
        parts: list[pa.Table] = []
        with offline.reading(registry.commits.get_many(list(seg.commit_ids))):
            for rel in seg.files:
                table = offline.read_table(rel)
                mask = pc.invert(pc.is_in(table.column(COMMIT_ID_COLUMN),
                                          value_set=pa.array(sorted(gone), pa.string())))
                kept = table.filter(mask)
                if kept.num_rows:
                    parts.append(kept)
        if not parts:  # the kept commits have no rows: an empty file keeps the schema
            parts = [offline.read_table(seg.files[0]).slice(0, 0)]
        rows = sum(p.num_rows for p in parts)
        segment_id = new_id("seg")
        cfg = self.ctx.config.compaction
        written = offline.write_commit(seg.view_name, seg.view_version, segment_id, parts,
                                       row_group_size=cfg.row_group_rows)
        crash_point("retention_after_files")
        manifest = written.manifest()
        for rel, part in zip(written.files, parts, strict=True):
            manifest[rel]["rows"] = part.num_rows
        col = pa.chunked_array([p.column(ts) for p in parts])
        lo, hi = pc.min(col).as_py(), pc.max(col).as_py()
        return SegmentRecord(
            segment_id=segment_id, view_name=seg.view_name, view_version=seg.view_version,
            created_at=now_us(), commit_ids=keep_ids, files=written.files,
            file_manifest=manifest, content_digest=written.content_digest, row_count=rows,
            min_event_ts=None if lo is None else int(to_us(lo)),
            max_event_ts=None if hi is None else int(to_us(hi)))

    # -- deleting -----------------------------------------------------------------------
    def _delete(self, files: list[str], report: RetentionReport) -> list[str]:
        """Delete ``files`` (their folders); returns those that were there."""
        offline = self.ctx.offline_store
        if not files:
            return []
        missing = set(offline.missing_files(files))
        present = [f for f in files if f not in missing]
        if present:
            offline.remove_commit_files(present)
            left = set(offline.missing_files(present))
            still = [f for f in present if f not in left]
            report.undeleted += still
            report.files_deleted += len(present) - len(still)
        return present

    def _sweep(self, report: RetentionReport) -> list[str]:
        """Delete what an interrupted apply left: files of expired commits, and of
        segments no longer active that hold an expired commit's rows."""
        registry = self.ctx.registry
        expired = registry.commits.list(statuses=(EXPIRED_STATUS,))
        files = [f for c in expired for f in _all_files(c)]
        ids = {c.commit_id for c in expired}
        for seg in registry.commits.segments.all():
            if seg.status != "active" and ids.intersection(seg.commit_ids):
                files += seg.files
        return self._delete(files, report)


class _Moved(Exception):
    """The segment was compacted, or its commits expired, by another process meanwhile."""


def _all_files(commit: CommitRecord) -> list[str]:
    """A commit's data files and side files (rejected rows)."""
    return list(dict.fromkeys([*commit.files, *(commit.file_manifest or {})]))


__all__ = ["Expiry", "RetentionReport", "RetentionService"]
