"""MLflow: link featureledger runs and MLflow runs both ways.

When an MLflow run is active as a featureledger run starts (or ``start_run(...,
mlflow_run_id=...)`` names one), featureledger stores the MLflow run id and, as the run
logs and builds training sets and models, writes onto the MLflow run:

* its params, metrics (every point, with its step and time) and tags, as they are logged
  (``log_batch``), those given to ``start_run`` included;
* each training dataset as an MLflow dataset input (``mlflow.log_input``), named by its
  ``ds_`` id, with its digest, schema, row count and a ``featureledger://`` source;
* tags ``featureledger.run_id``, ``featureledger.feature_set``,
  ``featureledger.feature_versions``, ``featureledger.features``, ``featureledger.datasets``,
  ``featureledger.dataset.<ds_id>.content_hash`` and ``featureledger.models``.

``log_model(..., registered_model_name=...)`` logs the model through MLflow and registers
it in MLflow's model registry (:mod:`.mlflow_model`); a run not linked yet then gets an
MLflow run of its own (in the MLflow experiment named after its experiment), which
featureledger ends when the run ends.

``resolve(store, ref)`` goes the other way: from an MLflow run id or model URI
(``runs:/<id>/model``, ``models:/<name>/<version>``) to the exact feature versions and
datasets behind it. Nothing here imports ``mlflow`` unless the process already did.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from featureledger.errors import MissingDependencyError, UnknownRunError
from featureledger.events import (
    DatasetCreated,
    ModelLogged,
    RunCompleted,
    RunFailed,
    RunLogged,
    RunStarted,
)
from featureledger.registry import schema
from featureledger.registry.runs import RunRepository

log = logging.getLogger("featureledger.integrations.mlflow")
SYSTEM = "mlflow"
EXPERIMENT_SYSTEM = "mlflow_experiment"
_TAG_LIMIT = 5000  # MLflow tag values are bounded; long lists are cut with a marker
_BATCH = 900  # MLflow takes at most 1000 metrics (100 params, 100 tags) per log_batch
CREATED_TAG = "featureledger.created"  # on an MLflow run featureledger started (and ends)


def _mlflow() -> Any:
    try:
        import mlflow
    except ImportError:
        raise MissingDependencyError("the MLflow integration", "mlflow-skinny", "mlflow") from None
    return mlflow


def _client(ctx: Any) -> Any:
    return _mlflow().MlflowClient(tracking_uri=ctx.config.mlflow.tracking_uri)


def _cut(text: str) -> str:
    return text if len(text) <= _TAG_LIMIT else text[:_TAG_LIMIT - 12] + "...(cut)"


def _source_class() -> type:
    """A ``DatasetSource`` for featureledger datasets (built lazily: mlflow is optional)."""
    from mlflow.data.dataset_source import DatasetSource

    class FeatureLedgerDatasetSource(DatasetSource):
        def __init__(self, uri: str) -> None:
            self.uri = uri

        @staticmethod
        def _get_source_type() -> str:
            return "featureledger"

        def load(self) -> Any:
            return self.uri  # the rows live in the feature store: store.reproduce(ds_id)

        @staticmethod
        def _can_resolve(raw_source: Any) -> bool:
            return isinstance(raw_source, str) and raw_source.startswith("featureledger://")

        @classmethod
        def _resolve(cls, raw_source: Any) -> Any:
            return cls(str(raw_source))

        def to_dict(self) -> dict[str, Any]:
            return {"uri": self.uri}

        @classmethod
        def from_dict(cls, source_dict: dict[Any, Any]) -> Any:
            return cls(source_dict["uri"])

    return FeatureLedgerDatasetSource


class MlflowLink:
    """Event listener that mirrors featureledger runs onto linked MLflow runs."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self.runs = RunRepository(ctx.registry.db)

    @classmethod
    def attach(cls, ctx: Any) -> MlflowLink:
        link = cls(ctx)
        ctx.events.subscribe(RunStarted, link.on_run_started)
        ctx.events.subscribe(DatasetCreated, link.on_dataset_created)
        ctx.events.subscribe(ModelLogged, link.on_model_logged)
        ctx.events.subscribe(RunLogged, link.on_run_logged)
        ctx.events.subscribe(RunCompleted, link.on_run_ended)
        ctx.events.subscribe(RunFailed, link.on_run_ended)
        return link

    # -- listeners --------------------------------------------------------------------
    def on_run_started(self, event: RunStarted) -> None:
        run_id = event.run_id
        mlflow_id = event.mlflow_run_id
        if not mlflow_id and "mlflow" in sys.modules:  # only a process that uses MLflow
            active = sys.modules["mlflow"].active_run()
            mlflow_id = active.info.run_id if active is not None else None
        if not mlflow_id:
            return
        if event.parent_run_id and linked_run(self.ctx, event.parent_run_id) == mlflow_id:
            return  # a nested run: its parent holds that MLflow run (params would clash)
        link_run(self.ctx, run_id, mlflow_id)

    def on_run_logged(self, event: RunLogged) -> None:
        mlflow_id = self._linked(event.run_id)
        if mlflow_id is not None:
            log_batch(_client(self.ctx), mlflow_id, params=event.params,
                      metrics=event.metrics, tags=event.tags)

    def on_run_ended(self, event: RunCompleted | RunFailed) -> None:
        mlflow_id = self._linked(event.run_id)
        if mlflow_id is None:
            return
        client = _client(self.ctx)
        if client.get_run(mlflow_id).data.tags.get(CREATED_TAG) == "true":
            client.set_terminated(mlflow_id, "FINISHED" if event.status == "finished" else
                                  "KILLED" if event.status == "killed" else "FAILED")

    def _linked(self, run_id: str | None) -> str | None:
        return linked_run(self.ctx, run_id)

    def on_dataset_created(self, event: DatasetCreated) -> None:
        ds_id = event.dataset_id
        t = schema.datasets
        db = self.ctx.registry.db
        with db.read() as conn:
            row = conn.execute(sa.select(t).where(db.scope(t), t.c.dataset_id == ds_id)).first()
        if row is None:
            return
        mlflow_id = self._linked(row.run_id)
        if mlflow_id is None:
            return
        self.log_dataset(mlflow_id, row, context="training")
        self.sync_tags(row.run_id, mlflow_id)

    def on_model_logged(self, event: ModelLogged) -> None:
        mlflow_id = self._linked(event.run_id)
        if mlflow_id is not None and event.run_id is not None:
            self.sync_tags(event.run_id, mlflow_id)

    # -- writing to MLflow ----------------------------------------------------------------
    def log_dataset(self, mlflow_id: str, row: Any, context: str) -> None:
        """Log a dataset as an input of the MLflow run (``mlflow.log_input`` when that run is
        the active one here, the client otherwise)."""
        mlflow = _mlflow()
        from mlflow.data.meta_dataset import MetaDataset

        source = _source_class()(
            f"featureledger://{self.ctx.config.project}/datasets/{row.dataset_id}")
        ds = MetaDataset(source, name=row.dataset_id,  # type: ignore[abstract]
                         digest=row.content_hash[:32])
        tags = {"featureledger.dataset_id": row.dataset_id,
                "featureledger.content_hash": row.content_hash,
                "featureledger.row_count": str(row.row_count),
                "featureledger.features": _cut(row.features)}
        active = mlflow.active_run()
        if active is not None and active.info.run_id == mlflow_id and \
                self.ctx.config.mlflow.tracking_uri in (None, mlflow.get_tracking_uri()):
            mlflow.log_input(ds, context=context, tags=tags)
            return
        from mlflow.entities import DatasetInput, InputTag

        entity = ds._to_mlflow_entity()
        client = _client(self.ctx)
        client.log_inputs(mlflow_id, datasets=[DatasetInput(
            entity, [InputTag("mlflow.data.context", context),
                     *(InputTag(k, v) for k, v in tags.items())])])

    def sync_tags(self, run_id: str, mlflow_id: str) -> None:
        """Set the summary tags from what the registry knows about the run now."""
        info = resolve_run(self.ctx, run_id)
        client = _client(self.ctx)
        tags = {
            "featureledger.run_id": run_id,
            "featureledger.feature_versions": _cut(",".join(info.feature_versions)),
            "featureledger.features": _cut(json.dumps(info.features)),
            "featureledger.datasets": _cut(",".join(d["dataset_id"] for d in info.datasets)),
        }
        if info.feature_sets:
            tags["featureledger.feature_set"] = ",".join(info.feature_sets)
        if info.models:
            tags["featureledger.models"] = _cut(",".join(m["ref"] for m in info.models))
        for d in info.datasets:
            tags[f"featureledger.dataset.{d['dataset_id']}.content_hash"] = d["content_hash"]
        for k, v in tags.items():
            client.set_tag(mlflow_id, k, v)


def linked_run(ctx: Any, run_id: str | None) -> str | None:
    """The MLflow run id linked to a featureledger run, if any."""
    if not run_id:
        return None
    x = schema.run_external_ids
    db = ctx.registry.db
    with db.read() as conn:
        found = conn.execute(sa.select(x.c.external_id).where(
            db.scope(x), x.c.run_id == run_id, x.c.system == SYSTEM)).scalar()
    return str(found) if found is not None else None


def log_batch(client: Any, mlflow_id: str, *, params: Any = None, metrics: Any = (),
              tags: Any = None) -> None:
    """Params, metric points and tags onto an MLflow run, in batches MLflow accepts."""
    from mlflow.entities import Metric, Param, RunTag

    ps = [Param(k, _cut(v)) for k, v in (params or {}).items()]
    ms = [Metric(p.key, p.value, p.timestamp // 1000, p.step) for p in metrics]
    ts = [RunTag(k, _cut(v)) for k, v in (tags or {}).items()]
    while ps or ms or ts:
        client.log_batch(mlflow_id, metrics=ms[:_BATCH], params=ps[:90], tags=ts[:90])
        ms, ps, ts = ms[_BATCH:], ps[90:], ts[90:]


def link_run(ctx: Any, run_id: str, mlflow_id: str) -> None:
    """Record the link both ways and copy what the run logged so far onto the MLflow run."""
    runs = RunRepository(ctx.registry.db)
    runs.set_external_id(run_id, SYSTEM, mlflow_id)
    rec = runs.get_run(run_id)
    client = _client(ctx)
    # the MLflow experiment too: OpenLineage names the MLflow run's job by it
    runs.set_external_id(run_id, EXPERIMENT_SYSTEM,
                         str(client.get_run(mlflow_id).info.experiment_id))
    log_batch(client, mlflow_id, params=rec.params,
              metrics=runs.metric_history(run_id, None),
              tags={**rec.tags, "featureledger.run_id": run_id,
                    "featureledger.experiment": rec.experiment,
                    "featureledger.project": ctx.config.project})


def ensure_linked(ctx: Any, run_id: str) -> str:
    """The MLflow run linked to ``run_id``; one started (in the MLflow experiment named
    after the run's experiment) and linked when there is none. featureledger ends a run it
    started when its own run ends."""
    found = linked_run(ctx, run_id)
    if found is not None:
        return found
    rec = RunRepository(ctx.registry.db).get_run(run_id)
    client = _client(ctx)
    exp = client.get_experiment_by_name(rec.experiment)
    exp_id = exp.experiment_id if exp is not None else client.create_experiment(rec.experiment)
    mlflow_id = str(client.create_run(exp_id, run_name=rec.name,
                                      tags={CREATED_TAG: "true"}).info.run_id)
    link_run(ctx, run_id, mlflow_id)
    if rec.status != "running":
        client.set_terminated(mlflow_id, "FINISHED" if rec.status == "finished" else "FAILED")
    return mlflow_id


@dataclass
class Resolution:
    """What featureledger knows about a run: its exact features, datasets and models."""

    run_id: str
    mlflow_run_id: str | None
    feature_versions: list[str]
    features: list[str]
    feature_sets: list[str]
    datasets: list[dict[str, Any]] = field(default_factory=list)
    models: list[dict[str, Any]] = field(default_factory=list)
    model_id: str | None = None  # the featureledger model a ``models:/`` URI names

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def resolve_run(ctx: Any, run_id: str) -> Resolution:
    """The features, datasets (with digests and commits) and models of a featureledger run."""
    rec = RunRepository(ctx.registry.db).get_run(run_id)
    d, dc, mv = schema.datasets, schema.dataset_commits, schema.model_versions
    md = schema.model_datasets
    scope = ctx.registry.db.scope
    with ctx.registry.db.read() as conn:
        ds_ids = sa.union(sa.select(d.c.dataset_id).where(scope(d), d.c.run_id == run_id),
                          sa.select(md.c.dataset_id).join(mv, mv.c.model_id == md.c.model_id)
                          .where(scope(md, mv), mv.c.run_id == run_id)).subquery()
        rows = conn.execute(sa.select(d).where(scope(d), d.c.dataset_id.in_(sa.select(ds_ids)))
                            .order_by(d.c.created_at, d.c.dataset_id)).all()
        commits: dict[str, list[str]] = {}
        for ds, cmt in conn.execute(sa.select(dc.c.dataset_id, dc.c.commit_id).where(
                scope(dc), dc.c.dataset_id.in_(sa.select(ds_ids))).order_by(dc.c.commit_id)):
            commits.setdefault(ds, []).append(cmt)
        models = conn.execute(sa.select(mv).where(scope(mv), mv.c.run_id == run_id)
                              .order_by(mv.c.created_at)).all()
        stages: dict[str, set[str]] = {}
        for ds, stage in conn.execute(sa.select(md.c.dataset_id, md.c.stage).join(
                mv, mv.c.model_id == md.c.model_id).where(scope(md, mv), mv.c.run_id == run_id)):
            stages.setdefault(ds, set()).add(stage)
    features: dict[str, None] = {}
    sets: dict[str, None] = {}
    datasets = []
    for r in rows:
        feats = json.loads(r.features)
        features.update(dict.fromkeys(feats))
        if r.feature_set:
            sets[r.feature_set] = None
        datasets.append({"dataset_id": r.dataset_id, "content_hash": r.content_hash,
                         "row_count": r.row_count, "features": feats,
                         "feature_set": r.feature_set, "commits": commits.get(r.dataset_id, []),
                         "stages": sorted(stages.get(r.dataset_id, ()))})
    for m in models:
        features.update(dict.fromkeys(json.loads(m.features)))
        if m.feature_set:
            sets[m.feature_set] = None
    versions = list(dict.fromkeys(f.split(":")[0] for f in features))
    return Resolution(
        run_id=run_id, mlflow_run_id=rec.external_ids.get(SYSTEM),
        feature_versions=versions, features=list(features), feature_sets=list(sets),
        datasets=datasets,
        models=[{"model_id": m.model_id, "ref": f"{m.name}@{m.version}",
                 "artifact_uri": m.artifact_uri, "features": json.loads(m.features)}
                for m in models])


def _model_version(client: Any, ref: str) -> Any:
    """The MLflow model version behind ``models:/name/N`` or ``models:/name@alias``."""
    body = ref[len("models:/"):].strip("/")
    if "@" in body.split("/")[0]:
        name, _, alias = body.split("/")[0].partition("@")
        return client.get_model_version_by_alias(name, alias)
    name, _, version = body.partition("/")
    return client.get_model_version(name, version.split("/")[0])


def mlflow_run_id_of(ctx: Any, ref: str) -> str:
    """The MLflow run id behind ``ref``: a run id, ``runs:/<id>/...``, ``models:/name/N``,
    ``models:/name@alias`` or an MLflow logged-model id (``m-...``)."""
    if ref.startswith("runs:/"):
        return ref[len("runs:/"):].split("/")[0]
    client = _client(ctx)
    if ref.startswith("models:/"):
        mv = _model_version(client, ref)
        if mv.run_id:
            return str(mv.run_id)
        raise UnknownRunError(f"MLflow model {ref!r} names no source run; featureledger can "
                              "only resolve models logged from a run")
    if ref.startswith("m-"):
        return str(client.get_logged_model(ref).source_run_id)
    return ref


def resolve(store_or_ctx: Any, ref: str) -> Resolution:
    """The exact feature versions and datasets behind an MLflow run id or model URI; for a
    ``models:/`` URI of a model registered by ``log_model``, also the featureledger model
    (``model_id``)."""
    ctx = getattr(store_or_ctx, "ctx", store_or_ctx)
    mlflow_id = mlflow_run_id_of(ctx, ref)
    run_id = RunRepository(ctx.registry.db).find_by_external_id(SYSTEM, mlflow_id)
    if run_id is None:  # a link recorded only on the MLflow side
        tags = _client(ctx).get_run(mlflow_id).data.tags
        run_id = tags.get("featureledger.run_id")
    if run_id is None:
        raise UnknownRunError(f"MLflow run {mlflow_id!r} is not linked to a featureledger run; "
                              "start the featureledger run while the MLflow run is active, "
                              "or pass start_run(..., mlflow_run_id=...)")
    res = resolve_run(ctx, run_id)
    if ref.startswith("models:/"):
        res.model_id = _model_version(_client(ctx), ref).tags.get("featureledger.model_id")
        model = next((m for m in res.models if m["model_id"] == res.model_id), None)
        if model is not None:
            res.features = list(model["features"])
            res.feature_versions = list(dict.fromkeys(f.split(":")[0] for f in res.features))
    return res
