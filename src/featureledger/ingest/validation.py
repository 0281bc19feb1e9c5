"""Validation at ingestion: every declared constraint, checked set-based.

Rules, each reported with its failure count and the first failing rows:

``dtype:<col>``
    the input value has no exact cast to the declared type (see :mod:`.casting`).
``not_null:<col>``
    a join key, the event or created timestamp, or a field declared ``nullable=False``,
    is null. NaN is a value, not a null.
``nan:<col>``
    a float field (or list of floats) that does not declare ``allow_nan=True`` holds NaN,
    +inf or -inf (any element, for a list). With ``allow_nan=True`` these are stored, read
    and served as they are.
``range:<col>``
    a value outside ``[min, max]`` (inclusive). Numbers compare exactly (a float32 value
    is compared as the double it is). NaN is neither inside nor outside a range, so it
    passes (the ``nan`` rule decides about it); ±inf are compared like any number when
    the field allows them.
``allowed_values:<col>``
    a value not among ``allowed_values``.
``regex:<col>``
    a string that the regex does not match *as a whole* (RE2 syntax, run by DuckDB).
``unique_key``
    more than one row with the same join keys and event time (and created time, when the
    view declares one) in this commit; every row of such a group fails, since nothing
    says which one is right. Rows with a null key are left to ``not_null``. Ingesting with
    ``duplicates="keep_last"`` says which one is: before validation, every row that a
    later one supersedes (:func:`superseded_rows`) is dropped and counted in the report,
    so this rule then has nothing to find.
``check:<name>``
    a row check of the view (one DuckDB SQL boolean expression over the row, accepted by
    :mod:`featureledger.offline.duckdb.guard`; an unsafe one refuses the ingestion) is false. A NULL result
    fails too, unless one of the nullable fields the expression names is null in that row
    (a missing optional value cannot break a cross-field rule); so ``min_fare <=
    max_fare`` passes when the nullable ``max_fare`` is null, and fails when a
    division by zero makes it NULL.

Nulls pass ``range``, ``allowed_values`` and ``regex``: nullability is its own rule; NaN
likewise passes ``range`` and ``allowed_values``, and non-finite floats that the field
refuses are reported under ``nan`` only. A value whose cast failed is reported under
``dtype`` only.

All rules run as one DuckDB aggregate over the Arrow table (no Python loop over rows);
only rules that failed are evaluated again to find their rows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from featureledger.errors import FeatureLedgerError, IngestionError, ValidationFailedError
from featureledger.ingest.casting import Conformed, StoredColumn, stored_columns
from featureledger.model.bounds import VALUE_CHARS, bounded_value, cut, first_line, shorten
from featureledger.model.types import FLOAT_DTYPES, NUMERIC_DTYPES
from featureledger.offline.duckdb.guard import check_expression
from featureledger.offline.duckdb.sandbox import sandboxed_connection
from featureledger.offline.engine import quote_ident, quote_string

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

    from featureledger.model.definitions import FeatureView

SAMPLE_ROWS = 5
ROW_COLUMN = "_row"
UNPARSED_SAMPLE = 20  # lines that could not be parsed, listed in a report


@dataclass
class RuleResult:
    """One rule's outcome: how many rows failed it and the first of them."""

    rule: str
    kind: str
    columns: list[str]
    detail: str
    failed: int = 0
    # {"row": n, "values": {...}}, and "truncated": {column: full size} for values that
    # were cut (a report never holds a value longer than the configured bound)
    sample: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "kind": self.kind, "columns": self.columns,
                "detail": self.detail, "failed": self.failed, "sample": self.sample}


@dataclass
class ValidationReport:
    """The outcome of validating one ingestion: per rule, counts and sample rows.

    Row numbers count the input rows as read (0-based), before any filter.

    >>> r = ValidationReport("strict", 3, 3, 0, [RuleResult("range:x", "range", ["x"], "0 <= x")])
    >>> r.ok, r.failures
    (True, [])
    """

    mode: str
    rows_checked: int
    rows_valid: int
    rows_rejected: int
    rules: list[RuleResult]
    rejected_path: str | None = None
    duplicates: str = "reject"
    # keep_last: rows dropped because a later row has the same keys and event time; they
    # are counted in rows_checked, neither valid nor rejected
    rows_superseded: int = 0
    superseded: list[dict[str, int]] = field(default_factory=list)  # {"row", "kept"}
    # drop_invalid: input lines that could not be parsed (a CSV line with a stray quote or
    # the wrong number of fields); they hold no values, so they are counted and listed
    # here (the first UNPARSED_SAMPLE, {"file", "line", "problem"}), not in rows_checked
    rows_unparsed: int = 0
    unparsed: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.rows_rejected == 0

    @property
    def failures(self) -> list[RuleResult]:
        return [r for r in self.rules if r.failed]

    def rule(self, name: str) -> RuleResult:
        for r in self.rules:
            if r.rule == name:
                return r
        raise IngestionError(
            f"the report has no rule {name!r}; its rules are: "
            f"{', '.join(r.rule for r in self.rules)}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "rows_checked": self.rows_checked,
                "rows_valid": self.rows_valid, "rows_rejected": self.rows_rejected,
                "rejected_path": self.rejected_path,
                "duplicates": self.duplicates, "rows_superseded": self.rows_superseded,
                "superseded": self.superseded, "rows_unparsed": self.rows_unparsed,
                "unparsed": self.unparsed,
                "rules": [r.to_dict() for r in self.rules]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ValidationReport:
        return cls(d["mode"], d["rows_checked"], d["rows_valid"], d["rows_rejected"],
                   [RuleResult(**r) for r in d["rules"]], d.get("rejected_path"),
                   d.get("duplicates", "reject"), d.get("rows_superseded", 0),
                   list(d.get("superseded", [])), d.get("rows_unparsed", 0),
                   list(d.get("unparsed", [])))

    def summary(self, max_samples: int = 3) -> str:
        """One line per failed rule: count and sample rows (values cut, with their size)."""
        lines = []
        for r in self.failures:
            samples = "; ".join(f"row {s['row']} {sample_text(s)}"
                                for s in r.sample[:max_samples])
            lines.append(f"  {r.rule} ({cut(r.detail)}): {r.failed} row(s), e.g. {samples}")
        if self.rows_unparsed:
            lines.append(f"  unparsed: {unparsed_text(self)}")
        return "\n".join(lines)

    def __str__(self) -> str:
        head = (f"validation ({self.mode}): {self.rows_valid} of {self.rows_checked} rows "
                f"valid, {self.rows_rejected} rejected")
        if self.rows_superseded:
            head += f", {self.rows_superseded} superseded by a later duplicate (keep_last)"
        if self.rows_unparsed:
            head += f", {self.rows_unparsed} input line(s) could not be parsed"
        return head if self.ok and not self.rows_unparsed else head + "\n" + self.summary()


def sample_text(sample: dict[str, Any]) -> str:
    """A sample row's values for a message: ``name='aaaa...' (10,485,760 chars), n=3``."""
    sizes = sample.get("truncated") or {}
    return ", ".join(f"{k}={v!r}" + (f" ({sizes[k]})" if k in sizes else "")
                     for k, v in sample["values"].items())


def unparsed_text(report: ValidationReport) -> str:
    """The lines a report says could not be parsed: count, then the first few."""
    shown = "; ".join(f"line {u['line']}: {u['problem']}" for u in report.unparsed[:5])
    more = report.rows_unparsed - min(5, len(report.unparsed))
    return (f"{report.rows_unparsed} input line(s) could not be parsed and were not read "
            f"({shown}{f'; {more} more' if more > 0 else ''})")


@dataclass
class ValidationOutcome:
    report: ValidationReport
    bad: np.ndarray | None  # mask over the checked rows; None when every row passed
    reasons: pa.Array | None  # list<string> of failed rules, one per bad row, in order


# -- SQL building -------------------------------------------------------------------------
_q = quote_ident
_s = quote_string


def _lit(value: Any, dtype: str) -> str:
    if dtype == "timestamp":
        return f"TIMESTAMPTZ {_s(str(value))}"
    if dtype == "date":
        return f"DATE {_s(str(value))}"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return _s(value)
    raise IngestionError(f"constraint value {value!r} cannot be checked; use a number or text")


def _judged(col: StoredColumn) -> str:
    """SQL: TRUE where a value is for the value rules (range, allowed values) to judge.

    NaN is never in or out of a range; it is the ``nan`` rule's to judge, as ±inf is
    when the field refuses them (so each bad value is reported under one rule).
    """
    c = _q(col.name)
    if col.dtype not in FLOAT_DTYPES:
        return f"{c} IS NOT NULL"
    if col.allow_nan:
        return f"{c} IS NOT NULL AND NOT isnan({c})"
    return f"{c} IS NOT NULL AND isfinite({c})"


def _nan_pred(col: StoredColumn) -> str:
    # coalesce: a null value (or list) is not NaN, and every predicate here must be TRUE
    # or FALSE, never NULL
    c = _q(col.name)
    if col.dtype.startswith("list<"):
        return f"coalesce(len(list_filter({c}, lambda x: NOT isfinite(x))) > 0, FALSE)"
    return f"coalesce(NOT isfinite({c}), FALSE)"


def _range_pred(col: StoredColumn, lo: Any, hi: Any) -> str:
    c = _q(col.name)
    if col.dtype in NUMERIC_DTYPES and (isinstance(lo, float) or isinstance(hi, float)
                                        or col.dtype.startswith("float")):
        c = f"CAST({c} AS DOUBLE)"
    parts = []
    if lo is not None:
        parts.append(f"{c} < {_lit(lo, col.dtype)}")
    if hi is not None:
        parts.append(f"{c} > {_lit(hi, col.dtype)}")
    return f"({_judged(col)} AND ({' OR '.join(parts)}))"


def row_check(view: FeatureView, name: str, expr: str,
              error: type[FeatureLedgerError] = IngestionError) -> Any:
    """A row check of ``view`` through the SQL guard: one expression over the view's
    stored columns (an :class:`~featureledger.offline.duckdb.guard.Expression`), else
    ``error`` saying what is wrong."""
    return check_expression(expr, f"feature view {view.name!r}, row check {name!r}:", error,
                            columns=[c.name for c in stored_columns(view)])


@dataclass
class _Rule:
    result: RuleResult
    pred: str | None = None  # SQL, TRUE where the row fails
    mask: np.ndarray | None = None  # or a precomputed mask


def _build_rules(view: FeatureView, conformed: Conformed) -> list[_Rule]:
    cols = stored_columns(view)
    rules: list[_Rule] = []
    for c in cols:
        if c.name in conformed.cast_failures:
            rules.append(_Rule(RuleResult(f"dtype:{c.name}", "dtype", [c.name],
                                          conformed.cast_notes[c.name]),
                               mask=conformed.cast_failures[c.name]))
    for c in cols:
        if c.nullable:
            continue
        pred = f"{_q(c.name)} IS NULL"
        if c.name in conformed.cast_failures:
            pred += f" AND NOT {_q('_castfail_' + c.name)}"
        rules.append(_Rule(RuleResult(f"not_null:{c.name}", "not_null", [c.name],
                                      f"{c.name} is not null"), pred=pred))
    by_name = {c.name: c for c in cols}
    for f in view.fields:
        c = by_name[f.name]
        if f.dtype in FLOAT_DTYPES and not f.allow_nan:
            rules.append(_Rule(RuleResult(
                f"nan:{f.name}", "nan", [f.name],
                "NaN not allowed; set allow_nan=True or clean the value (±inf likewise)"),
                pred=_nan_pred(c)))
        if f.min is not None or f.max is not None:
            detail = " <= ".join(x for x in (None if f.min is None else repr(f.min), f.name,
                                             None if f.max is None else repr(f.max)) if x)
            rules.append(_Rule(RuleResult(f"range:{f.name}", "range", [f.name], detail),
                               pred=_range_pred(c, f.min, f.max)))
        if f.allowed_values is not None:
            lits = ", ".join(_lit(v, c.dtype) for v in f.allowed_values)
            rules.append(_Rule(
                RuleResult(f"allowed_values:{f.name}", "allowed_values", [f.name],
                           f"{f.name} in {json.dumps(f.allowed_values, default=str)}"),
                pred=f"({_judged(c)} AND {_q(f.name)} NOT IN ({lits}))"))
        if f.regex is not None:
            rules.append(_Rule(
                RuleResult(f"regex:{f.name}", "regex", [f.name], f"{f.name} matches {f.regex}"),
                pred=f"({_q(f.name)} IS NOT NULL AND NOT regexp_full_match({_q(f.name)}, "
                     f"{_s(f.regex)}))"))
    names = [c.name for c in cols]
    nullable = {c.name for c in cols if c.nullable}
    for chk in view.checks:
        expr = row_check(view, chk.name, chk.expr)
        refs = list(expr.columns)
        opt = [r for r in refs if r in nullable]
        rules.append(_Rule(RuleResult(f"check:{chk.name}", "check", refs or names, chk.expr),
                           pred=check_predicate(expr.sql, [_q(r) for r in opt])))
    return rules


def check_predicate(expr_sql: str, optional: list[str]) -> str:
    """SQL: TRUE where a row fails a check. A NULL result fails, unless one of the
    nullable columns the check names (``optional``, quoted) is null in that row."""
    null_ok = " OR ".join(f"{c} IS NULL" for c in optional) if optional else "FALSE"
    return (f"(CASE WHEN {expr_sql} THEN FALSE WHEN {expr_sql} IS NULL "
            f"THEN NOT ({null_ok}) ELSE TRUE END)")


def _duplicate_mask(con: duckdb.DuckDBPyConnection, key_cols: list[str],
                    row_numbers: np.ndarray) -> np.ndarray | None:
    """Rows sharing (keys, event time) with another row; hashes first, exact on a hit."""
    keys = ", ".join(_q(k) for k in key_cols)
    not_null = " AND ".join(f"{_q(k)} IS NOT NULL" for k in key_cols)
    hashes = con.sql(f"SELECT hash({keys}) FROM _v WHERE {not_null}").to_arrow_table()
    h = np.sort(hashes.column(0).to_numpy())
    if h.size < 2 or not np.any(h[1:] == h[:-1]):
        return None  # distinct hashes: distinct keys, no exact pass needed
    rows = con.sql(
        f"SELECT {ROW_COLUMN} FROM (SELECT {ROW_COLUMN}, count(*) OVER (PARTITION BY {keys}) "
        f"AS n FROM _v WHERE {not_null}) WHERE n > 1"
    ).to_arrow_table()
    return _positions_mask(row_numbers, rows.column(0).to_numpy())


def superseded_rows(table: pa.Table, view: FeatureView, row_numbers: np.ndarray
                    ) -> tuple[np.ndarray | None, list[dict[str, int]]]:
    """``duplicates="keep_last"``: the rows that another row with the same keys and event
    time supersedes (a mask over ``table``, None when there are none), and for the first
    of them, which row was kept (input row numbers).

    Within a group the kept row has the latest created timestamp (when the view declares
    one; a missing one counts as earliest), then the latest input position. Rows with a
    null key or event time are never grouped: ``not_null`` judges them.
    """
    import pyarrow as pa

    key_cols = [*view.join_keys, view.timestamp_field]
    order = [f"{_q(view.created_timestamp_field)} DESC NULLS LAST"] \
        if view.created_timestamp_field else []
    order.append(f"{ROW_COLUMN} DESC")
    con = sandboxed_connection()
    try:
        con.register("_v", table.append_column(ROW_COLUMN, pa.array(row_numbers, pa.int64())))
        if _duplicate_mask(con, key_cols, row_numbers) is None:
            return None, []
        keys = ", ".join(_q(k) for k in key_cols)
        not_null = " AND ".join(f"{_q(k)} IS NOT NULL" for k in key_cols)
        window = f"OVER (PARTITION BY {keys} ORDER BY {', '.join(order)})"
        lost = con.sql(
            f"SELECT {ROW_COLUMN}, kept FROM (SELECT {ROW_COLUMN}, row_number() {window} AS n, "
            f"first_value({ROW_COLUMN}) {window} AS kept FROM _v WHERE {not_null}) "
            f"WHERE n > 1 ORDER BY {ROW_COLUMN}"
        ).to_arrow_table()
    finally:
        con.close()
    rows = lost.column(0).to_numpy()
    sample = [{"row": int(r), "kept": int(k)} for r, k in
              zip(rows[:SAMPLE_ROWS], lost.column(1).to_numpy()[:SAMPLE_ROWS], strict=True)]
    return _positions_mask(row_numbers, rows), sample


def _positions_mask(row_numbers: np.ndarray, rows: np.ndarray) -> np.ndarray | None:
    """A mask over the checked rows from the input row numbers of some of them."""
    if rows.size == 0:
        return None
    mask = np.zeros(row_numbers.size, dtype=bool)
    mask[np.searchsorted(row_numbers, rows)] = True  # row_numbers is increasing
    return mask


def _json_value(v: Any) -> Any:
    import datetime as dt
    import math

    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, (dt.datetime, dt.date)):
        return v.isoformat()
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, list):
        return [_json_value(x) for x in v]
    return v


def _sample(table: pa.Table, conformed: pa.Table, rows: np.ndarray, positions: np.ndarray,
            columns: list[str], value_chars: int) -> list[dict[str, Any]]:
    out = []
    for pos in positions:
        values, truncated = {}, {}
        for c in columns:
            src = table if c in table.column_names else conformed
            values[c], size = bounded_value(_json_value(src.column(c)[int(pos)].as_py()),
                                            value_chars)
            if size is not None:
                truncated[c] = size
        row: dict[str, Any] = {"row": int(rows[pos]), "values": values}
        if truncated:
            row["truncated"] = truncated
        out.append(row)
    return out


def validate(conformed: Conformed, view: FeatureView, *, raw: pa.Table,
             row_numbers: np.ndarray, mode: str = "strict",
             sample_rows: int = SAMPLE_ROWS, value_chars: int = VALUE_CHARS
             ) -> ValidationOutcome:
    """Check ``conformed.table`` against ``view``'s constraints.

    ``raw`` is the input as mapped and filtered (its values appear in samples, so a
    value whose cast failed is shown as given, cut to ``value_chars`` characters);
    ``row_numbers`` the input row number of each row. The row checks pass the SQL guard
    and every rule runs on the sandboxed connection over nothing but these rows.
    """
    import pyarrow as pa

    table = conformed.table
    n = table.num_rows
    rules = _build_rules(view, conformed)
    checked = table.append_column(ROW_COLUMN, pa.array(row_numbers, pa.int64()))
    for name, mask in conformed.cast_failures.items():
        checked = checked.append_column(f"_castfail_{name}", pa.array(mask))
    con = sandboxed_connection()
    try:
        con.register("_v", checked)
        sql_rules = [r for r in rules if r.pred is not None]
        if sql_rules and n:
            counts = _count(con, sql_rules)
            for r, cnt in zip(sql_rules, counts, strict=True):
                r.result.failed = int(cnt or 0)  # count_if over only NULLs is NULL
                if cnt:
                    ids = con.sql(f"SELECT {ROW_COLUMN} FROM _v WHERE {r.pred}").to_arrow_table()
                    r.mask = _positions_mask(row_numbers, ids.column(0).to_numpy())
        key_cols = [*view.join_keys, view.timestamp_field]
        if view.created_timestamp_field:
            key_cols.append(view.created_timestamp_field)
        dup = RuleResult("unique_key", "unique", key_cols,
                         f"one row per ({', '.join(key_cols)})")
        rules.append(_Rule(dup, mask=_duplicate_mask(con, key_cols, row_numbers) if n else None))
    finally:
        con.close()
    failing = [r for r in rules if r.mask is not None and r.mask.any()]
    for r in rules:
        if r.mask is not None:
            r.result.failed = int(r.mask.sum())
            pos = np.flatnonzero(r.mask)[:sample_rows]
            r.result.sample = _sample(raw, table, row_numbers, pos, r.result.columns,
                                      value_chars)
    bad: np.ndarray | None = None
    reasons = None
    if failing:
        matrix = np.column_stack([r.mask for r in failing if r.mask is not None])
        bad = np.asarray(matrix.any(axis=1), dtype=bool)
        sub = matrix[bad]
        names = np.array([r.result.rule for r in failing], dtype=object)
        offsets = np.concatenate([[0], np.cumsum(sub.sum(axis=1))]).astype(np.int32)
        values = pa.array(names[np.nonzero(sub)[1]], pa.string())
        reasons = pa.ListArray.from_arrays(pa.array(offsets), values)
    n_bad = int(bad.sum()) if bad is not None else 0
    report = ValidationReport(mode, n, n - n_bad, n_bad, [r.result for r in rules])
    return ValidationOutcome(report, bad, reasons)


def _count(con: duckdb.DuckDBPyConnection, rules: list[_Rule]) -> list[int]:
    import duckdb

    sql = "SELECT " + ", ".join(f"count_if({r.pred})" for r in rules) + " FROM _v"
    try:
        return list(con.sql(sql).fetchall()[0])
    except duckdb.Error:
        pass
    for r in rules:  # find the rule that does not run, and say which
        try:
            # over the rows, not LIMIT 0: a cast, a regex or error() fails only on data
            con.sql(f"SELECT count_if({r.pred}) FROM _v").fetchall()
        except duckdb.Error as exc:
            raise IngestionError(
                f"rule {r.result.rule} ({shorten(r.result.detail, 120)}) cannot be evaluated: "
                f"{first_line(exc)}. Fix the view definition (row checks are "
                "DuckDB SQL over the view's columns; regexes use RE2 syntax)."
            ) from None
    raise IngestionError("validation query failed; run with --debug and report it")


def conform_strict(view: FeatureView, table: pa.Table, what: str,
                   fix: str = "Fix the rows to match the view's schema and checks.") -> pa.Table:
    """``table`` shaped to ``view``'s stored columns and validated strictly: any invalid row
    raises ValidationFailedError naming ``what`` (nothing is written). Push and migrations
    use it; ingestion, which can also drop invalid rows, calls the steps itself."""
    import numpy as np

    from featureledger.ingest.casting import conform

    conformed = conform(table, view)
    outcome = validate(conformed, view, raw=table,
                       row_numbers=np.arange(table.num_rows, dtype=np.int64), mode="strict")
    if outcome.bad is not None:
        raise ValidationFailedError(
            f"{what} rejected; nothing was written:\n{outcome.report.summary()}\n{fix}",
            outcome.report)
    return conformed.table
