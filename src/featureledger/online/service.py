"""Online serving: feature vectors, the cache, and the parts that keep them current.

``OnlineService(ctx)`` is what ``FeatureStore.get_online_features`` and ``push`` forward
to; materialization is :class:`featureledger.online.materialization.MaterializationService`
(built on this service), commit-status sync :mod:`featureledger.online.sync`, pushes
:mod:`featureledger.online.push`, and the cached view-version facts they share
:mod:`featureledger.online.catalog`.

The read path is planned once per registry generation (references → tables, key
encoders, payload decoders, positions), then costs one store read per request plus the
decoding of the records it returns. When a commit is quarantined or rolled back, the keys
it touched are recomputed from the remaining committed commits (and restored commits are
loaded again), so the online store never serves a value the offline store would not.

Pushes are made durable in the push log before they are answered and land as commits
(``featureledger.online.push``); opening the service lands what a process that is gone
left in the log, before anything is served.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from time import monotonic as _monotonic
from typing import TYPE_CHECKING, Any

from featureledger.errors import InvalidReferenceError, RetrievalError
from featureledger.governance.access import AccessControl
from featureledger.online.cache import ChangeWatcher, OnlineCache
from featureledger.online.catalog import ViewCatalog
from featureledger.online.plan import EVERYONE, ReadPlan, build_plan, feature_set_references
from featureledger.online.push import Pusher
from featureledger.online.read import read_online
from featureledger.online.response import OnlineResponse
from featureledger.online.stores import RowReader, TableRef
from featureledger.online.sync import CommitStatusSync
from featureledger.quality.feature_log import FeatureLogger
from featureledger.registry.actor import acting_principal
from featureledger.registry.quality import QualityRepository

if TYPE_CHECKING:
    from featureledger.context import StoreContext
    from featureledger.registry.commits import CommitRecord



class OnlineService:
    """The online part of a feature store (built by the facade as ``OnlineService(ctx)``)."""

    def __init__(self, ctx: StoreContext) -> None:
        self.ctx = ctx
        self.registry = ctx.registry
        self.store = ctx.online_store
        cfg = ctx.config.serving
        self.cache = OnlineCache(cfg.cache_max_entries) if cfg.cache else None
        self._plans: dict[Any, ReadPlan] = {}
        self._models: dict[str, tuple[list[str], list[str]]] = {}
        self._request_view_names: frozenset[str] | None = None
        self._request_plans: dict[Any, Any] = {}
        self.catalog = ViewCatalog(self.registry)
        self.access = ctx.part(AccessControl)
        self._own_principal = self.registry.db.principal
        self.watcher = ChangeWatcher(self.registry, self.store, cfg.poll_interval_s,
                                     self._registry_changed, self._store_changed)
        self.sync = CommitStatusSync(ctx, self.store, self.catalog, self.invalidate,
                                     self.cache)
        self.pusher = Pusher(ctx, self.store, self.catalog.view, self.invalidate,
                             self.catalog.carried_by)
        q = ctx.config.quality
        self.feature_log = FeatureLogger(
            QualityRepository(ctx.registry.db), sample_rate=q.feature_log_sample_rate,
            batch_rows=q.feature_log_batch_rows,
            flush_interval_s=q.feature_log_flush_interval_s)
        self.watcher.refresh()
        # pushes a process that is gone acknowledged land first, as the commits their
        # online values cite; then quarantines and rollbacks are applied over them
        self.recovery = self.pusher.recover()
        self.sync.run()

    # -- change handling ---------------------------------------------------------------
    def _registry_changed(self) -> None:
        self._plans = {}
        self._request_view_names = None
        self._request_plans = {}
        self._models = {}
        self.catalog.clear()
        if self.cache is not None:
            self.cache.invalidate_all()
        if not self.sync.running:
            self.sync.run()

    def _store_changed(self) -> None:
        if self.cache is not None:
            self.cache.invalidate_all()

    def invalidate(self, table: TableRef) -> None:
        """Drop ``table`` from this process's read cache (after writing to it)."""
        if self.cache is not None:
            self.cache.invalidate_table(table)

    def sync_commit_status(self) -> list[str]:
        """Apply quarantines, rollbacks and restores to the online store (see sync.py)."""
        return self.sync.run()

    # -- reads ---------------------------------------------------------------------------
    def plan(self, features: Any = None, *, feature_set: str | None = None,
             full_feature_names: bool = False) -> ReadPlan:
        """The cached read plan for a request (built on the first request of a generation)."""
        self.watcher.check()
        key = (tuple(features) if isinstance(features, (list, tuple)) else features,
               feature_set, full_feature_names)
        plan = self._plans.get(key)
        if plan is None:
            if feature_set is not None:
                if features is not None:
                    raise RetrievalError("pass either features or feature_set, not both")
                refs = feature_set_references(self.registry, feature_set)
            else:
                refs = features
                if refs is None:
                    raise RetrievalError(
                        "no features requested; pass features=['view:feature', ...] or "
                        "feature_set='NAME'"
                    )
            plan = build_plan(self.registry, refs, full_feature_names=full_feature_names)
            self._plans[key] = plan
        if (acting_principal() or self._own_principal) not in plan.readers:
            self._admit(plan)
        return plan

    def _admit(self, plan: ReadPlan) -> None:
        """The access check of an online read: once per principal and plan (a plan lives
        one registry generation, and so does the policy it was checked against)."""
        if not self.access.enabled():
            plan.readers = EVERYONE  # open: until the registry (and so the plan) changes
            return
        who = acting_principal() or self._own_principal
        self.access.require("read_online", [
            r for g in plan.groups
            for r in self.access.feature_resources(g.view, [g.view.fields[fi].name
                                                            for _o, fi in g.columns])],
            what="an online read", principal=who)
        plan.readers.add(who)

    def model_features(self, model: str, entity_rows: Any, *, deployment: str | None = None,
                       full_feature_names: bool = False,
                       fill_defaults: bool = False) -> OnlineResponse:
        """The pinned features of ``model`` for ``entity_rows``; a read through a
        deployment (``dep_`` as ``model`` or ``deployment``) is counted in its usage."""
        target = deployment or model
        if target.startswith("dep_"):
            return self.get_online_features(entity_rows=entity_rows, deployment=target,
                                            full_feature_names=full_feature_names,
                                            fill_defaults=fill_defaults)
        return self.get_online_features(entity_rows=entity_rows, model=model,
                                        full_feature_names=full_feature_names,
                                        fill_defaults=fill_defaults)

    def get_online_features(self, features: Any = None, entity_rows: Any = None, *,
                            feature_set: str | None = None, full_feature_names: bool = False,
                            deployment: str | None = None, model: str | None = None,
                            fill_defaults: bool = False,
                            request_data: Mapping[str, Any] | None = None) -> OnlineResponse:
        """Feature values for ``entity_rows`` with a status, version and commit per value.

        ``features`` is a list of references (``view:feature``, ``view@2:feature``);
        alternatively ``feature_set`` (``NAME`` or ``NAME@VERSION``), or the features a
        ``deployment`` (``dep_...``) or ``model`` (``mdl_...``, ``name@N``, ``name``)
        consumes; a read through a deployment is counted in its usage counters.
        ``entity_rows`` is a list of dicts or a dict of columns. Values of ``NOT_FOUND``
        and ``OUTSIDE_TTL`` are None, or, with ``fill_defaults=True``, the field's
        declared default (the status stays). Request-time features (``request_view:field``)
        are computed from the served values of their inputs (which come along only when
        asked for themselves) and
        ``request_data`` (a dict of request value -> a value for every row or a list).
        """
        if request_data is not None:
            if feature_set is not None:  # a set may list request-time features too
                features = self._set_references(features, feature_set)
            return self._with_request_features(features, entity_rows, request_data or {},
                                               full_feature_names, fill_defaults)
        if deployment is not None or model is not None:
            if features is not None or feature_set is not None or (
                    deployment is not None and model is not None):
                raise RetrievalError("pass one of features, feature_set, deployment or "
                                     "model, not several")
            target: str = deployment if deployment is not None else model  # type: ignore[assignment]
            features, feature_versions = self._features_of(target)
            pinned = self.plan(features, full_feature_names=full_feature_names)
            if pinned.deprecated is not None:
                self._deprecated_read(pinned, entity_rows,
                                      target if target.startswith("dep_") else None)
            response = read_online(self.store, self.cache, pinned, entity_rows,
                                   fill_defaults)
            assert response is not None  # with a store, a read always answers
            if target.startswith("dep_"):
                self.registry.usage.add(target, feature_versions, rows=len(response))
            if self.feature_log.enabled:  # a sample of served vectors, for skew checks
                self.feature_log.maybe_log(
                    response.values, response.references,
                    deployment_id=target if target.startswith("dep_") else None,
                    model_id=target if not target.startswith("dep_") else None)
            return response
        # the plan lookup of ``plan()``, inlined: this is every request's path
        w = self.watcher
        if w._dirty or _monotonic() >= w._next_poll:
            w.refresh(only_if_due=True)
        plan = self._plans.get((tuple(features) if features.__class__ is list else features,
                                feature_set, full_feature_names))
        if plan is None:
            refs = features if feature_set is None else self._set_references(features,
                                                                            feature_set)
            if self._requests_views(refs):  # never a cached plan: checked on a miss
                return self._with_request_features(refs, entity_rows, {},
                                                   full_feature_names, fill_defaults)
            plan = self.plan(features, feature_set=feature_set,
                             full_feature_names=full_feature_names)
        elif (acting_principal() or self._own_principal) not in plan.readers:
            self._admit(plan)
        if plan.deprecated is not None:
            self._deprecated_read(plan, entity_rows, None)
        response = read_online(self.store, self.cache, plan, entity_rows, fill_defaults)
        assert response is not None  # with a store, a read always answers
        return response

    def _set_references(self, features: Any, feature_set: str) -> list[str]:
        if features is not None:
            raise RetrievalError("pass either features or feature_set, not both")
        return list(feature_set_references(self.registry, feature_set))

    def _deprecated_read(self, plan: ReadPlan, entity_rows: Any,
                         deployment: str | None) -> None:
        """A read of deprecated features: warned and counted; refused (before anything is
        read) for a retired one unless ``deployment`` has an exception for it."""
        assert plan.deprecated is not None
        rows = (len(next(iter(entity_rows.values()), ())) if isinstance(entity_rows, dict)
                else len(entity_rows) if isinstance(entity_rows, (list, tuple)) else 1)
        self.registry.lifecycle.gate.on_read(plan.deprecated, reader="online",
                                             deployment=deployment, rows=rows)

    def _requests_views(self, features: Any) -> bool:
        """Whether ``features`` names a request view (cached until the registry changes)."""
        if not isinstance(features, (list, tuple)):
            return False
        self.watcher.check()
        names = self._request_view_names
        if names is None:
            names = self._request_view_names = frozenset(
                rec.name for rec in self.registry.definitions.list("request_view"))
        return bool(names) and any(str(f).partition(":")[0].partition("@")[0] in names
                                   for f in features)

    def _with_request_features(self, features: Any, entity_rows: Any, request_data: Any,
                               full_feature_names: bool, fill_defaults: bool
                               ) -> OnlineResponse:
        """Read the stored features (and the request views' inputs), then compute the
        request views over them with :func:`compute_request_features`, as retrieval does."""
        from featureledger.offline.request_features import (
            compute_request_features,
            input_table,
            request_plan,
        )

        if not isinstance(request_data, dict):
            raise RetrievalError("request_data must be a dict of request value -> a value "
                                 "or a list of values, one per entity row")
        key = ("request", tuple(features), full_feature_names)
        got = self._request_plans.get(key)
        if got is None:
            got = self._request_plans[key] = request_plan(self.registry, list(features),
                                                          full_feature_names)
        stored, request = got
        plan = self.plan(stored, full_feature_names=full_feature_names)
        if plan.deprecated is not None:
            self._deprecated_read(plan, entity_rows, None)
        response = read_online(self.store, self.cache, plan, entity_rows, fill_defaults)
        assert response is not None  # with a store, a read always answers
        by_ref = {ref: name for name, ref in response.references.items()}
        computed = []
        from featureledger.model.definitions import RequestFeatureView

        for q in request:
            view = RequestFeatureView(**{k: v for k, v in q["definition"].items()
                                         if k != "kind"})
            cols = {n: by_ref[ref] for n, ref in q["inputs"].items()}
            inputs = input_table(view, {n: response.values[c] for n, c in cols.items()},
                                 request_data, {n: response.dtypes[c] for n, c in cols.items()},
                                 len(response))
            out = compute_request_features(view, inputs)
            for f, o in zip(q["fields"], q["outputs"], strict=True):
                computed.append((o, f"{q['name']}@{q['version']}:{f}", q["version"],
                                 view.field(f).dtype, out.column(f).to_pylist()))
        hidden = frozenset(by_ref[ref] for q in request for ref in q.get("hidden", ()))
        return response.with_computed(computed, hidden)

    def get_online_features_nowait(self, features: Any = None, entity_rows: Any = None, *,
                                   feature_set: str | None = None,
                                   full_feature_names: bool = False,
                                   fill_defaults: bool = False,
                                   reader: RowReader | None = None) -> OnlineResponse | None:
        """``get_online_features`` answered from memory alone (or with ``reader``), or None.

        None whenever answering would touch the registry or a store other than through
        ``reader``: the plan is not built yet, the change check is due, the principal's
        access to the plan was not checked yet, a read of deprecated features (counted in
        the registry); without a ``reader``, also the cache being off or a key not
        cached. A server calls it on its event loop, with ``reader`` a store reader that
        never waits (``SqliteOnlineStore.loop_reader``) or none, and falls back to a
        worker thread for the full read; a ``reader``'s errors are raised.
        """
        if self.cache is None and reader is None:
            return None
        w = self.watcher
        if w._dirty or _monotonic() >= w._next_poll:
            return None
        plan = self._plans.get((tuple(features) if features.__class__ is list else features,
                                feature_set, full_feature_names))
        if plan is None or plan.deprecated is not None or (
                acting_principal() or self._own_principal) not in plan.readers:
            # the full read checks the principal's access (and audits) and counts
            # deprecated reads
            return None
        return read_online(reader, self.cache, plan, entity_rows, fill_defaults)

    def _features_of(self, model: str) -> tuple[list[str], list[str]]:
        """The pinned references a model version (or a deployment, ``dep_...``) consumes,
        and the view versions they read; cached until the registry changes."""
        self.watcher.check()
        got = self._models.get(model)
        if got is None:
            mv = self.registry.models.get(model)
            # a model's own pinned references, whether it was logged with features=, a
            # feature set or a training dataset: that is the input it was trained on
            got = self._models[model] = (list(mv.features), list(mv.feature_versions))
        return got

    # -- push --------------------------------------------------------------------------
    def push(self, view: str, rows: Any, *, version: int | None = None,
             flush: bool = False, principal: str | None = None) -> str:
        """Validate ``rows``, make them durable and write them online now; they land
        offline as a commit (micro-batched; at once with ``flush=True``). Returns the id
        of the commit the rows belong to (see ``featureledger.online.push``). The commit
        is recorded as pushed by ``principal`` (a server's authenticated caller); by
        default the store's actor."""
        self.watcher.check()
        name, version = view_version(view, version)
        rec = self.registry.definitions.get("feature_view", name, version)
        self.access.require_object("write", rec.definition, what=f"a push to {rec.ref}")
        return self.pusher.push(TableRef(name, rec.version), rec.definition, rows,
                                flush=flush, principal=principal)

    def flush(self) -> list[CommitRecord]:
        """Land every buffered push offline now; returns the commits written."""
        return self.pusher.flush()

    # -- health ------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        """Reachability of the registry and both stores, and cache statistics."""
        out: dict[str, Any] = {}
        for name, probe in (("registry", self.registry.generation),
                            ("online_store", self.store.ping),
                            ("offline_store", self.ctx.offline_store.probe)):
            t0 = time.perf_counter()
            try:
                probe()
                out[name] = {"ok": True, "ms": round((time.perf_counter() - t0) * 1000, 2)}
            except Exception as exc:  # reported, never raised: health must answer
                out[name] = {"ok": False, "error": str(exc)}
        out["cache"] = self.cache.stats() if self.cache is not None else None
        out["generation"] = self.watcher.generation
        out["pending_push_rows"] = self.pusher.buffer.pending_rows
        out["push"] = self.pusher.health()
        return out

    def close(self) -> None:
        try:
            self.pusher.close()
        finally:
            try:
                self.feature_log.close()
            finally:
                self.watcher.close()


def view_version(text: str, version: int | None) -> tuple[str, int | None]:
    """``NAME`` or ``NAME@VERSION`` split (``version`` is the default for a bare name)."""
    name, at, ver = text.partition("@")
    if at:
        if not ver.isdigit() or not name or not 1 <= int(ver) < 2**31:
            raise InvalidReferenceError(
                f"view {text!r} is malformed; write 'NAME' or 'NAME@VERSION', e.g. "
                "'driver_stats' or 'driver_stats@2'"
            )
        return name, int(ver)
    return name, version
