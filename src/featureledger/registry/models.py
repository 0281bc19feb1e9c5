"""Model versions and deployments in the registry.

A model version is recorded with its features (pinned references, one row each), its
datasets with their stage, the sha256 and size of a local artifact (a file, or a folder:
see :func:`featureledger.offline.storage.path_digest`), and its lineage edges (``run -produced-> model``, ``dataset
-trained_on-> model``, ``feature_set -consumes-> model``) in one write transaction. A
deployment records the model's active feature set and a frozen snapshot of the model's
upstream lineage, also in one transaction with its ``model -deployed_as-> deployment`` edge.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from featureledger.errors import (
    ConcurrencyError,
    StateError,
    TrackingError,
    UnknownDeploymentError,
    UnknownModelError,
)
from featureledger.model.hashing import canonical_json
from featureledger.model.ids import new_id
from featureledger.model.references import parse_reference
from featureledger.model.timeutil import now_us
from featureledger.registry import schema
from featureledger.registry.engine import RegistryDB
from featureledger.registry.lineage_edges import (
    CONSUMES,
    DEPLOYED_AS,
    PRODUCED,
    TRAINED_ON,
    record_edges,
    view_node,
)
from featureledger.registry.tracking_records import DATASET_STAGES, Deployment, ModelVersion

if TYPE_CHECKING:
    from featureledger.registry.tracking_records import PathDigest


def _model(row: Any, datasets: dict[str, list[str]]) -> ModelVersion:
    return ModelVersion(
        model_id=row.model_id, name=row.name, version=row.version, run_id=row.run_id,
        artifact_uri=row.artifact_uri, feature_set=row.feature_set,
        features=json.loads(row.features), description=row.description,
        tags=json.loads(row.tags), created_at=row.created_at, created_by=row.created_by,
        datasets=datasets, artifact_sha256=row.artifact_sha256,
        artifact_size=row.artifact_size)


def _deployment(row: Any, exceptions: dict[str, str]) -> Deployment:
    return Deployment(
        deployment_id=row.deployment_id, model_id=row.model_id, model_ref=row.model_ref,
        environment=row.environment, status=row.status, feature_set=row.feature_set,
        features=json.loads(row.features), lineage_snapshot=json.loads(row.lineage_snapshot),
        deployed_at=row.deployed_at, deployed_by=row.deployed_by, ended_at=row.ended_at,
        ended_by=row.ended_by, end_reason=row.end_reason, description=row.description,
        exceptions=exceptions)


# Taken (after their own lock) by every deploy and every deprecation, in their write
# transactions: a deploy checks that no version it reads is deprecated, a deprecation that
# no active deployment reads what it covers; without one lock for both, each could pass
# its check before the other committed (on PostgreSQL), leaving a deployment on a version
# retired under it with no exception and no forced reason.
DEPLOY_GATE = "deploy-gate"


class ModelRepository:
    """SQL for model versions, deployments and deployment exceptions."""

    def __init__(self, db: RegistryDB) -> None:
        self.db = db

    # -- model versions -------------------------------------------------------------
    def create_version(self, name: str, *, run_id: str | None, artifact_uri: str,
                       feature_set: str | None, features: list[str],
                       datasets: list[tuple[str, str]], description: str,
                       tags: Mapping[str, str], artifact_digest: PathDigest | None = None,
                       retries: int = 10, model_id: str | None = None) -> ModelVersion:
        """Record the next version of model ``name`` (``name@N``), retrying lost races.

        ``artifact_digest`` is the artifact's digest when it is a local file or folder;
        reconcile checks the artifact against it later. ``model_id`` is the id to give the
        version (one drawn before, e.g. to name it elsewhere first); a new one by default.
        """
        for stage in {s for _, s in datasets}:
            if stage not in DATASET_STAGES:
                raise TrackingError(f"dataset stage {stage!r} is not valid; use one of "
                                    f"{', '.join(DATASET_STAGES)}")
        last: Exception | None = None
        for _ in range(retries):
            try:
                with self.db.write(lock_key=f"model:{name}") as conn:
                    return self._insert(conn, name, run_id, artifact_uri, feature_set,
                                        features, datasets, description, tags,
                                        artifact_digest, model_id)
            except sa.exc.IntegrityError as exc:  # another writer took the version number
                last = exc
        raise ConcurrencyError(f"logging model {name!r} lost {retries} races in a row ({last});"
                               " retry")

    def _insert(self, conn: Connection, name: str, run_id: str | None, artifact_uri: str,
                feature_set: str | None, features: list[str], datasets: list[tuple[str, str]],
                description: str, tags: Mapping[str, str],
                artifact_digest: PathDigest | None, model_id: str | None = None) -> ModelVersion:
        now = now_us()
        m, mv = schema.models, schema.model_versions
        project = self.db.project
        if conn.execute(sa.select(m.c.name).where(self.db.scope(m), m.c.name == name)
                        ).first() is None:
            conn.execute(m.insert().values(project=project, name=name, description=description,
                                           created_at=now, created_by=self.db.actor))
        last = conn.execute(sa.select(sa.func.max(mv.c.version))
                            .where(self.db.scope(mv), mv.c.name == name)).scalar()
        version = int(last or 0) + 1
        model_id = model_id or new_id("mdl")
        conn.execute(mv.insert().values(
            project=project, model_id=model_id, name=name, version=version, run_id=run_id,
            artifact_uri=artifact_uri, feature_set=feature_set,
            features=canonical_json(features), description=description,
            tags=canonical_json(dict(tags)), created_at=now, created_by=self.db.actor,
            artifact_sha256=artifact_digest.sha256 if artifact_digest else None,
            artifact_size=artifact_digest.size if artifact_digest else None))
        refs = [parse_reference(f) for f in features]
        if refs:
            conn.execute(schema.model_features.insert(), [
                {"project": project, "model_id": model_id, "position": i, "view_name": r.view,
                 "view_version": r.version, "feature": r.feature} for i, r in enumerate(refs)])
        unique_ds = list(dict.fromkeys(datasets))
        if unique_ds:
            conn.execute(schema.model_datasets.insert(), [
                {"project": project, "model_id": model_id, "dataset_id": d, "stage": s}
                for d, s in unique_ds])
        edges: list[Any] = [(d, model_id, TRAINED_ON, {"stage": s}) for d, s in unique_ds]
        if run_id:
            edges.append((run_id, model_id, PRODUCED))
        if feature_set:
            edges.append((f"feature_set:{feature_set}", model_id, CONSUMES))
        else:  # no named set: the model consumes the view versions directly
            edges += [(view_node(r.view, r.version or 0), model_id, CONSUMES)
                      for r in dict.fromkeys(refs)]
        record_edges(conn, edges)
        self.db.audit(conn, "log_model", "model", model_id,
                      {"ref": f"{name}@{version}", "run_id": run_id, "features": features,
                       "datasets": [list(x) for x in unique_ds]})
        grouped: dict[str, list[str]] = {}
        for d, s in unique_ds:
            grouped.setdefault(s, []).append(d)
        return ModelVersion(model_id, name, version, run_id, artifact_uri, feature_set,
                            features, description, dict(tags), now, self.db.actor, grouped,
                            artifact_sha256=artifact_digest.sha256 if artifact_digest else None,
                            artifact_size=artifact_digest.size if artifact_digest else None)

    def get(self, model: str, conn: Connection | None = None) -> ModelVersion:
        """A model version by ``mdl_`` id, ``name@N``, ``name`` (its latest version), or a
        ``dep_`` id (the deployed model version)."""
        mv = schema.model_versions
        if model.startswith("dep_"):
            model = self.get_deployment(model, conn).model_id
        if model.startswith("mdl_"):
            q = sa.select(mv).where(self.db.scope(mv), mv.c.model_id == model)
        else:
            name, _, version = model.partition("@")
            q = sa.select(mv).where(self.db.scope(mv), mv.c.name == name)
            if version:
                if not version.isdigit():
                    raise UnknownModelError(f"model reference {model!r} is malformed; use "
                                            "'name', 'name@N' or a 'mdl_' id")
                q = q.where(mv.c.version == int(version))
            q = q.order_by(mv.c.version.desc()).limit(1)
        found = self._load(q, conn)
        if not found:
            raise UnknownModelError(f"unknown model {model!r}; list models with "
                                    "'featureledger models'")
        return found[0]

    def list_versions(self, name: str | None = None) -> list[ModelVersion]:
        mv = schema.model_versions
        q = sa.select(mv).where(self.db.scope(mv)).order_by(mv.c.name, mv.c.version)
        if name is not None:
            q = q.where(mv.c.name == name)
        return self._load(q)

    def _load(self, query: Any, conn: Connection | None = None) -> list[ModelVersion]:
        def run(c: Connection) -> list[ModelVersion]:
            rows = c.execute(query).all()
            ids = [r.model_id for r in rows]
            md = schema.model_datasets
            ds: dict[str, dict[str, list[str]]] = {i: {} for i in ids}
            for i in range(0, len(ids), 500):
                for mid, did, stage in c.execute(
                        sa.select(md.c.model_id, md.c.dataset_id, md.c.stage)
                        .where(self.db.scope(md), md.c.model_id.in_(ids[i:i + 500]))
                        .order_by(md.c.stage, md.c.dataset_id)):
                    ds[mid].setdefault(stage, []).append(did)
            return [_model(r, ds[r.model_id]) for r in rows]

        if conn is not None:
            return run(conn)
        with self.db.read() as c:
            return run(c)

    # -- deployments --------------------------------------------------------------------
    def insert_deployment(self, conn: Connection, model: ModelVersion, environment: str, *,
                          snapshot: dict[str, Any], exceptions: Mapping[str, str],
                          description: str) -> Deployment:
        """Record a deployment in the caller's transaction; supersede the model's previous
        active deployment in the same environment."""
        t = schema.deployments
        now = now_us()
        previous = conn.execute(
            sa.select(t.c.deployment_id).join(
                schema.model_versions, schema.model_versions.c.model_id == t.c.model_id)
            .where(self.db.scope(t, schema.model_versions), t.c.environment == environment,
                   t.c.status == "active",
                   schema.model_versions.c.name == model.name)).scalars().all()
        for dep in previous:
            conn.execute(t.update().where(self.db.scope(t), t.c.deployment_id == dep).values(
                status="superseded", ended_at=now, ended_by=self.db.actor,
                end_reason=f"replaced by {model.ref}"))
        dep_id = new_id("dep")
        conn.execute(t.insert().values(
            project=self.db.project,
            deployment_id=dep_id, model_id=model.model_id, model_ref=model.ref,
            environment=environment, status="active", feature_set=model.feature_set,
            features=canonical_json(model.features), lineage_snapshot=canonical_json(snapshot),
            deployed_at=now, deployed_by=self.db.actor, ended_at=None, ended_by=None,
            end_reason=None, description=description))
        for fv, reason in exceptions.items():
            self._exception(conn, dep_id, fv, reason, now)
        record_edges(conn, [(model.model_id, dep_id, DEPLOYED_AS, {"environment": environment})])
        self.db.audit(conn, "deploy", "deployment", dep_id,
                      {"model": model.ref, "environment": environment,
                       "superseded": previous, "exceptions": dict(exceptions)})
        return Deployment(dep_id, model.model_id, model.ref, environment, "active",
                          model.feature_set, list(model.features), snapshot, now,
                          self.db.actor, None, None, None, description, dict(exceptions))

    def _exception(self, conn: Connection, dep_id: str, feature_version: str, reason: str,
                   now: int) -> None:
        if not reason or not str(reason).strip():
            raise TrackingError(f"an exception for {feature_version} needs a reason, e.g. "
                                "'migration to v4 scheduled for next sprint'")
        t = schema.deployment_exceptions
        conn.execute(t.delete().where(self.db.scope(t), t.c.deployment_id == dep_id,
                                      t.c.feature_version == feature_version))
        conn.execute(t.insert().values(project=self.db.project, deployment_id=dep_id,
                                       feature_version=feature_version,
                                       reason=str(reason), created_at=now,
                                       created_by=self.db.actor))

    def add_exception(self, deployment_id: str, feature_version: str, reason: str) -> None:
        with self.db.write() as conn:
            self.get_deployment(deployment_id, conn)
            self._exception(conn, deployment_id, feature_version, reason, now_us())
            self.db.audit(conn, "deployment_exception", "deployment", deployment_id,
                          {"feature_version": feature_version, "reason": reason})

    def end_deployment(self, deployment_id: str, reason: str | None) -> Deployment:
        t = schema.deployments
        with self.db.write() as conn:
            dep = self.get_deployment(deployment_id, conn)
            if not dep.active:
                raise StateError(f"deployment {deployment_id} is already {dep.status}; "
                                 "nothing to undeploy")
            conn.execute(
                t.update().where(self.db.scope(t), t.c.deployment_id == deployment_id).values(
                    status="undeployed", ended_at=now_us(), ended_by=self.db.actor,
                    end_reason=reason))
            self.db.audit(conn, "undeploy", "deployment", deployment_id, {"reason": reason})
        return self.get_deployment(deployment_id)

    def get_deployment(self, deployment_id: str, conn: Connection | None = None) -> Deployment:
        t = schema.deployments
        found = self.deployments(
            sa.select(t).where(self.db.scope(t), t.c.deployment_id == deployment_id), conn)
        if not found:
            raise UnknownDeploymentError(f"unknown deployment {deployment_id!r}; list them with "
                                         "'featureledger deploy --list'")
        return found[0]

    def list_deployments(self, *, environment: str | None = None, model: str | None = None,
                         active_only: bool = False, conn: Connection | None = None
                         ) -> list[Deployment]:
        """Deployment history, newest first (read in ``conn`` when given)."""
        t = schema.deployments
        q = (sa.select(t).where(self.db.scope(t))
             .order_by(t.c.deployed_at.desc(), t.c.deployment_id.desc()))
        if environment is not None:
            q = q.where(t.c.environment == environment)
        if active_only:
            q = q.where(t.c.status == "active")
        if model is not None:
            mv = self.get(model) if ("@" in model or model.startswith("mdl_")) else None
            if mv is not None:
                q = q.where(t.c.model_id == mv.model_id)
            else:
                q = q.where(t.c.model_ref.like(f"{model}@%"))
        return self.deployments(q, conn)

    def deployments(self, query: Any, conn: Connection | None = None) -> list[Deployment]:
        def run(c: Connection) -> list[Deployment]:
            rows = c.execute(query).all()
            ids = [r.deployment_id for r in rows]
            ex: dict[str, dict[str, str]] = {i: {} for i in ids}
            e = schema.deployment_exceptions
            for i in range(0, len(ids), 500):
                for did, fv, reason in c.execute(
                        sa.select(e.c.deployment_id, e.c.feature_version, e.c.reason)
                        .where(self.db.scope(e), e.c.deployment_id.in_(ids[i:i + 500]))):
                    ex[did][fv] = reason
            return [_deployment(r, ex[r.deployment_id]) for r in rows]

        if conn is not None:
            return run(conn)
        with self.db.read() as c:
            return run(c)

    def inactive_feature_versions(self, conn: Connection, model_id: str
                                  ) -> list[tuple[str, str, str | None]]:
        """(view@N, status, reason) of every deprecated or retired version ``model_id``
        reads."""
        mf, d = schema.model_features, schema.definitions
        rows = conn.execute(
            sa.select(mf.c.view_name, mf.c.view_version, d.c.status, d.c.status_reason)
            .join(d, sa.and_(d.c.kind == "feature_view", d.c.name == mf.c.view_name,
                             d.c.version == mf.c.view_version))
            .where(self.db.scope(mf, d), mf.c.model_id == model_id,
                   d.c.status.in_(("deprecated", "retired")))
            .distinct().order_by(mf.c.view_name, mf.c.view_version)).all()
        return [(f"{v}@{n}", st, why) for v, n, st, why in rows]
