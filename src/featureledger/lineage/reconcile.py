"""Reconciliation: does everything the registry records still exist, in the registry and
on disk, as it was written?

Registry checks, each one set-based SQL:

* ``missing_node``: an id in the lineage graph (``cmt_``, ``ds_``, ``run_``, ``mdl_``,
  ``dep_``, ``exp_``) with no registry row;
* ``missing_feature_version``: a model reading a view version that is not registered;
* ``missing_dataset``: a model trained on a dataset that is not recorded;
* ``missing_commit``: a dataset listing a commit that is not recorded;
* ``missing_model`` / ``missing_run``: a deployment's model, or a model's run, is gone;
* ``inactive_feature_version``: an active deployment reads a deprecated or retired view
  version without a recorded exception;
* ``deprecation_unapproved`` / ``retirement_unapproved``: a deprecation (or a retirement
  in effect) that no principal other than its requester approved;
  ``deprecation_unrecorded``: a deprecated or retired version that no recorded deprecation
  covers (see ``registry/lifecycle.py``).

Expired commits (retention deleted their data) have no files to check.

Tamper checks, over every definition version and every commit row:

* ``definition_tampered``: a version's stored spec no longer matches its definition hash
  (loading it is refused too); ``definition_docs_tampered``: its descriptions, owner or
  tags no longer match their hash;
* ``commit_row_tampered``: a commit row no longer matches its seal (its files, row count,
  times, status... were edited outside featureledger; reads refuse it);
* ``commit_status_unaudited``: a commit's status is not the one its audit trail ends with
  (e.g. rolled back in the audit, ``committed`` in the row);
* ``commit_seal_missing``: a row without a seal that is newer than the project's first
  sealed commit, so it was not written before seals existed (its seal was removed, or an
  older featureledger wrote it).

Rows written before seals existed (registry revision 0005) are not problems: each is
listed once in the report's ``notices`` (``commit_unsealed``), since their fields cannot
be checked.

File checks, over every commit (whatever its status), every dataset and every model whose
artifact is a local file or folder. By default they ``stat`` each file (and, where no size
was recorded, read the Parquet header and footer); ``deep`` also digests every byte:

* ``commit_files_missing``, ``commit_file_size_mismatch`` (not the size recorded at commit
  time), ``commit_file_unreadable`` (no size recorded, and not a whole Parquet file),
  ``commit_digest_mismatch`` (deep: the data files no longer match the commit's content
  digest, or a side file such as ``rejected.parquet`` its sha256);
* ``dataset_entities_missing``, ``dataset_entities_unreadable``,
  ``dataset_entities_digest_mismatch`` (deep): a dataset's stored entity rows, which
  ``reproduce`` needs;
* ``model_artifact_missing``, ``model_artifact_size_mismatch``,
  ``model_artifact_digest_mismatch`` (deep), against the sha256 and size taken at
  ``log_model``.

Each problem names the object and the file in its ``ids`` and says what to do in its
message. Older rows without a recorded size or digest are checked for existence (and, for
Parquet, completeness) only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from featureledger.errors import DefinitionTamperedError
from featureledger.offline.storage import local_path, path_digest
from featureledger.registry import schema
from featureledger.registry.commits import (
    COMMIT_STATUSES,
    EXPIRED_STATUS,
    SEAL_BROKEN,
    SEAL_NONE,
    seal_state,
)
from featureledger.registry.definitions import _LABEL, _row_to_record, docs_match
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
    deep: bool = False  # whether file contents were digested
    # what is worth knowing but not wrong (commit rows from before seals existed)
    notices: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def codes(self) -> list[str]:
        return [p.code for p in self.problems]

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "deep": self.deep, "checked": self.checked,
                "problems": [p.to_dict() for p in self.problems],
                "notices": [p.to_dict() for p in self.notices]}


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


def _missing_commits(conn: Connection) -> list[Problem]:
    dc, c = schema.dataset_commits, schema.commits
    q = (sa.select(dc.c.dataset_id, dc.c.commit_id)
         .where(scope(conn, dc),
                ~sa.exists().where(scope(conn, c), c.c.commit_id == dc.c.commit_id))
         .order_by(dc.c.commit_id, dc.c.dataset_id))
    return [Problem("missing_commit", f"dataset {did} read commit {cid}, which is not "
                    "recorded; the dataset cannot be reproduced",
                    {"dataset": did, "commit": cid})
            for did, cid in conn.execute(q)]


# -- tampering ----------------------------------------------------------------------------


def _definition_checks(conn: Connection) -> tuple[list[Problem], int]:
    d = schema.definitions
    out = []
    rows = conn.execute(sa.select(d).where(scope(conn, d))
                        .order_by(d.c.kind, d.c.name, d.c.version)).all()
    for row in rows:
        ref = f"{row.name}@{row.version}"
        ids = {row.kind: ref}
        try:
            _row_to_record(row)
        except DefinitionTamperedError as exc:
            out.append(Problem("definition_tampered", str(exc), ids))
            continue
        if not docs_match(row):
            out.append(Problem(
                "definition_docs_tampered",
                f"{_LABEL.get(row.kind, row.kind)} {ref}: its descriptions, owner or tags no "
                "longer match the hash recorded when they were last applied, so they were "
                "edited in the registry; re-apply the definition to write them again",
                ids))
    return out, len(rows)


def _commit_row_checks(conn: Connection) -> tuple[list[Problem], list[Problem], int]:
    """Seals and audited statuses of every commit row: (problems, notices, rows checked)."""
    c, a = schema.commits, schema.audit_log
    rows = conn.execute(sa.select(c).where(scope(conn, c), c.c.status != "pending")
                        .order_by(c.c.commit_time, c.c.commit_id)).all()
    latest = (sa.select(a.c.object_id, sa.func.max(a.c.id).label("last"))
              .where(scope(conn, a), a.c.object_kind == "commit",
                     a.c.action.like("commit_status:%"))
              .group_by(a.c.object_id).subquery())
    audited = {oid: action.removeprefix("commit_status:") for oid, action in conn.execute(
        sa.select(latest.c.object_id, a.c.action)
        .join(a, a.c.id == latest.c.last).where(scope(conn, a)))}
    states = [seal_state(r._mapping) for r in rows]
    sealed_times = [r.commit_time for r, st in zip(rows, states, strict=True) if st != SEAL_NONE]
    first_sealed = min(sealed_times) if sealed_times else None
    problems, notices = [], []
    for r, state in zip(rows, states, strict=True):
        ref = f"{r.view_name}@{r.view_version}"
        ids = {"commit": r.commit_id, "feature_version": ref}
        label = f"commit {r.commit_id} of {ref}"
        if state == SEAL_BROKEN:
            problems.append(Problem(
                "commit_row_tampered",
                f"{label}: its registry row no longer matches the seal taken when it was "
                "written or last changed status, so it was edited outside featureledger; "
                "reads refuse it. Restore the row from a registry backup, or keep it out of "
                f"reads: featureledger quarantine {r.commit_id} --reason 'row edited'", ids))
        elif state == SEAL_NONE and first_sealed is not None and r.commit_time > first_sealed:
            problems.append(Problem(
                "commit_seal_missing",
                f"{label} has no seal although it is newer than this project's first sealed "
                "commit: its seal was removed by hand, or a featureledger older than "
                "registry revision 0005 wrote it. Compare the row with a registry backup "
                "and upgrade every process that writes to this registry", ids))
        elif state == SEAL_NONE:
            notices.append(Problem(
                "commit_unsealed",
                f"{label} was written before commit rows were sealed (registry revision "
                "0005); its fields cannot be checked, only its files", ids))
        expected = audited.get(r.commit_id, "committed")
        if expected in (*COMMIT_STATUSES, EXPIRED_STATUS) and r.status != expected:
            fix = (f"Set it back with featureledger {_STATUS_VERB[expected]} {r.commit_id} "
                   "--reason 'status edited' (or restore the row from a backup)"
                   if expected in _STATUS_VERB else
                   "Its data was deleted by retention; restore the row from a backup")
            problems.append(Problem(
                "commit_status_unaudited",
                f"{label} is {r.status!r} in its row, but its audit trail ends with "
                f"{expected!r}: the status was changed outside featureledger. {fix}", ids))
    return problems, notices, len(rows)


_STATUS_VERB = {"committed": "restore", "quarantined": "quarantine",
                "rolled_back": "rollback"}


# -- files on disk ------------------------------------------------------------------------
# The registry rows are read in one transaction first; the files are checked after it, so
# a long --deep run holds no registry transaction open.


@dataclass(frozen=True)
class _CommitFiles:
    commit_id: str
    view_ref: str
    status: str
    files: list[str]  # data files, in digest order
    side_files: list[str]  # rejected rows etc.
    content_digest: str
    manifest: dict[str, dict[str, Any]] | None  # None: written before sizes were recorded


def _commits(conn: Connection) -> list[_CommitFiles]:
    c = schema.commits
    rows = conn.execute(
        sa.select(c.c.commit_id, c.c.view_name, c.c.view_version, c.c.status, c.c.files,
                  c.c.content_digest, c.c.file_manifest, c.c.rejected_count)
        # a pending commit (a push not landed yet) has no files to check
        .where(scope(conn, c), c.c.status != "pending").order_by(c.c.commit_id)).all()
    # commits from before the manifest know their rejected-rows file only from their
    # validation report; read those few reports, not every one
    old_rejects = [r.commit_id for r in rows if r.file_manifest is None and r.rejected_count]
    side_of_old: dict[str, str] = {}
    for i in range(0, len(old_rejects), 500):
        for cid, validation in conn.execute(
                sa.select(c.c.commit_id, c.c.validation)
                .where(scope(conn, c), c.c.commit_id.in_(old_rejects[i:i + 500]))):
            path = json.loads(validation).get("rejected_path")
            if path:
                side_of_old[cid] = path
    # a commit held by an active compacted segment is read from the segment: its own data
    # files may be gone (gc removes them a grace period after the compaction), the
    # segment's files are checked instead
    sg = schema.segments
    held: set[str] = set()
    out = []
    for seg in conn.execute(sa.select(sg).where(scope(conn, sg), sg.c.status == "active")
                            .order_by(sg.c.segment_id)):
        held.update(json.loads(seg.commit_ids))
        out.append(_CommitFiles(seg.segment_id, f"{seg.view_name}@{seg.view_version}",
                                "committed", json.loads(seg.files), [], seg.content_digest,
                                json.loads(seg.file_manifest)))
    for r in rows:
        files = json.loads(r.files)
        manifest = json.loads(r.file_manifest) if r.file_manifest else None
        if manifest is not None:
            data = set(files)
            side = sorted(p for p in manifest if p not in data)
        else:
            side = [side_of_old[r.commit_id]] if r.commit_id in side_of_old else []
        if r.commit_id in held:
            files = []
        if r.status == EXPIRED_STATUS:  # retention deleted its files on purpose
            files, side = [], []
        out.append(_CommitFiles(r.commit_id, f"{r.view_name}@{r.view_version}", r.status,
                                files, side, r.content_digest, manifest))
    return out


def _commit_advice(c: _CommitFiles, root: Any) -> str:
    restore = f"restore it from a backup into the offline store at {root}"
    if c.commit_id.startswith("seg_"):
        return (f"{restore}, or retire the compacted segment so that its commits are read "
                "from their own files (while gc has not removed them): featureledger "
                f"compact {c.view_ref.partition('@')[0]} --retire {c.commit_id}")
    if c.status == "committed":
        return (f"{restore}, or quarantine the commit so that retrieval and serving skip "
                f"it: featureledger quarantine {c.commit_id} --reason 'file lost'")
    return (f"the commit is {c.status}, so it is not served, but datasets that read it "
            f"cannot be reproduced until you {restore}")


def _kind(c: _CommitFiles) -> str:
    return "segment" if c.commit_id.startswith("seg_") else "commit"


_COMMIT_CODES = {"missing": "commit_files_missing", "unreadable": "commit_file_unreadable",
                 "size_mismatch": "commit_file_size_mismatch"}


def _commit_file_checks(commits: list[_CommitFiles], offline: Any, deep: bool
                        ) -> tuple[list[Problem], int]:
    out: list[Problem] = []
    root = offline.location
    n_files = 0
    for c in commits:
        bad: set[str] = set()
        for rel in [*c.files, *c.side_files]:
            n_files += 1
            expected = (c.manifest or {}).get(rel, {}).get("size")
            found = offline.file_problem(rel, expected)
            if found is None:
                continue
            kind, wrong = found
            bad.add(rel)
            what = "file" if rel in c.files else "side file"
            out.append(Problem(_COMMIT_CODES[kind],
                               f"{_kind(c)} {c.commit_id} of {c.view_ref}: its {what} {rel} "
                               f"{wrong}; {_commit_advice(c, root)}",
                               {"commit": c.commit_id, "feature_version": c.view_ref,
                                "file": rel}))
        if not deep:
            continue
        data_ok = not bad.intersection(c.files)
        if data_ok and c.files and offline.file_digest(c.files) != c.content_digest:
            which = (f"its file {c.files[0]}" if len(c.files) == 1
                     else f"one of its files ({', '.join(c.files)})")
            out.append(Problem("commit_digest_mismatch",
                               f"{_kind(c)} {c.commit_id} of {c.view_ref}: {which} no longer "
                               "matches the content digest recorded at commit time, so it "
                               f"was changed after the commit; {_commit_advice(c, root)}",
                               {"commit": c.commit_id, "feature_version": c.view_ref,
                                "file": ", ".join(c.files)}))
        for rel in c.side_files:
            want = (c.manifest or {}).get(rel, {}).get("sha256")
            if rel in bad or want is None:
                continue
            if offline.file_digest([rel]) != want:
                out.append(Problem("commit_digest_mismatch",
                                   f"commit {c.commit_id} of {c.view_ref}: its side file {rel} "
                                   "no longer matches the sha256 recorded at commit time; "
                                   f"{_commit_advice(c, root)}",
                                   {"commit": c.commit_id, "feature_version": c.view_ref,
                                    "file": rel}))
    return out, n_files


@dataclass(frozen=True)
class _DatasetFiles:
    dataset_id: str
    entity_path: str | None
    entity_digest: str
    schema_ipc: str | None  # the entity rows' exact Arrow schema (read under deep only)


def _datasets(conn: Connection, deep: bool) -> list[_DatasetFiles]:
    d = schema.datasets
    cols = [d.c.dataset_id, d.c.entity_path, d.c.entity_digest]
    # the manifest is only needed for a path the row lacks, or for the deep digest
    rows = conn.execute(sa.select(*cols, d.c.manifest if deep else sa.null().label("manifest"))
                        .where(scope(conn, d)).order_by(d.c.dataset_id)).all()
    out = []
    for r in rows:
        path, ipc = r.entity_path, None
        if path is None or deep:
            raw = r.manifest if deep else conn.execute(
                sa.select(d.c.manifest).where(scope(conn, d),
                                              d.c.dataset_id == r.dataset_id)).scalar()
            entity = json.loads(raw or "{}").get("entity", {})
            path = path or entity.get("path")
            ipc = entity.get("arrow_schema_ipc")
        out.append(_DatasetFiles(r.dataset_id, path, r.entity_digest, ipc))
    return out


def _entity_digest(offline: Any, rel: str, schema_ipc: str | None) -> str:
    """The content digest of stored entity rows, as retrieval's reproduce computes it."""
    import base64

    import pyarrow as pa

    from featureledger.offline.dataset import content_hash

    table = offline.read_dataset_entities(rel)
    if schema_ipc:
        table = table.cast(pa.ipc.read_schema(pa.py_buffer(base64.b64decode(schema_ipc))))
    return content_hash(table)


def _dataset_checks(datasets: list[_DatasetFiles], offline: Any, deep: bool) -> list[Problem]:
    out = []
    root = offline.location
    for ds in datasets:
        if ds.entity_path is None:
            continue  # nothing was stored to check
        ids = {"dataset": ds.dataset_id, "file": ds.entity_path}
        advice = (f"restore the file from a backup into the offline store at {root}; until then "
                  f"reproduce('{ds.dataset_id}') fails")
        found = offline.file_problem(ds.entity_path, None)
        if found is not None:
            kind, wrong = found
            out.append(Problem(f"dataset_entities_{kind}",
                               f"dataset {ds.dataset_id}: its stored entity rows "
                               f"{ds.entity_path} {wrong}; {advice}", ids))
            continue
        if not deep:
            continue
        try:
            got = _entity_digest(offline, ds.entity_path, ds.schema_ipc)
        except Exception as exc:  # a damaged page inside a whole-looking file
            out.append(Problem("dataset_entities_unreadable",
                               f"dataset {ds.dataset_id}: its stored entity rows "
                               f"{ds.entity_path} cannot be read ({exc}); {advice}", ids))
            continue
        if got != ds.entity_digest:
            out.append(Problem("dataset_entities_digest_mismatch",
                               f"dataset {ds.dataset_id}: its stored entity rows "
                               f"{ds.entity_path} no longer match the digest recorded when "
                               f"the dataset was built (the file was changed); {advice}", ids))
    return out


def _tree_size(path: Any) -> int:
    import os

    if path.is_file():
        return int(path.stat().st_size)
    total = 0
    for dirpath, _dirs, names in os.walk(path):
        for name in names:
            full = os.path.join(dirpath, name)
            if os.path.isfile(full):
                total += os.path.getsize(full)
    return total


def _artifacts(conn: Connection) -> list[Any]:
    mv = schema.model_versions
    return list(conn.execute(
        sa.select(mv.c.model_id, mv.c.name, mv.c.version, mv.c.artifact_uri,
                  mv.c.artifact_sha256, mv.c.artifact_size)
        .where(scope(conn, mv)).order_by(mv.c.name, mv.c.version)).all())


def _artifact_problems(rows: list[Any], deep: bool) -> tuple[list[Problem], int]:
    out = []
    checked = 0
    for mid, name, version, uri, sha, size in rows:
        path = local_path(uri)
        if path is None:
            continue  # a remote artifact (s3://, runs:/...): its store keeps it
        checked += 1
        label = f"model {name}@{version} ({mid})"
        ids = {"model": mid, "file": str(path)}
        advice = ("restore it from a backup" + (f" (its sha256 was {sha})" if sha else "")
                  + ", or log the retrained model as a new version")
        if not (path.is_file() or path.is_dir()):
            out.append(Problem("model_artifact_missing",
                               f"{label}: its artifact {path} is missing; {advice}", ids))
            continue
        if size is not None and (now := _tree_size(path)) != size:
            out.append(Problem("model_artifact_size_mismatch",
                               f"{label}: its artifact {path} is {now} bytes but was {size} "
                               f"when the model was logged, so it was changed; {advice}", ids))
            continue
        if deep and sha is not None and path_digest(path).sha256 != sha:
            out.append(Problem("model_artifact_digest_mismatch",
                               f"{label}: its artifact {path} no longer matches the sha256 "
                               f"recorded when the model was logged, so it was changed; "
                               f"{advice}", ids))
    return out, checked

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


def reconcile(ctx: Any, *, deep: bool = False) -> ReconcileReport:
    """Run every check; see the module docstring. ``deep`` also digests every file."""
    report = ReconcileReport(deep=deep)
    with ctx.registry.db.read() as conn:
        report.problems += _missing_nodes(conn)
        report.problems += _model_checks(conn)
        report.problems += _missing_commits(conn)
        commits = _commits(conn)
        datasets = _datasets(conn, deep)
        artifacts = _artifacts(conn)
        report.problems += _deployment_checks(conn)
        report.problems += [Problem(code, message, ids) for code, message, ids in
                            ctx.registry.lifecycle.approval_problems(conn)]
        definition_problems, n_definitions = _definition_checks(conn)
        report.problems += definition_problems
        row_problems, report.notices, _ = _commit_row_checks(conn)
        report.problems += row_problems
        report.checked["definitions"] = n_definitions
        for name, table in (("runs", schema.runs), ("models", schema.model_versions),
                            ("deployments", schema.deployments)):
            report.checked[name] = int(conn.execute(
                sa.select(sa.func.count()).select_from(table).where(scope(conn, table))
            ).scalar() or 0)
    offline = ctx.offline_store
    file_problems, n_files = _commit_file_checks(commits, offline, deep)
    report.problems += file_problems
    report.problems += _dataset_checks(datasets, offline, deep)
    artifact_problems, n_artifacts = _artifact_problems(artifacts, deep)
    report.problems += artifact_problems
    report.checked.update({"commits": len(commits), "commit_files": n_files,
                           "datasets": len(datasets), "model_artifacts": n_artifacts})
    return report
