"""Read plans: feature references resolved once to tables, codecs and positions.

A plan maps a request (a list of references or a feature set) to the view versions to
read, how to encode each view's entity keys, how to decode its payloads, and where each
requested feature sits in the decoded record. Plans are cached per registry generation by
``OnlineService``: a request never parses references or reads definitions again until
the registry changes.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from featureledger.errors import InvalidReferenceError, RetrievalError
from featureledger.model.definitions import FeatureView
from featureledger.model.references import FeatureRef, parse_reference
from featureledger.online.aggregates import aggregate_table, aggregate_view, is_aggregate_table
from featureledger.online.codec import KeyCodec, ValueCodec
from featureledger.online.response import Layout
from featureledger.online.stores import TableRef

_US = dt.timedelta(microseconds=1)


@dataclass
class ViewGroup:
    """One view version read by a plan."""

    table: TableRef
    view: FeatureView
    keys: KeyCodec
    codec: ValueCodec
    ttl_us: int | None
    columns: list[tuple[int, int]]  # (output position, field position in the record)
    key_slot: int = 0  # groups with the same join keys share one list of encoded keys
    none_row: tuple[None, ...] = ()  # the values of a record that is not served
    defaults: list[tuple[int, Any]] = field(default_factory=list)  # (output position, default)
    positions: list[int] = field(default_factory=list)  # field positions, in output order


class _Everyone(set[str]):
    """The readers of a plan while no access policy is in force: every principal."""

    def __contains__(self, item: object) -> bool:
        return True


EVERYONE: set[str] = _Everyone()


@dataclass
class ReadPlan:
    names: list[str]  # output names, request order
    references: list[str]  # pinned references, same order
    versions: list[int]
    dtypes: list[str]
    defaults: list[Any]
    group_of: list[int]  # output position -> group index
    groups: list[ViewGroup]
    join_keys: list[str]  # every join key the request needs, first-seen order
    key_codecs: list[KeyCodec] | None = None  # one per distinct set of join keys
    layout: Layout | None = None  # shared by every response of this plan
    # per output position: commits whose rows hold the field's default (status DEFAULT)
    defaulted: list[frozenset[str] | None] | None = None
    # principals the access policy lets read every feature of this plan (checked on a
    # principal's first read; a plan lives one registry generation, as the policy does)
    readers: set[str] = field(default_factory=set)
    # (pinned reference, deprecation) of each deprecated feature read; None: none (a read
    # then passes the deprecation gate without a look, see registry/lifecycle.py)
    deprecated: list[tuple[str, Any]] | None = None

    def __post_init__(self) -> None:
        # everything a read needs beyond the references is derived here, once per plan
        slots: dict[tuple[Any, ...], int] = {}
        codecs: list[KeyCodec] = []
        for g in self.groups:
            sig = (g.keys.names, g.keys.dtypes)
            if sig not in slots:
                slots[sig] = len(codecs)
                codecs.append(g.keys)
            g.key_slot = slots[sig]
            g.none_row = (None,) * len(g.view.fields)
            g.positions = [fi for _out, fi in g.columns]
            g.defaults = [(out, self.defaults[out]) for out, _fi in g.columns
                          if self.defaults[out] is not None]
        self.key_codecs = codecs
        self.layout = Layout(self.join_keys, self.names, self.references, self.versions,
                             self.group_of, self.dtypes, self.defaulted)


def build_plan(registry: Any, features: list[str] | tuple[str, ...], *,
               full_feature_names: bool = False) -> ReadPlan:
    """Resolve references against the registry (one definition read per view version)."""
    if isinstance(features, str):
        raise InvalidReferenceError(
            f"features must be a list of references, got the single string {features!r}; "
            "wrap it in a list"
        )
    if not features:
        raise RetrievalError("no features requested; pass references such as "
                             "['driver_stats:trips'] or feature_set='NAME'")
    refs: list[FeatureRef] = [parse_reference(f) for f in features]
    for ref in refs:
        if ref.version is not None and ref.version >= 2**31:  # beyond any stored version
            raise InvalidReferenceError(
                f"feature reference {str(ref)!r} names version {ref.version}, which cannot "
                "exist; pin a version the view has (see 'featureledger versions VIEW')"
            )
    views: dict[tuple[str, int | None], Any] = {}
    groups: dict[TableRef, ViewGroup] = {}
    names: list[str] = []
    out_refs: list[str] = []
    versions: list[int] = []
    dtypes: list[str] = []
    defaults: list[Any] = []
    group_of: list[int] = []
    join_keys: list[str] = []
    for ref in refs:
        key = (ref.view, ref.version)
        if key not in views:
            views[key] = registry.definitions.get("feature_view", ref.view, ref.version)
    # several versions of one view in one request: full names carry the version
    versions_of: dict[str, set[int]] = {}
    for (view_name, _v), rec in views.items():
        versions_of.setdefault(view_name, set()).add(rec.version)
    for ref in refs:
        rec = views[(ref.view, ref.version)]
        view: FeatureView = rec.definition
        table = TableRef(view.name, rec.version)
        if view.aggregation(ref.feature) is not None:  # served from its own table
            view, table = aggregate_view(view), aggregate_table(table)
        fld = view.field(ref.feature)  # UnknownFeatureError names the fields
        group = groups.get(table)
        if group is None:
            ttl = None if view.ttl is None else view.ttl // _US
            group = ViewGroup(table, view, KeyCodec(view.join_keys),
                              ValueCodec([f.dtype for f in view.fields]), ttl, [])
            groups[table] = group
            for k in view.join_keys:
                if k not in join_keys:
                    join_keys.append(k)
        if not full_feature_names:
            name = ref.feature
        elif len(versions_of[ref.view]) > 1:
            name = f"{ref.view}@{rec.version}__{ref.feature}"
        else:
            name = ref.output_name
        if name in names:
            pinned = str(ref.pinned(rec.version))
            if pinned in out_refs:
                raise RetrievalError(
                    f"{ref} names {pinned}, which the request already has (version "
                    f"{rec.version} is the latest); list it once")
            raise RetrievalError(
                f"feature name {name!r} would appear twice in the result; pass "
                "full_feature_names=True to name columns 'view__feature' "
                "('view@VERSION__feature' where a request reads several versions of a view)"
            )
        group.columns.append((len(names), view.feature_names.index(fld.name)))
        names.append(name)
        out_refs.append(str(ref.pinned(rec.version)))
        versions.append(rec.version)
        dtypes.append(fld.dtype)
        defaults.append(fld.default)
        group_of.append(list(groups).index(table))
    defaulted = _defaulted_commits(registry, list(groups.values()), len(names))
    return ReadPlan(names, out_refs, versions, dtypes, defaults, group_of,
                    list(groups.values()), join_keys, defaulted=defaulted,
                    deprecated=registry.lifecycle.gate.matches(out_refs) or None)


def _defaulted_commits(registry: Any, groups: list[ViewGroup], n: int
                       ) -> list[frozenset[str] | None] | None:
    """Per output position, the commits (of older versions the view version carries data
    from) whose rows lack the field and so serve its declared default; None if none do."""
    out: list[frozenset[str] | None] = [None] * n
    for g in groups:
        if is_aggregate_table(g.table):  # computed values: never a field's default
            continue
        chain = registry.definitions.data_chain(g.table.view, g.table.version)
        if len(chain) == 1:
            continue
        commit_ids: dict[int, frozenset[str]] = {}
        for out_pos, fi in g.columns:
            field_name = g.view.fields[fi].name
            versions = [p.version for p in chain[1:] if p.column(field_name).defaulted]
            if not versions:
                continue
            ids: set[str] = set()
            for v in versions:
                if v not in commit_ids:
                    commit_ids[v] = frozenset(c.commit_id for c in registry.commits.list(
                        g.table.view, v, statuses=None))
                ids |= commit_ids[v]
            out[out_pos] = frozenset(ids)
    return out if any(out) else None


def feature_set_references(registry: Any, feature_set: str) -> list[str]:
    """The pinned references of ``name`` or ``name@version``."""
    name, _, version = feature_set.partition("@")
    if version and not version.isdigit():
        raise InvalidReferenceError(
            f"feature set {feature_set!r} is malformed; write 'NAME' or 'NAME@VERSION'"
        )
    rec = registry.definitions.get("feature_set", name, int(version) if version else None)
    return list(rec.definition.features)
