"""The one access check: every read and write of the SDK, the CLI and the server passes here.

``AccessControl`` is a part of the store context (``ctx.part(AccessControl)``), placed below
offline retrieval, online serving, ingestion, push, apply and tracking in the layers, so
each of them asks it before touching data:

=================  =========================================================================
action             asked by
=================  =========================================================================
``read_offline``   get_historical_features, get_features_in_window, reproduce, get_dataset
``read_online``    get_online_features (features, feature sets, models, deployments)
``write``          ingest, push, materialize, derive
``apply``          apply (each definition that changes)
``deprecate``      deprecate
``quarantine``     quarantine, rollback, restore
``admin``          apply of the access policy, gc
=================  =========================================================================

Without an applied policy every request is allowed (access is open, as before); with one,
a request is allowed only if the policy grants the action on every resource it names
(deny by default). A refused request raises :class:`PermissionDeniedError` naming the
principal, the action, the resource and the missing grant, before any data is read or
written, and leaves exactly one audit entry (``decision: deny``); if that entry cannot be
written the request fails with the registry's error instead, and still does nothing.

A policy applied by another process takes effect here within ``serving.poll_interval_s``
(the registry is asked whether it changed at most that often, as online serving does);
one applied by this process, at once.

The principal is the registry's actor: the store's own (``FeatureStore(principal=...)``,
``FEATURELEDGER_PRINCIPAL``, else the OS user) or, inside ``acting_as``, the one a server
request authenticated as. The policy is compiled once per registry generation and each
allowed (principal, action, resource) is cached, so a repeated request costs dict lookups;
online serving caches further per (principal, read plan).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from featureledger.errors import PermissionDeniedError
from featureledger.governance.policy import CompiledPolicy, Decision, Policy, Resource
from featureledger.registry.actor import acting_principal

if TYPE_CHECKING:
    from featureledger.context import StoreContext
    from featureledger.registry.policies import PolicyRecord

REGION_TAG = "region"
_POLICY_RESOURCE = "policy"


def _tags(*tag_maps: dict[str, str]) -> tuple[str, ...]:
    out: dict[str, None] = {}
    for tags in tag_maps:
        for k, v in tags.items():
            out[k] = None
            out[f"{k}={v}"] = None
    return tuple(out)


class AccessControl:
    """Decides, audits and refuses (see the module docstring)."""

    def __init__(self, ctx: StoreContext) -> None:
        self.ctx = ctx
        self.registry = ctx.registry
        self.project = ctx.registry.project
        self._lock = threading.Lock()
        self._generation: int | None = None
        self._record: PolicyRecord | None = None
        self._compiled: CompiledPolicy | None = None
        self._allowed: set[tuple[str, str, Resource]] = set()
        # feature view definitions by (name, version or None), for this registry generation
        self._views: dict[tuple[str, int | None], Any] = {}
        # the registry is asked whether it changed at most every poll interval (as online
        # serving does); writes of this process mark it at once
        self._poll_s = ctx.config.serving.poll_interval_s
        self._next_check = 0.0
        self._dirty = True
        ctx.registry.db.on_write(self._changed)

    # -- who and what ---------------------------------------------------------------------
    def principal(self) -> str:
        """Who is asking: the principal this context acts as, else the store's own."""
        return acting_principal() or self.registry.db.principal

    def feature_resources(self, view: Any, features: Iterable[str]) -> list[Resource]:
        """The resources of ``features`` of feature view definition ``view``: its tags with
        the field's, its owner, and the field's region (else the view's)."""
        out = []
        for name in features:
            fld = next((f for f in view.fields if f.name == name), None)
            ftags = fld.tags if fld is not None else {}
            region = ftags.get(REGION_TAG) or view.tags.get(REGION_TAG, "")
            out.append(Resource(view.name, name, _tags(view.tags, ftags), view.owner,
                                self.project, region))
        return out

    def object_resource(self, definition: Any, kind: str = "feature_view") -> Resource:
        """The resource of a whole definition (a view: every feature of it)."""
        tags = dict(getattr(definition, "tags", {}) or {})
        return Resource(definition.name, "*", _tags(tags), getattr(definition, "owner", ""),
                        self.project, tags.get(REGION_TAG, ""), kind)

    def policy_resource(self) -> Resource:
        return Resource(_POLICY_RESOURCE, "*", (), "", self.project, "", "policy")

    # -- the policy in force ----------------------------------------------------------------
    def _changed(self) -> None:
        self._dirty = True

    def _current(self) -> tuple[PolicyRecord | None, CompiledPolicy | None]:
        now = time.monotonic()
        if not self._dirty and now < self._next_check:
            return self._record, self._compiled
        self._dirty = False
        self._next_check = now + self._poll_s
        # A decision depends on the policy version and on the resource (its tags, owner and
        # region are part of the key), not on the rest of the registry: the policy is read
        # again when the registry changed, and compiled, with the decisions cached afresh,
        # only when it is another version.
        generation = self.registry.generation()
        if generation != self._generation:
            with self._lock:
                if generation != self._generation:
                    record = self.registry.policies.current()
                    old = self._record
                    if (record is None) != (old is None) or (
                            record is not None and old is not None
                            and record.policy_hash != old.policy_hash):
                        self._compiled = (None if record is None
                                          else Policy.model_validate(record.spec).compile())
                        self._allowed = set()
                    self._record = record
                    self._views = {}
                    self._generation = generation
        return self._record, self._compiled

    def policy(self) -> PolicyRecord | None:
        """The applied policy version in force, or None (access is open)."""
        return self._current()[0]

    def explain(self, principal: str, action: str, resource: Resource) -> Decision:
        """The policy's decision, without enforcing or auditing it (allowed when no
        policy is applied)."""
        compiled = self._current()[1]
        return Decision(True) if compiled is None else compiled.decide(principal, action,
                                                                       resource)

    def enabled(self) -> bool:
        """Whether a policy is applied (else every request is allowed)."""
        return self._current()[1] is not None

    # -- the check ----------------------------------------------------------------------------
    def require(self, action: str, resources: Sequence[Resource], *, what: str,
                principal: str | None = None) -> None:
        """Allow ``action`` on every resource, or audit one denial and raise
        PermissionDeniedError (``what`` says what was asked, e.g. 'historical retrieval')."""
        record, compiled = self._current()
        if compiled is not None and resources:
            self._require(record, compiled, action, resources, what, principal)

    def _require(self, record: PolicyRecord | None, compiled: CompiledPolicy, action: str,
                 resources: Sequence[Resource], what: str, principal: str | None) -> None:
        who = principal or self.principal()
        allowed = self._allowed
        denied: list[tuple[Resource, Decision]] = []
        for res in resources:
            key = (who, action, res)
            if key in allowed:
                continue
            decision = compiled.decide(who, action, res)
            if decision.allowed:
                allowed.add(key)
            else:
                denied.append((res, decision))
        if denied:
            self._deny(record, who, action, what, denied)

    def _deny(self, record: PolicyRecord | None, who: str, action: str, what: str,
              denied: list[tuple[Resource, Decision]]) -> None:
        version = record.version if record is not None else 0
        first, decision = denied[0]
        labels = [r.label for r, _ in denied]
        # the denial is recorded before the caller hears of it; a failed write raises here
        self.registry.db.audit_now(
            action, first.kind if first.feature == "*" else "feature", first.label,
            {"request": what, "denied": labels, "policy_version": version},
            actor=who, decision="deny", reason=decision.reason)
        more = f" (and {len(labels) - 1} more: {', '.join(labels[1:4])}" \
            f"{', ...' if len(labels) > 4 else ''})" if len(labels) > 1 else ""
        raise PermissionDeniedError(
            f"principal {who!r} may not {action} {first.describe()}{more} in {what}: "
            f"{decision.reason}. Nothing was read or written. The access policy "
            f"(version {version}) must grant {action} on it to {who!r} (ask an administrator "
            "of the policy), or act as a principal that holds that grant",
            principal=who, action=action, resources=tuple(labels))

    # -- conveniences for the parts -----------------------------------------------------------
    def require_features(self, action: str, view: Any, features: Iterable[str], *,
                         what: str) -> None:
        self.require(action, self.feature_resources(view, features), what=what)

    def require_reads(self, action: str,
                      views: Iterable[tuple[str, int | None, Iterable[str] | None]], *,
                      what: str) -> None:
        """``action`` (a read) on the features of each ``(view, version, features)``
        (version None: the latest; features None: every field)."""
        record, compiled = self._current()
        if compiled is None:
            return
        resources: list[Resource] = []
        for name, version, features in views:
            view = self._views.get((name, version))
            if view is None:
                view = self._views[(name, version)] = self.registry.definitions.get(
                    "feature_view", name, version).definition
            resources.extend(self.feature_resources(
                view, view.feature_names if features is None else features))
        if resources:
            self._require(record, compiled, action, resources, what, None)

    def require_object(self, action: str, definition: Any, *, what: str,
                       kind: str = "feature_view") -> None:
        """``action`` on a definition as a whole (a view for write, quarantine, ...)."""
        if self.enabled():
            self.require(action, [self.object_resource(definition, kind)], what=what)

    def require_view(self, action: str, name: str, version: int | None = None, *,
                     what: str) -> None:
        """``action`` on feature view ``name`` (the latest version unless given)."""
        if self.enabled():
            rec = self.registry.definitions.get("feature_view", name, version)
            self.require(action, [self.object_resource(rec.definition)], what=what)

    def require_admin(self, *, what: str) -> None:
        """``admin``: the access policy itself, and maintenance of the whole project."""
        if self.enabled():
            self.require("admin", [self.policy_resource()], what=what)
