"""Windowed aggregations: part of a view's definition, requested like features.

Re-exported by :mod:`featureledger.model.definitions`.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import field_validator, model_validator

from featureledger.model.base import _Definition, check_name, parse_ttl
from featureledger.model.types import NUMERIC_DTYPES, ORDERED_DTYPES

if TYPE_CHECKING:
    from featureledger.model.definitions import FeatureView

AggregationFunction = Literal["count", "sum", "mean", "min", "max", "stddev", "last",
                              "approx_count_distinct"]
_AGG_NUMERIC = frozenset({"sum", "mean", "stddev"})


def window_label(window: dt.timedelta) -> str:
    """The shortest text for a window in whole units: ``7d``, ``1h``, ``90s``.

    >>> window_label(dt.timedelta(days=7)), window_label(dt.timedelta(minutes=90))
    ('7d', '90m')
    """
    us = window // dt.timedelta(microseconds=1)
    for unit, size in (("d", 86_400_000_000), ("h", 3_600_000_000), ("m", 60_000_000),
                       ("s", 1_000_000), ("ms", 1000), ("us", 1)):
        if us % size == 0:
            return f"{us // size}{unit}"
    return f"{us}us"  # unreachable: every window is whole microseconds


class Aggregation(_Definition):
    """A windowed aggregation of one of a view's fields, requested like a feature.

    The value at time ``t`` for a key aggregates the view's effective rows of that key
    with ``t - window < event_ts <= t`` (the window's start is exclusive, its end
    inclusive, like the point-in-time join's ``event_ts <= t``). With ``slide``, ``t`` is
    first rounded down to a multiple of ``slide`` (since the epoch, UTC): the value then
    changes only every ``slide``. ``name`` defaults to ``<column>_<function>_<window>``.

    >>> Aggregation(column="trips", function="sum", window="7d").output_name
    'trips_sum_7d'
    >>> Aggregation(column="fare", function="mean", window="1h", name="fare_1h").output_name
    'fare_1h'
    """

    kind: ClassVar[str] = "aggregation"

    column: str
    function: AggregationFunction
    window: dt.timedelta
    slide: dt.timedelta | None = None
    name: str | None = None
    description: str = ""

    @field_validator("column")
    @classmethod
    def _column(cls, v: str) -> str:
        return check_name("aggregated column", v)

    @field_validator("name")
    @classmethod
    def _agg_name(cls, v: str | None) -> str | None:
        return None if v is None else check_name("aggregation", v)

    @field_validator("window", "slide", mode="before")
    @classmethod
    def _span(cls, v: Any) -> dt.timedelta | None:
        span = parse_ttl(v)
        if span is not None and (span <= dt.timedelta(0)
                                 or span % dt.timedelta(microseconds=1)):
            raise ValueError(f"window {v!r} must be a positive whole number of microseconds, "
                             "e.g. '1h', '7d'")
        return span

    @model_validator(mode="after")
    def _slide(self) -> Aggregation:
        if self.slide is not None and self.slide > self.window:
            raise ValueError(f"slide {window_label(self.slide)} is longer than the window "
                             f"{window_label(self.window)}; use a slide at most the window")
        return self

    @property
    def output_name(self) -> str:
        """The feature name the aggregation is requested and returned as."""
        return self.name or f"{self.column}_{self.function}_{window_label(self.window)}"

    @property
    def window_us(self) -> int:
        return self.window // dt.timedelta(microseconds=1)

    @property
    def slide_us(self) -> int | None:
        return None if self.slide is None else self.slide // dt.timedelta(microseconds=1)

    def output_dtype(self, column_dtype: str) -> str:
        """The dtype of the aggregated value, given the aggregated field's dtype."""
        if self.function in ("count", "approx_count_distinct"):
            return "int64"
        if self.function == "sum":
            return "int64" if column_dtype in ("int32", "int64") else "float64"
        if self.function in ("mean", "stddev"):
            return "float64"
        return column_dtype  # min, max, last


def check_aggregations(view: FeatureView) -> None:
    """A ValueError naming the first aggregation that does not fit ``view``."""
    fields = {f.name: f for f in view.fields}
    seen: set[str] = set()
    for a in view.aggregations:
        out = a.output_name
        if a.column not in fields:
            raise ValueError(f"aggregation {out!r} aggregates {a.column!r}, which is not a "
                             f"field of the view; use one of {', '.join(fields)}")
        dtype = fields[a.column].dtype
        if a.function in _AGG_NUMERIC and dtype not in NUMERIC_DTYPES:
            raise ValueError(f"aggregation {out!r}: {a.function} needs a numeric field, and "
                             f"{a.column!r} is {dtype}; use count, min, max or last")
        if a.function in ("min", "max") and dtype not in ORDERED_DTYPES:
            raise ValueError(f"aggregation {out!r}: {a.function} needs an ordered field, and "
                             f"{a.column!r} is {dtype}; use count or last")
        if a.function == "approx_count_distinct" and dtype.startswith("list<"):
            raise ValueError(f"aggregation {out!r}: approx_count_distinct cannot count list "
                             f"values ({a.column!r} is {dtype})")
        if out in fields or out in seen or out in view.join_keys:
            raise ValueError(f"aggregation name {out!r} is already a field, a join key or "
                             "another aggregation of the view; give it name='...'")
        seen.add(out)
