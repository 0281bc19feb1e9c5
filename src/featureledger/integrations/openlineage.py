"""OpenLineage: run events for ingestion, materialization, training sets, models and runs.

An ``OpenLineageEmitter`` listens to the store's events and sends OpenLineage ``RunEvent``s
through the official client, with the transport configured under ``openlineage`` in
``featureledger.yaml`` (``console``, ``file`` with ``log_file_path``, ``http`` with
``url``):

==========================  ===========================  ===================================
featureledger event         job                           inputs -> outputs
==========================  ===========================  ===================================
commit.started/completed/   ``<project>.ingest.<view>``  source -> ``view@N`` (schema facet)
failed                                                   (pushes too)
materialize.completed       ``<project>.materialize``    ``view@N`` -> online store table
dataset.created             ``<project>.training_set.    ``view@N`` (commit ids) -> ``ds_``
                            <feature set|adhoc>``
model.logged                ``<project>.train.<model>``  ``ds_`` datasets -> ``model:name@N``
run.started/completed/      ``<project>.experiment.      (the parent of the jobs above)
failed                      <experiment>``
==========================  ===========================  ===================================

Every event carries a ``featureledger`` run facet (feature versions, commit ids, dataset
and run ids). Runs nest as OpenLineage's ``parent`` facet says: a job inside a
featureledger run (ingestion, training set, model) has that run (job
``<project>.experiment.<experiment>``) as parent, and as ``root`` the MLflow run linked to
the outermost featureledger run (namespace ``mlflow``, job ``experiments/<MLflow experiment
id>``, run id the MLflow run id as a UUID), or that outermost run when none is linked; an
experiment run has its parent run, or else its MLflow run, as parent.

Datasets are named by OpenLineage's naming spec, so they join other producers' graphs:
sources as the lineage graph names them (:mod:`featureledger.registry.lineage_edges`) -- a
local file is namespace ``file`` and its absolute path, object storage ``s3://<bucket>``
and the key, a push ``push://<project>`` and the view, in-memory data ``memory`` and
``sha256:<digest>`` -- and featureledger's own datasets in the namespace
``featureledger://<project>``: ``view@N``, ``ds_...``, ``model:name@N``. The
``featureledger`` dataset facet carries the graph's node id; the ``version`` facet the
commit id of an ingestion's output, the newest commit read of a view a training set read,
and the content hash of a training set; the ``columnLineage`` facet where it is known
(an ingestion: each column from the source column it was read as, through the column map
and casts; a training set: each feature from its view version's field, each windowed
aggregation from the field it aggregates). Run ids are the UUIDv7 inside the featureledger
id, so both sides use the same identity.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import attr
import sqlalchemy as sa

from featureledger.errors import MissingDependencyError
from featureledger.events import (
    CommitCompleted,
    CommitFailed,
    CommitStarted,
    DatasetCreated,
    MaterializeCompleted,
    ModelLogged,
    RunCompleted,
    RunFailed,
    RunStarted,
)
from featureledger.model.references import parse_reference
from featureledger.registry import schema
from featureledger.registry.derivations import derivation
from featureledger.registry.lineage_edges import INGESTED, openlineage_dataset

log = logging.getLogger("featureledger.integrations.openlineage")
PRODUCER = "https://github.com/featureledger/featureledger"
FACET_SCHEMA = "https://featureledger.dev/spec/facets/1-0-0/FeatureLedgerRunFacet.json"
DATASET_FACET_SCHEMA = ("https://featureledger.dev/spec/facets/1-0-0/"
                        "FeatureLedgerDatasetFacet.json")

try:
    from openlineage.client import OpenLineageClient
    from openlineage.client.event_v2 import (
        InputDataset,
        Job,
        OutputDataset,
        Run,
        RunEvent,
        RunState,
    )
    from openlineage.client.facet_v2 import (
        DatasetFacet,
        RunFacet,
        column_lineage_dataset,
        dataset_version_dataset,
        error_message_run,
        job_type_job,
        parent_run,
        schema_dataset,
    )
    from openlineage.client.transport import get_default_factory
except ImportError:  # pragma: no cover - exercised only without the extra
    OpenLineageClient = None  # type: ignore[assignment,misc]
    RunFacet = DatasetFacet = object  # type: ignore[assignment,misc]


@attr.define
class FeatureLedgerRunFacet(RunFacet):  # type: ignore[misc,valid-type]
    """What featureledger knows about the job's run: ids and exact feature versions."""

    featureVersions: list[str] = attr.field(factory=list)
    commitIds: list[str] = attr.field(factory=list)
    datasetIds: list[str] = attr.field(factory=list)
    runId: str | None = attr.field(default=None)
    modelId: str | None = attr.field(default=None)
    project: str = attr.field(default="")

    @staticmethod
    def _get_schema() -> str:
        return FACET_SCHEMA


@attr.define
class FeatureLedgerDatasetFacet(DatasetFacet):  # type: ignore[misc,valid-type]
    """The featureledger identity of a dataset: its node id and the commits behind it."""

    nodeId: str = attr.field(default="")
    commitIds: list[str] = attr.field(factory=list)
    status: str | None = attr.field(default=None)

    @staticmethod
    def _get_schema() -> str:
        return DATASET_FACET_SCHEMA


def _uuid(global_id: str) -> str:
    """The UUID inside a featureledger id (``run_<uuid>`` -> ``<uuid>``)."""
    return global_id.partition("_")[2]


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


_ARROW_TO_OL = {"int64": "BIGINT", "int32": "INTEGER", "float64": "DOUBLE",
                "float32": "FLOAT", "string": "STRING", "bool": "BOOLEAN",
                "timestamp": "TIMESTAMP", "date": "DATE"}


def _field(name: str, dtype: str, description: str | None = None) -> Any:
    key = dtype.split("[")[0].split("(")[0]
    return schema_dataset.SchemaDatasetFacetFields(
        name=name, type=_ARROW_TO_OL.get(key, dtype.upper()), description=description or None)


# OpenLineage's names for how an input column reaches an output column (DIRECT) or
# decides which rows there are (INDIRECT)
_DIRECT = {"identity": "IDENTITY", "transformation": "TRANSFORMATION",
           "aggregation": "AGGREGATION"}
_INDIRECT = {"filter": "FILTER", "join": "JOIN", "group_by": "GROUP_BY"}


def column_lineage_facet(record: dict[str, Any] | None,
                         datasets: dict[str, tuple[str, str]]) -> Any:
    """The ``columnLineage`` dataset facet of a derived commit's column lineage record
    (:mod:`featureledger.lineage.columns`); ``datasets`` maps each parent view to its
    input dataset's (namespace, name). None when the lineage is unknown (a Python
    transformation that declares none, SQL sqlglot could not read)."""
    if not record or record.get("method") not in ("sqlglot", "declared"):
        return None
    from openlineage.client.facet_v2 import column_lineage_dataset as cl

    def field(i: dict[str, Any], kind: str, subtype: str) -> Any:
        namespace, name = datasets.get(i["view"], ("", i["view"]))
        desc = i.get("expression") or ""
        return cl.InputField(namespace=namespace, name=name, field=i["column"],
                             transformations=[cl.Transformation(
                                 type=kind, subtype=subtype, description=desc,
                                 masking=False)])

    fields = {out: cl.Fields(inputFields=[field(i, "DIRECT", _DIRECT.get(i["kind"],
                                                                        "TRANSFORMATION"))
                                          for i in inputs])
              for out, inputs in record.get("columns", {}).items()}
    dataset = [field(d, "INDIRECT", _INDIRECT.get(d["kind"], "FILTER"))
               for d in record.get("dataset", [])]
    return cl.ColumnLineageDatasetFacet(fields=fields, dataset=dataset, producer=PRODUCER)


class OpenLineageEmitter:
    """Turns featureledger events into OpenLineage run events."""

    def __init__(self, ctx: Any, client: Any = None) -> None:
        if OpenLineageClient is None:
            raise MissingDependencyError("OpenLineage events", "openlineage-python",
                                         "openlineage")
        cfg = ctx.config.openlineage
        self.ctx = ctx
        self.namespace = cfg.namespace
        self.project = ctx.config.project
        self.ds_namespace = f"featureledger://{self.project}"
        if client is None:
            transport = get_default_factory().create(dict(cfg.transport))
            client = OpenLineageClient(transport=transport)
        self.client = client
        self.emitted = 0

    @classmethod
    def attach(cls, ctx: Any) -> OpenLineageEmitter:
        em = cls(ctx)
        ctx.events.subscribe(CommitStarted, em.on_commit_started)
        ctx.events.subscribe(CommitCompleted, em.on_commit_completed)
        ctx.events.subscribe(CommitFailed, em.on_commit_failed)
        ctx.events.subscribe(MaterializeCompleted, em.on_materialize)
        ctx.events.subscribe(DatasetCreated, em.on_dataset)
        ctx.events.subscribe(ModelLogged, em.on_model)
        for run_event in (RunStarted, RunCompleted, RunFailed):
            ctx.events.subscribe(run_event, em.on_run)
        return em

    # -- building blocks -------------------------------------------------------------------
    def _job(self, name: str, job_type: str) -> Any:
        return Job(namespace=self.namespace, name=f"{self.project}.{name}", facets={
            "jobType": job_type_job.JobTypeJobFacet(processingType="BATCH",
                                                    integration="FEATURELEDGER",
                                                    jobType=job_type, producer=PRODUCER)})

    def _parent(self, run_id: str | None) -> dict[str, Any]:
        """The ``parent`` facet of a job run inside featureledger run ``run_id``: the run
        (job ``<project>.experiment.<experiment>``) as parent, and as root the MLflow run
        linked to the outermost featureledger run, or that run itself."""
        chain = self._run_chain(run_id)
        if not chain:
            return {}
        (rid, exp, _), outermost = chain[0], chain[-1]
        return self._parent_facet((_uuid(rid), self.namespace, f"{self.project}.experiment.{exp}"),
                                  self._mlflow_job(outermost[0]) or self._fl_job(outermost))

    def _fl_job(self, link: tuple[str, str, str | None]) -> tuple[str, str, str]:
        return _uuid(link[0]), self.namespace, f"{self.project}.experiment.{link[1]}"

    def _parent_facet(self, parent: tuple[str, str, str],
                      root: tuple[str, str, str] | None) -> dict[str, Any]:
        facet = parent_run.ParentRunFacet(
            run=parent_run.Run(runId=parent[0]),
            job=parent_run.Job(namespace=parent[1], name=parent[2]), producer=PRODUCER)
        if root is not None:
            facet.root = parent_run.Root(run=parent_run.RootRun(runId=root[0]),
                                         job=parent_run.RootJob(namespace=root[1],
                                                                name=root[2]))
        return {"parent": facet}

    def _run_chain(self, run_id: str | None) -> list[tuple[str, str, str | None]]:
        """(run id, experiment, parent run id) from ``run_id`` up to its outermost run."""
        out: list[tuple[str, str, str | None]] = []
        r, e = schema.runs, schema.experiments
        db = self.ctx.registry.db
        with db.read() as conn:
            while run_id and len(out) < 100 and run_id not in {x[0] for x in out}:
                row = conn.execute(sa.select(e.c.name, r.c.parent_run_id).join(
                    r, r.c.experiment_id == e.c.experiment_id).where(
                    db.scope(e, r), r.c.run_id == run_id)).first()
                if row is None:
                    break
                out.append((run_id, row.name, row.parent_run_id))
                run_id = row.parent_run_id
        return out

    def _mlflow_job(self, run_id: str) -> tuple[str, str, str] | None:
        """(run uuid, namespace, job name) of the MLflow run linked to ``run_id``."""
        x = schema.run_external_ids
        db = self.ctx.registry.db
        with db.read() as conn:
            ids = dict(conn.execute(sa.select(x.c.system, x.c.external_id).where(
                db.scope(x), x.c.run_id == run_id)).all())
        mlflow_id = ids.get("mlflow")
        if not mlflow_id:
            return None
        return (mlflow_run_uuid(mlflow_id), MLFLOW_NAMESPACE,
                f"experiments/{ids.get('mlflow_experiment', 'unknown')}")

    def _emit(self, state: Any, run_uuid: str, job: Any, *, inputs: list[Any] | None = None,
              outputs: list[Any] | None = None, facets: dict[str, Any] | None = None) -> None:
        event = RunEvent(eventType=state, eventTime=_now(), producer=PRODUCER,
                         run=Run(runId=run_uuid, facets=facets or {}), job=job,
                         inputs=inputs or [], outputs=outputs or [])
        self.client.emit(event)
        self.emitted += 1

    def _view_dataset(self, view: str, version: int, cls: Any = InputDataset,
                      commit_ids: list[str] | None = None,
                      features: list[str] | None = None) -> Any:
        facets: dict[str, Any] = {"featureledger": FeatureLedgerDatasetFacet(
            nodeId=f"view:{view}@{version}", commitIds=list(commit_ids or []),
            producer=PRODUCER), **version_facet(max(commit_ids) if commit_ids else None)}
        try:
            rec = self.ctx.registry.definitions.get("feature_view", view, version)
            fv = rec.definition
            fields = [_field(k, v) for k, v in fv.join_keys.items()]
            fields.append(_field(fv.timestamp_field, "timestamp"))
            fields += [_field(f.name, f.dtype, f.description) for f in fv.fields
                       if features is None or f.name in features]
            facets["schema"] = schema_dataset.SchemaDatasetFacet(fields=fields,
                                                                 producer=PRODUCER)
        except Exception:  # a view that vanished still gets an event, just without schema
            log.debug("no schema for %s@%s", view, version, exc_info=True)
        return cls(namespace=self.ds_namespace, name=f"{view}@{version}", facets=facets)

    def _sources_of(self, commit_id: str) -> list[str]:
        """The commit's source nodes, as its lineage edges name them: one name for a source
        in the graph and in the events, for ingested files and frames and pushes alike."""
        t = schema.lineage_edges
        with self.ctx.registry.db.read() as conn:
            return sorted(conn.execute(sa.select(t.c.src).where(
                self.ctx.registry.db.scope(t), t.c.dst == commit_id,
                t.c.relation == INGESTED)).scalars())

    def _source_dataset(self, node: str) -> Any:
        namespace, name = openlineage_dataset(node[len("source:"):])
        return InputDataset(namespace=namespace, name=name, facets={
            "featureledger": FeatureLedgerDatasetFacet(nodeId=node, producer=PRODUCER)})

    def _fl(self, **kw: Any) -> dict[str, Any]:
        return {"featureledger": FeatureLedgerRunFacet(project=self.project, producer=PRODUCER,
                                                       **kw)}

    # -- ingestion -------------------------------------------------------------------------
    def on_commit_started(self, e: CommitStarted) -> None:
        cid, view, version = e.commit_id, e.view, e.version
        self._emit(RunState.START, _uuid(cid), self._job(f"ingest.{view}", "INGESTION"),
                   facets={**self._fl(commitIds=[cid], runId=e.run_id,
                                      featureVersions=[f"{view}@{version}"]),
                           **self._parent(e.run_id)})

    def on_commit_completed(self, e: CommitCompleted) -> None:
        rec = e.commit
        if derivation(rec.source) is not None:
            self.on_derived_commit(e)
            return
        cid, view, version, run_id = (rec.commit_id, rec.view_name, rec.view_version,
                                      rec.run_id)
        inputs = [self._source_dataset(node) for node in self._sources_of(cid)]
        out = self._view_dataset(view, version, OutputDataset, [cid])
        if len(inputs) == 1 and e.source == "ingest":  # the steps say how columns were read
            out.facets.update(ingest_column_lineage(
                inputs[0], [f.name for f in getattr(out.facets.get("schema"), "fields", [])],
                rec.steps))
        self._emit(RunState.COMPLETE, _uuid(cid), self._job(f"ingest.{view}", "INGESTION"),
                   inputs=inputs, outputs=[out],
                   facets={**self._fl(commitIds=[cid], runId=run_id,
                                      featureVersions=[f"{view}@{version}"]),
                           **self._parent(run_id)})

    def on_commit_failed(self, e: CommitFailed) -> None:
        cid = e.commit_id
        view_ref = e.view_ref
        err = e.error
        self._emit(RunState.FAIL, _uuid(cid),
                   self._job(f"ingest.{view_ref.split('@')[0]}", "INGESTION"),
                   facets={**self._fl(commitIds=[cid], featureVersions=[view_ref]),
                           "errorMessage": error_message_run.ErrorMessageRunFacet(
                               message=str(err) or type(err).__name__,
                               programmingLanguage="python", producer=PRODUCER)})

    # -- derivations (column lineage) -----------------------------------------------------
    def on_derived_commit(self, e: CommitCompleted) -> None:
        """A derived commit: job ``derive.<view>``, the parent view versions it read (with
        the commits) as inputs, the derived view version as output, carrying the
        ``columnLineage`` facet of the column lineage the commit recorded."""
        rec = e.commit
        cid, view, version, run_id = (rec.commit_id, rec.view_name, rec.view_version,
                                      rec.run_id)
        parents = derivation(rec.source).get("parents", [])  # type: ignore[union-attr]
        inputs = [self._view_dataset(p["view"], int(p["version"]), InputDataset,
                                     list(p.get("commits", [])))
                  for p in parents]
        out = self._view_dataset(view, version, OutputDataset, [cid])
        facet = column_lineage_facet(rec.source.get("columns"), {
            p["view"]: (d.namespace, d.name) for p, d in zip(parents, inputs, strict=True)})
        if facet is not None:
            out.facets["columnLineage"] = facet
        versions = [f"{view}@{version}", *(f"{p['view']}@{p['version']}" for p in parents)]
        self._emit(RunState.COMPLETE, _uuid(cid), self._job(f"derive.{view}", "DERIVATION"),
                   inputs=inputs, outputs=[out],
                   facets={**self._fl(commitIds=[cid], runId=run_id, featureVersions=versions),
                           **self._parent(run_id)})

    # -- materialization -----------------------------------------------------------------
    def on_materialize(self, e: MaterializeCompleted) -> None:
        from featureledger.model.ids import uuid7

        views = [str(v) for v in e.views]
        ins, outs = [], []
        for v in views:
            name, _, ver = v.partition("@")
            if ver.isdigit():
                ins.append(self._view_dataset(name, int(ver)))
                outs.append(OutputDataset(namespace=f"{self.ds_namespace}/online/"
                                          f"{e.online_store}", name=v))
        run_uuid = str(uuid7())
        job = self._job("materialize", "MATERIALIZATION")
        facets = self._fl(featureVersions=views, commitIds=list(e.commits))
        self._emit(RunState.START, run_uuid, job, inputs=ins, facets=facets)
        self._emit(RunState.COMPLETE, run_uuid, job, inputs=ins, outputs=outs, facets=facets)

    # -- training sets ---------------------------------------------------------------------
    def on_dataset(self, e: DatasetCreated) -> None:
        rec = e.record
        by_view: dict[tuple[str, int], list[str]] = {}
        for f in rec.features:
            r = parse_reference(f)
            by_view.setdefault((r.view, r.version or 0), []).append(r.feature)
        views = rec.manifest.get("views") or []
        commits_of = {(v.get("view"), v.get("version")): v.get("commit_ids", [])
                      for v in views if isinstance(v, dict)}
        ins = [self._view_dataset(v, n, InputDataset, commits_of.get((v, n), []), feats)
               for (v, n), feats in by_view.items()]
        types = {(d.name, f.name): f for d in ins
                 for f in getattr(d.facets.get("schema"), "fields", None) or []}
        full = bool(rec.manifest.get("full_feature_names"))
        columns = training_set_columns(views, by_view, full)
        fields = []
        for out_name, (v, n, f, _agg) in columns.items():
            known = types.get((f"{v}@{n}", f))
            fields.append(schema_dataset.SchemaDatasetFacetFields(
                name=out_name, type=known.type if known is not None and _agg is None else None))
        out = OutputDataset(namespace=self.ds_namespace, name=rec.dataset_id, facets={
            "schema": schema_dataset.SchemaDatasetFacet(fields=fields, producer=PRODUCER),
            "featureledger": FeatureLedgerDatasetFacet(nodeId=rec.dataset_id,
                                                       commitIds=list(rec.commit_ids),
                                                       producer=PRODUCER),
            **version_facet(rec.content_hash),
            **training_set_column_lineage(self.ds_namespace, columns)})
        job = self._job(f"training_set.{(rec.feature_set or 'adhoc').split('@')[0]}",
                        "TRAINING_SET")
        facets = {**self._fl(featureVersions=[f"{v}@{n}" for v, n in by_view],
                             commitIds=list(rec.commit_ids), datasetIds=[rec.dataset_id],
                             runId=rec.run_id), **self._parent(rec.run_id)}
        self._emit(RunState.START, _uuid(rec.dataset_id), job, inputs=ins, facets=facets)
        self._emit(RunState.COMPLETE, _uuid(rec.dataset_id), job, inputs=ins, outputs=[out],
                   facets=facets)

    # -- models and runs ---------------------------------------------------------------------
    def on_model(self, e: ModelLogged) -> None:
        ds_ids = [d for ids in e.datasets.values() for d in ids]
        ins = [InputDataset(namespace=self.ds_namespace, name=d) for d in ds_ids]
        versions = list(dict.fromkeys(str(f).split(":")[0] for f in e.features))
        out = OutputDataset(namespace=self.ds_namespace, name=f"model:{e.ref}", facets={
            "featureledger": FeatureLedgerDatasetFacet(nodeId=e.model_id, producer=PRODUCER)})
        job = self._job(f"train.{e.model_name}", "MODEL_TRAINING")
        facets = {**self._fl(featureVersions=versions, datasetIds=ds_ids,
                             runId=e.run_id, modelId=e.model_id),
                  **self._parent(e.run_id)}
        self._emit(RunState.START, _uuid(e.model_id), job, inputs=ins, facets=facets)
        self._emit(RunState.COMPLETE, _uuid(e.model_id), job, inputs=ins, outputs=[out],
                   facets=facets)

    def on_run(self, e: RunStarted | RunCompleted | RunFailed) -> None:
        run_id = e.run_id
        with self.ctx.registry.db.read() as conn:
            exp = conn.execute(sa.select(schema.experiments.c.name).join(
                schema.runs, schema.runs.c.experiment_id == schema.experiments.c.experiment_id)
                .where(self.ctx.registry.db.scope(schema.experiments, schema.runs),
                       schema.runs.c.run_id == run_id)).scalar()
        state = {"run.started": RunState.START, "run.completed": RunState.COMPLETE,
                 "run.failed": RunState.FAIL}[e.name]
        facets = {**self._fl(runId=run_id), **self._run_parent(run_id, e)}
        if isinstance(e, RunFailed) and e.error:
            facets["errorMessage"] = error_message_run.ErrorMessageRunFacet(
                message=str(e.error), programmingLanguage="python", producer=PRODUCER)
        self._emit(state, _uuid(run_id), self._job(f"experiment.{exp}", "EXPERIMENT"),
                   facets=facets)

    def _run_parent(self, run_id: str, e: Any) -> dict[str, Any]:
        """An experiment run's ``parent``: its parent featureledger run, else the MLflow run
        it is linked to (the root: the outermost run's MLflow run, else that run)."""
        chain = self._run_chain(run_id)
        if not chain:
            return {}
        outermost = chain[-1]
        root = self._mlflow_job(outermost[0]) or self._fl_job(outermost)
        if len(chain) > 1:
            return self._parent_facet(self._fl_job(chain[1]), root)
        mlflow_job = self._mlflow_job(run_id)
        if mlflow_job is None and isinstance(e, RunStarted) and e.mlflow_run_id:
            mlflow_job = (mlflow_run_uuid(e.mlflow_run_id), MLFLOW_NAMESPACE,
                          "experiments/unknown")
        return self._parent_facet(mlflow_job, mlflow_job) if mlflow_job else {}


# -- facets that need no emitter ----------------------------------------------------------
MLFLOW_NAMESPACE = "mlflow"


def mlflow_run_uuid(mlflow_run_id: str) -> str:
    """The UUID form of an MLflow run id (32 hex digits); another id is mapped to a stable
    UUID (uuid5) of itself.

    >>> mlflow_run_uuid("0a1b2c3d4e5f60718293a4b5c6d7e8f9")
    '0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9'
    """
    try:
        return str(uuid.UUID(hex=mlflow_run_id))
    except ValueError:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"mlflow:{mlflow_run_id}"))


def version_facet(version: str | None) -> dict[str, Any]:
    """The dataset version facet (a commit id for a view, a content hash for a training
    set); nothing when the version is not known."""
    if not version:
        return {}
    return {"version": dataset_version_dataset.DatasetVersionDatasetFacet(
        datasetVersion=version, producer=PRODUCER)}


def _transform(subtype: str, description: str | None = None) -> Any:
    return column_lineage_dataset.Transformation(type="DIRECT", subtype=subtype,
                                                 description=description, masking=False)


def ingest_column_lineage(source: Any, columns: Iterable[str],
                          steps: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Column lineage of an ingestion: each stored column from the source column it was
    read from (renamed by the column map; ``TRANSFORMATION`` when it was cast), none for a
    column the source did not have (filled with its default or null)."""
    renamed: dict[str, str] = {}
    casts: dict[str, str] = {}
    absent: set[str] = set()
    for step in steps:
        kind = step.get("step")
        if kind == "map_columns":
            renamed.update({dst: src for src, dst in step.get("params", {}).items() if dst})
        elif kind == "cast":
            params = step.get("params", {})
            casts[step["column"]] = f"cast from {params.get('from')} to {params.get('to')}"
        elif kind in ("fill_default", "fill_null"):
            absent.add(step["column"])
    fields = {}
    for col in columns:
        if col in absent:
            continue
        how = (_transform("TRANSFORMATION", casts[col]) if col in casts
               else _transform("IDENTITY"))
        fields[col] = column_lineage_dataset.Fields(inputFields=[
            column_lineage_dataset.InputField(namespace=source.namespace, name=source.name,
                                              field=renamed.get(col, col),
                                              transformations=[how])])
    if not fields:
        return {}
    return {"columnLineage": column_lineage_dataset.ColumnLineageDatasetFacet(
        fields=fields, producer=PRODUCER)}


def training_set_columns(views: Sequence[Any], by_view: dict[tuple[str, int], list[str]],
                         full: bool) -> dict[str, tuple[str, int, str, dict[str, Any] | None]]:
    """Output column -> (view, version, field read, aggregation or None), from the
    manifest's view requests (older manifests: from the feature references)."""
    out: dict[str, tuple[str, int, str, dict[str, Any] | None]] = {}
    requests = [v for v in views if isinstance(v, dict) and "output_names" in v]
    if requests:
        for req in requests:
            for f, name in zip(req["features"], req["output_names"], strict=False):
                out[name] = (req["view"], req["version"], f, None)
            for agg in req.get("aggregations") or []:
                out[agg["output"]] = (req["view"], req["version"], agg["column"], agg)
        return out
    for (view, n), feats in by_view.items():
        for f in feats:
            out[f"{view}__{f}" if full else f] = (view, n, f, None)
    return out


def training_set_column_lineage(namespace: str, columns: dict[str, tuple[str, int, str, Any]]
                                ) -> dict[str, Any]:
    """Column lineage of a training set: each feature column from its view version's field
    (``IDENTITY``), each windowed aggregation from the field it aggregates
    (``AGGREGATION``)."""
    fields = {}
    for name, (view, version, field, agg) in columns.items():
        how = (_transform("AGGREGATION", f"{agg['function']} over a {agg['window_us']} µs "
                          "window") if agg else _transform("IDENTITY"))
        fields[name] = column_lineage_dataset.Fields(inputFields=[
            column_lineage_dataset.InputField(namespace=namespace, name=f"{view}@{version}",
                                              field=field, transformations=[how])])
    if not fields:
        return {}
    return {"columnLineage": column_lineage_dataset.ColumnLineageDatasetFacet(
        fields=fields, producer=PRODUCER)}
