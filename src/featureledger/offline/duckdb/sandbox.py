"""User SQL on DuckDB, in a sandbox: filters, row checks and migrations.

One connection kind for all of it (no file system or network access, no extensions
installed or loaded, configuration locked; it reads only the relations registered on it)
and one parser-based guard (:mod:`featureledger.offline.duckdb.guard`) that every piece
of user SQL passes before it runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from featureledger.errors import RetrievalError

if TYPE_CHECKING:
    import pyarrow as pa


class SandboxError(Exception):
    """DuckDB refused or failed a piece of user SQL; ``first_line`` says why (callers
    wrap it in the error that names what the SQL was for)."""

    def __init__(self, first_line: str) -> None:
        super().__init__(first_line)
        self.first_line = first_line


def _first_line(exc: BaseException) -> str:
    from featureledger.model.bounds import first_line

    return first_line(exc)


def query(sql: str, relations: Mapping[str, pa.Table]) -> pa.Table:
    """Run ``sql`` (already checked by the guard) on a fresh sandbox over ``relations``."""
    import duckdb

    con = sandboxed_connection()
    try:
        for name, table in relations.items():
            con.register(name, table)
        try:
            return con.sql(sql).to_arrow_table()
        except duckdb.Error as exc:
            raise SandboxError(_first_line(exc)) from None
    finally:
        con.close()


def result_types(sql: str, relations: Mapping[str, pa.Table]) -> list[str]:
    """The DuckDB types of ``sql``'s result columns (binding it without running it)."""
    import duckdb

    con = sandboxed_connection()
    try:
        for name, table in relations.items():
            con.register(name, table)
        try:
            return [str(t) for t in con.sql(sql).types]
        except duckdb.Error as exc:
            raise SandboxError(_first_line(exc)) from None
    finally:
        con.close()


def sandboxed_connection() -> Any:
    """A DuckDB connection for user SQL: no file system or network access, no extensions
    installed or loaded, configuration locked. It reads only the relations registered on
    it (Arrow tables)."""
    import duckdb

    con = duckdb.connect(":memory:", config={
        "enable_external_access": False,
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
    })
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET lock_configuration = true")
    return con


def single_select(sql: str, what: str) -> str:
    """``sql`` if it is exactly one SELECT statement; RetrievalError naming what is wrong."""
    import duckdb

    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise RetrievalError(f"{what} does not parse: {str(exc).splitlines()[0]}. Write one "
                             "SELECT statement in DuckDB's SQL dialect") from None
    if len(statements) != 1:
        raise RetrievalError(f"{what} holds {len(statements)} statements; write exactly one "
                             "SELECT statement")
    if statements[0].type != duckdb.StatementType.SELECT:
        raise RetrievalError(f"{what} is a {statements[0].type.name} statement; only a "
                             "SELECT is allowed")
    return sql
