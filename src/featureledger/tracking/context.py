"""The active run, carried in a context variable (safe across threads and asyncio tasks).

Every ingestion and retrieval inside ``with store.start_run(...)`` is linked to that run.

>>> current_run_id() is None
True
>>> with active_run("run_0193"):
...     current_run_id()
'run_0193'
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

_active_run: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "featureledger_active_run", default=None
)


def current_run_id(explicit: str | None = None) -> str | None:
    """The explicit run id if given, else the run active in this context."""
    return explicit if explicit is not None else _active_run.get()


@contextlib.contextmanager
def active_run(run_id: str) -> Iterator[str]:
    token = _active_run.set(run_id)
    try:
        yield run_id
    finally:
        _active_run.reset(token)


def set_active_run(run_id: str) -> contextvars.Token[str | None]:
    """Make ``run_id`` the active run of this context; undo with ``reset_active_run``.

    Used by run objects whose ``__enter__``/``__exit__`` cannot hold a ``with`` block.
    """
    return _active_run.set(run_id)


def reset_active_run(token: contextvars.Token[str | None]) -> None:
    _active_run.reset(token)
