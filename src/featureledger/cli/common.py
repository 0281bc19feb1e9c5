"""What every CLI command shares: the console, opening the store, output formats, and
the one way a value reaches the terminal (:func:`show`): cut to a bound, with its size, and
escaped, so data never turns into rich markup and a 10 MB string is never laid out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from featureledger.model.bounds import MESSAGE_CHARS, VALUE_CHARS, cut, shorten

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)
# the repository's bounds.value_chars once a store is open; the default before that
_bounds = {"value_chars": VALUE_CHARS}

RepoOption = typer.Option(
    Path("."), "--repo", "-r", help="Feature repository folder (holds featureledger.yaml).",
    envvar="FEATURELEDGER_REPO",
)
JsonOption = typer.Option(False, "--json", help="Print JSON instead of tables.")


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


def print_json(value: Any) -> None:
    console.print_json(json.dumps(value, default=str))
