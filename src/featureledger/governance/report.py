"""Governance metrics: one report for the CLI, JSON and the server's Prometheus gauges.

* ``denied_requests``: audit entries of denied requests (``decision: deny``);
* ``deprecated_reads`` / ``deprecated_features_read``: reads of deprecated features in the
  last ``window_days`` (counted by the read gate), and which features;
* ``undocumented``: views and features without an owner or a description;
* ``retention_backlog``: commits the retention policies expire now (those kept for active
  deployments included), and their rows;
* ``unreviewed_breaking_changes``: versions applied as breaking changes that no principal
  other than the one who applied them reviewed;
* ``unapproved_deprecations``: deprecations (and retirements) in effect without an approval
  by another principal, and deprecated versions no deprecation covers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from featureledger.governance.catalog import CatalogService
from featureledger.governance.retention import RetentionService
from featureledger.model.timeutil import now_us

if TYPE_CHECKING:
    from featureledger.context import StoreContext

DAY_US = 86_400 * 1_000_000


@dataclass
class GovernanceReport:
    """The governance metrics at ``at`` (µs UTC)."""

    at: int
    window_days: int
    denied_requests: int = 0
    deprecated_reads: int = 0
    deprecated_features_read: list[str] = field(default_factory=list)
    undocumented: list[dict[str, Any]] = field(default_factory=list)
    retention_backlog: int = 0
    retention_backlog_rows: int = 0
    unreviewed_breaking_changes: list[dict[str, Any]] = field(default_factory=list)
    unapproved_deprecations: list[dict[str, Any]] = field(default_factory=list)

    def gauges(self) -> dict[str, float]:
        """The numbers the server exports (``featureledger_governance_<name>``)."""
        return {
            "denied_requests": self.denied_requests,
            "deprecated_reads": self.deprecated_reads,
            "deprecated_features_read": len(self.deprecated_features_read),
            "undocumented": len(self.undocumented),
            "retention_backlog_commits": self.retention_backlog,
            "retention_backlog_rows": self.retention_backlog_rows,
            "unreviewed_breaking_changes": len(self.unreviewed_breaking_changes),
            "unapproved_deprecations": len(self.unapproved_deprecations),
        }

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__} | {
            "gauges": self.gauges()}


class GovernanceService:
    """Governance metrics (constructed as ``GovernanceService(ctx)``)."""

    def __init__(self, ctx: StoreContext) -> None:
        self.ctx = ctx

    def report(self, *, window_days: int = 7) -> GovernanceReport:
        """The governance metrics now (see the module docstring); deprecated reads are
        those of the last ``window_days``."""
        ctx = self.ctx
        registry = ctx.registry
        now = now_us()
        report = GovernanceReport(at=now, window_days=window_days)
        lifecycle = registry.lifecycle
        report.denied_requests = lifecycle.count_denied()
        reads = lifecycle.read_counts(since_us=now - window_days * DAY_US)
        report.deprecated_reads = sum(int(r["requests"]) for r in reads)
        report.deprecated_features_read = sorted({r["feature"] for r in reads})
        for e in ctx.part(CatalogService).entries():
            missing = [what for what, value in (("owner", e.owner),
                                                ("description", e.description)) if not value]
            if missing:
                report.undocumented.append({"kind": e.kind, "name": e.name,
                                            "missing": missing})
        backlog = ctx.part(RetentionService).backlog()
        report.retention_backlog = len(backlog)
        report.retention_backlog_rows = sum(e.rows for e in backlog)
        report.unreviewed_breaking_changes = lifecycle.unreviewed_breaking()
        with registry.db.read() as conn:
            report.unapproved_deprecations = [
                {"code": code, "message": message, **ids}
                for code, message, ids in lifecycle.approval_problems(conn)]
        return report
