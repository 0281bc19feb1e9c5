"""Writing lineage edges. Callers pass their open write transaction, so an operation and
its edges commit together or not at all.

Node ids: global ids as they are (``cmt_...``, ``ds_...``, ``run_...``, ``mdl_...``,
``dep_...``, ``exp_...``) and kind-prefixed names for the rest:

>>> view_node("driver_stats", 3), source_node("file:///data/trips.parquet")
('view:driver_stats@3', 'source:file:///data/trips.parquet')
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from featureledger.model.hashing import canonical_json
from featureledger.model.timeutil import now_us
from featureledger.registry import schema
from featureledger.registry.scope import project_of, scope

# relation names, source -> destination, in data-flow direction
FEEDS = "feeds"  # source -> view version
HAS_COMMIT = "has_commit"  # view version -> commit
INGESTED = "ingested"  # source -> commit
WROTE = "wrote"  # run -> commit
READ = "read"  # commit -> dataset
USED_BY = "used_by"  # dataset -> run
PRODUCED = "produced"  # run -> model
TRAINED_ON = "trained_on"  # dataset -> model
DEPLOYED_AS = "deployed_as"  # model -> deployment
DERIVES = "derives"  # parent view version -> derived view version
IN_SET = "in_set"  # view version -> feature set version
CONSUMES = "consumes"  # feature set version -> model
MIGRATED = "migrated"  # commit of an old version -> commit a migration made from it


def view_node(name: str, version: int) -> str:
    return f"view:{name}@{version}"


def feature_set_node(name: str, version: int) -> str:
    return f"feature_set:{name}@{version}"


def source_node(uri: str) -> str:
    return f"source:{uri}"


def record_edges(conn: Connection, edges: Iterable[tuple[str, str, str]] |
                 Iterable[tuple[str, str, str, dict[str, Any]]]) -> int:
    """Insert edges ``(src, dst, relation[, details])`` of the connection's project; existing
    edges are kept as they are."""
    now = now_us()
    project = project_of(conn)
    rows = []
    for e in edges:
        src, dst, rel = e[0], e[1], e[2]
        details = canonical_json(e[3]) if len(e) > 3 and e[3] else None  # type: ignore[misc]
        rows.append({"project": project, "src": src, "dst": dst, "relation": rel,
                     "created_at": now, "details": details})
    if not rows:
        return 0
    t = schema.lineage_edges
    stmt: Any
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        stmt = pg_insert(t).on_conflict_do_nothing()
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        stmt = sqlite_insert(t).on_conflict_do_nothing()
    conn.execute(stmt, rows)
    return len(rows)


def edges_of(conn: Connection, node: str) -> list[dict[str, Any]]:
    t = schema.lineage_edges
    q = sa.select(t).where(scope(conn, t), sa.or_(t.c.src == node, t.c.dst == node))
    return [dict(r._mapping) for r in conn.execute(q)]
