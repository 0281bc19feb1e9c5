"""The facade is typed and thin: each method's signature is its service's, every keyword
is spelled out, and the package exports exactly its public names."""

from __future__ import annotations

import inspect
import subprocess
import sys
import typing
from pathlib import Path

import pytest

import featureledger
from featureledger.definitions.apply import ApplyService
from featureledger.derive import DeriveService
from featureledger.governance.access import AccessControl
from featureledger.governance.audit import AuditService
from featureledger.governance.catalog import CatalogService
from featureledger.governance.deprecation import DeprecationService
from featureledger.governance.report import GovernanceService
from featureledger.governance.retention import RetentionService
from featureledger.ingest.pipeline import IngestionService
from featureledger.lineage.service import LineageService
from featureledger.offline.compaction import CompactionService
from featureledger.offline.retrieval import RetrievalService
from featureledger.online.materialization import MaterializationService
from featureledger.online.service import OnlineService
from featureledger.quality.alerts import AlertService
from featureledger.quality.scoreboard import ScoreboardService
from featureledger.quality.service import QualityService
from featureledger.quality.skew import SkewService
from featureledger.store import FeatureStore
from featureledger.tracking.service import TrackingService

# facade method -> (service class, service method); the facade forwards to exactly that
FORWARDS = {
    "ingest": (IngestionService, "ingest"),
    "commits": (IngestionService, "commits"),
    "get_commit": (IngestionService, "get_commit"),
    "quarantine": (IngestionService, "quarantine"),
    "rollback": (IngestionService, "rollback"),
    "restore": (IngestionService, "restore"),
    "gc": (IngestionService, "gc"),
    "derive": (DeriveService, "derive"),
    "stale": (DeriveService, "stale"),
    "compact": (CompactionService, "compact"),
    "segments": (CompactionService, "segments"),
    "retire_segment": (CompactionService, "retire"),
    "get_historical_features": (RetrievalService, "get_historical_features"),
    "get_features_in_window": (RetrievalService, "get_features_in_window"),
    "reproduce": (RetrievalService, "reproduce"),
    "get_dataset": (RetrievalService, "get_dataset"),
    "materialize": (MaterializationService, "materialize"),
    "materialize_incremental": (MaterializationService, "materialize_incremental"),
    "get_online_features": (OnlineService, "get_online_features"),
    "push": (OnlineService, "push"),
    "flush_pushes": (OnlineService, "flush"),
    "get_model_features": (OnlineService, "model_features"),
    "create_experiment": (TrackingService, "create_experiment"),
    "start_run": (TrackingService, "start_run"),
    "get_run": (TrackingService, "get_run"),
    "list_runs": (TrackingService, "list_runs"),
    "compare_runs": (TrackingService, "compare_runs"),
    "get_model": (TrackingService, "get_model"),
    "list_models": (TrackingService, "list_models"),
    "score_batch": (TrackingService, "score_batch"),
    "batch_features": (TrackingService, "batch_features"),
    "deploy": (TrackingService, "deploy"),
    "undeploy": (TrackingService, "undeploy"),
    "get_deployment": (TrackingService, "get_deployment"),
    "deployments": (TrackingService, "deployments"),
    "lineage": (LineageService, "lineage"),
    "impact": (LineageService, "impact"),
    "reconcile": (LineageService, "reconcile"),
    "deprecate": (DeprecationService, "deprecate"),
    "retire": (DeprecationService, "retire"),
    "approve_deprecation": (DeprecationService, "approve"),
    "withdraw_deprecation": (DeprecationService, "withdraw"),
    "deprecations": (DeprecationService, "deprecations"),
    "set_retention": (RetentionService, "set_policy"),
    "retention_backlog": (RetentionService, "backlog"),
    "apply_retention": (RetentionService, "apply"),
    "search": (CatalogService, "search"),
    "catalog_entries": (CatalogService, "entries"),
    "catalog_show": (CatalogService, "show"),
    "leaderboard": (CatalogService, "leaderboard"),
    "governance_report": (GovernanceService, "report"),
    "audit_trail": (AuditService, "audit_trail"),
    "verify_audit": (AuditService, "verify_audit"),
    "plan": (ApplyService, "plan"),
    "apply": (ApplyService, "apply"),
    "policy": (AccessControl, "policy"),
    "rollback_definition": (ApplyService, "rollback_definition"),
    "rollback_data": (IngestionService, "rollback_data"),
    "schema_drift": (IngestionService, "schema_drift"),
    "set_quality_policy": (QualityService, "set_policy"),
    "quality_policy": (QualityService, "policy"),
    "drift": (QualityService, "drift"),
    "quality_checks": (QualityService, "checks"),
    "alerts": (AlertService, "alerts"),
    "acknowledge_alert": (AlertService, "acknowledge"),
    "scoreboard": (ScoreboardService, "scoreboard"),
    "training_bias": (SkewService, "training_bias"),
    "serving_skew": (SkewService, "serving_skew"),
}


def _params(fn: typing.Callable[..., object]) -> list[tuple[str, object, object]]:
    sig = inspect.signature(fn)
    return [(p.name, p.kind, p.default) for p in sig.parameters.values() if p.name != "self"]


@pytest.mark.parametrize("name", sorted(FORWARDS))
def test_facade_signature_is_the_services(name: str) -> None:
    cls, method = FORWARDS[name]
    facade, service = _params(getattr(FeatureStore, name)), _params(getattr(cls, method))
    if name in ("plan", "apply"):
        # the facade defaults the definitions to the repository's own
        assert facade[0][:2] == service[0][:2] and facade[0][2] is None
        facade, service = facade[1:], service[1:]
    assert facade == service


def test_no_facade_method_takes_arbitrary_keywords_or_returns_any() -> None:
    hints_of = {}
    for name, fn in inspect.getmembers(FeatureStore, inspect.isfunction):
        if name.startswith("_"):
            continue
        sig = inspect.signature(fn)
        kinds = {p.kind for p in sig.parameters.values()}
        assert inspect.Parameter.VAR_KEYWORD not in kinds, name
        assert sig.return_annotation is not inspect.Signature.empty, name
        assert sig.return_annotation != "Any", name
        assert fn.__doc__, f"{name} has no docstring"
        hints_of[name] = sig.return_annotation
    assert set(FORWARDS) <= set(hints_of)


def test_a_mistyped_keyword_is_a_type_error_for_mypy(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from featureledger import FeatureStore\n"
        "s = FeatureStore('.')\n"
        "s.get_historical_features({}, ['v:f'], as_off='2024-01-01')\n"
        "s.ingest('v', None, mdoe='strict')\n")
    mypy = Path(sys.executable).with_name("mypy")
    out = subprocess.run([str(mypy), "--no-incremental", "--follow-imports=silent",
                          str(probe)], capture_output=True, text=True, check=False)
    assert out.returncode == 1, out.stdout
    assert 'Unexpected keyword argument "as_off"' in out.stdout
    assert 'Unexpected keyword argument "mdoe"' in out.stdout


def test_all_names_the_real_public_surface() -> None:
    assert featureledger.__all__ == sorted(featureledger.__all__)
    for name in featureledger.__all__:
        assert getattr(featureledger, name) is not None
    public = {n for n in dir(featureledger) if not n.startswith("_")}
    modules = {n for n in public if inspect.ismodule(getattr(featureledger, n))}
    # everything public that is not a subpackage is exported, and nothing else
    assert public - modules - {"TYPE_CHECKING", "Any"} == set(featureledger.__all__)
    # the result types of the facade are among them
    for result in ("TrainingDataset", "OnlineResponse", "IngestionResult", "Run", "RunRecord",
                   "ModelVersion", "Deployment", "Plan", "CommitRecord", "ReconcileReport"):
        assert result in featureledger.__all__
