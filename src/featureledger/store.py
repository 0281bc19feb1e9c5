"""The FeatureStore facade: one object for the whole SDK, delegating every call to a part.

It holds no logic of its own: each method forwards to the service of the part that owns
the operation (definitions, ingestion, retrieval, online serving, tracking, lineage), with
every keyword spelled out and every return typed, so a typo is a type error and an IDE
shows what each call takes. Parts are built lazily, so a process that only reads
definitions never opens the online store. Ready backend instances can be handed in
(``FeatureStore(path, online_store=MyStore())``), as ``httpx.Client(transport=...)``.

>>> import tempfile
>>> store = FeatureStore(tempfile.mkdtemp())
>>> from featureledger import Entity, FeatureView, Field
>>> plan = store.apply([
...     Entity(name="driver", join_keys={"driver_id": "int64"}),
...     FeatureView(name="stats", entities=["driver"], fields=[Field(name="trips", dtype="int64")]),
... ])
>>> [(i.name, i.action, i.to_version) for i in plan.items]
[('driver', 'new', 1), ('stats', 'new', 1)]
>>> store.close()
"""

from __future__ import annotations

import builtins
import contextlib
import functools
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from featureledger.config import ProjectConfig, load_config
from featureledger.context import StoreContext

if TYPE_CHECKING:
    import pyarrow as pa

    from featureledger.definitions.apply import ApplyService
    from featureledger.derive import DeriveProgress, DeriveResult, DeriveService
    from featureledger.governance.access import AccessControl
    from featureledger.governance.audit import AuditService
    from featureledger.governance.catalog import CatalogEntry, CatalogService
    from featureledger.governance.deprecation import DeprecationService
    from featureledger.governance.policy import Policy
    from featureledger.governance.report import GovernanceReport, GovernanceService
    from featureledger.governance.retention import Expiry, RetentionReport, RetentionService
    from featureledger.ingest.pipeline import Duplicates, IngestionResult, IngestionService
    from featureledger.lineage.graph import Direction, LineageGraph
    from featureledger.lineage.reconcile import ReconcileReport
    from featureledger.lineage.service import ImpactReport, LineageService
    from featureledger.model.compat import Change
    from featureledger.model.definitions import Definition
    from featureledger.offline.compaction import CompactionResult, CompactionService
    from featureledger.offline.dataset import TrainingDataset
    from featureledger.offline.engine import OfflineEngine
    from featureledger.offline.interface import OfflineStore
    from featureledger.offline.retrieval import RetrievalService
    from featureledger.offline.storage import GcReport
    from featureledger.online.materialization import MaterializationService, MaterializeResult
    from featureledger.online.response import OnlineResponse
    from featureledger.online.service import OnlineService
    from featureledger.online.stores import OnlineStore
    from featureledger.quality.alerts import AlertService
    from featureledger.quality.drift import DriftReport
    from featureledger.quality.policy import QualityPolicy
    from featureledger.quality.schema_drift import SchemaDriftReport
    from featureledger.quality.scoreboard import Scoreboard, ScoreboardService
    from featureledger.quality.service import QualityService
    from featureledger.quality.skew import SkewReport, SkewService
    from featureledger.registry import CommitRecord, DefinitionRecord, Plan, Registry
    from featureledger.registry.audit import AuditEntry, AuditVerification
    from featureledger.registry.lifecycle import Deprecation, RetentionPolicy
    from featureledger.registry.policies import PolicyRecord
    from featureledger.registry.quality import Alert, QualityCheck
    from featureledger.registry.segments import SegmentRecord
    from featureledger.registry.tracking_records import (
        Deployment,
        Experiment,
        ModelVersion,
        RunComparison,
        RunRecord,
    )
    from featureledger.tracking.run import Run
    from featureledger.tracking.scoring import ScoredBatch
    from featureledger.tracking.service import TrackingService


class FeatureStore:
    """The featureledger SDK.

    ``FeatureStore(path)`` opens the feature repository at ``path`` (the folder holding
    ``featureledger.yaml``; without one, embedded defaults under ``path/.featureledger``).
    ``offline_store``, ``offline_engine`` and ``online_store`` replace the configured
    backends with ready instances (closed by their owner, not by the store).

    ``principal`` is who the store acts as: what the access policy judges and what commits,
    runs and deployments record (default ``FEATURELEDGER_PRINCIPAL``, else the OS user;
    ``actor`` is its older name).
    """

    def __init__(self, repo_path: str | Path = ".", *, config: ProjectConfig | None = None,
                 actor: str | None = None,
                 offline_store: OfflineStore | None = None,
                 offline_engine: OfflineEngine | None = None,
                 online_store: OnlineStore | None = None,
                 principal: str | None = None) -> None:
        from featureledger.registry import Registry

        self.repo_path = Path(repo_path)
        self.config = config or load_config(self.repo_path)
        registry = Registry(self.config.registry_url, project=self.config.project,
                            actor=principal or actor, source_base=self.config.root)
        self.ctx = StoreContext(self.config, registry, offline_store=offline_store,
                                offline_engine=offline_engine, online_store=online_store)
        # integrations (OpenLineage, MLflow) listen to every part's events from the start
        from featureledger.integrations import attach

        attach(self.ctx)

    @property
    def registry(self) -> Registry:
        """The registry: definitions, commits, datasets, runs, lineage, audit."""
        return self.ctx.registry

    def close(self) -> None:
        """Land buffered pushes, close the parts and the backends this store opened."""
        self.ctx.close()

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the parts (built once, then a plain attribute: serving calls pass here) ---------
    @functools.cached_property
    def applying(self) -> ApplyService:
        """Plan and apply definitions, with migrations."""
        from featureledger.definitions.apply import ApplyService

        return self.ctx.part(ApplyService)

    @functools.cached_property
    def ingestion(self) -> IngestionService:
        """Ingestion and the commit log."""
        from featureledger.ingest.pipeline import IngestionService

        return self.ctx.part(IngestionService)

    @functools.cached_property
    def retrieval(self) -> RetrievalService:
        """Historical retrieval: training sets, windows, reproduction."""
        from featureledger.offline.retrieval import RetrievalService

        return self.ctx.part(RetrievalService)

    @functools.cached_property
    def online(self) -> OnlineService:
        """Online serving: materialization, feature vectors, push."""
        from featureledger.online.service import OnlineService

        return self.ctx.part(OnlineService)

    @functools.cached_property
    def materialization(self) -> MaterializationService:
        """Materialization into the online store."""
        from featureledger.online.materialization import MaterializationService

        return self.ctx.part(MaterializationService)

    @functools.cached_property
    def tracking(self) -> TrackingService:
        """Experiments, runs, models and deployments."""
        from featureledger.tracking.service import TrackingService

        return self.ctx.part(TrackingService)

    @functools.cached_property
    def compaction(self) -> CompactionService:
        """Compaction of view versions' commit files into clustered segments."""
        from featureledger.offline.compaction import CompactionService

        return self.ctx.part(CompactionService)

    @functools.cached_property
    def deriving(self) -> DeriveService:
        """Compute derived views from their parents."""
        from featureledger.derive import DeriveService

        return self.ctx.part(DeriveService)

    @functools.cached_property
    def access(self) -> AccessControl:
        """The access check every read and write passes (the applied policy)."""
        from featureledger.governance.access import AccessControl

        return self.ctx.part(AccessControl)

    @functools.cached_property
    def retention(self) -> RetentionService:
        """Retention policies and their enforcement."""
        from featureledger.governance.retention import RetentionService

        return self.ctx.part(RetentionService)

    @functools.cached_property
    def deprecation(self) -> DeprecationService:
        """Deprecation schedules and their approvals."""
        from featureledger.governance.deprecation import DeprecationService

        return self.ctx.part(DeprecationService)

    @functools.cached_property
    def catalog(self) -> CatalogService:
        """The catalog: search, explain, leaderboards."""
        from featureledger.governance.catalog import CatalogService

        return self.ctx.part(CatalogService)

    @functools.cached_property
    def governance(self) -> GovernanceService:
        """Governance metrics."""
        from featureledger.governance.report import GovernanceService

        return self.ctx.part(GovernanceService)

    @functools.cached_property
    def quality(self) -> QualityService:
        """Quality policies, drift, commit checks and schema drift."""
        from featureledger.quality.service import QualityService

        return self.ctx.part(QualityService)

    @functools.cached_property
    def alerting(self) -> AlertService:
        """Alert records and their notifications."""
        from featureledger.quality.alerts import AlertService

        return self.ctx.part(AlertService)

    @functools.cached_property
    def scoring(self) -> ScoreboardService:
        """Quality KPIs per view, commit, experiment and deployment."""
        from featureledger.quality.scoreboard import ScoreboardService

        return self.ctx.part(ScoreboardService)

    @functools.cached_property
    def skew_service(self) -> SkewService:
        """Sampling bias of training sets and training-serving skew."""
        from featureledger.quality.skew import SkewService

        return self.ctx.part(SkewService)

    @functools.cached_property
    def lineage_service(self) -> LineageService:
        """Lineage queries and reconciliation."""
        from featureledger.lineage.service import LineageService

        return self.ctx.part(LineageService)

    # -- definitions --------------------------------------------------------------------
    def load_definitions(self) -> builtins.list[Definition]:
        """The definitions of the repository's Python modules and YAML files."""
        from featureledger.project import load_definitions

        return load_definitions(self.repo_path)

    def load_policy(self) -> Policy | None:
        """The access policy of the repository's ``policy.yaml`` (None when there is none)."""
        from featureledger.governance.policy import load_policy_file

        return load_policy_file(self.config.root)

    def plan(self, definitions: builtins.list[Definition] | None = None, *,
             migrations: Mapping[str, str] | None = None,
             policy: Policy | None = None) -> Plan:
        """What ``apply`` would do, per object, with every change classified and, for each
        new feature-view version, where its data comes from (``item.notes``). Without
        ``definitions``, the repository's definitions and its ``policy.yaml``."""
        return self.applying.plan(
            definitions or self.load_definitions(), migrations=migrations,
            policy=policy if policy is not None or definitions else self.load_policy())

    def apply(self, definitions: builtins.list[Definition] | None = None, *,
              allow_breaking: str | None = None,
              migrations: Mapping[str, str] | None = None,
              policy: Policy | None = None, experiment: str | None = None,
              hypothesis: str | None = None) -> Plan:
        """Apply definitions (default: the repository's, with its ``policy.yaml``)
        atomically and idempotently; ``policy`` becomes the access policy in force.

        ``migrations`` maps a view name to one SELECT over the relation ``old`` that fills
        a new version which would otherwise start empty (see featureledger.definitions.apply).
        ``experiment`` and ``hypothesis`` record what new feature-view versions are created
        to test (catalog and lineage).
        """
        return self.applying.apply(
            definitions or self.load_definitions(), allow_breaking=allow_breaking,
            migrations=migrations,
            policy=policy if policy is not None or definitions else self.load_policy(),
            experiment=experiment, hypothesis=hypothesis)

    def policy(self) -> PolicyRecord | None:
        """The access policy in force (None: access is open)."""
        return self.access.policy()

    def acting_as(self, principal: str) -> contextlib.AbstractContextManager[str | None]:
        """A block in which this store acts as ``principal`` (judged by the access policy
        and recorded as who did what), e.g. for a service answering many principals."""
        from featureledger.registry.actor import acting_as

        return acting_as(principal)

    def get_view(self, name: str, version: int | None = None) -> DefinitionRecord:
        """A feature view version (the latest by default)."""
        return self.registry.definitions.get("feature_view", name, version)

    def get_entity(self, name: str, version: int | None = None) -> DefinitionRecord:
        """An entity version (the latest by default)."""
        return self.registry.definitions.get("entity", name, version)

    def get_feature_set(self, name: str, version: int | None = None) -> DefinitionRecord:
        """A feature set version (the latest by default)."""
        return self.registry.definitions.get("feature_set", name, version)

    def list(self, kind: str | None = None) -> builtins.list[DefinitionRecord]:
        """The latest version of every definition (of one kind, if given)."""
        return self.registry.definitions.list(kind)

    def versions(self, name: str, kind: str = "feature_view") -> builtins.list[DefinitionRecord]:
        """Every version of a definition, oldest first."""
        return self.registry.definitions.versions(kind, name)

    def diff_versions(self, name: str, a: int, b: int) -> builtins.list[Change]:
        """Classified changes from version ``a`` to version ``b`` of a feature view."""
        from featureledger.model.compat import classify_view_change

        return classify_view_change(self.get_view(name, a).definition,
                                    self.get_view(name, b).definition)

    # -- governance: deprecation, retention, catalog, metrics ---------------------------
    def deprecate(self, target: str, reason: str, *, replacement: str | None = None,
                  retire_on: Any = None, force: str | None = None) -> Deprecation:
        """Deprecate a view, view version or feature (``view``, ``view@N``,
        ``view:feature``, ``view@N:feature``): reads warn and are counted; from
        ``retire_on`` on they fail, naming ``replacement``. Refused over active deployments
        unless ``force`` gives the reason. See ``DeprecationService.deprecate``."""
        return self.deprecation.deprecate(target, reason, replacement=replacement,
                                          retire_on=retire_on, force=force)

    def retire(self, target: str, reason: str, *, replacement: str | None = None,
               force: str | None = None) -> Deprecation:
        """Deprecate ``target`` with a retirement date of now: its reads fail from now on."""
        return self.deprecation.retire(target, reason, replacement=replacement, force=force)

    def approve_deprecation(self, deprecation_id: str,
                            reason: str | None = None) -> Deprecation:
        """Approve a deprecation (as this store's principal, not its requester)."""
        return self.deprecation.approve(deprecation_id, reason)

    def withdraw_deprecation(self, deprecation_id: str, reason: str) -> Deprecation:
        """End a deprecation (audited)."""
        return self.deprecation.withdraw(deprecation_id, reason)

    def deprecations(self, *, view: str | None = None,
                     withdrawn: bool = False) -> builtins.list[Deprecation]:
        """Deprecations in effect (every one with ``withdrawn``)."""
        return self.deprecation.deprecations(view=view, withdrawn=withdrawn)

    def set_retention(self, view: str, *, keep_days: int | None = None,
                      keep_last: int | None = None, reason: str) -> RetentionPolicy | None:
        """Keep ``view``'s commits ``keep_days`` days or its last ``keep_last`` (neither:
        keep everything); audited with ``reason``."""
        return self.retention.set_policy(view, keep_days=keep_days, keep_last=keep_last,
                                         reason=reason)

    def retention_backlog(self, *, view: str | None = None,
                          at: Any = None) -> builtins.list[Expiry]:
        """The commits retention expires now (or at ``at``)."""
        return self.retention.backlog(view=view, at=at)

    def apply_retention(self, *, view: str | None = None, dry_run: bool = False,
                        force: str | None = None, at: Any = None) -> RetentionReport:
        """Expire and delete what the retention policies say, one commit at a time; see
        ``RetentionService.apply``."""
        return self.retention.apply(view=view, dry_run=dry_run, force=force, at=at)

    def search(self, text: str, *, tag: str | None = None,
               owner: str | None = None) -> builtins.list[CatalogEntry]:
        """Views and features whose name, description, tags or owner contain ``text``."""
        return self.catalog.search(text, tag=tag, owner=owner)

    def catalog_entries(self, *, tag: str | None = None, owner: str | None = None,
                        kind: str | None = None) -> builtins.list[CatalogEntry]:
        """Every view and feature, by tag and owner."""
        return self.catalog.entries(tag=tag, owner=owner, kind=kind)

    def catalog_show(self, name: str, *, metric: str | None = None) -> dict[str, Any]:
        """Everything the catalog knows of a view or feature, with its leaderboard."""
        return self.catalog.show(name, metric=metric)

    def leaderboard(self, name: str, *, metric: str | None = None
                    ) -> builtins.list[dict[str, Any]]:
        """Runs that read a view or feature (version), with what else they read, their
        models and metrics, best first on ``metric``."""
        return self.catalog.leaderboard(name, metric=metric)

    def governance_report(self, *, window_days: int = 7) -> GovernanceReport:
        """Governance metrics: denied requests, deprecated reads, undocumented features,
        retention backlog, unreviewed breaking changes, unapproved deprecations."""
        return self.governance.report(window_days=window_days)

    # -- ingestion ---------------------------------------------------------------------------
    def ingest(self, view: str, data: Any = None, *, version: int | None = None,
               mode: str = "strict", duplicates: Duplicates = "reject",
               run_id: str | None = None, column_map: dict[str, str | None] | None = None,
               filter: str | None = None, user: str | None = None,
               source_name: str | None = None) -> IngestionResult:
        """Validate ``data`` and write it as one commit of ``view``; see
        ``IngestionService.ingest``."""
        return self.ingestion.ingest(view, data, version=version, mode=mode,
                                     duplicates=duplicates, run_id=run_id,
                                     column_map=column_map, filter=filter, user=user,
                                     source_name=source_name)

    def commits(self, view: str | None = None, *, version: int | None = None,
                status: str | tuple[str, ...] | None = None, run_id: str | None = None,
                as_of: Any = None, limit: int | None = None) -> builtins.list[CommitRecord]:
        """Commits in commit order, filtered."""
        return self.ingestion.commits(view, version=version, status=status, run_id=run_id,
                                      as_of=as_of, limit=limit)

    def get_commit(self, commit_id: str) -> CommitRecord:
        """One commit by id."""
        return self.ingestion.get_commit(commit_id)

    def quarantine(self, commit_id: str, reason: str) -> CommitRecord:
        """Hide a commit from retrieval and serving (reversible; audited)."""
        return self.ingestion.quarantine(commit_id, reason)

    def rollback(self, commit_id: str, reason: str) -> CommitRecord:
        """Mark a commit rolled back: it is never read again unless restored (audited)."""
        return self.ingestion.rollback(commit_id, reason)

    def restore(self, commit_id: str, reason: str) -> CommitRecord:
        """Serve a quarantined or rolled-back commit again (audited)."""
        return self.ingestion.restore(commit_id, reason)

    def gc(self, grace_seconds: float = 3600, dry_run: bool = False) -> GcReport:
        """Remove files that no commit references (left by interrupted ingestions)."""
        return self.ingestion.gc(grace_seconds, dry_run)

    def derive(self, view: str, *, full: bool = False, start: Any = None, end: Any = None,
               chunk: Any = None,
               progress: Callable[[DeriveProgress], None] | None = None) -> DeriveResult:
        """Compute what is pending of derived view ``view`` and commit it: the driving
        parent's commits not yet derived and a recomputation of stale derived commits
        (incremental, resumable, idempotent); ``start``/``end``/``chunk`` backfill an
        event-time range one chunk per commit; ``full`` recomputes everything. See
        ``DeriveService.derive``."""
        return self.deriving.derive(view, full=full, start=start, end=end, chunk=chunk,
                                    progress=progress)

    def stale(self, view: str) -> dict[str, tuple[str, ...]]:
        """The stale commits of derived view ``view``, each with why it is stale."""
        return self.deriving.stale(view)

    def compact(self, view: str | None = None, *, version: int | None = None,
                min_commits: int = 2) -> builtins.list[CompactionResult]:
        """Rewrite the commits of ``view`` (every view when None) into files clustered by
        join key and sorted by event time; every answer stays the same. See
        ``CompactionService.compact``."""
        return self.compaction.compact(view, version=version, min_commits=min_commits)

    def segments(self, view: str | None = None, *, retired: bool = False
                 ) -> builtins.list[SegmentRecord]:
        """The compacted segments (active ones, or every one with ``retired``)."""
        return self.compaction.segments(view, retired=retired)

    def retire_segment(self, segment_id: str, reason: str) -> SegmentRecord:
        """Read a segment's commits from their own files again (audited)."""
        return self.compaction.retire(segment_id, reason)

    # -- retrieval ---------------------------------------------------------------------------
    def get_historical_features(self, entity_df: Any, features: Any = None, *,
                                feature_set: str | None = None, as_of: Any = None,
                                full_feature_names: bool = False, run_id: str | None = None,
                                timestamp_column: str | None = None) -> TrainingDataset:
        """Point-in-time-correct training data; see
        ``RetrievalService.get_historical_features``."""
        return self.retrieval.get_historical_features(
            entity_df, features, feature_set=feature_set, as_of=as_of,
            full_feature_names=full_feature_names, run_id=run_id,
            timestamp_column=timestamp_column)

    def get_features_in_window(self, features_or_view: Any, start: Any, end: Any,
                               as_of: Any = None) -> pa.Table:
        """Every row of one view version with ``start <= event time < end``."""
        return self.retrieval.get_features_in_window(features_or_view, start, end, as_of)

    def reproduce(self, dataset_id: str) -> TrainingDataset:
        """Rebuild a training dataset, bit for bit, from the commits it recorded."""
        return self.retrieval.reproduce(dataset_id)

    def get_dataset(self, dataset_id: str) -> TrainingDataset:
        """A recorded dataset: its manifest now, its rows rebuilt on first use."""
        return self.retrieval.get_dataset(dataset_id)

    # -- online serving ----------------------------------------------------------------------
    def materialize(self, start: Any = None, end: Any = None, *,
                    views: Sequence[str] | None = None,
                    progress: bool = False) -> MaterializeResult:
        """Load the latest value per key in [start, end] into the online store."""
        return self.materialization.materialize(start, end, views=views, progress=progress)

    def materialize_incremental(self, end: Any = None, *, views: Sequence[str] | None = None,
                                progress: bool = False) -> MaterializeResult:
        """Load everything not yet loaded up to ``end`` (default now)."""
        return self.materialization.materialize_incremental(end, views=views,
                                                            progress=progress)

    def get_online_features(self, features: Any = None, entity_rows: Any = None, *,
                            feature_set: str | None = None, full_feature_names: bool = False,
                            deployment: str | None = None, model: str | None = None,
                            fill_defaults: bool = False,
                            request_data: Mapping[str, Any] | None = None) -> OnlineResponse:
        """A feature vector per entity row, with a status, version and commit per value;
        request-time features are computed from ``request_data`` (request value -> one
        value, or a list with one per row) and their inputs."""
        return self.online.get_online_features(
            features, entity_rows, feature_set=feature_set,
            full_feature_names=full_feature_names, deployment=deployment, model=model,
            fill_defaults=fill_defaults, request_data=request_data)

    def push(self, view: str, rows: Any, *, version: int | None = None,
             flush: bool = False, principal: str | None = None) -> str:
        """Validate rows, make them durable and write them online now; they land offline
        as commits. Returns the id of the commit the rows belong to, recorded as pushed
        by ``principal`` (default: the store's actor)."""
        return self.online.push(view, rows, version=version, flush=flush,
                                principal=principal)

    def flush_pushes(self) -> builtins.list[CommitRecord]:
        """Land every buffered push offline now; returns the commits written."""
        return self.online.flush()

    # -- tracking ----------------------------------------------------------------------------
    def create_experiment(self, name: str, description: str = "",
                          tags: Mapping[str, str] | None = None, *,
                          exist_ok: bool = True) -> Experiment:
        """An experiment (the existing one of that name with ``exist_ok``)."""
        return self.tracking.create_experiment(name, description, tags, exist_ok=exist_ok)

    def start_run(self, experiment: str | None = None, *,
                  params: Mapping[str, Any] | None = None,
                  tags: Mapping[str, Any] | None = None, name: str | None = None,
                  parent_run_id: str | None = None, mlflow_run_id: str | None = None,
                  source: str | None = None) -> Run:
        """A run context: ingestions and retrievals inside it are linked to the run."""
        return self.tracking.start_run(experiment, params=params, tags=tags, name=name,
                                       parent_run_id=parent_run_id,
                                       mlflow_run_id=mlflow_run_id, source=source)

    def get_run(self, run_id: str) -> RunRecord:
        """A run as stored now."""
        return self.tracking.get_run(run_id)

    def list_runs(self, *, experiment: str | None = None, feature_version: str | None = None,
                  metric: str | tuple[str, str, float] | None = None,
                  status: str | None = None, limit: int | None = None
                  ) -> builtins.list[RunRecord]:
        """Runs, filtered by experiment, feature version read, metric or status."""
        return self.tracking.list_runs(experiment=experiment, feature_version=feature_version,
                                       metric=metric, status=status, limit=limit)

    def compare_runs(self, run_a: str, run_b: str) -> RunComparison:
        """Params, metrics and feature versions of two runs side by side."""
        return self.tracking.compare_runs(run_a, run_b)

    def get_model(self, model: str) -> ModelVersion:
        """A model version by ``mdl_`` id, ``name@N``, ``name`` or ``dep_`` id."""
        return self.tracking.get_model(model)

    def list_models(self, name: str | None = None) -> builtins.list[ModelVersion]:
        """Model versions (of one model, if given)."""
        return self.tracking.list_models(name)

    def get_model_features(self, model: str, entity_rows: Any, *,
                           deployment: str | None = None, full_feature_names: bool = False,
                           fill_defaults: bool = False) -> OnlineResponse:
        """The model's input vector for ``entity_rows``, read online; a ``dep_`` id (as
        ``model`` or ``deployment``) counts the read in that deployment's usage."""
        return self.online.model_features(model, entity_rows, deployment=deployment,
                                          full_feature_names=full_feature_names,
                                          fill_defaults=fill_defaults)

    def batch_features(self, model: str, entity_df: Any, *, as_of: Any = None,
                       full_feature_names: bool = False, run_id: str | None = None,
                       timestamp_column: str | None = None) -> TrainingDataset:
        """The model's input for ``entity_df``, point in time, without naming features."""
        return self.tracking.batch_features(model, entity_df, as_of=as_of,
                                            full_feature_names=full_feature_names,
                                            run_id=run_id, timestamp_column=timestamp_column)

    def score_batch(self, model: str, entity_df: Any, *,
                    loader: Callable[[str], Any] | None = None, as_of: Any = None,
                    run_id: str | None = None, timestamp_column: str | None = None,
                    prediction_column: str = "prediction") -> ScoredBatch:
        """Predictions for ``entity_df`` beside its rows and the model's features (point in
        time), the model loaded through MLflow's pyfunc flavour or by ``loader``."""
        return self.tracking.score_batch(model, entity_df, loader=loader, as_of=as_of,
                                         run_id=run_id, timestamp_column=timestamp_column,
                                         prediction_column=prediction_column)

    def deploy(self, model: str, environment: str = "production", *,
               exceptions: Mapping[str, str] | None = None, description: str = "",
               allow_null_features: str | None = None) -> Deployment:
        """Deploy a model version with its feature set and a frozen lineage snapshot."""
        return self.tracking.deploy(model, environment, exceptions=exceptions,
                                    description=description,
                                    allow_null_features=allow_null_features)

    def undeploy(self, deployment_id: str, *, reason: str | None = None) -> Deployment:
        """End a deployment."""
        return self.tracking.undeploy(deployment_id, reason=reason)

    def get_deployment(self, deployment_id: str) -> Deployment:
        """One deployment by id."""
        return self.tracking.get_deployment(deployment_id)

    def deployments(self, *, environment: str | None = None, model: str | None = None,
                    active_only: bool = False) -> builtins.list[Deployment]:
        """Deployment history, newest first."""
        return self.tracking.deployments(environment=environment, model=model,
                                         active_only=active_only)

    # -- data quality ------------------------------------------------------------------------
    def set_quality_policy(self, view: str,
                           policy: Mapping[str, Any] | QualityPolicy | None
                           ) -> QualityPolicy | None:
        """Set (None: remove) ``view``'s quality policy: the baseline every new commit is
        compared with, drift thresholds, and what drift or a validation failure rate does
        (alert, quarantine); see ``featureledger.quality.policy``. Audited."""
        return self.quality.set_policy(view, policy)

    def quality_policy(self, view: str) -> QualityPolicy | None:
        """``view``'s quality policy, or None."""
        return self.quality.policy(view)

    def drift(self, view: str, *, baseline: str = "previous", current: str = "latest",
              version: int | None = None, exact: bool = False,
              features: Sequence[str] | None = None,
              thresholds: Mapping[str, Any] | None = None) -> DriftReport:
        """Per-feature drift of ``view`` from ``baseline`` to ``current`` (``previous``,
        ``commits:A..B``, ``window:START..END``, ``dataset:DS_ID`` ...), from the stored
        profiles, or with ``exact`` from the rows."""
        return self.quality.drift(view, baseline=baseline, current=current, version=version,
                                  exact=exact, features=features, thresholds=thresholds)

    def quality_checks(self, view: str | None = None, *,
                       commit_ids: Sequence[str] | None = None,
                       limit: int | None = None) -> builtins.list[QualityCheck]:
        """The stored quality checks of commits, newest first."""
        return self.quality.checks(view, commit_ids=commit_ids, limit=limit)

    def schema_drift(self, view: str, data: Any = None, *, version: int | None = None,
                     column_map: dict[str, str | None] | None = None,
                     source_name: str | None = None) -> SchemaDriftReport:
        """How ``data``'s columns differ from ``view``'s definition (added, missing,
        renamed-looking, retyped), each with what to do; nothing is written."""
        return self.ingestion.schema_drift(view, data, version=version,
                                           column_map=column_map, source_name=source_name)

    def alerts(self, *, status: str | None = None, subject: str | None = None,
               limit: int | None = None) -> builtins.list[Alert]:
        """Alerts, newest first (``status``: ``open`` or ``acknowledged``)."""
        return self.alerting.alerts(status=status, subject=subject, limit=limit)

    def acknowledge_alert(self, alert_id: str, reason: str | None = None) -> Alert:
        """Acknowledge an alert (audited); a new occurrence opens a new one."""
        return self.alerting.acknowledge(alert_id, reason)

    def rollback_data(self, view: str, *, to_commit: str | None = None, to_time: Any = None,
                      reason: str) -> builtins.list[CommitRecord]:
        """Roll ``view``'s data back to commit ``to_commit`` or commit time ``to_time``:
        later commits are rolled back (audited, in lineage; the online store follows;
        nothing deleted)."""
        return self.ingestion.rollback_data(view, to_commit=to_commit, to_time=to_time,
                                            reason=reason)

    def rollback_definition(self, view: str, to_version: int, *, reason: str) -> Plan:
        """Make version ``to_version``'s definition current again, as a new version."""
        return self.applying.rollback_definition(view, to_version, reason=reason)

    def scoreboard(self, *, views: Sequence[str] | None = None,
                   commits: int = 5) -> Scoreboard:
        """Quality KPIs per view, its last ``commits`` commits, experiment and
        deployment: validation pass rate, drift status, freshness, completeness, open
        alerts."""
        return self.scoring.scoreboard(views=views, commits=commits)

    def training_bias(self, dataset_id: str, *, population: str = "previous:1000000",
                      exact: bool = False) -> SkewReport:
        """Distributions and entity coverage of a training dataset against the
        population (a baseline spec of each view it read)."""
        return self.skew_service.training_bias(dataset_id, population=population,
                                               exact=exact)

    def serving_skew(self, deployment: str, *, since: Any = None) -> SkewReport:
        """Served values sampled into the feature log against the deployed model's
        training data."""
        return self.skew_service.serving_skew(deployment, since=since)

    # -- lineage -----------------------------------------------------------------------------
    def lineage(self, node: str, *, direction: Direction = "both", depth: int | None = None,
                describe: bool = True) -> LineageGraph:
        """The lineage graph around ``node`` (upstream, downstream or both)."""
        return self.lineage_service.lineage(node, direction=direction, depth=depth,
                                            describe=describe)

    def impact(self, node: str, *, commit_status: str | None = None) -> ImpactReport:
        """Deployments and models that read ``node`` (a view version or a commit)."""
        return self.lineage_service.impact(node, commit_status=commit_status)

    def reconcile(self, *, deep: bool = False) -> ReconcileReport:
        """Check every commit, dataset and model artifact and every lineage reference;
        with ``deep`` also the files' digests."""
        return self.lineage_service.reconcile(deep=deep)

    # -- audit ------------------------------------------------------------------------------
    @functools.cached_property
    def auditing(self) -> AuditService:
        """The audit trail: entries and the chain's verification."""
        from featureledger.governance.audit import AuditService

        return self.ctx.part(AuditService)

    def audit_trail(self, *, kind: str | None = None, object_id: str | None = None,
                    action: str | None = None, actor: str | None = None,
                    decision: str | None = None, since: int | None = None,
                    limit: int = 1000) -> builtins.list[AuditEntry]:
        """The newest ``limit`` audit entries matching every filter given, newest first."""
        return self.auditing.audit_trail(kind=kind, object_id=object_id, action=action,
                                         actor=actor, decision=decision, since=since,
                                         limit=limit)

    def verify_audit(self, *, key: str | None = None,
                     anchor: str | None = None) -> AuditVerification:
        """Verify the audit hash chain; names the first edited, deleted, inserted or
        reordered entry."""
        return self.auditing.verify_audit(key=key, anchor=anchor)
