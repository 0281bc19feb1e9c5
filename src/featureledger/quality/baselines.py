"""Baselines: which commits a drift comparison reads on each side.

A baseline (or the current side) is written as one string:

=========================  ===========================================================
``latest``                 the newest committed commit of the view
``previous`` / ``previous:N``  the N (default 10) committed commits before the current one
``commit:ID``              one commit
``commits:A..B``           every committed commit from A to B (commit order, inclusive)
``commits:A,B,C``          exactly these commits
``window:START..END``      the commits committed in [START, END) (ISO 8601 or µs);
                           either side may be empty
``dataset:ds_...``         the commits of this view a training dataset read (a model's
                           training set is its natural baseline)
=========================  ===========================================================

Only commits readable by the view version compared (its data chain) count; quarantined
and rolled-back commits are left out, except when named explicitly (``commit:``,
``commits:A,B``), so a quarantined commit can still be examined.

The summaries of a baseline come from its commits' stored profiles
(:func:`profile_summaries`), or exactly from its rows read through the offline engine
(:func:`data_summaries`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from featureledger.errors import QualityError
from featureledger.model.timeutil import to_us
from featureledger.quality.sketches import (
    CategoricalSummary,
    NumericSummary,
    Summary,
    merge_profiles,
)

if TYPE_CHECKING:
    import pyarrow as pa

    from featureledger.context import StoreContext
    from featureledger.registry.commits import CommitRecord

DEFAULT_PREVIOUS = 10
KINDS = ("latest", "previous", "commit", "commits", "window", "dataset")


@dataclass(frozen=True)
class Baseline:
    """A resolved baseline: the spec, the view version and the commits it reads."""

    spec: str
    view: str
    version: int
    commits: list[CommitRecord]

    @property
    def rows(self) -> int:
        return sum(c.row_count for c in self.commits)

    def to_dict(self) -> dict[str, Any]:
        ids = [c.commit_id for c in self.commits]
        return {"spec": self.spec, "view": f"{self.view}@{self.version}",
                "commits": len(ids), "first_commit": ids[0] if ids else None,
                "last_commit": ids[-1] if ids else None, "rows": self.rows}


def _time(text: str, spec: str) -> int | None:
    if not text:
        return None
    try:
        return to_us(int(text)) if text.lstrip("-").isdigit() else to_us(text)
    except Exception:
        raise QualityError(f"baseline {spec!r}: {text!r} is not a time; write ISO 8601 "
                           "(2024-05-01T00:00:00Z) or microseconds since the epoch") from None


def resolve(ctx: StoreContext, view: str, spec: str, *, version: int | None = None,
            before: CommitRecord | None = None) -> Baseline:
    """The commits ``spec`` names for ``view`` (version: latest by default). ``before``
    is the current commit: ``previous`` counts back from it, and it is never part of
    ``previous``."""
    reg = ctx.registry
    rec = reg.definitions.view(view, version)
    chain = [p.version for p in reg.definitions.data_chain(rec.name, rec.version)]
    kind, _, arg = spec.partition(":")
    kind = kind.strip()
    if kind not in KINDS:
        raise QualityError(
            f"baseline {spec!r} is not known; use one of latest, previous[:N], commit:ID, "
            "commits:A..B, commits:A,B, window:START..END, dataset:DS_ID")

    def visible() -> list[CommitRecord]:
        return list(reg.commits.list(rec.name, versions=chain))

    commits: list[CommitRecord]
    if kind == "latest":
        commits = reg.commits.list(rec.name, versions=chain, newest=1)
    elif kind == "previous":
        try:
            n = int(arg) if arg else DEFAULT_PREVIOUS
        except ValueError:
            raise QualityError(f"baseline {spec!r}: N must be a whole number") from None
        if n < 1:
            raise QualityError(f"baseline {spec!r}: N must be at least 1")
        # N rows read, however long the view's history (checked at every commit)
        commits = reg.commits.list(
            rec.name, versions=chain, newest=n,
            before=(before.commit_time, before.commit_id) if before is not None else None)
    elif kind == "commit" or (kind == "commits" and ".." not in arg):
        ids = [a.strip() for a in arg.split(",") if a.strip()]
        if not ids:
            raise QualityError(f"baseline {spec!r} names no commit")
        commits = reg.commits.get_many(ids)
        wrong = [c.commit_id for c in commits if c.view_name != rec.name]
        if wrong:
            raise QualityError(f"baseline {spec!r}: commit(s) {wrong} are not commits of "
                               f"view {rec.name!r}")
    elif kind == "commits":
        a, _, b = arg.partition("..")
        all_commits = visible()
        ids = [c.commit_id for c in all_commits]
        for end in (a, b):
            if end and end not in ids:
                raise QualityError(f"baseline {spec!r}: {end} is not a committed commit of "
                                   f"{rec.ref}; list them with 'featureledger commits "
                                   f"{rec.name}'")
        first = ids.index(a) if a else 0
        last = ids.index(b) + 1 if b else len(ids)
        commits = all_commits[first:last]
    elif kind == "window":
        a, sep, b = arg.partition("..")
        if not sep:
            raise QualityError(f"baseline {spec!r}: write window:START..END")
        lo, hi = _time(a, spec), _time(b, spec)
        commits = [c for c in visible() if (lo is None or c.commit_time >= lo)
                   and (hi is None or c.commit_time < hi)]
    else:  # dataset
        ds = reg.datasets.get(arg)
        wanted = set(ds.commit_ids)
        commits = [c for c in reg.commits.list(rec.name, versions=chain, statuses=None)
                   if c.commit_id in wanted]
    return Baseline(spec, rec.name, rec.version, commits)


def profile_summaries(baseline: Baseline, features: Sequence[str]) -> dict[str, Summary]:
    """Per feature, the summary merged from the baseline commits' stored profiles."""
    return merge_profiles((c.profile for c in baseline.commits), features)


def table_summaries(table: pa.Table, features: Sequence[str]) -> dict[str, Summary]:
    """Per feature, the exact summary of ``table``'s column."""
    import pyarrow as pa
    import pyarrow.compute as pc

    out: dict[str, Summary] = {}
    for name in features:
        if name not in table.column_names:
            continue
        col = table.column(name)
        t = col.type
        rows = len(col)
        if pa.types.is_integer(t) or pa.types.is_floating(t):
            values = col.drop_null() if col.null_count else col
            arr = (values.combine_chunks() if values.num_chunks != 1
                   else values.chunk(0)).to_numpy(zero_copy_only=False)
            if pa.types.is_floating(t):
                import numpy as np

                arr = arr[np.isfinite(arr)]
            out[name] = NumericSummary.from_values(arr, rows)
        elif pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_boolean(t):
            counts = pc.value_counts(col.drop_null() if col.null_count else col)
            vals = counts.field("values").to_pylist()
            if pa.types.is_boolean(t):
                vals = ["true" if v else "false" for v in vals]
            out[name] = CategoricalSummary.from_values(
                vals, counts.field("counts").to_pylist(), rows, col.null_count)
    return out


def read_rows(ctx: StoreContext, baseline: Baseline, features: Sequence[str]) -> pa.Table:
    """The baseline's stored rows (its features), read through the offline engine."""
    from featureledger.offline.engine import ViewScan

    reg = ctx.registry
    rec = reg.definitions.view(baseline.view, baseline.version)
    fv = rec.definition
    chain = reg.definitions.data_chain(rec.name, rec.version)
    dtypes = {f.name: f.dtype for f in fv.fields}
    feats = [f for f in features if f in dtypes]
    scan = ViewScan.of(
        join_keys=list(fv.join_keys), timestamp_field=fv.timestamp_field,
        created_field=fv.created_timestamp_field, features=feats, output_names=feats,
        dtypes=[dtypes[f] for f in feats], ttl_us=None, store=ctx.offline_store,
        commits=baseline.commits, chain=chain, tie_break=False, event_range=None)
    with ctx.offline_store.reading(baseline.commits):
        return ctx.engine.rows(scan)


def data_summaries(ctx: StoreContext, baseline: Baseline, features: Sequence[str]
                   ) -> dict[str, Summary]:
    """Per feature, the exact summary of the baseline's rows."""
    if not baseline.commits:
        return {}
    return table_summaries(read_rows(ctx, baseline, features), features)
