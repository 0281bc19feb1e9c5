"""The statistical acceptance of drift detection at the default thresholds.

For numbers (a normal sample shifted by half a standard deviation) and categories (a mix
moving from (0.4, 0.3, 0.2, 0.1) to uniform), over 100 fixed seeds each: the shift is
detected in at least 95, and an unshifted sample raises a false alert in at most 5, both
from stored profiles (the JSON a commit keeps, t-digest sketches and bounded counts) and
exactly from the data. Fixed seeds make every run the same.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
from scipy import stats

from featureledger.ingest.profile import profile_table
from featureledger.quality.baselines import table_summaries
from featureledger.quality.drift import Thresholds, compare
from featureledger.quality.sketches import merge_profiles

SEEDS = range(100)
BASE_ROWS, CUR_ROWS = 20_000, 5_000
SHIFT_SD = 0.5
BASE_MIX = [0.4, 0.3, 0.2, 0.1]
SHIFTED_MIX = [0.25, 0.25, 0.25, 0.25]
CATS = ["a", "b", "c", "d"]


def _sample(rng: np.random.Generator, n: int, shift: float, mix: list[float]) -> pa.Table:
    return pa.table({"x": rng.normal(10.0 + shift, 2.0, n),
                     "c": rng.choice(CATS, n, p=mix)})


def _pair(seed: int, shifted: bool) -> tuple[pa.Table, pa.Table]:
    rng = np.random.default_rng(seed)
    base = _sample(rng, BASE_ROWS, 0.0, BASE_MIX)
    cur = _sample(rng, CUR_ROWS, SHIFT_SD * 2.0 if shifted else 0.0,
                  SHIFTED_MIX if shifted else BASE_MIX)
    return base, cur


def _stored(table: pa.Table) -> dict:
    # what a commit row keeps: canonical JSON text, read back
    return json.loads(json.dumps(profile_table(table)))


def _verdicts(seed: int, shifted: bool, method: str) -> dict[str, bool]:
    base, cur = _pair(seed, shifted)
    feats = ["x", "c"]
    if method == "profile":
        # the baseline as several commits, merged from their profiles
        parts = [base.slice(i, BASE_ROWS // 4) for i in range(0, BASE_ROWS, BASE_ROWS // 4)]
        b = merge_profiles([_stored(p) for p in parts], feats)
        c = merge_profiles([_stored(cur)], feats)
    else:
        b, c = table_summaries(base, feats), table_summaries(cur, feats)
    return {f.feature: f.drifted for f in compare(b, c, feats, {}, Thresholds())}


@pytest.mark.slow
@pytest.mark.parametrize("method", ["profile", "data"])
def test_a_known_shift_is_detected_and_no_shift_is_quiet(method: str) -> None:
    detected = {"x": 0, "c": 0}
    false_alerts = {"x": 0, "c": 0}
    for seed in SEEDS:
        for f, d in _verdicts(seed, True, method).items():
            detected[f] += d
        for f, d in _verdicts(seed, False, method).items():
            false_alerts[f] += d
    assert detected["x"] >= 95 and detected["c"] >= 95, detected
    assert false_alerts["x"] <= 5 and false_alerts["c"] <= 5, false_alerts


def _oracle_psi(base: np.ndarray, cur: np.ndarray, bins: int = 10) -> float:
    edges = np.quantile(base, np.linspace(0, 1, bins + 1)[1:-1])
    e = np.bincount(np.searchsorted(edges, base, side="right"), minlength=bins) / base.size
    a = np.bincount(np.searchsorted(edges, cur, side="right"), minlength=bins) / cur.size
    e, a = np.maximum(e, 1e-4), np.maximum(a, 1e-4)
    return float(np.sum((a - e) * np.log(a / e)))


def _oracle_js(p: np.ndarray, q: np.ndarray) -> float:
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2

    def kl(a: np.ndarray, b: np.ndarray) -> float:
        nz = a > 0
        return float(np.sum(a[nz] * np.log2(a[nz] / b[nz])))
    return float(np.sqrt((kl(p, m) + kl(q, m)) / 2))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_statistics_match_an_independent_computation(seed: int) -> None:
    base, cur = _pair(seed, True)
    feats = ["x", "c"]
    exact = {f.feature: f for f in compare(table_summaries(base, feats),
                                          table_summaries(cur, feats), feats, {},
                                          Thresholds())}
    approx = {f.feature: f for f in compare(merge_profiles([_stored(base)], feats),
                                           merge_profiles([_stored(cur)], feats), feats, {},
                                           Thresholds())}
    bx, cx = base.column("x").to_numpy(), cur.column("x").to_numpy()
    ks = stats.ks_2samp(bx, cx)
    assert exact["x"].metrics["ks"] == pytest.approx(ks.statistic, abs=1e-12)
    assert exact["x"].metrics["psi"] == pytest.approx(_oracle_psi(bx, cx), rel=1e-9)
    shift = (cx.mean() - bx.mean()) / bx.std(ddof=1)
    assert exact["x"].metrics["mean_shift"] == pytest.approx(shift, rel=1e-9)
    # from profiles: within the sketch's rank error
    assert approx["x"].metrics["ks"] == pytest.approx(ks.statistic, abs=0.03)
    assert approx["x"].metrics["psi"] == pytest.approx(_oracle_psi(bx, cx), abs=0.05)
    assert approx["x"].metrics["mean_shift"] == pytest.approx(shift, rel=1e-6)
    bc = np.array([np.sum(base.column("c").to_numpy(zero_copy_only=False) == k) for k in CATS])
    cc = np.array([np.sum(cur.column("c").to_numpy(zero_copy_only=False) == k) for k in CATS])
    expected = np.vstack([bc, cc]).sum(axis=0) * np.array([[bc.sum()], [cc.sum()]]) / (
        bc.sum() + cc.sum())
    chi2 = float(((np.vstack([bc, cc]) - expected) ** 2 / expected).sum())
    for got in (exact["c"], approx["c"]):  # counts are exact in the profile too
        assert got.metrics["js"] == pytest.approx(_oracle_js(bc, cc), rel=1e-9)
        assert got.metrics["chi2"] == pytest.approx(chi2, rel=1e-9)


def test_null_rate_growth_drifts() -> None:
    rng = np.random.default_rng(7)
    x = rng.normal(size=10_000)
    cur = pa.array(np.where(rng.random(10_000) < 0.2, np.nan, x), from_pandas=True)
    b = table_summaries(pa.table({"x": x}), ["x"])
    c = table_summaries(pa.table({"x": cur}), ["x"])
    (f,) = compare(b, c, ["x"], {}, Thresholds())
    assert f.drifted and f.metrics["null_rate_current"] == pytest.approx(
        float(np.isnan(cur.to_numpy(zero_copy_only=False)).mean()))
    assert any("null rate" in r for r in f.reasons)


def test_old_profiles_without_sketches_are_still_compared() -> None:
    rng = np.random.default_rng(3)
    old = _stored(pa.table({"x": rng.normal(size=20_000)}))
    for key in ("tdigest", "tdigest_n"):
        old["columns"]["x"].pop(key)
    new = _stored(pa.table({"x": rng.normal(1.0, 1.0, 5_000)}))
    (f,) = compare(merge_profiles([old], ["x"]), merge_profiles([new], ["x"]), ["x"], {},
                   Thresholds())
    assert f.approximate and f.drifted
