"""Request-time features: one function computes them, online and offline.

A :class:`~featureledger.model.definitions.RequestFeatureView` is computed over an Arrow
table holding one column per input feature (named by the feature) and per request value,
typed as declared (the inputs' dtypes, ``request_schema``). Historical retrieval builds
that table from the training set's columns and the entity frame; online serving from the
served values and ``request_data``. Both call :func:`compute_request_features`, so the
same inputs give the same outputs, typed as the view's fields.

* ``sql``: each field's expression passes the SQL guard (one expression over the input
  columns, see :mod:`featureledger.offline.duckdb.guard`) and runs on a sandboxed DuckDB
  connection that holds nothing but the input table.
* ``python``: the source text (never a pickled object) is executed in a fresh namespace
  and its ``transform(df)`` is called with a pandas DataFrame (Arrow-backed columns, so
  nulls and integers survive); it returns a DataFrame with a column per field. The code
  runs with the process's rights: apply only code you trust, as with any code in the
  repository's definitions.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from featureledger.errors import DefinitionError, RetrievalError

if TYPE_CHECKING:
    from collections.abc import Callable

    import pyarrow as pa

    from featureledger.model.definitions import RequestFeatureView


def input_table(view: RequestFeatureView, features: dict[str, Any], request: dict[str, Any],
                dtypes: dict[str, str], n: int) -> pa.Table:
    """The transformation's input: ``features`` (input name -> column, typed by
    ``dtypes``) and ``request`` (request value -> column or one value for every row,
    typed by the view's ``request_schema``)."""
    import pyarrow as pa

    from featureledger.model.types import to_arrow

    cols: dict[str, pa.Array] = {}
    for name in view.input_names:
        cols[name] = _typed(features[name], to_arrow(dtypes[name]), name, n)
    for name, dtype in view.request_schema.items():
        if name not in request:
            raise RetrievalError(
                f"request view {view.name!r} needs the request value {name!r} ({dtype}); "
                f"pass it in request_data (online) or as an entity column (offline)")
        cols[name] = _typed(request[name], to_arrow(dtype), name, n)
    return pa.table(cols) if cols else pa.table({"_n": pa.nulls(n)}).drop_columns(["_n"])


def _typed(values: Any, want: pa.DataType, name: str, n: int) -> pa.Array:
    import pyarrow as pa

    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if not isinstance(values, (pa.Array, list, tuple)):
        values = [values] * n  # one request value for every entity row
    try:
        arr = values if isinstance(values, pa.Array) else pa.array(list(values))
        arr = arr if arr.type == want else arr.cast(want)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        raise RetrievalError(f"request value {name!r} cannot be read as {want}: {exc}; "
                             "pass values of the declared type") from None
    if len(arr) != n:
        raise RetrievalError(f"request value {name!r} has {len(arr)} values for {n} entity "
                             "rows; give one value per row (or a single value for all)")
    return arr


def compute_request_features(view: RequestFeatureView, inputs: pa.Table) -> pa.Table:
    """The view's fields (one column each, typed as declared) for every row of ``inputs``."""
    import pyarrow as pa

    from featureledger.model.types import to_arrow

    n = inputs.num_rows
    out = _run_sql(view, inputs) if view.sql is not None else _run_python(view, inputs)
    cols = []
    for f in view.fields:
        if f.name not in out.column_names:
            raise RetrievalError(f"request view {view.name!r}: the transformation returned no "
                                 f"column {f.name!r} (it returned {out.column_names}); "
                                 "return one column per field")
        col = out.column(f.name)
        want = to_arrow(f.dtype)
        try:
            col = col if col.type == want else col.cast(want)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise RetrievalError(f"request view {view.name!r}: field {f.name!r} came back as "
                                 f"{col.type}, which does not convert to {f.dtype}: {exc}"
                                 ) from None
        cols.append(col)
    if out.num_rows != n:
        raise RetrievalError(f"request view {view.name!r}: the transformation returned "
                             f"{out.num_rows} rows for {n}; return one row per input row")
    return pa.Table.from_arrays(cols, names=[f.name for f in view.fields])


def _run_sql(view: RequestFeatureView, inputs: pa.Table) -> pa.Table:
    from featureledger.offline.duckdb.guard import check_expression
    from featureledger.offline.duckdb.sandbox import SandboxError, query
    from featureledger.offline.engine import quote_ident

    assert view.sql is not None
    select = []
    for f in view.fields:
        expr = check_expression(view.sql[f.name], f"request view {view.name!r} field "
                                f"{f.name!r}", DefinitionError, inputs.column_names)
        select.append(f"{expr.sql} AS {quote_ident(f.name)}")
    try:
        return query(f"SELECT {', '.join(select)} FROM _fl_inputs", {"_fl_inputs": inputs})
    except SandboxError as exc:
        raise RetrievalError(f"request view {view.name!r}: its SQL failed: {exc.first_line}; "
                             "fix the expressions") from None


@functools.lru_cache(maxsize=128)
def _transform(name: str, source: str) -> Callable[[Any], Any]:
    namespace: dict[str, Any] = {"__name__": f"featureledger_request_view_{name}"}
    exec(compile(source, f"<request view {name}>", "exec"), namespace)
    fn = namespace.get("transform")
    if not callable(fn):
        raise DefinitionError(f"request view {name!r}: the python code defines no function "
                              "'transform(df)'; define one that returns a DataFrame")
    return fn  # type: ignore[no-any-return]


def _run_python(view: RequestFeatureView, inputs: pa.Table) -> pa.Table:
    import pandas as pd
    import pyarrow as pa

    assert view.python is not None
    fn = _transform(view.name, view.python)
    frame = inputs.to_pandas(types_mapper=pd.ArrowDtype)
    try:
        result = fn(frame)
    except Exception as exc:  # the user's code: report it as the view's failure
        raise RetrievalError(f"request view {view.name!r}: transform(df) raised "
                             f"{type(exc).__name__}: {exc}; fix the code") from None
    if not isinstance(result, pd.DataFrame):
        raise RetrievalError(f"request view {view.name!r}: transform(df) returned a "
                             f"{type(result).__name__}; return a pandas DataFrame")
    return pa.Table.from_pandas(result.reset_index(drop=True), preserve_index=False)


# -- historical retrieval ------------------------------------------------------------------
def request_plan(registry: Any, refs: list[str], full_feature_names: bool
                 ) -> tuple[list[str], list[dict[str, Any]]]:
    """Split ``refs`` into stored-feature references (with every input the requested
    request views need added, once) and the request views asked for, each as a JSON-ready
    dict (its definition, the fields asked for and their output columns) that the
    manifest keeps, so ``reproduce`` computes them again. Inputs not asked for themselves
    are listed under ``hidden``: they are read, and left out of the result."""
    from featureledger.model.references import parse_reference

    parsed = [parse_reference(r) for r in refs]
    names = registry.definitions.names("request_view", {r.view for r in parsed})
    wanted = [r for r in parsed if r.view in names]
    if not wanted:
        return refs, []
    stored = [str(r) for r in parsed if r.view not in names]
    pinned = {str(registry.definitions.resolve(r)[0]) for r in stored}
    asked = set(pinned)
    by_view: dict[str, dict[str, Any]] = {}
    for r in wanted:
        rec = registry.definitions.get("request_view", r.view, r.version)
        view: RequestFeatureView = rec.definition
        view.field(r.feature)  # UnknownFeatureError names the fields
        q = by_view.setdefault(f"{rec.name}@{rec.version}", {
            "name": rec.name, "version": rec.version, "definition": view.to_dict(),
            "fields": [], "outputs": [], "inputs": {}})
        q["fields"].append(r.feature)
        q["outputs"].append(f"{rec.name}__{r.feature}" if full_feature_names else r.feature)
        for ref in view.inputs:
            p = str(registry.definitions.resolve(ref)[0])
            if p not in pinned:
                pinned.add(p)
                stored.append(p)
            q["inputs"][parse_reference(ref).feature] = p
            if p not in asked:  # read for the transformation only: not a result column
                q.setdefault("hidden", []).append(p)
    return stored, list(by_view.values())


def resolve_request_inputs(request: list[dict[str, Any]], plan: Any,
                           entity_columns: list[str]) -> None:
    """Fill each request view's ``columns``: per input name, the training-set column and
    dtype that hold it; refuse output names that clash with other columns."""
    where: dict[str, tuple[str, str]] = {}
    for r in plan:
        names = [*r.features, *(a["name"] for a in r.aggregations)]
        for f, o, t in zip(names, r.outputs, r.output_dtypes, strict=True):
            where[f"{r.view}@{r.version}:{f}"] = (o, t)
    taken = set(entity_columns) | {o for r in plan for o in r.outputs}
    for q in request:
        q["columns"] = {name: where[ref] for name, ref in q["inputs"].items()}
        if q.get("hidden"):
            q["drop"] = [where[ref][0] for ref in q["hidden"]]
        clash = [o for o in q["outputs"] if o in taken]
        if clash:
            raise RetrievalError(
                f"request view {q['name']!r}: column(s) {', '.join(clash)} would appear twice "
                "in the training set; rename the entity columns or pass "
                "full_feature_names=True")
        taken.update(q["outputs"])


def add_request_features(table: pa.Table, request: Any) -> pa.Table:
    """``table`` with the columns of each request view in ``request`` appended (inputs
    from its feature columns, request values from its entity columns), and without the
    input features no one asked for (``drop``)."""
    from featureledger.model.definitions import RequestFeatureView

    for q in request:
        view = RequestFeatureView(**{k: v for k, v in q["definition"].items() if k != "kind"})
        columns = q["columns"]
        inputs = input_table(
            view, {n: table.column(c) for n, (c, _t) in columns.items()},
            {n: table.column(n) for n in view.request_schema if n in table.column_names},
            {n: t for n, (_c, t) in columns.items()}, table.num_rows)
        out = compute_request_features(view, inputs)
        for f, o in zip(q["fields"], q["outputs"], strict=True):
            table = table.append_column(o, out.column(f))
    # inputs read only for the transformations leave (datasets made before this was so
    # record no "drop", and reproduce keeps their columns)
    drop = {c for q in request for c in q.get("drop", ())}
    return table.drop_columns([c for c in table.column_names if c in drop]) if drop else table
