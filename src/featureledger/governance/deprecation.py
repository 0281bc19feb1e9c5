"""Deprecation schedules: deprecate a view, a view version or a feature, with a reason, a
replacement and a retirement date.

``deprecate("driver_stats@1:conv_rate", "biased", replacement="driver_stats@2:conv_rate",
retire_on="2025-01-31")`` records the deprecation (audited, in the catalog's decision log)
in one registry transaction; a whole view or version also gets status ``deprecated`` (what
``deploy`` and ``reconcile`` already look at). From then on:

* every offline and online read of a feature it covers warns once per process
  (:class:`~featureledger.errors.DeprecatedFeatureWarning`) and is counted (governance
  metrics: deprecated features still read);
* from ``retire_on`` on, such reads fail before any data is read
  (:class:`~featureledger.errors.FeatureRetiredError`, naming the replacement), except
  online reads through a deployment with a recorded exception for that view version
  (``deploy(..., exceptions=...)``, ``featureledger deploy --exception``).

Deprecating or retiring what an active deployment reads is refused, naming the
deployments, unless ``force`` gives the reason (recorded). Approval: another principal
approves (``approve``); ``reconcile`` reports deprecations and retirements nobody else
approved (see :mod:`featureledger.registry.lifecycle`).
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from featureledger.errors import StateError, UnknownFeatureError
from featureledger.governance.access import AccessControl
from featureledger.model.ids import new_id
from featureledger.model.references import parse_reference
from featureledger.model.timeutil import now_us, to_us
from featureledger.registry.lifecycle import Deprecation, parse_target
from featureledger.registry.models import DEPLOY_GATE

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from featureledger.context import StoreContext


def parse_retire_date(value: Any) -> int:
    """``retire_on`` (a date, a datetime or ISO text) as µs UTC: a date means the start of
    that day (UTC), a datetime that instant.

    >>> parse_retire_date("1970-01-02")
    86400000000
    """
    if isinstance(value, str):
        try:
            value = (dt.date.fromisoformat(value) if len(value) == 10
                     else dt.datetime.fromisoformat(value))
        except ValueError:
            raise StateError(f"retire_on={value!r} is not a date; write it as "
                             "YYYY-MM-DD") from None
    if isinstance(value, dt.datetime):
        return int(to_us(value))
    if isinstance(value, dt.date):
        return int(to_us(dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)))
    raise StateError(f"retire_on={value!r} is not a date; pass a datetime.date or "
                     "'YYYY-MM-DD'")


class DeprecationService:
    """Deprecations and their approvals (constructed as ``DeprecationService(ctx)``)."""

    def __init__(self, ctx: StoreContext) -> None:
        self.ctx = ctx

    def deprecate(self, target: str, reason: str, *, replacement: str | None = None,
                  retire_on: Any = None, force: str | None = None) -> Deprecation:
        """Deprecate ``target`` (``view``, ``view@N``, ``view:feature``,
        ``view@N:feature``); see the module docstring."""
        registry = self.ctx.registry
        if not reason or not reason.strip():
            raise StateError("a deprecation needs a reason, e.g. 'biased; use conv_rate_v2'")
        if force is not None and not force.strip():
            raise StateError("force needs a reason (it is recorded), e.g. 'model retrains "
                             "on the replacement next week'")
        view, version, feature = parse_target(target)
        versions = self._versions(view, version, feature)
        for v in versions:  # with a policy in force: ``deprecate`` on each version
            self.ctx.part(AccessControl).require_view("deprecate", view, v,
                                                      what=f"deprecating {target}")
        if replacement is not None:
            self._check_replacement(replacement)
        retire_us = None if retire_on is None else parse_retire_date(retire_on)
        dep = Deprecation(new_id("dpr"), view, version, feature, reason.strip(), replacement,
                          retire_us, now_us(), registry.actor, forced_reason=force)
        with registry.db.write(lock_key=f"deprecate:{view}") as conn:
            registry.db.lock(conn, DEPLOY_GATE)  # no deploy lands between check and insert
            users = self._deployments_reading(dep, conn)
            if users and force is None:
                raise StateError(
                    f"{dep.target} cannot be deprecated: active deployment(s) read it: "
                    + ", ".join(f"{d} ({ref})" for d, ref in users)
                    + ". Nothing was changed: redeploy them on the replacement first, or "
                    "pass force='REASON' (CLI --force REASON) to go ahead anyway")
            registry.lifecycle.insert_deprecation(conn, dep)
            if feature is None:
                for v in versions:
                    registry.definitions.set_status_in(conn, "feature_view", view, v,
                                                       "deprecated", dep.reason)
        return dep

    def retire(self, target: str, reason: str, *, replacement: str | None = None,
               force: str | None = None) -> Deprecation:
        """Deprecate ``target`` with ``retire_on`` now: reads of it fail from now on."""
        return self.deprecate(target, reason, replacement=replacement,
                              retire_on=dt.datetime.now(dt.UTC), force=force)

    def approve(self, deprecation_id: str, reason: str | None = None) -> Deprecation:
        """Approve a deprecation (the approver must not be its requester; audited)."""
        return self.ctx.registry.lifecycle.approve(deprecation_id, reason)

    def withdraw(self, deprecation_id: str, reason: str) -> Deprecation:
        """End a deprecation: reads of what it covered are plain reads again (audited);
        versions it marked deprecated are active again unless another deprecation covers
        them."""
        registry = self.ctx.registry
        if not reason or not reason.strip():
            raise StateError("withdrawing a deprecation needs a reason")
        view = registry.lifecycle.get_deprecation(deprecation_id).view
        # the lock deprecate takes: a deprecation of the view landing meanwhile is among
        # the ``others`` that keep its versions deprecated
        with registry.db.write(lock_key=f"deprecate:{view}") as conn:
            dep = registry.lifecycle.get_deprecation(deprecation_id, conn)
            if dep.withdrawn_at is not None:
                raise StateError(f"deprecation {deprecation_id} was withdrawn already")
            registry.lifecycle.withdraw(conn, dep, reason)
            if dep.feature is None:
                others = [d for d in registry.lifecycle.deprecations(views=[dep.view],
                                                                     conn=conn)
                          if d.deprecation_id != deprecation_id and d.feature is None]
                for v in self._versions(dep.view, dep.version, None):
                    if not any(d.covers(dep.view, v, None) for d in others):
                        registry.definitions.set_status_in(conn, "feature_view", dep.view,
                                                           v, "active", reason)
        return registry.lifecycle.get_deprecation(deprecation_id)

    def deprecations(self, *, view: str | None = None,
                     withdrawn: bool = False) -> list[Deprecation]:
        """Deprecations in effect (every one with ``withdrawn``), oldest first."""
        return self.ctx.registry.lifecycle.deprecations(
            views=None if view is None else [view], withdrawn=withdrawn)

    # -- checks -------------------------------------------------------------------------
    def _versions(self, view: str, version: int | None, feature: str | None) -> list[int]:
        """The existing versions ``target`` covers; a feature must be in at least one."""
        recs = self.ctx.registry.definitions.versions("feature_view", view)
        if version is not None:
            recs = [self.ctx.registry.definitions.get("feature_view", view, version)]
        if feature is not None:
            having = [r for r in recs if feature in r.definition.feature_names]
            if not having:
                where = f"{view}@{version}" if version is not None else f"any version of {view}"
                raise UnknownFeatureError(
                    f"{feature!r} is not a feature of {where}; its features are "
                    f"{', '.join(recs[-1].definition.feature_names)}")
            recs = having
        return [r.version for r in recs]

    def _check_replacement(self, replacement: str) -> None:
        """The replacement must exist (a view, view version or feature)."""
        view, version, feature = parse_target(replacement)
        rec = self.ctx.registry.definitions.get("feature_view", view, version)
        if feature is not None:
            rec.definition.require_feature(feature)

    def _deployments_reading(self, dep: Deprecation, conn: Connection
                             ) -> list[tuple[str, str]]:
        """(deployment id, feature) of active deployments reading what ``dep`` covers, as
        ``conn`` (holding the deploy gate) sees them."""
        out = []
        for d in self.ctx.registry.models.list_deployments(active_only=True, conn=conn):
            for text in d.features:
                r = parse_reference(text)
                if r.version is not None and dep.covers(r.view, r.version, r.feature):
                    out.append((d.deployment_id, text))
        return out
