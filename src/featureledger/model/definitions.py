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
import re
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic import (
    Field as PydField,
)

from featureledger.errors import DefinitionError
from featureledger.model.bounds import shorten
from featureledger.model.hashing import content_hash
from featureledger.model.types import (
    FLOAT_DTYPES,
    NUMERIC_DTYPES,
    ORDERED_DTYPES,
    parse_dtype,
)

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_NAME_LENGTH = 128
"""Longest name of a definition, field, key or timestamp column: names become folder
names, SQLite table names and Redis key parts, each with limits of its own."""
_TTL_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(us|ms|s|m|h|d|w)\s*$")
_TTL_UNITS = {
    "us": dt.timedelta(microseconds=1),
    "ms": dt.timedelta(milliseconds=1),
    "s": dt.timedelta(seconds=1),
    "m": dt.timedelta(minutes=1),
    "h": dt.timedelta(hours=1),
    "d": dt.timedelta(days=1),
    "w": dt.timedelta(weeks=1),
}
# Names that featureledger adds to every stored row.
RESERVED_COLUMNS = frozenset({"_commit_id", "_commit_time", "_event_ts", "_row"})

Compatibility = Literal["backward", "forward", "full", "none"]


def check_name(kind: str, name: str) -> str:
    """``name`` if it is a valid name: the one rule for every identifier that reaches SQL,
    a file path or a key (definition names, fields, join keys, timestamp columns, check
    names, column-map targets). A ValueError says what is wrong (pydantic turns it into a
    DefinitionError).

    >>> check_name("field", "trips_7d")
    'trips_7d'
    """
    if isinstance(name, str) and len(name) > MAX_NAME_LENGTH:
        raise ValueError(
            f"{kind} name {shorten(name, 40)} is too long: at most {MAX_NAME_LENGTH} "
            "characters; pick a shorter name"
        )
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(
            f"{kind} name {shorten(name, 60)} is not valid: use letters, digits and "
            "underscores, not starting with a digit"
        )
    if name in RESERVED_COLUMNS:
        raise ValueError(f"{kind} name {name!r} is reserved by featureledger; rename it")
    return name


def parse_ttl(value: Any) -> dt.timedelta | None:
    """Accept a timedelta, seconds, or text such as '7d', '12h', '90m'."""
    if value is None or isinstance(value, dt.timedelta):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return dt.timedelta(seconds=value)
    if isinstance(value, str):
        m = _TTL_RE.match(value)
        if m:
            return float(m.group(1)) * _TTL_UNITS[m.group(2)]
        if value.strip().upper().startswith("P"):  # ISO 8601 duration, as JSON dumps write it
            from pydantic import TypeAdapter

            return TypeAdapter(dt.timedelta).validate_python(value.strip())
    raise ValueError(f"TTL {value!r} is not understood; write e.g. '7d', '12h', '30m' or seconds")


class _Definition(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=False)

    kind: ClassVar[str] = "definition"
    # Keys of model_dump() that are documentation, not data.
    doc_keys: ClassVar[frozenset[str]] = frozenset({"description", "owner", "tags"})

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '(definition)'}: "
                f"{e['msg'].removeprefix('Value error, ')}"
                for e in exc.errors()
            )
            raise DefinitionError(
                f"invalid {type(self).kind} {shorten(data.get('name', ''), 60)}: {problems}"
            ) from None

    def spec(self) -> dict[str, Any]:
        """The data-affecting part of the definition, as JSON-ready values."""
        return _strip_docs(self.model_dump(mode="python"), self.doc_keys)

    def docs(self) -> dict[str, Any]:
        """Descriptions, owner and tags, nested like the definition."""
        return _only_docs(self.model_dump(mode="python"), self.doc_keys)

    @property
    def definition_hash(self) -> str:
        return content_hash({"kind": self.kind, "spec": self.spec()})

    @property
    def docs_hash(self) -> str:
        return content_hash(self.docs())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict from which ``from_dict`` rebuilds the definition."""
        return {"kind": self.kind, **self.model_dump(mode="json", exclude_defaults=False)}


def _strip_docs(value: Any, doc_keys: frozenset[str]) -> Any:
    if isinstance(value, dict):
        return {k: _strip_docs(v, doc_keys) for k, v in value.items() if k not in doc_keys}
    if isinstance(value, list):
        return [_strip_docs(v, doc_keys) for v in value]
    return value


def _only_docs(value: Any, doc_keys: frozenset[str]) -> Any:
    if isinstance(value, dict):
        out: dict[str, Any] = {k: value[k] for k in doc_keys if k in value}
        for k, v in value.items():
            if k in doc_keys:
                continue
            nested = _only_docs(v, doc_keys)
            if nested:
                out[k] = nested
        return out
    if isinstance(value, list):
        items = [_only_docs(v, doc_keys) for v in value]
        return items if any(items) else []
    return None


class Entity(_Definition):
    """A thing features describe, identified by one or more typed join keys."""

    kind: ClassVar[str] = "entity"

    name: str
    join_keys: dict[str, str]
    description: str = ""
    owner: str = ""
    tags: dict[str, str] = PydField(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name("entity", v)

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


def _join_keys(v: dict[Any, Any]) -> dict[str, str]:
    out = {}
    for k, t in v.items():
        check_name("join key", k)
        dtype = parse_dtype(t)
        if dtype.startswith("list<") or dtype in ("float32", "float64"):
            raise ValueError(f"join key {k!r} cannot have dtype {dtype}; use an int or string")
        out[k] = dtype
    return out


class Field(_Definition):
    """One feature's schema and constraints."""

    kind: ClassVar[str] = "field"

    name: str
    dtype: str
    unit: str | None = None
    description: str = ""
    nullable: bool = True
    default: Any = None
    min: float | int | str | None = None
    max: float | int | str | None = None
    allowed_values: list[Any] | None = None
    regex: str | None = None
    allow_nan: bool = False
    """Whether NaN (and ±inf) are values of this float field. When False, ingesting or
    pushing one is a validation failure; when True it is stored, read and served as is."""
    tags: dict[str, str] = PydField(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name("field", v)

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        # allow_nan is in the spec (so in the hash) only when set: definitions written
        # before it existed keep their definition hash, and are not a new version
        if not self.allow_nan:
            data.pop("allow_nan", None)
        return data  # type: ignore[no-any-return]

    @field_validator("dtype", mode="before")
    @classmethod
    def _dtype(cls, v: Any) -> str:
        return parse_dtype(v)

    @field_validator("tags", mode="before")
    @classmethod
    def _tags(cls, v: Any) -> dict[str, str]:
        # tags=["pii"] is shorthand for {"pii": "true"}
        if isinstance(v, (list, tuple, set)):
            return {str(t): "true" for t in v}
        return v

    @model_validator(mode="after")
    def _constraints(self) -> Field:
        base = self.dtype
        if (self.min is not None or self.max is not None) and base not in ORDERED_DTYPES:
            raise ValueError(f"min/max need an ordered dtype, not {base}")
        if base in NUMERIC_DTYPES:
            for bound in ("min", "max"):
                b = getattr(self, bound)
                if b is not None and not isinstance(b, (int, float)):
                    raise ValueError(f"{bound}={b!r} must be a number for dtype {base}")
        if self.min is not None and self.max is not None and self.min > self.max:  # type: ignore[operator]
            raise ValueError(f"min {self.min!r} is greater than max {self.max!r}")
        if self.regex is not None:
            if base != "string":
                raise ValueError("regex applies only to string fields")
            try:
                re.compile(self.regex)
            except re.error as exc:
                raise ValueError(f"regex {self.regex!r} does not compile: {exc}") from None
        if self.allow_nan and base not in FLOAT_DTYPES:
            raise ValueError(f"allow_nan applies only to float fields ({', '.join(sorted(FLOAT_DTYPES))}), "
                             f"not {base}")
        if self.allowed_values is not None and len(self.allowed_values) == 0:
            raise ValueError("allowed_values is empty: no value could ever pass")
        if self.allowed_values is not None:
            # canonical order, so the same set always hashes the same
            object.__setattr__(self, "allowed_values", sorted(self.allowed_values, key=repr))
        if (self.default is not None and self.allowed_values is not None
                and self.default not in self.allowed_values):
            raise ValueError(f"default {self.default!r} is not among allowed_values")
        return self

    @property
    def required(self) -> bool:
        """True when old data without this field could not satisfy it."""
        return not self.nullable and self.default is None


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

    name: str
    expr: str
    description: str = ""

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name("row check", v)


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


# -- windowed aggregations (part of a view's definition) -----------------------------------
AggregationFunction = Literal["count", "sum", "mean", "min", "max", "stddev", "last",
                              "approx_count_distinct"]
_AGG_NUMERIC = frozenset({"sum", "mean", "stddev"})


def window_label(window: dt.timedelta) -> str:
    """The shortest text for a window in whole units: ``7d``, ``1h``, ``90s``.

    >>> window_label(dt.timedelta(days=7)), window_label(dt.timedelta(minutes=90))
    ('7d', '90m')
    """
    us = window // dt.timedelta(microseconds=1)
    for unit, size in (("d", 86_400_000_000), ("h", 3_600_000_000), ("m", 60_000_000),
                       ("s", 1_000_000), ("ms", 1000), ("us", 1)):
        if us % size == 0:
            return f"{us // size}{unit}"
    return f"{us}us"  # unreachable: every window is whole microseconds


class Aggregation(_Definition):
    """A windowed aggregation of one of a view's fields, requested like a feature.

    The value at time ``t`` for a key aggregates the view's effective rows of that key
    with ``t - window < event_ts <= t`` (the window's start is exclusive, its end
    inclusive, like the point-in-time join's ``event_ts <= t``). With ``slide``, ``t`` is
    first rounded down to a multiple of ``slide`` (since the epoch, UTC): the value then
    changes only every ``slide``. ``name`` defaults to ``<column>_<function>_<window>``.

    >>> Aggregation(column="trips", function="sum", window="7d").output_name
    'trips_sum_7d'
    >>> Aggregation(column="fare", function="mean", window="1h", name="fare_1h").output_name
    'fare_1h'
    """

    kind: ClassVar[str] = "aggregation"

    column: str
    function: AggregationFunction
    window: dt.timedelta
    slide: dt.timedelta | None = None
    name: str | None = None
    description: str = ""

    @field_validator("column")
    @classmethod
    def _column(cls, v: str) -> str:
        return check_name("aggregated column", v)

    @field_validator("name")
    @classmethod
    def _agg_name(cls, v: str | None) -> str | None:
        return None if v is None else check_name("aggregation", v)

    @field_validator("window", "slide", mode="before")
    @classmethod
    def _span(cls, v: Any) -> dt.timedelta | None:
        span = parse_ttl(v)
        if span is not None and (span <= dt.timedelta(0)
                                 or span % dt.timedelta(microseconds=1)):
            raise ValueError(f"window {v!r} must be a positive whole number of microseconds, "
                             "e.g. '1h', '7d'")
        return span

    @model_validator(mode="after")
    def _slide(self) -> Aggregation:
        if self.slide is not None and self.slide > self.window:
            raise ValueError(f"slide {window_label(self.slide)} is longer than the window "
                             f"{window_label(self.window)}; use a slide at most the window")
        return self

    @property
    def output_name(self) -> str:
        """The feature name the aggregation is requested and returned as."""
        return self.name or f"{self.column}_{self.function}_{window_label(self.window)}"

    @property
    def window_us(self) -> int:
        return self.window // dt.timedelta(microseconds=1)

    @property
    def slide_us(self) -> int | None:
        return None if self.slide is None else self.slide // dt.timedelta(microseconds=1)

    def output_dtype(self, column_dtype: str) -> str:
        """The dtype of the aggregated value, given the aggregated field's dtype."""
        if self.function in ("count", "approx_count_distinct"):
            return "int64"
        if self.function == "sum":
            return "int64" if column_dtype in ("int32", "int64") else "float64"
        if self.function in ("mean", "stddev"):
            return "float64"
        return column_dtype  # min, max, last


def check_aggregations(view: FeatureView) -> None:
    """A ValueError naming the first aggregation that does not fit ``view``."""
    fields = {f.name: f for f in view.fields}
    seen: set[str] = set()
    for a in view.aggregations:
        out = a.output_name
        if a.column not in fields:
            raise ValueError(f"aggregation {out!r} aggregates {a.column!r}, which is not a "
                             f"field of the view; use one of {', '.join(fields)}")
        dtype = fields[a.column].dtype
        if a.function in _AGG_NUMERIC and dtype not in NUMERIC_DTYPES:
            raise ValueError(f"aggregation {out!r}: {a.function} needs a numeric field, and "
                             f"{a.column!r} is {dtype}; use count, min, max or last")
        if a.function in ("min", "max") and dtype not in ORDERED_DTYPES:
            raise ValueError(f"aggregation {out!r}: {a.function} needs an ordered field, and "
                             f"{a.column!r} is {dtype}; use count or last")
        if a.function == "approx_count_distinct" and dtype.startswith("list<"):
            raise ValueError(f"aggregation {out!r}: approx_count_distinct cannot count list "
                             f"values ({a.column!r} is {dtype})")
        if out in fields or out in seen or out in view.join_keys:
            raise ValueError(f"aggregation name {out!r} is already a field, a join key or "
                             "another aggregation of the view; give it name='...'")
        seen.add(out)


class FeatureView(_Definition):
    """A named group of fields over entities, read from a source."""

    kind: ClassVar[str] = "feature_view"

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

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name("feature view", v)

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

    name: str
    features: list[str]
    description: str = ""
    owner: str = ""
    tags: dict[str, str] = PydField(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name("feature set", v)

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


# -- request-time (on-demand) features ------------------------------------------------------
class RequestFeatureView(_Definition):
    """Features computed at request time from stored features and request values.

    ``inputs`` are feature references (``view:feature``) whose values, as of the entity
    row (historical retrieval) or as served (online), are handed to the transformation
    with the request values named in ``request_schema`` (online: ``request_data``;
    offline: columns of the entity frame). The transformation is text, never a pickled
    object: Python source defining ``transform(df)`` (a pandas DataFrame with a column
    per input feature and request value, returning a DataFrame with a column per output
    field), or ``sql``: one DuckDB expression per output field, run in the sandbox. The
    same code computes online and offline values, so they are identical.

    >>> rv = RequestFeatureView(name="quote", inputs=["trips:fare_sum_7d"],
    ...                         request_schema={"distance_km": "float64"},
    ...                         fields=[Field(name="fare_per_km", dtype="float64")],
    ...                         sql={"fare_per_km": "fare_sum_7d / nullif(distance_km, 0)"})
    >>> rv.input_names
    ['fare_sum_7d']
    """

    kind: ClassVar[str] = "request_view"

    name: str
    inputs: list[str] = PydField(default_factory=list)
    request_schema: dict[str, str] = PydField(default_factory=dict)
    fields: list[Field]
    python: str | None = None
    sql: dict[str, str] | None = None
    description: str = ""
    owner: str = ""
    tags: dict[str, str] = PydField(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name("request view", v)

    @field_validator("request_schema")
    @classmethod
    def _request(cls, v: dict[str, str]) -> dict[str, str]:
        return {check_name("request value", k): parse_dtype(t) for k, t in v.items()}

    @model_validator(mode="after")
    def _consistency(self) -> RequestFeatureView:
        from featureledger.model.references import parse_reference

        if (self.python is None) == (self.sql is None):
            raise ValueError("give the transformation as python='def transform(df): ...' "
                             "or as sql={'field': 'expression'}, exactly one of them")
        names = [parse_reference(r).feature for r in self.inputs]
        columns = [*names, *self.request_schema]
        dupes = sorted({n for n in columns if columns.count(n) > 1})
        if dupes:
            raise ValueError(f"input name(s) {', '.join(dupes)} appear twice among the "
                             "inputs and request values; each must be one column")
        if not columns:
            raise ValueError("a request view needs inputs or request values to compute from")
        outs = [f.name for f in self.fields]
        if not outs or len(set(outs)) != len(outs):
            raise ValueError("a request view needs fields with distinct names")
        if set(outs) & set(columns):
            raise ValueError(f"field(s) {', '.join(sorted(set(outs) & set(columns)))} are "
                             "also inputs or request values; rename them")
        if self.sql is not None and sorted(self.sql) != sorted(outs):
            raise ValueError(f"sql gives expressions for {sorted(self.sql)}, but the fields "
                             f"are {sorted(outs)}; give one expression per field")
        if self.python is not None:
            try:
                compile(self.python, f"<request view {self.name}>", "exec")
            except SyntaxError as exc:
                raise ValueError(f"the python transformation does not compile: {exc}") from None
        return self

    @property
    def input_names(self) -> list[str]:
        """The column each input feature is handed to the transformation as."""
        from featureledger.model.references import parse_reference

        return [parse_reference(r).feature for r in self.inputs]

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        from featureledger.errors import UnknownFeatureError

        raise UnknownFeatureError(
            f"request view {self.name!r} has no field {name!r}; its fields are: "
            f"{', '.join(f.name for f in self.fields)}")


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
