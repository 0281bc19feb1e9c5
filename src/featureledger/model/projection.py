"""Where a view version's data comes from: its own commits and those of the versions before.

A version reached from the previous one through changes that keep old rows readable (every
change *carries data*: an added nullable field or one with a default, a removed field, a
widened type, a loosened constraint, docs, TTL, checks, source) reads the commits of that
previous version too, and so on down the chain. Each older version's rows are *projected*
onto the newer schema: a field the older version lacks is null, or the newer field's
declared default; a widened type is cast; a field the newer version removed is dropped.
A change that does not carry data (a narrowed or changed type, a new required field, a
tightened constraint, a changed unit, keys, timestamps or transformation) ends the chain:
the version starts with no data of its own, unless a migration fills it.

A field is projected from an older version only if it exists in every version between
the two: a field removed in v2 and added again in v3 is not filled from v1.

>>> from featureledger.model.definitions import FeatureView, Field
>>> v1 = FeatureView(name="s", entities=["d"], join_keys={"id": "int64"},
...                  fields=[Field(name="x", dtype="int32")])
>>> v2 = v1.model_copy(update={"fields": [Field(name="x", dtype="int64"),
...                                       Field(name="y", dtype="string", default="n/a")]})
>>> chain = data_chain([VersionInfo(1, v1, []),
...                     VersionInfo(2, v2, ["type_widened", "field_added_nullable"])], 2)
>>> [p.version for p in chain]
[2, 1]
>>> [(c.name, c.source, c.source_dtype, c.dtype, c.default) for c in chain[1].columns]
[('x', 'x', 'int32', 'int64', None), ('y', None, None, 'string', 'n/a')]
>>> chain[1].describe()
'x cast int32 -> int64; y filled with its default'
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from featureledger.model.compat import CHANGE_CLASSES
from featureledger.model.definitions import FeatureView


@dataclass(frozen=True)
class ColumnSource:
    """How one field of the read version is filled from one source version's files."""

    name: str  # the field, in the read version
    source: str | None  # its column in the source version's files; None when absent
    source_dtype: str | None
    dtype: str  # the read version's dtype
    default: Any = None  # used when ``source`` is None (None: null)

    @property
    def identity(self) -> bool:
        return self.source == self.name and self.source_dtype == self.dtype

    @property
    def defaulted(self) -> bool:
        return self.source is None and self.default is not None


@dataclass(frozen=True)
class VersionProjection:
    """The rows of ``version``'s commits as the read version sees them."""

    version: int
    columns: tuple[ColumnSource, ...]  # in the read version's field order

    @property
    def identity(self) -> bool:
        return all(c.identity for c in self.columns)

    def column(self, name: str) -> ColumnSource:
        return next(c for c in self.columns if c.name == name)

    def select(self, names: Sequence[str]) -> VersionProjection:
        """The projection of only the fields ``names`` (in that order)."""
        return VersionProjection(self.version, tuple(self.column(n) for n in names))

    def describe(self) -> str:
        """How this version's rows are projected, in words ('as stored' when unchanged)."""
        parts = []
        for c in self.columns:
            if c.source is None:
                parts.append(f"{c.name} filled with its default" if c.default is not None
                             else f"{c.name} null")
            elif c.source_dtype != c.dtype:
                parts.append(f"{c.name} cast {c.source_dtype} -> {c.dtype}")
        return "; ".join(parts) or "as stored"

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version,
                "columns": [[c.name, c.source, c.source_dtype, c.dtype, c.default]
                            for c in self.columns]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VersionProjection:
        return cls(int(d["version"]), tuple(ColumnSource(*c) for c in d["columns"]))

    @classmethod
    def own(cls, version: int, view: FeatureView) -> VersionProjection:
        """A version's own commits: every field as stored."""
        return cls(version, tuple(ColumnSource(f.name, f.name, f.dtype, f.dtype)
                                  for f in view.fields))


@dataclass(frozen=True)
class VersionInfo:
    """One stored version: its definition and the classified changes that made it."""

    version: int
    view: FeatureView
    changes: Sequence[str]  # change class names against the previous version
    breaking: bool = False  # applied with --allow-breaking


def carries_data(changes: Sequence[str]) -> bool:
    """True when rows written under the previous version stay readable after ``changes``."""
    return all(CHANGE_CLASSES[c].carries_data for c in changes if c in CHANGE_CLASSES)


def _breaks_only_aggregations(changes: Sequence[str]) -> bool:
    """True when a version applied as breaking was refused only for its aggregations
    (every other change is compatible under every mode): its rows are the old rows."""
    return "aggregations_changed" in changes and all(
        c == "aggregations_changed" or (c in CHANGE_CLASSES and CHANGE_CLASSES[c].backward
                                        and CHANGE_CLASSES[c].forward)
        for c in changes)


def data_chain(versions: Sequence[VersionInfo], target: int) -> list[VersionProjection]:
    """The versions whose commits ``target`` reads, newest first, each with its projection.

    ``versions`` holds every version up to ``target`` (any order); the first entry of the
    result is ``target`` itself, as stored.
    """
    by_version = {v.version: v for v in versions}
    read = by_version[target].view
    chain = [VersionProjection.own(target, read)]
    # the field of ``read`` each column still maps to, walking down: name -> source name
    alive = {f.name: f.name for f in read.fields}
    current = by_version[target]
    while current.version - 1 in by_version and carries_data(current.changes) \
            and (not current.breaking or _breaks_only_aggregations(current.changes)):
        older = by_version[current.version - 1]
        older_fields = {f.name: f for f in older.view.fields}
        alive = {n: s for n, s in alive.items() if s in older_fields}
        cols = []
        for f in read.fields:
            src = alive.get(f.name)
            if src is None:
                cols.append(ColumnSource(f.name, None, None, f.dtype, f.default))
            else:
                cols.append(ColumnSource(f.name, src, older_fields[src].dtype, f.dtype))
        chain.append(VersionProjection(older.version, tuple(cols)))
        current = older
    return chain
