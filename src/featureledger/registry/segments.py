"""Segment records: where compaction put the rows of a set of commits of one view version.

A segment is written by ``offline/compaction.py``: its files first (like a commit's, under a
temporary name, then renamed into ``views/<view>/v<N>/<segment_id>/``), then one registry
transaction inserts the segment ``active`` and retires the segments it replaces. From that
transaction on, readers read the segment's commits from the segment's files, picking rows
by ``_commit_id`` exactly as the commits' own files would have given them; before it, from
where they were. Commit rows are never changed by compaction (their seals, digests and file
lists stay as written), so ``reproduce``, ``as_of``, quarantine and rollback see the same
commits whatever the layout.

Each row is sealed at insert over every column but the status and retirement time; a
segment whose row no longer matches (an edited commit list could hide or double rows) is
refused when read.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from featureledger.errors import CommitTamperedError
from featureledger.model.hashing import canonical_json
from featureledger.model.timeutil import now_us
from featureledger.registry import schema
from featureledger.registry.engine import RegistryDB

ACTIVE, RETIRED = "active", "retired"
_SEALED = ("segment_id", "project", "view_name", "view_version", "created_at", "commit_ids",
           "files", "file_manifest", "content_digest", "row_count", "min_event_ts",
           "max_event_ts")
_SEAL_VERSION = b"featureledger-segment-seal-v1\n"


def _seal(values: dict[str, Any]) -> str:
    h = hashlib.sha256(_SEAL_VERSION)
    for name in _SEALED:
        v = values[name]
        enc = b"n" if v is None else (b"s" + str(v).encode() if isinstance(v, str)
                                      else b"i%d" % int(v))
        h.update(name.encode() + b"=" + enc + b"\0")
    return h.hexdigest()


@dataclass(frozen=True)
class SegmentRecord:
    """One compacted segment: the files holding the rows of ``commit_ids``."""

    segment_id: str
    view_name: str
    view_version: int
    created_at: int  # µs UTC
    commit_ids: tuple[str, ...]  # in commit order
    files: list[str]  # relative to the offline store root, in digest order
    file_manifest: dict[str, dict[str, Any]]  # path -> {"size", "rows", ...}
    content_digest: str  # sha256 over the files' bytes, in order
    row_count: int
    min_event_ts: int | None
    max_event_ts: int | None
    status: str = ACTIVE
    retired_at: int | None = None
    sealed: bool = True  # False when the row no longer matches its seal

    # what the offline store's read guards ask of a unit of files (a commit or a segment)
    @property
    def commit_id(self) -> str:
        return self.segment_id

    @property
    def view_ref(self) -> str:
        return f"{self.view_name}@{self.view_version}"

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["commit_ids"] = list(self.commit_ids)
        return d


def _record(r: Any) -> SegmentRecord:
    return SegmentRecord(
        segment_id=r.segment_id, view_name=r.view_name, view_version=r.view_version,
        created_at=r.created_at, commit_ids=tuple(json.loads(r.commit_ids)),
        files=json.loads(r.files), file_manifest=json.loads(r.file_manifest),
        content_digest=r.content_digest, row_count=r.row_count,
        min_event_ts=r.min_event_ts, max_event_ts=r.max_event_ts, status=r.status,
        retired_at=r.retired_at, sealed=_seal(dict(r._mapping)) == r.row_digest)


def require_sealed_segment(seg: SegmentRecord) -> None:
    """Refuse a segment whose registry row was edited outside featureledger."""
    if not seg.sealed:
        raise CommitTamperedError(
            f"segment {seg.segment_id} ({seg.view_ref}) cannot be read: its registry row no "
            "longer matches the seal taken when it was written, so its list of commits or "
            "files was edited outside featureledger. Restore the row from a registry backup, "
            "or retire it so that its commits are read from their own files again: "
            f"featureledger compact {seg.view_name} --retire {seg.segment_id}",
            commit_id=seg.segment_id)


class SegmentRepository:
    def __init__(self, db: RegistryDB) -> None:
        self.db = db

    def insert(self, conn: Connection, rec: SegmentRecord) -> None:
        """Record an active segment inside the caller's write transaction (from then on its
        commits are read from its files)."""
        values: dict[str, Any] = dict(
            segment_id=rec.segment_id, project=self.db.project, view_name=rec.view_name,
            view_version=rec.view_version, created_at=rec.created_at,
            commit_ids=canonical_json(list(rec.commit_ids)), files=canonical_json(rec.files),
            file_manifest=canonical_json(rec.file_manifest),
            content_digest=rec.content_digest, row_count=rec.row_count,
            min_event_ts=rec.min_event_ts, max_event_ts=rec.max_event_ts)
        values.update(status=ACTIVE, retired_at=None, row_digest=_seal(values))
        conn.execute(schema.segments.insert().values(**values))

    def retire(self, conn: Connection, segment_ids: Sequence[str]) -> None:
        """Mark segments retired (inside the caller's transaction): their commits are read
        from the segment that replaced them, or from their own files."""
        if not segment_ids:
            return
        t = schema.segments
        conn.execute(t.update().where(self.db.scope(t), t.c.segment_id.in_(list(segment_ids)),
                                      t.c.status == ACTIVE)
                     .values(status=RETIRED, retired_at=now_us()))

    def active(self, conn: Connection | None = None, *,
               views: Iterable[tuple[str, int]] | None = None) -> list[SegmentRecord]:
        """The active segments (of ``views``, (name, version) pairs, when given)."""
        t = schema.segments
        q = sa.select(t).where(self.db.scope(t), t.c.status == ACTIVE)
        if views is not None:
            pairs = sorted(set(views))
            if not pairs:
                return []
            names = sorted({v for v, _ in pairs})
            q = q.where(t.c.view_name.in_(names))
            wanted = set(pairs)
        else:
            wanted = None
        q = q.order_by(t.c.created_at)
        if conn is None:
            with self.db.read() as c:
                rows = [_record(r) for r in c.execute(q)]
        else:
            rows = [_record(r) for r in conn.execute(q)]
        return [s for s in rows if wanted is None or (s.view_name, s.view_version) in wanted]

    def all(self) -> list[SegmentRecord]:
        """Every segment of this project, active or retired, oldest first."""
        t = schema.segments
        with self.db.read() as conn:
            return [_record(r) for r in conn.execute(
                sa.select(t).where(self.db.scope(t)).order_by(t.c.created_at))]

    def get(self, segment_id: str) -> SegmentRecord | None:
        t = schema.segments
        with self.db.read() as conn:
            r = conn.execute(sa.select(t).where(self.db.scope(t),
                                                t.c.segment_id == segment_id)).first()
        return None if r is None else _record(r)
