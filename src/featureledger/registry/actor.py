"""Who is acting: the principal a call runs as.

The registry records who did what (commits, runs, deployments, audit entries) as
``RegistryDB.actor``. That is the store's own principal (the ``principal=`` it was opened
with, ``FEATURELEDGER_PRINCIPAL``, else the OS user), unless a caller runs part of its work
as another principal: a server answering a request runs it ``acting_as`` the principal its
bearer token maps to, so what the request writes names that principal, and the access check
judges it. A context variable carries it (safe across threads and asyncio tasks; a worker
thread is handed it explicitly).

>>> acting_principal() is None
True
>>> with acting_as("svc-serving"):
...     acting_principal()
'svc-serving'
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator

from featureledger.model.timeutil import current_user

PRINCIPAL_ENV = "FEATURELEDGER_PRINCIPAL"

_acting: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "featureledger_principal", default=None)


# The principal this context acts as, if one was set with ``acting_as`` (the context
# variable's own method: the online read path calls it on every request).
acting_principal = _acting.get


@contextlib.contextmanager
def acting_as(principal: str | None) -> Iterator[str | None]:
    """Act as ``principal`` inside the block (None: the store's own principal)."""
    token = _acting.set(principal)
    try:
        yield principal
    finally:
        _acting.reset(token)


def default_principal(explicit: str | None = None) -> str:
    """The principal of a store: ``explicit``, else ``FEATURELEDGER_PRINCIPAL``, else the
    user (``FEATURELEDGER_USER`` or the OS user)."""
    return explicit or os.environ.get(PRINCIPAL_ENV) or current_user()
