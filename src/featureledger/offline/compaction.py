"""Compaction: a view version's many small commit files rewritten into a few large ones.

Every ingestion is its own commit folder, so a view fed in small batches ends up read as
thousands of small files. ``compact`` rewrites the rows of a view version's commits (their
own files, and the segments of earlier compactions) into one *segment* in the clustered
layout: files of about ``compaction.target_file_rows`` rows, each holding join keys no
other file of the segment holds (a key is never split), its rows sorted by (keys, event
time, created time with nulls first, commit time), in row groups of
``compaction.row_group_rows`` rows. A point-in-time read of the whole segment then needs no
sort: the last row at or before an entity time is found by a binary search, and it is the
row a tie-break would pick (``offline/duckdb/clustered.py``). Each file's manifest entry
records the order (``engine.KEY_CLUSTERED``); segments written before it are read as before.

Memory is bounded by one output file, not by the view: the key columns are read first and
cut into files' key ranges; then each input file is read once and its rows spilled, grouped
by output file, to a local temporary folder (Arrow IPC); then each output file is gathered
(memory-mapped), sorted and written in turn.

What does not change:

* **Rows.** Every row keeps its ``_commit_id`` and ``_commit_time``; every commit of any
  status (quarantined and rolled-back ones too) goes into the segment, and readers pick the
  rows of exactly the commits they would have read (``as_of``, quarantine, rollback,
  ``reproduce``), ranked by commit for ties, so every answer and content hash is the one the
  commits' own files gave.
* **Commits.** Commit rows, seals, digests and file lists are never edited; the registry
  records the segment (``registry/segments.py``) and which commits it holds.

Crash safety, as for ingestion: the segment's files are written under the offline store's
temporary folder and renamed into place, then one registry transaction makes the segment
active and retires the segments it replaces. A crash before that transaction leaves an
orphan folder no reader sees (``gc`` removes it); after it, readers read the segment. The
files it replaced stay for ``compaction.grace_seconds`` after the compaction (readers that
planned before it still find them), then ``gc`` removes them. No reader ever reads a
commit's rows twice or not at all: a plan reads each commit from exactly one place.

Automatic compaction: after an ingestion, a view version with ``compaction.
auto_after_commits`` commits outside any segment is compacted (after the ingestion's
commit is durable; a failed compaction is logged and changes nothing).
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from featureledger.errors import StateError, StorageError
from featureledger.model.ids import new_id
from featureledger.model.timeutil import now_us
from featureledger.offline.engine import KEY_CLUSTERED
from featureledger.offline.storage import COMMIT_TIME_COLUMN, crash_point
from featureledger.registry.commits import EXPIRED_STATUS
from featureledger.registry.segments import SegmentRecord

if TYPE_CHECKING:
    import pyarrow as pa

    from featureledger.context import StoreContext
    from featureledger.registry.commits import CommitRecord

log = logging.getLogger(__name__)

# Rows scattered at a time: the join that buckets them and the takes that group them hold
# a few copies of what they work on, so they work on slices of an input file, not all of
# it (at 5M rows in 1M-row commit files: 515 MiB of Arrow memory at the peak, not 250).
SCATTER_ROWS = 262_144


@dataclass(frozen=True)
class CompactionResult:
    """What one compaction of one view version did (``segment_id`` None: nothing to do)."""

    view: str
    version: int
    segment_id: str | None
    commits: int = 0  # commits whose rows the new segment holds
    rows: int = 0
    files_before: int = 0  # files a full read of the version opened before
    files_after: int = 0
    bytes: int = 0
    seconds: float = 0.0
    retired: list[str] = field(default_factory=list)  # segments it replaced
    reason: str | None = None  # why nothing was done

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def clustered_order(table: pa.Table, keys: Sequence[str], ts: str, created: str | None,
                    *, by_commit: bool = True) -> pa.Table:
    """``table`` in the clustered order (see :attr:`ViewScan.clustered`): by join keys
    (nulls last), event time, created time (nulls first: they lose a tie) and commit
    time (``by_commit``: rows of one commit, not yet stamped, leave it out); a stable
    sort, so the bytes written are the same for the same input."""
    import pyarrow.compute as pc

    sort = [*((k, "ascending", "at_end") for k in keys), (ts, "ascending", "at_end")]
    if created is not None:  # a null created time loses a tie: it sorts first
        sort.append((created, "ascending", "at_start"))
    if by_commit:
        sort.append((COMMIT_TIME_COLUMN, "ascending", "at_end"))
    return table.take(pc.sort_indices(table, sort_keys=sort))


def _dictionary_columns(schema: pa.Schema | None) -> list[str] | bool:
    """Columns worth a dictionary: all but floating-point ones, whose values rarely repeat
    (a dictionary there makes the file larger and slower to read, measured: 90.6 MB vs
    68.5 MB and 40 vs 28 ms per million rows of ten random float columns)."""
    import pyarrow as pa

    if schema is None:
        return True
    return [f.name for f in schema if not pa.types.is_floating(f.type)]


def _key_buckets(offline: Any, inputs: Sequence[str], keys: Sequence[str], file_rows: int
                 ) -> pa.Table | None:
    """Which output file each join-key tuple goes to: the keys in order, cut into runs of
    about ``file_rows`` rows without splitting a key. Reads only the key columns. None
    when everything fits in one file."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    counts = []
    for rel in inputs:
        t = offline.read_table(rel, columns=list(keys))
        counts.append(t.group_by(list(keys), use_threads=False).aggregate([([], "count_all")]))
    table = pa.concat_tables(counts, promote_options="default")
    if (pc.sum(table.column("count_all")).as_py() or 0) <= file_rows:
        return None
    table = table.group_by(list(keys), use_threads=False).aggregate([("count_all", "sum")])
    table = table.sort_by([(k, "ascending") for k in keys])
    n = table.column("count_all_sum").to_numpy()
    before = np.cumsum(n) - n
    return table.select(list(keys)).append_column(
        "_fl_bucket", pa.array(before // file_rows, pa.int64()))


def _batched(offline: Any, inputs: Sequence[str], batch_rows: int) -> Iterator[pa.Table]:
    """The input files' rows in tables of about ``batch_rows`` rows (small commits read
    together, so a thousand tiny files are not a thousand spill files)."""
    import pyarrow as pa

    pending: list[pa.Table] = []
    held = 0
    for rel in inputs:
        table = offline.read_table(rel).replace_schema_metadata(None)
        pending.append(table)
        held += table.num_rows
        del table  # else it is still held while the next file is read
        if held >= batch_rows:  # chunks as read: combining them would copy a whole batch
            yield pa.concat_tables(pending, promote_options="default")
            pending, held = [], 0
    if pending:
        yield pa.concat_tables(pending, promote_options="default")


def _sliced(tables: Iterator[pa.Table], rows: int) -> Iterator[pa.Table]:
    """Each table in zero-copy slices of at most ``rows`` rows."""
    it = iter(tables)
    while (table := next(it, None)) is not None:
        for start in range(0, max(table.num_rows, 1), rows):
            yield table.slice(start, rows)
        del table  # not held while the next one is read


def _one_chunk(table: pa.Table) -> pa.Table:
    """``table`` with one chunk per column (a copy only when it has several)."""
    if all(c.num_chunks <= 1 for c in table.columns):
        return table
    return table.combine_chunks()


def _release() -> None:
    """Hand memory Arrow's allocator holds but no longer uses back to the system, so the
    next phase does not stack its peak on top of the last one's (mimalloc keeps freed
    pages for reuse: at 1M rows the RSS stayed ~270 MiB above its start after compaction)."""
    import pyarrow as pa

    pa.default_memory_pool().release_unused()


def _scatter(offline: Any, inputs: Sequence[str], keys: Sequence[str], ts: str,
             buckets: pa.Table | None, spill: str, batch_rows: int
             ) -> tuple[dict[int, list[tuple[str, int]]], pa.Schema | None, int, int | None,
                        int | None]:
    """Read each input file once and spill its rows, grouped by output file, to an Arrow
    IPC file under ``spill`` (one record batch per output file it feeds), small files
    ``batch_rows`` rows at a time, worked on in slices of ``SCATTER_ROWS``. Returns, per
    output file, ``(spill file, batch index)`` pieces, the row count and the event-time
    range. Memory: one batch and the work on one slice of it."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    pieces: dict[int, list[tuple[str, int]]] = {}
    schema = None
    rows, lo, hi = 0, None, None
    last = 0 if buckets is None else int(pc.max(buckets.column("_fl_bucket")).as_py() or 0)
    for n, table in enumerate(_sliced(_batched(offline, inputs, batch_rows), SCATTER_ROWS)):
        schema = schema or table.schema
        rows += table.num_rows
        if table.num_rows == 0:
            continue
        mm = pc.min_max(table.column(ts).cast(pa.int64()))
        if mm["min"].as_py() is not None:
            lo = min(x for x in (lo, mm["min"].as_py()) if x is not None)
            hi = max(x for x in (hi, mm["max"].as_py()) if x is not None)
        if buckets is None:
            parts = [(0, table)]
        else:
            index = table.select(list(keys)).append_column(
                "_fl_row", pa.array(np.arange(table.num_rows, dtype=np.int64)))
            hit = index.join(buckets, keys=list(keys), join_type="left outer")
            bucket = pc.fill_null(hit.column("_fl_bucket"), last).to_numpy()  # null keys
            row = hit.column("_fl_row").to_numpy()
            order = np.lexsort((row, bucket))
            bucket, row = bucket[order], row[order]
            cuts = np.flatnonzero(np.diff(bucket)) + 1
            parts = [(int(bucket[a]), table.take(pa.array(row[a:b])))
                     for a, b in zip(np.r_[0, cuts], np.r_[cuts, bucket.size], strict=True)
                     if b > a]
        path = f"{spill}/in-{n:06d}.arrow"
        with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            for i, (b, part) in enumerate(parts):
                writer.write_table(_one_chunk(part), max_chunksize=max(part.num_rows, 1))
                pieces.setdefault(b, []).append((path, i))
        del table, parts
        _release()
    return pieces, schema, rows, lo, hi


def key_range(table: pa.Table, key: str) -> tuple[Any, Any] | None:
    """(min, max) of ``table``'s column ``key`` when it is an integer or text column with
    a value (what a manifest entry records, so that readers skip the file without opening
    it when no entity key falls in the range), else None."""
    import pyarrow as pa
    import pyarrow.compute as pc

    t = table.schema.field(key).type
    if not (pa.types.is_integer(t) or pa.types.is_string(t) or pa.types.is_large_string(t)):
        return None
    mm = pc.min_max(table.column(key))
    lo, hi = mm["min"].as_py(), mm["max"].as_py()
    return None if lo is None else (lo, hi)


def _gathered(pieces: dict[int, list[tuple[str, int]]], schema: pa.Schema | None,
              keys: Sequence[str], ts: str, created: str | None, counts: list[int],
              ranges: list[tuple[Any, Any] | None]) -> Iterator[pa.Table]:
    """Each output file's rows, in the clustered order, one file at a time (``counts`` and
    ``ranges`` receive each one's row count and first join key's range as it is
    produced); one empty file for no rows."""
    import pyarrow as pa

    if not pieces and schema is not None:
        counts.append(0)
        ranges.append(None)
        yield schema.empty_table()
    for b in sorted(pieces):
        parts = []
        for path, i in pieces[b]:
            # mapped, not read: the pages are the page cache's, and the sort copies them
            parts.append(pa.Table.from_batches([pa.ipc.open_file(pa.memory_map(path))
                                                .get_batch(i)]))
        table = clustered_order(pa.concat_tables(parts, promote_options="default"), keys, ts,
                                created)
        counts.append(table.num_rows)
        ranges.append(key_range(table, keys[0]))
        yield table
        del table, parts
        _release()


class CompactionService:
    """Compaction of view versions (constructed as ``CompactionService(ctx)``)."""

    def __init__(self, ctx: StoreContext) -> None:
        self.ctx = ctx

    # -- what is there -----------------------------------------------------------------
    def segments(self, view: str | None = None, *, retired: bool = False
                 ) -> list[SegmentRecord]:
        """The active segments (with ``retired``, every segment), of ``view`` if given."""
        repo = self.ctx.registry.commits.segments
        segs = repo.all() if retired else repo.active()
        return [s for s in segs if view is None or s.view_name == view]

    def _versions(self, view: str | None) -> list[tuple[str, int]]:
        defs = self.ctx.registry.definitions
        names = [view] if view is not None else [
            r.name for r in defs.list("feature_view")]
        out = []
        for name in names:
            for rec in defs.versions("feature_view", name):
                out.append((name, rec.version))
        return out

    # -- compacting ----------------------------------------------------------------------
    def compact(self, view: str | None = None, *, version: int | None = None,
                min_commits: int = 2) -> list[CompactionResult]:
        """Compact every version of ``view`` (every view when None, one ``version`` when
        given) that has at least ``min_commits`` commits outside a segment, or more than
        one segment."""
        pairs = self._versions(view)
        if version is not None:
            pairs = [(v, n) for v, n in pairs if n == version]
            if not pairs:
                raise StateError(f"{view}@{version} does not exist; list its versions with "
                                 f"'featureledger versions {view}'")
        return [self.compact_version(v, n, min_commits=min_commits) for v, n in pairs]

    def compact_version(self, view: str, version: int, *, min_commits: int = 2
                        ) -> CompactionResult:
        """Compact one view version (see the module docstring)."""
        import pyarrow as pa
        start = time.perf_counter()
        cfg = self.ctx.config.compaction
        registry, offline = self.ctx.registry, self.ctx.offline_store
        # expired commits have no data left (retention deleted it)
        commits = [c for c in registry.commits.list(view, version, statuses=None)
                   if c.status not in ("pending", EXPIRED_STATUS) and c.files]
        loose = [c for c in commits if c.segment is None]
        held = {c.segment.segment_id: c.segment for c in commits if c.segment is not None}
        files_before = sum(len(c.files) for c in loose) + sum(len(s.files)
                                                              for s in held.values())
        if len(loose) < min_commits and len(held) < 2:
            return CompactionResult(view, version, None, files_before=files_before,
                                    files_after=files_before, reason=(
                                        f"{len(loose)} commit(s) outside a segment and "
                                        f"{len(held)} segment(s): nothing to compact"))
        rec = registry.definitions.get("feature_view", view, version)
        keys = list(rec.definition.join_keys)
        ts = rec.definition.timestamp_field
        created = rec.definition.created_timestamp_field
        units: list[Any] = [*loose, *held.values()]
        inputs = [rel for unit in units for rel in unit.files]
        expected = sum(c.row_count for c in loose) + sum(s.row_count for s in held.values())
        segment_id = new_id("seg")
        # Bounded memory: the key columns first (to cut the key space into files), then
        # each input file once, its rows spilled to local disk grouped by output file,
        # then each output file gathered, sorted and written in turn.
        with tempfile.TemporaryDirectory(prefix="featureledger-compact-") as spill:
            with offline.reading(commits):
                buckets = _key_buckets(offline, inputs, keys, cfg.target_file_rows)
                pieces, schema, rows, lo, hi = _scatter(offline, inputs, keys, ts, buckets,
                                                        spill, cfg.target_file_rows)
            if rows != expected:
                raise StorageError(
                    f"{view}@{version}: the files of its commits hold {rows} rows, the "
                    f"registry records {expected}; nothing was compacted. Run "
                    "'featureledger reconcile --deep' to find the commit whose files changed")
            counts: list[int] = []
            ranges: list[tuple[Any, Any] | None] = []
            try:
                written = offline.write_commit(
                    view, version, segment_id,
                    _gathered(pieces, schema, keys, ts, created, counts, ranges),
                    row_group_size=cfg.row_group_rows, use_dictionary=_dictionary_columns(schema))
            except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                raise StorageError(
                    f"the commits of {view}@{version} do not share one schema ({exc}); they "
                    f"are left as they are. Report this with 'featureledger commits {view}' "
                    "attached") from None
        manifest = written.manifest()
        for rel, n, bounds in zip(written.files, counts, ranges, strict=True):
            manifest[rel].update(rows=n, order=KEY_CLUSTERED)
            if bounds is not None:  # the first join key's range: files no key reaches
                manifest[rel]["key_range"] = list(bounds)
        member_ids = tuple(c.commit_id for c in commits)  # commit order
        seg = SegmentRecord(
            segment_id=segment_id, view_name=view, view_version=version,
            created_at=now_us(), commit_ids=member_ids, files=written.files,
            file_manifest=manifest, content_digest=written.content_digest,
            row_count=rows, min_event_ts=lo, max_event_ts=hi)
        try:
            with registry.db.write(lock_key=f"commit:{view}") as conn:
                now_active = {s.segment_id for s in registry.commits.segments.active(
                    conn, views=[(view, version)])}
                if now_active != set(held):
                    raise StateError(
                        f"{view}@{version} was compacted by another process meanwhile; "
                        "nothing was changed here. Run compact again if it still has "
                        "small commits")
                registry.commits.segments.insert(conn, seg)
                registry.commits.segments.retire(conn, sorted(held))
                registry.db.audit(conn, "compact", "feature_view", f"{view}@{version}", {
                    "segment": segment_id, "commits": len(member_ids),
                    "rows": rows, "files": len(written.files),
                    "retired": sorted(held)})
                crash_point("before_registry")
        except BaseException:
            offline.remove_commit_files(written.files)
            raise
        crash_point("after_registry")
        return CompactionResult(
            view, version, segment_id, commits=len(member_ids), rows=rows,
            files_before=files_before, files_after=len(written.files), bytes=written.bytes,
            seconds=time.perf_counter() - start, retired=sorted(held))

    def maybe_compact(self, view: str, version: int) -> CompactionResult | None:
        """Compact ``view@version`` when ``compaction.auto_after_commits`` of its commits
        are outside a segment (called after an ingestion; never raises)."""
        threshold = self.ctx.config.compaction.auto_after_commits
        if threshold is None:
            return None
        try:
            if self.ctx.registry.commits.loose_count(view, version) < threshold:
                return None
            return self.compact_version(view, version, min_commits=threshold)
        except Exception as exc:  # the ingestion already succeeded; compaction can wait
            log.warning("automatic compaction of %s@%s failed (nothing was changed): %s",
                        view, version, exc)
            return None

    def retire(self, segment_id: str, reason: str) -> SegmentRecord:
        """Retire an active segment: its commits are read from their own files again (which
        must still be there: gc removes them a grace period after the compaction)."""
        registry = self.ctx.registry
        seg = registry.commits.segments.get(segment_id)
        if seg is None:
            raise StateError(f"unknown segment {segment_id!r}; list them with "
                             "'featureledger compact --list'")
        if seg.status != "active":
            raise StateError(f"segment {segment_id} is already {seg.status}")
        commits = registry.commits.get_many(list(seg.commit_ids))
        own = [replace_segment(c) for c in commits]
        offline = self.ctx.offline_store
        missing = [f for c in own for f in offline.missing_files(c.files)]
        if missing:
            raise StateError(
                f"segment {segment_id} cannot be retired: {len(missing)} file(s) of its "
                f"commits are gone (e.g. {missing[0]}), so its rows are only in the segment. "
                "Restore the segment's files from a backup instead")
        with registry.db.write(lock_key=f"commit:{seg.view_name}") as conn:
            registry.commits.segments.retire(conn, [segment_id])
            registry.db.audit(conn, "retire_segment", "feature_view", seg.view_ref,
                              {"segment": segment_id, "reason": reason})
        got = registry.commits.segments.get(segment_id)
        assert got is not None
        return got


def replace_segment(c: CommitRecord) -> CommitRecord:
    """``c`` read from its own files (not from the segment holding its rows)."""
    import dataclasses

    return dataclasses.replace(c, segment=None)
