"""Statistics profile of a commit's rows, per column, computed set-based.

Every column gets ``count`` (rows), ``nulls`` and ``distinct_estimate`` (DuckDB's
HyperLogLog ``approx_count_distinct``, one query for all columns). Then by type:

* numbers: ``min``, ``max``, ``mean``, ``std`` (sample, ddof=1), ``nans`` and
  ``quantiles`` p01, p05, p25, p50, p75, p95, p99 (linear interpolation, as
  ``numpy.quantile`` and DuckDB's ``quantile_cont``). NaN and null values are left out of
  every statistic but their own count. Quantiles are exact up to
  :data:`QUANTILE_EXACT_LIMIT` values; above that they come from a uniform random sample
  of that many values drawn with a fixed seed (the same data gives the same profile;
  the rank error is about 0.3 percentage points at p50), and ``quantiles_exact`` says
  which;
* text: ``min``, ``max`` (byte order) and ``top_k``: the :data:`TOP_K` most frequent
  values with their counts (ties by value). Each of these strings is cut to
  ``string_chars`` characters (:data:`STRING_CHARS` by default; ``bounds.profile_chars``
  in featureledger.yaml) and then ends in ``...``; ``min_chars`` / ``max_chars`` (and
  ``chars`` in a ``top_k`` entry) give the full length of a value that was cut, so a
  profile stays small whatever the data holds;
* timestamps and dates: ``min``, ``max`` (ISO 8601);
* booleans: ``true`` and ``false`` counts.

For drift (:mod:`featureledger.quality.sketches`), numbers also carry a t-digest
quantile sketch (``tdigest``, ``tdigest_n``) and text the bounded value counts ``freq`` / ``freq_other``:
summaries that merge across commits, so drift is computed from stored profiles.

The result is a JSON-ready dict (non-finite numbers become text such as ``"inf"``).

>>> import pyarrow as pa
>>> p = profile_table(pa.table({"x": [1.0, 2.0, 3.0, None]}))
>>> c = p["columns"]["x"]
>>> c["count"], c["nulls"], c["min"], c["max"], c["mean"], c["quantiles"]["p50"]
(4, 1, 1.0, 3.0, 2.0, 2.0)
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Any

import numpy as np

from featureledger.quality.sketches import (
    FREQ_K,
    SKETCH_VERSION,
    categorical_column_summary,
    numeric_column_summary,
)

if TYPE_CHECKING:
    import pyarrow as pa

QUANTILES = {"p01": 0.01, "p05": 0.05, "p25": 0.25, "p50": 0.5, "p75": 0.75,
             "p95": 0.95, "p99": 0.99}
QUANTILE_EXACT_LIMIT = 100_000
TOP_K = 10
SAMPLE_SEED = 0
STRING_CHARS = 200


@functools.lru_cache(maxsize=8)
def _sample_positions(n: int) -> np.ndarray:
    """QUANTILE_EXACT_LIMIT positions drawn uniformly from range(n), seeded, sorted (the
    gather then walks memory forwards)."""
    rng = np.random.default_rng(SAMPLE_SEED)
    return np.sort(rng.integers(0, n, QUANTILE_EXACT_LIMIT))


def _num(v: Any) -> Any:
    if v is None:
        return None
    f = float(v)
    if not math.isfinite(f):
        return str(f)
    return int(v) if isinstance(v, (int, np.integer)) and not isinstance(v, bool) else f


def _numeric(arr: pa.ChunkedArray, out: dict[str, Any]) -> None:
    import pyarrow as pa
    import pyarrow.compute as pc

    values = arr
    mean = None
    if pa.types.is_floating(arr.type):
        nans = 0
        mean = pc.mean(arr).as_py()  # NaN exactly when a NaN (or inf - inf) is present
        if mean is not None and math.isnan(mean):
            nan = pc.fill_null(pc.is_nan(arr), False)
            nans = int(pc.sum(nan).as_py() or 0)
            values = arr.filter(pc.invert(nan))
            mean = None
        out["nans"] = nans
    if values.null_count:
        values = values.drop_null()
    if len(values) == 0:
        out.update(min=None, max=None, mean=None, std=None,
                   quantiles=dict.fromkeys(QUANTILES), quantiles_exact=True)
        return
    std = pc.stddev(values, ddof=1).as_py() if len(values) > 1 else None
    if mean is None:
        mean = pc.mean(values).as_py()
    # no nulls and no NaN are left, so numpy's SIMD min/max apply (faster than Arrow's)
    flat = values.to_numpy() if values.num_chunks == 1 else values.combine_chunks().to_numpy()
    out.update(min=_num(flat.min().item()), max=_num(flat.max().item()),
               mean=_num(mean), std=_num(std))
    exact = flat.size <= QUANTILE_EXACT_LIMIT
    if not exact:
        flat = flat[_sample_positions(flat.size)]
    finite = isinstance(out["min"], (int, float)) and isinstance(out["max"], (int, float))
    out.update(numeric_column_summary(flat if finite else flat[np.isfinite(flat)]))
    with np.errstate(invalid="ignore"):  # inf - inf while interpolating gives NaN, no warning
        qs = np.quantile(flat.astype(np.float64, copy=False), list(QUANTILES.values()))
    out["quantiles"] = {k: _num(q) for k, q in zip(QUANTILES, qs, strict=True)}
    out["quantiles_exact"] = exact


def _text(arr: pa.ChunkedArray, out: dict[str, Any], limit: int) -> None:
    import pyarrow as pa
    import pyarrow.compute as pc

    values = arr.drop_null() if arr.null_count else arr
    if len(values) == 0:
        out.update(min=None, max=None, top_k=[], freq={}, freq_other=0)
        return
    mm = pc.min_max(values)
    for key in ("min", "max"):
        out[key], size = _bounded(mm[key].as_py(), limit)
        if size is not None:
            out[f"{key}_chars"] = size
    counts = pc.value_counts(values)
    vals, cnts = counts.field("values"), counts.field("counts")
    order = pc.sort_indices(
        pa.table({"v": vals, "c": cnts}),
        sort_keys=[("c", "descending"), ("v", "ascending")],
    )[:FREQ_K]
    top_vals = vals.take(order).to_pylist()
    top_cnts = cnts.take(order).to_pylist()
    freq = categorical_column_summary(top_vals, top_cnts, max_chars=limit)
    freq["freq_other"] += len(values) - sum(top_cnts)
    out.update(freq)
    out["top_k"] = []
    for value, count in zip(top_vals[:TOP_K], top_cnts[:TOP_K], strict=True):
        shown, size = _bounded(value, limit)
        entry = {"value": shown, "count": count}
        if size is not None:
            entry["chars"] = size
        out["top_k"].append(entry)


def _bounded(value: str, limit: int) -> tuple[str, int | None]:
    """``value`` cut to ``limit`` characters (ending in ``...``) and its full length when
    it was cut, else None."""
    return (value, None) if len(value) <= limit else (value[:limit] + "...", len(value))


def _temporal(arr: pa.ChunkedArray, out: dict[str, Any]) -> None:
    import pyarrow.compute as pc

    mm = pc.min_max(arr)
    lo, hi = mm["min"].as_py(), mm["max"].as_py()
    out.update(min=lo.isoformat() if lo is not None else None,
               max=hi.isoformat() if hi is not None else None)


def _distinct(table: pa.Table, names: list[str]) -> dict[str, int]:
    from featureledger.offline.duckdb.sandbox import sandboxed_connection
    from featureledger.offline.engine import quote_ident

    if not names or table.num_rows == 0:
        return dict.fromkeys(names, 0)
    con = sandboxed_connection()
    try:
        con.register("_p", table.select(names))
        sql = "SELECT " + ", ".join(
            f"approx_count_distinct({quote_ident(n)})" for n in names) + " FROM _p"
        row = con.sql(sql).fetchall()[0]
    finally:
        con.close()
    return {n: int(v) for n, v in zip(names, row, strict=True)}


def profile_table(table: pa.Table, columns: list[str] | None = None, *,
                  string_chars: int = STRING_CHARS) -> dict[str, Any]:
    """The statistics profile of ``table`` (of ``columns``, default all), JSON-ready;
    strings in it are cut to ``string_chars`` characters."""
    from concurrent.futures import ThreadPoolExecutor

    import pyarrow as pa

    names = columns if columns is not None else table.column_names
    with ThreadPoolExecutor(max_workers=2) as pool:  # Arrow and numpy kernels drop the GIL
        distinct = pool.submit(_distinct, table, [
            n for n in names if not (pa.types.is_binary(table.schema.field(n).type)
                                     or pa.types.is_nested(table.schema.field(n).type))])
        cols = dict(zip(names, pool.map(lambda n: _column(table.column(n), string_chars),
                                        names), strict=True))
    for name, d in distinct.result().items():
        cols[name]["distinct_estimate"] = d
    return {"rows": table.num_rows, "columns": cols,
            "quantile_exact_limit": QUANTILE_EXACT_LIMIT, "sample_seed": SAMPLE_SEED,
            "sketch_version": SKETCH_VERSION}


def _column(arr: pa.ChunkedArray, string_chars: int) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.compute as pc

    t = arr.type
    col: dict[str, Any] = {"type": str(t), "count": len(arr), "nulls": arr.null_count}
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        _numeric(arr, col)
    elif pa.types.is_string(t) or pa.types.is_large_string(t):
        _text(arr, col, string_chars)
    elif pa.types.is_timestamp(t) or pa.types.is_date(t):
        _temporal(arr, col)
    elif pa.types.is_boolean(t):
        trues = int(pc.sum(arr).as_py() or 0)
        col.update(true=trues, false=len(arr) - arr.null_count - trues)
    return col
