"""Column-level lineage of derived views: which parent columns each output column is
computed from, and how.

For a SQL transformation the answer is read from the SQL itself with sqlglot (DuckDB's
dialect, qualified against the parents' columns, so ``SELECT *`` and unqualified names
resolve): per output column, every parent column it reads, each with its *kind*:

* ``identity``: the value is the parent column's value, passed through unchanged
  (possibly through CTEs and subqueries);
* ``transformation``: computed from it row by row (arithmetic, functions, ``CASE``, window
  functions);
* ``aggregation``: computed by an aggregate over several rows (``GROUP BY``).

Columns that decide *which* rows appear without giving a value (``WHERE``, ``JOIN ...
ON``/``USING``, ``GROUP BY``, ``QUALIFY``, ``HAVING``) are listed once for the whole
output, under ``dataset``, with what they do (``filter``, ``join``, ``group_by``).

A Python transformation is opaque: its column lineage is ``unknown`` unless the
definition declares it (``Transformation(columns={"out": ["parent.column", ...]})``), in
which case the record says ``declared`` and repeats the declaration, unchecked.

The record is JSON-ready and stored with every derived commit (its ``source`` record,
under ``columns``), so it says what the commit was computed with, whatever the definitions
become later::

    {"method": "sqlglot" | "declared" | "unknown",
     "columns": {"fare_per_km": [{"view": "trips", "column": "fare",
                                  "kind": "transformation",
                                  "expression": "trips.fare / trips.km"}, ...], ...},
     "dataset": [{"view": "trips", "column": "km", "kind": "filter"}, ...]}

>>> rec = sql_column_lineage(
...     "SELECT driver_id, event_timestamp, fare * 2 AS fare2 FROM trips WHERE km > 1",
...     {"trips": {"driver_id": "BIGINT", "event_timestamp": "TIMESTAMPTZ",
...                "fare": "DOUBLE", "km": "DOUBLE"}},
...     ["driver_id", "event_timestamp", "fare2"])
>>> rec["columns"]["fare2"][0]["kind"], rec["columns"]["driver_id"][0]["kind"]
('transformation', 'identity')
>>> rec["dataset"]
[{'view': 'trips', 'column': 'km', 'kind': 'filter'}]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from featureledger.errors import DerivationError
from featureledger.model.bounds import shorten

if TYPE_CHECKING:
    from featureledger.model.definitions import FeatureView, Transformation

SQLGLOT = "sqlglot"
DECLARED = "declared"
UNKNOWN = "unknown"
KINDS = ("identity", "transformation", "aggregation")
_CLAUSES = (("where", "filter"), ("joins", "join"), ("group", "group_by"),
            ("qualify", "filter"), ("having", "filter"))


def view_columns(view: FeatureView) -> dict[str, str]:
    """The columns a transformation sees of a parent view, with their DuckDB types: its
    join keys, timestamp and fields."""
    from featureledger.model.types import to_duckdb

    cols = {k: to_duckdb(t) for k, t in view.join_keys.items()}
    cols[view.timestamp_field] = "TIMESTAMPTZ"
    cols.update({f.name: to_duckdb(f.dtype) for f in view.fields})
    return cols


def output_columns(view: FeatureView) -> list[str]:
    """A derived view's output columns: join keys, timestamp, fields."""
    return [*view.join_keys, view.timestamp_field, *(f.name for f in view.fields)]


def column_lineage(view: FeatureView, parents: Mapping[str, FeatureView]) -> dict[str, Any]:
    """The column lineage record of derived view ``view`` (see the module doc), its
    parents given by name (as the transformation names them). SQL that sqlglot cannot
    analyse gives method ``unknown`` with the ``reason``, never an error: it still runs."""
    t = view.transformation
    if t is None:
        raise DerivationError(f"feature view {view.name!r} has no transformation, so no "
                              "column lineage; only derived views have one")
    outputs = output_columns(view)
    if t.language == "python":
        return declared_lineage(t, outputs)
    schemas = {name: view_columns(parents[name]) for name, _ in t.parent_refs()}
    if t.params:
        schemas["params"] = {k: _param_type(v) for k, v in t.params.items()}
    try:
        return sql_column_lineage(t.code, schemas, outputs,
                                  params="params" if t.params else None)
    except DerivationError as exc:  # the SQL runs on DuckDB all the same: lineage unknown
        return {"method": UNKNOWN, "columns": {}, "dataset": [], "reason": str(exc)}


def _param_type(value: Any) -> str:
    if isinstance(value, bool):
        return "BOOLEAN"
    if isinstance(value, int):
        return "BIGINT"
    return "DOUBLE" if isinstance(value, float) else "VARCHAR"


def declared_lineage(t: Transformation, outputs: Sequence[str]) -> dict[str, Any]:
    """A Python transformation's lineage: what its definition declares, else unknown."""
    if not t.columns:
        return {"method": UNKNOWN, "columns": {}, "dataset": []}
    cols: dict[str, list[dict[str, Any]]] = {}
    for out in outputs:
        refs = t.columns.get(out)
        if refs is None:
            continue
        cols[out] = [{"view": r.split(".", 1)[0], "column": r.split(".", 1)[1],
                      "kind": "transformation"} for r in refs]
    return {"method": DECLARED, "columns": cols, "dataset": []}


def sql_column_lineage(sql: str, schemas: Mapping[str, Mapping[str, str]],
                       outputs: Sequence[str], *, params: str | None = None
                       ) -> dict[str, Any]:
    """The column lineage of one SELECT (DuckDB dialect) over relations with the given
    columns, for the output columns ``outputs`` (those the SELECT does not produce are
    left out). ``params`` names a relation that holds parameters, not parent columns."""
    import sqlglot
    from sqlglot.errors import SqlglotError
    from sqlglot.lineage import lineage
    from sqlglot.optimizer.qualify import qualify

    schema: dict[str, object] = {k: dict(v) for k, v in schemas.items()}
    try:
        tree = sqlglot.parse_one(sql, dialect="duckdb")
        tree = qualify(tree, schema=schema, dialect="duckdb", validate_qualify_columns=False)
        nodes = lineage(None, tree, schema, dialect="duckdb")
    except SqlglotError as exc:
        raise DerivationError(f"the SQL transformation could not be analysed for column "
                              f"lineage: {shorten(str(exc).splitlines()[0], 200)}") from None
    if not isinstance(nodes, dict):
        nodes = {nodes.name: nodes}
    cols: dict[str, list[dict[str, Any]]] = {}
    for out in outputs:
        node = nodes.get(out)
        if node is None:
            continue
        found: dict[tuple[str, str], dict[str, Any]] = {}
        _leaves(node, [], found, params)
        cols[out] = sorted(found.values(), key=lambda d: (d["view"], d["column"]))
    return {"method": SQLGLOT, "columns": cols,
            "dataset": _dataset_columns(tree, set(schemas) - {params} if params else set(schemas))}


def _leaves(node: Any, path: list[Any], found: dict[tuple[str, str], dict[str, Any]],
            params: str | None) -> None:
    from sqlglot import exp

    path = [*path, node.expression]
    if node.downstream:
        for child in node.downstream:
            _leaves(child, path, found, params)
        return
    if not isinstance(node.source, exp.Table) or node.source.name == params:
        return  # a literal, or a parameter: no parent column
    view = node.source.name
    column = node.name.rsplit(".", 1)[-1].strip('"')  # names follow check_name: no quotes
    kind = _kind(path[:-1])
    expression = _expression(path[0])
    prev = found.get((view, column))
    if prev is None or KINDS.index(kind) > KINDS.index(prev["kind"]):
        entry = {"view": view, "column": column, "kind": kind}
        if kind != "identity":
            entry["expression"] = expression
        found[(view, column)] = entry


def _kind(expressions: Sequence[Any]) -> str:
    """How a value flows along a lineage path (output first): identity when every step is
    a bare column, aggregation when a step aggregates rows, else transformation."""
    from sqlglot import exp

    kind = "identity"
    for e in expressions:
        inner = e.this if isinstance(e, exp.Alias) else e
        if isinstance(inner, exp.Column) or _join_key(inner):
            continue
        aggregates = [a for a in inner.find_all(exp.AggFunc)
                      if not isinstance(a.parent, exp.Window)]
        if aggregates:
            return "aggregation"
        kind = "transformation"
    return kind


def _join_key(e: Any) -> bool:
    """``COALESCE(a.k, b.k)``: how a ``USING (k)`` key is read, the key itself."""
    from sqlglot import exp

    if not isinstance(e, exp.Coalesce):
        return False
    args = [e.this, *e.expressions]
    return all(isinstance(a, exp.Column) for a in args) and len({a.name for a in args}) == 1


def _expression(e: Any) -> str:
    """The SQL of an output column's expression, without the quotes qualification adds
    (every name follows the identifier rule, so none needs them)."""
    from sqlglot import exp

    inner = e.this if isinstance(e, exp.Alias) else e
    plain = inner.transform(lambda n: exp.Identifier(this=n.this, quoted=False)
                            if isinstance(n, exp.Identifier) else n)
    text = str(plain.sql(dialect="duckdb"))
    return text if len(text) <= 300 else text[:297] + "..."



def _dataset_columns(tree: Any, parents: set[str]) -> list[dict[str, Any]]:
    """Parent columns read by WHERE, JOIN, GROUP BY, QUALIFY and HAVING clauses of any
    SELECT whose FROM names the parent directly."""
    from sqlglot import exp
    from sqlglot.optimizer.scope import traverse_scope

    out: dict[tuple[str, str, str], dict[str, Any]] = {}
    for scope in traverse_scope(tree):
        sel = scope.expression
        if not isinstance(sel, exp.Select):
            continue
        tables = {alias: src.name for alias, src in scope.sources.items()
                  if isinstance(src, exp.Table) and src.name in parents}
        for arg, kind in _CLAUSES:
            parts = sel.args.get(arg)
            for part in (parts if isinstance(parts, list) else [parts]):
                if part is None:
                    continue
                for col in part.find_all(exp.Column):
                    view = tables.get(col.table)
                    if view is not None:
                        out.setdefault((view, col.name, kind),
                                       {"view": view, "column": col.name, "kind": kind})
                if isinstance(part, exp.Join):  # USING (k): the key of both sides
                    for ident in part.args.get("using") or []:
                        for view in sorted(set(tables.values())):
                            out.setdefault((view, ident.name, "join"),
                                           {"view": view, "column": ident.name,
                                            "kind": "join"})
    return [out[k] for k in sorted(out)]


def parent_columns(record: Mapping[str, Any] | None, column: str | None = None
                   ) -> list[str]:
    """``view.column`` names the record says ``column`` (default: every output column)
    is computed from.

    >>> parent_columns({"columns": {"x": [{"view": "t", "column": "a", "kind": "identity"}]}})
    ['t.a']
    """
    if not record:
        return []
    cols = record.get("columns") or {}
    picked = cols.items() if column is None else [(column, cols.get(column) or [])]
    return sorted({f"{i['view']}.{i['column']}" for _, ins in picked for i in ins})
