"""Bounded text: how a value of any size is shown in a message, a report or the CLI.

A value taken from data (a 10 MB string, a list of a million items) is never echoed whole:
it is cut to a number of characters (or items) and its full size is shown beside it, so
the reader knows it was cut and by how much.

>>> shorten("a" * 10_485_760, 4)
"'aaaa...' (10,485,760 chars)"
>>> shorten("ok")
"'ok'"
>>> bounded_value(["x" * 300, 2], 5)
(['xxxxx...', 2], None)
>>> bounded_value("y" * 300, 5)
('yyyyy...', '300 chars')
"""

from __future__ import annotations

from typing import Any

VALUE_CHARS = 200
"""Characters of a value shown in a message, a validation report or CLI output."""
LIST_ITEMS = 20
"""Items of a list value shown; the rest are summarised by their count."""
MESSAGE_CHARS = 20_000
"""Characters of any one message the CLI prints (messages hold bounded values already;
this is the last line of defence against a value that slipped through)."""


def cut(text: str, limit: int = VALUE_CHARS) -> str:
    """``text`` cut to ``limit`` characters, with ``...`` when it was longer."""
    return text if len(text) <= limit else text[:limit] + "..."


def shorten(value: Any, limit: int = VALUE_CHARS) -> str:
    """``repr(value)`` for a message, cut: ``'aaaa...' (10,485,760 chars)``."""
    if isinstance(value, (str, bytes, bytearray)) and len(value) > limit:
        head = repr(value[:limit] if isinstance(value, str) else bytes(value[:limit]))
        unit = "chars" if isinstance(value, str) else "bytes"
        return f"{head[:-1]}...{head[-1]} ({len(value):,} {unit})"
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text):,} chars)"


def first_line(exc: BaseException | str, limit: int = 2 * VALUE_CHARS) -> str:
    """The first line of an error (a driver's message may quote a whole value), cut."""
    lines = str(exc).splitlines()
    return cut(lines[0] if lines else "", limit)


def bounded_value(value: Any, limit: int = VALUE_CHARS) -> tuple[Any, str | None]:
    """A JSON-ready value with every string cut to ``limit`` characters and every list to
    :data:`LIST_ITEMS` items, and, when the value itself was cut, its full size in words
    (``"10,485,760 chars"``, ``"5,000 items"``); None when it was shown whole."""
    if isinstance(value, str):
        return (value, None) if len(value) <= limit else (cut(value, limit),
                                                           f"{len(value):,} chars")
    if isinstance(value, list):
        items = [bounded_value(v, limit)[0] for v in value[:LIST_ITEMS]]
        return (items, None) if len(value) <= LIST_ITEMS else (items, f"{len(value):,} items")
    return value, None
