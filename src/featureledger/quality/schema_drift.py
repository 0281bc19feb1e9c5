"""Schema drift: how a source's columns differ from a view's definition, before anything
is written.

Findings, each with what to do:

* ``missing``: a field the source lacks (an error when the field is required and has no
  default: ingestion would reject every row; otherwise its values become the default or
  null);
* ``added``: a source column the definition does not know (ingestion refuses it);
* ``renamed``: a missing field and an added column that look like one another: the same
  kind of type and a similar name (``difflib`` ratio at least :data:`NAME_SIMILARITY`),
  or the same kind of type and values like the field's last stored values;
* ``retyped``: a column whose type is of another kind than the field's (text for a
  number, a number for a timestamp ...), which no exact cast turns into the field's type.

>>> import pyarrow as pa
>>> from featureledger.model.definitions import Entity, FeatureView, Field
>>> ride = Entity(name="ride", join_keys={"ride_id": "int64"})
>>> fv = FeatureView(name="v", entities=[ride],
...                  fields=[Field(name="fare_amount", dtype="float64")])
>>> src = pa.schema([("ride_id", pa.int64()), ("event_timestamp", pa.timestamp("us")),
...                  ("fare_amt", pa.float64())])
>>> [(f.kind, f.column, f.field) for f in schema_drift(fv, src).findings]
[('renamed', 'fare_amt', 'fare_amount')]
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

NAME_SIMILARITY = 0.6


@dataclass(frozen=True)
class SchemaFinding:
    kind: str  # missing | added | renamed | retyped
    column: str  # the source column (or the field, for missing)
    field: str | None
    severity: str  # error | warning | info
    detail: str
    action: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SchemaDriftReport:
    view: str
    findings: list[SchemaFinding] = field(default_factory=list)

    @property
    def errors(self) -> list[SchemaFinding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def drifted(self) -> bool:
        return bool(self.findings)

    def summary(self) -> str:
        return "\n".join(f"  {f.kind} {f.column}: {f.detail}; {f.action}"
                         for f in self.findings)

    def to_dict(self) -> dict[str, Any]:
        return {"view": self.view, "drifted": self.drifted,
                "findings": [f.to_dict() for f in self.findings]}


def type_kind(t: str) -> str:
    """The kind of an Arrow type name or a featureledger dtype."""
    t = t.lower()
    if t.startswith(("list", "large_list")):
        return "list"
    if t.startswith(("int", "uint")):
        return "integer"
    if t.startswith(("float", "double", "halffloat", "decimal")):
        return "float"
    if t in ("string", "large_string", "utf8", "large_utf8"):
        return "text"
    if t.startswith(("timestamp", "date")):
        return "time"
    if t in ("bool", "boolean"):
        return "bool"
    if "binary" in t or t == "bytes":
        return "bytes"
    return t


def _compatible(src: str, dst: str) -> bool:
    a, b = type_kind(src), type_kind(dst)
    if a == b or a == "null":
        return True
    if a == "integer" and b == "float":
        return True  # exact where the value fits; checked row by row by the cast
    # text can hold a number or a time (CSV); the cast checks each value
    return a == "text" and b in ("integer", "float", "time", "bool")


def _values_look_alike(col: Mapping[str, Any] | None, last: Mapping[str, Any] | None) -> bool:
    """Whether two profile columns look like the same data: overlapping ranges of
    numbers, or mostly the same frequent values."""
    if not col or not last:
        return False
    if "mean" in col and "mean" in last:
        lo, hi = last.get("min"), last.get("max")
        m = col.get("mean")
        if isinstance(m, (int, float)) and isinstance(lo, (int, float)) \
                and isinstance(hi, (int, float)):
            return bool(lo <= m <= hi)
        return False
    a = set((col.get("freq") or {}).keys())
    b = set((last.get("freq") or {}).keys())
    return bool(a and b) and len(a & b) / len(a | b) >= 0.5


def schema_drift(view: Any, source: pa.Schema, *, column_map: Mapping[str, str | None]
                 | None = None, profile: Mapping[str, Any] | None = None,
                 last_profile: Mapping[str, Any] | None = None) -> SchemaDriftReport:
    """Compare ``source`` (the input's Arrow schema, before the column map) with ``view``
    (a FeatureView). ``profile`` (of the input) and ``last_profile`` (of the view's last
    commit), when given, let values tell a renamed column."""
    cmap = dict(column_map or {})
    src: dict[str, str] = {}  # field-side name -> arrow type
    origin: dict[str, str] = {}
    for f in source:
        name = cmap.get(f.name, f.name)
        if name:
            src[name] = str(f.type)
            origin[name] = f.name
    fields = {f.name: f for f in view.fields}
    structural = {*view.join_keys, view.timestamp_field}
    if view.created_timestamp_field:
        structural.add(view.created_timestamp_field)
    findings: list[SchemaFinding] = []
    added = [n for n in src if n not in fields and n not in structural]
    missing = [n for n in [*structural, *fields] if n not in src]
    renamed: set[str] = set()
    cols = (profile or {}).get("columns") or {}
    last_cols = (last_profile or {}).get("columns") or {}
    for m in missing:
        dtype = fields[m].dtype if m in fields else None
        best = None
        for a in added:
            if a in renamed or (dtype is not None and not _compatible(src[a], dtype)):
                continue
            score = difflib.SequenceMatcher(None, m.lower(), a.lower()).ratio()
            alike = _values_look_alike(cols.get(origin[a]), last_cols.get(m))
            if score >= NAME_SIMILARITY or alike:
                rank = score + (1.0 if alike else 0.0)
                if best is None or rank > best[0]:
                    best = (rank, a, score, alike)
        if best is not None:
            _, a, score, alike = best
            renamed.add(a)
            why = [f"name similarity {score:.2f}"] + (["values like the field's"] if alike
                                                      else [])
            findings.append(SchemaFinding(
                "renamed", origin[a], m, "error",
                f"looks like field {m!r} renamed ({', '.join(why)})",
                f"map it: column_map={{{origin[a]!r}: {m!r}}} (CLI --map {origin[a]}={m}), "
                f"or apply a new version of the view that renames the field"))
    for m in missing:
        if any(f.field == m for f in findings):
            continue
        f = fields.get(m)
        required = f is None or (not f.nullable and f.default is None)
        findings.append(SchemaFinding(
            "missing", m, m, "error" if required else "info",
            "required and absent from the source" if required else
            ("absent: filled with its default" if f is not None and f.default is not None
             else "absent: ingested as null"),
            "add the column to the source or map another column to it" if required else
            "nothing, unless the column was renamed (map it)"))
    for a in added:
        if a in renamed:
            continue
        findings.append(SchemaFinding(
            "added", origin[a], None, "error",
            f"not in the definition ({src[a]}): ingestion refuses an unknown column",
            "apply a new version of the view with this field to keep it, or drop it: "
            f"column_map={{{origin[a]!r}: None}}"))
    for name, t in src.items():
        f = fields.get(name)
        if f is not None and not _compatible(t, f.dtype):
            findings.append(SchemaFinding(
                "retyped", origin[name], name, "error",
                f"source type {t} where the field is {f.dtype}",
                "cast the column in the source, or apply a new version of the view with "
                "the new type (a type change is classified by 'featureledger plan')"))
    return SchemaDriftReport(view.name, findings)
