"""featureledger: a feature store with experiment tracking and model lineage built in.

>>> import featureledger
>>> sorted(featureledger.__all__) == featureledger.__all__
True
"""

from typing import TYPE_CHECKING, Any

from featureledger.errors import (
    DeprecatedFeatureWarning,
    FeatureDataWarning,
    FeatureLedgerError,
)
from featureledger.model.definitions import (
    Aggregation,
    DataFrameSource,
    Entity,
    FeatureSet,
    FeatureView,
    Field,
    FileSource,
    RequestFeatureView,
    RowCheck,
    Transformation,
)
from featureledger.model.ids import new_id
from featureledger.model.references import FeatureRef, parse_reference
from featureledger.store import FeatureStore

__version__ = "0.1.0"

# Result types: importable from here, loaded on first use so `import featureledger` stays
# light (no pyarrow, DuckDB or SQLAlchemy until a store is opened).
_LAZY = {
    "Alert": "featureledger.registry.quality",
    "AuditEntry": "featureledger.registry.audit",
    "AuditVerification": "featureledger.registry.audit",
    "CatalogEntry": "featureledger.governance.catalog",
    "CommitRecord": "featureledger.registry.commits",
    "DefinitionRecord": "featureledger.registry.definitions",
    "Deployment": "featureledger.registry.tracking_records",
    "Deprecation": "featureledger.registry.lifecycle",
    "DriftReport": "featureledger.quality.drift",
    "Experiment": "featureledger.registry.tracking_records",
    "Expiry": "featureledger.governance.retention",
    "FeatureDrift": "featureledger.quality.drift",
    "FeatureStatus": "featureledger.online.response",
    "GcReport": "featureledger.offline.storage",
    "GovernanceReport": "featureledger.governance.report",
    "ImpactReport": "featureledger.lineage.service",
    "IngestionResult": "featureledger.ingest.pipeline",
    "LineageGraph": "featureledger.lineage.graph",
    "MaterializeResult": "featureledger.online.materialization",
    "ModelVersion": "featureledger.registry.tracking_records",
    "OnlineResponse": "featureledger.online.response",
    "Plan": "featureledger.registry.definitions",
    "PlanItem": "featureledger.registry.definitions",
    "Policy": "featureledger.governance.policy",
    "PolicyRecord": "featureledger.registry.policies",
    "QualityCheck": "featureledger.registry.quality",
    "QualityPolicy": "featureledger.quality.policy",
    "ReconcileReport": "featureledger.lineage.reconcile",
    "RetentionPolicy": "featureledger.registry.lifecycle",
    "RetentionReport": "featureledger.governance.retention",
    "Run": "featureledger.tracking.run",
    "RunComparison": "featureledger.registry.tracking_records",
    "RunRecord": "featureledger.registry.tracking_records",
    "SchemaDriftReport": "featureledger.quality.schema_drift",
    "Scoreboard": "featureledger.quality.scoreboard",
    "SkewReport": "featureledger.quality.skew",
    "ScoredBatch": "featureledger.tracking.scoring",
    "TrainingDataset": "featureledger.offline.dataset",
}

if TYPE_CHECKING:
    from featureledger.governance.catalog import CatalogEntry
    from featureledger.governance.policy import Policy
    from featureledger.governance.report import GovernanceReport
    from featureledger.governance.retention import Expiry, RetentionReport
    from featureledger.ingest.pipeline import IngestionResult
    from featureledger.lineage.graph import LineageGraph
    from featureledger.lineage.reconcile import ReconcileReport
    from featureledger.lineage.service import ImpactReport
    from featureledger.offline.dataset import TrainingDataset
    from featureledger.offline.storage import GcReport
    from featureledger.online.materialization import MaterializeResult
    from featureledger.online.response import FeatureStatus, OnlineResponse
    from featureledger.quality.drift import DriftReport, FeatureDrift
    from featureledger.quality.policy import QualityPolicy
    from featureledger.quality.schema_drift import SchemaDriftReport
    from featureledger.quality.scoreboard import Scoreboard
    from featureledger.quality.skew import SkewReport
    from featureledger.registry.audit import AuditEntry, AuditVerification
    from featureledger.registry.commits import CommitRecord
    from featureledger.registry.definitions import DefinitionRecord, Plan, PlanItem
    from featureledger.registry.lifecycle import Deprecation, RetentionPolicy
    from featureledger.registry.policies import PolicyRecord
    from featureledger.registry.quality import Alert, QualityCheck
    from featureledger.registry.tracking_records import (
        Deployment,
        Experiment,
        ModelVersion,
        RunComparison,
        RunRecord,
    )
    from featureledger.tracking.run import Run
    from featureledger.tracking.scoring import ScoredBatch


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'featureledger' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "Aggregation",
    "Alert",
    "AuditEntry",
    "AuditVerification",
    "CatalogEntry",
    "CommitRecord",
    "DataFrameSource",
    "DefinitionRecord",
    "Deployment",
    "DeprecatedFeatureWarning",
    "Deprecation",
    "DriftReport",
    "Entity",
    "Experiment",
    "Expiry",
    "FeatureDataWarning",
    "FeatureDrift",
    "FeatureLedgerError",
    "FeatureRef",
    "FeatureSet",
    "FeatureStatus",
    "FeatureStore",
    "FeatureView",
    "Field",
    "FileSource",
    "GcReport",
    "GovernanceReport",
    "ImpactReport",
    "IngestionResult",
    "LineageGraph",
    "MaterializeResult",
    "ModelVersion",
    "OnlineResponse",
    "Plan",
    "PlanItem",
    "Policy",
    "PolicyRecord",
    "QualityCheck",
    "QualityPolicy",
    "ReconcileReport",
    "RequestFeatureView",
    "RetentionPolicy",
    "RetentionReport",
    "RowCheck",
    "Run",
    "RunComparison",
    "RunRecord",
    "SchemaDriftReport",
    "Scoreboard",
    "ScoredBatch",
    "SkewReport",
    "TrainingDataset",
    "Transformation",
    "new_id",
    "parse_reference",
]
