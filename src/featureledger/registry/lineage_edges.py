"""Writing lineage edges. Callers pass their open write transaction, so an operation and
its edges commit together or not at all.

Node ids: global ids as they are (``cmt_...``, ``ds_...``, ``run_...``, ``mdl_...``,
``dep_...``, ``exp_...``) and kind-prefixed names for the rest:

>>> view_node("driver_stats", 3), source_node("file:///data/trips.parquet")
('view:driver_stats@3', 'source:file:///data/trips.parquet')

Sources have one naming scheme, whatever brought the data in; the node is ``source:<uri>``
and the same URI names the OpenLineage dataset (:func:`openlineage_dataset`):

==============  =========================================  ===============================
source          URI                                        label (``source_label``)
==============  =========================================  ===============================
file or glob    ``file:///abs/path/x.csv`` (absolute,      ``data/x.csv`` (relative to the
                percent-encoded; a view's relative source  project folder when inside it,
                path resolves against the project folder)  else the absolute path)
in-memory data  ``memory:sha256:<content digest>`` (of     ``frame sha256:<12 hex>``
(pandas, Arrow, the Arrow form: the same frame ingested
Polars)         twice is one node)
push            ``push://<project>/<view>?principal=<p>``  ``push <project>/<view> by <p>``
                (the endpoint and the principal that
                pushed: the store's actor)
==============  =========================================  ===============================

>>> file_source_uri("data/x y.csv", base="/repo")
'file:///repo/data/x%20y.csv'
>>> source_label("file:///repo/data/x%20y.csv", root="/repo")
'data/x y.csv'
>>> push_source_uri("demo", "driver_stats", "svc@example.com")
'push://demo/driver_stats?principal=svc%40example.com'
>>> openlineage_dataset(push_source_uri("demo", "driver_stats", "svc@example.com"))
('push://demo', 'driver_stats')
>>> openlineage_dataset("file:///repo/data/x%20y.csv")
('file', '/repo/data/x y.csv')
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

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
DERIVED_FROM = "derived_from"  # parent commit -> derived commit computed from its rows
MOTIVATED = "motivated"  # experiment -> view version created to test its hypothesis
ROLLED_BACK = "rolled_back"  # view version -> commit a view rollback hid
SCORED = "scored"  # model -> the run that scored a batch with it


def view_node(name: str, version: int) -> str:
    return f"view:{name}@{version}"


def feature_set_node(name: str, version: int) -> str:
    return f"feature_set:{name}@{version}"


def source_node(uri: str) -> str:
    return f"source:{uri}"


def file_source_uri(path: str | os.PathLike[str],
                    base: str | os.PathLike[str] | None = None) -> str:
    """The absolute ``file://`` URI of a file, folder or glob; a relative path is relative
    to ``base`` (the project folder, for a view's declared source), else to the current
    folder (a path given on the command line or to ``ingest``)."""
    p = os.path.expanduser(os.fspath(path))
    if not os.path.isabs(p) and base is not None:
        p = os.path.join(os.fspath(base), p)
    return Path(os.path.abspath(p)).as_uri()  # abspath: also normalises "..", "./"


def frame_source_uri(digest: str) -> str:
    """In-memory data is named by its content digest (sha256 of its Arrow form)."""
    return f"memory:sha256:{digest}"


def push_source_uri(project: str, view: str, principal: str) -> str:
    """Pushed rows are named by their endpoint and by who pushed them."""
    return (f"push://{quote(project, safe='')}/{quote(view, safe='')}"
            f"?principal={quote(principal, safe='')}")


def source_label(uri: str, root: str | os.PathLike[str] | None = None) -> str:
    """A short name for a source URI, for graphs and tables (see the module doc)."""
    parts = urlsplit(uri)
    if parts.scheme == "file":
        path = unquote(parts.path)
        if root is not None:
            rel = os.path.relpath(path, os.path.normpath(os.path.abspath(os.fspath(root))))
            if rel != ".." and not rel.startswith(".." + os.sep):
                return rel
        return path
    if parts.scheme == "memory" and parts.path.startswith("sha256:"):
        return f"frame sha256:{parts.path[len('sha256:'):][:12]}"
    if parts.scheme == "push":
        who = parse_qs(parts.query).get("principal", ["?"])[0]
        return f"push {unquote(parts.netloc)}/{unquote(parts.path.lstrip('/'))} by {who}"
    return uri


def openlineage_dataset(uri: str) -> tuple[str, str]:
    """(namespace, name) of a source URI under the OpenLineage naming rules: a local file
    is namespace ``file`` and its absolute path; a push the endpoint ``push://<project>``
    and the view (the principal is in the featureledger facet's node id); in-memory data
    namespace ``memory`` and its digest."""
    parts = urlsplit(uri)
    if parts.scheme == "file":
        return "file", unquote(parts.path)
    if parts.scheme == "push":
        return f"push://{parts.netloc}", unquote(parts.path.lstrip("/"))
    if parts.scheme and not parts.netloc:  # memory:sha256:..., or another opaque URI
        return parts.scheme, uri[len(parts.scheme) + 1:]
    if parts.scheme:
        return f"{parts.scheme}://{parts.netloc}", parts.path.lstrip("/")
    return "featureledger-source", uri  # names written before this scheme existed


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
