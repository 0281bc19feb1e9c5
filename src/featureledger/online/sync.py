"""Commit-status sync: the online store follows quarantines, rollbacks, restores and expiries.

Keys written from a commit that is no longer served are recomputed from the commits still
served (in every view version that serves that commit's rows), and commits served again
are loaded again, so the online store never serves a value the offline store would not.
The hidden commits already applied are remembered in the online store's metadata, so a
change is applied once, by whichever process sees it first.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from featureledger.model.projection import VersionProjection
from featureledger.offline.engine import ViewScan
from featureledger.online.catalog import ViewCatalog
from featureledger.online.materialize import Materializer, ViewProgress, encode_records
from featureledger.online.stores import OnlineStore, TableRef

if TYPE_CHECKING:
    from featureledger.context import StoreContext
    from featureledger.online.cache import OnlineCache
    from featureledger.registry.commits import CommitRecord

HIDDEN_META = "hidden_commits"
_HIDDEN = ("quarantined", "rolled_back", "expired")  # expired: retention deleted its data


class CommitStatusSync:
    """Applies commit status changes to one online store."""

    def __init__(self, ctx: StoreContext, store: OnlineStore, catalog: ViewCatalog,
                 invalidate: Callable[[TableRef], None], cache: OnlineCache | None) -> None:
        self.ctx = ctx
        self.registry = ctx.registry
        self.store = store
        self.catalog = catalog
        self.invalidate = invalidate
        self.cache = cache
        self.running = False

    def materializer(self) -> Materializer:
        return Materializer(self.store, self.ctx.engine, self.ctx.offline_store)

    def run(self) -> list[str]:
        """Bring the online store in line with quarantines, rollbacks and restores.

        Keys written from a commit that is no longer served are recomputed from the
        remaining committed commits; commits served again are loaded again. Returns the
        commit ids whose status change was applied.
        """
        self.running = True
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
                for table in self.catalog.readers(c):
                    by_table.setdefault(table, []).append(c)
            for table, commits in by_table.items():
                self._repair(table, commits)
            if newly_visible:
                restored: dict[TableRef, list[CommitRecord]] = {}
                for c in self.registry.commits.get_many(newly_visible):
                    # a row edited outside featureledger stays hidden: this sync runs in
                    # the background of serving, where refusing would stop every read
                    if c.status == "committed" and not c.tampered:
                        for table in self.catalog.readers(c):
                            restored.setdefault(table, []).append(c)
                for table, commits in restored.items():
                    progress = ViewProgress.load(self.store, table)
                    view = self.catalog.view(table.view, table.version)
                    chain = self.catalog.chain(table)
                    self.materializer().load(table, view, chain, commits,
                                              end=progress.end if progress else None)
                    self.invalidate(table)
                    if view.aggregations:
                        served = [c for c in self.registry.commits.list(
                            table.view, versions=[p.version for p in chain])
                            if not c.tampered]
                        self._refresh_aggregates(table, view, chain, served, progress,
                                                 self._commit_keys(view, commits))
            self.store.set_meta(HIDDEN_META, json.dumps(sorted(hidden)))
            if self.cache is not None:
                self.cache.invalidate_all()
            return [c.commit_id for c in newly_hidden] + newly_visible
        finally:
            self.running = False

    def _repair(self, table: TableRef, hidden: list[CommitRecord]) -> None:
        """Recompute the keys of hidden commits from the commits still served."""
        view = self.catalog.view(table.view, table.version)
        mat = self.materializer()
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
        chain = self.catalog.chain(table)
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
        self.invalidate(table)
        self._refresh_aggregates(table, view, chain, visible, progress, keys)

    def _refresh_aggregates(self, table: TableRef, view: Any, chain: Any,
                            visible: list[CommitRecord], progress: ViewProgress | None,
                            keys: list[tuple[Any, ...]] | None) -> None:
        """The aggregates of the keys a status change touched, recomputed as of the last
        materialization (see :func:`featureledger.online.aggregates.refresh_aggregates`)."""
        if not view.aggregations or progress is None or progress.end is None:
            return
        from featureledger.online.aggregates import aggregate_table, refresh_aggregates

        refresh_aggregates(self.ctx.engine, self.ctx.offline_store, self.store, table, view,
                           chain, visible, progress.end, keys)
        self.invalidate(aggregate_table(table))

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
