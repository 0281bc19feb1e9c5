"""featureledger: a feature store with experiment tracking and model lineage built in.

>>> import featureledger
>>> sorted(featureledger.__all__) == featureledger.__all__
True
"""

from typing import TYPE_CHECKING

from featureledger.model.lazy import lazy_names as _lazy_names

__version__ = "0.1.0"

# Everything is loaded on first use, so `import featureledger` (and so every CLI command,
# `featureledger --help` first) stays light: no pydantic, pyarrow, DuckDB or SQLAlchemy
# until a name that needs them is used.
_LAZY = {
    "Aggregation": "featureledger.model.definitions",
    "Alert": "featureledger.registry.quality",
    "AuditEntry": "featureledger.registry.audit",
    "AuditVerification": "featureledger.registry.audit",
    "CatalogEntry": "featureledger.governance.catalog",
    "CommitRecord": "featureledger.registry.commits",
    "DataFrameSource": "featureledger.model.definitions",
    "DefinitionRecord": "featureledger.registry.definitions",
    "Deployment": "featureledger.registry.tracking_records",
    "DeprecatedFeatureWarning": "featureledger.errors",
    "Deprecation": "featureledger.registry.lifecycle",
    "DriftReport": "featureledger.quality.drift",
    "Entity": "featureledger.model.definitions",
    "Experiment": "featureledger.registry.tracking_records",
    "Expiry": "featureledger.governance.retention",
    "FeatureDataWarning": "featureledger.errors",
    "FeatureDrift": "featureledger.quality.drift",
    "FeatureLedgerError": "featureledger.errors",
    "FeatureRef": "featureledger.model.references",
    "FeatureSet": "featureledger.model.definitions",
    "FeatureStatus": "featureledger.online.response",
    "FeatureStore": "featureledger.store",
    "FeatureView": "featureledger.model.definitions",
    "Field": "featureledger.model.definitions",
    "FileSource": "featureledger.model.definitions",
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
    "RequestFeatureView": "featureledger.model.definitions",
    "RetentionPolicy": "featureledger.registry.lifecycle",
    "RetentionReport": "featureledger.governance.retention",
    "RowCheck": "featureledger.model.definitions",
    "Run": "featureledger.tracking.run",
    "RunComparison": "featureledger.registry.tracking_records",
    "RunRecord": "featureledger.registry.tracking_records",
    "SchemaDriftReport": "featureledger.quality.schema_drift",
    "Scoreboard": "featureledger.quality.scoreboard",
    "ScoredBatch": "featureledger.tracking.scoring",
    "SkewReport": "featureledger.quality.skew",
    "TrainingDataset": "featureledger.offline.dataset",
    "Transformation": "featureledger.model.definitions",
    "new_id": "featureledger.model.ids",
    "parse_reference": "featureledger.model.references",
}

if TYPE_CHECKING:
    from featureledger.errors import (
        DeprecatedFeatureWarning,
        FeatureDataWarning,
        FeatureLedgerError,
    )
    from featureledger.governance.catalog import CatalogEntry
    from featureledger.governance.policy import Policy
    from featureledger.governance.report import GovernanceReport
    from featureledger.governance.retention import Expiry, RetentionReport
    from featureledger.ingest.pipeline import IngestionResult
    from featureledger.lineage.graph import LineageGraph
    from featureledger.lineage.reconcile import ReconcileReport
    from featureledger.lineage.service import ImpactReport
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
    from featureledger.store import FeatureStore
    from featureledger.tracking.run import Run
    from featureledger.tracking.scoring import ScoredBatch


__getattr__, __dir__ = _lazy_names(globals(), _LAZY, "featureledger")


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
