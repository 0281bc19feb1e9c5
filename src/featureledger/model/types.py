"""Feature value types.

A dtype is written as a short string: one of the scalars ``bool``, ``int32``, ``int64``,
``float32``, ``float64``, ``string``, ``bytes``, ``timestamp`` (UTC, microseconds), ``date``,
or ``list<scalar>``.

>>> parse_dtype("list<float32>")
'list<float32>'
>>> is_widening("int32", "int64"), is_widening("int64", "int32")
(True, False)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from featureledger.errors import DefinitionError

if TYPE_CHECKING:  # pyarrow is imported lazily: definitions load without it
    import pyarrow as pa

SCALAR_DTYPES: tuple[str, ...] = (
    "bool",
    "int32",
    "int64",
    "float32",
    "float64",
    "string",
    "bytes",
    "timestamp",
    "date",
)
NUMERIC_DTYPES = frozenset({"int32", "int64", "float32", "float64"})
INTEGER_DTYPES = frozenset({"int32", "int64"})
# dtypes whose values can be NaN or ±inf (a list of floats holds floats)
FLOAT_DTYPES = frozenset({"float32", "float64", "list<float32>", "list<float64>"})
ORDERED_DTYPES = NUMERIC_DTYPES | {"timestamp", "date", "string"}

_ALIASES = {
    "int": "int64",
    "integer": "int64",
    "float": "float64",
    "double": "float64",
    "str": "string",
    "boolean": "bool",
    "binary": "bytes",
    "datetime": "timestamp",
}

# Every value of the first type is exactly representable in the second.
_WIDENINGS = frozenset(
    {
        ("int32", "int64"),
        ("int32", "float64"),
        ("float32", "float64"),
    }
)


def parse_dtype(spec: str) -> str:
    """Normalise a dtype string; raise DefinitionError naming the accepted forms."""
    if not isinstance(spec, str):
        raise DefinitionError(f"dtype must be a string such as 'float64', got {spec!r}")
    s = spec.strip().lower().replace(" ", "")
    if s.startswith("list<") and s.endswith(">"):
        inner = _ALIASES.get(s[5:-1], s[5:-1])
        if inner not in SCALAR_DTYPES:
            raise DefinitionError(
                f"unknown list element dtype {s[5:-1]!r} in {spec!r}; "
                f"use one of {', '.join(SCALAR_DTYPES)}"
            )
        return f"list<{inner}>"
    s = _ALIASES.get(s, s)
    if s not in SCALAR_DTYPES:
        raise DefinitionError(
            f"unknown dtype {spec!r}; use one of {', '.join(SCALAR_DTYPES)} "
            "or list<scalar> such as list<float32>"
        )
    return s


def element_dtype(dtype: str) -> str | None:
    """The element type of a list dtype, None for a scalar."""
    return dtype[5:-1] if dtype.startswith("list<") else None


def is_widening(old: str, new: str) -> bool:
    """True when every value of ``old`` is exactly representable as ``new``."""
    eo, en = element_dtype(old), element_dtype(new)
    if eo is not None and en is not None:
        return is_widening(eo, en)
    return (old, new) in _WIDENINGS


def to_arrow(dtype: str) -> pa.DataType:
    """The Arrow type that stores values of ``dtype``."""
    import pyarrow as pa

    elem = element_dtype(dtype)
    if elem is not None:
        return pa.list_(to_arrow(elem))
    return {
        "bool": pa.bool_(),
        "int32": pa.int32(),
        "int64": pa.int64(),
        "float32": pa.float32(),
        "float64": pa.float64(),
        "string": pa.string(),
        "bytes": pa.binary(),
        "timestamp": pa.timestamp("us", tz="UTC"),
        "date": pa.date32(),
    }[dtype]


def to_duckdb(dtype: str) -> str:
    """The DuckDB SQL type name for ``dtype``."""
    elem = element_dtype(dtype)
    if elem is not None:
        return to_duckdb(elem) + "[]"
    return {
        "bool": "BOOLEAN",
        "int32": "INTEGER",
        "int64": "BIGINT",
        "float32": "FLOAT",
        "float64": "DOUBLE",
        "string": "VARCHAR",
        "bytes": "BLOB",
        "timestamp": "TIMESTAMPTZ",
        "date": "DATE",
    }[dtype]
