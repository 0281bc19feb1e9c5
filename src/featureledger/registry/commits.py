"""Commit records: one immutable ingestion write into one view version.

A commit row is inserted in the same registry transaction that makes the commit visible;
its data files were written (under a temporary name, then renamed) before. Only the
status may change afterwards (``committed`` -> ``quarantined`` / ``rolled_back`` and back,
or ``expired`` for good when retention deletes its data), and every status change is
audited.

A push's commit has a row from the moment its buffer opens, with status ``pending`` (no
files, no rows), so the online values pushed into it cite a commit the registry knows; it
is replaced by the full row, status ``committed``, in the transaction that lands it. Only
listings that ask for every status (or for ``pending``) show pending commits, and their
status cannot be changed by hand.

Each row is sealed: ``row_digest`` is a sha256 over every other column, as stored (see
:func:`seal`), taken at insert and again by :meth:`CommitRepository.set_status`, which is
the only code that changes a row. A row edited by SQL (its files, row count, or a status
flipped back to ``committed``) no longer matches its seal; reading it gives a record whose
``seal`` is ``"broken"``, which readers refuse to serve (``offline.storage.commit_reads``)
and ``reconcile`` reports. featureledger never re-seals a broken row: it can still be
quarantined or rolled back (hiding it is always safe), but not restored until the row is
restored from a backup. Rows written before seals existed (revision 0005) have none:
``seal`` is ``"unsealed"``; they are served, and ``reconcile`` lists them.

The seal is a plain digest, not a signature: it catches edits made without featureledger
(by hand, by a script, by a tool restoring part of a row), not someone who reads this
module and recomputes it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from featureledger.errors import CommitTamperedError, StateError, UnknownCommitError
from featureledger.model.hashing import canonical_json
from featureledger.model.timeutil import from_us, now_us
from featureledger.registry import schema
from featureledger.registry.engine import RegistryDB
from featureledger.registry.segments import SegmentRecord, SegmentRepository

COMMIT_STATUSES = ("committed", "quarantined", "rolled_back")
PENDING_STATUS = "pending"  # a push's commit before it lands (see the module docstring)
# a commit whose data retention deleted: its row stays (datasets that read it say so), its
# files are gone, and it never changes status again (governance/retention.py)
EXPIRED_STATUS = "expired"

# The columns a row's seal covers, in order: every column but the seal itself. A column
# added later is appended here together with a new SEAL_VERSION, and rows sealed under the
# old version are checked with the old list.
SEALED_COLUMNS = (
    "commit_id", "project", "view_name", "view_version", "commit_time", "user", "run_id",
    "source", "steps", "row_count", "rejected_count", "validation", "profile", "files",
    "content_digest", "min_event_ts", "max_event_ts", "status", "status_reason",
    "status_changed_at", "file_manifest",
)
SEAL_VERSION = b"featureledger-commit-seal-v1\n"
SEAL_OK, SEAL_BROKEN, SEAL_NONE = "ok", "broken", "unsealed"


def seal(values: Mapping[Any, Any]) -> str:
    """The seal of a commit row: sha256 over :data:`SEALED_COLUMNS` as stored.

    Each column is its name, then ``n`` (NULL), ``i<decimal>`` (an integer) or
    ``s<length>:<UTF-8 text>``, NUL-terminated: unambiguous, and the same for the values an
    insert binds and those SQLite and PostgreSQL return.

    >>> seal({c: None for c in SEALED_COLUMNS})[:12]
    'ff921a053fcb'
    """
    h = hashlib.sha256(SEAL_VERSION)
    for name in SEALED_COLUMNS:
        v = values[name]
        if v is None:
            enc = b"n"
        elif isinstance(v, str):
            raw = v.encode("utf-8")
            enc = b"s%d:%s" % (len(raw), raw)
        else:  # ints, and numpy integers from a builder
            enc = b"i%d" % operator.index(v)
        h.update(name.encode() + b"=" + enc + b"\0")
    return h.hexdigest()


def seal_state(values: Mapping[Any, Any]) -> str:
    """``"ok"``, ``"broken"`` or ``"unsealed"`` for a row as read (a mapping of its columns)."""
    stored = values["row_digest"]
    if stored is None:
        return SEAL_NONE
    try:
        return SEAL_OK if seal(values) == stored else SEAL_BROKEN
    except (TypeError, KeyError):  # a value of a type featureledger never writes
        return SEAL_BROKEN


@dataclass(frozen=True)
class CommitRecord:
    commit_id: str
    view_name: str
    view_version: int
    commit_time: int  # µs since epoch, UTC
    user: str
    run_id: str | None
    source: dict[str, Any]
    steps: list[dict[str, Any]]
    row_count: int
    rejected_count: int
    validation: dict[str, Any]
    profile: dict[str, Any]
    files: list[str]  # relative to the offline store root
    content_digest: str
    min_event_ts: int | None
    max_event_ts: int | None
    status: str = "committed"
    status_reason: str | None = None
    status_changed_at: int | None = None
    # {relative path: {"size": bytes[, "sha256": hex]}} of the data and side files, recorded
    # at commit time (None for commits written before sizes were recorded)
    file_manifest: dict[str, dict[str, Any]] | None = None
    # whether the registry row still matches its seal (see the module docstring): "ok",
    # "broken" or "unsealed"; None for a record not read from the registry. Not part of
    # equality: it says how the row was found, not what the commit is
    seal: str | None = field(default=None, compare=False)
    extra: dict[str, Any] = field(default_factory=dict)
    # the active compacted segment holding this commit's rows, when there is one: readers
    # then read its rows from the segment's files (see registry/segments.py). Not part of
    # equality: it says where the rows are, not what the commit is
    segment: SegmentRecord | None = field(default=None, compare=False)
    # a derived commit whose inputs changed since it was computed: why (a parent commit
    # quarantined or rolled back, a newer parent version); filled by listings that ask
    # (see registry/derivations.py), None when not asked. Not part of equality
    stale: tuple[str, ...] | None = field(default=None, compare=False)

    @property
    def view_ref(self) -> str:
        return f"{self.view_name}@{self.view_version}"

    @property
    def tampered(self) -> bool:
        """Whether the registry row was changed outside featureledger (its seal is broken)."""
        return self.seal == SEAL_BROKEN

    @property
    def committed_at(self) -> Any:
        return from_us(self.commit_time)

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__
             if k not in ("extra", "segment", "stale")}
        if self.stale is not None:
            d["stale"] = list(self.stale)
        d["segment_id"] = self.segment.segment_id if self.segment else None
        d["commit_time_iso"] = from_us(self.commit_time).isoformat()
        return d


def _segment_id(c: CommitRecord) -> str | None:
    return c.segment.segment_id if c.segment is not None else None


def _row(r: Any) -> CommitRecord:
    return CommitRecord(
        commit_id=r.commit_id,
        view_name=r.view_name,
        view_version=r.view_version,
        commit_time=r.commit_time,
        user=r.user,
        run_id=r.run_id,
        source=json.loads(r.source),
        steps=json.loads(r.steps),
        row_count=r.row_count,
        rejected_count=r.rejected_count,
        validation=json.loads(r.validation),
        profile=json.loads(r.profile),
        files=json.loads(r.files),
        content_digest=r.content_digest,
        min_event_ts=r.min_event_ts,
        max_event_ts=r.max_event_ts,
        status=r.status,
        status_reason=r.status_reason,
        status_changed_at=r.status_changed_at,
        file_manifest=json.loads(r.file_manifest) if r.file_manifest else None,
        seal=seal_state(r._mapping),
    )


def tampered_error(rec: CommitRecord, doing: str) -> CommitTamperedError:
    """The error for a read or a status change that met a commit with a broken seal."""
    return CommitTamperedError(
        f"commit {rec.commit_id} ({rec.view_ref}) cannot be {doing}: its registry row no "
        "longer matches the seal taken when it was written or last changed status, so it "
        "was edited outside featureledger (its files, row count, times or status may not "
        "be what was committed). Restore the row from a registry backup (the registry's "
        "audit_log lists its status changes), or keep it out of reads: "
        f"featureledger quarantine {rec.commit_id} --reason 'row edited'",
        commit_id=rec.commit_id)


def expired_error(rec: CommitRecord) -> StateError:
    """The error for a status change of a commit retention expired."""
    return StateError(
        f"commit {rec.commit_id} ({rec.view_ref}) expired under its view's retention policy "
        f"at {from_us(rec.status_changed_at or 0).isoformat()}: its data files were deleted, "
        "so it cannot be served again or change status. Ingest the rows again as a new "
        "commit if they are still needed")


def require_sealed(commits: Sequence[CommitRecord] | Any, doing: str = "read") -> None:
    """Raise CommitTamperedError for the first of ``commits`` whose row seal is broken."""
    for c in commits:
        if c.seal == SEAL_BROKEN:
            raise tampered_error(c, doing)


class CommitRepository:
    def __init__(self, db: RegistryDB) -> None:
        self.db = db
        self.segments = SegmentRepository(db)

    def _located(self, records: list[CommitRecord], conn: Connection | None = None
                 ) -> list[CommitRecord]:
        """``records`` with the active segment that holds each one's rows, if any."""
        if not records:
            return records
        views = {(r.view_name, r.view_version) for r in records}
        where: dict[str, SegmentRecord] = {}
        for seg in self.segments.active(conn, views=views):
            for cid in seg.commit_ids:
                where[cid] = seg
        if not where:
            return records
        return [dataclasses.replace(r, segment=where[r.commit_id]) if r.commit_id in where
                else r for r in records]

    def insert(self, conn: Connection, rec: CommitRecord) -> None:
        """Record a commit inside the caller's write transaction (this makes it visible),
        sealed (see the module docstring)."""
        values: dict[str, Any] = dict(
            project=self.db.project,
            commit_id=rec.commit_id,
            view_name=rec.view_name,
            view_version=rec.view_version,
            commit_time=rec.commit_time,
            user=rec.user,
            run_id=rec.run_id,
            source=canonical_json(rec.source),
            steps=canonical_json(rec.steps),
            row_count=rec.row_count,
            rejected_count=rec.rejected_count,
            validation=canonical_json(rec.validation),
            profile=canonical_json(rec.profile),
            files=canonical_json(rec.files),
            content_digest=rec.content_digest,
            min_event_ts=rec.min_event_ts,
            max_event_ts=rec.max_event_ts,
            status=rec.status,
            status_reason=rec.status_reason,
            status_changed_at=rec.status_changed_at,
            file_manifest=(None if rec.file_manifest is None
                           else canonical_json(rec.file_manifest)),
        )
        values["row_digest"] = seal(values)
        conn.execute(schema.commits.insert().values(**values))

    def last_commit_time(self, conn: Connection, view: str) -> int | None:
        """The latest commit time of any commit of ``view`` (inside the caller's write
        transaction, which holds the view's commit lock)."""
        t = schema.commits
        return conn.execute(sa.select(sa.func.max(t.c.commit_time))
                            .where(self.db.scope(t), t.c.view_name == view)).scalar()

    def delete_pending(self, conn: Connection, commit_id: str) -> bool:
        """Remove the pending row of a push's commit (it lands, or never will)."""
        t = schema.commits
        n = conn.execute(t.delete().where(self.db.scope(t), t.c.commit_id == commit_id,
                                          t.c.status == PENDING_STATUS)).rowcount
        return bool(n)

    def get(self, commit_id: str) -> CommitRecord:
        t = schema.commits
        with self.db.read() as conn:
            r = conn.execute(
                sa.select(t).where(self.db.scope(t), t.c.commit_id == commit_id)).first()
        if r is None:
            raise UnknownCommitError(
                f"unknown commit {commit_id!r}; list commits with 'featureledger commits VIEW'"
            )
        return self._located([_row(r)])[0]

    def get_many(self, commit_ids: list[str]) -> list[CommitRecord]:
        """Commits by id, in the order given; raises for any id that does not exist."""
        t = schema.commits
        found: dict[str, CommitRecord] = {}
        with self.db.read() as conn:
            for i in range(0, len(commit_ids), 500):
                chunk = commit_ids[i:i + 500]
                for r in conn.execute(
                        sa.select(t).where(self.db.scope(t), t.c.commit_id.in_(chunk))):
                    found[r.commit_id] = _row(r)
        missing = [c for c in commit_ids if c not in found]
        if missing:
            raise UnknownCommitError(f"unknown commit(s): {', '.join(missing[:10])}")
        return self._located([found[c] for c in commit_ids])

    def moved(self, commits: Sequence[CommitRecord]) -> bool:
        """Whether any of ``commits`` is no longer what a reader found: its status changed
        (retention expired it, a quarantine hid it), its row is gone, or its rows are now
        read from another segment (a compaction, or retention rewrote its segment). A
        read that met a missing file of such a commit raced that change and may run again
        on a fresh list; a missing file of an unchanged commit is lost data."""
        if not commits:
            return False
        try:
            now = {c.commit_id: c for c in self.get_many([c.commit_id for c in commits])}
        except UnknownCommitError:
            return True
        return any(now[c.commit_id].status != c.status
                   or _segment_id(now[c.commit_id]) != _segment_id(c) for c in commits)

    def list(self, view: str | None = None, version: int | None = None, *,
             as_of: int | None = None, statuses: tuple[str, ...] | None = ("committed",),
             run_id: str | None = None, limit: int | None = None,
             versions: Sequence[int] | None = None, newest: int | None = None,
             before: tuple[int, str] | None = None) -> list[CommitRecord]:
        """Commits in commit order (oldest first).

        ``as_of`` (µs) keeps commits with ``commit_time <= as_of``; ``statuses=None`` keeps
        every status; ``versions`` keeps commits of any of those view versions (the
        versions a version reads: see ``DefinitionRepository.data_chain``); ``before``
        keeps commits before ``(commit_time, commit_id)`` in commit order. ``limit`` keeps
        the oldest ``limit`` commits, ``newest`` the newest ``newest`` (still returned
        oldest first): the database reads that many rows, not the view's whole history.
        """
        t = schema.commits
        q = sa.select(t).where(self.db.scope(t))
        if view is not None:
            q = q.where(t.c.view_name == view)
        if version is not None:
            q = q.where(t.c.view_version == version)
        if versions is not None:
            q = q.where(t.c.view_version.in_(list(versions)))
        if as_of is not None:
            q = q.where(t.c.commit_time <= as_of)
        if statuses is not None:
            q = q.where(t.c.status.in_(statuses))
        if run_id is not None:
            q = q.where(t.c.run_id == run_id)
        if before is not None:
            at, cid = before
            q = q.where(sa.or_(t.c.commit_time < at,
                               sa.and_(t.c.commit_time == at, t.c.commit_id < cid)))
        if newest is not None:
            q = q.order_by(t.c.commit_time.desc(), t.c.commit_id.desc()).limit(newest)
        else:
            q = q.order_by(t.c.commit_time, t.c.commit_id)
        if limit is not None:
            q = q.limit(limit)
        with self.db.read() as conn:
            rows = [_row(r) for r in conn.execute(q)]
            if newest is not None:
                rows.reverse()
            return self._located(rows, conn)

    def all_files(self) -> set[str]:
        """Every file any commit of this project references, whatever its status (for gc)."""
        t = schema.commits
        with self.db.read() as conn:
            out: set[str] = set()
            for (files,) in conn.execute(sa.select(t.c.files).where(self.db.scope(t))):
                out.update(json.loads(files))
        return out

    def loose_count(self, view: str, version: int) -> int:
        """How many commits of ``view@version`` (pending ones aside) are not held by an
        active compacted segment: a count and one small query, not the commits' rows (it
        runs after every ingestion)."""
        t = schema.commits
        with self.db.read() as conn:
            total = conn.execute(sa.select(sa.func.count()).select_from(t).where(
                self.db.scope(t), t.c.view_name == view, t.c.view_version == version,
                t.c.status != PENDING_STATUS)).scalar() or 0
            held = sum(len(s.commit_ids) for s in self.segments.active(
                conn, views=[(view, version)]))
        return int(total) - held

    def live_files(self, grace_us: int) -> set[str]:
        """The files gc must keep (relative paths): every commit's own files, but those of a
        commit held by an active segment made more than ``grace_us`` ago; every active
        segment's files, and a retired segment's until ``grace_us`` after it was retired.
        Within the grace period a reader that planned before a compaction still finds
        what it planned to read."""
        t = schema.commits
        cutoff = now_us() - grace_us
        settled: set[str] = set()  # commits whose rows are in a segment older than grace
        out: set[str] = set()
        with self.db.read() as conn:
            for seg in self.segments.active(conn):
                out.update(seg.files)
                if seg.created_at <= cutoff:
                    settled.update(seg.commit_ids)
            st = schema.segments
            for (files,) in conn.execute(sa.select(st.c.files).where(
                    self.db.scope(st), st.c.status != "active", st.c.retired_at > cutoff)):
                out.update(json.loads(files))
            for cid, files, manifest in conn.execute(
                    sa.select(t.c.commit_id, t.c.files, t.c.file_manifest)
                    .where(self.db.scope(t))):
                if cid not in settled:
                    out.update(json.loads(files))
                elif manifest:  # side files (rejected rows) are not in the segment: the
                    # commit's folder stays for them
                    data = set(json.loads(files))
                    out.update(p for p in json.loads(manifest) if p not in data)
        return out

    def set_status(self, commit_id: str, status: str, reason: str | None = None,
                   actor: str | None = None) -> CommitRecord:
        """Quarantine, roll back or restore a commit (audited)."""
        if status not in COMMIT_STATUSES:
            raise StateError(f"commit status {status!r} is not valid; use one of {COMMIT_STATUSES}")
        old = self.get(commit_id)
        if old.status == PENDING_STATUS:
            raise StateError(
                f"commit {commit_id} is pending: its pushed rows have not landed offline "
                "yet. Flush the pushes (or restart the server holding them), then change "
                "its status"
            )
        if old.status == EXPIRED_STATUS:
            raise expired_error(old)
        if old.status == status:
            return old
        with self.db.write() as conn:
            self.set_status_in(conn, commit_id, status, reason, actor=actor)
        return self.get(commit_id)

    def set_status_in(self, conn: Connection, commit_id: str, status: str,
                      reason: str | None = None, actor: str | None = None) -> None:
        """:meth:`set_status` inside the caller's write transaction ``conn`` (a derived
        commit superseded in the transaction that writes its replacement)."""
        t = schema.commits
        # read again under the write lock: the seal covers the row as it is now
        row = conn.execute(
            sa.select(t).where(self.db.scope(t), t.c.commit_id == commit_id)).one()
        old = _row(row)
        values = {**row._mapping, "status": status, "status_reason": reason,
                  "status_changed_at": now_us()}
        broken = seal_state(row._mapping) == SEAL_BROKEN
        if broken and status == "committed":
            raise tampered_error(_row(row), "restored")
        # a broken row is hidden but never re-sealed: that would vouch for the edit
        new_seal = row.row_digest if broken or row.row_digest is None else seal(values)
        conn.execute(
            t.update().where(self.db.scope(t), t.c.commit_id == commit_id)
            .values(status=status, status_reason=reason,
                    status_changed_at=values["status_changed_at"], row_digest=new_seal)
        )
        details: dict[str, Any] = {"from": old.status, "to": status, "reason": reason}
        if broken:
            details["row_seal"] = SEAL_BROKEN
        self.db.audit(conn, f"commit_status:{status}", "commit", commit_id, details,
                      actor=actor)
