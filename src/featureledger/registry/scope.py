"""Project scoping: every registry row belongs to one project, and every query says which.

Every table has a ``project`` column (see ``schema.py``). Reads, updates and deletes
restrict each table they touch with :func:`scope`; repositories call it as
``db.scope(table, ...)``, and helpers that only hold a connection pass the connection,
which knows the project of the RegistryDB that opened it (``conn.info["project"]``).
Inserts name the project explicitly; the column has no default, so an insert that forgets
it fails.

Forgetting the condition is caught by the machine rather than by review: RegistryDB
installs :func:`check_statement` on its engine, so every statement is checked before it
runs, in tests and in production alike (an unscoped query is a data leak between
projects; refusing it is the lesser harm). The rule, for statements built with
SQLAlchemy Core: in every SELECT at any depth (subqueries, EXISTS, IN, unions), each
registry table in its FROM list (other than tables correlated from an enclosing query),
and the target of every UPDATE and DELETE, needs a top-level ``AND`` term
``<table>.project = <this project>``. A textual statement that names a registry table
must bind ``:project`` to this project and compare ``<alias>.project = :project`` at
least once per reference.

>>> import sqlalchemy as sa
>>> from featureledger.registry import schema
>>> t = schema.commits
>>> unscoped(sa.select(t).where(t.c.view_name == "x"), "p")
['commits']
>>> unscoped(sa.select(t).where(scope("p", t), t.c.view_name == "x"), "p")
[]
>>> unscoped(sa.select(t).where(scope("other", t)), "p")
['commits']
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.sql import operators
from sqlalchemy.sql.dml import Delete, Update
from sqlalchemy.sql.elements import (
    BinaryExpression,
    BindParameter,
    BooleanClauseList,
    ClauseElement,
    ColumnClause,
    ColumnElement,
    Grouping,
    TextClause,
)
from sqlalchemy.sql.selectable import Alias, FromClause, Join, Select, SelectBase

from featureledger.errors import ProjectScopeError
from featureledger.registry import schema

PROJECT_TABLES: frozenset[sa.Table] = frozenset(schema.metadata.tables.values())
_BY_NAME = {t.name: t for t in PROJECT_TABLES}
INFO_KEY = "project"  # Connection.info key of the project a connection serves
SKIP_KEY = "project_scope_unchecked"  # set while migrations run: they span every project


def project_of(conn: Connection) -> str:
    """The project of a connection opened by a RegistryDB."""
    project = conn.info.get(INFO_KEY)
    if project is None:
        raise ProjectScopeError(
            "internal error: a registry connection without a project was used; open "
            "connections through RegistryDB.read() or write(). Please report it")
    return str(project)


def scope(source: Connection | str, *tables: FromClause) -> ColumnElement[bool]:
    """The condition keeping only ``source``'s project's rows of each table.

    ``source`` is a project name or a connection opened by a RegistryDB.
    """
    if not tables:
        raise ProjectScopeError("internal error: scope() needs at least one table")
    project = source if isinstance(source, str) else project_of(source)
    return sa.and_(*(t.c.project == project for t in tables))


# -- the guard -----------------------------------------------------------------------------

def check_statement(conn: Connection, statement: Any, multiparams: Any, params: Any,
                    _execution_options: Any) -> None:
    """``before_execute`` hook: refuse a statement that is not scoped to the project."""
    if conn.info.get(SKIP_KEY) or not isinstance(statement, ClauseElement):
        return
    # a connection not opened by a RegistryDB has no project: nothing it reads is scoped
    project = conn.info.get(INFO_KEY) or ""
    bound: Mapping[str, Any] = params or (multiparams[0] if multiparams and
                                          isinstance(multiparams[0], Mapping) else {})
    bad = unscoped(statement, project, bound)
    if bad:
        text = " ".join(str(statement).split())
        raise ProjectScopeError(
            f"internal error: a registry statement reads or changes {', '.join(bad)} without "
            f"restricting it to project {project!r}, so it could see other projects' rows; "
            "it was not run. This is a bug in featureledger: please report it with this "
            f"statement: {text[:500]}")


def unscoped(statement: ClauseElement, project: str,
             params: Mapping[str, Any] | None = None) -> list[str]:
    """Names of the registry tables ``statement`` uses without the project condition."""
    if isinstance(statement, TextClause):
        return _unscoped_text(statement, project, params or {})
    bad: list[str] = []
    _visit(statement, frozenset(), project, bad, set())
    return sorted(set(bad))


def _visit(el: ClauseElement, outer: frozenset[Any], project: str, bad: list[str],
           seen: set[int]) -> None:
    if id(el) in seen:
        return
    seen.add(id(el))
    if isinstance(el, Select):
        tables, criteria, correlated, uncorrelated = _select_parts(el)
        if not getattr(el, "_auto_correlate", True):  # .correlate(...) names its tables
            outer = outer & set(getattr(el, "_correlate", ()) or ())
        tables = [t for t in dict.fromkeys(tables) if t not in outer]
        ok = _scoped(criteria, project)
        bad.extend(_base(t).name for t in tables if t not in ok)
        inner = outer | set(tables)
        for sub in correlated:  # EXISTS / IN / scalar subqueries may correlate to this one
            _visit(sub, inner, project, bad, seen)
        for sub in uncorrelated:  # subqueries in FROM never do
            _visit(sub, outer, project, bad, seen)
        return
    if isinstance(el, (Update, Delete)):
        target = el.table
        if _base(target) in PROJECT_TABLES and target not in _scoped([el.whereclause],
                                                                      project):
            bad.append(_base(target).name)
        outer = outer | {target}
    elif isinstance(el, TextClause):
        bad.extend(_unscoped_text(el, project, {}))
        return
    for child in el.get_children():
        _visit(child, outer, project, bad, seen)


def _select_parts(sel: Select[Any]) -> tuple[list[Any], list[Any], list[Any], list[Any]]:
    """The registry tables a SELECT reads itself, its WHERE and ON criteria, and its nested
    statements (those that may correlate to it, and those in its FROM list).

    The tables are those of every column the SELECT names outside nested statements, which
    is how SQLAlchemy derives the FROM list; computing that list with ``get_final_froms``
    compiles the statement, which costs about a millisecond.
    """
    tables: list[Any] = []
    criteria: list[Any] = [sel.whereclause]
    correlated: list[Any] = []
    uncorrelated: list[Any] = []
    for _target, onclause, *_rest in getattr(sel, "_setup_joins", ()):  # select().join()
        criteria.append(onclause)
    stack = list(sel.get_children())
    seen: set[int] = set()
    while stack:
        el = stack.pop()
        if id(el) in seen:
            continue
        seen.add(id(el))
        if isinstance(el, (SelectBase, TextClause)):
            correlated.append(el)
        elif isinstance(el, Join):
            criteria.append(el.onclause)
            stack.extend(el.get_children())
        elif _base(el) in PROJECT_TABLES:
            tables.append(el)
        elif isinstance(el, FromClause):
            uncorrelated.append(el)
        elif isinstance(el, ColumnClause) and el.table is not None:
            stack.append(el.table)
        else:
            stack.extend(el.get_children())
    return tables, criteria, correlated, uncorrelated


def _base(f: Any) -> Any:
    return f.element if isinstance(f, Alias) and isinstance(f.element, sa.Table) else f


def _conjuncts(expr: Any) -> Iterable[Any]:
    if expr is None:
        return
    if isinstance(expr, BooleanClauseList) and expr.operator is operators.and_:
        for c in expr.clauses:
            yield from _conjuncts(c)
    elif isinstance(expr, Grouping):
        yield from _conjuncts(expr.element)
    else:
        yield expr


def _scoped(criteria: list[Any], project: str) -> set[Any]:
    """The FROM objects restricted to ``project`` by a top-level AND term of ``criteria``."""
    ok: set[Any] = set()
    for expr in criteria:
        for c in _conjuncts(expr):
            if not isinstance(c, BinaryExpression) or c.operator is not operators.eq:
                continue
            for col, other in ((c.left, c.right), (c.right, c.left)):
                table = getattr(col, "table", None)
                if (getattr(col, "name", None) == "project" and table is not None
                        and isinstance(other, BindParameter)
                        and other.effective_value == project):
                    ok.add(table)
    return ok


_REFERENCE = re.compile(r'\b(?:FROM|JOIN|UPDATE)\s+"?([A-Za-z_]\w*)"?'
                        r'(?:\s+(?:AS\s+)?"?([A-Za-z_]\w*)"?)?', re.IGNORECASE)
_KEYWORDS = frozenset({"WHERE", "ON", "CROSS", "JOIN", "INNER", "LEFT", "RIGHT", "FULL",
                       "OUTER", "NATURAL", "USING", "GROUP", "ORDER", "HAVING", "LIMIT", "SET",
                       "UNION", "EXCEPT", "INTERSECT", "WINDOW", "AS"})


def _unscoped_text(statement: TextClause, project: str,
                   params: Mapping[str, Any]) -> list[str]:
    text = statement.text
    refs: Counter[str] = Counter()
    names: dict[str, str] = {}
    for m in _REFERENCE.finditer(text):
        table, alias = m.group(1), m.group(2)
        if table not in _BY_NAME:
            continue
        alias = alias if alias and alias.upper() not in _KEYWORDS else table
        refs[alias] += 1
        names[alias] = table
    if not refs:
        return []
    bound = dict(params)
    for key, bp in statement._bindparams.items():  # values given with .bindparams()
        if bp.value is not None:
            bound.setdefault(key, bp.value)
    if bound.get("project") != project:
        return sorted(set(names.values()))
    return sorted({names[a] for a, n in refs.items()
                   if len(re.findall(rf"\b{re.escape(a)}\.project\s*=\s*:project\b", text)) < n})
