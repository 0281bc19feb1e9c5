"""Online serving: materialization, feature vectors, push, cache and commit-status sync.

``OnlineService(ctx)`` is what ``FeatureStore.materialize``, ``materialize_incremental``,
``get_online_features`` and ``push`` forward to.

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

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from time import monotonic as _monotonic
from typing import TYPE_CHECKING, Any

from featureledger.errors import InvalidReferenceError, RetrievalError
from featureledger.events import MaterializeCompleted
from featureledger.model.projection import VersionProjection
from featureledger.model.timeutil import from_us, now_us, to_us
from featureledger.offline.engine import ViewScan
from featureledger.online.cache import ChangeWatcher, OnlineCache
from featureledger.online.materialize import (
    Materializer,
    TableResult,
    ViewProgress,
    encode_records,
)
from featureledger.online.plan import ReadPlan, build_plan, feature_set_references
from featureledger.online.push import Pusher
from featureledger.online.read import read_online
from featureledger.online.response import OnlineResponse
from featureledger.online.stores import TableRef

if TYPE_CHECKING:
    from featureledger.context import StoreContext
    from featureledger.registry.commits import CommitRecord

HIDDEN_META = "hidden_commits"
_HIDDEN = ("quarantined", "rolled_back")


@dataclass
class MaterializeResult:
    """What a materialization run loaded."""

    start: int | None
    end: int
    tables: list[TableResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def commits(self) -> list[str]:
        return [c for t in self.tables for c in t.commits]

    @property
    def keys_written(self) -> int:
        return sum(t.keys_written for t in self.tables)

    def to_dict(self) -> dict[str, Any]:
        return {
            "start": None if self.start is None else from_us(self.start).isoformat(),
            "end": from_us(self.end).isoformat(),
            "seconds": round(self.seconds, 3),
            "views": [
                {"view": str(t.table), "commits": t.commits, "keys": t.rows_read,
                 "written": t.keys_written, "seconds": round(t.seconds, 3)}
                for t in self.tables
            ],
        }


def _time(value: Any, name: str) -> int | None:
    if value is None:
        return None
    try:
        return to_us(value)
    except (TypeError, ValueError):
        raise RetrievalError(
            f"{name}={value!r} is not a time; pass a datetime, ISO text such as "
            "'2024-01-01T00:00:00Z', or microseconds since the epoch"
        ) from None


class OnlineService:
    """The online part of a feature store (built by the facade as ``OnlineService(ctx)``)."""

    def __init__(self, ctx: StoreContext) -> None:
        self.ctx = ctx
        self.registry = ctx.registry
        self.store = ctx.online_store
        cfg = ctx.config.serving
        self.cache = OnlineCache(cfg.cache_max_entries) if cfg.cache else None
        self._plans: dict[Any, ReadPlan] = {}
        self._views: dict[Any, Any] = {}
        self._chains: dict[TableRef, list[VersionProjection]] = {}
        self._carriers: dict[TableRef, list[tuple[TableRef, Any, VersionProjection]]] = {}
        self._models: dict[str, tuple[list[str], list[str]]] = {}
        self.watcher = ChangeWatcher(self.registry, self.store, cfg.poll_interval_s,
                                     self._registry_changed, self._store_changed)
        self._syncing = False
        self.pusher = Pusher(ctx, self.store, self._view, self._invalidate,
                             self._carried_by)
        self.watcher.refresh()
        # pushes a process that is gone acknowledged land first, as the commits their
        # online values cite; then quarantines and rollbacks are applied over them
        self.recovery = self.pusher.recover()
        self.sync_commit_status()

    # -- change handling ---------------------------------------------------------------
    def _registry_changed(self) -> None:
        self._plans = {}
        self._views = {}
        self._chains = {}
        self._carriers = {}
        self._models = {}
        if self.cache is not None:
            self.cache.invalidate_all()
        if not self._syncing:
            self.sync_commit_status()

    def _store_changed(self) -> None:
        if self.cache is not None:
            self.cache.invalidate_all()

    def _invalidate(self, table: TableRef) -> None:
        if self.cache is not None:
            self.cache.invalidate_table(table)

    def sync_commit_status(self) -> list[str]:
        """Bring the online store in line with quarantines, rollbacks and restores.

        Keys written from a commit that is no longer served are recomputed from the
        remaining committed commits; commits served again are loaded again. Returns the
        commit ids whose status change was applied.
        """
        self._syncing = True
        try:
            hidden = {c.commit_id: c for c in self.registry.commits.list(statuses=_HIDDEN)}
            raw = self.store.get_meta(HIDDEN_META)
            before = set(json.loads(raw)) if raw else set()
            newly_hidden = [c for cid, c in hidden.items() if cid not in before]
            newly_visible = sorted(before - hidden.keys())
            if not newly_hidden and not newly_visible:
                return []
            by_table: dict[TableRef, list[CommitRecord]] = {}
            for c in newly_hidden:
                for table in self._readers(c):
                    by_table.setdefault(table, []).append(c)
            for table, commits in by_table.items():
                self._repair(table, commits)
            if newly_visible:
                restored: dict[TableRef, list[CommitRecord]] = {}
                for c in self.registry.commits.get_many(newly_visible):
                    # a row edited outside featureledger stays hidden: this sync runs in
                    # the background of serving, where refusing would stop every read
                    if c.status == "committed" and not c.tampered:
                        for table in self._readers(c):
                            restored.setdefault(table, []).append(c)
                for table, commits in restored.items():
                    progress = ViewProgress.load(self.store, table)
                    view = self._view(table.view, table.version)
                    self._materializer().load(table, view, self._chain(table), commits,
                                              end=progress.end if progress else None)
                    self._invalidate(table)
            self.store.set_meta(HIDDEN_META, json.dumps(sorted(hidden)))
            if self.cache is not None:
                self.cache.invalidate_all()
            return [c.commit_id for c in newly_hidden] + newly_visible
        finally:
            self._syncing = False

    def _repair(self, table: TableRef, hidden: list[CommitRecord]) -> None:
        """Recompute the keys of hidden commits from the commits still served."""
        view = self._view(table.view, table.version)
        mat = self._materializer()
        from featureledger.errors import CommitFileError, CommitTamperedError

        try:
            keys: list[tuple[Any, ...]] | None = self._commit_keys(view, hidden)
        except (CommitFileError, CommitTamperedError):
            # quarantine is the advice for a lost file, and a lost file cannot say which
            # keys it wrote: rebuild the whole table from the commits still served
            keys = None
        if keys == []:
            return
        progress = ViewProgress.load(self.store, table)
        chain = self._chain(table)
        visible = [c for c in self.registry.commits.list(
            table.view, versions=[p.version for p in chain]) if not c.tampered]
        result = mat.query(view, chain, visible, start=None,
                           end=progress.end if progress else None, keys=keys) if visible else None
        records = encode_records(view, result) if result is not None else []
        if keys is None:
            self.store.delete(table)
        self.store.write(table, records, force=True)
        from featureledger.online.codec import KeyCodec

        codec = KeyCodec(view.join_keys)
        present = {r.key for r in records}
        gone = [] if keys is None else [
            k for k in codec.encode_columns(list(zip(*keys, strict=False))) if k not in present]
        if gone:
            self.store.delete(table, gone)
        self._invalidate(table)

    def _commit_keys(self, view: Any, commits: list[CommitRecord]) -> list[tuple[Any, ...]]:
        """The distinct keys the rows of ``commits`` hold."""
        offline = self.ctx.offline_store
        # keys are the same columns in every version that carries data: no projection
        chain = [VersionProjection(v, ()) for v in sorted({c.view_version for c in commits})]
        scan = ViewScan.of(
            join_keys=list(view.join_keys), timestamp_field=view.timestamp_field,
            created_field=None, features=[], output_names=[], dtypes=[], ttl_us=None,
            store=offline, commits=commits, chain=chain, tie_break=False, event_range=None)
        with offline.reading(commits):
            return self.ctx.engine.distinct_keys(scan)

    # -- definitions ---------------------------------------------------------------
    def _view(self, name: str, version: int | None) -> Any:
        key = (name, version)
        view = self._views.get(key)
        if view is None:
            rec = self.registry.definitions.get("feature_view", name, version)
            view = self._views[key] = rec.definition
            self._views[(name, rec.version)] = view
        return view

    def _chain(self, table: TableRef) -> list[VersionProjection]:
        """The versions whose commits ``table`` serves (itself first), with projections."""
        chain = self._chains.get(table)
        if chain is None:
            chain = self._chains[table] = self.registry.definitions.data_chain(
                table.view, table.version)
        return chain

    def _carried_by(self, table: TableRef) -> list[tuple[TableRef, Any, VersionProjection]]:
        """The newer versions whose data includes ``table``'s rows, each with its
        definition and how it projects them (pushes write there too)."""
        got = self._carriers.get(table)
        if got is None:
            got = []
            for rec in self.registry.definitions.versions("feature_view", table.view):
                if rec.version <= table.version:
                    continue
                reader = TableRef(rec.name, rec.version)
                p = next((p for p in self._chain(reader) if p.version == table.version), None)
                if p is not None:
                    got.append((reader, rec.definition, p))
            self._carriers[table] = got
        return got

    def _readers(self, commit: CommitRecord) -> list[TableRef]:
        """Every view version whose served data includes ``commit``'s rows."""
        out = []
        for rec in self.registry.definitions.versions("feature_view", commit.view_name):
            if rec.version < commit.view_version:
                continue
            table = TableRef(rec.name, rec.version)
            if any(p.version == commit.view_version for p in self._chain(table)):
                out.append(table)
        return out

    def _materializer(self) -> Materializer:
        return Materializer(self.store, self.ctx.engine, self.ctx.offline_store)

    def _tables(self, views: Sequence[str] | None) -> list[TableRef]:
        """Every view version to materialize (all versions of the named views)."""
        wanted: dict[str, set[int] | None] | None = None
        if views is not None:
            wanted = {}
            for v in views:
                name, ver = _view_version(v, None)
                self._view(name, ver)  # raises UnknownViewError
                if ver is not None:
                    cur = wanted.get(name, set())
                    if cur is not None:
                        cur.add(ver)
                        wanted[name] = cur
                else:
                    wanted[name] = None
        out = []
        for rec in self.registry.definitions.list("feature_view", latest_only=False):
            if wanted is not None:
                if rec.name not in wanted:
                    continue
                versions = wanted[rec.name]
                if versions is not None and rec.version not in versions:
                    continue
            out.append(TableRef(rec.name, rec.version))
        return out

    # -- materialization -------------------------------------------------------------
    def materialize(self, start: Any = None, end: Any = None, *,
                    views: Sequence[str] | None = None, progress: bool = False
                    ) -> MaterializeResult:
        """Load the latest value per key with ``start <= event time <= end`` (inclusive;
        ``start`` None means from the beginning, ``end`` None means now)."""
        start_us = _time(start, "start")
        end_us = _time(end, "end") or now_us()
        if start_us is not None and start_us > end_us:
            raise RetrievalError(
                f"materialize start {from_us(start_us).isoformat()} is after end "
                f"{from_us(end_us).isoformat()}; swap them"
            )
        return self._run(start_us, end_us, views, progress, incremental=False)

    def materialize_incremental(self, end: Any = None, *, views: Sequence[str] | None = None,
                                progress: bool = False) -> MaterializeResult:
        """Load everything not yet loaded up to ``end`` (default now): rows of new
        commits, and rows of known commits newer than the last run's end."""
        end_us = _time(end, "end") or now_us()
        return self._run(None, end_us, views, progress, incremental=True)

    def _run(self, start: int | None, end: int, views: Sequence[str] | None,
             progress: bool, *, incremental: bool) -> MaterializeResult:
        t0 = time.perf_counter()
        self.watcher.check()
        self.sync_commit_status()
        tables = self._tables(views)
        result = MaterializeResult(start, end)
        bar = _progress_bar(progress, len(tables))
        try:
            for table in tables:
                result.tables.append(self._run_table(table, start, end, incremental))
                if bar is not None:
                    bar[0].advance(bar[1])
        finally:
            if bar is not None:
                bar[0].stop()
        result.tables = [t for t in result.tables if t.commits or t.keys_written]
        result.seconds = time.perf_counter() - t0
        self.ctx.events.emit(MaterializeCompleted(
            start=start, end=end, incremental=incremental,
            views=[str(t.table) for t in result.tables], commits=result.commits,
            keys_written=result.keys_written, online_store=self.store.kind)
        )
        return result

    def _run_table(self, table: TableRef, start: int | None, end: int,
                   incremental: bool) -> TableResult:
        t0 = time.perf_counter()
        chain = self._chain(table)
        listed = self.registry.commits.list(table.view, versions=[p.version for p in chain])
        state = ViewProgress.load(self.store, table)
        options: dict[str, Any] = {"start": start, "end": end}
        to_load = listed
        if incremental and state is not None and state.end is not None:
            known = set(state.commits)
            new = [c.commit_id for c in listed if c.commit_id not in known]
            if end <= state.end and not new:
                return TableResult(table, [], 0, 0, time.perf_counter() - t0)
            options.update(new_commits=new, since=state.end)
            to_load = [c for c in listed if c.commit_id not in known
                       or c.max_event_ts is None or c.max_event_ts > state.end]
        to_load = [c for c in to_load
                   if (c.min_event_ts is None or c.min_event_ts <= end)
                   and (start is None or c.max_event_ts is None or c.max_event_ts >= start)]
        view = self._view(table.view, table.version)
        rows, written = self._materializer().load(table, view, chain, to_load, **options)
        if to_load:
            self._invalidate(table)
        # Record what is now covered: every row with event time <= end of the listed
        # commits (a run from the beginning), or the known commits up to a later end (a
        # run whose start does not leave a gap after the previous end).
        if start is None:
            if state is None or state.end is None or end >= state.end:
                known_ids = set(state.commits) if state else set()
                ViewProgress(end, sorted(known_ids | {c.commit_id for c in listed})).save(
                    self.store, table)
        elif state is not None and state.end is not None and start <= state.end < end:
            ViewProgress(end, state.commits).save(self.store, table)
        return TableResult(table, [c.commit_id for c in to_load], rows, written,
                           time.perf_counter() - t0)

    def follow_version(self, view: str, old: int, new: int) -> int | None:
        """Materialize ``view@new`` (a new version that carries old data, or was migrated)
        up to now, if ``view@old`` was ever materialized, so that it serves from the moment
        it exists. Pushed rows still buffered are landed first, so the new version sees
        every acknowledged push. Returns the keys written, or None when ``view@old`` was
        never materialized."""
        self.watcher.check()
        state = ViewProgress.load(self.store, TableRef(view, old))
        if state is None or state.end is None:
            return None
        self.flush()
        return self._run_table(TableRef(view, new), None, max(state.end, now_us()),
                               False).keys_written

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
        return plan

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
                            fill_defaults: bool = False) -> OnlineResponse:
        """Feature values for ``entity_rows`` with a status, version and commit per value.

        ``features`` is a list of references (``view:feature``, ``view@2:feature``);
        alternatively ``feature_set`` (``NAME`` or ``NAME@VERSION``), or the features a
        ``deployment`` (``dep_...``) or ``model`` (``mdl_...``, ``name@N``, ``name``)
        consumes; a read through a deployment is counted in its usage counters.
        ``entity_rows`` is a list of dicts or a dict of columns. Values of ``NOT_FOUND``
        and ``OUTSIDE_TTL`` are None, or, with ``fill_defaults=True``, the field's
        declared default (the status stays).
        """
        if deployment is not None or model is not None:
            if features is not None or feature_set is not None or (
                    deployment is not None and model is not None):
                raise RetrievalError("pass one of features, feature_set, deployment or "
                                     "model, not several")
            target: str = deployment if deployment is not None else model  # type: ignore[assignment]
            features, feature_versions = self._features_of(target)
            response = read_online(self.store, self.cache,
                                   self.plan(features, full_feature_names=full_feature_names),
                                   entity_rows, fill_defaults)
            assert response is not None  # with a store, a read always answers
            if target.startswith("dep_"):
                self.registry.usage.add(target, feature_versions, rows=len(response))
            return response
        # the plan lookup of ``plan()``, inlined: this is every request's path
        w = self.watcher
        if w._dirty or _monotonic() >= w._next_poll:
            w.refresh(only_if_due=True)
        plan = self._plans.get((tuple(features) if features.__class__ is list else features,
                                feature_set, full_feature_names))
        if plan is None:
            plan = self.plan(features, feature_set=feature_set,
                             full_feature_names=full_feature_names)
        response = read_online(self.store, self.cache, plan, entity_rows, fill_defaults)
        assert response is not None  # with a store, a read always answers
        return response

    def get_online_features_nowait(self, features: Any = None, entity_rows: Any = None, *,
                                   feature_set: str | None = None,
                                   full_feature_names: bool = False,
                                   fill_defaults: bool = False) -> OnlineResponse | None:
        """``get_online_features`` answered from memory alone, or None.

        None whenever answering would touch a store or the registry: the cache is off,
        a key is not cached, the plan is not built yet, or the change check is due. It
        never blocks, so a server can call it on its event loop and fall back to a
        worker thread for the full read.
        """
        if self.cache is None:
            return None
        w = self.watcher
        if w._dirty or _monotonic() >= w._next_poll:
            return None
        plan = self._plans.get((tuple(features) if features.__class__ is list else features,
                                feature_set, full_feature_names))
        if plan is None:
            return None
        return read_online(None, self.cache, plan, entity_rows, fill_defaults)

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
             flush: bool = False) -> str:
        """Validate ``rows``, make them durable and write them online now; they land
        offline as a commit (micro-batched; at once with ``flush=True``). Returns the id
        of the commit the rows belong to (see ``featureledger.online.push``)."""
        self.watcher.check()
        name, version = _view_version(view, version)
        rec = self.registry.definitions.get("feature_view", name, version)
        return self.pusher.push(TableRef(name, rec.version), rec.definition, rows,
                                flush=flush)

    def flush(self) -> list[CommitRecord]:
        """Land every buffered push offline now; returns the commits written."""
        return self.pusher.flush()

    # -- health ------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        """Reachability of the registry and both stores, and cache statistics."""
        out: dict[str, Any] = {}
        for name, probe in (("registry", self.registry.generation),
                            ("online_store", self.store.ping),
                            ("offline_store", lambda: self.ctx.offline_store.root.is_dir()
                             or (_ for _ in ()).throw(OSError("root folder missing")))):
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
            self.watcher.close()


def _view_version(text: str, version: int | None) -> tuple[str, int | None]:
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


def _progress_bar(enabled: bool, total: int) -> Any:
    if not enabled or total == 0:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    bar = Progress("[progress.description]{task.description}", BarColumn(),
                   MofNCompleteColumn(), TimeElapsedColumn(), transient=False)
    task = bar.add_task("materializing view versions", total=total)
    bar.start()
    return bar, task
