"""Time helpers. Stored times are integer microseconds since the Unix epoch, UTC.

Naive datetimes are taken to be UTC.

>>> to_us(dt.datetime(1970, 1, 1, 0, 0, 1))
1000000
>>> from_us(1_000_000).isoformat()
'1970-01-01T00:00:01+00:00'
"""

from __future__ import annotations

import datetime as dt
import getpass
import os
import time

UTC = dt.UTC


def now_us() -> int:
    return time.time_ns() // 1000


def to_us(value: dt.datetime | dt.date | int | str) -> int:
    """Microseconds since the epoch for a datetime (naive = UTC), date, ISO text or int."""
    if isinstance(value, bool):
        raise TypeError("a bool is not a time")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        delta = value - dt.datetime(1970, 1, 1, tzinfo=UTC)
        return delta // dt.timedelta(microseconds=1)
    if isinstance(value, dt.date):
        return to_us(dt.datetime(value.year, value.month, value.day, tzinfo=UTC))
    if hasattr(value, "to_pydatetime"):  # pandas Timestamp
        return to_us(value.to_pydatetime())
    raise TypeError(f"cannot read {value!r} as a time")


def from_us(value: int) -> dt.datetime:
    return dt.datetime(1970, 1, 1, tzinfo=UTC) + dt.timedelta(microseconds=value)


def current_user() -> str:
    """Who is acting: FEATURELEDGER_USER, else the OS user."""
    user = os.environ.get("FEATURELEDGER_USER")
    if user:
        return user
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return "unknown"
