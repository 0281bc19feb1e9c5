"""Fuzzing the expression guard: random SQL fragments, built from the pieces attacks are
made of, are either refused or, once accepted, evaluate without touching the file system.

An accepted expression is run twice: on the sandbox, as featureledger runs it, and on a
connection with external access *on*, so the guard alone must keep the file system out of
reach (the sandbox is the second wall, not the one under test). The canary's access time
and the target folder are watched.
"""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featureledger.errors import IngestionError
from featureledger.offline.duckdb.guard import check_expression
from featureledger.offline.duckdb.sandbox import sandboxed_connection

SECRET = "FUZZ-CANARY-51c"


@pytest.fixture(scope="module")
def place(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fuzz")
    (root / "canary.csv").write_text(f"a,b\n{SECRET},1\n")
    return root


def _pieces(root: Path) -> list[str]:
    canary, target = (root / "canary.csv").as_posix(), (root / "made").as_posix()
    return [
        "n", "city", "\"n\"", "1", "0.5", "'ams'", "NULL", "TRUE", "FALSE", "x",
        ">", "<=", "=", "<>", "+", "*", "||", "AND", "OR", "NOT", "IS NULL", "IN", "LIKE",
        "(", ")", ",", ";", "--", "/*", "*/", "'", "\"",
        "SELECT", "FROM", "WHERE", "WITH", "UNION", "AS", "CASE WHEN", "THEN", "ELSE", "END",
        "lower(city)", "len(city)", "coalesce(n, 0)", "CAST(n AS VARCHAR)", "n::INT",
        "list_filter([1, 2], lambda v: v > 1)", "x -> x",
        f"read_csv('{canary}')", f"read_text('{canary}')", f"'{canary}'",
        f"glob('{root.as_posix()}/*')", f"(SELECT * FROM read_csv('{canary}'))",
        f"COPY (SELECT 1) TO '{target}.csv'", f"ATTACH '{target}.db'", "INSTALL httpfs",
        "LOAD httpfs", "SET enable_external_access = true", "PRAGMA version",
        "current_setting('threads')", "getvariable('v')", "query('SELECT 1')",
        "sum(n)", "row_number() OVER ()", "*", "$1", "?", "#1", "main.lower(city)",
        "_in.n", "system.main.duckdb_settings()", "duckdb_settings", "EXISTS",
    ]


def _reaching(root: Path) -> list[str]:
    """Well-formed expressions that read or write files when nothing stops them."""
    canary, target = (root / "canary.csv").as_posix(), (root / "made").as_posix()
    return [
        f"(SELECT count(*) FROM read_csv('{canary}'))",
        f"(SELECT count(*) FROM '{canary}')",
        f"(SELECT max(content) FROM read_text('{canary}'))",
        f"(SELECT max(b) FROM read_csv_auto('{canary}'))",
        f"EXISTS (SELECT * FROM read_csv('{canary}'))",
        f"n IN (SELECT b FROM read_csv('{canary}'))",
        f"TRUE); COPY (SELECT 1) TO '{target}.csv'; SELECT (TRUE",
        f"TRUE) FROM read_csv('{canary}') WHERE (TRUE",
    ]


def expressions(root: Path) -> st.SearchStrategy[str]:
    """Expressions from a small grammar whose leaves include the reaching ones, so many
    candidates parse and some would reach the files if the guard let them through."""
    leaf = st.sampled_from(["n", "city", "1", "'ams'", "NULL", "TRUE", *_reaching(root)])
    return st.recursive(leaf, lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from([" > ", " = ", " + ", " AND ", " OR ", " || "]),
                  inner).map("".join),
        inner.map(lambda e: f"({e})"),
        inner.map(lambda e: f"NOT {e}"),
        inner.map(lambda e: f"coalesce({e}, 0)"),
        inner.map(lambda e: f"CASE WHEN {e} THEN 1 ELSE 0 END"),
    ), max_leaves=6)


def fragments(root: Path) -> st.SearchStrategy[str]:
    token = st.sampled_from(_pieces(root)) | st.text(
        alphabet="abn1 ()';,\"-*/<>=|", min_size=1, max_size=6)
    garbage = st.lists(token, min_size=1, max_size=12).map(" ".join)
    # well-formed, garbage, and well-formed with garbage around it
    return st.one_of(expressions(root), garbage,
                     st.tuples(garbage, expressions(root), garbage).map(" ".join))


ROWS = pa.table({"n": pa.array([1, 2, None], pa.int64()),
                 "city": pa.array(["ams", None, "ber"], pa.string())})


def _open_connection() -> duckdb.DuckDBPyConnection:
    # external access on: only the guard stands between the expression and the files
    return duckdb.connect(":memory:", config={"autoinstall_known_extensions": False,
                                              "autoload_known_extensions": False})


def _atime(path: Path) -> int:
    return path.stat().st_atime_ns


def test_fuzz_the_expression_guard(place) -> None:
    canary = place / "canary.csv"
    accepted: list[str] = []

    @given(text=fragments(place))
    @settings(max_examples=400, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def run(text: str) -> None:
        st_ = canary.stat()
        os.utime(canary, ns=(st_.st_mtime_ns - 10**12, st_.st_mtime_ns))
        before = _atime(canary)
        try:
            expr = check_expression(text, "filter", IngestionError, columns=["n", "city"])
        except IngestionError as exc:
            assert "is refused" in str(exc) or "names column" in str(exc)
            return
        accepted.append(text)
        sql = f"SELECT count(*) FROM _in WHERE {expr.sql}"
        assert len(duckdb.extract_statements(sql)) == 1
        for con in (sandboxed_connection(), _open_connection()):
            try:
                con.register("_in", ROWS)
                try:
                    con.sql(sql).fetchall()
                except duckdb.Error as exc:  # a type or runtime error is fine...
                    assert SECRET not in str(exc)  # ...if it shows nothing of the file
            finally:
                con.close()
        assert sorted(p.name for p in place.iterdir()) == ["canary.csv"], text
        assert _atime(canary) == before, f"the canary was read through {text!r}"

    run()
    # the corpus is not trivially refused: some fragments do pass and run
    assert accepted


@pytest.mark.parametrize("text", [
    "n > 1", "city = 'ams' OR n IS NULL", "coalesce(n, 0) + 1 > 1", "lower(city) LIKE 'a%'",
    "list_filter([1, 2], lambda v: v > 1) = [2]", "CASE WHEN n > 1 THEN TRUE ELSE FALSE END",
    "n BETWEEN 0 AND 5 -- trailing comment", "\"n\" IN (1, 2)",
])
def test_ordinary_expressions_are_accepted(text) -> None:
    expr = check_expression(text, "filter", IngestionError, columns=["n", "city"])
    con = sandboxed_connection()
    try:
        con.register("_in", ROWS)
        con.sql(f"SELECT count(*) FROM _in WHERE {expr.sql}").fetchall()
    finally:
        con.close()
