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
and run ids); jobs inside a featureledger run name it in a ``parent`` facet. Sources are
named as the lineage graph names them (:mod:`featureledger.registry.lineage_edges`), mapped
to OpenLineage's dataset naming: a local file is namespace ``file`` and its absolute path,
a push namespace ``push://<project>`` and the view, in-memory data namespace ``memory`` and
``sha256:<digest>``; the ``featureledger`` dataset facet carries the graph's node id. Run ids are
the UUIDv7 inside the featureledger id, so both sides use the same identity.
"""

from __future__ import annotations

import datetime as dt
import logging
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
        if not run_id:
            return {}
        exp = None
        with self.ctx.registry.db.read() as conn:
            exp = conn.execute(sa.select(schema.experiments.c.name).join(
                schema.runs, schema.runs.c.experiment_id == schema.experiments.c.experiment_id)
                .where(self.ctx.registry.db.scope(schema.experiments, schema.runs),
                       schema.runs.c.run_id == run_id)).scalar()
        if exp is None:
            return {}
        return {"parent": parent_run.ParentRunFacet(
            run=parent_run.Run(runId=_uuid(run_id)),
            job=parent_run.Job(namespace=self.namespace,
                               name=f"{self.project}.experiment.{exp}"),
            producer=PRODUCER)}

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
            producer=PRODUCER)}
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
        fields = []
        for (v, n), feats in by_view.items():
            for f in feats:
                known = types.get((f"{v}@{n}", f))
                fields.append(schema_dataset.SchemaDatasetFacetFields(
                    name=f"{v}__{f}" if full else f,
                    type=known.type if known is not None else None))
        out = OutputDataset(namespace=self.ds_namespace, name=rec.dataset_id, facets={
            "schema": schema_dataset.SchemaDatasetFacet(fields=fields, producer=PRODUCER),
            "featureledger": FeatureLedgerDatasetFacet(nodeId=rec.dataset_id,
                                                       commitIds=list(rec.commit_ids),
                                                       producer=PRODUCER)})
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
        facets = self._fl(runId=run_id)
        if isinstance(e, RunFailed) and e.error:
            facets["errorMessage"] = error_message_run.ErrorMessageRunFacet(
                message=str(e.error), programmingLanguage="python", producer=PRODUCER)
        self._emit(state, _uuid(run_id), self._job(f"experiment.{exp}", "EXPERIMENT"),
                   facets=facets)
