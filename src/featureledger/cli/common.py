"""What every CLI command shares: the console, opening the store, output formats, and
the one way a value reaches the terminal (:func:`show`): cut to a bound, with its size, and
escaped, so data never turns into rich markup and a 10 MB string is never laid out.

Output fits an 80-column terminal: tables show ids shortened (:func:`short_id`, whole with
``featureledger --full-ids``), never broken across lines; ``--json`` always has them whole,
with times in ISO 8601 (:func:`json_ready`).

This module is imported by every command module, so by ``featureledger --help``: it imports
nothing heavy (no pydantic, pyarrow, DuckDB, SQLAlchemy; see ``tests/cli/test_startup.py``).
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.markup import escape

from featureledger.model.bounds import MESSAGE_CHARS, VALUE_CHARS, cut, shorten
from featureledger.model.timeutil import from_us

if TYPE_CHECKING:
    from rich.table import Table

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)
# the repository's bounds.value_chars once a store is open; the default before that
_bounds = {"value_chars": VALUE_CHARS}
# set by the root options (`featureledger --full-ids ...`)
settings = {"full_ids": os.environ.get("FEATURELEDGER_FULL_IDS", "") not in ("", "0")}

RepoOption = typer.Option(
    Path("."), "--repo", "-r", help="Feature repository folder (holds featureledger.yaml).",
    envvar="FEATURELEDGER_REPO",
)
JsonOption = typer.Option(False, "--json", help="Print JSON instead of tables.")

ID_TAIL = 8
"""Hex digits of an id's random end shown in tables (``cmt_…4d76e004``)."""


def open_store(repo: Path) -> Any:
    from featureledger.store import FeatureStore

    store = FeatureStore(repo)
    _bounds["value_chars"] = store.config.bounds.value_chars
    return store


def show(value: Any, limit: int | None = None) -> str:
    """``value`` as text for a table cell or a line: cut to ``limit`` characters
    (``bounds.value_chars`` by default) with its full size shown, markup escaped.

    >>> print(show("[red]" + "a" * 500, 8))
    \\[red]aaa... (505 chars)
    """
    n = limit or _bounds["value_chars"]
    text = value if isinstance(value, str) else str(value)
    if len(text) > n:
        text = text[:n] + f"... ({len(text):,} chars)"
    return escape(text)


def show_repr(value: Any, limit: int | None = None) -> str:
    """``repr(value)`` cut as messages cut it (``'aaaa...' (10,485,760 chars)``), escaped."""
    return escape(shorten(value, limit or _bounds["value_chars"]))


def show_message(text: str) -> str:
    """A whole message (an error's text), cut to :data:`MESSAGE_CHARS` and escaped."""
    return escape(cut(text, MESSAGE_CHARS))


def print_error(label: str, message: str) -> None:
    """``label: message`` on stderr, ``label`` in bold red; ``message`` is plain text
    (cut to :data:`MESSAGE_CHARS`, never read as markup).

    On a terminal the message wraps at its width between words only, so an id, a path or
    a command in it stays whole on one line (one longer than the line overflows rather
    than breaking), and continuation lines are indented. Piped or redirected, it stays
    one line, so a log or ``grep`` sees the whole message.
    """
    import textwrap

    from rich.text import Text

    text = f"{label}: {cut(message, MESSAGE_CHARS)}"
    if err_console.is_terminal:
        text = "\n".join(
            "\n".join(textwrap.wrap(part, err_console.width, subsequent_indent="  ",
                                     break_long_words=False, break_on_hyphens=False))
            for part in text.split("\n"))
    styled = Text(text)
    styled.stylize("bold red", 0, len(label.split(" (", 1)[0]))
    err_console.print(styled, soft_wrap=True, highlight=False)


def short_id(value: str | None) -> str:
    """An id for a table cell: its prefix and the last :data:`ID_TAIL` hex digits (the
    random end of the UUIDv7; the start is the time, shared by ids made together), or the
    whole id under ``--full-ids``. Anything that is not an id is returned as it is.

    >>> short_id("cmt_01a2531d-9f89-737c-9e91-4d76e0045b16")
    'cmt_…e0045b16'
    >>> short_id("driver_stats@2"), short_id(None)
    ('driver_stats@2', '-')
    """
    if value is None:
        return "-"
    prefix, sep, rest = value.partition("_")
    if settings["full_ids"] or not sep or len(rest) != 36 or rest.count("-") != 4:
        return value
    return f"{prefix}_…{rest[-ID_TAIL:]}"


def short_hash(value: str | None, n: int = 16) -> str:
    """A content hash for a table or a line: the first ``n`` hex digits (whole under
    ``--full-ids``)."""
    if value is None:
        return "-"
    return value if settings["full_ids"] or len(value) <= n else value[:n] + "…"


def when(us: int | None, *, seconds: bool = True) -> str:
    """A stored time (µs since the epoch) for a table: ``2026-01-08 12:00:00`` (UTC)."""
    if us is None:
        return "-"
    return from_us(us).strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def table(*columns: str, title: str | None = None, ids: tuple[str, ...] = ()) -> Table:
    """A table for the terminal: the columns named in ``ids`` hold ids, hashes or
    references and are never wrapped (their cells are short enough: :func:`short_id`);
    the others fold to fit the width."""
    from rich import box
    from rich.table import Table

    t = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False,
              padding=(0, 1, 0, 0))
    for col in columns:
        if col in ids:
            t.add_column(col, no_wrap=True, overflow="ignore")
        else:
            t.add_column(col, overflow="fold")
    return t


_TIME_SUFFIXES = ("_at", "_time")
_TIME_KEYS = frozenset({"as_of", "start", "end"})
_MIN_US = 10**14  # 1973 in µs: a smaller integer under a time-like key is not a time


def json_ready(value: Any) -> Any:
    """``value`` with every stored time (µs integer under a key like ``created_at``,
    ``commit_time``, ``as_of``) written as ISO 8601 text, the integer kept beside it as
    ``<key>_us``; the older ``<key>_iso`` copies are dropped.

    >>> json_ready({"created_at": 1767225600000000, "created_at_iso": "x", "rows": 3})
    {'created_at': '2026-01-01T00:00:00+00:00', 'created_at_us': 1767225600000000, 'rows': 3}
    """
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        converted = {key for key, item in value.items() if _is_time(key, item)}
        for key, item in value.items():
            if isinstance(key, str) and key.endswith("_iso") and key[:-4] in converted:
                continue
            if key in converted:
                out[key] = from_us(item).isoformat()
                out[f"{key}_us"] = item
            else:
                out[key] = json_ready(item)
        return out
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    return value


def _is_time(key: Any, value: Any) -> bool:
    """A stored time: µs since the epoch under a time-like key."""
    return (isinstance(key, str) and isinstance(value, int) and not isinstance(value, bool)
            and value >= _MIN_US and (key in _TIME_KEYS or key.endswith(_TIME_SUFFIXES)))


def print_json(value: Any) -> None:
    console.print_json(json.dumps(json_ready(value), default=str))
