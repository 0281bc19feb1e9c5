"""Lineage graph queries as set-based SQL: recursive CTEs over ``lineage_edges``.

Edges point in data-flow direction (source -> view -> commit -> dataset -> run -> model ->
deployment). *Upstream* of a node is everything that flowed into it, *downstream*
everything it flowed into. One statement per query on SQLite and PostgreSQL alike; the
database walks the graph, Python never loops over rows to do it. ``UNION`` (not ``UNION
ALL``) in the recursive term visits every node once, so shared ancestors and cycles cost
nothing extra. Every reference to ``lineage_edges`` keeps to the connection's project
(``e.project = :project``), so a walk never crosses into another project's graph.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from featureledger.registry.scope import project_of

Direction = Literal["upstream", "downstream", "both"]
_NODE_TYPE = "VARCHAR(512)"  # lineage_edges.src/dst; PostgreSQL needs the types to match


@dataclass(frozen=True)
class Edge:
    src: str
    dst: str
    relation: str
    details: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"src": self.src, "dst": self.dst, "relation": self.relation}
        if self.details:
            d["details"] = self.details
        return d


@dataclass
class LineageGraph:
    """A subgraph: its root(s), the edges, and metadata per node (filled by the service)."""

    roots: list[str]
    direction: str
    edges: list[Edge]
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)

    def node_ids(self) -> list[str]:
        seen: dict[str, None] = dict.fromkeys(self.roots)
        for e in self.edges:
            seen.setdefault(e.src)
            seen.setdefault(e.dst)
        return list(seen)

    def __contains__(self, node: str) -> bool:
        return node in self.roots or any(node in (e.src, e.dst) for e in self.edges)

    def of_kind(self, prefix: str) -> list[str]:
        """Node ids starting with ``prefix`` (``cmt_``, ``view:``...), sorted."""
        return sorted(n for n in self.node_ids() if n.startswith(prefix))

    def to_dict(self) -> dict[str, Any]:
        return {"roots": self.roots, "direction": self.direction,
                "nodes": {n: self.nodes.get(n, {"id": n}) for n in self.node_ids()},
                "edges": [e.to_dict() for e in self.edges]}


def _seed_sql(seeds: list[str] | str, params: dict[str, Any], prefix: str = "seed") -> str:
    """SQL selecting the seed nodes as a column ``node``: literal ids (bound parameters) or
    a subquery given as text (which must name its column ``node``)."""
    if isinstance(seeds, str):
        return seeds
    parts = []
    for i, s in enumerate(seeds):
        params[f"{prefix}{i}"] = s
        parts.append(f"SELECT CAST(:{prefix}{i} AS {_NODE_TYPE}) AS node")
    return (" UNION ".join(parts) if parts
            else f"SELECT CAST(NULL AS {_NODE_TYPE}) AS node WHERE 1=0")


def _walk_sql(direction: Literal["upstream", "downstream"], seed_sql: str,
              max_depth: int | None, name: str = "reach") -> tuple[str, str]:
    """The CTE ``name(node)`` (without ``WITH RECURSIVE``) of the nodes reached from the
    seeds, and the edge column that joins to it."""
    step_from, step_to = ("dst", "src") if direction == "upstream" else ("src", "dst")
    if max_depth is None:
        cte = (f"{name}(node) AS ({seed_sql} UNION SELECT e.{step_to} FROM {name} r "
               f"CROSS JOIN lineage_edges e WHERE e.{step_from} = r.node "
               "AND e.project = :project)")
    else:
        # depth bounded: (node, depth) pairs, then the nodes within the bound
        cte = (f"{name}_walk(node, depth) AS (SELECT s.node, 0 FROM ({seed_sql}) s "
               f"UNION SELECT e.{step_to}, w.depth + 1 FROM {name}_walk w CROSS JOIN "
               f"lineage_edges e WHERE e.{step_from} = w.node AND e.project = :project "
               "AND w.depth < :max_depth), "
               f"{name}(node) AS (SELECT DISTINCT node FROM {name}_walk)")
    return cte, step_from


def walk(conn: Connection, seeds: list[str] | str, direction: Literal["upstream", "downstream"],
         *, max_depth: int | None = None, params: dict[str, Any] | None = None) -> list[Edge]:
    """Every edge upstream or downstream of ``seeds`` (within ``max_depth`` hops)."""
    p: dict[str, Any] = {**(params or {}), "project": project_of(conn)}
    seed_sql = _seed_sql(seeds, p)
    if max_depth is not None:
        p["max_depth"] = max_depth
    cte, join_col = _walk_sql(direction, seed_sql, max_depth)
    other = "src" if join_col == "dst" else "dst"
    where = ""
    if max_depth is not None:  # the far end must be in reach too, else the edge is past the bound
        where = f" AND e.{other} IN (SELECT node FROM reach)"
    # CROSS JOIN keeps the reached nodes as the outer loop on SQLite: one index probe per
    # node instead of a scan of every edge
    sql = (f"WITH RECURSIVE {cte} SELECT e.src, e.dst, e.relation, e.details FROM reach r "
           f"CROSS JOIN lineage_edges e WHERE e.{join_col} = r.node "
           f"AND e.project = :project{where} ORDER BY e.src, e.dst, e.relation")
    return [Edge(s, d, rel, json.loads(det) if det else None)
            for s, d, rel, det in conn.execute(sa.text(sql), p)]


def reachable(conn: Connection, seeds: list[str] | str,
              direction: Literal["upstream", "downstream"], *,
              params: dict[str, Any] | None = None, like: str | None = None) -> list[str]:
    """Node ids upstream or downstream of ``seeds`` (seeds included), optionally only those
    matching the SQL ``LIKE`` pattern ``like``."""
    p: dict[str, Any] = {**(params or {}), "project": project_of(conn)}
    cte, _ = _walk_sql(direction, _seed_sql(seeds, p), None)
    filt = ""
    if like is not None:
        p["like"] = like
        filt = " WHERE node LIKE :like"
    sql = f"WITH RECURSIVE {cte} SELECT node FROM reach{filt} ORDER BY node"
    return [r[0] for r in conn.execute(sa.text(sql), p)]


def lineage(conn: Connection, node: str, direction: Direction = "both", *,
            max_depth: int | None = None) -> LineageGraph:
    """The subgraph upstream, downstream or both ways of ``node``."""
    edges: dict[tuple[str, str, str], Edge] = {}
    for d in ("upstream", "downstream"):
        if direction in (d, "both"):
            for e in walk(conn, [node], d, max_depth=max_depth):  # type: ignore[arg-type]
                edges[(e.src, e.dst, e.relation)] = e
    return LineageGraph([node], direction, sorted(edges.values(),
                                                  key=lambda e: (e.src, e.dst, e.relation)))


def path(conn: Connection, a: str, b: str) -> LineageGraph:
    """Every edge on some path between ``a`` and ``b`` (in either flow direction).

    First the nodes upstream of ``b``; then a walk downstream from ``a`` that only enters
    those nodes. What it reaches is exactly the set of nodes on a path from ``a`` to ``b``,
    and the edges among them form the answer. Empty when the two are not connected.
    """
    for src, dst in ((a, b), (b, a)):
        p: dict[str, Any] = {"project": project_of(conn)}
        up, _ = _walk_sql("upstream", _seed_sql([dst], p, "b"), None, "back")
        sql = (f"WITH RECURSIVE {up}, "
               f"reach(node) AS ({_seed_sql([src], p, 'a')} UNION SELECT e.dst FROM reach r "
               "CROSS JOIN lineage_edges e WHERE e.src = r.node AND e.project = :project "
               "AND e.dst IN (SELECT node FROM back)) "
               "SELECT e.src, e.dst, e.relation, e.details FROM reach r CROSS JOIN "
               "lineage_edges e WHERE e.src = r.node AND e.project = :project "
               "AND e.dst IN (SELECT node FROM reach) "
               "AND :b0 IN (SELECT node FROM reach) "
               "ORDER BY e.src, e.dst, e.relation")
        edges = [Edge(s, d, rel, json.loads(det) if det else None)
                 for s, d, rel, det in conn.execute(sa.text(sql), p)]
        if edges:
            return LineageGraph([src, dst], "path", edges)
    return LineageGraph([a, b], "path", [])
