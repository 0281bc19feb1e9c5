"""The StoreContext: what every part of featureledger may use.

Configuration, the registry, the event bus and the three storage seams (offline store,
offline engine, online store), each opened on first use from the backend table
(:mod:`featureledger.backends`) unless a ready instance was handed in. Parts receive the
context, never the facade, and reach each other through :meth:`StoreContext.part`, keyed
by the part's class, so there is one instance of each part per context.

The active run is carried in a context variable (safe across threads and asyncio tasks):
every ingestion and retrieval inside ``with store.start_run(...)`` is linked to that run.

>>> current_run_id() is None
True
>>> with active_run("run_0193"):
...     current_run_id()
'run_0193'

This module imports no part: parts import it.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from featureledger.events import EventBus

if TYPE_CHECKING:
    from featureledger.config import ProjectConfig
    from featureledger.offline.engine import OfflineEngine
    from featureledger.offline.interface import OfflineStore
    from featureledger.online.stores import OnlineStore
    from featureledger.registry import Registry

T = TypeVar("T")

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




def attach_store(engine: OfflineEngine, store: OfflineStore) -> OfflineEngine:
    """``engine``, told the file system ``store``'s files are read through.

    A store whose files are local paths has none; one on object storage hands over its
    fsspec file system, which the engine must be able to take (``attach_filesystem``):
    an engine that cannot is refused here, when it is opened, not at its first query.
    """
    from featureledger.errors import ConfigError

    fs = store.filesystem
    if fs is None:
        return engine
    attach = getattr(engine, "attach_filesystem", None)
    if not callable(attach):
        raise ConfigError(
            f"the {engine.name} offline engine cannot read the offline store at "
            f"{store.location} (it reads local files only here); use offline_engine: "
            "{type: duckdb} with this store, or an offline_store of type parquet")
    attach(fs)
    return engine


class StoreContext:
    """Configuration, registry, events, the storage seams and the parts built on them."""

    def __init__(self, config: ProjectConfig, registry: Registry, *,
                 events: EventBus | None = None,
                 offline_store: OfflineStore | None = None,
                 offline_engine: OfflineEngine | None = None,
                 online_store: OnlineStore | None = None) -> None:
        self.config = config
        self.registry = registry
        self.events = events or EventBus()
        self._seams: dict[str, Any] = {}
        # instances handed in are used as they are, and closed by whoever made them
        self._given: dict[str, Any] = {k: v for k, v in (
            ("offline_store", offline_store), ("offline_engine", offline_engine),
            ("online_store", online_store)) if v is not None}
        self._parts: dict[Any, Any] = {}
        self._engine: OfflineEngine | None = None
        # threads share a store: each seam and part is built once (re-entrant: building a
        # part may open a seam or another part)
        self._lock = threading.RLock()

    def _seam(self, name: str) -> Any:
        got = self._given.get(name) or self._seams.get(name)
        if got is None:
            with self._lock:
                got = self._seams.get(name)
                if got is None:
                    from featureledger.backends import open_backend

                    got = self._seams[name] = open_backend(name, self.config)
        return got

    @property
    def offline_store(self) -> OfflineStore:
        """Where commit and dataset files live (it owns every path)."""
        return self._seam("offline_store")  # type: ignore[no-any-return]

    @property
    def engine(self) -> OfflineEngine:
        """The offline engine: point-in-time joins, windows, latest value per key; it reads
        through the offline store's file system, handed to it once when it is opened."""
        got = self._engine
        if got is None:
            with self._lock:
                got = self._engine
                if got is None:
                    got = self._engine = attach_store(self._seam("offline_engine"),
                                                      self.offline_store)
        return got

    @property
    def online_store(self) -> OnlineStore:
        """Where the latest values per key are served from."""
        return self._seam("online_store")  # type: ignore[no-any-return]

    def part(self, cls: type[T], factory: Callable[[StoreContext], T] | None = None) -> T:
        """The context's one instance of part ``cls``, built by ``factory(self)`` (default
        ``cls(self)``) on first use."""
        got = self._parts.get(cls)
        if got is None:
            with self._lock:
                got = self._parts.get(cls)
                if got is None:
                    got = self._parts[cls] = (factory or cls)(self)  # type: ignore[call-arg]
        return got

    def close(self) -> None:
        """Close the parts newest first (services may flush into a store), then the
        seams this context opened, then the registry."""
        for part in reversed(list(self._parts.values())):
            close = getattr(part, "close", None)
            if callable(close):
                close()
        self._parts.clear()
        for seam in reversed(list(self._seams.values())):
            seam.close()
        self._seams.clear()
        self._engine = None
        self.registry.close()
