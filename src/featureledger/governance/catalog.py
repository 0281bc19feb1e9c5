"""The catalog: find and explain views and features.

Every view and every feature (a field of a view) is an entry with its description, owner
(a feature's is its view's), unit, dtype, tags, status and the deprecation in effect, if
any. ``search`` matches text in names, descriptions, tags (keys and values) and owners,
case-insensitively; ``entries`` lists by tag and owner. ``show`` explains one entry:
every version with the experiment and hypothesis it was created for, the retention policy,
the decision log (the reasons given at apply, deprecate, approve, quarantine, rollback,
retention: from the audit trail, so nothing is logged twice) and the leaderboard.

The **leaderboard** of a view version or feature version lists the runs that read it
(through their training sets or their models) with the models they produced, the whole
combination of feature versions each run read, and its latest metrics: which combinations
gave which results, best first on ``metric``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from featureledger.errors import UnknownDatasetError, UnknownFeatureError
from featureledger.registry.lifecycle import Deprecation, parse_target

if TYPE_CHECKING:
    from featureledger.context import StoreContext
    from featureledger.registry import DefinitionRecord


@dataclass(frozen=True)
class CatalogEntry:
    """A view (``kind`` ``feature_view``, ``name`` the view's) or a feature (``kind``
    ``feature``, ``name`` ``view:feature``), as its latest version describes it."""

    kind: str
    name: str
    view: str
    version: int
    description: str
    owner: str
    unit: str | None = None
    dtype: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    status: str = "active"
    deprecation: dict[str, Any] | None = None

    def text(self) -> str:
        """What ``search`` looks in, lower-cased."""
        tags = " ".join(f"{k} {v}" for k, v in self.tags.items())
        return f"{self.name}\n{self.description}\n{tags}\n{self.owner}".lower()

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _entries(rec: DefinitionRecord, deps: list[Deprecation]) -> list[CatalogEntry]:
    d = rec.definition

    def deprecation(feature: str | None) -> dict[str, Any] | None:
        for dep in deps:
            if dep.covers(rec.name, rec.version, feature) and (
                    feature is not None or dep.feature is None):
                return dep.to_dict()
        return None

    view_dep = deprecation(None)
    out = [CatalogEntry("feature_view", rec.name, rec.name, rec.version, d.description or "",
                        d.owner or "", None, None, dict(d.tags),
                        "deprecated" if view_dep else rec.status, view_dep)]
    for f in d.fields:
        dep = deprecation(f.name)
        out.append(CatalogEntry("feature", f"{rec.name}:{f.name}", rec.name, rec.version,
                                f.description or "", d.owner or "", f.unit, f.dtype,
                                dict(f.tags), "deprecated" if dep else rec.status, dep))
    return out


class CatalogService:
    """Catalog queries (constructed as ``CatalogService(ctx)``)."""

    def __init__(self, ctx: StoreContext) -> None:
        self.ctx = ctx

    def entries(self, *, tag: str | None = None, owner: str | None = None,
                kind: str | None = None) -> list[CatalogEntry]:
        """Every view and feature (latest versions), with the tag (a key, or
        ``key=value``) and owner given, of ``kind`` (``feature_view`` or ``feature``)."""
        registry = self.ctx.registry
        deps = registry.lifecycle.deprecations()
        out: list[CatalogEntry] = []
        for rec in registry.definitions.list("feature_view"):
            out += _entries(rec, [d for d in deps if d.view == rec.name])
        if tag is not None:
            key, _, value = tag.partition("=")
            out = [e for e in out if key in e.tags and (not value or e.tags[key] == value)]
        if owner is not None:
            out = [e for e in out if e.owner.lower() == owner.lower()]
        if kind is not None:
            out = [e for e in out if e.kind == kind]
        return out

    def search(self, text: str, *, tag: str | None = None, owner: str | None = None
               ) -> list[CatalogEntry]:
        """Entries whose name, description, tags or owner contain every word of
        ``text`` (case-insensitive); names that match come first."""
        words = text.lower().split()
        found = [e for e in self.entries(tag=tag, owner=owner)
                 if all(w in e.text() for w in words)]
        return sorted(found, key=lambda e: (not all(w in e.name.lower() for w in words),
                                            e.name))

    def show(self, name: str, *, metric: str | None = None) -> dict[str, Any]:
        """Everything the catalog knows about view or feature ``name`` (``view``,
        ``view:feature``; a version pins the leaderboard to it)."""
        registry = self.ctx.registry
        view, _version, feature = parse_target(name)
        versions = registry.definitions.versions("feature_view", view)
        latest = versions[-1]
        deps = registry.lifecycle.deprecations(views=[view], withdrawn=True)
        entries = _entries(latest, [d for d in deps if d.withdrawn_at is None])
        wanted = view if feature is None else f"{view}:{feature}"
        entry = next((e for e in entries if e.name == wanted), None)
        if entry is None:
            raise UnknownFeatureError(
                f"{feature!r} is not a feature of {view}@{latest.version}; its features are "
                f"{', '.join(latest.definition.feature_names)}")
        hypotheses = {h["version"]: h for h in registry.lifecycle.hypotheses(view)}
        policy = registry.lifecycle.retention_policies(view)
        return {
            "entry": entry.to_dict(),
            "versions": [{
                "version": r.version, "status": r.status, "created_at": r.created_at,
                "created_by": r.created_by, "breaking_reason": r.breaking_reason,
                "experiment": hypotheses.get(r.version, {}).get("experiment"),
                "experiment_id": hypotheses.get(r.version, {}).get("experiment_id"),
                "hypothesis": hypotheses.get(r.version, {}).get("hypothesis"),
                "has_feature": feature is None or feature in r.definition.feature_names,
            } for r in versions],
            "deprecations": [d.to_dict() for d in deps
                             if feature is None or d.feature in (None, feature)],
            "retention": policy[0].to_dict() if policy else None,
            "decisions": registry.lifecycle.decisions(view),
            "leaderboard": self.leaderboard(name, metric=metric),
        }

    def leaderboard(self, name: str, *, metric: str | None = None) -> list[dict[str, Any]]:
        """Runs that read view or feature ``name`` (any version, or the one pinned), with
        the feature versions each read, the models it produced and its latest metrics;
        best first on ``metric`` (higher is better; runs without it last)."""
        registry = self.ctx.registry
        view, version, feature = parse_target(name)
        versions = ([version] if version is not None else
                    [r.version for r in registry.definitions.versions("feature_view", view)])
        rows: dict[str, dict[str, Any]] = {}
        for v in versions:
            for run in registry.runs.list_runs(feature_version=f"{view}@{v}"):
                if run.run_id in rows:
                    continue
                features = self._features_read(run.datasets, run.models)
                used = [f for f in features if f.startswith(f"{view}@")
                        and (feature is None or f.endswith(f":{feature}"))]
                if not used:
                    continue
                rows[run.run_id] = {
                    "run_id": run.run_id, "run": run.name, "experiment": run.experiment,
                    "status": run.status, "models": list(run.models),
                    "feature_versions": used, "features": features,
                    "metrics": dict(run.metrics)}

        def rank(row: dict[str, Any]) -> tuple[bool, float, str]:
            value = row["metrics"].get(metric) if metric else None
            ok = isinstance(value, (int, float)) and not math.isnan(value)
            return (not ok, -float(value) if ok else 0.0, row["run_id"])  # type: ignore[arg-type]

        return sorted(rows.values(), key=rank)

    def _features_read(self, datasets: list[str], models: list[str]) -> list[str]:
        """Every pinned feature a run's datasets and models read, sorted."""
        registry = self.ctx.registry
        out: set[str] = set()
        for ds in datasets:
            try:
                out.update(registry.datasets.get(ds).features)
            except UnknownDatasetError:
                continue
        for ref in models:
            out.update(registry.models.get(ref).features)
        return sorted(out)
