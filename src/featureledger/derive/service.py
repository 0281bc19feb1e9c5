"""Computing derived views: incremental, resumable, idempotent; staleness; backfill.

A derived view (a :class:`~featureledger.model.definitions.FeatureView` with a
``transformation``) is filled by :meth:`DeriveService.derive`, never by ingestion. Its
first parent *drives*: what is derived is the rows of that parent's committed commits,
read through the offline engine as the parent version reads them (the effective row per
keys and event time: a later commit's row replaces an earlier one's). The other parents
are lookups, read whole as they are at the time of the derive.

**What is recorded.** Every derived commit records in its ``source`` the exact parent
commits it read, per parent with the version read, and the event-time range it covers
(``None``: all of it); its ``steps`` record the transformation (language, code digest,
params, the versions of declared imports); a ``derived_from`` lineage edge goes from
every parent commit read to it. That record *is* the incremental state: a parent commit
is derived over the part of its event-time range that no live (``committed``, not stale)
derived commit of the view covers. No other bookkeeping exists, so nothing can disagree
with the commits.

**Atomic units.** Each unit of work (the whole pending set, or one backfill chunk) is
computed and committed inside one registry write transaction holding the view's commit
lock: the derived commit, its lineage edges and the roll-back of the commits it
supersedes commit together or not at all. A process killed mid-way leaves whole units;
the rerun finds what is still pending and continues. With nothing pending, nothing is
committed.

**Staleness** (see :mod:`featureledger.registry.derivations`) is computed from the record
when asked: a parent commit read is no longer committed, or an unpinned parent has a
newer version. A plain ``derive`` rolls back every stale commit of the view in the same
transaction that commits what replaces it (the rows of the parent commits that are still
committed, read through the parent's current version), so a reader sees either the stale
rows or their replacement, never both and never neither. Training sets that read the
stale commit still reproduce: they name it, and a rolled-back commit keeps its files.
A backfill (``start``/``end``) leaves stale commits to the next plain ``derive``.

**Backfill** splits ``[start, end)`` into event-time chunks (``chunk``, e.g. ``"1d"``);
each chunk reads only the parent rows in its range (the engine skips row groups outside
it), so memory is bounded by a chunk, and is one commit. ``full=True`` rolls back every
live derived commit and recomputes everything, in one transaction.

Row-wise transformations (projections, filters, arithmetic per row, joins to lookups)
give the same answers derived incrementally or in full; a transformation that aggregates
across rows sees only the rows of one unit.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from featureledger.derive import runner
from featureledger.errors import DefinitionError, DerivationError, StateError
from featureledger.events import CommitCompleted, CommitStatusChanged
from featureledger.governance.access import AccessControl
from featureledger.lineage.columns import column_lineage
from featureledger.model.definitions import parse_ttl
from featureledger.model.ids import new_id
from featureledger.model.timeutil import to_us
from featureledger.offline.engine import ViewScan
from featureledger.offline.storage import crash_point
from featureledger.registry.commits import require_sealed
from featureledger.registry.derivations import DERIVE_SOURCE, derivation, stale_reasons
from featureledger.registry.lineage_edges import DERIVED_FROM

if TYPE_CHECKING:
    import pyarrow as pa
    from sqlalchemy.engine import Connection

    from featureledger.context import StoreContext
    from featureledger.model.definitions import FeatureView
    from featureledger.model.projection import VersionProjection
    from featureledger.registry import DefinitionRecord
    from featureledger.registry.commits import CommitRecord

Range = tuple[int | None, int | None]  # event-time µs, end exclusive; None: unbounded
INTERNAL = ("_commit_id", "_commit_time")


@dataclass(frozen=True)
class DeriveProgress:
    """Where a derive is: ``done`` of ``total`` units, rows committed so far."""

    view_ref: str
    done: int
    total: int
    rows: int
    range: Range


@dataclass
class DeriveResult:
    """What one ``derive`` committed and superseded."""

    view_ref: str
    commits: list[CommitRecord] = field(default_factory=list)
    superseded: list[str] = field(default_factory=list)  # derived commits rolled back
    stale_left: list[str] = field(default_factory=list)  # stale commits a backfill left
    seconds: float = 0.0

    @property
    def rows(self) -> int:
        return sum(c.row_count for c in self.commits)

    @property
    def unchanged(self) -> bool:
        """True when there was nothing to derive (no commit was made)."""
        return not self.commits and not self.superseded

    def to_dict(self) -> dict[str, Any]:
        return {"view": self.view_ref, "commits": [c.commit_id for c in self.commits],
                "rows": self.rows, "superseded": self.superseded,
                "stale_left": self.stale_left, "seconds": round(self.seconds, 3)}


@dataclass(frozen=True)
class _Parent:
    name: str
    version: int
    pinned: bool
    view: FeatureView
    chain: list[VersionProjection]


def _subtract(span: tuple[int, int], covers: Sequence[Range]) -> list[tuple[int, int]]:
    """``span`` minus the union of ``covers`` (half-open intervals).

    >>> _subtract((0, 10), [(2, 4), (None, 1), (8, None)])
    [(1, 2), (4, 8)]
    """
    out = [span]
    for lo, hi in covers:
        nxt = []
        for a, b in out:
            c = a if lo is None else max(a, lo)
            d = b if hi is None else min(b, hi)
            if c >= d:
                nxt.append((a, b))
                continue
            if a < c:
                nxt.append((a, c))
            if d < b:
                nxt.append((d, b))
        out = nxt
    return out


def chunks(start: int, end: int, step: int) -> list[tuple[int, int]]:
    """``[start, end)`` cut into ``step``-long pieces (the last may be shorter).

    >>> chunks(0, 25, 10)
    [(0, 10), (10, 20), (20, 25)]
    """
    return [(lo, min(lo + step, end)) for lo in range(start, end, step)]


class DeriveService:
    """``derive``: compute a derived view's commits from its parents."""

    def __init__(self, ctx: StoreContext) -> None:
        self.ctx = ctx

    # -- public ---------------------------------------------------------------------------
    def derive(self, view: str, *, full: bool = False, start: Any = None, end: Any = None,
               chunk: Any = None,
               progress: Callable[[DeriveProgress], None] | None = None) -> DeriveResult:
        """Compute what is pending of derived view ``view`` (its newest version) and commit it.

        By default incremental: the driving parent's commits (or parts of them) that no
        live derived commit covers, plus a recomputation of every stale derived commit,
        as one commit. ``start``/``end`` (times; ISO text, datetimes or µs) limit it to
        that event-time range, in ``chunk``-long pieces (``"1d"``, ``"6h"``; default the
        whole range), one commit each: a backfill. ``full=True`` recomputes everything
        (the live derived commits are rolled back in the same transaction). Nothing
        pending: nothing is committed (``result.unchanged``). ``progress`` is called after
        each unit.
        """
        t0 = time.perf_counter()
        rec = self.ctx.registry.definitions.view(view)
        t = rec.definition.transformation
        if t is None:
            raise DerivationError(
                f"feature view {rec.ref} is not a derived view (it has no transformation); "
                "ingest into it, or give it transformation=Transformation(...)")
        if rec.status == "retired":
            raise StateError(f"feature view {rec.ref} is retired and takes no new data; "
                             "apply a new version and derive that")
        runner.check_transformation(t, rec.name)
        access = self.ctx.part(AccessControl)
        if access.enabled():  # it writes the derived view from every field of its parents
            access.require_object("write", rec.definition, what=f"the derivation of {rec.ref}")
            access.require_reads("read_offline", (
                (name, version, None) for name, version in t.parent_refs()),
                what=f"the derivation of {rec.ref}")
        parents = self._parents(rec)
        units = self._units(start, end, chunk)
        backfill = units != [(None, None)]
        result = DeriveResult(rec.ref)
        if full:
            self._in_one_transaction(rec, parents, units, result, progress, full=True)
        elif not backfill:
            self._in_one_transaction(rec, parents, units, result, progress, full=False)
        else:
            for i, unit in enumerate(units):
                self._in_one_transaction(rec, parents, [unit], result, None, full=False,
                                         backfill=True)
                if progress is not None:
                    progress(DeriveProgress(rec.ref, i + 1, len(units), result.rows, unit))
            result.stale_left = sorted(c for c, why in self._staleness(rec).items() if why)
        result.seconds = time.perf_counter() - t0
        return result

    def stale(self, view: str) -> dict[str, tuple[str, ...]]:
        """The stale live commits of derived view ``view`` (newest version's data), with
        why each is stale."""
        rec = self.ctx.registry.definitions.view(view)
        return {c: why for c, why in self._staleness(rec).items() if why}

    # -- planning -------------------------------------------------------------------------
    def _parents(self, rec: DefinitionRecord) -> list[_Parent]:
        t = rec.definition.transformation
        defs = self.ctx.registry.definitions
        out = []
        for name, version in t.parent_refs():
            if name == rec.name:
                raise DefinitionError(f"derived view {rec.name!r} names itself as a parent")
            prec = defs.view(name, version)  # a parent may itself be derived
            out.append(_Parent(name, prec.version, version is not None, prec.definition,
                               defs.data_chain(name, prec.version)))
        return out

    def _units(self, start: Any, end: Any, chunk: Any) -> list[Range]:
        if start is None and end is None:
            if chunk is not None:
                raise DerivationError("--chunk needs --start and --end: a backfill covers a "
                                      "range of event time, e.g. --start 2026-01-01 --end "
                                      "2026-02-01 --chunk 1d")
            return [(None, None)]
        if start is None or end is None:
            raise DerivationError("a backfill needs both start and end (event times, end "
                                  "exclusive), e.g. --start 2026-01-01 --end 2026-02-01")
        lo, hi = to_us(start), to_us(end)
        if lo >= hi:
            raise DerivationError(f"the backfill range is empty: start {start} is not before "
                                  f"end {end}")
        step = hi - lo
        if chunk is not None:
            try:
                size = parse_ttl(chunk)
            except ValueError as exc:
                raise DerivationError(f"--chunk {chunk!r}: {exc}") from None
            if size is None or size <= dt.timedelta(0):
                raise DerivationError(f"--chunk {chunk!r} must be a positive duration, e.g. 1d")
            step = size // dt.timedelta(microseconds=1)
        return list(chunks(lo, hi, step))

    def _live(self, rec: DefinitionRecord) -> list[CommitRecord]:
        """The committed commits of the derived view's data chain."""
        versions = [p.version for p in self.ctx.registry.definitions.data_chain(
            rec.name, rec.version)]
        return self.ctx.registry.commits.list(rec.name, versions=versions,
                                              statuses=("committed",))

    def _staleness(self, rec: DefinitionRecord) -> dict[str, tuple[str, ...]]:
        return stale_reasons(self.ctx.registry.db, self._live(rec))

    # -- one transaction -------------------------------------------------------------------
    def _in_one_transaction(self, rec: DefinitionRecord, parents: list[_Parent],
                            units: list[Range], result: DeriveResult,
                            progress: Callable[[DeriveProgress], None] | None, *,
                            full: bool, backfill: bool = False) -> None:
        registry = self.ctx.registry
        made: list[CommitRecord] = []
        gone: list[str] = []
        written: list[Any] = []
        with registry.db.write(lock_key=f"commit:{rec.name}") as conn:
            try:
                live = self._live(rec)  # read under the lock: no other derive runs now
                why = stale_reasons(registry.db, live)
                if full:
                    drop = [c.commit_id for c in live if derivation(c.source) is not None]
                elif backfill:
                    drop = []
                else:
                    drop = [c for c, w in why.items() if w]
                keep = [c for c in live if c.commit_id not in drop
                        and derivation(c.source) is not None]
                covered = _coverage(keep, parents[0].name)
                for i, unit in enumerate(units):
                    out = self._unit(conn, rec, parents, unit, covered)
                    if out is not None:
                        record, files = out
                        made.append(record)
                        written.append(files)
                        for c in record.source["parents"][0]["commits"]:
                            covered.setdefault(c, []).append(unit)
                    if progress is not None:
                        progress(DeriveProgress(rec.ref, i + 1, len(units),
                                                result.rows + sum(m.row_count for m in made),
                                                unit))
                for cid in drop:
                    by = made[0].commit_id if made else None
                    reason = (f"superseded by {by}" if by else "superseded: its parent "
                              "commits are no longer committed") + (
                        "" if full else f" ({'; '.join(why.get(cid, ()))})")
                    registry.commits.set_status_in(conn, cid, "rolled_back",
                                                   reason if not full else
                                                   f"recomputed in full by derive ({by})")
                    gone.append(cid)
            except BaseException:
                for files in written:  # the transaction rolls back: so must the files
                    self.ctx.offline_store.remove_commit_files(files.files)
                raise
        result.commits.extend(made)
        result.superseded.extend(gone)
        for record in made:
            self.ctx.events.emit(CommitCompleted(commit=record, source="derive"))
        for cid in gone:
            self.ctx.events.emit(CommitStatusChanged(
                commit=registry.commits.get(cid), previous="committed",
                reason="superseded by derive"))
        if made:
            from featureledger.offline.compaction import CompactionService

            self.ctx.part(CompactionService).maybe_compact(rec.name, rec.version)

    def _unit(self, conn: Connection, rec: DefinitionRecord, parents: list[_Parent],
              unit: Range, covered: dict[str, list[Range]]
              ) -> tuple[CommitRecord, Any] | None:
        """Derive what is pending of ``unit``; None when nothing is."""

        from featureledger.context import current_run_id
        from featureledger.ingest.commit import commit_in
        from featureledger.ingest.validation import conform_strict

        drive = parents[0]
        commits = self._committed(drive)
        pending: dict[str, list[tuple[int, int]]] = {}
        for c in commits:
            if not c.row_count or c.min_event_ts is None or c.max_event_ts is None:
                continue
            lo = c.min_event_ts if unit[0] is None else max(c.min_event_ts, unit[0])
            hi = c.max_event_ts + 1 if unit[1] is None else min(c.max_event_ts + 1, unit[1])
            if lo >= hi:
                continue
            left = _subtract((lo, hi), covered.get(c.commit_id, []))
            if left:
                pending[c.commit_id] = left
        if not pending:
            return None
        lo = min(a for parts in pending.values() for a, _ in parts)
        hi = max(b for parts in pending.values() for _, b in parts)
        # every committed commit overlapping the range is read, so a later commit's row
        # wins a tie even when that commit was derived before; then only pending rows stay
        overlapping = [c for c in commits if c.row_count and c.min_event_ts is not None
                       and c.max_event_ts is not None and c.min_event_ts < hi
                       and c.max_event_ts >= lo]
        rows = self._read(drive, overlapping, lo, hi)
        rows = _only_pending(rows, drive.view.timestamp_field, pending)
        inputs: dict[str, pa.Table] = {drive.name: rows.drop_columns(
            [c for c in INTERNAL if c in rows.column_names])}
        read: list[dict[str, Any]] = [{"view": drive.name, "version": drive.version, "pinned": drive.pinned,
                 "role": "input", "commits": [c.commit_id for c in commits
                                              if c.commit_id in pending]}]
        for p in parents[1:]:
            got = self._committed(p)
            table = self._read(p, got, None, None)
            inputs[p.name] = table.drop_columns([c for c in INTERNAL if c in table.column_names])
            read.append({"view": p.name, "version": p.version, "pinned": p.pinned,
                         "role": "lookup", "commits": [c.commit_id for c in got]})
        t = rec.definition.transformation
        output = runner.run(t, rec.name, inputs)
        data = conform_strict(
            rec.definition, output, f"the derivation of {rec.ref}",
            "Fix the transformation so that it returns the derived view's join keys, "
            "timestamp and fields, with values its fields and checks accept.")
        commit_id = new_id("cmt")
        run = current_run_id()
        source = {"type": DERIVE_SOURCE, "range": None if unit == (None, None) else list(unit),
                  "parents": read, "transformation": rec.definition_hash,
                  "columns": column_lineage(rec.definition, {p.name: p.view for p in parents})}
        steps = [{"step": "derive", "params": {
            "language": t.language, "code_sha256": runner.code_digest(t), "params": t.params,
            "parents": [f"{r['view']}@{r['version']}" for r in read],
            "imports": runner.module_versions(t), "rows_in": rows.num_rows,
            "rows_out": data.num_rows}}]
        edges = [(c, commit_id, DERIVED_FROM) for r in read for c in r["commits"]]

        def build(commit_time: int, stored: pa.Table, files: Any) -> CommitRecord:
            return _record(commit_time, stored, files, commit_id=commit_id, rec=rec,
                           user=self.ctx.registry.actor, run=run, source=source, steps=steps,
                           string_chars=self.ctx.config.bounds.profile_chars)

        record, _, files = commit_in(
            self.ctx, conn, view=rec.name, version=rec.version, commit_id=commit_id,
            rows=data, build=build, source_uri=None, run=run,
            audit={"source": "derive", "parents": [f"{r['view']}@{r['version']}"
                                                   for r in read]},
            edges=edges)
        crash_point("derive_before_registry")  # files and row written, not committed
        return record, files

    def _committed(self, p: _Parent) -> list[CommitRecord]:
        commits = self.ctx.registry.commits.list(
            p.name, versions=[v.version for v in p.chain], statuses=("committed",))
        require_sealed(commits, "derived from")
        return commits

    def _read(self, p: _Parent, commits: list[CommitRecord], lo: int | None,
              hi: int | None) -> pa.Table:
        """The effective rows of ``commits`` with ``lo <= event time < hi``, as ``p``'s
        version reads them, with ``_commit_id``."""
        import pyarrow as pa

        from featureledger.model.types import to_arrow

        v = p.view
        live = [c for c in commits if c.row_count]
        if not live:
            fields = ([pa.field(k, to_arrow(t)) for k, t in v.join_keys.items()]
                      + [pa.field(v.timestamp_field, pa.timestamp("us", tz="UTC"))]
                      + [pa.field(f.name, to_arrow(f.dtype)) for f in v.fields]
                      + [pa.field("_commit_id", pa.string()),
                         pa.field("_commit_time", pa.timestamp("us", tz="UTC"))])
            return pa.schema(fields).empty_table()
        scan = ViewScan.of(
            join_keys=list(v.join_keys), timestamp_field=v.timestamp_field,
            created_field=v.created_timestamp_field, features=v.feature_names,
            output_names=v.feature_names, dtypes=[f.dtype for f in v.fields], ttl_us=None,
            store=self.ctx.offline_store, commits=live, chain=p.chain, tie_break=True,
            event_range=(min(int(c.min_event_ts or 0) for c in live),
                         max(int(c.max_event_ts or 0) for c in live)))
        with self.ctx.offline_store.reading(live):
            table = self.ctx.engine.window(scan, lo, hi).read_all()
        return _utc(table, v.timestamp_field)


def _utc(table: pa.Table, ts: str) -> pa.Table:
    import pyarrow as pa

    want = pa.timestamp("us", tz="UTC")
    i = table.schema.get_field_index(ts)
    if i >= 0 and table.schema.field(i).type != want:
        table = table.set_column(i, pa.field(ts, want), table.column(i).cast(want))
    return table


def _only_pending(rows: pa.Table, ts: str, pending: dict[str, list[tuple[int, int]]]
                  ) -> pa.Table:
    """The rows whose commit is pending at their event time."""
    import numpy as np
    import pyarrow as pa

    if rows.num_rows == 0:
        return rows
    ids = rows.column("_commit_id").to_pylist()
    times = rows.column(ts).cast(pa.int64()).to_numpy(zero_copy_only=False)
    keep = np.zeros(rows.num_rows, dtype=bool)
    for i, (cid, t) in enumerate(zip(ids, times, strict=True)):
        for a, b in pending.get(cid, ()):
            if a <= t < b:
                keep[i] = True
                break
    return rows.filter(pa.array(keep))


def _coverage(derived: Sequence[CommitRecord], drive: str) -> dict[str, list[Range]]:
    """Driving-parent commit id -> the ranges live derived commits cover of it."""
    out: dict[str, list[Range]] = {}
    for d in derived:
        src = derivation(d.source) or {}
        rng = src.get("range")
        span: Range = (None, None) if rng is None else (rng[0], rng[1])
        for p in src.get("parents", []):
            if p.get("role") == "input" and p.get("view") == drive:
                for c in p.get("commits", []):
                    out.setdefault(c, []).append(span)
    return out


def _record(commit_time: int, stored: pa.Table, files: Any, *, commit_id: str,
            rec: DefinitionRecord, user: str, run: str | None, source: dict[str, Any],
            steps: list[dict[str, Any]], string_chars: int) -> CommitRecord:
    import pyarrow as pa
    import pyarrow.compute as pc

    from featureledger.ingest.profile import profile_table
    from featureledger.registry.commits import CommitRecord

    ts_field = rec.definition.timestamp_field
    n = stored.num_rows
    ts = stored.column(ts_field).cast(pa.int64())
    data = stored.drop_columns([c for c in INTERNAL if c in stored.column_names])
    return CommitRecord(
        commit_id=commit_id, view_name=rec.name, view_version=rec.version,
        commit_time=commit_time, user=user, run_id=run, source=source, steps=steps,
        row_count=n, rejected_count=0,
        validation={"mode": "strict", "rows_checked": n, "rows_valid": n},
        profile=profile_table(data, string_chars=string_chars) if n else {},
        files=files.files, content_digest=files.content_digest,
        min_event_ts=pc.min(ts).as_py() if n else None,
        max_event_ts=pc.max(ts).as_py() if n else None)
