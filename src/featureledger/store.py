"""The FeatureStore facade: one object for the whole SDK, delegating every call to a part.

It holds no logic of its own: each method forwards to the service of the part that owns
the operation (registry, ingestion, retrieval, online serving, tracking, lineage). Parts
are built lazily, so a process that only reads definitions never opens the online store.

>>> import tempfile
>>> store = FeatureStore(tempfile.mkdtemp())
>>> from featureledger import Entity, FeatureView, Field
>>> plan = store.apply([
...     Entity(name="driver", join_keys={"driver_id": "int64"}),
...     FeatureView(name="stats", entities=["driver"], fields=[Field(name="trips", dtype="int64")]),
... ])
>>> [(i.name, i.action, i.to_version) for i in plan.items]
[('driver', 'new', 1), ('stats', 'new', 1)]
"""

from __future__ import annotations

import builtins
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from featureledger.config import ProjectConfig, load_config
from featureledger.events import EventBus

if TYPE_CHECKING:
    from featureledger.model.compat import Change
    from featureledger.registry import DefinitionRecord, Plan, Registry


@dataclass
class StoreContext:
    """What every part may use: configuration, the registry, the stores and the event bus.

    Stores open on first use. Parts receive the context, never the facade.
    """

    config: ProjectConfig
    registry: Registry
    events: EventBus = field(default_factory=EventBus)
    _cache: dict[str, Any] = field(default_factory=dict)

    def part(self, name: str, factory: Any) -> Any:
        """The part called ``name``, built by ``factory(self)`` on first use."""
        if name not in self._cache:
            self._cache[name] = factory(self)
        return self._cache[name]

    @property
    def offline_store(self) -> Any:
        from featureledger.offline.storage import open_offline_store

        return self.part("offline_store", open_offline_store)

    @property
    def online_store(self) -> Any:
        from featureledger.online.stores import open_online_store

        return self.part("online_store", open_online_store)

    def close(self) -> None:
        # newest first: services (which may flush into a store) close before the stores
        for part in reversed(list(self._cache.values())):
            close = getattr(part, "close", None)
            if callable(close):
                close()
        self._cache.clear()
        self.registry.close()


def _service(module: str, cls: str) -> Any:
    """A cached property returning the part's service object."""

    def build(self: FeatureStore) -> Any:
        import importlib

        factory = getattr(importlib.import_module(module), cls)
        return self.ctx.part(f"{module}.{cls}", factory)

    return functools.cached_property(build)


class FeatureStore:
    """The featureledger SDK.

    ``FeatureStore(path)`` opens the feature repository at ``path`` (the folder holding
    ``featureledger.yaml``; without one, embedded defaults under ``path/.featureledger``).
    """

    def __init__(self, repo_path: str | Path = ".", *, config: ProjectConfig | None = None,
                 actor: str | None = None) -> None:
        from featureledger.registry import Registry

        self.repo_path = Path(repo_path)
        self.config = config or load_config(self.repo_path)
        registry = Registry(self.config.registry_url, project=self.config.project, actor=actor,
                            source_base=self.config.root)
        self.ctx = StoreContext(self.config, registry)
        # integrations (OpenLineage, MLflow) listen to every part's events from the start
        from featureledger.integrations import attach

        attach(self.ctx)

    @property
    def registry(self) -> Registry:
        return self.ctx.registry

    def close(self) -> None:
        self.ctx.close()

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- definitions --------------------------------------------------------------------
    def load_definitions(self) -> builtins.list[Any]:
        from featureledger.project import load_definitions

        return load_definitions(self.repo_path)

    _applying = _service("featureledger.ingest.migrate", "ApplyService")

    def plan(self, definitions: builtins.list[Any] | None = None, *,
             migrations: dict[str, str] | None = None) -> Plan:
        """What ``apply`` would do, per object, with every change classified and, for each
        new feature-view version, where its data comes from (``item.notes``)."""
        return self._applying.plan(definitions or self.load_definitions(),
                                   migrations=migrations)

    def apply(self, definitions: builtins.list[Any] | None = None, *,
              allow_breaking: str | None = None,
              migrations: dict[str, str] | None = None) -> Plan:
        """Apply definitions (default: the repository's) atomically and idempotently.

        ``migrations`` maps a view name to one SELECT over the relation ``old`` that fills
        a new version which would otherwise start empty (see featureledger.ingest.migrate).
        """
        return self._applying.apply(definitions or self.load_definitions(),
                                    allow_breaking=allow_breaking, migrations=migrations)

    def get_view(self, name: str, version: int | None = None) -> DefinitionRecord:
        return self.registry.definitions.get("feature_view", name, version)

    def get_entity(self, name: str, version: int | None = None) -> DefinitionRecord:
        return self.registry.definitions.get("entity", name, version)

    def get_feature_set(self, name: str, version: int | None = None) -> DefinitionRecord:
        return self.registry.definitions.get("feature_set", name, version)

    def list(self, kind: str | None = None) -> builtins.list[DefinitionRecord]:
        """The latest version of every definition (of one kind, if given)."""
        return self.registry.definitions.list(kind)

    def versions(self, name: str, kind: str = "feature_view") -> builtins.list[DefinitionRecord]:
        return self.registry.definitions.versions(kind, name)

    def diff_versions(self, name: str, a: int, b: int) -> builtins.list[Change]:
        """Classified changes from version ``a`` to version ``b`` of a feature view."""
        from featureledger.model.compat import classify_view_change

        return classify_view_change(self.get_view(name, a).definition,
                                    self.get_view(name, b).definition)

    def deprecate(self, name: str, version: int, reason: str,
                  kind: str = "feature_view") -> DefinitionRecord:
        return self.registry.definitions.set_status(kind, name, version, "deprecated", reason)

    # -- parts (each forwards to the owning service) ----------------------------------------
    _ingestion = _service("featureledger.ingest.pipeline", "IngestionService")
    _retrieval = _service("featureledger.offline.retrieval", "RetrievalService")

    def ingest(self, view: str, data: Any = None, **options: Any) -> Any:
        """Validate and write ``data`` as one commit of ``view``; see IngestionService.ingest."""
        return self._ingestion.ingest(view, data, **options)

    def commits(self, view: str | None = None, **filters: Any) -> builtins.list[Any]:
        return self._ingestion.commits(view, **filters)

    def get_commit(self, commit_id: str) -> Any:
        return self._ingestion.get_commit(commit_id)

    def quarantine(self, commit_id: str, reason: str) -> Any:
        """Hide a commit from retrieval and serving (reversible; audited)."""
        return self._ingestion.quarantine(commit_id, reason)

    def rollback(self, commit_id: str, reason: str) -> Any:
        """Mark a commit rolled back: it is never read again unless restored (audited)."""
        return self._ingestion.rollback(commit_id, reason)

    def restore(self, commit_id: str, reason: str) -> Any:
        return self._ingestion.restore(commit_id, reason)

    def gc(self, **options: Any) -> Any:
        """Remove files that no commit references (left by interrupted ingestions)."""
        return self._ingestion.gc(**options)

    def get_historical_features(self, entity_df: Any, features: Any = None,
                                **options: Any) -> Any:
        """Point-in-time-correct training data; see RetrievalService.get_historical_features."""
        return self._retrieval.get_historical_features(entity_df, features, **options)

    def get_features_in_window(self, features: Any, start: Any, end: Any,
                               **options: Any) -> Any:
        return self._retrieval.get_features_in_window(features, start, end, **options)

    def reproduce(self, dataset_id: str) -> Any:
        """Rebuild a training dataset, bit for bit, from the commits it recorded."""
        return self._retrieval.reproduce(dataset_id)

    def get_dataset(self, dataset_id: str) -> Any:
        return self._retrieval.get_dataset(dataset_id)

    # -- online serving --------------------------------------------------------------------
    _online = _service("featureledger.online.service", "OnlineService")

    def materialize(self, start: Any = None, end: Any = None, **options: Any) -> Any:
        """Load the latest value per key in [start, end] into the online store."""
        return self._online.materialize(start, end, **options)

    def materialize_incremental(self, end: Any = None, **options: Any) -> Any:
        return self._online.materialize_incremental(end, **options)

    def get_online_features(self, features: Any = None, entity_rows: Any = None,
                            **options: Any) -> Any:
        """A feature vector per entity row, with a status, version and commit per value."""
        return self._online.get_online_features(features, entity_rows, **options)

    def push(self, view: str, rows: Any, **options: Any) -> Any:
        """Validate rows and write them online now; they land offline as commits."""
        return self._online.push(view, rows, **options)

    def flush_pushes(self) -> builtins.list[Any]:
        """Land every buffered push offline now; returns the commits written."""
        return self._online.flush()

    # -- tracking --------------------------------------------------------------------------
    _tracking = _service("featureledger.tracking.service", "TrackingService")

    def create_experiment(self, name: str, **options: Any) -> Any:
        return self._tracking.create_experiment(name, **options)

    def start_run(self, experiment: str | None = None, **options: Any) -> Any:
        """A run context: ingestions and retrievals inside it are linked to the run."""
        return self._tracking.start_run(experiment, **options)

    def get_run(self, run_id: str) -> Any:
        return self._tracking.get_run(run_id)

    def list_runs(self, **filters: Any) -> builtins.list[Any]:
        return self._tracking.list_runs(**filters)

    def compare_runs(self, run_a: str, run_b: str) -> Any:
        return self._tracking.compare_runs(run_a, run_b)

    def get_model(self, model: str) -> Any:
        return self._tracking.get_model(model)

    def get_model_features(self, model: str, entity_rows: Any, **options: Any) -> Any:
        """The model's input vector for ``entity_rows``, read online."""
        return self._tracking.get_model_features(model, entity_rows, **options)

    def score_batch(self, model: str, entity_df: Any, **options: Any) -> Any:
        """The model's input for ``entity_df``, point in time, without naming features."""
        return self._tracking.score_batch(model, entity_df, **options)

    def deploy(self, model: str, environment: str = "production", **options: Any) -> Any:
        return self._tracking.deploy(model, environment, **options)

    def undeploy(self, deployment_id: str, **options: Any) -> Any:
        return self._tracking.undeploy(deployment_id, **options)

    # -- lineage ---------------------------------------------------------------------------
    _lineage = _service("featureledger.lineage.service", "LineageService")

    def lineage(self, node: str, **options: Any) -> Any:
        """The lineage graph around ``node`` (upstream, downstream or both)."""
        return self._lineage.lineage(node, **options)

    def impact(self, node: str, **options: Any) -> Any:
        """Deployments and models that read ``node`` (a view version or a commit)."""
        return self._lineage.impact(node, **options)

    def reconcile(self, *, deep: bool = False) -> Any:
        """Check the registry's references and every commit file, dataset entity file and
        local model artifact on disk (existence and size; ``deep=True`` also compares
        every file's digest). Returns a report whose ``problems`` say what to do."""
        return self._lineage.reconcile(deep=deep)
