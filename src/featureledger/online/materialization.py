"""Materialization as a service: which view versions to load, how far, and what is left.

The set-based work (the newest row per key among a set of commits, and the upsert) is in
:mod:`featureledger.online.materialize`; this module decides per view version which
commits and event times a run covers, records the progress (``mat:<view>@<v>`` in the
online store), announces the run, and follows a new version as far as its predecessor
was materialized.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from featureledger.errors import RetrievalError
from featureledger.events import MaterializeCompleted
from featureledger.governance.access import AccessControl
from featureledger.model.timeutil import from_us, now_us, to_us
from featureledger.online.aggregates import aggregate_table, aggregates_at, write_aggregates
from featureledger.online.materialize import Materializer, TableResult, ViewProgress
from featureledger.online.service import OnlineService, view_version
from featureledger.online.stores import TableRef

if TYPE_CHECKING:
    from featureledger.context import StoreContext


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


class MaterializationService:
    """Runs materialization for the context's online part."""

    def __init__(self, ctx: StoreContext) -> None:
        self.ctx = ctx
        self.online = ctx.part(OnlineService)

    def _materializer(self) -> Materializer:
        return Materializer(self.online.store, self.ctx.engine, self.ctx.offline_store)

    def _tables(self, views: Sequence[str] | None) -> list[TableRef]:
        """Every view version to materialize (all versions of the named views)."""
        wanted: dict[str, set[int] | None] | None = None
        if views is not None:
            wanted = {}
            for v in views:
                name, ver = view_version(v, None)
                self.online.catalog.view(name, ver)  # raises UnknownViewError
                if ver is not None:
                    cur = wanted.get(name, set())
                    if cur is not None:
                        cur.add(ver)
                        wanted[name] = cur
                else:
                    wanted[name] = None
        out = []
        for rec in self.ctx.registry.definitions.list("feature_view", latest_only=False):
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
        self.online.watcher.check()
        self.online.sync.run()
        tables = self._tables(views)
        access = self.ctx.part(AccessControl)
        if access.enabled():
            access.require("write", [access.object_resource(
                self.online.catalog.view(t.view, t.version)) for t in tables],
                what="a materialization")
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
            keys_written=result.keys_written, online_store=self.online.store.kind)
        )
        return result

    def _run_table(self, table: TableRef, start: int | None, end: int,
                   incremental: bool) -> TableResult:
        t0 = time.perf_counter()
        chain = self.online.catalog.chain(table)
        listed = self.ctx.registry.commits.list(table.view, versions=[p.version for p in chain])
        state = ViewProgress.load(self.online.store, table)
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
        view = self.online.catalog.view(table.view, table.version)
        rows, written = self._materializer().load(table, view, chain, to_load, **options)
        if to_load:
            self.online.invalidate(table)
        if view.aggregations:  # every key's aggregations as of ``end`` (online/aggregates.py)
            live = [c for c in listed if c.row_count
                    and (c.min_event_ts is None or c.min_event_ts <= end)]
            values = aggregates_at(self.ctx.engine, self.ctx.offline_store, view, chain,
                                   live, end)
            written += write_aggregates(self.online.store, table, view, values, end,
                                        live[-1] if live else None)
            self.online.invalidate(aggregate_table(table))
        # Record what is now covered: every row with event time <= end of the listed
        # commits (a run from the beginning), or the known commits up to a later end (a
        # run whose start does not leave a gap after the previous end).
        if start is None:
            if state is None or state.end is None or end >= state.end:
                known_ids = set(state.commits) if state else set()
                ViewProgress(end, sorted(known_ids | {c.commit_id for c in listed})).save(
                    self.online.store, table)
        elif state is not None and state.end is not None and start <= state.end < end:
            ViewProgress(end, state.commits).save(self.online.store, table)
        return TableResult(table, [c.commit_id for c in to_load], rows, written,
                           time.perf_counter() - t0)

    def follow_version(self, view: str, old: int, new: int) -> int | None:
        """Materialize ``view@new`` (a new version that carries old data, or was migrated)
        up to now, if ``view@old`` was ever materialized, so that it serves from the moment
        it exists. Pushed rows still buffered are landed first, so the new version sees
        every acknowledged push. Returns the keys written, or None when ``view@old`` was
        never materialized."""
        self.online.watcher.check()
        state = ViewProgress.load(self.online.store, TableRef(view, old))
        if state is None or state.end is None:
            return None
        self.online.flush()
        return self._run_table(TableRef(view, new), None, max(state.end, now_us()),
                               False).keys_written


def _progress_bar(enabled: bool, total: int) -> Any:
    if not enabled or total == 0:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    bar = Progress("[progress.description]{task.description}", BarColumn(),
                   MofNCompleteColumn(), TimeElapsedColumn(), transient=False)
    task = bar.add_task("materializing view versions", total=total)
    bar.start()
    return bar, task
