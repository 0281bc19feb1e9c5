"""Values as a person reads them: a duration as ``3d``, a value without Python's quotes.

Used by change details (``ttl 7d -> 3d``, ``unit trips/day -> trips``) and by the command
line, so a diff and a ``show`` speak the way definitions are written.

>>> import datetime as dt
>>> format_duration(dt.timedelta(days=3))
'3d'
>>> format_duration(dt.timedelta(hours=36))
'1d12h'
>>> format_duration(dt.timedelta(milliseconds=1500))
'1500ms'
>>> format_value("trips/day"), format_value(None), format_value(["bike", "van"])
('trips/day', 'none', '[bike, van]')
>>> format_value(0.1), format_value(True), format_value(dt.timedelta(days=7))
('0.1', 'true', '7d')
"""

from __future__ import annotations

import datetime as dt
from typing import Any

_UNITS = (("w", 604_800_000_000), ("d", 86_400_000_000), ("h", 3_600_000_000),
          ("m", 60_000_000), ("s", 1_000_000))


def format_duration(value: dt.timedelta) -> str:
    """``value`` in the units a TTL is written in (``7d``, ``12h``, ``1d12h``, ``90s``);
    weeks are shown as days, as people write TTLs. Below a second: ``ms`` or ``us``."""
    us = (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds
    if us == 0:
        return "0s"
    sign, us = ("-", -us) if us < 0 else ("", us)
    if us % 1_000_000:
        return f"{sign}{us // 1000}ms" if us % 1000 == 0 else f"{sign}{us}us"
    parts = []
    for unit, size in _UNITS[1:]:
        if us >= size:
            parts.append(f"{us // size}{unit}")
            us %= size
    return sign + "".join(parts)


def format_value(value: Any) -> str:
    """A definition value (a bound, a unit, a default, allowed values) as text: strings
    without quotes, ``none`` for no value, lists in brackets, durations as TTLs."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.timedelta):
        return format_duration(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, bytes):
        return value.hex()
    return str(value)
