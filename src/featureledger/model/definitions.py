"""Definitions: Entity, Field, FeatureView, FeatureSet and their sources.

Definitions are immutable pydantic models. Each has a *spec* (everything that affects
stored data or its meaning: schema, keys, source, TTL, checks, transformation) and *docs*
(descriptions, owner, tags). ``definition_hash`` is the sha256 of the canonical spec, so a
documentation-only edit keeps the data version.

>>> driver = Entity(name="driver", join_keys={"driver_id": "int64"})
>>> view = FeatureView(
...     name="driver_stats",
...     entities=[driver],
...     fields=[Field(name="trips", dtype="int64", min=0)],
...     ttl="7d",
... )
>>> view.ttl
datetime.timedelta(days=7)
>>> len(view.definition_hash)
64
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import (
    Field as PydField,
)
from pydantic import (
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

from featureledger.errors import DefinitionError
from featureledger.model.aggregations import (
    Aggregation,
    AggregationFunction,
    check_aggregations,
    window_label,
)
from featureledger.model.base import (
    _NAME_RE,
    MAX_NAME_LENGTH,
    RESERVED_COLUMNS,
    Compatibility,
    Field,
    _Definition,
    _join_keys,
    check_name,
    parse_ttl,
)
from featureledger.model.request_views import RequestFeatureView

__all__ = [
    "DEFINITION_KINDS",
    "MAX_NAME_LENGTH",
    "RESERVED_COLUMNS",
    "Aggregation",
    "AggregationFunction",
    "Compatibility",
    "DataFrameSource",
    "Definition",
    "Entity",
    "FeatureSet",
    "FeatureView",
    "Field",
    "FileSource",
    "RequestFeatureView",
    "RowCheck",
    "Source",
    "Transformation",
    "check_aggregations",
    "check_name",
    "check_python_source",
    "definition_from_dict",
    "parse_ttl",
    "window_label",
]


class Entity(_Definition):
    """A thing features describe, identified by one or more typed join keys."""

    kind: ClassVar[str] = "entity"
    noun: ClassVar[str | None] = "entity"

    name: str
    join_keys: dict[str, str]
    description: str = ""
    owner: str = ""
    tags: dict[str, str] = PydField(default_factory=dict)

    @field_validator("join_keys", mode="before")
    @classmethod
    def _keys(cls, v: Any) -> dict[str, str]:
        if isinstance(v, str):
            v = {v: "int64"}
        if isinstance(v, (list, tuple)):
            v = {k: "int64" for k in v} if all(isinstance(k, str) for k in v) else dict(v)
        if not isinstance(v, dict) or not v:
            raise ValueError("join_keys must name at least one key, e.g. {'driver_id': 'int64'}")
        return _join_keys(v)



class FileSource(_Definition):
    """Parquet or CSV files: a path or glob."""

    kind: ClassVar[str] = "file_source"

    type: Literal["file"] = "file"
    path: str
    format: Literal["parquet", "csv"] | None = None
    options: dict[str, Any] = PydField(default_factory=dict)
    description: str = ""

    @model_validator(mode="after")
    def _format(self) -> FileSource:
        if self.format is None:
            fmt = "csv" if self.path.lower().rstrip("*").endswith((".csv", ".csv.gz")) else "parquet"
            object.__setattr__(self, "format", fmt)
        return self


class DataFrameSource(_Definition):
    """Data handed in by the caller (pandas, Arrow, Polars) at ingestion time."""

    kind: ClassVar[str] = "dataframe_source"

    type: Literal["dataframe"] = "dataframe"
    name: str = "dataframe"
    description: str = ""


Source = Annotated[Union[FileSource, DataFrameSource], PydField(discriminator="type")]


class RowCheck(_Definition):
    """A row-level check: a SQL boolean expression over the view's fields (DuckDB dialect)."""

    kind: ClassVar[str] = "row_check"
    noun: ClassVar[str | None] = "row check"

    name: str
    expr: str
    description: str = ""


class Transformation(_Definition):
    """How a derived view is computed from its parents, stored verbatim (and hashed).

    ``parents`` name feature views, pinned (``"trips@2"``) or following the parent's
    newest version (``"trips"``); the first parent *drives* the derivation (its commits
    are derived incrementally, in event-time chunks for a backfill), the others are read
    whole as lookups. ``language="sql"``: ``code`` is one SELECT in DuckDB's dialect over
    relations named after the parents (run on the SQL sandbox; non-empty ``params`` are a
    one-row relation ``params`` with a column per parameter). ``language="python"``:
    ``code`` is the source text of a function (``function``, default ``transform``) that
    takes one frame per parent (``frame``: ``arrow``, ``pandas`` or ``polars``), in the
    order of ``parents``, and ``params=`` as a keyword when it declares it, and returns
    one frame; it may import only the modules listed in ``imports``.

    >>> t = Transformation(language="sql", parents=["trips", "profile@2"],
    ...                    code="SELECT * FROM trips JOIN profile USING (driver_id)")
    >>> t.parent_refs()
    [('trips', None), ('profile', 2)]
    """

    kind: ClassVar[str] = "transformation"

    language: Literal["sql", "python"]
    code: str
    parents: list[str]
    params: dict[str, Any] = PydField(default_factory=dict)
    window: str | None = None
    imports: list[str] = PydField(default_factory=list)
    """Top-level modules a Python transformation may import (recorded with versions)."""
    function: str = "transform"
    """The Python function to call."""
    frame: Literal["arrow", "pandas", "polars"] = "arrow"
    """What a Python transformation is given and returns."""
    columns: dict[str, list[str]] = PydField(default_factory=dict)
    """A Python transformation's column lineage, declared (its code is opaque): output
    column -> the ``parent.column`` names it is computed from. SQL's is read from the SQL."""
    description: str = ""

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        # keys added later are in the spec only when set: a transformation applied before
        # they existed keeps its definition hash
        for key, default in (("imports", []), ("function", "transform"), ("frame", "arrow"),
                             ("columns", {})):
            if data.get(key) == default:
                data.pop(key, None)
        return data  # type: ignore[no-any-return]

    @field_validator("parents")
    @classmethod
    def _parents(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("a transformation needs at least one parent view, e.g. "
                             "parents=['trips'] or ['trips@2']")
        names = []
        for p in v:
            name, sep, version = p.partition("@")
            check_name("parent view", name)
            if sep and not (version.isdigit() and int(version) > 0):
                raise ValueError(f"parent {p!r} is not understood; write NAME or NAME@VERSION "
                                 "(a version number from 1)")
            names.append(name)
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"parent view(s) {', '.join(dupes)} named twice; name each once")
        return v

    @field_validator("imports")
    @classmethod
    def _imports(cls, v: list[str]) -> list[str]:
        for m in v:
            if not all(_NAME_RE.match(part) for part in m.split(".")):
                raise ValueError(f"import {m!r} is not a module name")
        return sorted(set(v))

    @model_validator(mode="after")
    def _code(self) -> Transformation:
        if not self.code.strip():
            raise ValueError("the transformation's code is empty")
        if self.language == "python":
            check_python_source(self.code, self.function, self.imports)
        elif self.imports or self.function != "transform" or self.frame != "arrow":
            raise ValueError("imports, function and frame apply only to a Python transformation")
        if self.columns and self.language != "python":
            raise ValueError("columns= declares a Python transformation's column lineage; a "
                             "SQL transformation's is read from its SQL, leave it out")
        parents = {name for name, _ in self.parent_refs()}
        for out, refs in self.columns.items():
            check_name("output column", out)
            for ref in refs:
                view, dot, column = ref.partition(".")
                if not dot or view not in parents:
                    raise ValueError(f"columns[{out!r}] names {ref!r}; write PARENT.COLUMN "
                                     f"with a parent among {', '.join(sorted(parents))}")
                check_name("parent column", column)
        return self

    def parent_refs(self) -> list[tuple[str, int | None]]:
        """``(view, version or None)`` per parent, in order (None follows the newest)."""
        out: list[tuple[str, int | None]] = []
        for p in self.parents:
            name, _, version = p.partition("@")
            out.append((name, int(version) if version else None))
        return out


def check_python_source(code: str, function: str, imports: list[str]) -> None:
    """Refuse (ValueError) Python source that does not parse, does not define
    ``function`` at top level, or imports a module not in ``imports``."""
    import ast

    try:
        tree = ast.parse(code)
    except SyntaxError as exc:
        raise ValueError(f"the Python code does not parse: line {exc.lineno}: {exc.msg}") from None
    allowed = {m.split(".")[0] for m in imports}
    for node in ast.walk(tree):
        mods: list[str] = []
        if isinstance(node, ast.Import):
            mods = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                raise ValueError(f"line {node.lineno}: a relative import is not allowed; "
                                 "import declared modules by name")
            mods = [node.module or ""]
        for m in mods:
            if m.split(".")[0] not in allowed:
                raise ValueError(f"line {getattr(node, 'lineno', '?')}: imports {m!r}, which "
                                 "is not declared; "
                                 f"add {m.split('.')[0]!r} to the transformation's imports")
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id in ("__import__", "exec", "eval", "compile")):
            raise ValueError(f"line {node.lineno}: {node.func.id}() is not allowed in a "
                             "transformation; import declared modules with 'import'")
    if not any(isinstance(n, (ast.FunctionDef,)) and n.name == function for n in tree.body):
        raise ValueError(f"the Python code defines no top-level function {function!r}; "
                         f"write 'def {function}(<one argument per parent>, params): ...'")



class FeatureView(_Definition):
    """A named group of fields over entities, read from a source."""

    kind: ClassVar[str] = "feature_view"
    noun: ClassVar[str | None] = "feature view"

    name: str
    entities: list[str]
    fields: list[Field]
    source: Source = PydField(default_factory=DataFrameSource)
    timestamp_field: str = "event_timestamp"
    created_timestamp_field: str | None = None
    ttl: dt.timedelta | None = None
    owner: str = ""
    description: str = ""
    tags: dict[str, str] = PydField(default_factory=dict)
    checks: list[RowCheck] = PydField(default_factory=list)
    compatibility: Compatibility = "backward"
    transformation: Transformation | None = None
    aggregations: list[Aggregation] = PydField(default_factory=list)
    # join keys copied from the entities at definition time (filled by the model validator)
    join_keys: dict[str, str] = PydField(default_factory=dict)

    @field_validator("entities", mode="before")
    @classmethod
    def _entities(cls, v: Any) -> list[Any]:
        if isinstance(v, (str, Entity)):
            v = [v]
        return list(v)

    @field_validator("entities")
    @classmethod
    def _entity_names(cls, v: list[str]) -> list[str]:
        return [check_name("entity", e) for e in v]

    # the timestamp columns reach SQL (validation, profiles, retrieval, pushes) like any
    # other column, so they follow the same name rule
    @field_validator("timestamp_field")
    @classmethod
    def _timestamp_field(cls, v: str) -> str:
        return check_name("timestamp field", v)

    @field_validator("created_timestamp_field")
    @classmethod
    def _created_field(cls, v: str | None) -> str | None:
        return None if v is None else check_name("created timestamp field", v)

    @field_validator("join_keys")
    @classmethod
    def _view_keys(cls, v: dict[str, str]) -> dict[str, str]:
        return _join_keys(v)

    @field_validator("ttl", mode="before")
    @classmethod
    def _ttl(cls, v: Any) -> dt.timedelta | None:
        ttl = parse_ttl(v)
        if ttl is not None and ttl <= dt.timedelta(0):
            raise ValueError("ttl must be positive; leave it out for no expiry")
        return ttl

    @field_validator("checks", mode="before")
    @classmethod
    def _checks(cls, v: Any) -> list[Any]:
        if isinstance(v, dict):
            return [{"name": k, "expr": e} for k, e in v.items()]
        return v

    @field_validator("source", mode="before")
    @classmethod
    def _source(cls, v: Any) -> Any:
        if isinstance(v, str):
            return {"type": "file", "path": v}
        return v

    @model_validator(mode="before")
    @classmethod
    def _entity_objects(cls, data: Any) -> Any:
        # Entity objects given inline contribute their join keys; names are kept.
        if isinstance(data, dict):
            ents = data.get("entities")
            if isinstance(ents, Entity):
                ents = [ents]
            if isinstance(ents, (list, tuple)):
                keys = dict(data.get("join_keys") or {})
                names = []
                for e in ents:
                    if isinstance(e, Entity):
                        keys.update(e.join_keys)
                        names.append(e.name)
                    else:
                        names.append(e)
                data = {**data, "entities": names, "join_keys": keys}
        return data

    @model_validator(mode="after")
    def _consistency(self) -> FeatureView:
        if not self.entities:
            raise ValueError("a feature view needs at least one entity")
        if not self.fields:
            raise ValueError("a feature view needs at least one field")
        names = [f.name for f in self.fields]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate field names: {', '.join(dupes)}")
        clash = set(names) & (set(self.join_keys) | {self.timestamp_field})
        if clash:
            raise ValueError(
                f"field(s) {', '.join(sorted(clash))} clash with a join key or the timestamp field"
            )
        created = self.created_timestamp_field
        if created is not None and created in {*names, *self.join_keys, self.timestamp_field}:
            raise ValueError(
                f"created_timestamp_field {created!r} is already a field, a join key or the "
                "timestamp field; give it a column of its own"
            )
        checks = [c.name for c in self.checks]
        if len(set(checks)) != len(checks):
            raise ValueError("row check names must be unique")
        check_aggregations(self)
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        # aggregations are in the spec (so in the hash) only when there are some: views
        # defined before they existed keep their definition hash
        if not self.aggregations:
            data.pop("aggregations", None)
        return data  # type: ignore[no-any-return]

    def require_feature(self, name: str) -> None:
        """Return if ``name`` is a field or an aggregation of the view; otherwise an
        UnknownFeatureError names both."""
        if self.aggregation(name) is None:
            self.field(name)

    def aggregation(self, name: str) -> Aggregation | None:
        """The aggregation whose output is named ``name``, or None."""
        return next((a for a in self.aggregations if a.output_name == name), None)

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        from featureledger.errors import UnknownFeatureError

        aggs = (f"; its aggregations: {', '.join(a.output_name for a in self.aggregations)}"
                if self.aggregations else "")
        raise UnknownFeatureError(
            f"feature view {self.name!r} has no field {name!r}; "
            f"its fields are: {', '.join(f.name for f in self.fields)}{aggs}"
        )

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.fields]

    def with_join_keys(self, entities: dict[str, Entity]) -> FeatureView:
        """Fill ``join_keys`` from registered entities (names given as strings)."""
        keys: dict[str, str] = {}
        for name in self.entities:
            if name in entities:
                keys.update(entities[name].join_keys)
        keys.update(self.join_keys)
        if keys == self.join_keys:
            return self
        return self.model_copy(update={"join_keys": keys})


class FeatureSet(_Definition):
    """A named list of feature references that a model consumes.

    References are pinned to view versions when the set is applied.
    """

    kind: ClassVar[str] = "feature_set"
    noun: ClassVar[str | None] = "feature set"

    name: str
    features: list[str]
    description: str = ""
    owner: str = ""
    tags: dict[str, str] = PydField(default_factory=dict)

    @field_validator("features")
    @classmethod
    def _features(cls, v: list[str]) -> list[str]:
        from featureledger.model.references import parse_reference

        if not v:
            raise ValueError("a feature set needs at least one feature reference")
        refs = [parse_reference(r) for r in v]
        seen: set[str] = set()
        for r in refs:
            if r.output_name in seen:
                raise ValueError(f"feature {r.output_name!r} appears twice")
            seen.add(r.output_name)
        return [str(r) for r in refs]


Definition = Union[Entity, FeatureView, FeatureSet, RequestFeatureView]
DEFINITION_KINDS: dict[str, type[_Definition]] = {
    "entity": Entity,
    "feature_view": FeatureView,
    "feature_set": FeatureSet,
    "request_view": RequestFeatureView,
}


def definition_from_dict(data: dict[str, Any]) -> Definition:
    """Rebuild a definition from ``to_dict()`` output (or a YAML document)."""
    data = dict(data)
    kind = data.pop("kind", None)
    cls = DEFINITION_KINDS.get(kind or "")
    if cls is None:
        raise DefinitionError(
            f"unknown definition kind {kind!r}; use one of {', '.join(DEFINITION_KINDS)}"
        )
    return cls(**data)  # type: ignore[return-value]
