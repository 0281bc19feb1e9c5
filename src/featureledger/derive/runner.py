"""Running a transformation over its parents' rows: SQL on the sandbox, Python from source.

**SQL** is one SELECT in DuckDB's dialect over relations named after the parent views
(and ``params``, a one-row relation of the parameters, when there are any). It passes the
parser-based guard (:func:`featureledger.offline.duckdb.guard.check_query`: one SELECT
reading only those relations, no table function, no ``COPY``/``ATTACH``/``INSTALL``/...)
and runs on the sandboxed connection (external access off, extensions off, configuration
locked), which holds nothing but the rows it is given.

**Python** is the source text of a function, stored verbatim in the definition (never a
pickle): it is compiled from that text into a fresh module namespace and called with one
frame per parent (Arrow, pandas or Polars, as the transformation says) and ``params=``.
Its imports are checked against the declared ``imports`` before it runs, and the
installed version of each declared module is recorded with every commit it makes. The
function runs in the deriving process with that process's rights: it is code the
repository's owners wrote, like a definition module, not untrusted input.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import inspect
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from featureledger.errors import DerivationError
from featureledger.model.bounds import first_line, shorten
from featureledger.offline.duckdb.guard import check_query
from featureledger.offline.duckdb.sandbox import SandboxError, query, single_select

if TYPE_CHECKING:
    import pyarrow as pa

    from featureledger.model.definitions import Transformation

PARAMS_RELATION = "params"


def relation_names(t: Transformation) -> list[str]:
    """The relations a SQL transformation may read: its parents (and ``params``)."""
    names = [name for name, _ in t.parent_refs()]
    return [*names, PARAMS_RELATION] if t.params else names


def check_transformation(t: Transformation, view: str) -> None:
    """Refuse, before anything is read, a transformation the guard does not accept."""
    if t.language != "sql":
        return  # Python source was checked when the definition was built
    what = f"the transformation of derived view {view!r}"
    try:
        single_select(t.code, what)
    except Exception as exc:  # RetrievalError: say it as a derivation error
        raise DerivationError(f"{exc}; nothing was derived") from None
    check_query(t.code, what, relation_names(t), DerivationError)


def code_digest(t: Transformation) -> str:
    return hashlib.sha256(t.code.encode("utf-8")).hexdigest()


def module_versions(t: Transformation) -> dict[str, str]:
    """The installed version of each declared import (``builtin`` for the standard
    library and modules without distribution metadata)."""
    out = {}
    for m in t.imports:
        top = m.split(".")[0]
        try:
            out[m] = importlib.metadata.version(top)
        except importlib.metadata.PackageNotFoundError:
            out[m] = "builtin"
    return out


def run(t: Transformation, view: str, inputs: Mapping[str, pa.Table]) -> pa.Table:
    """The transformation's output over ``inputs`` (one table per parent, in order)."""
    if t.language == "sql":
        return _run_sql(t, view, inputs)
    return _run_python(t, view, inputs)


def _params_table(params: Mapping[str, Any]) -> pa.Table:
    import pyarrow as pa

    return pa.table({k: [v] for k, v in params.items()})


def _run_sql(t: Transformation, view: str, inputs: Mapping[str, pa.Table]) -> pa.Table:
    check_transformation(t, view)
    relations = dict(inputs)
    if t.params:
        relations[PARAMS_RELATION] = _params_table(t.params)
    try:
        return query(t.code, relations)
    except SandboxError as exc:
        raise DerivationError(
            f"the SQL of derived view {view!r} failed: {exc.first_line}. It reads the "
            f"relations {', '.join(relations)} (each parent's join keys, timestamp and "
            "fields) and must return the derived view's join keys, timestamp and fields; "
            "nothing was derived") from None


def _to_frame(table: pa.Table, frame: str, what: str) -> Any:
    if frame == "arrow":
        return table
    from featureledger.frames import to_pandas, to_polars

    if frame == "pandas":
        return to_pandas(table)
    return to_polars(table, what)


def _from_frame(value: Any, view: str) -> pa.Table:
    import pyarrow as pa

    if isinstance(value, pa.Table):
        return value
    if isinstance(value, pa.RecordBatch):
        return pa.Table.from_batches([value])
    module = type(value).__module__.split(".")[0]
    if module == "pandas":
        return pa.Table.from_pandas(value, preserve_index=False)
    if module == "polars":
        return value.to_arrow()  # type: ignore[no-any-return]
    raise DerivationError(
        f"the Python transformation of derived view {view!r} returned "
        f"{type(value).__name__}; return a pyarrow Table, a pandas DataFrame or a Polars "
        "DataFrame with the view's join keys, timestamp and fields; nothing was derived")


def _run_python(t: Transformation, view: str, inputs: Mapping[str, pa.Table]) -> pa.Table:
    from featureledger.model.definitions import check_python_source

    try:
        check_python_source(t.code, t.function, t.imports)
    except ValueError as exc:
        raise DerivationError(f"the Python transformation of derived view {view!r} is "
                              f"refused: {exc}; nothing was derived") from None
    namespace: dict[str, Any] = {"__name__": f"featureledger_derive_{view}"}
    label = f"<transformation of {view}>"
    try:
        exec(compile(t.code, label, "exec"), namespace)
        fn = namespace[t.function]
        frames = [_to_frame(tbl, t.frame, f"parent {name!r}") for name, tbl in inputs.items()]
        kwargs = {"params": dict(t.params)} if _takes_params(fn) else {}
        out = fn(*frames, **kwargs)
    except DerivationError:
        raise
    except Exception as exc:
        raise DerivationError(
            f"the Python transformation of derived view {view!r} raised "
            f"{type(exc).__name__}: {shorten(first_line(exc), 300)}. Fix the function "
            f"{t.function!r} (it gets one {t.frame} frame per parent, in the order "
            f"{', '.join(inputs)}, and params=); nothing was derived") from None
    return _from_frame(out, view)


def _takes_params(fn: Any) -> bool:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return False
    return "params" in sig.parameters or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())
