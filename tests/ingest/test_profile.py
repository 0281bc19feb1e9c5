"""The statistics profile against values computed independently with numpy / pandas."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from featureledger.ingest import profile_table
from featureledger.ingest.profile import QUANTILE_EXACT_LIMIT, QUANTILES

UTC = dt.UTC


def test_numeric_columns_match_numpy_exactly_when_small() -> None:
    rng = np.random.default_rng(7)
    x = rng.normal(10, 3, 5_000)
    ints = rng.integers(-50, 50, 5_000)
    nulls = rng.random(5_000) < 0.1
    table = pa.table({"x": pa.array(x, mask=nulls), "i": pa.array(ints)})
    p = profile_table(table)
    assert p["rows"] == 5_000
    c = p["columns"]["x"]
    v = x[~nulls]
    assert c["count"] == 5_000 and c["nulls"] == int(nulls.sum()) and c["nans"] == 0
    assert c["min"] == v.min() and c["max"] == v.max()
    assert c["mean"] == pytest.approx(v.mean(), rel=1e-12)
    assert c["std"] == pytest.approx(v.std(ddof=1), rel=1e-9)
    assert c["quantiles_exact"] is True
    for name, q in QUANTILES.items():
        assert c["quantiles"][name] == pytest.approx(np.quantile(v, q), rel=1e-12)
    i = p["columns"]["i"]
    assert (i["min"], i["max"]) == (int(ints.min()), int(ints.max()))
    assert isinstance(i["min"], int)
    assert i["mean"] == pytest.approx(ints.mean())
    assert i["distinct_estimate"] == pytest.approx(len(np.unique(ints)), rel=0.05)
    json.dumps(p, allow_nan=False)  # JSON-ready


def test_nan_is_counted_and_left_out_of_statistics() -> None:
    x = np.array([1.0, np.nan, 3.0, np.inf, np.nan, 2.0])
    c = profile_table(pa.table({"x": x}))["columns"]["x"]
    finite = x[~np.isnan(x)]
    assert c["nans"] == 2 and c["nulls"] == 0
    assert c["min"] == 1.0 and c["max"] == "inf"  # non-finite numbers become text
    assert c["mean"] == "inf"
    assert c["quantiles"]["p25"] == np.quantile(finite, 0.25)
    json.dumps(c, allow_nan=False)


def test_large_columns_use_a_seeded_sample_for_quantiles() -> None:
    rng = np.random.default_rng(3)
    n = QUANTILE_EXACT_LIMIT * 4
    x = rng.exponential(2.0, n).astype(np.float32)
    p1 = profile_table(pa.table({"x": x}))
    p2 = profile_table(pa.table({"x": x}))
    c = p1["columns"]["x"]
    assert p1 == p2  # deterministic
    assert c["quantiles_exact"] is False
    assert c["mean"] == pytest.approx(float(x.astype(np.float64).mean()), rel=1e-9)
    assert c["min"] == float(x.min()) and c["max"] == float(x.max())
    sorted_x = np.sort(x.astype(np.float64))
    for name, q in QUANTILES.items():
        # the reported value sits at rank q of the full data, within 0.5 points
        rank = np.searchsorted(sorted_x, c["quantiles"][name]) / n
        assert abs(rank - q) < 0.005, (name, rank)
    assert c["distinct_estimate"] == pytest.approx(len(np.unique(x)), rel=0.05)


def test_strings_top_k_and_bounds_match_pandas() -> None:
    rng = np.random.default_rng(11)
    words = np.array([f"w{i:02d}" for i in range(30)])
    probs = np.arange(30, 0, -1, dtype=float)
    values = rng.choice(words, 3_000, p=probs / probs.sum()).astype(object)
    values[::97] = None
    c = profile_table(pa.table({"s": pa.array(values, pa.string())}))["columns"]["s"]
    s = pd.Series(values).dropna()
    vc = s.value_counts()
    expected = sorted(vc.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
    assert [(d["value"], d["count"]) for d in c["top_k"]] == expected
    assert c["nulls"] == int(pd.Series(values).isna().sum())
    assert (c["min"], c["max"]) == (s.min(), s.max())
    assert c["distinct_estimate"] == pytest.approx(s.nunique(), abs=2)


def test_timestamps_and_booleans() -> None:
    ts = [dt.datetime(2024, 1, d, tzinfo=UTC) for d in (5, 1, 9)] + [None]
    table = pa.table({"t": pa.array(ts, pa.timestamp("us", tz="UTC")),
                      "b": [True, False, True, None]})
    p = profile_table(table)["columns"]
    assert p["t"]["min"] == "2024-01-01T00:00:00+00:00"
    assert p["t"]["max"] == "2024-01-09T00:00:00+00:00"
    assert p["t"]["nulls"] == 1 and p["t"]["distinct_estimate"] == 3
    assert (p["b"]["true"], p["b"]["false"], p["b"]["nulls"]) == (2, 1, 1)


def test_all_null_numeric_column() -> None:
    c = profile_table(pa.table({"x": pa.nulls(3, pa.float64())}))["columns"]["x"]
    assert c["nulls"] == 3 and c["min"] is None and c["mean"] is None
    assert c["quantiles"] == dict.fromkeys(QUANTILES)
