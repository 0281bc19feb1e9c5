"""LineageService: lineage graphs, paths, impact analysis and reconciliation.

Node names accepted everywhere: global ids (``cmt_...``, ``ds_...``, ``run_...``,
``mdl_...``, ``dep_...``, ``exp_...``), kind-prefixed nodes (``view:driver_stats@3``,
``feature_set:fraud@2``, ``source:<uri>``), and the short forms ``driver_stats@3`` (a
view version, else a model version ``name@N``, else a feature set) and ``fraud`` (the
latest version of a model).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from featureledger.errors import NotFoundError, TrackingError
from featureledger.lineage.graph import Direction, LineageGraph, lineage, path, reachable
from featureledger.model.timeutil import from_us
from featureledger.registry import schema
from featureledger.registry.lineage_edges import source_label
from featureledger.registry.scope import scope

if TYPE_CHECKING:
    from featureledger.context import StoreContext
    from featureledger.lineage.reconcile import ReconcileReport

_ID_PREFIXES = ("cmt_", "ds_", "run_", "mdl_", "dep_", "exp_")
_KIND_PREFIXES = ("view:", "feature_set:", "source:")


@dataclass
class ImpactReport:
    """What reads a node: deployments (active first), models, runs and datasets downstream."""

    node: str
    seeds: list[str]
    deployments: list[dict[str, Any]] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)
    datasets: list[str] = field(default_factory=list)

    @property
    def active_deployments(self) -> list[dict[str, Any]]:
        return [d for d in self.deployments if d["status"] == "active"]

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "active_deployments": self.active_deployments}


def _iso(us: int | None) -> str | None:
    return None if us is None else from_us(us).isoformat()


def kind_of(node: str) -> str:
    """The kind of a node id.

    >>> kind_of("view:driver_stats@3"), kind_of("cmt_0193"), kind_of("source:s3://b/k")
    ('view', 'commit', 'source')
    """
    for prefix, kind in (("cmt_", "commit"), ("ds_", "dataset"), ("run_", "run"),
                         ("mdl_", "model"), ("dep_", "deployment"), ("exp_", "experiment"),
                         ("view:", "view"), ("feature_set:", "feature_set"),
                         ("source:", "source")):
        if node.startswith(prefix):
            return kind
    return "other"


class LineageService:
    """Lineage queries over the registry's edge table."""

    def __init__(self, ctx: StoreContext) -> None:
        from featureledger.integrations import attach

        self.ctx = ctx
        self.db = ctx.registry.db
        attach(ctx)

    # -- naming ---------------------------------------------------------------------------
    def resolve_node(self, node: str, conn: Connection | None = None) -> str:
        """The graph node id meant by ``node`` (see the module docstring)."""
        node = node.strip()
        if node.startswith(_ID_PREFIXES) or node.startswith(_KIND_PREFIXES):
            return node
        with (self.db.read() if conn is None else _Same(conn)) as c:
            name, _, version = node.partition("@")
            d, mv = schema.definitions, schema.model_versions
            if version.isdigit():
                kinds = {k for (k,) in c.execute(sa.select(d.c.kind).where(
                    scope(c, d), d.c.name == name, d.c.version == int(version)))}
                if "feature_view" in kinds:
                    return f"view:{node}"
                mid = c.execute(sa.select(mv.c.model_id).where(
                    scope(c, mv), mv.c.name == name, mv.c.version == int(version))).scalar()
                if mid:
                    return str(mid)
                if "feature_set" in kinds:
                    return f"feature_set:{node}"
            elif not version:
                mid = c.execute(sa.select(mv.c.model_id).where(scope(c, mv), mv.c.name == name)
                                .order_by(mv.c.version.desc()).limit(1)).scalar()
                if mid:
                    return str(mid)
        raise NotFoundError(
            f"{node!r} names no lineage node; use an id (cmt_..., ds_..., run_..., mdl_..., "
            "dep_...), 'view@N' for a feature view version, or 'model@N'")

    # -- queries ----------------------------------------------------------------------------
    def lineage(self, node: str, *, direction: Direction = "both", depth: int | None = None,
                describe: bool = True) -> LineageGraph:
        """The graph upstream and/or downstream of ``node``, with metadata per node.

        ``node`` may also be a feature (``view:feature`` or ``view@N:feature``): the graph
        is its view version's, and the root's ``columns`` (a derived view's column
        lineage) are narrowed to that feature.
        """
        if direction not in ("upstream", "downstream", "both"):
            raise TrackingError(f"direction {direction!r} is not valid; use upstream, "
                                "downstream or both")
        node, feature = self._feature_node(node)
        with self.db.read() as conn:
            root = self.resolve_node(node, conn)
            graph = lineage(conn, root, direction, max_depth=depth)
            if describe:
                graph.nodes = describe_nodes(conn, graph.node_ids(), root=self.ctx.config.root)
        if describe:
            self._describe_columns(graph, feature)
        return graph

    def _feature_node(self, node: str) -> tuple[str, str | None]:
        """``(view node, feature)`` for a feature reference, else ``(node, None)``."""
        text = node.strip()
        if text.startswith(_ID_PREFIXES) or text.startswith(_KIND_PREFIXES) or ":" not in text:
            return node, None
        from featureledger.model.references import parse_reference

        ref = parse_reference(text)
        version = ref.version or self.ctx.registry.definitions.view(ref.view).version
        rec = self.ctx.registry.definitions.view(ref.view, version)
        rec.definition.require_feature(ref.feature)
        return f"view:{ref.view}@{version}", ref.feature

    def column_lineage(self, view: str) -> dict[str, Any]:
        """The column lineage of derived view version ``view`` (``name`` or ``name@N``)
        against its parents' definitions as they resolve now (see
        :mod:`featureledger.lineage.columns`); a derived commit records the one it was
        computed with."""
        from featureledger.lineage.columns import column_lineage

        name, _, version = view.partition("@")
        defs = self.ctx.registry.definitions
        rec = defs.view(name, int(version) if version.isdigit() else None)
        t = rec.definition.transformation
        if t is None:
            raise TrackingError(f"feature view {rec.ref} is not derived (it has no "
                                "transformation), so it has no column lineage")
        parents = {p: defs.view(p, v).definition for p, v in t.parent_refs()}
        return column_lineage(rec.definition, parents)

    def _describe_columns(self, graph: LineageGraph, feature: str | None) -> None:
        """Column lineage on derived view nodes (from the definitions) and derived commit
        nodes (what the commit recorded)."""
        from featureledger.registry.derivations import column_record

        ids = [n for n, meta in graph.nodes.items() if meta.get("kind") == "commit"]
        t = schema.commits
        sources: dict[str, Any] = {}
        with self.db.read() as conn:
            for i in range(0, len(ids), 500):
                sources.update(conn.execute(sa.select(t.c.commit_id, t.c.source).where(
                    scope(conn, t), t.c.commit_id.in_(ids[i:i + 500]))).all())
        for n, meta in graph.nodes.items():
            cols: dict[str, Any] | None = None
            if meta.get("kind") == "view" and meta.get("derived"):
                try:
                    cols = self.column_lineage(n[len("view:"):])
                except NotFoundError:  # a parent that no longer resolves
                    cols = None
            elif n in sources:
                cols = column_record(json.loads(sources[n]))
            if cols is None:
                continue
            if feature is not None and n in graph.roots:
                meta["feature"] = feature
                cols = {**cols, "columns": {k: v for k, v in cols["columns"].items()
                                            if k == feature}}
            meta["columns"] = cols

    def upstream(self, node: str, **options: Any) -> LineageGraph:
        return self.lineage(node, direction="upstream", **options)

    def downstream(self, node: str, **options: Any) -> LineageGraph:
        return self.lineage(node, direction="downstream", **options)

    def path(self, a: str, b: str) -> LineageGraph:
        """Every edge on a path between two nodes (empty when they are not connected)."""
        with self.db.read() as conn:
            graph = path(conn, self.resolve_node(a, conn), self.resolve_node(b, conn))
            graph.nodes = describe_nodes(conn, graph.node_ids(), root=self.ctx.config.root)
        self._describe_columns(graph, None)
        return graph

    def impact(self, node: str, *, commit_status: str | None = None) -> ImpactReport:
        """Which deployments, models, runs and datasets read ``node``.

        With ``commit_status`` (e.g. ``"quarantined"``) and a view version, the question is
        about that view version's commits in that status: "which deployed models read any
        commit of driver_stats@3 that is now quarantined".
        """
        with self.db.read() as conn:
            root = self.resolve_node(node, conn)
            params: dict[str, Any] = {}
            seeds: list[str] | str = [root]
            if commit_status is not None:
                if not root.startswith("view:"):
                    raise TrackingError("commit_status= applies to a feature view version "
                                        f"('view@N'), not to {root!r}")
                name, _, version = root[len("view:"):].rpartition("@")
                params.update(v_name=name, v_version=int(version), v_status=commit_status,
                              project=self.db.project)
                seeds = ("SELECT CAST(commit_id AS VARCHAR(512)) AS node FROM commits WHERE "
                         "commits.project = :project AND view_name = :v_name AND "
                         "view_version = :v_version AND status = :v_status")
                seed_ids = [r[0] for r in conn.execute(sa.text(seeds), params)]
            else:
                seed_ids = [root]
            nodes = reachable(conn, seeds, "downstream", params=params)
            deployments = _deployments(conn, [n for n in nodes if n.startswith("dep_")])
        return ImpactReport(
            node=root, seeds=seed_ids, deployments=deployments,
            models=[n for n in nodes if n.startswith("mdl_")],
            runs=[n for n in nodes if n.startswith("run_")],
            datasets=[n for n in nodes if n.startswith("ds_")])

    def reconcile(self, *, deep: bool = False) -> ReconcileReport:
        """Check the registry's references and every commit file, dataset entity file and
        local model artifact (existence and size; ``deep`` also compares digests)."""
        from featureledger.lineage.reconcile import reconcile

        return reconcile(self.ctx, deep=deep)


class _Same:
    """A context manager yielding an already open connection."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def __enter__(self) -> Connection:
        return self.conn

    def __exit__(self, *exc: Any) -> None:
        return None


def _deployments(conn: Connection, ids: list[str]) -> list[dict[str, Any]]:
    if not ids:
        return []
    t = schema.deployments
    rows = conn.execute(sa.select(t.c.deployment_id, t.c.model_id, t.c.model_ref,
                                  t.c.environment, t.c.status, t.c.deployed_at)
                        .where(scope(conn, t), t.c.deployment_id.in_(ids))
                        .order_by((t.c.status != "active"), t.c.deployed_at.desc())).all()
    return [{"deployment_id": r.deployment_id, "model_id": r.model_id, "model": r.model_ref,
             "environment": r.environment, "status": r.status,
             "deployed_at": _iso(r.deployed_at)} for r in rows]


def describe_nodes(conn: Connection, node_ids: list[str], *, root: Any = None
                   ) -> dict[str, dict[str, Any]]:
    """Metadata of each node: kind, label and the fields worth showing, one query per kind.

    ``root`` is the project folder: files under it are labelled by their relative path.
    """
    out: dict[str, dict[str, Any]] = {n: {"id": n, "kind": kind_of(n), "label": n}
                                      for n in node_ids}
    by_kind: dict[str, list[str]] = {}
    for n in node_ids:
        by_kind.setdefault(kind_of(n), []).append(n)

    def rows(table: Any, key: Any, ids: list[str]) -> list[Any]:
        found: list[Any] = []
        for i in range(0, len(ids), 500):
            found += conn.execute(sa.select(table).where(
                scope(conn, table), key.in_(ids[i:i + 500]))).all()
        return found

    for r in rows(schema.commits, schema.commits.c.commit_id, by_kind.get("commit", [])):
        out[r.commit_id].update(
            label=f"commit {r.commit_id[-8:]} of {r.view_name}@{r.view_version}",
            view=f"{r.view_name}@{r.view_version}", status=r.status, rows=r.row_count,
            committed_at=_iso(r.commit_time), user=r.user, run_id=r.run_id,
            content_digest=r.content_digest, status_reason=r.status_reason)
    for r in rows(schema.datasets, schema.datasets.c.dataset_id, by_kind.get("dataset", [])):
        out[r.dataset_id].update(
            label=f"dataset {r.dataset_id[-8:]}", rows=r.row_count, run_id=r.run_id,
            feature_set=r.feature_set, features=json.loads(r.features),
            content_hash=r.content_hash, created_at=_iso(r.created_at))
    for r in rows(schema.runs, schema.runs.c.run_id, by_kind.get("run", [])):
        out[r.run_id].update(label=f"run {r.name}", status=r.status, user=r.user,
                             started_at=_iso(r.start_time), git_commit=r.git_commit)
    for r in rows(schema.model_versions, schema.model_versions.c.model_id,
                  by_kind.get("model", [])):
        out[r.model_id].update(label=f"model {r.name}@{r.version}", run_id=r.run_id,
                               artifact_uri=r.artifact_uri, feature_set=r.feature_set,
                               features=json.loads(r.features), created_at=_iso(r.created_at))
    for r in rows(schema.deployments, schema.deployments.c.deployment_id,
                  by_kind.get("deployment", [])):
        out[r.deployment_id].update(label=f"{r.model_ref} in {r.environment}",
                                    status=r.status, model_id=r.model_id,
                                    deployed_at=_iso(r.deployed_at), deployed_by=r.deployed_by)
    for r in rows(schema.experiments, schema.experiments.c.experiment_id,
                  by_kind.get("experiment", [])):
        out[r.experiment_id].update(label=f"experiment {r.name}", description=r.description)
    d = schema.definitions
    for kind, prefix, dkind in (("view", "view:", "feature_view"),
                                ("feature_set", "feature_set:", "feature_set")):
        for n in by_kind.get(kind, []):
            name, _, version = n[len(prefix):].rpartition("@")
            r = conn.execute(sa.select(d.c.status, d.c.created_at, d.c.created_by,
                                       d.c.definition_hash, d.c.stale, d.c.spec).where(
                scope(conn, d), d.c.kind == dkind, d.c.name == name,
                d.c.version == (int(version) if version.isdigit() else -1))).first()
            out[n]["label"] = n[len(prefix):]
            if r is not None:
                out[n].update(status=r.status, created_at=_iso(r.created_at),
                              created_by=r.created_by, definition_hash=r.definition_hash,
                              stale=bool(r.stale))
                if kind == "view":
                    out[n]["derived"] = bool(json.loads(r.spec).get("transformation"))
    for n in by_kind.get("source", []):
        uri = n[len("source:"):]
        out[n].update(label=source_label(uri, root), uri=uri)
    return out
