"""The ingestion pipeline: read, map, filter, cast, validate, profile, commit.

One call of :meth:`IngestionService.ingest` is one commit (``cmt_<uuid7>``) of one view
version. Nothing becomes visible before the registry transaction that records the commit
succeeds:

1. the input is read and shaped in memory (no writes) and validated; the profile of the
   valid rows is computed on a helper thread while step 3 writes the files;
2. a registry write transaction starts (serialised per view), the commit time is taken
   as ``max(now, last commit time of the view + 1µs)`` so commit times increase
   strictly per view in commit order;
3. the Parquet files are written under ``_tmp/`` (fsynced) and renamed into
   ``views/<view>/v<version>/<commit_id>/``;
4. the commit row, its lineage edges and an audit entry are inserted (for a view with a
   quality policy also the policy's check and alerts, the row inserted ``quarantined``
   when the policy says so) and the transaction commits.

A process killed at any instant leaves either the whole commit or a folder no registry
row lists, which readers never see and ``gc`` removes. A strict rejection writes nothing
at all.
"""

from __future__ import annotations

import functools
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np

from featureledger.context import current_run_id
from featureledger.errors import IngestionError, StateError, ValidationFailedError
from featureledger.events import (
    CommitCompleted,
    CommitFailed,
    CommitStarted,
    CommitStatusChanged,
    GcCompleted,
)
from featureledger.governance.access import AccessControl
from featureledger.ingest.casting import (
    COMMIT_ID_COLUMN,
    COMMIT_TIME_COLUMN,
    Conformed,
    apply_column_map,
    conform,
)
from featureledger.ingest.commit import cluster_order, write_commit
from featureledger.ingest.profile import profile_table
from featureledger.ingest.sources import InputData, arrow_digest, read_input
from featureledger.ingest.validation import (
    ROW_COLUMN,
    ValidationReport,
    superseded_rows,
    validate,
)
from featureledger.model.bounds import shorten
from featureledger.model.ids import new_id
from featureledger.model.timeutil import to_us
from featureledger.offline.duckdb.guard import check_expression
from featureledger.offline.duckdb.sandbox import SandboxError, query
from featureledger.offline.storage import GcReport, WrittenFiles, crash_point
from featureledger.quality.service import CommitGate, QualityService
from featureledger.registry.commits import (
    EXPIRED_STATUS,
    PENDING_STATUS,
    CommitRecord,
    expired_error,
)

if TYPE_CHECKING:
    import pyarrow as pa

    from featureledger.context import StoreContext
    from featureledger.offline.interface import OfflineStore
    from featureledger.quality.schema_drift import SchemaDriftReport
    from featureledger.registry.quality import QualityCheck

MODES = ("strict", "drop_invalid")
Duplicates = Literal["reject", "keep_last"]
DUPLICATES: tuple[str, ...] = get_args(Duplicates)
REJECTED_FILE = "rejected.parquet"


@dataclass(frozen=True)
class IngestionResult:
    """What one ingestion committed: the commit record, its report and profile."""

    commit: CommitRecord
    report: ValidationReport
    profile: dict[str, Any]
    offline: OfflineStore  # the offline store, to read the rejected rows
    timings: dict[str, float] = field(default_factory=dict)  # seconds per phase
    # the quality check of the commit, when its view has a quality policy
    quality: QualityCheck | None = None

    @property
    def commit_id(self) -> str:
        return self.commit.commit_id

    @property
    def view_ref(self) -> str:
        return self.commit.view_ref

    @property
    def row_count(self) -> int:
        return self.commit.row_count

    @property
    def rejected_count(self) -> int:
        return self.commit.rejected_count

    @property
    def rejected_path(self) -> str | None:
        return self.report.rejected_path

    def rejected(self) -> pa.Table | None:
        """The rows a ``drop_invalid`` ingestion refused, with ``_row`` and ``_reasons``."""
        return read_rejected(self.offline, self.commit)

    def to_dict(self) -> dict[str, Any]:
        return {**self.commit.to_dict(), "timings": self.timings,
                "quality": self.quality.to_dict() if self.quality is not None else None}


CommitResult = IngestionResult


def read_rejected(offline: OfflineStore | Path, commit: CommitRecord) -> pa.Table | None:
    """A commit's rejected rows (None when it rejected none), from the offline store (or
    a local store root)."""
    import pyarrow.parquet as pq

    path = commit.validation.get("rejected_path")
    if not path:
        return None
    if isinstance(offline, (str, Path)):
        return pq.read_table(Path(offline) / path)
    return offline.read_table(path)


def _rejection_message(ref: str, report: ValidationReport) -> str:
    return (
        f"ingestion into {ref} rejected (mode {report.mode}): {report.rows_rejected} of "
        f"{report.rows_checked} rows fail validation; nothing was written.\n"
        f"{report.summary()}\n"
        "Fix the data, or ingest with mode='drop_invalid' (CLI: --mode drop_invalid) to "
        "commit the valid rows and keep the others as the commit's rejected set."
    )


def _apply_filter(table: pa.Table, rows: np.ndarray, sql: str
                  ) -> tuple[pa.Table, np.ndarray]:
    """The rows of ``table`` for which ``sql`` (one expression, checked by the SQL guard)
    is true, evaluated on the sandbox over nothing but these rows."""
    import pyarrow as pa

    expr = check_expression(sql, "filter", IngestionError, columns=table.column_names)
    numbered = table.append_column(ROW_COLUMN, pa.array(rows, pa.int64()))
    try:
        kept = query(f"SELECT {ROW_COLUMN} FROM _in WHERE {expr.sql}", {"_in": numbered})
    except SandboxError as exc:
        raise IngestionError(
            f"filter {shorten(sql, 120)} cannot be evaluated: {exc.first_line}. Write a "
            "DuckDB SQL boolean over the input columns (after the column map)."
        ) from None
    keep = np.zeros(table.num_rows, dtype=bool)
    keep[np.searchsorted(rows, kept.column(0).to_numpy())] = True
    return table.filter(pa.array(keep)), rows[keep]


def _mapped(columns: tuple[str, ...], column_map: dict[str, str | None] | None
            ) -> list[str]:
    """Input column names as the column map renames them (dropped ones left out)."""
    if not column_map:
        return list(columns)
    out = []
    for c in columns:
        name = column_map.get(c, c)
        if name:
            out.append(name)
    return out


def _take(conformed: Conformed, keep: np.ndarray) -> Conformed:
    """The conformed rows where ``keep`` is True, cast failures kept aligned."""
    import pyarrow as pa

    return Conformed(conformed.table.filter(pa.array(keep)),
                     {c: m[keep] for c, m in conformed.cast_failures.items()},
                     dict(conformed.cast_notes), list(conformed.steps))


def _timed(fn: Any, *args: Any) -> tuple[Any, float]:
    t = time.perf_counter()
    return fn(*args), time.perf_counter() - t


def _csv_types(view: Any, column_map: dict[str, str | None] | None) -> dict[str, Any]:
    """float32 fields, by input column name: CSV text is parsed straight to float32."""
    import pyarrow as pa

    wanted = {f.name for f in view.fields if f.dtype == "float32"}
    out = {name: pa.float32() for name in wanted}
    for src, dst in (column_map or {}).items():
        out.pop(src, None)
        if dst in wanted:
            out[src] = pa.float32()
    return out


class IngestionService:
    """Ingestion, the commit log and its maintenance (status changes, gc)."""

    def __init__(self, ctx: StoreContext) -> None:
        self.ctx = ctx

    @property
    def _registry(self) -> Any:
        return self.ctx.registry

    # -- ingest -----------------------------------------------------------------------
    def ingest(self, view: str, data: Any = None, *, version: int | None = None,
               mode: str = "strict", duplicates: Duplicates = "reject",
               run_id: str | None = None,
               column_map: dict[str, str | None] | None = None, filter: str | None = None,
               user: str | None = None, source_name: str | None = None) -> IngestionResult:
        """Validate ``data`` and write it as one commit of ``view`` (latest version by default).

        ``data``: pandas / Polars DataFrame, Arrow Table or RecordBatchReader, a Parquet/CSV
        path or glob, or None for the view's own file source. ``column_map`` renames
        (``{"src": "field"}``) or drops (``{"src": None}``) input columns; ``filter`` is one
        DuckDB SQL boolean expression selecting the input rows to ingest (rows it drops are
        not validated), checked by :mod:`featureledger.offline.duckdb.guard` and run on the
        sandbox. A relative path is relative to the repository; files outside it are read
        only under ``sources.allowed_prefixes``. ``mode="strict"`` rejects the whole commit on any invalid row (raises
        :class:`ValidationFailedError` with ``.report``); ``"drop_invalid"`` commits the
        valid rows and stores the others, with their reasons, as the rejected set. The
        run is ``run_id`` or the active run.

        ``duplicates`` decides about rows with the same join keys and event time:
        ``"reject"`` (the default) fails every row of such a group (rule ``unique_key``);
        ``"keep_last"`` keeps the row with the latest created timestamp (when the view
        declares ``created_timestamp_field``), then the one latest in the input, and drops
        the others before validation, counting them in ``report.rows_superseded`` (they
        are neither valid nor rejected).

        Input columns are cast to the declared types only where the cast is exact, and a
        field the input lacks is filled with its ``default`` (or null when it is nullable);
        nulls present in the input are never replaced. The rules are in
        :mod:`featureledger.ingest.casting`, the checks in
        :mod:`featureledger.ingest.validation`.
        """
        if mode not in MODES:
            raise IngestionError(f"mode {mode!r} is not known; use 'strict' or 'drop_invalid'")
        if duplicates not in DUPLICATES:
            raise IngestionError(f"duplicates={duplicates!r} is not known; use 'reject' (every "
                                 "row of a duplicate group fails) or 'keep_last'")
        if filter is not None:
            # refused before anything is read; the columns are checked once they are known
            check_expression(filter, "filter", IngestionError)
        rec = self._registry.definitions.view(view, version)
        self.ctx.part(AccessControl).require_object("write", rec.definition,
                                                    what=f"an ingestion into {rec.ref}")
        if rec.status == "retired":
            raise StateError(
                f"feature view {rec.ref} is retired and takes no new data; ingest into a "
                "newer version"
            )
        if rec.definition.transformation is not None:
            raise IngestionError(
                f"feature view {rec.ref} is a derived view: its rows are computed from "
                f"{', '.join(rec.definition.transformation.parents)}, not ingested. Run "
                f"'featureledger derive {rec.name}' (store.derive({rec.name!r}))")
        commit_id = new_id("cmt")
        run = current_run_id(run_id)
        self.ctx.events.emit(CommitStarted(commit_id=commit_id, view=rec.name,
                                           version=rec.version, run_id=run, mode=mode))
        try:
            return self._ingest(rec, commit_id, data, mode=mode, duplicates=duplicates, run=run,
                                column_map=column_map, filter_sql=filter,
                                user=user or self._registry.actor, source_name=source_name)
        except Exception as exc:
            self.ctx.events.emit(CommitFailed(commit_id=commit_id, view_ref=rec.ref,
                                              error=exc))
            raise

    def _ingest(self, rec: Any, commit_id: str, data: Any, *, mode: str, duplicates: str,
                run: str | None,
                column_map: dict[str, str | None] | None, filter_sql: str | None,
                user: str, source_name: str | None) -> IngestionResult:
        fv = rec.definition
        timings: dict[str, float] = {}
        t = time.perf_counter()
        config = self.ctx.config
        inp = read_input(data, fv, source_name=source_name, digest=False,
                         base=config.root, allowed_prefixes=config.sources.allowed_prefixes,
                         text_types=_csv_types(fv, column_map),
                         bad_lines="error" if mode == "strict" else "skip")
        timings["read"] = time.perf_counter() - t
        with ThreadPoolExecutor(max_workers=2) as pool:
            # hashing in-memory input overlaps validation, and profiling overlaps the
            # Parquet write (their kernels release the GIL)
            digest = None if inp.has_digest else pool.submit(arrow_digest, inp.table)
            return self._shape_and_commit(rec, commit_id, inp, digest, pool, timings,
                                          mode=mode, duplicates=duplicates, run=run,
                                          column_map=column_map,
                                          filter_sql=filter_sql, user=user)

    def _shape_and_commit(self, rec: Any, commit_id: str, inp: InputData, digest: Any,
                          pool: ThreadPoolExecutor, timings: dict[str, float], *,
                          mode: str, duplicates: str, run: str | None,
                          column_map: dict[str, str | None] | None, filter_sql: str | None,
                          user: str) -> IngestionResult:
        import pyarrow as pa
        import pyarrow.compute as pc

        fv = rec.definition
        t = time.perf_counter()
        quality = self.ctx.part(QualityService)
        policy = quality.policy(rec.name)
        if policy is not None:  # before anything is written: the source's columns
            quality.refuse_schema_drift(
                quality.schema_drift(rec.name, inp.table.schema, version=rec.version,
                                     column_map=column_map), rec.ref)
        table, map_step = apply_column_map(inp.table, column_map)
        steps: list[dict[str, Any]] = [map_step] if map_step else []
        rows = np.arange(table.num_rows, dtype=np.int64)
        if filter_sql:
            before = table.num_rows
            table, rows = _apply_filter(table, rows, filter_sql)
            steps.append({"step": "filter", "params": {"sql": filter_sql},
                          "rows_in": before, "rows_out": table.num_rows})
        if table.num_rows == 0:
            raise IngestionError(
                f"nothing to ingest into {rec.ref}: the input has no rows"
                + (" after the filter" if filter_sql else "")
                + (f" ({inp.unparsed_count} line(s) could not be parsed, e.g. line "
                   f"{inp.unparsed[0]['line']} of {inp.unparsed[0]['file']}: "
                   f"{inp.unparsed[0]['problem']})" if inp.unparsed_count else "")
            )
        conformed = conform(table, fv, nan_marks_missing=_mapped(inp.nan_marks_missing,
                                                                 column_map))
        steps += conformed.steps
        superseded, sample = (superseded_rows(conformed.table, fv, rows)
                              if duplicates == "keep_last" else (None, []))
        if superseded is not None:
            keep = ~superseded
            steps.append({"step": "deduplicate", "params": {
                "duplicates": "keep_last", "keys": [*fv.join_keys, fv.timestamp_field],
                "order": [*([fv.created_timestamp_field] if fv.created_timestamp_field
                            else []), "input position"]},
                "rows_in": table.num_rows, "rows_out": int(keep.sum())})
            table, rows, conformed = table.filter(pa.array(keep)), rows[keep], \
                _take(conformed, keep)
        timings["shape"] = time.perf_counter() - t
        t = time.perf_counter()
        bounds = self.ctx.config.bounds
        outcome = validate(conformed, fv, raw=table, row_numbers=rows, mode=mode,
                           value_chars=bounds.value_chars)
        report = outcome.report
        report.duplicates = duplicates
        report.rows_unparsed, report.unparsed = inp.unparsed_count, list(inp.unparsed)
        if superseded is not None:
            report.rows_superseded = int(superseded.sum())
            report.rows_checked += report.rows_superseded
            report.superseded = sample
        timings["validate"] = time.perf_counter() - t
        good = conformed.table
        rejected = None
        if outcome.bad is not None:
            if mode == "strict":
                raise ValidationFailedError(_rejection_message(rec.ref, report), report)
            if report.rows_valid == 0:
                also = (f" ({report.rows_superseded} more were superseded duplicates)"
                        if report.rows_superseded else "")
                raise ValidationFailedError(
                    f"every one of the {report.rows_rejected} rows fails validation{also}, "
                    f"so nothing was committed to {rec.ref}:\n{report.summary()}\nFix the data.",
                    report,
                )
            bad = pa.array(outcome.bad)
            good = good.filter(pc.invert(bad))
            rejected = (table.filter(bad)
                        .append_column(ROW_COLUMN, pa.array(rows[outcome.bad]))
                        .append_column("_reasons", outcome.reasons))
        profiling = pool.submit(_timed, functools.partial(
            profile_table, string_chars=bounds.profile_chars), good)
        ts = pc.min_max(good.column(fv.timestamp_field).cast(pa.int64()))
        t = time.perf_counter()
        # a view with a quality policy: its verdict is taken in the commit's transaction
        gate = quality.gate(policy) if policy is not None else None
        record = self._commit(rec, commit_id, good, rejected, report=report,
                              profiling=profiling, inp=inp, digest=digest, steps=steps,
                              run=run, user=user, min_ts=ts["min"].as_py(),
                              max_ts=ts["max"].as_py(), timings=timings, gate=gate)
        timings["commit"] = time.perf_counter() - t
        if gate is not None:  # the policy's check, part of the commit's time
            timings["quality"] = gate.seconds
        profile = record.profile
        crash_point("after_registry")
        self.ctx.events.emit(CommitCompleted(
            commit=record, source="ingest",
            schema=good.schema.append(pa.field(COMMIT_ID_COLUMN, pa.string()))
            .append(pa.field(COMMIT_TIME_COLUMN, pa.timestamp("us", tz="UTC"))),
            report=report, profile=profile))
        # past a number of small commits, the version's files are compacted (after the
        # commit is durable and acknowledged above; a failure there changes nothing)
        from featureledger.offline.compaction import CompactionService

        self.ctx.part(CompactionService).maybe_compact(record.view_name, record.view_version)
        return IngestionResult(record, report, profile, self.ctx.offline_store, timings,
                               gate.check if gate is not None else None)

    def _commit(self, rec: Any, commit_id: str, good: pa.Table, rejected: pa.Table | None, *,
                report: ValidationReport, profiling: Future[Any], inp: InputData,
                digest: Future[str] | None, steps: list[dict[str, Any]], run: str | None,
                user: str,
                min_ts: int | None, max_ts: int | None,
                timings: dict[str, float], gate: CommitGate | None) -> CommitRecord:
        def build(commit_time: int, stored: pa.Table, written: WrittenFiles) -> CommitRecord:
            timings.update({f"commit.{k}": v for k, v in written.seconds.items()})
            report.rejected_path = written.extra_files.get(REJECTED_FILE)
            profile, timings["profile"] = profiling.result()
            if digest is not None:
                inp.set_digest(digest.result())
            return CommitRecord(
                commit_id=commit_id, view_name=rec.name, view_version=rec.version,
                commit_time=commit_time, user=user, run_id=run, source=inp.description,
                steps=steps, row_count=stored.num_rows, rejected_count=report.rows_rejected,
                validation=report.to_dict(), profile=profile, files=written.files,
                content_digest=written.content_digest, min_event_ts=min_ts,
                max_event_ts=max_ts,
            )

        record, _, _ = write_commit(
            self.ctx, view=rec.name, version=rec.version, commit_id=commit_id, rows=good,
            build=build, source_uri=lambda: inp.uri, run=run, actor=user,
            audit={"rejected": report.rows_rejected},
            extra_tables={REJECTED_FILE: rejected} if rejected is not None else None,
            gate=gate, order=cluster_order(rec.definition),
        )
        return record

    # -- the commit log ------------------------------------------------------------------
    def commits(self, view: str | None = None, *, version: int | None = None,
                status: str | tuple[str, ...] | None = None, run_id: str | None = None,
                as_of: Any = None, limit: int | None = None) -> list[CommitRecord]:
        """Commits, oldest first; every status unless ``status`` names some. A commit of
        a derived view has ``stale`` set: why it is stale (empty when it is not)."""
        from featureledger.registry.derivations import with_staleness

        statuses = (status,) if isinstance(status, str) else status
        # a derived commit says whether it is stale (see registry/derivations.py)
        return with_staleness(self._registry.db, self._registry.commits.list(  # type: ignore[no-any-return]
            view, version, as_of=to_us(as_of) if as_of is not None else None,
            statuses=statuses, run_id=run_id, limit=limit,
        ))

    def get_commit(self, commit_id: str) -> CommitRecord:
        return self._registry.commits.get(commit_id)

    def _set_status(self, commit_id: str, status: str, reason: str,
                    allowed_from: tuple[str, ...]) -> CommitRecord:
        if not reason or not str(reason).strip():
            raise StateError(f"say why: changing a commit to {status!r} needs a reason")
        old = self.get_commit(commit_id)
        self.ctx.part(AccessControl).require_view(
            "quarantine", old.view_name, old.view_version,
            what=f"changing commit {commit_id} to {status}")
        if old.status == PENDING_STATUS:
            raise StateError(
                f"commit {commit_id} is pending: its pushed rows have not landed offline "
                "yet. Flush the pushes (or restart the server holding them), then change "
                "its status"
            )
        if old.status == EXPIRED_STATUS:
            raise expired_error(old)
        if old.status == status:
            return old
        if old.status not in allowed_from:
            raise StateError(
                f"commit {commit_id} is {old.status}; it cannot become {status} directly "
                f"(allowed from: {', '.join(allowed_from)}). Restore it first."
            )
        new = self._registry.commits.set_status(commit_id, status, reason)
        self.ctx.events.emit(CommitStatusChanged(commit=new, previous=old.status,
                                                 reason=reason))
        return new

    def quarantine(self, commit_id: str, reason: str) -> CommitRecord:
        """Hide a commit from retrieval and serving until restored."""
        return self._set_status(commit_id, "quarantined", reason, ("committed",))

    def rollback(self, commit_id: str, reason: str) -> CommitRecord:
        """Mark a commit rolled back; it is read again only if restored."""
        return self._set_status(commit_id, "rolled_back", reason,
                                ("committed", "quarantined"))

    def restore(self, commit_id: str, reason: str) -> CommitRecord:
        """Make a quarantined or rolled-back commit visible again."""
        return self._set_status(commit_id, "committed", reason, ("quarantined", "rolled_back"))

    def rollback_data(self, view: str, *, to_commit: str | None = None, to_time: Any = None,
                      reason: str) -> list[CommitRecord]:
        """Roll ``view`` back to its data as of commit ``to_commit`` (or commit time
        ``to_time``): every committed commit after it is marked rolled back, each through
        :meth:`rollback` (audited; the online store follows; restoring one serves it
        again). Nothing is deleted. Returns the commits rolled back, oldest first."""
        if (to_commit is None) == (to_time is None):
            raise StateError("name exactly one of to_commit (a commit id) and to_time")
        if not reason or not str(reason).strip():
            raise StateError("say why: rolling a view back needs a reason")
        rec = self._registry.definitions.view(view)
        chain = [p.version for p in self._registry.definitions.data_chain(rec.name)]
        commits = self._registry.commits.list(rec.name, versions=chain)
        if to_commit is not None:
            target = self.get_commit(to_commit)
            if target.view_name != rec.name:
                raise StateError(f"commit {to_commit} belongs to {target.view_ref}, not to "
                                 f"view {rec.name!r}")
            after = [c for c in commits if (c.commit_time, c.commit_id)
                     > (target.commit_time, target.commit_id)]
        else:
            cutoff = to_us(to_time)
            after = [c for c in commits if c.commit_time > cutoff]
        why = f"view rollback to {to_commit or to_time}: {reason}"
        done = [self.rollback(c.commit_id, why) for c in after]
        with self._registry.db.write(bump=False) as conn:
            from featureledger.registry.lineage_edges import ROLLED_BACK, record_edges, view_node

            # the view version points at the commits its rollback hid, in lineage
            record_edges(conn, [(view_node(c.view_name, c.view_version), c.commit_id,
                                 ROLLED_BACK, {"reason": why}) for c in done])
            self._registry.db.audit(conn, "view_rollback:data", "feature_view", rec.name, {
                "to_commit": to_commit, "to_time": str(to_time) if to_time is not None
                else None, "rolled_back": [c.commit_id for c in done], "reason": reason})
        return done

    def schema_drift(self, view: str, data: Any = None, *, version: int | None = None,
                     column_map: dict[str, str | None] | None = None,
                     source_name: str | None = None) -> SchemaDriftReport:
        """How ``data`` (as :meth:`ingest` takes it; None: the view's own source) differs
        from ``view``'s definition: columns added, missing, renamed-looking or retyped,
        each with what to do. Nothing is written."""
        rec = self._registry.definitions.view(view, version)
        config = self.ctx.config
        inp = read_input(data, rec.definition, source_name=source_name, digest=False,
                         base=config.root, allowed_prefixes=config.sources.allowed_prefixes)
        sample = inp.table.slice(0, 10_000)
        return self.ctx.part(QualityService).schema_drift(
            rec.name, inp.table.schema, version=rec.version, column_map=column_map,
            profile=profile_table(sample))

    def gc(self, grace_seconds: float = 3600, dry_run: bool = False) -> GcReport:
        """Remove commit folders that no registry row references and abandoned temp files.

        Folders younger than ``grace_seconds`` are kept, since an ingestion may be between
        its rename and its registry commit; use 0 only when no ingestion is running.
        """
        self.ctx.part(AccessControl).require_admin(what="garbage collection")
        # files a compaction replaced stay referenced for the same grace period
        referenced = self._registry.commits.live_files(int(grace_seconds * 1_000_000))
        datasets = {p.rsplit("/", 1)[0] for p in self._registry.datasets.entity_paths()}
        report = self.ctx.offline_store.gc(referenced, grace_seconds=grace_seconds,
                                           dry_run=dry_run, referenced_datasets=datasets)
        self.ctx.events.emit(GcCompleted(report=report, dry_run=dry_run))
        return report
