"""The guard in front of user SQL: filters, row checks and migrations.

User SQL is never pasted into a statement before DuckDB's own parser has read it and its
parse tree (``json_serialize_sql``) has been checked here; then it runs on
:func:`~featureledger.offline.engine.sandboxed_connection` (no file system or network,
no extensions, configuration locked) over only the relations it is given. The guard gives
the clear refusal (naming what is not allowed); the sandbox is the second wall.

An **expression** (a ``--filter``, a row check) is the text between the parentheses of
``SELECT (\\n<text>\\n)``. It is accepted when that is one SELECT statement whose only
content is one expression, and the expression holds nothing but

* column names (one part: ``fare``, ``"my col"``), constants, operators, ``CASE``,
  ``CAST``, ``BETWEEN``, ``IN (list)``, ``COLLATE`` and lambdas;
* calls of DuckDB's built-in scalar functions and macros, except those that read the
  session or the environment or change state (:data:`DENIED_FUNCTIONS`).

So stacked statements (``TRUE); COPY ... ; SELECT (TRUE``), ``FROM``/``WHERE``/``WITH``
smuggled past the parenthesis, subqueries, table functions (``read_csv``, ``read_text``,
``glob``, ...), aggregates and window functions (a filter or check judges one row at a
time), parameters and ``*`` are refused, as are ``COPY``, ``ATTACH``, ``INSTALL``,
``LOAD``, ``SET`` and ``PRAGMA``, which are statements, not expressions.

A **query** (a migration) is one SELECT statement that may read only the relations it is
given (and its own CTEs); subqueries, aggregates and window functions are allowed, table
functions and every other table are not.

>>> from featureledger.errors import IngestionError
>>> check_expression("fare > 0 AND city = 'ams'", "filter", IngestionError).columns
('fare', 'city')
>>> check_expression("TRUE); COPY t TO 'x'; SELECT (TRUE", "filter", IngestionError)
Traceback (most recent call last):
...
featureledger.errors.IngestionError: filter "TRUE); COPY t TO 'x'; SELECT (TRUE" is refused: it holds 3 statements (COPY), not one expression. Write one SQL expression over the columns, e.g. "fare > 0 AND city = 'ams'"
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

from featureledger.errors import FeatureLedgerError
from featureledger.model.bounds import first_line, shorten

MAX_EXPRESSION_CHARS = 10_000
"""Longest filter or row check accepted (longer text is refused unparsed)."""
MAX_QUERY_CHARS = 100_000
"""Longest migration SELECT accepted."""

# Built-in scalar functions that report on the session, the process or the catalog, or
# that change state or sleep: nothing a row-level expression needs.
DENIED_FUNCTIONS = frozenset({
    "current_setting", "current_query", "current_query_id", "current_connection_id",
    "current_transaction_id", "current_database", "current_catalog", "current_schema",
    "current_schemas", "current_role", "current_user", "session_user", "user", "version",
    "getenv", "getvariable", "setseed", "nextval", "currval", "setval", "txid_current",
    "write_log", "sleep_ms", "in_search_path", "get_block_size", "col_description",
    "obj_description", "shobj_description", "parse_duckdb_log_message", "stats",
    "json_serialize_sql", "json_deserialize_sql", "json_serialize_plan", "query",
    "query_table",
})
_DENIED_PREFIXES = ("__internal", "pg_", "has_", "inet_", "duckdb_")

_EXPRESSION_CLASSES = frozenset({
    "CONSTANT", "COLUMN_REF", "FUNCTION", "OPERATOR", "COMPARISON", "CONJUNCTION", "CASE",
    "CAST", "BETWEEN", "LAMBDA", "COLLATE", "TYPE",
})
_QUERY_CLASSES = _EXPRESSION_CLASSES | {"SUBQUERY", "STAR", "WINDOW"}
_QUERY_NODES = frozenset({"SELECT_NODE", "SET_OPERATION_NODE", "RECURSIVE_CTE_NODE",
                          "CTE_NODE"})
_TABLE_REFS = frozenset({"BASE_TABLE", "JOIN", "SUBQUERY", "EMPTY", "EXPRESSION_LIST",
                         "PIVOT"})
_WHY_CLASS = {
    "SUBQUERY": "a subquery (the expression sees one row of the input; a subquery could "
                "read other tables)",
    "STAR": "'*' or COLUMNS(...) (name the columns)",
    "WINDOW": "a window function (the expression judges one row at a time)",
    "PARAMETER": "a parameter ('?' or '$1')",
    "POSITIONAL_REFERENCE": "a positional reference ('#1'; name the column)",
    "DEFAULT": "DEFAULT",
}
_WHY_REF = {
    "TABLE_FUNCTION": "table function {name}() (it reads files or tables)",
    "SHOW_REF": "SUMMARIZE / DESCRIBE",
    "COLUMN_DATA": "inline data",
}
EXAMPLE = "\"fare > 0 AND city = 'ams'\""


@dataclass(frozen=True)
class Expression:
    """An accepted expression: its SQL, ready to paste where an expression goes (the text
    as written, in parentheses on lines of its own, so a trailing ``--`` comment stays a
    comment), and the columns it names, as the relation spells them."""

    text: str
    sql: str
    columns: tuple[str, ...]


@dataclass(frozen=True)
class _Analysis:
    problem: str | None  # why it is refused; None when accepted
    columns: tuple[str, ...] = ()  # column names as written (unresolved)


class _Refused(Exception):
    """Internal: carries the reason a tree is refused up to the analysis."""


_lock = threading.Lock()


@functools.lru_cache(maxsize=1)
def _parser() -> Any:
    from featureledger.offline.duckdb.sandbox import sandboxed_connection

    return sandboxed_connection()


def _serialize(sql: str) -> dict[str, Any]:
    """DuckDB's parse tree of ``sql`` (one SELECT), query locations removed."""
    with _lock:  # one connection, used from any thread
        text = _parser().execute("SELECT json_serialize_sql(?)", [sql]).fetchone()[0]
    tree = json.loads(text)
    if tree.get("error"):
        raise _Refused(f"it does not parse: {first_line(tree.get('error_message', ''))}")
    return _strip(tree)


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if not k.startswith("query_location")}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


@functools.lru_cache(maxsize=1)
def _function_kinds() -> dict[str, frozenset[str]]:
    """Every function DuckDB knows, by lower-case name: its kinds (scalar, macro,
    aggregate, window, table, table_macro, pragma)."""
    with _lock:
        rows = _parser().execute(
            "SELECT lower(function_name), list(DISTINCT function_type) FROM duckdb_functions() "
            "GROUP BY 1").fetchall()
    return {name: frozenset(kinds) for name, kinds in rows}


def _statements(sql: str) -> list[Any]:
    import duckdb

    try:
        return list(duckdb.extract_statements(sql))
    except duckdb.Error as exc:
        raise _Refused(f"it does not parse: {first_line(exc)}") from None


@functools.lru_cache(maxsize=1)
def _template() -> dict[str, Any]:
    """The tree of ``SELECT (NULL)`` without its select list: what an accepted
    expression's statement must look like around the expression."""
    return _shape(_serialize("SELECT (\nNULL\n)"))


def _shape(tree: dict[str, Any]) -> dict[str, Any]:
    """A one-statement tree without its select list and parameter map (parameters in the
    expression are the walker's to refuse, with a clearer message)."""
    statement = tree["statements"][0]
    node = {k: v for k, v in statement["node"].items() if k != "select_list"}
    return {**tree, "statements": [{**{k: v for k, v in statement.items()
                                       if k != "named_param_map"}, "node": node}]}


def _clauses(node: dict[str, Any]) -> list[str]:
    """Names of the clauses a SELECT node has beyond its select list."""
    found = []
    if node.get("type") != "SELECT_NODE":
        found.append("UNION / EXCEPT / INTERSECT")
    ref = node.get("from_table") or {}
    if ref.get("type") not in (None, "EMPTY"):
        inner = ref.get("function", {}).get("function_name") or ref.get("table_name")
        found.append(f"a FROM clause ({inner})" if inner else "a FROM clause")
    for key, name in (("where_clause", "WHERE"), ("having", "HAVING"), ("qualify", "QUALIFY"),
                      ("sample", "USING SAMPLE")):
        if node.get(key):
            found.append(name)
    if node.get("group_expressions") or node.get("group_sets"):
        found.append("GROUP BY")
    if node.get("modifiers"):
        found.append("ORDER BY / LIMIT / DISTINCT")
    if (node.get("cte_map") or {}).get("map"):
        found.append("WITH")
    return found or ["more than the expression"]


@functools.lru_cache(maxsize=1024)
def _analyse_expression(text: str) -> _Analysis:
    try:
        if not text.strip():
            raise _Refused("it is empty")
        sql = f"SELECT (\n{text}\n)"
        statements = _statements(sql)
        if len(statements) != 1:
            others = sorted({s.type.name for s in statements} - {"SELECT"})
            extra = f" ({', '.join(others)})" if others else ""
            raise _Refused(f"it holds {len(statements)} statements{extra}, not one expression")
        if statements[0].type.name != "SELECT":
            raise _Refused(f"it is a {statements[0].type.name} statement, not an expression")
        tree = _serialize(sql)
        if len(tree["statements"]) != 1:  # the count above says so too; the tree decides
            raise _Refused(f"it holds {len(tree['statements'])} statements, not one expression")
        node = tree["statements"][0]["node"]
        items = node.get("select_list") or []
        if _shape(tree) != _template():
            raise _Refused(f"it holds {', '.join(_clauses(node))}, not only an expression")
        if len(items) != 1:
            raise _Refused(f"it holds {len(items)} expressions separated by commas, not one")
        if items[0].get("alias"):
            raise _Refused(f"it gives the expression an alias ({items[0]['alias']!r})")
        walker = _Walker(query=False, relations=frozenset())
        walker.walk(items[0], frozenset())
        return _Analysis(None, tuple(dict.fromkeys(walker.columns)))
    except _Refused as exc:
        return _Analysis(str(exc))


class _Walker:
    """Checks every node of a parse tree: expression classes, function names, table
    references (queries only); collects the column names an expression reads."""

    def __init__(self, *, query: bool, relations: frozenset[str]) -> None:
        self.query = query
        self.relations = relations
        self.columns: list[str] = []

    def walk(self, value: Any, bound: frozenset[str], ctes: frozenset[str] = frozenset()
             ) -> None:
        if isinstance(value, list):
            for v in value:
                self.walk(v, bound, ctes)
            return
        if not isinstance(value, dict):
            return
        if "class" in value:
            self._expression(value, bound, ctes)
            return
        kind = str(value.get("type", ""))
        if kind.endswith("_NODE") and "modifiers" in value:
            self._query_node(value, bound, ctes)
            return
        if "sample" in value and "alias" in value and kind:
            self._table_ref(value, bound, ctes)
            return
        for v in value.values():
            self.walk(v, bound, ctes)

    def _expression(self, node: dict[str, Any], bound: frozenset[str],
                    ctes: frozenset[str]) -> None:
        cls = node["class"]
        allowed = _QUERY_CLASSES if self.query else _EXPRESSION_CLASSES
        if cls not in allowed:
            raise _Refused(f"it holds {_WHY_CLASS.get(cls, cls.lower())}")
        if cls == "COLUMN_REF":
            names = node.get("column_names") or []
            if not self.query:
                if len(names) != 1:
                    raise _Refused(f"it names {'.'.join(names)!r}: name a column alone, "
                                   "without a table or schema")
                if names[0].lower() not in bound:
                    self.columns.append(names[0])
            return
        if cls == "LAMBDA":
            # the parameters (x in "x -> x > 0") are names of the lambda, not columns
            params = frozenset(n.lower() for n in _lambda_params(node.get("lhs")))
            self.walk(node.get("expr"), bound | params, ctes)
            return
        if cls == "FUNCTION":
            self._function(node)
        for key, v in node.items():
            if key != "class":
                self.walk(v, bound, ctes)

    def _function(self, node: dict[str, Any]) -> None:
        name = str(node.get("function_name", ""))
        if node.get("schema") or node.get("catalog"):
            raise _Refused(f"it calls {node.get('schema') or node.get('catalog')}.{name}(): "
                           "call built-in functions by their name alone")
        lower = name.lower()
        kinds = _function_kinds().get(lower, frozenset())
        if lower in DENIED_FUNCTIONS or lower.startswith(_DENIED_PREFIXES):
            raise _Refused(f"it calls {name}(), which reads the session, the process or "
                           "the catalog, or changes state")
        usable = {"scalar", "macro"} | ({"aggregate", "window"} if self.query else set())
        if kinds & usable:
            if not self.query and (node.get("filter") or node.get("distinct")
                                   or (node.get("order_bys") or {}).get("orders")):
                raise _Refused(f"it calls {name}() with aggregate options (FILTER, "
                               "DISTINCT, ORDER BY)")
            return
        if kinds & {"table", "table_macro"}:
            raise _Refused(f"it calls table function {name}() (it reads files or tables)")
        if kinds & {"aggregate", "window"}:
            raise _Refused(f"it calls aggregate function {name}() (the expression judges "
                           "one row at a time)")
        if kinds:
            raise _Refused(f"it calls {name}(), a {'/'.join(sorted(kinds))} function")
        raise _Refused(f"it calls {name}(), which is not a DuckDB function")

    def _query_node(self, node: dict[str, Any], bound: frozenset[str],
                    ctes: frozenset[str]) -> None:
        if node["type"] not in _QUERY_NODES:
            raise _Refused(f"it holds a {node['type']}")
        entries = (node.get("cte_map") or {}).get("map") or []
        seen = set(ctes)
        for entry in entries:
            name = str(entry.get("key", "")).lower()
            body = entry.get("value") or {}
            inner = body.get("query_node") or body.get("query") or body
            # a CTE sees the ones before it, and itself only when it is recursive; any
            # other name it reads would be looked up in the catalog
            recursive = isinstance(inner, dict) and inner.get("type") == "RECURSIVE_CTE_NODE"
            self.walk(body, bound, frozenset(seen | ({name} if recursive else set())))
            seen.add(name)
        for key, v in node.items():
            if key != "cte_map":
                self.walk(v, bound, frozenset(seen))

    def _table_ref(self, ref: dict[str, Any], bound: frozenset[str],
                   ctes: frozenset[str]) -> None:
        kind = ref["type"]
        if kind not in _TABLE_REFS:
            name = (ref.get("function") or {}).get("function_name", "")
            raise _Refused("it reads from " + _WHY_REF.get(kind, kind.lower()).format(name=name))
        if kind == "BASE_TABLE":
            table = str(ref.get("table_name", ""))
            if ref.get("schema_name") or ref.get("catalog_name") or ref.get("at_clause"):
                raise _Refused(f"it reads table {table!r} of another schema or catalog")
            if table.lower() not in self.relations | ctes:
                given = ", ".join(sorted(self.relations))
                raise _Refused(f"it reads table {table!r}; it may read only {given}")
        for v in ref.values():
            self.walk(v, bound, ctes)


def _lambda_params(lhs: Any) -> Iterable[str]:
    if isinstance(lhs, dict):
        if lhs.get("class") == "COLUMN_REF":
            yield from (lhs.get("column_names") or [])[-1:]
        for v in lhs.values():
            if isinstance(v, (dict, list)):
                yield from _lambda_params(v)
    elif isinstance(lhs, list):
        for v in lhs:
            yield from _lambda_params(v)


def check_expression(text: str, what: str, error: type[FeatureLedgerError],
                     columns: Collection[str] | None = None) -> Expression:
    """``text`` as an :class:`Expression` if the guard accepts it (see the module doc),
    else ``error`` naming ``what`` and what is not allowed. With ``columns``, every column
    it names must be one of them (matched without regard to case, as DuckDB does), and
    :attr:`Expression.columns` spells them as ``columns`` does."""
    if not isinstance(text, str):
        raise error(f"{what} must be SQL text, not {type(text).__name__}")
    # measured before the cache, which must never keep a huge text
    found = (_analyse_expression(text) if len(text) <= MAX_EXPRESSION_CHARS else _Analysis(
        f"it is {len(text):,} characters long (at most {MAX_EXPRESSION_CHARS:,})"))
    label = f"{what} {shorten(text, 120)}"
    if found.problem is not None:
        raise error(f"{label} is refused: {found.problem}. Write one SQL expression over "
                    f"the columns, e.g. {EXAMPLE}")
    names = list(found.columns)
    if columns is not None:
        by_lower = {c.lower(): c for c in columns}
        unknown = [n for n in names if n.lower() not in by_lower]
        if unknown:
            listed = ", ".join(shorten(c, 60) for c in list(columns)[:30])
            more = f" and {len(columns) - 30} more" if len(columns) > 30 else ""
            raise error(f"{label} names column(s) {', '.join(map(repr, unknown))}, which "
                        f"are not among its columns: {listed}{more}")
        names = list(dict.fromkeys(by_lower[n.lower()] for n in names))
    return Expression(text, f"(\n{text}\n)", tuple(names))


@functools.lru_cache(maxsize=64)
def _analyse_query(sql: str, relations: frozenset[str]) -> str | None:
    try:
        statements = _statements(sql)
        if len(statements) != 1:
            others = sorted({s.type.name for s in statements} - {"SELECT"})
            extra = f" ({', '.join(others)})" if others else ""
            raise _Refused(f"it holds {len(statements)} statements{extra}; write exactly one "
                           "SELECT")
        if statements[0].type.name != "SELECT":
            raise _Refused(f"it is a {statements[0].type.name} statement; only a SELECT is "
                           "allowed")
        tree = _serialize(sql)
        _Walker(query=True, relations=relations).walk(tree["statements"], frozenset())
        return None
    except _Refused as exc:
        return str(exc)


def check_query(sql: str, what: str, relations: Collection[str],
                error: type[FeatureLedgerError]) -> str:
    """``sql`` if it is one SELECT reading only ``relations`` (and its own CTEs), with no
    table function and no denied function; else ``error`` naming ``what`` and why."""
    if not isinstance(sql, str):
        raise error(f"{what} must be SQL text, not {type(sql).__name__}")
    problem = (_analyse_query(sql, frozenset(r.lower() for r in relations))
               if len(sql) <= MAX_QUERY_CHARS else
               f"it is {len(sql):,} characters long (at most {MAX_QUERY_CHARS:,})")
    if problem is not None:
        raise error(f"{what} is refused: {problem}. Write one SELECT over "
                    f"{', '.join(sorted(relations))}")
    return sql


__all__ = ["DENIED_FUNCTIONS", "MAX_EXPRESSION_CHARS", "MAX_QUERY_CHARS", "Expression",
           "check_expression", "check_query"]
