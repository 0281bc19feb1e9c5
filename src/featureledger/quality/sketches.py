"""Mergeable distribution summaries: what a commit profile keeps so that drift can be
computed from stored profiles, without reading the data again.

Per column, next to the plain statistics of :mod:`featureledger.ingest.profile`:

* numbers: a t-digest quantile sketch (Apache DataSketches ``tdigest_double``,
  compression :data:`TDIGEST_K`), serialised as base64 under ``tdigest``, built from the
  column's values, or, above :data:`SKETCH_EXACT_LIMIT` values, from the profile's seeded
  uniform sample of that many values (a sample's rank error, about 0.2%, is below the
  sketch's own). ``tdigest_n`` is how many values went in; the column's ``count`` minus
  its ``nulls`` and ``nans`` is how many the sketch stands for. The t-digest rather than
  DataSketches' KLL: KLL compacts at random (the Python binding takes no seed), so the
  same rows would give a different profile each time, and a profile is deterministic;
  the t-digest is deterministic, mergeable, faster to build and more precise in the tails
  (a ``kll`` sketch in a stored profile is read too);
* categories (text) and booleans: ``freq``, the counts of the :data:`FREQ_K` most frequent
  values, and ``freq_other``, the count of every other value, so a profile stays bounded
  whatever the cardinality.

Summaries merge: :class:`NumericSummary` is a mixture of sketches, each weighted by the
number of values it stands for (the CDF of a union of commits is the weighted mean of
their CDFs), and :class:`CategoricalSummary` adds counts. Profiles written before sketches
existed are still read: their seven quantiles and min/max give a piecewise-linear CDF
(``approximate`` is then True).

>>> import numpy as np
>>> col = numeric_column_summary(np.arange(1000, dtype=np.float64))
>>> s = NumericSummary.from_profile({"count": 1000, "nulls": 0, "nans": 0, "mean": 499.5,
...                                  "std": 288.8, **col})
>>> round(float(s.cdf(np.array([499.5]))[0]), 2)
0.5
"""

from __future__ import annotations

import base64
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

TDIGEST_K = 200
SKETCH_EXACT_LIMIT = 100_000
FREQ_K = 100
FREQ_VALUE_CHARS = 200  # longer values are counted in freq_other
SKETCH_VERSION = 1
_GRID = np.linspace(0.0, 1.0, 101)


def _sketch_class(kind: str) -> Any:
    import datasketches

    return datasketches.tdigest_double if kind == "tdigest" else datasketches.kll_doubles_sketch


def numeric_column_summary(values: np.ndarray) -> dict[str, Any]:
    """``tdigest`` (base64) and ``tdigest_n`` for finite, non-null ``values`` (any
    numeric dtype)."""
    sketch = _sketch_class("tdigest")(TDIGEST_K)
    if values.size:
        arr = np.ascontiguousarray(values, dtype=np.float64)
        if not arr.flags.writeable:  # the binding takes writable arrays only
            arr = arr.copy()
        sketch.update(arr)
    return {"tdigest": base64.b64encode(sketch.serialize()).decode("ascii"),
            "tdigest_n": int(values.size)}


def categorical_column_summary(values: Sequence[Any], counts: Sequence[int], *,
                               max_chars: int = FREQ_VALUE_CHARS) -> dict[str, Any]:
    """``freq`` (the :data:`FREQ_K` most frequent values, ties by value) and
    ``freq_other`` from parallel lists of distinct values and their counts; a value longer
    than ``max_chars`` is counted in ``freq_other`` (a profile stays small)."""
    pairs = [(v, int(c)) for v, c in zip(values, counts, strict=True)
             if not (isinstance(v, str) and len(v) > max_chars)]
    pairs.sort(key=lambda p: (-p[1], str(p[0])))
    kept = pairs[:FREQ_K]
    total = int(sum(int(c) for c in counts))
    freq = {str(v): c for v, c in kept}
    return {"freq": freq, "freq_other": total - sum(freq.values())}


# -- summaries that merge and compare --------------------------------------------------------
@dataclass
class Moments:
    """Count, null count, mean and variance (population M2) of a numeric column; merged
    with Chan's parallel formula."""

    rows: int = 0  # every row, null or not
    missing: int = 0  # nulls and NaN
    n: int = 0  # values in the moments
    mean: float = 0.0
    m2: float = 0.0

    @property
    def variance(self) -> float:
        return self.m2 / (self.n - 1) if self.n > 1 else 0.0

    def merge(self, other: Moments) -> Moments:
        n = self.n + other.n
        if n == 0:
            return Moments(self.rows + other.rows, self.missing + other.missing)
        delta = other.mean - self.mean
        mean = self.mean + delta * other.n / n
        m2 = self.m2 + other.m2 + delta * delta * self.n * other.n / n
        return Moments(self.rows + other.rows, self.missing + other.missing, n, mean, m2)


@dataclass
class NumericSummary:
    """A numeric column over one or more commits: a weighted mixture of sketches (or of
    piecewise-linear CDFs from old profiles) plus moments."""

    parts: list[tuple[float, Any]] = field(default_factory=list)  # (weight, sketch or (xs, ps))
    moments: Moments = field(default_factory=Moments)
    approximate: bool = False
    exact: np.ndarray | None = None  # the sorted values, when built from data

    @classmethod
    def from_profile(cls, col: Mapping[str, Any]) -> NumericSummary:
        rows = int(col.get("count") or 0)
        nulls = int(col.get("nulls") or 0) + int(col.get("nans") or 0)
        n = rows - nulls
        mean = _finite(col.get("mean"))
        std = _finite(col.get("std"))
        m = Moments(rows, nulls, n if mean is not None else 0, mean or 0.0,
                    (std or 0.0) ** 2 * max(n - 1, 0))
        out = cls(moments=m)
        if n <= 0:
            return out
        for kind in ("tdigest", "kll"):
            if col.get(kind):
                sketch = _sketch_class(kind).deserialize(base64.b64decode(col[kind]))
                if not sketch.is_empty():
                    out.parts.append((float(n), sketch))
                return out
        points = _legacy_points(col)
        if points is not None:
            out.parts.append((float(n), points))
            out.approximate = True
        return out

    @classmethod
    def from_values(cls, values: np.ndarray, rows: int) -> NumericSummary:
        """Exact: from the finite values themselves (``rows`` counts nulls and NaN too)."""
        v = np.sort(np.asarray(values, dtype=np.float64))
        n = int(v.size)
        mean = float(v.mean()) if n else 0.0
        m2 = float(((v - mean) ** 2).sum()) if n else 0.0
        return cls(moments=Moments(rows, rows - n, n, mean, m2), exact=v)

    @property
    def has_distribution(self) -> bool:
        return (self.exact is not None and self.exact.size > 0) or bool(self.parts)

    def merge(self, other: NumericSummary) -> NumericSummary:
        return NumericSummary(self.parts + other.parts, self.moments.merge(other.moments),
                              self.approximate or other.approximate)

    def cdf(self, xs: np.ndarray) -> np.ndarray:
        """P(X <= x) for each of ``xs``."""
        if self.exact is not None:
            return np.searchsorted(self.exact, xs, side="right") / max(self.exact.size, 1)
        total = sum(w for w, _ in self.parts)
        out = np.zeros(len(xs), dtype=np.float64)
        if total == 0:
            return out
        for w, part in self.parts:
            if isinstance(part, tuple):
                px, pp = part
                c = np.interp(xs, px, pp, left=0.0, right=1.0)
            else:
                c = np.asarray(part.get_cdf(list(map(float, xs)))[:-1])
            out += w * c
        return out / total

    def candidates(self) -> np.ndarray:
        """Points where the CDF is worth evaluating: each part's percentiles."""
        if self.exact is not None:
            if not self.exact.size:
                return np.empty(0)
            return np.quantile(self.exact, _GRID)
        pts: list[np.ndarray] = []
        for _, part in self.parts:
            if isinstance(part, tuple):
                pts.append(np.asarray(part[0]))
            else:
                pts.append(np.array([part.get_quantile(float(q)) for q in _GRID]))
        return np.unique(np.concatenate(pts)) if pts else np.empty(0)

    def quantiles(self, qs: Sequence[float] | np.ndarray) -> np.ndarray:
        if self.exact is not None:
            return np.quantile(self.exact, qs)
        if len(self.parts) == 1 and not isinstance(self.parts[0][1], tuple):
            return np.array([self.parts[0][1].get_quantile(float(q)) for q in qs])
        xs = self.candidates()
        cs = self.cdf(xs)
        return np.interp(qs, cs, xs)


@dataclass
class CategoricalSummary:
    """Counts per value (bounded), the count of all other values, and nulls."""

    counts: dict[str, int] = field(default_factory=dict)
    other: int = 0
    rows: int = 0
    missing: int = 0

    @classmethod
    def from_profile(cls, col: Mapping[str, Any]) -> CategoricalSummary:
        rows = int(col.get("count") or 0)
        nulls = int(col.get("nulls") or 0)
        if "true" in col and "false" in col:
            return cls({"true": int(col["true"]), "false": int(col["false"])}, 0, rows, nulls)
        if "freq" in col:
            return cls(dict(col["freq"]), int(col.get("freq_other") or 0), rows, nulls)
        # an old profile: its top_k, everything else is "other"
        counts = {str(e["value"]): int(e["count"]) for e in col.get("top_k") or []}
        return cls(counts, max(rows - nulls - sum(counts.values()), 0), rows, nulls)

    @classmethod
    def from_values(cls, values: Iterable[Any], counts: Iterable[int], rows: int,
                    nulls: int) -> CategoricalSummary:
        return cls({str(v): int(c) for v, c in zip(values, counts, strict=True)}, 0, rows,
                   nulls)

    @property
    def has_distribution(self) -> bool:
        return bool(self.counts) or self.other > 0

    def merge(self, other: CategoricalSummary) -> CategoricalSummary:
        counts = dict(self.counts)
        for k, v in other.counts.items():
            counts[k] = counts.get(k, 0) + v
        return CategoricalSummary(counts, self.other + other.other, self.rows + other.rows,
                                  self.missing + other.missing)


Summary = NumericSummary | CategoricalSummary


def _finite(v: Any) -> float | None:
    if v is None or isinstance(v, str):
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def _legacy_points(col: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray] | None:
    """A piecewise-linear CDF through min, the stored quantiles and max."""
    qs = col.get("quantiles") or {}
    pairs = [(0.0, _finite(col.get("min")))]
    pairs += [(int(k[1:]) / 100.0, _finite(v)) for k, v in sorted(qs.items())]
    pairs.append((1.0, _finite(col.get("max"))))
    kept = [(p, x) for p, x in pairs if x is not None]
    if len(kept) < 2:
        return None
    xs = np.maximum.accumulate(np.array([x for _, x in kept]))
    return xs, np.array([p for p, _ in kept])


def summary_of(col: Mapping[str, Any]) -> Summary | None:
    """The summary a stored profile column gives, or None for a type drift ignores
    (timestamps, binary, lists)."""
    t = str(col.get("type", ""))
    if "true" in col or t == "bool":
        return CategoricalSummary.from_profile(col)
    if t.startswith(("int", "uint", "float", "double", "halffloat")):
        return NumericSummary.from_profile(col)
    if t in ("string", "large_string"):
        return CategoricalSummary.from_profile(col)
    return None


def merge_profiles(profiles: Iterable[Mapping[str, Any]], columns: Sequence[str]
                   ) -> dict[str, Summary]:
    """Per column of ``columns``, the merged summary of ``profiles`` (commit profiles);
    a column no profile describes is left out."""
    out: dict[str, Summary] = {}
    for prof in profiles:
        cols = prof.get("columns") or {}
        for name in columns:
            col = cols.get(name)
            if col is None:
                continue
            s = summary_of(col)
            if s is None:
                continue
            prev = out.get(name)
            if prev is None:
                out[name] = s
            elif type(prev) is type(s):
                out[name] = prev.merge(s)  # type: ignore[arg-type]
    return out
