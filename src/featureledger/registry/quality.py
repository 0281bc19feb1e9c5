"""Data-quality records: view policies, commit checks, alerts and the feature log.

A commit's check is a row of its own (the commit row is sealed and never changes); an
alert is deduplicated on its ``dedup_key`` while open: raising it again counts up
``occurrences`` and refreshes ``last_seen_at`` and its evidence. Every policy change and
acknowledgement is audited in the same transaction.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from featureledger.errors import UnknownAlertError
from featureledger.model.hashing import canonical_json
from featureledger.model.ids import new_id
from featureledger.model.timeutil import from_us, now_us
from featureledger.registry import schema
from featureledger.registry.engine import RegistryDB

ALERT_OPEN, ALERT_ACKED = "open", "acknowledged"


@dataclass(frozen=True)
class QualityCheck:
    """The quality check of one commit."""

    check_id: str
    commit_id: str
    view_name: str
    view_version: int
    checked_at: int
    status: str  # ok | drift | failed | skipped
    action: str  # none | alert | quarantine
    result: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "checked_at_iso": from_us(self.checked_at).isoformat()}


@dataclass(frozen=True)
class Alert:
    """One alert record."""

    alert_id: str
    rule: str
    severity: str
    subject: str
    message: str
    evidence: dict[str, Any]
    lineage_node: str | None
    status: str
    created_at: int
    last_seen_at: int
    occurrences: int
    dedup_key: str
    acked_at: int | None = None
    acked_by: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "created_at_iso": from_us(self.created_at).isoformat()}


def new_check(*, commit_id: str, view: str, version: int, status: str, action: str,
              result: dict[str, Any]) -> QualityCheck:
    """A check of ``commit_id`` taken now, not stored yet."""
    return QualityCheck(new_id("qc"), commit_id, view, version, now_us(), status, action,
                        result)


def _check(r: Any) -> QualityCheck:
    return QualityCheck(r.check_id, r.commit_id, r.view_name, r.view_version, r.checked_at,
                        r.status, r.action, json.loads(r.result))


def _alert(r: Any) -> Alert:
    return Alert(r.alert_id, r.rule, r.severity, r.subject, r.message,
                 json.loads(r.evidence), r.lineage_node, r.status, r.created_at,
                 r.last_seen_at, r.occurrences, r.dedup_key, r.acked_at, r.acked_by)


class QualityRepository:
    def __init__(self, db: RegistryDB) -> None:
        self.db = db

    # -- policies -------------------------------------------------------------------------
    def policy(self, view: str) -> dict[str, Any] | None:
        t = schema.quality_policies
        with self.db.read() as conn:
            r = conn.execute(sa.select(t.c.policy).where(
                self.db.scope(t), t.c.view_name == view)).scalar()
        return json.loads(r) if r else None

    def policies(self) -> dict[str, dict[str, Any]]:
        t = schema.quality_policies
        with self.db.read() as conn:
            return {r.view_name: json.loads(r.policy) for r in conn.execute(
                sa.select(t.c.view_name, t.c.policy).where(self.db.scope(t)))}

    def set_policy(self, view: str, policy: dict[str, Any] | None) -> None:
        """Set (or, with None, remove) ``view``'s policy, audited."""
        t = schema.quality_policies
        with self.db.write() as conn:
            old = conn.execute(sa.select(t.c.policy).where(
                self.db.scope(t), t.c.view_name == view)).scalar()
            conn.execute(t.delete().where(self.db.scope(t), t.c.view_name == view))
            if policy is not None:
                conn.execute(t.insert().values(
                    project=self.db.project, view_name=view, policy=canonical_json(policy),
                    updated_at=now_us(), updated_by=self.db.actor))
            self.db.audit(conn, "quality_policy:" + ("set" if policy is not None else "remove"),
                          "feature_view", view,
                          {"from": json.loads(old) if old else None, "to": policy})

    # -- checks -----------------------------------------------------------------------------
    def add_check(self, *, commit_id: str, view: str, version: int, status: str,
                  action: str, result: dict[str, Any]) -> QualityCheck:
        rec = new_check(commit_id=commit_id, view=view, version=version, status=status,
                        action=action, result=result)
        with self.db.write(bump=False) as conn:
            self.add_check_in(conn, rec)
        return rec

    def add_check_in(self, conn: Connection, rec: QualityCheck) -> None:
        """Store ``rec`` inside the caller's write transaction (the commit's own, when
        the check decides how the commit lands)."""
        conn.execute(schema.quality_checks.insert().values(
            project=self.db.project, check_id=rec.check_id, commit_id=rec.commit_id,
            view_name=rec.view_name, view_version=rec.view_version,
            checked_at=rec.checked_at, status=rec.status, action=rec.action,
            result=canonical_json(rec.result)))

    def checks(self, *, view: str | None = None, commit_ids: Sequence[str] | None = None,
               limit: int | None = None) -> list[QualityCheck]:
        """Checks, newest first."""
        t = schema.quality_checks
        q = sa.select(t).where(self.db.scope(t))
        if view is not None:
            q = q.where(t.c.view_name == view)
        if commit_ids is not None:
            q = q.where(t.c.commit_id.in_(list(commit_ids)))
        q = q.order_by(t.c.checked_at.desc(), t.c.check_id.desc())
        if limit is not None:
            q = q.limit(limit)
        with self.db.read() as conn:
            return [_check(r) for r in conn.execute(q)]

    # -- alerts -----------------------------------------------------------------------------
    def raise_alert(self, *, dedup_key: str, rule: str, severity: str, subject: str,
                    message: str, evidence: dict[str, Any], lineage_node: str | None
                    ) -> tuple[Alert, bool]:
        """Record an alert; returns it and whether it is new (not a repeat of an open one)."""
        with self.db.write(bump=False) as conn:
            return self.raise_alert_in(
                conn, dedup_key=dedup_key, rule=rule, severity=severity, subject=subject,
                message=message, evidence=evidence, lineage_node=lineage_node)

    def raise_alert_in(self, conn: Connection, *, dedup_key: str, rule: str, severity: str,
                       subject: str, message: str, evidence: dict[str, Any],
                       lineage_node: str | None) -> tuple[Alert, bool]:
        """:meth:`raise_alert` inside the caller's write transaction ``conn``."""
        t = schema.quality_alerts
        now = now_us()
        r = conn.execute(sa.select(t).where(
            self.db.scope(t), t.c.status == ALERT_OPEN, t.c.dedup_key == dedup_key)).first()
        if r is not None:
            conn.execute(t.update().where(self.db.scope(t), t.c.alert_id == r.alert_id)
                         .values(last_seen_at=now, occurrences=r.occurrences + 1,
                                 evidence=canonical_json(evidence), message=message,
                                 severity=severity))
            alert_id, new = r.alert_id, False
        else:
            alert_id, new = new_id("alr"), True
            conn.execute(t.insert().values(
                project=self.db.project, alert_id=alert_id, dedup_key=dedup_key,
                rule=rule, severity=severity, subject=subject, message=message,
                evidence=canonical_json(evidence), lineage_node=lineage_node,
                status=ALERT_OPEN, created_at=now, last_seen_at=now, occurrences=1))
        row = conn.execute(sa.select(t).where(self.db.scope(t),
                                              t.c.alert_id == alert_id)).one()
        return _alert(row), new

    def alerts(self, *, status: str | None = None, subject: str | None = None,
               limit: int | None = None) -> list[Alert]:
        """Alerts, newest first."""
        t = schema.quality_alerts
        q = sa.select(t).where(self.db.scope(t))
        if status is not None:
            q = q.where(t.c.status == status)
        if subject is not None:
            q = q.where(sa.or_(t.c.subject == subject, t.c.subject.like(subject + "@%"),
                               t.c.subject.like(subject + ":%")))
        q = q.order_by(t.c.last_seen_at.desc(), t.c.alert_id.desc())
        if limit is not None:
            q = q.limit(limit)
        with self.db.read() as conn:
            return [_alert(r) for r in conn.execute(q)]

    def open_counts(self) -> dict[str, int]:
        """Open alerts per severity."""
        t = schema.quality_alerts
        with self.db.read() as conn:
            return {s: int(n) for s, n in conn.execute(
                sa.select(t.c.severity, sa.func.count()).where(
                    self.db.scope(t), t.c.status == ALERT_OPEN).group_by(t.c.severity))}

    def acknowledge(self, alert_id: str, reason: str | None = None) -> Alert:
        t = schema.quality_alerts
        with self.db.write(bump=False) as conn:
            r = conn.execute(sa.select(t).where(self.db.scope(t),
                                                t.c.alert_id == alert_id)).first()
            if r is None:
                raise UnknownAlertError(
                    f"unknown alert {alert_id!r}; list them with 'featureledger alerts'")
            if r.status != ALERT_ACKED:
                conn.execute(t.update().where(self.db.scope(t), t.c.alert_id == alert_id)
                             .values(status=ALERT_ACKED, acked_at=now_us(),
                                     acked_by=self.db.actor))
                self.db.audit(conn, "alert:acknowledge", "alert", alert_id,
                              {"subject": r.subject, "rule": r.rule, "reason": reason})
            row = conn.execute(sa.select(t).where(self.db.scope(t),
                                                  t.c.alert_id == alert_id)).one()
        return _alert(row)

    # -- the feature log --------------------------------------------------------------------
    def log_features(self, rows: Sequence[tuple[int, str | None, str | None, dict[str, Any]]]
                     ) -> None:
        """Append sampled requests ``(logged_at, deployment_id, model_id, {ref: value})``
        in one statement (one transaction per batch)."""
        if not rows:
            return
        with self.db.write(bump=False) as conn:
            conn.execute(schema.feature_log.insert(), [
                {"project": self.db.project, "log_id": new_id("flg"), "logged_at": at,
                 "deployment_id": dep, "model_id": mdl, "features": canonical_json(values)}
                for at, dep, mdl, values in rows])

    def logged_features(self, *, deployment_id: str | None = None,
                        model_id: str | None = None, since: int | None = None
                        ) -> list[dict[str, Any]]:
        t = schema.feature_log
        q = sa.select(t.c.features).where(self.db.scope(t))
        if deployment_id is not None:
            q = q.where(t.c.deployment_id == deployment_id)
        if model_id is not None:
            q = q.where(t.c.model_id == model_id)
        if since is not None:
            q = q.where(t.c.logged_at >= since)
        with self.db.read() as conn:
            return [json.loads(r.features) for r in conn.execute(q.order_by(t.c.logged_at))]
