"""Drift statistics per feature, and the rule that calls a feature drifted.

Numbers: the population stability index (PSI, over :data:`PSI_BINS` bins cut at the
baseline's quantiles), the two-sample Kolmogorov-Smirnov statistic ``D`` with its p-value,
the mean shift in baseline standard deviations (with a Welch z-test p-value) and the null
rate change. Categories: Pearson's chi-square test of the two count vectors (its p-value)
and the Jensen-Shannon distance (base 2, in [0, 1]), and the null rate change.

A feature drifts when an effect is both large and significant, so a big sample never
alerts on a negligible change and a small one never alerts on noise:

* numbers: ``psi > psi`` or ``ks > ks`` (either with the KS p-value below ``alpha``), or
  ``|mean shift| > mean_shift`` (Welch p-value below ``alpha``);
* categories: ``js > js`` with the chi-square p-value below ``alpha``;
* both: the null rate grows by more than ``null_rate`` (two-proportion p below ``alpha``).

The defaults (:class:`Thresholds`) detect a shift of half a standard deviation, or a
category mix moving from (0.4, 0.3, 0.2, 0.1) to (0.25, 0.25, 0.25, 0.25), in every one of
100 seeded samples of 5,000 rows against 20,000, from profiles and from data, and raise no
alert on any of 100 unshifted ones (``tests/quality/test_drift_statistics.py``).

Statistics come from summaries (:mod:`featureledger.quality.sketches`): from stored
profiles (sketch CDFs) or exactly from the values (``scipy.stats.ks_2samp`` on the arrays).

>>> Thresholds().with_overrides({"psi": 0.3}).psi
0.3
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import numpy as np

from featureledger.errors import QualityError
from featureledger.quality.sketches import CategoricalSummary, NumericSummary, Summary

PSI_BINS = 10
_EPS = 1e-4  # floor of a bin's share in PSI (an empty bin would make it infinite)


@dataclass(frozen=True)
class Thresholds:
    """When a feature counts as drifted (see the module docstring)."""

    psi: float = 0.2
    """PSI above which a number drifted (0.1-0.2 is the usual "moderate" band)."""
    ks: float = 0.1
    """Kolmogorov-Smirnov D above which a number drifted."""
    mean_shift: float = 0.3
    """Shift of the mean, in baseline standard deviations."""
    js: float = 0.1
    """Jensen-Shannon distance (base 2) above which a category drifted."""
    null_rate: float = 0.05
    """Growth of the null fraction (absolute) that counts as drift."""
    alpha: float = 0.01
    """Significance level every effect must also reach."""

    def with_overrides(self, values: Mapping[str, Any] | None) -> Thresholds:
        if not values:
            return self
        known = {f.name for f in fields(self)}
        bad = sorted(set(values) - known)
        if bad:
            raise QualityError(f"unknown drift threshold(s) {bad}; use {sorted(known)}")
        try:
            return replace(self, **{k: float(v) for k, v in values.items()})
        except (TypeError, ValueError):
            raise QualityError(f"drift thresholds must be numbers, got {dict(values)}") from None

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class FeatureDrift:
    """The drift statistics of one feature and the verdict."""

    feature: str
    kind: str  # "numeric" or "categorical"
    drifted: bool
    reasons: tuple[str, ...]
    metrics: dict[str, float | None]
    baseline_rows: int
    current_rows: int
    approximate: bool = False  # an old profile without a sketch took part

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["reasons"] = list(self.reasons)
        return d


@dataclass(frozen=True)
class DriftReport:
    """Drift of a view's features between a baseline and a current state."""

    view: str
    baseline: dict[str, Any]
    current: dict[str, Any]
    method: str  # "profile" or "data"
    features: list[FeatureDrift] = field(default_factory=list)

    @property
    def drifted(self) -> list[str]:
        return [f.feature for f in self.features if f.drifted]

    @property
    def status(self) -> str:
        return "drift" if self.drifted else "ok"

    def to_dict(self) -> dict[str, Any]:
        return {"view": self.view, "baseline": self.baseline, "current": self.current,
                "method": self.method, "status": self.status, "drifted": self.drifted,
                "features": [f.to_dict() for f in self.features]}


def _clean(v: float | None) -> float | None:
    if v is None:
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def _two_proportion_p(x1: int, n1: int, x2: int, n2: int) -> float:
    from scipy.stats import norm

    if n1 == 0 or n2 == 0:
        return 1.0
    p = (x1 + x2) / (n1 + n2)
    se = math.sqrt(p * (1 - p) * (1 / n1 + 1 / n2))
    if se == 0:
        return 1.0 if x1 / n1 == x2 / n2 else 0.0
    return float(2 * norm.sf(abs(x2 / n2 - x1 / n1) / se))


def _null_check(base_rows: int, base_missing: int, cur_rows: int, cur_missing: int,
                t: Thresholds) -> tuple[dict[str, float | None], list[str]]:
    b = base_missing / base_rows if base_rows else 0.0
    c = cur_missing / cur_rows if cur_rows else 0.0
    p = _two_proportion_p(base_missing, base_rows, cur_missing, cur_rows)
    reasons = []
    if c - b > t.null_rate and p < t.alpha:
        reasons.append(f"null rate {b:.3f} -> {c:.3f}")
    return {"null_rate_baseline": b, "null_rate_current": c, "null_rate_p": p}, reasons


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """PSI of two share vectors (each summing to 1), shares floored at 1e-4."""
    e = np.maximum(expected, _EPS)
    a = np.maximum(actual, _EPS)
    return float(np.sum((a - e) * np.log(a / e)))


def _ks(base: NumericSummary, cur: NumericSummary) -> tuple[float, float]:
    """Two-sample KS statistic and its two-sided p-value (Smirnov's asymptotic
    distribution, as ``scipy.stats.ks_2samp(method="asymp")``). From values: exact, on the
    sorted arrays (what ``ks_2samp`` computes, without sorting them again); from sketches:
    the largest CDF gap at every sketch percentile of either side."""
    from scipy.stats.distributions import kstwo

    if base.exact is not None and cur.exact is not None:
        a, b = base.exact, cur.exact
        both = np.concatenate([a, b])
        gap = (np.searchsorted(a, both, side="right") / max(a.size, 1)
               - np.searchsorted(b, both, side="right") / max(b.size, 1))
        d = float(np.max(np.abs(gap))) if both.size else 0.0
    else:
        xs = np.unique(np.concatenate([base.candidates(), cur.candidates()]))
        d = float(np.max(np.abs(base.cdf(xs) - cur.cdf(xs)))) if xs.size else 0.0
    n, m = base.moments.n, cur.moments.n
    en = n * m / (n + m) if n + m else 0
    p = float(np.clip(kstwo.sf(d, np.round(en)), 0, 1)) if en else 1.0
    return d, p


def numeric_drift(name: str, base: NumericSummary, cur: NumericSummary,
                  t: Thresholds) -> FeatureDrift:
    """Drift of one numeric feature."""
    from scipy.stats import norm

    metrics, reasons = _null_check(base.moments.rows, base.moments.missing,
                                   cur.moments.rows, cur.moments.missing, t)
    if base.has_distribution and cur.has_distribution:
        edges = np.unique(base.quantiles(np.linspace(0, 1, PSI_BINS + 1)[1:-1]))
        cb, cc = base.cdf(edges), cur.cdf(edges)
        eb = np.diff(np.concatenate([[0.0], cb, [1.0]]))
        ec = np.diff(np.concatenate([[0.0], cc, [1.0]]))
        value_psi = psi(eb, ec)
        d, p = _ks(base, cur)
        bm, cm = base.moments, cur.moments
        sd = math.sqrt(bm.variance) if bm.variance > 0 else 0.0
        shift = (cm.mean - bm.mean) / sd if sd else 0.0
        se = math.sqrt(bm.variance / max(bm.n, 1) + cm.variance / max(cm.n, 1))
        shift_p = float(2 * norm.sf(abs(cm.mean - bm.mean) / se)) if se > 0 else (
            1.0 if cm.mean == bm.mean else 0.0)
        metrics.update(psi=value_psi, ks=d, ks_p=p, mean_baseline=bm.mean,
                       mean_current=cm.mean, mean_shift=shift, mean_shift_p=shift_p)
        if value_psi > t.psi and p < t.alpha:
            reasons.append(f"PSI {value_psi:.3f} > {t.psi}")
        if d > t.ks and p < t.alpha:
            reasons.append(f"KS {d:.3f} > {t.ks}")
        if abs(shift) > t.mean_shift and shift_p < t.alpha:
            reasons.append(f"mean shift {shift:+.2f} sd (limit {t.mean_shift})")
    return FeatureDrift(name, "numeric", bool(reasons), tuple(reasons),
                        {k: _clean(v) for k, v in metrics.items()},
                        base.moments.rows, cur.moments.rows,
                        base.approximate or cur.approximate)


def categorical_drift(name: str, base: CategoricalSummary, cur: CategoricalSummary,
                      t: Thresholds) -> FeatureDrift:
    """Drift of one categorical feature (values either side lacks count as zero; the
    ``other`` bucket of bounded counts is one more category)."""
    from scipy.spatial.distance import jensenshannon
    from scipy.stats import chi2_contingency

    metrics, reasons = _null_check(base.rows, base.missing, cur.rows, cur.missing, t)
    if base.has_distribution and cur.has_distribution:
        keys = sorted(set(base.counts) | set(cur.counts))
        b = np.array([base.counts.get(k, 0) for k in keys] + [base.other], dtype=np.float64)
        c = np.array([cur.counts.get(k, 0) for k in keys] + [cur.other], dtype=np.float64)
        used = (b + c) > 0
        b, c = b[used], c[used]
        js = float(jensenshannon(b / b.sum(), c / c.sum(), base=2))
        if len(b) > 1:
            chi2, p, _, _ = chi2_contingency(np.vstack([b, c]), correction=False)
        else:
            chi2, p = 0.0, 1.0
        metrics.update(js=js, chi2=float(chi2), chi2_p=float(p), categories=float(len(b)))
        if js > t.js and p < t.alpha:
            reasons.append(f"Jensen-Shannon {js:.3f} > {t.js}")
    return FeatureDrift(name, "categorical", bool(reasons), tuple(reasons),
                        {k: _clean(v) for k, v in metrics.items()}, base.rows, cur.rows)


def feature_drift(name: str, base: Summary, cur: Summary, t: Thresholds) -> FeatureDrift:
    if isinstance(base, NumericSummary) and isinstance(cur, NumericSummary):
        return numeric_drift(name, base, cur, t)
    if isinstance(base, CategoricalSummary) and isinstance(cur, CategoricalSummary):
        return categorical_drift(name, base, cur, t)
    raise QualityError(f"feature {name!r} is numeric on one side and categorical on the "
                       "other; compare versions with the same type")


def compare(base: Mapping[str, Summary], cur: Mapping[str, Summary], features: list[str],
            thresholds: Mapping[str, Thresholds], default: Thresholds) -> list[FeatureDrift]:
    """Drift of each of ``features`` present on both sides."""
    out = []
    for name in features:
        if name in base and name in cur:
            out.append(feature_drift(name, base[name], cur[name],
                                     thresholds.get(name, default)))
    return out
