"""Historical retrieval: point-in-time-correct training sets, windows, and reproduction.

Semantics (bitemporal, see DESIGN.md §2):

* For each entity row and each requested view, the feature row with the same join keys and
  the greatest event time ``<= `` the entity time; ties on event time go to the later
  commit. The row counts only within the view's TTL: ``entity_ts - event_ts <= ttl``
  (inclusive; a view without a TTL never expires). Otherwise the features are null. A
  matched row whose value is null gives null (no fallback to an older row).
* ``as_of`` (a datetime or a ``cmt_`` id, whose commit time is then used) reads only commits
  with ``commit_time <= as_of``. Quarantined and rolled-back commits are never read.
* Entity rows keep their order, their duplicates and every extra column (labels); the
  timestamp column comes back as ``timestamp[us, UTC]``. Naive timestamps (entity frame,
  ``as_of``, window bounds) are taken to be UTC; finer than microsecond entity times are
  truncated to the microsecond, which keeps ``<=`` exact since stored times are whole
  microseconds. An entity row with a null key or time matches nothing.
* The result records the exact commits read. The entity rows are stored beside the
  dataset, so ``reproduce(ds_id)`` rebuilds the same rows from those commits, whatever was
  ingested, quarantined or rolled back since, and checks the content hash.
"""

from __future__ import annotations

import base64
import datetime as dt
import warnings
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from featureledger.context import current_run_id
from featureledger.errors import (
    CommitExpiredError,
    CommitFileError,
    FeatureDataWarning,
    FeatureLedgerError,
    ReproductionError,
    RetrievalError,
    StorageError,
    UnknownCommitError,
)
from featureledger.events import DatasetCreated
from featureledger.frames import ACCEPTED, FrameError, read_frame
from featureledger.governance.access import AccessControl
from featureledger.model.ids import new_id
from featureledger.model.projection import ColumnSource, VersionProjection
from featureledger.model.references import FeatureRef
from featureledger.model.timeutil import current_user, now_us, to_us
from featureledger.model.types import to_arrow
from featureledger.offline.aggregation import (
    aggregated_columns,
    aggregation_request,
    compute_aggregates,
    reach_us,
)
from featureledger.offline.dataset import (
    HASH_VERSION,
    TrainingDataset,
    column_digests,
    combine_digests,
    content_hash,
)
from featureledger.offline.engine import ROW_COLUMN, OfflineEngine, ViewScan
from featureledger.offline.request_features import (
    add_request_features,
    request_plan,
    resolve_request_inputs,
)
from featureledger.registry.datasets import DatasetRecord

if TYPE_CHECKING:
    import pyarrow as pa

    from featureledger.context import StoreContext
    from featureledger.registry.commits import CommitRecord

DEFAULT_TIMESTAMP_COLUMNS = ("event_timestamp", "timestamp", "event_ts", "ts")
# reads of a commit list that retention or compaction changed meanwhile run again this often
READ_ATTEMPTS = 3
_TS_TYPE_STR = "timestamp[us, tz=UTC]"


@dataclass(frozen=True)
class _ViewRequest:
    """One view version's part of a request, as recorded in the manifest."""

    view: str
    version: int
    definition_hash: str
    join_keys: dict[str, str]
    timestamp_field: str
    ttl_us: int | None
    features: list[str]
    dtypes: list[str]
    output_names: list[str]
    created_field: str | None = None
    # the versions whose commits are read, newest first, each with how its rows are
    # projected onto this version's features (VersionProjection.to_dict)
    sources: list[dict[str, Any]] = field(default_factory=list)
    # windowed aggregations requested of this view version (offline/aggregation.py);
    # their columns follow the features'
    aggregations: list[dict[str, Any]] = field(default_factory=list)

    @property
    def outputs(self) -> list[str]:
        """Every result column of this view: the features', then the aggregations'."""
        return [*self.output_names, *(a["output"] for a in self.aggregations)]

    @property
    def output_dtypes(self) -> list[str]:
        return [*self.dtypes, *(a["dtype"] for a in self.aggregations)]

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> _ViewRequest:
        # manifests written before a key existed keep its default
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})

    def chain(self) -> list[VersionProjection]:
        if self.sources:
            return [VersionProjection.from_dict(p) for p in self.sources]
        return [VersionProjection(self.version, tuple(
            ColumnSource(f, f, t, t) for f, t in zip(self.features, self.dtypes, strict=True)))]

    def scan(self, store: Any, commits: Sequence[CommitRecord],
             idle: Collection[str] = ()) -> ViewScan:
        return ViewScan.of(
            join_keys=list(self.join_keys), timestamp_field=self.timestamp_field,
            created_field=self.created_field, features=self.features,
            output_names=self.output_names, dtypes=self.dtypes, ttl_us=self.ttl_us,
            store=store, commits=commits, chain=self.chain(),
            tie_break=commits_overlap(commits), event_range=_event_range(commits),
            idle=idle)

    def aggregation_scan(self, store: Any, commits: Sequence[CommitRecord]) -> ViewScan:
        """The scan of the fields the aggregations read."""
        from featureledger.offline.aggregation import aggregated_columns

        columns = aggregated_columns(self.aggregations)
        dtypes = {a["column"]: a["column_dtype"] for a in self.aggregations}
        return ViewScan.of(
            join_keys=list(self.join_keys), timestamp_field=self.timestamp_field,
            created_field=self.created_field, features=columns, output_names=columns,
            dtypes=[dtypes[c] for c in columns], ttl_us=None, store=store,
            commits=commits, chain=self.chain(), tie_break=commits_overlap(commits),
            event_range=_event_range(commits))


@dataclass(frozen=True)
class _ViewStats:
    """What one view's join matched."""

    unmatched: int  # entity rows with no feature row within the TTL
    outside_ttl: int  # of those, rows whose keys matched a feature row older than the TTL
    rows_by_version: dict[int, int]  # matched rows per version whose commit they came from


def _event_range(commits: Sequence[CommitRecord]) -> tuple[int, int] | None:
    """(min, max) event time over the commits, None when a commit does not record it."""
    live = [c for c in commits if c.row_count]
    if not live or any(c.min_event_ts is None or c.max_event_ts is None for c in live):
        return None
    return (min(int(c.min_event_ts or 0) for c in live),
            max(int(c.max_event_ts or 0) for c in live))


def commits_overlap(commits: Sequence[CommitRecord]) -> bool:
    """True when two commits' event-time ranges overlap (only then can their rows tie)."""
    live = [c for c in commits if c.row_count]
    if len(live) < 2:
        return False
    if any(c.min_event_ts is None or c.max_event_ts is None for c in live):
        return True
    spans = sorted((int(c.min_event_ts or 0), int(c.max_event_ts or 0)) for c in live)
    end = spans[0][1]
    for lo, hi in spans[1:]:
        if lo <= end:
            return True
        end = max(end, hi)
    return False


def _to_table(data: Any) -> pa.Table:
    """An Arrow table from pandas, Arrow, Polars, a dict of columns, a list of row dicts,
    or a Parquet/CSV path."""

    if isinstance(data, (str, Path)):
        p = Path(data)
        if not p.exists():
            raise RetrievalError(f"entity file {p} does not exist; pass a Parquet or CSV file")
        if p.suffix.lower() in (".csv", ".gz"):
            import pyarrow.csv as pcsv

            return pcsv.read_csv(p)
        import pyarrow.parquet as pq

        return pq.read_table(p)
    try:
        frame = read_frame(data, scalars=False)
    except FrameError as exc:
        raise RetrievalError(f"the entity rows cannot be read: {exc}") from None
    if frame is None:
        raise RetrievalError(f"cannot read entity rows from a {type(data).__name__}; pass "
                             f"{ACCEPTED}, or a Parquet/CSV path")
    return frame.table


def _utc_timestamps(col: pa.ChunkedArray, name: str) -> pa.ChunkedArray:
    """``col`` as timestamp[us, UTC]; naive values are UTC."""
    import pyarrow as pa

    target = pa.timestamp("us", tz="UTC")
    t = col.type
    try:
        if pa.types.is_timestamp(t) or pa.types.is_date(t):
            return col.cast(target, safe=False)
        if pa.types.is_string(t) or pa.types.is_large_string(t):
            try:
                return col.cast(target)
            except pa.ArrowInvalid:  # no zone offset: naive text, read as UTC
                return col.cast(pa.timestamp("us")).cast(target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise RetrievalError(f"entity timestamp column {name!r} could not be read as times: "
                             f"{exc}. Use datetimes or ISO 8601 text") from None
    raise RetrievalError(f"entity timestamp column {name!r} has type {t}; it must hold "
                         "timestamps (or dates / ISO 8601 text)")


def _as_of(registry: Any, as_of: Any) -> tuple[int | None, str | None]:
    """(µs, commit id) for an ``as_of`` given as a time or a commit id."""
    if as_of is None:
        return None, None
    if isinstance(as_of, str) and as_of.startswith("cmt_"):
        return registry.commits.get(as_of).commit_time, as_of
    try:
        return to_us(as_of), None
    except (TypeError, ValueError):
        raise RetrievalError(f"as_of={as_of!r} is neither a time nor a commit id; pass a "
                             "datetime, ISO 8601 text or a 'cmt_...' id") from None


class RetrievalService:
    """Historical retrieval over the offline store (constructed as ``RetrievalService(ctx)``)."""

    def __init__(self, ctx: StoreContext) -> None:
        self.ctx = ctx

    @property
    def engine(self) -> OfflineEngine:
        return self.ctx.engine

    # -- requests --------------------------------------------------------------------
    def _feature_refs(self, features: Any, feature_set: str | None
                      ) -> tuple[list[str], str | None]:
        """The requested reference strings, and ``name@version`` of the feature set used."""
        if isinstance(features, str) and ":" not in features:
            if feature_set is not None:
                raise RetrievalError("pass either features or feature_set, not both")
            feature_set, features = features, None
        if feature_set is not None:
            if features is not None:
                raise RetrievalError("pass either features or feature_set, not both")
            name, _, ver = feature_set.partition("@")
            rec = self.ctx.registry.definitions.get(
                "feature_set", name, int(ver) if ver.isdigit() else None)
            return list(rec.definition.features), f"{rec.name}@{rec.version}"
        if features is None:
            raise RetrievalError(
                "no features requested; pass features=['view:feature', ...] or "
                "feature_set='name'")
        if isinstance(features, (str, FeatureRef)):
            features = [features]
        return [str(f) for f in features], None

    def _plan(self, refs: Sequence[str], full_feature_names: bool) -> list[_ViewRequest]:
        from featureledger.model.references import parse_references

        parsed = parse_references(list(refs))
        groups: dict[tuple[str, int | None], list[FeatureRef]] = {}
        for r in parsed:
            groups.setdefault((r.view, r.version), []).append(r)
        by_version: dict[tuple[str, int], _ViewRequest] = {}
        asked: dict[tuple[str, int, str], str] = {}  # pinned feature -> how it was asked for
        for (view, _version), group in groups.items():
            _, rec = self.ctx.registry.definitions.resolve(group[0])
            d = rec.definition
            key = (view, rec.version)
            if key not in by_version:
                by_version[key] = _ViewRequest(
                    view=view, version=rec.version, definition_hash=rec.definition_hash,
                    join_keys=dict(d.join_keys), timestamp_field=d.timestamp_field,
                    ttl_us=None if d.ttl is None else d.ttl // dt.timedelta(microseconds=1),
                    features=[], dtypes=[], output_names=[],
                    created_field=d.created_timestamp_field)
            req = by_version[key]
            for r in group:
                agg = d.aggregation(r.feature)
                # raises UnknownFeatureError naming the fields (and aggregations)
                fld = None if agg is not None else d.field(r.feature)
                pinned = (view, rec.version, r.feature)
                if pinned in asked:
                    raise RetrievalError(
                        f"{asked[pinned]} and {r} are the same feature ({view}@{rec.version}:"
                        f"{r.feature}, version {rec.version} being the latest); list it once")
                asked[pinned] = str(r)
                if agg is not None:
                    req.aggregations.append(aggregation_request(agg, d, r.feature))
                    continue
                assert fld is not None
                req.features.append(r.feature)
                req.dtypes.append(fld.dtype)
        plan = list(by_version.values())
        # several versions of one view in one request: full names carry the version
        versions_of: dict[str, int] = {}
        for req in plan:
            versions_of[req.view] = versions_of.get(req.view, 0) + 1
        for req in plan:
            if not full_feature_names:
                prefix = ""
            elif versions_of[req.view] > 1:
                prefix = f"{req.view}@{req.version}__"
            else:
                prefix = f"{req.view}__"
            req.output_names.extend(f"{prefix}{f}" for f in req.features)
            for a in req.aggregations:
                a["output"] = f"{prefix}{a['name']}"
            chain = self.ctx.registry.definitions.data_chain(req.view, req.version)
            read = list(dict.fromkeys([*req.features, *aggregated_columns(req.aggregations)]))
            req.sources.extend(p.select(read).to_dict() for p in chain)
        if not full_feature_names:
            seen: dict[str, str] = {}
            for req in plan:
                for name in req.outputs:
                    other = seen.setdefault(name, f"{req.view}@{req.version}")
                    if other != f"{req.view}@{req.version}":
                        raise RetrievalError(
                            f"feature name {name!r} is provided by both {other} and "
                            f"{req.view}@{req.version}; pass full_feature_names=True to name "
                            "columns 'view__feature' ('view@VERSION__feature' where one "
                            "request reads several versions of a view)")
        return plan

    def _entities(self, entity_df: Any, timestamp_column: str | None,
                  plan: Sequence[_ViewRequest]) -> tuple[pa.Table, str]:
        """The entity rows with a UTC microsecond timestamp column and the keys' types."""
        import pyarrow as pa

        table = _to_table(entity_df).replace_schema_metadata(None)
        names = table.column_names
        if ROW_COLUMN in names:
            raise RetrievalError(f"the entity frame has a column {ROW_COLUMN!r}, a name "
                                 "featureledger reserves; rename it")
        ts = timestamp_column
        if ts is None:
            ts = next((c for c in DEFAULT_TIMESTAMP_COLUMNS if c in names), None)
        if ts is None:
            stamps = [f.name for f in table.schema if pa.types.is_timestamp(f.type)]
            if len(stamps) != 1:
                raise RetrievalError(
                    "cannot tell which entity column holds the entity time "
                    f"(columns: {', '.join(names)}); pass timestamp_column='...'")
            ts = stamps[0]
        if ts not in names:
            raise RetrievalError(f"timestamp column {ts!r} is not in the entity frame "
                                 f"(columns: {', '.join(names)})")
        table = table.set_column(names.index(ts), ts, _utc_timestamps(table.column(ts), ts))
        for req in plan:
            missing = [k for k in req.join_keys if k not in names]
            if missing:
                raise RetrievalError(
                    f"feature view {req.view}@{req.version} joins on {', '.join(req.join_keys)}"
                    f", but the entity frame lacks {', '.join(missing)}; add the column(s)")
            for k, dtype in req.join_keys.items():
                want = to_arrow(dtype)
                col = table.column(k)
                if col.type != want:
                    try:
                        col = col.cast(want)
                    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                        raise RetrievalError(
                            f"entity column {k!r} has type {col.type}, but "
                            f"{req.view}@{req.version} declares {dtype}: {exc}. Convert it"
                        ) from None
                    table = table.set_column(table.column_names.index(k), k, col)
        for req in plan:
            clash = [o for o in req.outputs if o in names]
            if clash:
                raise RetrievalError(
                    f"the entity frame already has column(s) {', '.join(clash)}, which "
                    "would also name feature columns; rename them or pass "
                    "full_feature_names=True")
        return table, ts

    # -- the public operations ---------------------------------------------------------
    def get_historical_features(self, entity_df: Any, features: Any = None, *,
                                feature_set: str | None = None, as_of: Any = None,
                                full_feature_names: bool = False, run_id: str | None = None,
                                timestamp_column: str | None = None) -> TrainingDataset:
        """A point-in-time-correct training set for ``entity_df`` (see the module doc).

        ``features`` lists references (``view:feature`` for the latest version,
        ``view@3:feature`` pinned) or names a feature set; ``feature_set`` names one
        explicitly (``name`` or ``name@version``). Columns are named by feature, or
        ``view__feature`` with ``full_feature_names``. The dataset is recorded in the
        registry with the commits read, linked to the active (or given) run.
        """
        from concurrent.futures import ThreadPoolExecutor

        refs, fs_name = self._feature_refs(features, feature_set)
        refs, request = request_plan(self.ctx.registry, refs, full_feature_names)
        plan = self._plan(refs, full_feature_names)
        self._require_read(plan, "a historical retrieval")
        entities, ts_col = self._entities(entity_df, timestamp_column, plan)
        self._check_lifecycle(plan, entities.num_rows)
        resolve_request_inputs(request, plan, entities.column_names)
        as_of_us, as_of_commit = _as_of(self.ctx.registry, as_of)
        bounds = _ts_bounds(entities, ts_col)
        ds_id = new_id("ds")
        # Storing and hashing the entity rows overlaps the join, and half the feature
        # columns are hashed beside the other half (all of it releases the GIL).
        with ThreadPoolExecutor(2, thread_name_prefix="featureledger-stage") as pool:
            staged = pool.submit(self._stage_entities, ds_id, entities)
            try:
                for attempt in range(READ_ATTEMPTS):
                    idle: list[set[str]] = [set() for _ in plan]
                    commits = [self._visible_commits(req, as_of_us, bounds, idle[i])
                               for i, req in enumerate(plan)]
                    try:
                        table, stats = self._compute(entities, ts_col, plan, commits, bounds,
                                                     idle)
                        break
                    except CommitFileError:
                        self._raise_unless_moved([c for cs in commits for c in cs], attempt)
                table = add_request_features(table, request)
                feature_digests = column_digests(table.select(
                    [o for r in plan for o in r.outputs if o in table.column_names]
                    + [o for q in request for o in q["outputs"]]), pool)
            except BaseException:
                if staged.exception() is None:
                    self.ctx.offline_store.discard_dataset(ds_id, staged.result()[0])
                raise
            token, entity_digests = staged.result()
        try:
            manifest = self._manifest(ds_id, plan, commits, stats, entities, ts_col, table,
                                      combine_digests(entities.num_rows, entity_digests),
                                      combine_digests(table.num_rows,
                                                      entity_digests + feature_digests),
                                      fs_name, full_feature_names, as_of_us, as_of_commit,
                                      request)
            run = current_run_id(run_id)
            record = DatasetRecord(
                dataset_id=ds_id, created_at=manifest["read_at"],
                created_by=self.ctx.registry.actor or current_user(), run_id=run,
                feature_set=fs_name, features=manifest["features"], as_of=as_of_us,
                entity_digest=manifest["entity"]["digest"],
                entity_path=manifest["entity"]["path"],
                content_hash=manifest["content_hash"], row_count=table.num_rows,
                arrow_schema=manifest["arrow_schema"], manifest=manifest,
                commit_ids=manifest["commit_ids"])
            self.ctx.offline_store.publish_dataset(token)
        except BaseException:
            self.ctx.offline_store.discard_dataset(ds_id, token)
            raise
        try:
            self.ctx.registry.datasets.insert(record)
        except BaseException:
            self.ctx.offline_store.discard_dataset(ds_id)
            raise
        self.ctx.events.emit(DatasetCreated(record=record, run_id=run))
        for problem in manifest["null_features"]:
            warnings.warn(FeatureDataWarning(
                f"training set {ds_id}: feature {problem['feature']} is null in every one of "
                f"its {table.num_rows} rows: {problem['cause']}"), stacklevel=3)
        return TrainingDataset(ds_id, manifest, _table=table)

    def _manifest(self, ds_id: str, plan: Sequence[_ViewRequest],
                  commits: Sequence[Sequence[CommitRecord]], stats: Sequence[_ViewStats],
                  entities: pa.Table, ts_col: str, table: pa.Table, entity_digest: str,
                  content: str, fs_name: str | None, full_feature_names: bool,
                  as_of_us: int | None, as_of_commit: str | None,
                  request: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
        views = []
        for r, cs, st in zip(plan, commits, stats, strict=True):
            chain = r.chain()
            views.append({
                **r.to_dict(), "commit_ids": [c.commit_id for c in cs],
                "unmatched_rows": st.unmatched, "outside_ttl_rows": st.outside_ttl,
                # where the rows came from: which versions' commits, projected how
                "data_sources": [
                    {"version": p.version, "projection": p.describe(),
                     "commit_ids": [c.commit_id for c in cs if c.view_version == p.version],
                     "matched_rows": st.rows_by_version.get(p.version, 0)}
                    for p in chain],
                # values that are a field's declared default because the commit they came
                # from was written under a version without that field
                "defaulted_rows": {
                    o: sum(st.rows_by_version.get(p.version, 0) for p in chain
                           if p.column(f).defaulted)
                    for f, o in zip(r.features, r.output_names, strict=True)
                    if any(p.column(f).defaulted for p in chain)},
            })
        return {
            "dataset_id": ds_id,
            "hash_version": HASH_VERSION,
            "features": [f"{r.view}@{r.version}:{f}" for r in plan
                         for f, o in zip([*r.features, *(a["name"] for a in r.aggregations)],
                                         r.outputs, strict=True)
                         if o in table.column_names]  # request views' inputs may be left out
                        + [f"{q['name']}@{q['version']}:{f}" for q in request
                           for f in q["fields"]],
            "request_views": list(request),
            "feature_set": fs_name,
            "full_feature_names": full_feature_names,
            "as_of": as_of_us,
            "as_of_commit": as_of_commit,
            "read_at": now_us(),
            "views": views,
            "commit_ids": [c.commit_id for cs in commits for c in cs],
            "entity": {"timestamp_column": ts_col, "columns": entities.column_names,
                       "row_count": entities.num_rows, "digest": entity_digest,
                       "path": self.ctx.offline_store.dataset_path(ds_id),
                       # the exact Arrow schema, which Parquet does not always round-trip
                       "arrow_schema_ipc": base64.b64encode(
                           entities.schema.serialize().to_pybytes()).decode()},
            "row_count": table.num_rows,
            "content_hash": content,
            "arrow_schema": table.schema.to_string(show_schema_metadata=False),
            "null_counts": {name: table.column(name).null_count
                            for name in [*(o for r in plan for o in r.outputs
                                           if o in table.column_names),
                                         *(o for q in request for o in q["outputs"])]},
            "null_features": _null_features(plan, commits, stats, table, as_of_us),
            "engine": {"name": self.engine.name, "version": self.engine.version},
        }

    def get_features_in_window(self, features_or_view: Any, start: Any, end: Any,
                               as_of: Any = None) -> pa.Table:
        """Every row of one view with ``start <= event_ts < end``, without an entity frame.

        ``features_or_view`` is a view (``name`` or ``name@3``: all its features) or a list
        of references into one view version. Where several commits hold the same keys and
        event time, only the later commit's row is returned. Columns: the join keys, the
        timestamp, the features, ``_commit_id`` and ``_commit_time``; ordered by event time,
        then keys. ``start`` / ``end`` may be None (unbounded); naive times are UTC.
        """
        import pyarrow as pa

        if isinstance(features_or_view, str) and ":" not in features_or_view:
            name, _, ver = features_or_view.partition("@")
            rec = self.ctx.registry.definitions.get(
                "feature_view", name, int(ver) if ver.isdigit() else None)
            refs = [f"{rec.name}@{rec.version}:{f}" for f in rec.definition.feature_names]
        else:
            refs = [str(r) for r in ([features_or_view]
                                     if isinstance(features_or_view, (str, FeatureRef))
                                     else features_or_view)]
        plan = self._plan(refs, full_feature_names=False)
        if len(plan) != 1:
            raise RetrievalError(
                "a window reads one view version at a time; got "
                f"{', '.join(f'{r.view}@{r.version}' for r in plan)}. Call once per view")
        self._require_read(plan, "a window read")
        req = plan[0]
        self._check_lifecycle(plan, 0)
        start_us = None if start is None else to_us(start)
        end_us = None if end is None else to_us(end)
        as_of_us, _ = _as_of(self.ctx.registry, as_of)
        ts_type = pa.timestamp("us", tz="UTC")
        schema = pa.schema(
            [pa.field(k, to_arrow(t)) for k, t in req.join_keys.items()]
            + [pa.field(req.timestamp_field, ts_type)]
            + [pa.field(o, to_arrow(t)) for o, t in zip(req.output_names, req.dtypes, strict=True)]
            + [pa.field("_commit_id", pa.string()), pa.field("_commit_time", ts_type)])
        for attempt in range(READ_ATTEMPTS):
            commits = [c for c in self.ctx.registry.commits.list(
                req.view, versions=[p.version for p in req.chain()], as_of=as_of_us,
                statuses=("committed",))
                if c.row_count and (end_us is None or c.min_event_ts is None
                                    or c.min_event_ts < end_us)
                and (start_us is None or c.max_event_ts is None
                     or c.max_event_ts >= start_us)]
            if not commits:
                return schema.empty_table()
            try:
                with self.ctx.offline_store.reading(commits):
                    reader = self.engine.window(req.scan(self.ctx.offline_store, commits),
                                                start_us, end_us)
                    return reader.read_all().cast(schema)
            except CommitFileError:
                self._raise_unless_moved(commits, attempt)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _raise_unless_moved(self, commits: Sequence[CommitRecord], attempt: int) -> None:
        """Called with a CommitFileError being handled: re-raise it unless the commits read
        changed meanwhile (retention expired one and deleted its files, a segment holding
        their rows was rewritten): then the read runs again on a fresh commit list, as
        if it had started after the change, at most READ_ATTEMPTS times."""
        if attempt == READ_ATTEMPTS - 1 or not self.ctx.registry.commits.moved(commits):
            raise  # the CommitFileError being handled by the caller

    def get_dataset(self, dataset_id: str) -> TrainingDataset:
        """A recorded dataset: its manifest now, its rows rebuilt on first use."""
        rec = self.ctx.registry.datasets.get(dataset_id)
        self._require_read([_ViewRequest.from_dict(v) for v in rec.manifest["views"]],
                           f"a read of dataset {dataset_id}")
        return TrainingDataset(rec.dataset_id, rec.manifest,
                               _loader=lambda: self.reproduce(dataset_id).to_arrow())

    def reproduce(self, dataset_id: str) -> TrainingDataset:
        """Rebuild a dataset from exactly the commits it recorded; same content hash.

        Raises ReproductionError when the stored entity rows are gone or changed, or when
        the rebuilt rows do not hash to the recorded content hash; CommitExpiredError (a
        ReproductionError) naming the commits and when they expired, before reading
        anything, when retention deleted the data of a commit it read; CommitFileError (a
        StorageError) when a commit's file is missing or unreadable.
        """
        rec = self.ctx.registry.datasets.get(dataset_id)
        m = rec.manifest
        self._require_read([_ViewRequest.from_dict(v) for v in m["views"]],
                           f"the reproduction of dataset {dataset_id}")
        offline = self.ctx.offline_store
        rel = rec.entity_path or m["entity"]["path"]
        path = offline.uri(rel)
        try:
            entities = offline.read_dataset_entities(rel)
        except FileNotFoundError:
            raise ReproductionError(
                f"dataset {dataset_id}: its stored entity rows {path} are missing, so it "
                "cannot be rebuilt; restore the offline store's datasets/ folder from "
                "backup") from None
        except FeatureLedgerError:
            raise  # the store's own typed error (unreachable, access denied)
        except Exception as exc:  # pyarrow's errors for a cut-short or damaged file
            raise ReproductionError(
                f"dataset {dataset_id}: its stored entity rows {path} cannot be read ({exc}); "
                "restore the file from backup") from None
        schema_ipc = m["entity"].get("arrow_schema_ipc")
        if schema_ipc:
            import pyarrow as pa

            schema = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(schema_ipc)))
            entities = entities.cast(schema)
        if content_hash(entities) != rec.entity_digest:
            raise ReproductionError(
                f"dataset {dataset_id}: the stored entity rows {path} do not match the "
                "recorded digest (the file was changed); restore it from backup")
        plan = [_ViewRequest.from_dict(v) for v in m["views"]]
        ts_col = m["entity"]["timestamp_column"]
        for attempt in range(READ_ATTEMPTS):
            commits = []
            for v in m["views"]:
                try:
                    cs = self.ctx.registry.commits.get_many(list(v["commit_ids"]))
                except UnknownCommitError as exc:
                    raise ReproductionError(
                        f"dataset {dataset_id} read commits that are no longer in the "
                        f"registry ({exc}); it cannot be rebuilt exactly") from None
                commits.append(cs)
            # retention expiring one while this runs: the next attempt says so
            _refuse_expired(dataset_id, [c for cs in commits for c in cs])
            try:
                table, _ = self._compute(entities, ts_col, plan, commits,
                                         _ts_bounds(entities, ts_col))
                break
            except CommitFileError:
                self._raise_unless_moved([c for cs in commits for c in cs], attempt)
        table = add_request_features(table, m.get("request_views", []))
        got = content_hash(table)
        if got != rec.content_hash:
            raise ReproductionError(
                f"dataset {dataset_id} rebuilt to content hash {got}, not the recorded "
                f"{rec.content_hash}; a commit's files may have been altered (check them with "
                "their content digests)")
        return TrainingDataset(dataset_id, m, _table=table)

    # -- internals -----------------------------------------------------------------------
    def _require_read(self, plan: Sequence[_ViewRequest], what: str) -> None:
        """The access check of every offline read: the principal may read each feature
        (and each column an aggregation reads) of the plan, or nothing is read."""
        self.ctx.part(AccessControl).require_reads("read_offline", (
            (req.view, req.version,
             [*req.features, *aggregated_columns(req.aggregations)]) for req in plan),
            what=what)
    def _check_lifecycle(self, plan: Sequence[_ViewRequest], rows: int) -> None:
        """Deprecated features in ``plan`` warn and are counted; retired ones fail here,
        before any data is read (see ``registry/lifecycle.py``)."""
        gate = self.ctx.registry.lifecycle.gate
        gate.on_read(gate.matches(f"{r.view}@{r.version}:{f}" for r in plan
                                  for f in [*r.features, *(a["name"] for a in r.aggregations)]),
                     reader="offline", rows=rows)

    def _visible_commits(self, req: _ViewRequest, as_of_us: int | None,
                         bounds: tuple[int, int] | None, idle: set[str] | None = None
                         ) -> list[CommitRecord]:
        """Committed commits visible at ``as_of`` that can hold a row some entity can reach.
        ``idle`` receives the ids of visible commits left out because no entity row can
        reach any of their rows by the point-in-time bounds alone (see ViewScan.of)."""
        if bounds is None:  # no entity row has a time: nothing can match
            return []
        lo, hi = bounds
        floor = None if req.ttl_us is None else lo - req.ttl_us
        if req.aggregations:  # the aggregations read their windows, whatever the TTL
            reach = lo - reach_us(req.aggregations)
            floor = reach if floor is None or not req.features else min(floor, reach)
        out = []
        versions = [p.version for p in req.chain()]
        for c in self.ctx.registry.commits.list(req.view, versions=versions, as_of=as_of_us,
                                                statuses=("committed",)):
            too_new = c.min_event_ts is not None and c.min_event_ts > hi
            # every row is older than any entity time minus the TTL (or an aggregation's
            # window: those rows are not harmless to a join that has no TTL)
            too_old = (floor is not None and c.max_event_ts is not None
                       and c.max_event_ts < floor)
            if c.row_count and not too_new and not too_old:
                out.append(c)
                continue
            ttl_old = (req.ttl_us is not None and c.max_event_ts is not None
                       and c.max_event_ts < lo - req.ttl_us)
            if idle is not None and (not c.row_count or too_new or ttl_old):
                idle.add(c.commit_id)
        return out

    def _compute(self, entities: pa.Table, ts_col: str, plan: Sequence[_ViewRequest],
                 commits: Sequence[Sequence[CommitRecord]], bounds: tuple[int, int] | None,
                 idle: Sequence[set[str]] | None = None
                 ) -> tuple[pa.Table, list[_ViewStats]]:
        """The output table (entity columns, then features) and what matched, per view
        (``idle``: per view, the visible commits no entity row can reach)."""
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        n = entities.num_rows
        keys = list(dict.fromkeys(k for r in plan for k in r.join_keys))
        probe = entities.select([ts_col, *keys]).append_column(
            ROW_COLUMN, pa.array(np.arange(n, dtype=np.int64)))
        # views asked only for aggregations take no part in the point-in-time join
        joined = [i for i, r in enumerate(plan) if r.features or not r.aggregations]
        scans = [plan[i].scan(self.ctx.offline_store, commits[i],
                              idle[i] if idle is not None else ()) for i in joined]
        aggregated: dict[int, pa.Table] = {}
        with self.ctx.offline_store.reading(c for cs in commits for c in cs):
            reader = self.engine.point_in_time(probe, ts_col, scans, bounds)
            result = reader.read_all()
            for i, r in enumerate(plan):
                if r.aggregations:
                    aggregated[i] = compute_aggregates(
                        self.engine, probe, ts_col,
                        r.aggregation_scan(self.ctx.offline_store, commits[i]),
                        r.aggregations, bounds)
        if result.num_rows != n:
            raise StorageError(f"internal: the join returned {result.num_rows} rows for {n} "
                               "entity rows; please report this")
        rows = result.column(ROW_COLUMN).to_numpy()
        result = result.drop_columns([ROW_COLUMN])
        if not np.array_equal(rows, np.arange(n, dtype=np.int64)):  # else in entity order
            order = np.empty(n, dtype=np.int64)
            order[rows] = np.arange(n, dtype=np.int64)  # inverse permutation: entity order
            result = result.take(pa.array(order))
        table = entities
        stats = []
        for i, r in enumerate(plan):
            for name, dtype in zip(r.outputs, r.output_dtypes, strict=True):
                col = (aggregated[i] if name not in r.output_names else result).column(name)
                want = to_arrow(dtype)
                table = table.append_column(pa.field(name, want),
                                            col if col.type == want else col.cast(want))
            if i not in joined:
                stats.append(_ViewStats(unmatched=0, outside_ttl=0, rows_by_version={}))
                continue
            j = joined.index(i)  # the view's place in the join
            matched = int(pc.sum(result.column(f"_fl_matched_{j}")).as_py() or 0)
            names = result.column_names
            keyed = (int(pc.sum(result.column(f"_fl_keyed_{j}")).as_py() or 0)
                     if f"_fl_keyed_{j}" in names else matched)
            by_source: dict[int, int] = {}
            if f"_fl_src_{j}" in names:
                used = [v for v in r.chain()
                        if any(c.view_version == v.version for c in commits[i])]
                counts = pc.value_counts(result.column(f"_fl_src_{j}").drop_null())
                for item in counts.to_pylist():
                    by_source[used[int(item["values"])].version] = int(item["counts"])
            elif matched:
                by_source[commits[i][0].view_version if commits[i] else r.version] = matched
            stats.append(_ViewStats(unmatched=n - matched, outside_ttl=keyed - matched,
                                    rows_by_version=by_source))
        return table, stats

    def _stage_entities(self, ds_id: str, entities: pa.Table) -> tuple[Any, list[bytes]]:
        """Store the entity rows durably where no reader looks yet (the offline store's
        staging), and hash their columns. The caller publishes them before the registry
        row that records the dataset."""
        token = self.ctx.offline_store.stage_dataset(ds_id, entities)
        return token, column_digests(entities)


def _refuse_expired(dataset_id: str, commits: Sequence[CommitRecord]) -> None:
    """Raise CommitExpiredError when retention deleted the data of any of ``commits``."""
    from featureledger.registry.commits import EXPIRED_STATUS

    expired = {c.commit_id: (c, int(c.status_changed_at or 0)) for c in commits
               if c.status == EXPIRED_STATUS}
    if not expired:
        return
    listed = "; ".join(
        f"{cid} ({c.view_ref}, expired {dt.datetime.fromtimestamp(at / 1e6, dt.UTC).isoformat()})"
        for cid, (c, at) in list(expired.items())[:20])
    more = f" and {len(expired) - 20} more" if len(expired) > 20 else ""
    raise CommitExpiredError(
        f"dataset {dataset_id} cannot be reproduced: retention deleted the data of "
        f"{len(expired)} commit(s) it read: {listed}{more}. Its rows cannot be rebuilt "
        "exactly (nothing partial is returned); build a new training set from the commits "
        "kept now", dataset_id=dataset_id, expired={cid: at for cid, (_c, at) in expired.items()})


def _null_features(plan: Sequence[_ViewRequest], commits: Sequence[Sequence[CommitRecord]],
                   stats: Sequence[_ViewStats], table: pa.Table, as_of_us: int | None
                   ) -> list[dict[str, str]]:
    """Features null in every row of a non-empty training set, each with the likely cause."""
    n = table.num_rows
    out: list[dict[str, str]] = []
    if n == 0:
        return out
    for r, cs, st in zip(plan, commits, stats, strict=True):
        ref = f"{r.view}@{r.version}"
        for f, o in zip(r.features, r.output_names, strict=True):
            if o not in table.column_names or table.column(o).null_count < n:
                continue
            chain = r.chain()
            if not cs:
                older = [p.version for p in chain[1:]]
                when = "" if as_of_us is None else " as of the requested time"
                cause = (f"{ref} has no data{when}: no committed commit of it"
                         + (f" or of {', '.join(f'{r.view}@{v}' for v in older)}" if older
                            else "") + " can reach these entity rows")
                if len(chain) == 1 and r.version > 1:
                    cause += (f" ({ref} does not carry the data of {r.view}@{r.version - 1}: "
                              "it was a breaking change; ingest into it, migrate the old "
                              "rows, or read the older version)")
            elif st.unmatched == n and st.outside_ttl:
                cause = (f"TTL too short: {st.outside_ttl} entity rows matched a row of {ref} "
                         "by key, but every match is older than the view's TTL "
                         f"({r.ttl_us // 1_000_000 if r.ttl_us else 0} s)")
            elif st.unmatched == n:
                keys = ", ".join(f"{k} ({t})" for k, t in r.join_keys.items())
                cause = (f"no entity row matched a row of {ref} by its keys {keys} at or "
                         "before its time: check the key values and their types, and that "
                         "entity times are not before the first event")
            elif all(p.column(f).source is None for p in chain
                     if st.rows_by_version.get(p.version)):
                cause = (f"every matched row comes from a version without {f!r} (it was "
                         "added later and has no default): ingest new rows, or give it a "
                         "default")
            else:
                cause = "the matched rows hold null for it"
            out.append({"feature": f"{ref}:{f}", "column": o, "cause": cause})
    return out


def _ts_bounds(entities: pa.Table, ts_col: str) -> tuple[int, int] | None:
    """(min, max) entity time in µs, None when every entity time is null."""
    import pyarrow.compute as pc

    mm = pc.min_max(entities.column(ts_col).cast("int64"))
    lo, hi = mm["min"].as_py(), mm["max"].as_py()
    return None if lo is None else (int(lo), int(hi))
