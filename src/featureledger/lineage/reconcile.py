"""Reconciliation: does everything that runs, models and deployments point at still exist?

Checks, each one set-based SQL (the file checks read the disk):

* ``missing_node``: an id in the lineage graph (``cmt_``, ``ds_``, ``run_``, ``mdl_``,
  ``dep_``, ``exp_``) with no registry row;
* ``missing_feature_version``: a model reading a view version that is not registered;
* ``missing_dataset``: a model trained on a dataset that is not recorded;
* ``missing_commit``: a dataset (of a run or a model) listing a commit that is not recorded;
* ``missing_model`` / ``missing_run``: a deployment's model, or a model's run, is gone;
* ``commit_files_missing`` / ``commit_digest_mismatch``: a commit that a run, model or
  deployment depends on has lost files on disk, or its files changed;
* ``inactive_feature_version``: an active deployment reads a deprecated or retired view
  version without a recorded exception.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from featureledger.registry import schema
from featureledger.registry.scope import scope


@dataclass(frozen=True)
class Problem:
    code: str
    message: str
    ids: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "ids": self.ids}


@dataclass
class ReconcileReport:
    problems: list[Problem] = field(default_factory=list)
    checked: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def codes(self) -> list[str]:
        return [p.code for p in self.problems]

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "checked": self.checked,
                "problems": [p.to_dict() for p in self.problems]}


_NODE_TABLES = {
    "cmt_": (schema.commits, "commit_id", "commit"),
    "ds_": (schema.datasets, "dataset_id", "dataset"),
    "run_": (schema.runs, "run_id", "run"),
    "mdl_": (schema.model_versions, "model_id", "model version"),
    "dep_": (schema.deployments, "deployment_id", "deployment"),
    "exp_": (schema.experiments, "experiment_id", "experiment"),
}


def _missing_nodes(conn: Connection) -> list[Problem]:
    e = schema.lineage_edges
    out = []
    for prefix, (table, col, label) in _NODE_TABLES.items():
        nodes = sa.union(
            sa.select(e.c.src.label("node")).where(scope(conn, e), e.c.src.like(f"{prefix}%")),
            sa.select(e.c.dst.label("node")).where(scope(conn, e), e.c.dst.like(f"{prefix}%"))
        ).subquery()
        q = (sa.select(nodes.c.node).where(~sa.exists().where(
            scope(conn, table), table.c[col] == nodes.c.node)).order_by(nodes.c.node))
        for (node,) in conn.execute(q):
            out.append(Problem("missing_node",
                               f"the lineage graph references {label} {node}, which is not in "
                               "the registry; restore it from a backup or remove its edges",
                               {label.replace(" ", "_"): node}))
    return out


def _model_checks(conn: Connection) -> list[Problem]:
    out = []
    mf, mv, d = schema.model_features, schema.model_versions, schema.definitions
    q = (sa.select(mv.c.model_id, mv.c.name, mv.c.version, mf.c.view_name, mf.c.view_version)
         .join(mf, mf.c.model_id == mv.c.model_id)
         .where(scope(conn, mv, mf),
                ~sa.exists().where(scope(conn, d), d.c.kind == "feature_view",
                                   d.c.name == mf.c.view_name,
                                   d.c.version == mf.c.view_version))
         .distinct().order_by(mv.c.model_id, mf.c.view_name))
    for mid, name, ver, view, vv in conn.execute(q):
        out.append(Problem("missing_feature_version",
                           f"model {name}@{ver} ({mid}) reads feature view {view}@{vv}, which "
                           "is not registered; re-apply its definition",
                           {"model": mid, "feature_version": f"{view}@{vv}"}))
    md, ds = schema.model_datasets, schema.datasets
    q = (sa.select(mv.c.model_id, mv.c.name, mv.c.version, md.c.dataset_id, md.c.stage)
         .join(md, md.c.model_id == mv.c.model_id)
         .where(scope(conn, mv, md),
                ~sa.exists().where(scope(conn, ds), ds.c.dataset_id == md.c.dataset_id))
         .order_by(mv.c.model_id, md.c.dataset_id))
    for mid, name, ver, did, stage in conn.execute(q):
        out.append(Problem("missing_dataset",
                           f"model {name}@{ver} ({mid}) was {stage}-ed on dataset {did}, which "
                           "is not recorded; its lineage cannot be traced",
                           {"model": mid, "dataset": did}))
    r = schema.runs
    q2 = (sa.select(mv.c.model_id, mv.c.name, mv.c.version, mv.c.run_id)
          .where(scope(conn, mv), mv.c.run_id.is_not(None),
                 ~sa.exists().where(scope(conn, r), r.c.run_id == mv.c.run_id)))
    for mid, name, ver, rid in conn.execute(q2):
        out.append(Problem("missing_run", f"model {name}@{ver} ({mid}) names run {rid}, which "
                           "is not recorded", {"model": mid, "run": rid}))
    dep = schema.deployments
    q3 = (sa.select(dep.c.deployment_id, dep.c.model_id, dep.c.model_ref)
          .where(scope(conn, dep),
                 ~sa.exists().where(scope(conn, mv), mv.c.model_id == dep.c.model_id)))
    for did, mid, ref in conn.execute(q3):
        out.append(Problem("missing_model", f"deployment {did} serves model {ref} ({mid}), "
                           "which is not recorded", {"deployment": did, "model": mid}))
    return out


def _referenced_datasets(conn: Connection) -> Any:
    """Datasets a run built or read, or a model was trained/validated/tested on."""
    ds, md = schema.datasets, schema.model_datasets
    return sa.union(sa.select(ds.c.dataset_id).where(scope(conn, ds), ds.c.run_id.is_not(None)),
                    sa.select(md.c.dataset_id).where(scope(conn, md))).subquery()


def _commit_checks(conn: Connection, offline: Any) -> tuple[list[Problem], int]:
    out = []
    dc, c = schema.dataset_commits, schema.commits
    refs = _referenced_datasets(conn)
    q = (sa.select(dc.c.dataset_id, dc.c.commit_id)
         .where(scope(conn, dc), dc.c.dataset_id.in_(sa.select(refs.c.dataset_id)),
                ~sa.exists().where(scope(conn, c), c.c.commit_id == dc.c.commit_id))
         .order_by(dc.c.commit_id))
    for did, cid in conn.execute(q):
        out.append(Problem("missing_commit", f"dataset {did} read commit {cid}, which is not "
                           "recorded; the dataset cannot be reproduced",
                           {"dataset": did, "commit": cid}))
    # commits on disk: those read by referenced datasets, and those runs wrote
    q = (sa.select(c.c.commit_id, c.c.view_name, c.c.view_version, c.c.files,
                   c.c.content_digest)
         .where(scope(conn, c), sa.or_(c.c.commit_id.in_(sa.select(dc.c.commit_id).where(
             scope(conn, dc), dc.c.dataset_id.in_(sa.select(refs.c.dataset_id)))),
             c.c.run_id.is_not(None)))
         .order_by(c.c.commit_id))
    rows: list[Any] = list(conn.execute(q).all())
    for cid, view, version, files, digest in rows:
        paths = json.loads(files)
        missing = offline.missing_files(paths)
        if missing:
            out.append(Problem("commit_files_missing",
                               f"commit {cid} of {view}@{version} has lost {len(missing)} "
                               f"file(s) on disk ({', '.join(missing[:3])}); restore them from a "
                               "backup or roll the commit back",
                               {"commit": cid, "feature_version": f"{view}@{version}",
                                "file": missing[0]}))
        elif not offline.verify_digest(paths, digest):
            out.append(Problem("commit_digest_mismatch",
                               f"commit {cid} of {view}@{version}: files on disk no longer "
                               "match the recorded digest; they were changed after the commit",
                               {"commit": cid, "feature_version": f"{view}@{version}"}))
    return out, len(rows)


def _deployment_checks(conn: Connection) -> list[Problem]:
    dep, mf, d = schema.deployments, schema.model_features, schema.definitions
    ex = schema.deployment_exceptions
    fv = mf.c.view_name + "@" + sa.cast(mf.c.view_version, sa.String)  # || on both
    q = (sa.select(dep.c.deployment_id, dep.c.model_ref, dep.c.environment, mf.c.view_name,
                   mf.c.view_version, d.c.status, d.c.status_reason)
         .join(mf, mf.c.model_id == dep.c.model_id)
         .join(d, sa.and_(d.c.kind == "feature_view", d.c.name == mf.c.view_name,
                          d.c.version == mf.c.view_version))
         .where(scope(conn, dep, mf, d), dep.c.status == "active",
                d.c.status.in_(("deprecated", "retired")),
                ~sa.exists().where(scope(conn, ex), ex.c.deployment_id == dep.c.deployment_id,
                                   ex.c.feature_version == fv))
         .distinct().order_by(dep.c.deployment_id, mf.c.view_name))
    return [Problem("inactive_feature_version",
                    f"active deployment {did} ({ref} in {env}) reads {view}@{ver}, which is "
                    f"{status}" + (f" ({why})" if why else "") + "; redeploy a model trained on "
                    "an active version, or record an exception with "
                    "'featureledger deploy --exception'",
                    {"deployment": did, "feature_version": f"{view}@{ver}"})
            for did, ref, env, view, ver, status, why in conn.execute(q)]


def reconcile(ctx: Any) -> ReconcileReport:
    """Run every check; see the module docstring."""
    report = ReconcileReport()
    with ctx.registry.db.read() as conn:
        report.problems += _missing_nodes(conn)
        report.problems += _model_checks(conn)
        commit_problems, n_commits = _commit_checks(conn, ctx.offline_store)
        report.problems += commit_problems
        report.problems += _deployment_checks(conn)
        for name, table in (("runs", schema.runs), ("models", schema.model_versions),
                            ("deployments", schema.deployments)):
            report.checked[name] = int(conn.execute(
                sa.select(sa.func.count()).select_from(table).where(scope(conn, table))
            ).scalar() or 0)
        report.checked["commits_on_disk"] = n_commits
    return report
