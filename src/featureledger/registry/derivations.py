"""What a derived commit read, and whether it is stale.

A commit of a derived view records in its ``source`` exactly what it was computed from::

    {"type": "derive", "range": [lo, hi] | None,          # event-time µs, hi exclusive
     "parents": [{"view": "trips", "version": 2, "pinned": False, "role": "input",
                  "commits": ["cmt_...", ...]}, ...],
     "transformation": "<definition hash of the derived view version>",
     "columns": {"method": "sqlglot", "columns": {...}, "dataset": [...]}}

``columns`` is the column-level lineage the commit was computed with (see
:mod:`featureledger.lineage.columns`; absent on commits derived before it was recorded).

Staleness is computed when asked, from that record and the registry as it is now, never
stored: a derived commit is stale when a parent commit it read is no longer ``committed``
(quarantined or rolled back; a parent commit retention expired does not count) or when a parent it follows unpinned has a newer version
than the one it read. A stored flag would have to be set by every quarantine, rollback
and apply, and cleared by every restore; the answer computed here cannot drift from the
statuses it depends on, and costs two indexed queries per listing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from featureledger.registry import schema
from featureledger.registry.commits import EXPIRED_STATUS
from featureledger.registry.engine import RegistryDB

DERIVE_SOURCE = "derive"


def derivation(source: dict[str, Any] | None) -> dict[str, Any] | None:
    """The derivation record of a commit's ``source``, None for any other commit."""
    if isinstance(source, dict) and source.get("type") == DERIVE_SOURCE:
        return source
    return None


def parent_commit_ids(source: dict[str, Any] | None) -> list[str]:
    d = derivation(source)
    if d is None:
        return []
    return [c for p in d.get("parents", []) for c in p.get("commits", [])]


def column_record(source: dict[str, Any] | None) -> dict[str, Any] | None:
    """The column lineage a derived commit records, None when it records none."""
    d = derivation(source)
    cols = d.get("columns") if d is not None else None
    return cols if isinstance(cols, dict) else None


def stale_reasons(db: RegistryDB, records: Sequence[Any]) -> dict[str, tuple[str, ...]]:
    """Per committed derived commit among ``records`` (CommitRecords), why it is stale
    (empty when it is not). Other commits are left out."""
    derived = [r for r in records if derivation(r.source) is not None]
    if not derived:
        return {}
    ids = sorted({c for r in derived for c in parent_commit_ids(r.source)})
    unpinned = sorted({p["view"] for r in derived for p in r.source.get("parents", [])
                       if not p.get("pinned")})
    t, d = schema.commits, schema.definitions
    status: dict[str, str] = {}
    latest: dict[str, int] = {}
    with db.read() as conn:
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            status.update(dict(conn.execute(  # type: ignore[arg-type]
                sa.select(t.c.commit_id, t.c.status)
                .where(db.scope(t), t.c.commit_id.in_(chunk))).all()))
        if unpinned:
            latest = dict(conn.execute(  # type: ignore[arg-type]
                sa.select(d.c.name, sa.func.max(d.c.version))
                .where(db.scope(d), d.c.kind == "feature_view", d.c.name.in_(unpinned))
                .group_by(d.c.name)).all())
    out: dict[str, tuple[str, ...]] = {}
    for r in derived:
        if r.status != "committed":
            continue
        why: list[str] = []
        for p in r.source.get("parents", []):
            for c in p.get("commits", []):
                s = status.get(c, "missing")
                # an expired parent is retention at work, not a wrong input: what was
                # derived from it stays valid (and keeps its own retention)
                if s not in ("committed", EXPIRED_STATUS):
                    why.append(f"parent commit {c} ({p['view']}@{p['version']}) is {s}")
            newest = latest.get(p["view"])
            if not p.get("pinned") and newest is not None and newest > int(p["version"]):
                why.append(f"parent {p['view']} has a newer version @{newest} "
                           f"(read @{p['version']})")
        out[r.commit_id] = tuple(why)
    return out


def with_staleness(db: RegistryDB, records: list[Any]) -> list[Any]:
    """``records`` with ``stale`` filled for every derived commit (a tuple of reasons,
    empty when fresh); other commits keep ``stale=None``."""
    reasons = stale_reasons(db, records)
    if not reasons:
        return records
    return [dataclasses.replace(r, stale=reasons[r.commit_id]) if r.commit_id in reasons
            else r for r in records]
