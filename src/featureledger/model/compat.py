"""Classification of definition changes and compatibility modes.

Each change between two versions of a feature view gets a class. A class is either
*backward compatible* (consumers of the new version can read data written under the old)
and/or *forward compatible* (consumers of the old version can read data written under
the new), as in schema registries. A view's compatibility mode decides what is refused:

=========== =============================================
mode        refuses a change that is not ...
=========== =============================================
backward    backward compatible
forward     forward compatible
full        both
none        (nothing is refused)
=========== =============================================

>>> from featureledger.model.definitions import FeatureView, Field
>>> old = FeatureView(name="v", entities=["e"], join_keys={"id": "int64"},
...                   fields=[Field(name="x", dtype="int32")])
>>> new = old.model_copy(update={"fields": [Field(name="x", dtype="int64")]})
>>> [c.change for c in classify_view_change(old, new)]
['type_widened']
>>> violations(classify_view_change(old, new), "forward")[0].change
'type_widened'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from featureledger.model.definitions import FeatureView, Field
from featureledger.model.display import format_value as _v
from featureledger.model.types import is_widening


@dataclass(frozen=True)
class ChangeClass:
    name: str
    backward: bool
    forward: bool
    new_version: bool
    summary: str

    @property
    def carries_data(self) -> bool:
        """Rows written before the change stay readable by the new version (projected onto
        its schema), so the new version reads the old version's commits too. That is what
        backward compatibility means for data, except a changed transformation: rows a
        derived view computed with other code are not this version's rows."""
        if self.name == "aggregations_changed":
            return True  # aggregations are computed from the same rows at read time
        return self.backward and self.name != "transformation_changed"


CHANGE_CLASSES: dict[str, ChangeClass] = {
    c.name: c
    for c in [
        ChangeClass("field_added_nullable", True, True, True,
                    "added a nullable field (or one with a default)"),
        ChangeClass("field_added_required", False, True, True,
                    "added a required field: data written before has no value for it"),
        ChangeClass("field_removed", True, False, True,
                    "removed a field: readers of the old version expect it"),
        ChangeClass("type_widened", True, False, True,
                    "widened a type: old readers cannot hold every new value"),
        ChangeClass("type_narrowed", False, True, True,
                    "narrowed a type: data written before may not fit"),
        ChangeClass("type_changed", False, False, True,
                    "changed a type incompatibly"),
        ChangeClass("range_tightened", False, True, True,
                    "tightened a constraint (range, allowed values, regex, nullability or "
                    "allow_nan): data written before may violate it"),
        ChangeClass("range_loosened", True, False, True,
                    "loosened a constraint: new data may violate what old readers assume"),
        ChangeClass("unit_changed", False, False, True,
                    "changed a unit: the same number now means something else"),
        ChangeClass("keys_changed", False, False, True,
                    "changed the entities or join keys: rows no longer line up"),
        ChangeClass("timestamp_changed", False, False, True,
                    "changed the event or created timestamp column"),
        ChangeClass("source_changed", True, True, True, "changed the source"),
        ChangeClass("ttl_changed", True, True, True, "changed the TTL"),
        ChangeClass("checks_changed", True, True, True, "changed the row checks"),
        ChangeClass("transformation_changed", True, True, True, "changed the transformation"),
        ChangeClass("default_changed", True, True, True, "changed a default value"),
        # an aggregation's value is computed at read time from the rows, so no stored row
        # is unreadable; but a consumer of the old version would get other numbers under
        # the same name (or a name that is gone): breaking both ways, like a unit change
        ChangeClass("aggregations_changed", False, False, True,
                    "changed the windowed aggregations: the same name may now mean other "
                    "numbers"),
        ChangeClass("compatibility_changed", True, True, True, "changed the compatibility mode"),
        ChangeClass("features_changed", True, True, True,
                    "changed the feature references of a feature set"),
        ChangeClass("description_only", True, True, False,
                    "changed only descriptions, owner or tags: docs are updated in place"),
    ]
}


@dataclass(frozen=True)
class Change:
    """One classified difference between two versions of a definition."""

    change: str
    field: str | None
    detail: str

    @property
    def cls(self) -> ChangeClass:
        return CHANGE_CLASSES[self.change]

    def __str__(self) -> str:
        where = f"field {self.field!r}: " if self.field else ""
        return f"{self.change} ({where}{self.detail})"


def compatible(change: str, mode: str) -> bool:
    c = CHANGE_CLASSES[change]
    return {
        "none": True,
        "backward": c.backward,
        "forward": c.forward,
        "full": c.backward and c.forward,
    }[mode]


def violations(changes: list[Change], mode: str) -> list[Change]:
    """The changes that ``mode`` refuses."""
    return [c for c in changes if not compatible(c.change, mode)]


def _constraint_direction(old: Field, new: Field) -> list[Change]:
    """range_tightened / range_loosened changes between two fields of the same dtype."""
    out: list[Change] = []
    name = new.name

    def add(tight: bool, what: str) -> None:
        out.append(Change("range_tightened" if tight else "range_loosened", name, what))

    for bound, tighter in (("min", lambda o, n: n > o), ("max", lambda o, n: n < o)):
        o, n = getattr(old, bound), getattr(new, bound)
        if o == n:
            continue
        if o is None:
            add(True, f"{bound} set to {_v(n)}")
        elif n is None:
            add(False, f"{bound} {_v(o)} removed")
        else:
            add(bool(tighter(o, n)), f"{bound} {_v(o)} -> {_v(n)}")
    ov, nv = old.allowed_values, new.allowed_values
    if ov != nv:
        if ov is None:
            add(True, f"allowed_values set to {_v(nv)}")
        elif nv is None:
            add(False, "allowed_values removed")
        else:
            so, sn = set(map(_v, ov)), set(map(_v, nv))
            if so - sn:
                add(True, f"allowed values dropped: {', '.join(sorted(so - sn))}")
            if sn - so:
                add(False, f"allowed values added: {', '.join(sorted(sn - so))}")
    if old.regex != new.regex:
        if new.regex is None:
            add(False, "regex removed")
        else:
            # a different pattern may reject values that passed before
            add(True, f"regex {_v(old.regex)} -> {_v(new.regex)}")
    if old.nullable != new.nullable:
        add(old.nullable, "nullable -> required" if old.nullable else "required -> nullable")
    if old.allow_nan != new.allow_nan:
        # NaN (and ±inf) allowed is a wider set of values; refusing them again may make
        # data written before invalid
        add(old.allow_nan, "allow_nan True -> False (NaN and ±inf refused)" if old.allow_nan
            else "allow_nan False -> True (NaN and ±inf accepted)")
    return out


def classify_field_change(old: Field, new: Field) -> list[Change]:
    out: list[Change] = []
    name = new.name
    if old.dtype != new.dtype:
        if is_widening(old.dtype, new.dtype):
            out.append(Change("type_widened", name, f"{old.dtype} -> {new.dtype}"))
        elif is_widening(new.dtype, old.dtype):
            out.append(Change("type_narrowed", name, f"{old.dtype} -> {new.dtype}"))
        else:
            out.append(Change("type_changed", name, f"{old.dtype} -> {new.dtype}"))
    out.extend(_constraint_direction(old, new))
    if old.unit != new.unit:
        out.append(Change("unit_changed", name, f"{_v(old.unit)} -> {_v(new.unit)}"))
    if old.default != new.default:
        out.append(Change("default_changed", name,
                          f"{_v(old.default)} -> {_v(new.default)}"))
    return out


def classify_view_change(old: FeatureView, new: FeatureView) -> list[Change]:
    """Every classified difference between two versions of a feature view.

    An empty list means the definitions are identical.
    """
    out: list[Change] = []
    if old.join_keys != new.join_keys or sorted(old.entities) != sorted(new.entities):
        out.append(Change("keys_changed", None, f"{_keys(old)} -> {_keys(new)}"))
    if (old.timestamp_field, old.created_timestamp_field) != (
        new.timestamp_field,
        new.created_timestamp_field,
    ):
        out.append(Change("timestamp_changed", None,
                          f"{old.timestamp_field} -> {new.timestamp_field}"))
    old_fields = {f.name: f for f in old.fields}
    new_fields = {f.name: f for f in new.fields}
    for name, f in new_fields.items():
        if name not in old_fields:
            cls = "field_added_required" if f.required else "field_added_nullable"
            out.append(Change(cls, name, f"added {f.dtype}"))
        else:
            out.extend(classify_field_change(old_fields[name], f))
    for name, f in old_fields.items():
        if name not in new_fields:
            out.append(Change("field_removed", name, f"removed {f.dtype}"))
    if old.source.spec() != new.source.spec():
        out.append(Change("source_changed", None, f"{_src(old)} -> {_src(new)}"))
    if old.ttl != new.ttl:
        out.append(Change("ttl_changed", None, f"{_v(old.ttl)} -> {_v(new.ttl)}"))
    if [c.spec() for c in old.checks] != [c.spec() for c in new.checks]:
        out.append(Change("checks_changed", None, _checks_detail(old, new)))
    old_t = old.transformation.spec() if old.transformation else None
    new_t = new.transformation.spec() if new.transformation else None
    if old_t != new_t:
        out.append(Change("transformation_changed", None, "transformation code or parameters"))
    out.extend(_aggregation_changes(old, new))
    if old.compatibility != new.compatibility:
        out.append(Change("compatibility_changed", None,
                          f"{old.compatibility} -> {new.compatibility}"))
    if not out and old.docs() != new.docs():
        out.append(Change("description_only", None, _view_docs_detail(old, new)))
    return out


def _aggregation_changes(old: FeatureView, new: FeatureView) -> list[Change]:
    """One ``aggregations_changed`` per aggregation added, removed or redefined."""
    o = {a.output_name: a.spec() for a in old.aggregations}
    n = {a.output_name: a.spec() for a in new.aggregations}
    out = [Change("aggregations_changed", name, "added") for name in n if name not in o]
    out += [Change("aggregations_changed", name, "removed") for name in o if name not in n]
    out += [Change("aggregations_changed", name, "redefined (column, function, window or slide)")
            for name in n if name in o and o[name] != n[name]]
    return out


def classify_generic_change(old: Any, new: Any) -> list[Change]:
    """Entities and feature sets: a spec change is a new version, docs change in place."""
    if old.spec() != new.spec():
        if old.kind == "entity":
            return [Change("keys_changed", None, f"{old.join_keys} -> {new.join_keys}")]
        if old.kind == "request_view":
            return [Change("transformation_changed", None,
                           "inputs, request schema, fields or code")]
        o, n = set(old.features), set(new.features)
        parts = [f"+{r}" for r in sorted(n - o)] + [f"-{r}" for r in sorted(o - n)]
        return [Change("features_changed", None, " ".join(parts) or "order changed")]
    if old.docs() != new.docs():
        return [Change("description_only", None, _docs_detail(old.docs(), new.docs()))]
    return []


def _keys(v: FeatureView) -> str:
    return ",".join(f"{k}:{t}" for k, t in sorted(v.join_keys.items())) or ",".join(v.entities)


def _src(v: FeatureView) -> str:
    s = v.source
    return str(getattr(s, "path", None) or getattr(s, "name", "dataframe"))


def _checks_detail(old: FeatureView, new: FeatureView) -> str:
    o = {c.name: c.expr for c in old.checks}
    n = {c.name: c.expr for c in new.checks}
    parts = [f"+{k}" for k in n if k not in o] + [f"-{k}" for k in o if k not in n]
    parts += [f"~{k}" for k in n if k in o and o[k] != n[k]]
    return " ".join(parts)


def _view_docs_detail(old: FeatureView, new: FeatureView) -> str:
    """Which docs changed, naming fields by name: ``description, trips.description``."""
    top = {k: v for k, v in old.docs().items() if k != "fields"}
    parts = [_docs_detail(top, {k: v for k, v in new.docs().items() if k != "fields"})]
    old_fields = {f.name: f for f in old.fields}
    for f in new.fields:
        if f.name in old_fields and old_fields[f.name].docs() != f.docs():
            parts.append(_docs_detail(old_fields[f.name].docs(), f.docs(), f"{f.name}."))
    return ", ".join(p for p in parts if p)


def _docs_detail(old: dict, new: dict, prefix: str = "") -> str:
    diffs = []
    for k in sorted(set(old) | set(new)):
        o, n = old.get(k), new.get(k)
        if o == n:
            continue
        if isinstance(o, dict) and isinstance(n, dict):
            diffs.append(_docs_detail(o, n, f"{prefix}{k}."))
        else:
            diffs.append(f"{prefix}{k}")
    return ", ".join(d for d in diffs if d)
