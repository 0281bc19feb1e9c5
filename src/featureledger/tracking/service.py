"""TrackingService: experiments, runs, models and deployments (what the facade forwards to).

>>> import tempfile
>>> from featureledger.store import FeatureStore
>>> store = FeatureStore(tempfile.mkdtemp())
>>> with store.start_run("baseline", params={"lr": 0.1}) as run:
...     _ = run.log_metric("auc", 0.91)
>>> rec = store.get_run(run.run_id)
>>> rec.status, rec.params, rec.metrics
('finished', {'lr': '0.1'}, {'auc': 0.91})
>>> store.close()
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from featureledger.context import current_run_id
from featureledger.errors import StateError, TrackingError
from featureledger.events import (
    DeploymentCreated,
    DeploymentEnded,
    ModelLogged,
    RunCompleted,
    RunFailed,
    RunLogged,
    RunStarted,
)
from featureledger.model.references import parse_reference
from featureledger.model.timeutil import now_us
from featureledger.registry.models import DEPLOY_GATE
from featureledger.registry.tracking_records import (
    Deployment,
    Experiment,
    MetricPoint,
    ModelVersion,
    RunComparison,
    RunRecord,
)
from featureledger.registry.usage import read_usage
from featureledger.tracking.run import Run

if TYPE_CHECKING:
    from collections.abc import Callable

    from featureledger.context import StoreContext
    from featureledger.offline.dataset import TrainingDataset
    from featureledger.registry.tracking_records import PathDigest
    from featureledger.tracking.scoring import ScoredBatch

DEFAULT_EXPERIMENT = "default"


def git_info(root: Path) -> tuple[str | None, bool | None]:
    """The git commit checked out at ``root`` and whether tracked files changed; Nones when
    ``root`` is not in a git work tree (or git is not installed)."""
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                                 timeout=5, check=False)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout if out.returncode == 0 else None

    head = git("rev-parse", "HEAD")
    if not head:
        return None, None
    status = git("status", "--porcelain", "--untracked-files=no")
    return head.strip(), (None if status is None else bool(status.strip()))


NULL_FEATURES_TAG = "featureledger.allow_null_features"


def _null_features(rows: Mapping[str, Any]) -> list[tuple[str, dict[str, str]]]:
    """(dataset id, problem) for every feature null in every row of these datasets."""
    out = []
    for ds_id, row in rows.items():
        for problem in json.loads(row.manifest).get("null_features", []):
            out.append((ds_id, problem))
    return out


def _null_gate(rows: Mapping[str, Any], who: str, how: str, reason: str | None,
               error: type[Exception]) -> list[tuple[str, dict[str, str]]]:
    """The all-null training features of ``rows``; ``error`` unless ``reason`` says why
    that is intended (``how`` completes "Retrain, or <how> allow_null_features=...")."""
    null = _null_features(rows)
    if null and not (reason and reason.strip()):
        detail = "; ".join(f"{p['feature']} in {ds} ({p['cause']})" for ds, p in null[:5])
        raise error(f"{who} was trained on a dataset with features null in every row: "
                    f"{detail}. Retrain it, or {how} allow_null_features='REASON' to record "
                    "why that is intended")
    return null


def _dataset_id(ds: Any) -> str:
    if isinstance(ds, str):
        return ds
    for attr in ("dataset_id", "id"):
        value = getattr(ds, attr, None)
        if isinstance(value, str):
            return value
    raise TrackingError(f"{ds!r} is not a dataset; pass the object get_historical_features "
                        "returned or its 'ds_' id")


class TrackingService:
    """Experiments, runs, models and deployments over the registry."""

    def __init__(self, ctx: StoreContext) -> None:
        from featureledger.integrations import attach

        self.ctx = ctx
        self.db = ctx.registry.db
        self.runs = ctx.registry.runs
        self.models = ctx.registry.models
        self.usage = ctx.registry.usage
        self.loaded_models: dict[str, Any] = {}  # MLflow model URI -> model (score_batch)
        attach(ctx)

    # -- experiments -------------------------------------------------------------------
    def create_experiment(self, name: str, description: str = "",
                          tags: Mapping[str, str] | None = None, *,
                          exist_ok: bool = True) -> Experiment:
        """An experiment: a name and the hypothesis it tests (``description``)."""
        return self.runs.create_experiment(name, description, tags, exist_ok=exist_ok)

    def get_experiment(self, name_or_id: str) -> Experiment:
        return self.runs.get_experiment(name_or_id)

    def list_experiments(self) -> list[Experiment]:
        return self.runs.list_experiments()

    # -- runs --------------------------------------------------------------------------
    def start_run(self, experiment: str | None = None, *, params: Mapping[str, Any] | None = None,
                  tags: Mapping[str, Any] | None = None, name: str | None = None,
                  parent_run_id: str | None = None, mlflow_run_id: str | None = None,
                  source: str | None = None) -> Run:
        """Start a run in ``experiment`` (created if new); use it as a context manager.

        The run inherits the active run as its parent. Its code version is read from git
        when the repository is a work tree.
        """
        exp = self.runs.create_experiment(experiment or DEFAULT_EXPERIMENT)
        parent = parent_run_id if parent_run_id is not None else current_run_id()
        external = {"mlflow": mlflow_run_id} if mlflow_run_id else {}
        entry = source or (os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else None)
        run_id = self.runs.create_run(
            exp, name=name, parent_run_id=parent, git=git_info(self.ctx.config.root),
            source=entry, params=params or {}, tags=tags or {}, external_ids=external)
        self.ctx.events.emit(RunStarted(run_id=run_id, experiment=exp.name,
                                        experiment_id=exp.experiment_id, parent_run_id=parent,
                                        params=dict(params or {}),
                                        mlflow_run_id=mlflow_run_id,
                                        tags={k: str(v) for k, v in (tags or {}).items()}))
        return Run(self, run_id, exp.name)

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        """Record params (immutable) on a running run."""
        stored = self.runs.log_params(run_id, params)
        if stored:
            self.ctx.events.emit(RunLogged(run_id=run_id, params=stored))

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int | None = None,
                    timestamp: Any = None) -> list[MetricPoint]:
        """Log metric values (one point each) on a running run."""
        points = self.runs.log_metrics(run_id, metrics, step, timestamp)
        if points:
            self.ctx.events.emit(RunLogged(run_id=run_id, metrics=points))
        return points

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        """Set tags on a run (also after it ended)."""
        stored = self.runs.set_tags(run_id, tags)
        if stored:
            self.ctx.events.emit(RunLogged(run_id=run_id, tags=stored))

    def end_run(self, run_id: str, status: str = "finished", error: str | None = None) -> None:
        self.runs.end_run(run_id, status, error)
        self.ctx.events.emit(RunCompleted(run_id=run_id, status=status) if status == "finished"
                             else RunFailed(run_id=run_id, status=status, error=error))

    def get_run(self, run_id: str) -> RunRecord:
        return self.runs.get_run(run_id)

    def list_runs(self, *, experiment: str | None = None, feature_version: str | None = None,
                  metric: str | tuple[str, str, float] | None = None,
                  status: str | None = None, limit: int | None = None) -> list[RunRecord]:
        """Runs, newest first. ``metric`` is ``"auc>0.8"`` or ``("auc", ">", 0.8)``."""
        if isinstance(metric, str):
            metric = parse_metric_filter(metric)
        return self.runs.list_runs(experiment=experiment, feature_version=feature_version,
                                   metric=metric, status=status, limit=limit)

    def compare_runs(self, run_a: str, run_b: str) -> RunComparison:
        return self.runs.compare(run_a, run_b)

    def link_external(self, run_id: str, system: str, external_id: str) -> None:
        """Record the run's id in another system (``mlflow``)."""
        self.runs.set_external_id(run_id, system, external_id)

    # -- models ------------------------------------------------------------------------
    def log_model(self, run_id: str | None, name: str, artifact: Any, *,
                  training_dataset: Any = None, validation_dataset: Any = None,
                  test_dataset: Any = None, datasets: list[tuple[Any, str]] | None = None,
                  features: list[str] | None = None, feature_set: str | None = None,
                  description: str = "", tags: Mapping[str, str] | None = None,
                  allow_null_features: str | None = None,
                  registered_model_name: str | None = None) -> ModelVersion:
        """Record model version ``name@N`` and what it consumes.

        The features come, in order of preference, from ``features`` (references, pinned
        now), ``feature_set`` (``name`` or ``name@N``), or the training dataset's manifest.
        A training set with a feature that is null in every row is refused unless
        ``allow_null_features`` gives the reason (recorded in the model's tags).
        A local artifact (a file or a folder) is digested now, so that ``reconcile`` can
        tell when it goes missing or changes; a remote URI is recorded as given.

        ``registered_model_name`` also logs the model through MLflow (pyfunc; ``artifact``
        is then the model object or the folder of a model saved with MLflow) into the MLflow
        run linked to this run (one is started when there is none) and registers it in
        MLflow's model registry, with the feature spec (feature set, pinned features, entity
        keys, datasets and their content hashes) in ``featureledger.json`` beside it; the
        model version's artifact is then ``models:/<registered_model_name>/<N>``.
        """
        staged = [(training_dataset, "training"), (validation_dataset, "validation"),
                  (test_dataset, "test"), *(datasets or [])]
        ds = [(_dataset_id(d), stage) for d, stage in staged if d is not None]
        rows = self._datasets([d for d, _ in ds])
        tags = dict(tags or {})
        null = _null_gate({d: rows[d] for d, stage in ds if stage == "training"},
                          f"model {name!r}", "log the model with", allow_null_features,
                          TrackingError)
        if null:
            tags[NULL_FEATURES_TAG] = allow_null_features or ""
        fs_ref: str | None = None
        if features is not None:
            pinned = [str(self.ctx.registry.definitions.resolve(f)[0]) for f in features]
        elif feature_set is not None:
            fs_name, _, v = feature_set.partition("@")
            rec = self.ctx.registry.definitions.get("feature_set", fs_name,
                                                    int(v) if v else None)
            pinned, fs_ref = list(rec.definition.features), rec.ref
        else:
            training = [d for d, s in ds if s == "training"]
            if not training:
                raise TrackingError(
                    f"model {name!r} needs to know what it consumes: pass training_dataset= "
                    "(the dataset it was trained on), feature_set= or features=")
            row = rows[training[0]]
            pinned, fs_ref = json.loads(row.features), row.feature_set
        if not pinned:
            raise TrackingError(f"model {name!r} would consume no features; check the dataset "
                                "or the features= list")
        if registered_model_name is None:
            uri = _artifact_uri(artifact)
            model = self.models.create_version(
                name, run_id=run_id, artifact_uri=uri, feature_set=fs_ref,
                features=pinned, datasets=ds, description=description, tags=tags,
                artifact_digest=_artifact_digest(uri))
        else:
            model = self._log_registered(run_id, name, artifact, registered_model_name,
                                         pinned=pinned, fs_ref=fs_ref, ds=ds, rows=rows,
                                         description=description, tags=tags)
        self.ctx.events.emit(ModelLogged(model_id=model.model_id, ref=model.ref,
                                         model_name=name, version=model.version, run_id=run_id,
                                         features=model.features, feature_set=fs_ref,
                                         datasets=model.datasets,
                                         artifact_uri=model.artifact_uri))
        return model

    def _log_registered(self, run_id: str | None, name: str, artifact: Any,
                        registered_name: str, *, pinned: list[str], fs_ref: str | None,
                        ds: list[tuple[str, str]], rows: Mapping[str, Any],
                        description: str, tags: dict[str, str]) -> ModelVersion:
        """Register in MLflow first (its version number names the artifact), then record the
        model; a failure to record takes the MLflow version back."""
        from featureledger.integrations import mlflow as link
        from featureledger.integrations import mlflow_model
        from featureledger.model.ids import new_id
        from featureledger.model.references import parse_reference

        if run_id is None:
            raise TrackingError(f"model {name!r} can be registered in MLflow only from a run; "
                                "log it inside 'with store.start_run(...) as run:'")
        if not registered_name.strip():
            raise TrackingError("registered_model_name must be a name, e.g. 'fraud-model'")
        model_id = new_id("mdl")
        training = [rows[d] for d, s in ds if s == "training"]
        columns = (list(json.loads(training[0].manifest)["null_counts"]) if training
                   else [parse_reference(f).feature for f in pinned])
        keys: dict[str, str] = {}
        for f in pinned:
            ref = parse_reference(f)
            view = self.ctx.registry.definitions.get("feature_view", ref.view, ref.version)
            keys.update(view.definition.join_keys)
        spec = {"format": "featureledger.feature_spec/1", "project": self.ctx.config.project,
                "model_id": model_id, "model": name, "run_id": run_id,
                "feature_set": fs_ref, "features": pinned,
                "feature_versions": list(dict.fromkeys(f.split(":")[0] for f in pinned)),
                "feature_columns": columns, "entity_keys": keys, "description": description,
                "datasets": [{"dataset_id": d, "stage": s,
                              "content_hash": rows[d].content_hash,
                              "row_count": rows[d].row_count} for d, s in ds]}
        client = link._client(self.ctx)
        mlflow_id = link.ensure_linked(self.ctx, run_id)
        registered = mlflow_model.register_model(client, mlflow_id, registered_name, artifact,
                                                 spec, columns)
        tags = {**tags, "mlflow.registered_model": registered.uri,
                "mlflow.source": registered.source}
        try:
            return self.models.create_version(
                name, run_id=run_id, artifact_uri=registered.uri, feature_set=fs_ref,
                features=pinned, datasets=ds, description=description, tags=tags,
                model_id=model_id)
        except BaseException:
            mlflow_model.unregister(client, registered)
            raise

    def _datasets(self, ids: list[str]) -> dict[str, Any]:
        return self.ctx.registry.datasets.rows(ids)

    def get_model(self, model: str) -> ModelVersion:
        """A model version by ``mdl_`` id, ``name@N``, ``name`` (latest) or ``dep_`` id."""
        return self.models.get(model)

    def list_models(self, name: str | None = None) -> list[ModelVersion]:
        return self.models.list_versions(name)

    def batch_features(self, model: str, entity_df: Any, *, as_of: Any = None,
                       full_feature_names: bool = False, run_id: str | None = None,
                       timestamp_column: str | None = None) -> TrainingDataset:
        """The model's input for ``entity_df``, point in time, from the offline store."""
        mv = self.get_model(model)
        from featureledger.offline.retrieval import RetrievalService

        retrieval = self.ctx.part(RetrievalService)
        return retrieval.get_historical_features(
            entity_df, list(mv.features), as_of=as_of, full_feature_names=full_feature_names,
            run_id=run_id, timestamp_column=timestamp_column)

    def score_batch(self, model: str, entity_df: Any, *, loader: Callable[[str], Any] | None = None,
                    as_of: Any = None, run_id: str | None = None,
                    timestamp_column: str | None = None,
                    prediction_column: str = "prediction") -> ScoredBatch:
        """Score ``entity_df`` with a model: its features point in time, its predictions.

        The model is loaded from its artifact through MLflow's pyfunc flavour (a
        ``models:/`` or ``runs:/`` URI, or a local MLflow model folder), or by
        ``loader(artifact_uri)`` (any object with ``predict(frame)``). It is given the
        feature columns in the model's order. The scoring is a run (the active one, the
        given one, or a new run in experiment ``scoring``) that read the features as a
        dataset, and the lineage graph has the edge model -> run (``scored``).
        """
        from featureledger.tracking.scoring import score

        return score(self, model, entity_df, loader=loader, as_of=as_of, run_id=run_id,
                     timestamp_column=timestamp_column, prediction_column=prediction_column)

    # -- deployments ---------------------------------------------------------------------
    def deploy(self, model: str, environment: str = "production", *,
               exceptions: Mapping[str, str] | None = None, description: str = "",
               allow_null_features: str | None = None) -> Deployment:
        """Deploy a model version: record its feature set and a frozen upstream lineage.

        A model reading a deprecated or retired feature version is refused unless
        ``exceptions`` maps that version (``view@N``) to the reason it may. A model whose
        training set has a feature null in every row is refused unless
        ``allow_null_features`` gives the reason (recorded as an exception per feature).
        """
        from featureledger.lineage.graph import walk

        if not environment or not environment.strip():
            raise TrackingError("deploy needs an environment name, e.g. 'production'")
        exceptions = dict(exceptions or {})
        target = self.get_model(model)
        null = _null_gate(self._datasets(target.datasets.get("training", [])),
                          f"model {target.ref}", "deploy with", allow_null_features, StateError)
        if null:
            for _ds, problem in null:
                exceptions.setdefault(problem["feature"],
                                      f"null in every training row: {allow_null_features}")
        with self.db.write(lock_key=f"deploy:{environment}") as conn:
            self.db.lock(conn, DEPLOY_GATE)  # no deprecation lands between check and insert
            mv = self.models.get(model, conn) if not model.startswith("dep_") else \
                self.models.get(self.models.get_deployment(model, conn).model_id, conn)
            blocked = [(fv, st, why) for fv, st, why in self.models.inactive_feature_versions(conn, mv.model_id)
                       if fv not in exceptions]
            blocked += self._deprecated_features(conn, mv.features, exceptions)
            if blocked:
                detail = "; ".join(f"{fv} is {st}" + (f" ({why})" if why else "")
                                   for fv, st, why in blocked)
                raise StateError(
                    f"model {mv.ref} reads feature versions that are no longer active: {detail}."
                    " Retrain on active versions, or record an exception: deploy(..., "
                    f"exceptions={{'{blocked[0][0].split(':')[0]}': 'REASON'}})")
            upstream = walk(conn, [mv.model_id], "upstream")
            snapshot = {"model": mv.ref, "model_id": mv.model_id, "features": mv.features,
                        "feature_versions": mv.feature_versions,
                        "edges": [e.to_dict() for e in upstream]}
            dep = self.models.insert_deployment(conn, mv, environment, snapshot=snapshot,
                                                exceptions=exceptions, description=description)
        self.ctx.events.emit(DeploymentCreated(deployment_id=dep.deployment_id,
                                               model_id=mv.model_id, model_ref=mv.ref,
                                               environment=environment, features=mv.features))
        return dep

    def _deprecated_features(self, conn: Any, features: Sequence[str],
                             exceptions: Mapping[str, str]) -> list[tuple[str, str, str]]:
        """(view@N:feature, deprecated | retired, reason) of the pinned ``features`` a
        feature-level deprecation covers, without an exception for their version (a
        version's own deprecation is its status, checked with the versions)."""
        refs = [r for r in map(parse_reference, features) if r.version is not None]
        deps = [d for d in self.ctx.registry.lifecycle.deprecations(
            views={r.view for r in refs}, conn=conn) if d.feature is not None]
        now = now_us()
        out = []
        for r in refs:
            if r.version is None or f"{r.view}@{r.version}" in exceptions:
                continue
            for d in deps:
                if d.covers(r.view, r.version, r.feature):
                    out.append((f"{r.view}@{r.version}:{r.feature}",
                                "retired" if d.retired(now) else "deprecated", d.reason))
                    break
        return out

    def undeploy(self, deployment_id: str, *, reason: str | None = None) -> Deployment:
        dep = self.models.end_deployment(deployment_id, reason)
        self.ctx.events.emit(DeploymentEnded(deployment_id=deployment_id,
                                             model_ref=dep.model_ref,
                                             environment=dep.environment, reason=reason))
        return dep

    def get_deployment(self, deployment_id: str) -> Deployment:
        return self.models.get_deployment(deployment_id)

    def deployments(self, *, environment: str | None = None, model: str | None = None,
                    active_only: bool = False) -> list[Deployment]:
        """Deployment history, newest first."""
        return self.models.list_deployments(environment=environment, model=model,
                                            active_only=active_only)

    def add_deployment_exception(self, deployment_id: str, feature_version: str,
                                 reason: str) -> None:
        """Allow a deployment to keep reading a deprecated or retired ``view@N``."""
        self.models.add_exception(deployment_id, feature_version, reason)

    def deployment_usage(self, deployment_id: str | None = None) -> list[dict[str, Any]]:
        """Usage counters (pending counts are flushed first)."""
        self.usage.flush()
        return read_usage(self.db, deployment_id)


def _artifact_uri(artifact: Any) -> str:
    if isinstance(artifact, Path) or (isinstance(artifact, str) and "://" not in artifact
                                      and Path(artifact).exists()):
        return Path(artifact).absolute().as_uri()
    if isinstance(artifact, str) and artifact.strip():
        return artifact
    raise TrackingError(f"model artifact {artifact!r} must be a URI (s3://..., runs:/...) or a "
                        "path to the saved model")


def _artifact_digest(uri: str) -> PathDigest | None:
    """The digest of a local artifact; None when it is remote (or not there to digest)."""
    from featureledger.offline.storage import local_path, path_digest

    path = local_path(uri)
    if path is None or not (path.is_file() or path.is_dir()):
        return None
    return path_digest(path)


def _row_count(entity_rows: Any) -> int:
    try:
        return len(entity_rows)
    except TypeError:
        return 1


def parse_metric_filter(text: str) -> tuple[str, str, float]:
    """``"auc>=0.8"`` -> ``("auc", ">=", 0.8)``.

    >>> parse_metric_filter("auc >= 0.8")
    ('auc', '>=', 0.8)
    """
    import re

    m = re.match(r"^\s*([A-Za-z0-9_.\-/]+)\s*(>=|<=|!=|==|=|>|<)\s*(-?[0-9.eE+-]+)\s*$", text)
    if not m:
        raise TrackingError(f"metric filter {text!r} is malformed; write it like 'auc>0.8'")
    try:
        return m.group(1), m.group(2), float(m.group(3))
    except ValueError:
        raise TrackingError(f"metric filter {text!r} has no valid number") from None
