"""The audit trail: one append-only hash chain per project.

Every entry carries its project's sequence number, the hash of the entry before it and its
own hash over everything it says (sequence, time, principal, action, resource, details with
the decision and reason, previous hash). The chain's head (last sequence number and hash)
is also kept in the project's ``registry_state`` row, written in the same transaction, so
removing entries from the end is as visible as removing them from the middle. With a key in
``FEATURELEDGER_AUDIT_KEY`` each entry is also signed (HMAC-SHA256 of its hash): then even
someone who rewrites the whole chain and its head cannot forge it without the key.

:func:`verify` walks the chain and names the first entry that is wrong: edited (its hash no
longer matches its content), deleted (a sequence number missing, or the head beyond the last
entry), inserted or reordered (an entry whose previous hash is not its predecessor's hash,
or a sequence number taken twice). Entries are appended inside the caller's transaction:
an action and its entry commit together or not at all.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from featureledger.model.hashing import canonical_json, sha256_hex
from featureledger.registry import schema

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from featureledger.registry.engine import RegistryDB

GENESIS = "0" * 64
KEY_ENV = "FEATURELEDGER_AUDIT_KEY"


def entry_hash(*, project: str, seq: int, at: int, actor: str, action: str, kind: str,
               object_id: str, details: str, prev_hash: str) -> str:
    """The hash of one entry: sha256 over the canonical JSON of every field, in order."""
    return sha256_hex(canonical_json(
        [project, seq, at, actor, action, kind, object_id, details, prev_hash]))


def signing_key() -> bytes | None:
    """The key entries are signed with, from ``FEATURELEDGER_AUDIT_KEY`` (none: unsigned)."""
    key = os.environ.get(KEY_ENV)
    return key.encode("utf-8") if key else None


def sign(digest: str, key: bytes) -> str:
    return hmac.new(key, digest.encode("ascii"), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class AuditEntry:
    """One entry of the audit trail."""

    seq: int
    at: int
    actor: str
    action: str
    object_kind: str
    object_id: str
    details: dict[str, Any]
    prev_hash: str
    entry_hash: str
    signed: bool

    @property
    def decision(self) -> str:
        """``allow`` for an action that happened, ``deny`` for a refused request."""
        return str(self.details.get("decision", "allow"))

    @property
    def reason(self) -> str | None:
        value = self.details.get("reason")
        return None if value is None else str(value)

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "at": self.at, "actor": self.actor, "action": self.action,
                "object_kind": self.object_kind, "object_id": self.object_id,
                "decision": self.decision, "reason": self.reason, "details": self.details,
                "prev_hash": self.prev_hash, "entry_hash": self.entry_hash,
                "signed": self.signed}


@dataclass(frozen=True)
class AuditProblem:
    """What is wrong at one place of the chain."""

    seq: int | None  # the sequence number at which the problem shows
    kind: str  # edited | deleted | inserted | reordered | truncated | unsigned | bad_signature
    message: str


@dataclass(frozen=True)
class AuditVerification:
    """The result of walking a project's audit chain."""

    project: str
    entries: int
    head_seq: int
    head_hash: str
    problems: list[AuditProblem] = field(default_factory=list)
    signatures_checked: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first_bad(self) -> AuditProblem | None:
        return self.problems[0] if self.problems else None

    def to_dict(self) -> dict[str, Any]:
        return {"project": self.project, "ok": self.ok, "entries": self.entries,
                "head_seq": self.head_seq, "head_hash": self.head_hash,
                "signatures_checked": self.signatures_checked,
                "problems": [{"seq": p.seq, "kind": p.kind, "message": p.message}
                             for p in self.problems]}


def _head(db: RegistryDB, conn: Connection) -> tuple[int, str] | None:
    t = schema.registry_state
    row = conn.execute(sa.select(t.c.audit_seq, t.c.audit_head).where(db.scope(t))).first()
    if row is None or row.audit_seq is None:
        return None
    return int(row.audit_seq), str(row.audit_head)


def _set_head(db: RegistryDB, conn: Connection, seq: int, digest: str) -> None:
    t = schema.registry_state
    dialect: Any
    if db.dialect == "postgresql":
        from sqlalchemy.dialects import postgresql as dialect
    else:
        from sqlalchemy.dialects import sqlite as dialect
    stmt = dialect.insert(t).values(project=db.project, generation=0, audit_seq=seq,
                                    audit_head=digest)
    conn.execute(stmt.on_conflict_do_update(
        index_elements=[t.c.project], set_={"audit_seq": seq, "audit_head": digest}))


def append(db: RegistryDB, conn: Connection, *, at: int, actor: str, action: str, kind: str,
           object_id: str, details: str, decision: str = "allow") -> str:
    """Append one entry to ``db``'s project chain inside ``conn``'s transaction; its hash.

    The predecessor is the head recorded in ``registry_state`` (not the last row found), so
    entries deleted from the end leave a gap that :func:`verify` reports.
    """
    if db.dialect == "postgresql":
        db.lock(conn, "audit-chain")  # one appender per project until this transaction ends
    head = _head(db, conn)
    seq, prev = (head[0] + 1, head[1]) if head else (1, GENESIS)
    digest = entry_hash(project=db.project, seq=seq, at=at, actor=actor, action=action,
                        kind=kind, object_id=object_id, details=details, prev_hash=prev)
    key = signing_key()
    conn.execute(schema.audit_log.insert().values(
        project=db.project, at=at, actor=actor, action=action, object_kind=kind,
        object_id=object_id, details=details, seq=seq, prev_hash=prev, entry_hash=digest,
        signature=sign(digest, key) if key else None, decision=decision))
    _set_head(db, conn, seq, digest)
    return digest


def _decision(details: str) -> str:
    """The top-level ``decision`` of an entry's details (``allow`` when absent)."""
    try:
        value = json.loads(details).get("decision", "allow")
    except (ValueError, AttributeError):
        return "allow"
    return str(value)


def _entry(row: Any) -> AuditEntry:
    return AuditEntry(seq=int(row.seq or 0), at=row.at, actor=row.actor, action=row.action,
                      object_kind=row.object_kind, object_id=row.object_id,
                      details=json.loads(row.details), prev_hash=row.prev_hash or "",
                      entry_hash=row.entry_hash or "", signed=row.signature is not None)


def entries(db: RegistryDB, *, kind: str | None = None, object_id: str | None = None,
            action: str | None = None, actor: str | None = None,
            decision: str | None = None, since: int | None = None,
            limit: int = 1000) -> list[AuditEntry]:
    """The newest ``limit`` entries matching the filters, newest first."""
    t = schema.audit_log
    q = sa.select(t).where(db.scope(t)).order_by(t.c.seq.desc(), t.c.id.desc()).limit(limit)
    if kind:
        q = q.where(t.c.object_kind == kind)
    if object_id:
        q = q.where(t.c.object_id == object_id)
    if action:
        q = q.where(t.c.action == action)
    if actor:
        q = q.where(t.c.actor == actor)
    if since is not None:
        q = q.where(t.c.at >= since)
    if decision:  # in the query: the newest ``limit`` denials, not denials of the last rows
        q = q.where(t.c.decision == decision)
    with db.read() as conn:
        return [_entry(r) for r in conn.execute(q)]


def verify(db: RegistryDB, *, key: bytes | None = None,
           anchor: tuple[int, str] | None = None) -> AuditVerification:
    """Walk ``db``'s project chain from the first entry and report every problem.

    ``key`` checks the signatures (every entry must then be signed); ``anchor`` is a
    (seq, hash) pair kept outside the registry (printed by an earlier verify), checked to be
    still in the chain, which catches a chain rewritten from scratch without a key.
    """
    t = schema.audit_log
    problems: list[AuditProblem] = []
    expected_seq, expected_prev = 1, GENESIS
    count = checked = 0
    last_id = -1
    anchor_seen = anchor is None
    with db.read() as conn:
        head = _head(db, conn)
        rows = conn.execute(sa.select(t).where(db.scope(t)).order_by(t.c.seq, t.c.id))
        for row in rows:
            count += 1
            seq = int(row.seq) if row.seq is not None else None
            if seq is None:
                problems.append(AuditProblem(None, "inserted",
                                             f"entry id {row.id} has no sequence number: it "
                                             "was inserted outside the audit chain"))
                continue
            digest = entry_hash(project=db.project, seq=seq, at=row.at, actor=row.actor,
                                action=row.action, kind=row.object_kind,
                                object_id=row.object_id, details=row.details,
                                prev_hash=row.prev_hash or "")
            if seq < expected_seq:
                problems.append(AuditProblem(seq, "inserted",
                                             f"entry {seq} appears twice (id {row.id}): an "
                                             "entry was inserted with a taken number"))
                continue
            if seq > expected_seq:
                gone = (f"entry {expected_seq}" if seq == expected_seq + 1
                        else f"entries {expected_seq}-{seq - 1}")
                problems.append(AuditProblem(expected_seq, "deleted",
                                             f"{gone} missing before entry {seq}: deleted"))
            elif row.prev_hash != expected_prev:
                problems.append(AuditProblem(seq, "reordered",
                                             f"entry {seq} does not follow entry {seq - 1} "
                                             "(its previous hash differs): entries were "
                                             "inserted, swapped or reordered"))
            if digest != row.entry_hash:
                problems.append(AuditProblem(seq, "edited",
                                             f"entry {seq} ({row.action} {row.object_kind} "
                                             f"{row.object_id}) was edited: its content no "
                                             "longer matches its hash"))
            elif _decision(row.details) != row.decision:
                problems.append(AuditProblem(seq, "edited",
                                             f"entry {seq}'s decision column says "
                                             f"{row.decision!r}, its hashed details do not: "
                                             "the column was edited"))
            if row.id < last_id:
                problems.append(AuditProblem(seq - 1, "reordered",
                                             f"entries {seq - 1} and {seq} are stored in "
                                             "the opposite order: rows were swapped"))
            last_id = row.id
            if key is not None:
                checked += 1
                if row.signature is None:
                    problems.append(AuditProblem(seq, "unsigned",
                                                 f"entry {seq} is not signed"))
                elif not hmac.compare_digest(row.signature, sign(row.entry_hash or "", key)):
                    problems.append(AuditProblem(seq, "bad_signature",
                                                 f"entry {seq}'s signature does not match "
                                                 "its hash under the given key"))
            if anchor is not None and seq == anchor[0]:
                anchor_seen = True
                if row.entry_hash != anchor[1]:
                    problems.append(AuditProblem(seq, "edited",
                                                 f"entry {seq}'s hash differs from the "
                                                 "anchor kept outside the registry: the "
                                                 "chain was rewritten from there on"))
            expected_seq, expected_prev = seq + 1, row.entry_hash or ""
    last_seq = expected_seq - 1
    if head is None and count:
        problems.append(AuditProblem(1, "edited", "the chain's head record is missing"))
    elif head is not None and head[0] != last_seq:
        if head[0] > last_seq:
            problems.append(AuditProblem(last_seq + 1, "truncated",
                                         f"entries {last_seq + 1}-{head[0]} missing at the "
                                         f"end: the head says {head[0]} entries were written"))
        else:
            problems.append(AuditProblem(head[0] + 1, "inserted",
                                         f"entries after {head[0]} were added outside the "
                                         "audit chain (the head says it ends there)"))
    elif head is not None and head[1] != expected_prev:
        problems.append(AuditProblem(last_seq, "edited",
                                     f"entry {last_seq} is not the head the registry "
                                     "recorded"))
    if not anchor_seen and anchor is not None:
        problems.append(AuditProblem(anchor[0], "deleted",
                                     f"anchor entry {anchor[0]} is not in the chain"))
    problems.sort(key=lambda p: (p.seq if p.seq is not None else 0))
    return AuditVerification(project=db.project, entries=count, head_seq=last_seq,
                             head_hash=expected_prev, problems=problems,
                             signatures_checked=checked)
