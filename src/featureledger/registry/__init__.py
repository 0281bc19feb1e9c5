"""The registry: definitions, commits, datasets, runs, lineage and audit, in SQL."""

from __future__ import annotations

from pathlib import Path

from featureledger.registry.commits import CommitRecord, CommitRepository
from featureledger.registry.datasets import DatasetRecord, DatasetRepository
from featureledger.registry.definitions import (
    DefinitionRecord,
    DefinitionRepository,
    Plan,
    PlanItem,
)
from featureledger.registry.engine import DEFAULT_PROJECT, RegistryDB
from featureledger.registry.lifecycle import LifecycleRepository
from featureledger.registry.models import ModelRepository
from featureledger.registry.policies import PolicyRepository
from featureledger.registry.runs import RunRepository
from featureledger.registry.usage import UsageRecorder


class Registry:
    """All registry repositories over one database, seen as one project: several projects
    may share the database, and each sees only its own rows."""

    def __init__(self, url: str, *, project: str = DEFAULT_PROJECT,
                 actor: str | None = None, source_base: Path | None = None) -> None:
        self.db = RegistryDB(url, project=project, actor=actor)
        self.definitions = DefinitionRepository(self.db, source_base=source_base)
        self.runs = RunRepository(self.db)
        self.models = ModelRepository(self.db)
        # online reads by deployment are counted here and written in batches
        self.usage = UsageRecorder(self.db)
        self.commits = CommitRepository(self.db)
        self.datasets = DatasetRepository(self.db)
        self.policies = PolicyRepository(self.db)
        # retention policies, deprecations (and the gate reads pass), hypotheses
        self.lifecycle = LifecycleRepository(self.db)

    @property
    def actor(self) -> str:
        return self.db.actor

    @property
    def project(self) -> str:
        return self.db.project

    def generation(self) -> int:
        return self.db.generation()

    def close(self) -> None:
        try:
            self.usage.flush()
            self.lifecycle.gate.flush()
        finally:
            self.db.dispose()


__all__ = [
    "CommitRecord",
    "CommitRepository",
    "DatasetRecord",
    "DatasetRepository",
    "DefinitionRecord", "DefinitionRepository", "Plan", "PlanItem", "Registry", "RegistryDB"]
