"""Sampling bias of training sets, and training-serving skew.

* :meth:`SkewService.training_bias`: a training dataset's feature distributions against
  the population (a baseline of each view it read, by default every committed commit),
  with the drift statistics of :mod:`featureledger.quality.drift`, and its entity
  coverage: the share of the population's entities the dataset has rows for, and the
  dataset's entities the population does not know.
* :meth:`SkewService.serving_skew`: the values served to a deployment, sampled into the
  feature log (:mod:`featureledger.quality.feature_log`), against the deployed model's
  training data (the profiles of the commits its training datasets read).

A skewed feature raises an alert (rule ``bias`` or ``skew``) on the dataset or deployment.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from featureledger.errors import QualityError
from featureledger.model.references import parse_reference
from featureledger.model.timeutil import to_us
from featureledger.quality.alerts import AlertService
from featureledger.quality.baselines import (
    Baseline,
    data_summaries,
    profile_summaries,
    resolve,
    table_summaries,
)
from featureledger.quality.drift import FeatureDrift, Thresholds, compare
from featureledger.registry.quality import QualityRepository

if TYPE_CHECKING:
    from featureledger.context import StoreContext


@dataclass(frozen=True)
class SkewReport:
    """Per-feature drift statistics of a sample against a reference, and coverage."""

    kind: str  # "bias" (training set vs population) or "skew" (served vs training)
    subject: str  # the dataset or deployment id
    reference: dict[str, Any]
    sample_rows: int
    features: list[FeatureDrift] = field(default_factory=list)
    coverage: dict[str, Any] = field(default_factory=dict)

    @property
    def skewed(self) -> list[str]:
        return [f.feature for f in self.features if f.drifted]

    @property
    def status(self) -> str:
        return "skew" if self.skewed else "ok"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "subject": self.subject, "reference": self.reference,
                "sample_rows": self.sample_rows, "status": self.status,
                "skewed": self.skewed, "features": [f.to_dict() for f in self.features],
                "coverage": self.coverage}


def _column_for(table_names: list[str], view: str, version: int | None, feature: str
                ) -> str | None:
    for name in (feature, f"{view}@{version}__{feature}", f"{view}__{feature}"):
        if name in table_names:
            return name
    return None


class SkewService:
    def __init__(self, ctx: StoreContext) -> None:
        self.ctx = ctx
        self.repo = QualityRepository(ctx.registry.db)

    def _alert(self, report: SkewReport, node: str) -> None:
        if report.skewed:
            self.ctx.part(AlertService).raise_alert(
                rule=report.kind, severity="warning", subject=report.subject,
                message=f"{report.kind}: " + ", ".join(report.skewed),
                evidence={"features": [f.to_dict() for f in report.features if f.drifted],
                          "coverage": report.coverage},
                lineage_node=node)

    def training_bias(self, dataset_id: str, *, population: str = "previous:1000000",
                      exact: bool = False) -> SkewReport:
        """A training dataset's distributions and entity coverage against the population."""
        from featureledger.offline.retrieval import RetrievalService

        reg = self.ctx.registry
        ds = reg.datasets.get(dataset_id)
        table = self.ctx.part(RetrievalService).get_dataset(dataset_id).to_arrow()
        by_view: dict[tuple[str, int | None], list[str]] = {}
        for ref in ds.features:
            r = parse_reference(ref)
            by_view.setdefault((r.view, r.version), []).append(r.feature)
        features: list[FeatureDrift] = []
        coverage: dict[str, Any] = {}
        reference: dict[str, Any] = {}
        for (view, version), feats in by_view.items():
            base = resolve(self.ctx, view, population, version=version)
            if not base.commits:
                raise QualityError(f"population {population!r} of {view} holds no commit")
            reference[f"{base.view}@{base.version}"] = base.to_dict()
            pop = data_summaries(self.ctx, base, feats) if exact else \
                profile_summaries(base, feats)
            cols = {f: _column_for(table.column_names, view, base.version, f) for f in feats}
            sample = table_summaries(
                table.select([c for c in cols.values() if c]).rename_columns(
                    [f for f, c in cols.items() if c]), feats)
            t = Thresholds()
            features += compare(pop, sample, feats, {}, t)
            coverage[f"{base.view}@{base.version}"] = self._coverage(base, table)
        report = SkewReport("bias", dataset_id, reference, table.num_rows, features, coverage)
        self._alert(report, dataset_id)
        return report

    def _coverage(self, base: Baseline, table: Any) -> dict[str, Any]:
        from featureledger.offline.engine import ViewScan

        reg = self.ctx.registry
        fv = reg.definitions.view(base.view, base.version).definition
        keys = list(fv.join_keys)
        if not all(k in table.column_names for k in keys):
            return {"join_keys": keys, "note": "the dataset has no column for every key"}
        chain = reg.definitions.data_chain(base.view, base.version)
        scan = ViewScan.of(
            join_keys=keys, timestamp_field=fv.timestamp_field,
            created_field=fv.created_timestamp_field, features=[], output_names=[],
            dtypes=[], ttl_us=None, store=self.ctx.offline_store, commits=base.commits,
            chain=chain, tie_break=False, event_range=None)
        with self.ctx.offline_store.reading(base.commits):
            population = set(self.ctx.engine.distinct_keys(scan))
        sample = set(zip(*(table.column(k).to_pylist() for k in keys), strict=True))
        covered = len(sample & population)
        return {"join_keys": keys, "population_entities": len(population),
                "dataset_entities": len(sample), "covered_entities": covered,
                "coverage": covered / len(population) if population else None,
                "unknown_entities": len(sample - population)}

    def serving_skew(self, deployment: str, *, since: Any = None) -> SkewReport:
        """Values served to ``deployment`` (or a model), sampled in the feature log,
        against the deployed model's training data."""
        import pyarrow as pa

        reg = self.ctx.registry
        model = reg.models.get(deployment)
        is_dep = deployment.startswith("dep_")
        rows = self.repo.logged_features(
            deployment_id=deployment if is_dep else None,
            model_id=None if is_dep else deployment,
            since=to_us(since) if since is not None else None)
        if not rows:
            raise QualityError(
                f"the feature log has no sampled request for {deployment}; set "
                "quality.feature_log_sample_rate in featureledger.yaml and serve requests "
                "through the deployment first")
        ds_ids = [d for ids in model.datasets.values() for d in ids]
        if not ds_ids:
            raise QualityError(f"model {model.ref} has no training dataset to compare with; "
                               "log it with its training dataset")
        # the commits the training sets read, by id (not every commit of each view)
        read = reg.commits.get_many(sorted({c for d in ds_ids
                                            for c in reg.datasets.get(d).commit_ids}))
        features: list[FeatureDrift] = []
        reference: dict[str, Any] = {"model": model.ref, "datasets": ds_ids}
        for ref in model.features:
            r = parse_reference(ref)
            base = resolve(self.ctx, r.view, "latest", version=r.version)
            chain = {p.version for p in reg.definitions.data_chain(base.view, base.version)}
            commits = [c for c in read if c.view_name == base.view and c.view_version in chain]
            training = profile_summaries(
                Baseline("training", base.view, base.version, commits), [r.feature])
            values = [row.get(ref) for row in rows]
            served = table_summaries(pa.table({r.feature: pa.array(values)}), [r.feature])
            for f in compare(training, served, [r.feature], {}, Thresholds()):
                features.append(FeatureDrift(ref, f.kind, f.drifted, f.reasons, f.metrics,
                                             f.baseline_rows, f.current_rows, f.approximate))
        report = SkewReport("skew", deployment, reference, len(rows), features)
        self._alert(report, deployment)
        return report
