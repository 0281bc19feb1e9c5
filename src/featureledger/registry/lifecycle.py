"""Governance records: retention policies, deprecation schedules with their approvals, the
counters of deprecated reads and the hypotheses feature versions were created for; and the
gate every offline and online read of a deprecated feature passes.

A **deprecation** targets a view (``driver_stats``: every version), a view version
(``driver_stats@2``), a feature (``driver_stats:trips``: in every version) or a feature of
one version (``driver_stats@2:trips``). It carries the reason, the replacement and, when
scheduled, ``retire_on``. Reads of what it covers warn (:class:`DeprecatedFeatureWarning`,
once per process and deprecation) and are counted per feature, reader and hour; from
``retire_on`` on they fail (:class:`FeatureRetiredError`, naming the replacement) unless the
reading deployment has a recorded exception for that view version.

**Approval**: the principal who requests a deprecation cannot approve it; another principal
approves it afterwards (recorded and audited). A deprecation takes effect when requested
(users hear of it at once); ``reconcile`` reports every deprecation in effect that nobody
else approved, and every deprecated or retired version no recorded deprecation covers (a
status set by hand).

**Retention** deletes a commit's data and keeps its row with status ``expired`` (see
``governance/retention.py`` and :data:`featureledger.registry.commits.EXPIRED_STATUS`).

>>> Deprecation("dpr_1", "stats", 2, "trips", "", None, None, 0, "a").target
'stats@2:trips'
>>> Deprecation("dpr_1", "stats", None, None, "", None, None, 0, "a").covers("stats", 3, "x")
True
"""

from __future__ import annotations

import json
import threading
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from featureledger.errors import (
    DeprecatedFeatureWarning,
    FeatureRetiredError,
    StateError,
    UnknownFeatureError,
)
from featureledger.model.references import parse_reference
from featureledger.model.timeutil import from_us, now_us
from featureledger.registry import schema
from featureledger.registry.engine import RegistryDB
from featureledger.registry.usage import UsageKey, UsageRecorder, upsert_counters


@dataclass(frozen=True)
class RetentionPolicy:
    """How long a view's commits are kept: ``keep_days`` or the newest ``keep_last``."""

    view: str
    keep_days: int | None
    keep_last: int | None
    reason: str
    set_at: int
    set_by: str

    def describe(self) -> str:
        if self.keep_days is not None:
            return f"keep commits {self.keep_days} day(s)"
        return f"keep the last {self.keep_last} commit(s)"

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class Deprecation:
    """One deprecation (see the module docstring)."""

    deprecation_id: str
    view: str
    version: int | None  # None: every version
    feature: str | None  # None: every feature
    reason: str
    replacement: str | None
    retire_on: int | None  # µs UTC
    requested_at: int
    requested_by: str
    forced_reason: str | None = None
    approved_at: int | None = None
    approved_by: str | None = None
    withdrawn_at: int | None = None
    withdrawn_by: str | None = None

    @property
    def target(self) -> str:
        out = self.view if self.version is None else f"{self.view}@{self.version}"
        return out if self.feature is None else f"{out}:{self.feature}"

    @property
    def approved(self) -> bool:
        return self.approved_by is not None

    def covers(self, view: str, version: int, feature: str | None) -> bool:
        """Whether a read of ``view@version:feature`` (a whole version: None) is covered."""
        return (view == self.view and self.version in (None, version)
                and (self.feature is None or feature is None or self.feature == feature))

    def retired(self, at_us: int) -> bool:
        return self.retire_on is not None and at_us >= self.retire_on

    def describe(self) -> str:
        out = f"{self.target} is deprecated ({self.reason})"
        if self.replacement:
            out += f"; use {self.replacement} instead"
        if self.retire_on is not None:
            out += f"; it retires on {from_us(self.retire_on).date().isoformat()}"
        return out

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["target"] = self.target
        d["retire_on_iso"] = (None if self.retire_on is None
                              else from_us(self.retire_on).isoformat())
        return d


def _deprecation(r: Any) -> Deprecation:
    return Deprecation(r.deprecation_id, r.view_name, r.view_version, r.feature, r.reason,
                       r.replacement, r.retire_on, r.requested_at, r.requested_by,
                       r.forced_reason, r.approved_at, r.approved_by, r.withdrawn_at,
                       r.withdrawn_by)


def parse_target(text: str) -> tuple[str, int | None, str | None]:
    """``view``, ``view@2``, ``view:feature`` or ``view@2:feature`` -> (view, version,
    feature)."""
    if ":" in text:
        ref = parse_reference(text)
        return ref.view, ref.version, ref.feature
    name, _, ver = text.partition("@")
    if not name or (ver and not ver.isdigit()):
        raise UnknownFeatureError(f"{text!r} names no view or feature; write VIEW, VIEW@N, "
                                  "VIEW:FEATURE or VIEW@N:FEATURE")
    return name, int(ver) if ver else None, None


def record_deprecated_reads(db: RegistryDB, counts: Mapping[UsageKey, tuple[int, int]]) -> int:
    """Add ``(requests, rows)`` to each ``(reader, feature, bucket)`` counter."""
    return upsert_counters(db, schema.deprecated_reads, ("reader", "feature", "bucket_start"),
                           counts)


# (db url, project, deprecation id, feature) already warned about in this process
_WARNED: set[tuple[str, str, str, str]] = set()
_EXCEPTIONS_TTL_S = 5.0


class DeprecationGate:
    """What reads of deprecated features go through: matches are computed once per read
    plan (:meth:`matches`), each read is checked and counted (:meth:`on_read`)."""

    def __init__(self, repo: LifecycleRepository) -> None:
        self.repo = repo
        self.reads = UsageRecorder(repo.db, record=record_deprecated_reads)
        self._exceptions: dict[str, tuple[float, frozenset[str]]] = {}
        self._lock = threading.Lock()

    def matches(self, refs: Iterable[str]) -> list[tuple[str, Deprecation]]:
        """``(pinned reference, deprecation)`` for each of ``refs`` (``view@N:feature``) a
        deprecation in effect covers (one query)."""
        refs = list(refs)
        views = {parse_reference(r).view for r in refs}
        if not views:
            return []
        # where several cover one feature, the one that retires it first decides
        active = sorted(self.repo.deprecations(views=views),
                        key=lambda d: (d.retire_on is None, d.retire_on or 0, d.requested_at))
        out = []
        for text in refs:
            r = parse_reference(text)
            for dep in active:
                if r.version is not None and dep.covers(r.view, r.version, r.feature):
                    out.append((text, dep))
                    break
        return out

    def on_read(self, matches: Sequence[tuple[str, Deprecation]], *, reader: str,
                deployment: str | None = None, rows: int = 1) -> None:
        """Check a read of the deprecated features ``matches``: a retired one fails unless
        ``deployment`` has an exception for its view version; the others warn once per
        process and are counted under ``reader`` (``offline``, ``online``, ``dep_...``)."""
        if not matches:
            return
        now = now_us()
        for ref, dep in matches:
            if dep.retired(now) and not self._excepted(deployment, ref):
                instead = (f"read {dep.replacement} instead" if dep.replacement
                           else "no replacement was named")
                who = (f"deployment {deployment} has no exception for it (featureledger "
                       "deploy --exception VIEW@N=REASON records one)" if deployment
                       else "only a deployment with a recorded exception may still read it")
                raise FeatureRetiredError(
                    f"{ref} was retired on {from_us(dep.retire_on or 0).date().isoformat()} "
                    f"({dep.reason}); {instead}. Nothing was read: {who}",
                    feature=ref, replacement=dep.replacement)
        db = self.repo.db
        for ref, dep in matches:
            key = (db.url, db.project, dep.deprecation_id, ref)
            if key not in _WARNED:
                _WARNED.add(key)
                warnings.warn(DeprecatedFeatureWarning(f"reading {ref}: {dep.describe()}"),
                              stacklevel=4)
        self.reads.add(deployment or reader, [ref for ref, _ in matches], rows)

    def _excepted(self, deployment: str | None, ref: str) -> bool:
        if deployment is None:
            return False
        r = parse_reference(ref)
        with self._lock:
            got = self._exceptions.get(deployment)
        if got is None or time.monotonic() - got[0] > _EXCEPTIONS_TTL_S:
            e = schema.deployment_exceptions
            with self.repo.db.read() as conn:
                fvs = frozenset(v for (v,) in conn.execute(
                    sa.select(e.c.feature_version).where(self.repo.db.scope(e),
                                                         e.c.deployment_id == deployment)))
            got = (time.monotonic(), fvs)
            with self._lock:
                self._exceptions[deployment] = got
        return f"{r.view}@{r.version}" in got[1]

    def flush(self) -> int:
        """Write the pending read counts."""
        return self.reads.flush()


class LifecycleRepository:
    """Retention policies, deprecations, deprecated-read counters, hypotheses."""

    def __init__(self, db: RegistryDB) -> None:
        self.db = db
        self.gate = DeprecationGate(self)

    # -- retention policies -----------------------------------------------------------
    def set_retention(self, view: str, *, keep_days: int | None, keep_last: int | None,
                      reason: str) -> RetentionPolicy | None:
        """Set (or, with neither bound, remove) the retention of ``view`` (audited)."""
        t = schema.retention_policies
        policy = None if keep_days is None and keep_last is None else RetentionPolicy(
            view, keep_days, keep_last, reason, now_us(), self.db.actor)
        with self.db.write(lock_key=f"retention:{view}") as conn:
            conn.execute(t.delete().where(self.db.scope(t), t.c.view_name == view))
            if policy is not None:
                conn.execute(t.insert().values(
                    project=self.db.project, view_name=view, keep_days=keep_days,
                    keep_last=keep_last, reason=reason, set_at=policy.set_at,
                    set_by=policy.set_by))
            self.db.audit(conn, "retention_policy", "feature_view", view,
                          {"keep_days": keep_days, "keep_last": keep_last}, reason=reason)
        return policy

    def retention_policies(self, view: str | None = None) -> list[RetentionPolicy]:
        t = schema.retention_policies
        q = sa.select(t).where(self.db.scope(t)).order_by(t.c.view_name)
        if view is not None:
            q = q.where(t.c.view_name == view)
        with self.db.read() as conn:
            return [RetentionPolicy(r.view_name, r.keep_days, r.keep_last, r.reason,
                                    r.set_at, r.set_by) for r in conn.execute(q)]

    # -- deprecations -----------------------------------------------------------------
    def insert_deprecation(self, conn: Connection, dep: Deprecation) -> None:
        """Record ``dep`` inside the caller's write transaction (audited there)."""
        conn.execute(schema.deprecations.insert().values(
            project=self.db.project, deprecation_id=dep.deprecation_id, view_name=dep.view,
            view_version=dep.version, feature=dep.feature, reason=dep.reason,
            replacement=dep.replacement, retire_on=dep.retire_on,
            requested_at=dep.requested_at, requested_by=dep.requested_by,
            forced_reason=dep.forced_reason))
        self.db.audit(conn, "deprecate", "feature_view", dep.target, {
            "deprecation": dep.deprecation_id, "replacement": dep.replacement,
            "retire_on": dep.retire_on, "forced": dep.forced_reason}, reason=dep.reason)

    def deprecations(self, *, views: Iterable[str] | None = None, withdrawn: bool = False,
                     conn: Connection | None = None) -> list[Deprecation]:
        """Deprecations in effect (with ``withdrawn``, every one), oldest first."""
        t = schema.deprecations
        q = sa.select(t).where(self.db.scope(t)).order_by(t.c.requested_at,
                                                           t.c.deprecation_id)
        if views is not None:
            q = q.where(t.c.view_name.in_(sorted(set(views))))
        if not withdrawn:
            q = q.where(t.c.withdrawn_at.is_(None))
        if conn is not None:
            return [_deprecation(r) for r in conn.execute(q)]
        with self.db.read() as c:
            return [_deprecation(r) for r in c.execute(q)]

    def get_deprecation(self, deprecation_id: str, conn: Connection | None = None
                        ) -> Deprecation:
        found = [d for d in self.deprecations(withdrawn=True, conn=conn)
                 if d.deprecation_id == deprecation_id]
        if not found:
            raise StateError(f"unknown deprecation {deprecation_id!r}; list them with "
                             "'featureledger deprecations'")
        return found[0]

    def approve(self, deprecation_id: str, reason: str | None = None) -> Deprecation:
        """Approve a deprecation as this registry's principal, who must not be the one who
        requested it (audited)."""
        t = schema.deprecations
        with self.db.write(lock_key=f"deprecation:{deprecation_id}") as conn:
            dep = self.get_deprecation(deprecation_id, conn)
            if dep.withdrawn_at is not None:
                raise StateError(f"deprecation {deprecation_id} ({dep.target}) was withdrawn; "
                                 "there is nothing to approve")
            if dep.approved:
                raise StateError(f"deprecation {deprecation_id} ({dep.target}) was approved "
                                 f"by {dep.approved_by} already")
            if dep.requested_by == self.db.actor:
                raise StateError(
                    f"{self.db.actor} requested deprecation {deprecation_id} ({dep.target}) "
                    "and cannot approve it too; another principal must approve it")
            conn.execute(t.update().where(self.db.scope(t),
                                          t.c.deprecation_id == deprecation_id)
                         .values(approved_at=now_us(), approved_by=self.db.actor))
            self.db.audit(conn, "approve_deprecation", "feature_view", dep.target,
                          {"deprecation": deprecation_id, "requested_by": dep.requested_by},
                          reason=reason)
        return self.get_deprecation(deprecation_id)

    def withdraw(self, conn: Connection, dep: Deprecation, reason: str) -> None:
        """End ``dep`` inside the caller's write transaction (audited there)."""
        t = schema.deprecations
        conn.execute(t.update().where(self.db.scope(t),
                                      t.c.deprecation_id == dep.deprecation_id)
                     .values(withdrawn_at=now_us(), withdrawn_by=self.db.actor))
        self.db.audit(conn, "withdraw_deprecation", "feature_view", dep.target,
                      {"deprecation": dep.deprecation_id}, reason=reason)

    def approval_problems(self, conn: Connection) -> list[tuple[str, str, dict[str, str]]]:
        """``(code, message, ids)`` for each deprecation in effect that nobody but its
        requester approved, and each deprecated or retired version that no recorded
        deprecation covers (its status was set without one)."""
        out = []
        now = now_us()
        deps = self.deprecations(conn=conn)
        for dep in deps:
            if dep.approved:
                continue
            what = "retirement" if dep.retired(now) else "deprecation"
            out.append((f"{what}_unapproved",
                        f"{dep.target}: the {what} requested by {dep.requested_by} "
                        f"({dep.reason}) has no approval by another principal; approve it: "
                        f"featureledger deprecations --approve {dep.deprecation_id}, or "
                        "withdraw it", {"deprecation": dep.deprecation_id,
                                        "target": dep.target}))
        d = schema.definitions
        rows = conn.execute(sa.select(d.c.name, d.c.version, d.c.status).where(
            self.db.scope(d), d.c.kind == "feature_view",
            d.c.status.in_(("deprecated", "retired"))).order_by(d.c.name, d.c.version))
        for name, version, status in rows:
            if not any(dep.covers(name, version, None) and dep.feature is None
                       for dep in deps):
                out.append(("deprecation_unrecorded",
                            f"{name}@{version} is {status}, but no recorded deprecation "
                            "covers it (its status was set without a request and an "
                            "approval); deprecate it with featureledger deprecate, or set it "
                            "back", {"feature_version": f"{name}@{version}"}))
        return out

    def read_counts(self, since_us: int | None = None) -> list[dict[str, Any]]:
        """Deprecated-read counters (pending ones flushed first), oldest bucket first."""
        self.gate.flush()
        t = schema.deprecated_reads
        q = sa.select(t).where(self.db.scope(t)).order_by(t.c.bucket_start, t.c.feature,
                                                           t.c.reader)
        if since_us is not None:
            q = q.where(t.c.bucket_start >= since_us)
        with self.db.read() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    # -- reviews of breaking changes ----------------------------------------------------
    def review_breaking(self, view: str, version: int, reason: str | None = None) -> None:
        """Record that this registry's principal reviewed the breaking change that made
        ``view@version`` (audited); whoever applied it cannot review it."""
        d = schema.definitions
        with self.db.write(lock_key=f"review:{view}") as conn:
            row = conn.execute(sa.select(d.c.created_by, d.c.breaking_reason).where(
                self.db.scope(d), d.c.kind == "feature_view", d.c.name == view,
                d.c.version == version)).first()
            if row is None or row.breaking_reason is None:
                raise StateError(f"{view}@{version} was not applied as a breaking change "
                                 "(--allow-breaking); there is nothing to review")
            if row.created_by == self.db.actor:
                raise StateError(f"{self.db.actor} applied {view}@{version} and cannot "
                                 "review it too; another principal must review it")
            self.db.audit(conn, "review_breaking", "feature_view", f"{view}@{version}",
                          {"applied_by": row.created_by}, reason=reason)

    def unreviewed_breaking(self) -> list[dict[str, Any]]:
        """Versions applied as breaking changes that no other principal reviewed."""
        d, a = schema.definitions, schema.audit_log
        with self.db.read() as conn:
            reviewed = {oid for (oid,) in conn.execute(sa.select(a.c.object_id).where(
                self.db.scope(a), a.c.object_kind == "feature_view",
                a.c.action == "review_breaking"))}
            rows = conn.execute(sa.select(d.c.name, d.c.version, d.c.created_by,
                                          d.c.created_at, d.c.breaking_reason).where(
                self.db.scope(d), d.c.kind == "feature_view",
                d.c.breaking_reason.is_not(None)).order_by(d.c.name, d.c.version)).all()
        return [{"feature_version": f"{r.name}@{r.version}", "applied_by": r.created_by,
                 "applied_at": r.created_at, "reason": r.breaking_reason}
                for r in rows if f"{r.name}@{r.version}" not in reviewed]

    # -- hypotheses -------------------------------------------------------------------
    def record_hypothesis(self, conn: Connection, view: str, version: int,
                          experiment_id: str, hypothesis: str) -> None:
        """Record, inside the caller's write transaction, the experiment and hypothesis
        ``view@version`` was created for, with its lineage edge (audited)."""
        from featureledger.registry.lineage_edges import MOTIVATED, record_edges, view_node

        conn.execute(schema.version_hypotheses.insert().values(
            project=self.db.project, view_name=view, view_version=version,
            experiment_id=experiment_id, hypothesis=hypothesis, created_at=now_us(),
            created_by=self.db.actor))
        record_edges(conn, [(experiment_id, view_node(view, version), MOTIVATED)])
        self.db.audit(conn, "hypothesis", "feature_view", f"{view}@{version}",
                      {"experiment": experiment_id}, reason=hypothesis)

    def hypotheses(self, view: str | None = None) -> list[dict[str, Any]]:
        t, e = schema.version_hypotheses, schema.experiments
        q = (sa.select(t, e.c.name.label("experiment"))
             .join(e, e.c.experiment_id == t.c.experiment_id)
             .where(self.db.scope(t, e)).order_by(t.c.view_name, t.c.view_version))
        if view is not None:
            q = q.where(t.c.view_name == view)
        with self.db.read() as conn:
            return [{"view": r.view_name, "version": r.view_version,
                     "experiment_id": r.experiment_id, "experiment": r.experiment,
                     "hypothesis": r.hypothesis, "created_at": r.created_at,
                     "created_by": r.created_by} for r in conn.execute(q)]

    # -- the decision log ---------------------------------------------------------------
    def decisions(self, view: str) -> list[dict[str, Any]]:
        """The audited decisions about ``view``, oldest first: versions applied (with a
        breaking-change reason), documentation changes, deprecations and approvals,
        hypotheses, retention policies, and quarantines, rollbacks, restores and expiries
        of its commits; each with who, when, what and the reason given."""
        a, c = schema.audit_log, schema.commits
        about_view = sa.and_(a.c.object_kind == "feature_view", sa.or_(
            a.c.object_id == view, a.c.object_id.like(f"{_like(view)}@%", escape="\\"),
            a.c.object_id.like(f"{_like(view)}:%", escape="\\")))
        commit_ids = sa.select(c.c.commit_id).where(self.db.scope(c), c.c.view_name == view)
        about_commits = sa.and_(a.c.object_kind == "commit",
                                a.c.action.like("commit_status:%"),
                                a.c.object_id.in_(commit_ids))
        q = (sa.select(a.c.at, a.c.actor, a.c.action, a.c.object_kind, a.c.object_id,
                       a.c.details)
             .where(self.db.scope(a), sa.or_(about_view, about_commits)).order_by(a.c.id))
        with self.db.read() as conn:
            rows = conn.execute(q).all()
        out = []
        for r in rows:
            details = json.loads(r.details)
            reason = details.get("reason") or details.get("breaking_reason")
            out.append({"at": r.at, "at_iso": from_us(r.at).isoformat(), "actor": r.actor,
                        "action": r.action, "object": r.object_id, "reason": reason,
                        "decision": details.get("decision", "allow")})
        return out

    def count_denied(self) -> int:
        """Audit entries of denied requests: their ``decision`` column, written from the
        access decision itself (not text found in their details)."""
        a = schema.audit_log
        with self.db.read() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(a).where(
                self.db.scope(a), a.c.decision == "deny")).scalar() or 0)


def _like(text: str) -> str:
    """``text`` with LIKE's wildcards escaped."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
