"""The building blocks of every definition: names, durations, the definition base class
(spec, docs and hashes) and Field.

Everything here is re-exported by :mod:`featureledger.model.definitions`.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from typing import Any, ClassVar, Literal

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


@functools.cache
def _duration_adapter() -> Any:
    """pydantic's ISO 8601 duration parser, built once (building one takes ~8 ms, paid
    by every registry read of a view with a TTL before it was cached)."""
    from pydantic import TypeAdapter

    return TypeAdapter(dt.timedelta)


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
            return _duration_adapter().validate_python(value.strip())
    raise ValueError(f"TTL {value!r} is not understood; write e.g. '7d', '12h', '30m' or seconds")


class _Definition(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=False)

    kind: ClassVar[str] = "definition"
    # what a ``name`` is called in the message when it is not a valid name (None: the
    # class checks its name itself, or has none)
    noun: ClassVar[str | None] = None
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

    @field_validator("name", check_fields=False)
    @classmethod
    def _name(cls, v: Any) -> Any:
        return v if cls.noun is None else check_name(cls.noun, v)

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
    noun: ClassVar[str | None] = "field"

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

