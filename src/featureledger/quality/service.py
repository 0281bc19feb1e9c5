"""The quality part: policies, drift, the check of every commit, schema drift.

``QualityService(ctx)`` is what the facade forwards to. Ingestion and push landings
check every commit of a view with a policy inside the commit's own registry transaction
(:meth:`QualityService.gate`): the commit is compared with the policy's baseline before
its row is inserted, and a commit the policy quarantines is inserted ``quarantined``,
with its check, its alerts and its audited status, in that same transaction. So no
reader, retrieval or materialization ever sees it ``committed``, whatever instant the
writing process dies at (the online store repairs the keys a push already served, as
for any quarantine). Notifications (log, webhook) go out once the transaction committed.
A view without a policy costs one small registry read per commit.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from featureledger.errors import QualityError, SchemaDriftError
from featureledger.quality.alerts import AlertService
from featureledger.quality.baselines import (
    Baseline,
    data_summaries,
    profile_summaries,
    resolve,
)
from featureledger.quality.drift import DriftReport, Thresholds, compare
from featureledger.quality.policy import QualityPolicy
from featureledger.quality.schema_drift import SchemaDriftReport, schema_drift
from featureledger.registry.quality import Alert, QualityCheck, QualityRepository, new_check

if TYPE_CHECKING:
    import pyarrow as pa
    from sqlalchemy.engine import Connection

    from featureledger.context import StoreContext
    from featureledger.registry.commits import CommitRecord


@dataclass
class CommitVerdict:
    """What the check of one commit decided."""

    check: QualityCheck
    quarantine_reason: str | None  # set when the commit must be quarantined
    alerts: list[dict[str, Any]] = field(default_factory=list)  # to raise with the check
    new_alerts: list[Alert] = field(default_factory=list)  # raised and new: to notify


class CommitGate:
    """A quality policy's decision about one commit, taken inside the commit's own write
    transaction, so the commit row lands with its verdict or not at all.

    The commit writer (``ingest/commit.py``) calls :meth:`decide` once the record is built
    and before it is inserted (a commit to quarantine is inserted ``quarantined``, never
    visible as ``committed``), :meth:`record_in` after the insert (the check, the alerts
    and the audited status, in the same transaction) and, once the transaction
    committed, :meth:`notify` (log and webhook: nothing is sent for a commit that rolled
    back).
    """

    def __init__(self, service: QualityService, policy: QualityPolicy) -> None:
        self.service = service
        self.policy = policy
        self.verdict: CommitVerdict | None = None
        self.seconds = 0.0  # spent deciding and recording, inside the transaction

    def decide(self, record: CommitRecord) -> CommitRecord:
        """``record`` as it must land: quarantined when the policy says so."""
        t = time.perf_counter()
        self.verdict = self.service.judge(record, self.policy)
        self.seconds += time.perf_counter() - t
        reason = self.verdict.quarantine_reason
        if reason is None:
            return record
        return replace(record, status="quarantined", status_reason=reason,
                       status_changed_at=record.commit_time)

    def record_in(self, conn: Connection, record: CommitRecord) -> None:
        """The check, its alerts and (for a quarantined commit) the audited status,
        inside the commit's transaction."""
        assert self.verdict is not None, "decide() comes first"
        t = time.perf_counter()
        self.service.record_in(conn, self.verdict)
        if record.status == "quarantined":
            # the audit trail of the commit's status, as a quarantine by hand writes it
            # (reconcile compares a commit's status with the last one audited)
            self.service.ctx.registry.db.audit(
                conn, "commit_status:quarantined", "commit", record.commit_id,
                {"from": "new", "to": "quarantined", "reason": record.status_reason,
                 "check_id": self.verdict.check.check_id}, actor=record.user)
        self.seconds += time.perf_counter() - t

    def notify(self) -> None:
        if self.verdict is not None:
            self.service.alerting.notify(self.verdict.new_alerts)

    @property
    def check(self) -> QualityCheck | None:
        return self.verdict.check if self.verdict is not None else None


class QualityService:
    """Policies, drift reports, commit checks and schema drift."""

    def __init__(self, ctx: StoreContext) -> None:
        self.ctx = ctx
        self.repo = QualityRepository(ctx.registry.db)

    @property
    def alerting(self) -> AlertService:
        return self.ctx.part(AlertService)

    # -- policies ---------------------------------------------------------------------------
    def set_policy(self, view: str, policy: Mapping[str, Any] | QualityPolicy | None
                   ) -> QualityPolicy | None:
        """Set ``view``'s quality policy (None removes it); audited."""
        self.ctx.registry.definitions.view(view)  # raises for an unknown view
        pol = (policy if isinstance(policy, QualityPolicy) or policy is None
               else QualityPolicy.from_dict(policy))
        self.repo.set_policy(view, pol.to_dict() if pol is not None else None)
        return pol

    def policy(self, view: str) -> QualityPolicy | None:
        raw = self.repo.policy(view)
        return QualityPolicy.from_dict(raw) if raw is not None else None

    # -- drift ------------------------------------------------------------------------------
    def drift(self, view: str, *, baseline: str = "previous", current: str = "latest",
              version: int | None = None, exact: bool = False,
              features: Sequence[str] | None = None,
              thresholds: Mapping[str, Any] | None = None) -> DriftReport:
        """Drift of ``view``'s features from ``baseline`` to ``current`` (baseline specs,
        see quality/baselines.py), from stored profiles, or with ``exact`` from the rows."""
        rec = self.ctx.registry.definitions.view(view, version)
        cur = resolve(self.ctx, rec.name, current, version=rec.version)
        if not cur.commits:
            raise QualityError(f"{rec.ref} has no commits for the current side {current!r}; "
                               "ingest data first or name commits (commit:ID)")
        base = resolve(self.ctx, rec.name, baseline, version=rec.version,
                       before=cur.commits[0])
        if not base.commits:
            raise QualityError(
                f"baseline {baseline!r} of {rec.ref} holds no committed commit; choose "
                "another (e.g. commits:A..B, window:START..END or dataset:DS_ID)")
        pol = self.policy(rec.name)
        t = pol.thresholds if pol else Thresholds()
        t = t.with_overrides(thresholds)
        per = dict(pol.features) if pol else {}
        feats = list(features) if features else list(rec.definition.feature_names)
        return self._report(rec.name, base, cur, feats, per, t, exact)

    def _report(self, view: str, base: Baseline, cur: Baseline, feats: list[str],
                per: Mapping[str, Thresholds], default: Thresholds, exact: bool
                ) -> DriftReport:
        if exact:  # one feature at a time: two columns in memory, not every one
            results = []
            for f in feats:
                b = data_summaries(self.ctx, base, [f])
                c = data_summaries(self.ctx, cur, [f])
                results += compare(b, c, [f], per, default)
        else:
            results = compare(profile_summaries(base, feats), profile_summaries(cur, feats),
                              feats, per, default)
        return DriftReport(view, base.to_dict(), cur.to_dict(),
                           "data" if exact else "profile", results)

    # -- the check of every commit ----------------------------------------------------------
    def gate(self, policy: QualityPolicy) -> CommitGate:
        """The decision of ``policy`` about one commit, to take inside its write
        transaction (see :class:`CommitGate`)."""
        return CommitGate(self, policy)

    def check_commit(self, commit: CommitRecord, policy: QualityPolicy | None = None
                     ) -> CommitVerdict | None:
        """Check a commit that is already recorded against its view's policy (None when
        the view has none), storing the check and its alerts; the commit's status is left
        as it is. New commits are checked as they land instead (:meth:`gate`)."""
        pol = policy or self.policy(commit.view_name)
        if pol is None:
            return None
        verdict = self.judge(commit, pol)
        with self.ctx.registry.db.write(bump=False) as conn:
            self.record_in(conn, verdict)
        self.alerting.notify(verdict.new_alerts)
        return verdict

    def judge(self, commit: CommitRecord, pol: QualityPolicy) -> CommitVerdict:
        """What ``pol`` decides about ``commit``; reads only (the registry and, for an
        ``exact`` policy, the commit's files), writes nothing."""
        result: dict[str, Any] = {"policy": pol.to_dict()}
        reasons: list[str] = []
        status = "ok"
        checked = commit.row_count + commit.rejected_count
        frac = commit.rejected_count / checked if checked else 0.0
        result["rejected_fraction"] = frac
        if pol.max_rejected_fraction is not None and frac > pol.max_rejected_fraction:
            status = "failed"
            reasons.append(f"{commit.rejected_count} of {checked} rows failed validation "
                           f"({frac:.1%} > {pol.max_rejected_fraction:.1%})")
        report = None
        if commit.row_count < pol.min_rows:
            result["drift"] = {"skipped": f"fewer than {pol.min_rows} rows"}
        else:
            base = resolve(self.ctx, commit.view_name, pol.baseline,
                           version=commit.view_version, before=commit)
            base_commits = [c for c in base.commits if c.commit_id != commit.commit_id]
            if not base_commits:
                result["drift"] = {"skipped": "no baseline commit yet"}
            else:
                base = Baseline(base.spec, base.view, base.version, base_commits)
                cur = Baseline(f"commit:{commit.commit_id}", commit.view_name,
                               commit.view_version, [commit])
                view = self.ctx.registry.definitions.view(commit.view_name,
                                                          commit.view_version).definition
                report = self._report(commit.view_name, base, cur, list(view.feature_names),
                                      pol.features, pol.thresholds, pol.exact)
                result["drift"] = report.to_dict()
                if report.drifted and status == "ok":
                    status = "drift"
        drifted = report is not None and bool(report.drifted)
        quarantine = bool(reasons) or (drifted and pol.on_drift == "quarantine")
        if drifted and report is not None:
            reasons.append("drift in " + ", ".join(
                f"{f.feature} ({'; '.join(f.reasons)})" for f in report.features if f.drifted))
        action = "quarantine" if quarantine else (
            "alert" if drifted and pol.on_drift == "alert" else "none")
        if status == "ok" and "skipped" in result.get("drift", {}) and not reasons:
            status = "skipped"
        check = new_check(commit_id=commit.commit_id, view=commit.view_name,
                          version=commit.view_version, status=status, action=action,
                          result=result)
        ref = commit.view_ref
        alerts: list[dict[str, Any]] = []
        if drifted and report is not None and pol.on_drift != "none":
            alerts.append(dict(
                rule="drift", severity="critical" if quarantine else "warning", subject=ref,
                message=f"commit {commit.commit_id} drifted from baseline "
                        f"{pol.baseline!r}: " + ", ".join(report.drifted),
                evidence={"commit_id": commit.commit_id, "check_id": check.check_id,
                          "features": [f.to_dict() for f in report.features if f.drifted]},
                lineage_node=commit.commit_id))
        if status == "failed":
            alerts.append(dict(
                rule="validation", severity="critical", subject=ref,
                message=reasons[0], evidence={"commit_id": commit.commit_id,
                                              "rejected_fraction": frac,
                                              "check_id": check.check_id},
                lineage_node=commit.commit_id))
        reason = None
        if quarantine:
            reason = "quality policy: " + "; ".join(reasons)
            alerts.append(dict(
                rule="quarantine", severity="critical", subject=commit.commit_id,
                message=f"{ref} commit {commit.commit_id} quarantined by its quality "
                        f"policy: {'; '.join(reasons)}",
                evidence={"check_id": check.check_id, "reasons": reasons},
                lineage_node=commit.commit_id))
        return CommitVerdict(check, reason, alerts)

    def record_in(self, conn: Connection, verdict: CommitVerdict) -> None:
        """Store ``verdict``'s check and alerts inside the caller's write transaction; the
        alerts that are new are kept on the verdict, to notify once it committed."""
        self.repo.add_check_in(conn, verdict.check)
        for spec in verdict.alerts:
            alert, new = self.alerting.raise_alert_in(conn, **spec)
            if new:
                verdict.new_alerts.append(alert)

    def checks(self, view: str | None = None, *, commit_ids: Sequence[str] | None = None,
               limit: int | None = None) -> list[QualityCheck]:
        """Stored commit checks, newest first."""
        return self.repo.checks(view=view, commit_ids=commit_ids, limit=limit)

    # -- schema drift -----------------------------------------------------------------------
    def schema_drift(self, view: str, source: pa.Schema, *, version: int | None = None,
                     column_map: Mapping[str, str | None] | None = None,
                     profile: Mapping[str, Any] | None = None) -> SchemaDriftReport:
        """How ``source``'s columns differ from ``view``'s definition."""
        rec = self.ctx.registry.definitions.view(view, version)
        last = self.ctx.registry.commits.list(rec.name, rec.version, newest=1)
        return schema_drift(rec.definition, source, column_map=column_map, profile=profile,
                            last_profile=last[0].profile if last else None)

    def refuse_schema_drift(self, report: SchemaDriftReport, ref: str) -> None:
        """Raise SchemaDriftError for ``report``'s errors, and alert on any finding."""
        if not report.findings:
            return
        self.alerting.raise_alert(
            rule="schema_drift", severity="critical" if report.errors else "warning",
            subject=ref, message="; ".join(f"{f.kind} {f.column}" for f in report.findings),
            evidence=report.to_dict(), lineage_node=f"view:{ref}")
        if report.errors:
            raise SchemaDriftError(
                f"the source of {ref} no longer matches its definition; nothing was "
                f"written:\n{report.summary()}", report)
