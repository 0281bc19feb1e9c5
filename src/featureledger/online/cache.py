"""The in-process read cache and the change watcher that keeps it (and read plans) fresh.

The cache holds decoded records ``(event_ts, commit_id, values)`` per table and key, and
None for "no record for this key". It is never trusted past a change that could affect
it:

* a materialization or push in this process drops the affected table at once;
* a registry write in this process (apply, quarantine, rollback, restore, ingestion) is
  seen by a hook on the registry engine, and the next read drops everything;
* writes by other processes are seen by polling the registry generation and the online
  store's change epoch every ``poll_interval_s`` (so the staleness bound across processes
  is that interval; set it to 0 to check on every read). The polling runs on a background
  thread, so a read never waits for it: a read only looks at a flag, and refreshes plans
  and cache itself when the flag says something changed.

A reader only inserts what it read if the table's epoch did not move while it was
reading, so a write racing with a read can never leave an old value cached.

>>> c = OnlineCache(max_entries=10)
>>> from featureledger.online.stores import TableRef
>>> t = TableRef("stats", 1)
>>> epoch = c.epoch(t)
>>> c.put_many(t, epoch, [("1", (10, "cmt_a", [1.5])), ("2", None)])
>>> c.get(t, "1"), c.get(t, "2", "absent"), c.get(t, "3", "absent")
((10, 'cmt_a', [1.5]), None, 'absent')
>>> c.invalidate_table(t)
>>> c.get(t, "1", "absent")
'absent'
>>> c.put_many(t, epoch, [("1", None)])  # read before the invalidation: not cached
>>> c.table(t) is None
True
"""

from __future__ import annotations

import math
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from featureledger.online.stores import TableRef


class OnlineCache:
    """Decoded online records by table and key, with per-table epochs."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        self._tables: dict[TableRef, dict[str, Any]] = {}
        self._epochs: dict[TableRef, int] = {}
        self._global = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.invalidations = 0

    def epoch(self, table: TableRef) -> tuple[int, int]:
        return (self._global, self._epochs.get(table, 0))

    def table(self, table: TableRef) -> dict[str, Any] | None:
        """The cached records of ``table`` by key (read-only for callers), or None."""
        return self._tables.get(table)

    def get(self, table: TableRef, key: str, default: Any = None) -> Any:
        """The cached record of ``key`` (None: cached as absent), else ``default``."""
        t = self._tables.get(table)
        return default if t is None else t.get(key, default)

    def put_many(self, table: TableRef, epoch: tuple[int, int],
                 items: Iterable[tuple[str, Any]]) -> None:
        with self._lock:
            if epoch != (self._global, self._epochs.get(table, 0)):
                return  # the table changed while the caller was reading
            t = self._tables.get(table)
            if t is None:
                t = self._tables[table] = {}
            elif len(t) >= self.max_entries:
                t.clear()  # bounded memory; a full table starts over
            t.update(items)

    def invalidate_table(self, table: TableRef) -> None:
        with self._lock:
            self._epochs[table] = self._epochs.get(table, 0) + 1
            self._tables.pop(table, None)
            self.invalidations += 1

    def invalidate_all(self) -> None:
        with self._lock:
            self._global += 1
            self._tables.clear()
            self.invalidations += 1

    def stats(self) -> dict[str, Any]:
        total = self.hits + self.misses
        return {
            "entries": sum(len(t) for t in self._tables.values()),
            "hits": self.hits,
            "misses": self.misses,
            "hit_ratio": (self.hits / total) if total else 0.0,
            "invalidations": self.invalidations,
        }


class ChangeWatcher:
    """Tells the service when the registry or the online store may have changed.

    ``check()`` is called on every read. It costs an attribute read unless a change was
    seen: an in-process registry write (a hook on the registry engine), or a change by
    another process found by the poller thread (every ``poll_interval_s``; started on
    the first refresh). With ``poll_interval_s`` 0 there is no thread and every check
    queries the registry and the store.
    """

    def __init__(self, registry: Any, store: Any, poll_interval_s: float,
                 on_registry_change: Callable[[], None],
                 on_store_change: Callable[[], None]) -> None:
        self.registry = registry
        self.store = store
        self.poll_interval_s = poll_interval_s
        self._on_registry_change = on_registry_change
        self._on_store_change = on_store_change
        self._dirty = False
        self._lock = threading.Lock()
        self._generation: int | None = None
        self._store_token: Any = None
        self._next_poll = 0.0  # +inf while the poller thread runs
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        self._db = getattr(registry, "db", None)
        if self._db is not None:
            self._db.on_write(self._on_write)

    def _on_write(self) -> None:
        self._dirty = True

    @property
    def generation(self) -> int | None:
        return self._generation

    def check(self) -> None:
        if self._dirty or time.monotonic() >= self._next_poll:
            self.refresh(only_if_due=True)

    def refresh(self, *, store: bool = True, only_if_due: bool = False) -> None:
        """Look for changes now. From the read path (``only_if_due``) this also starts
        the poller thread, so a process that never reads never has one."""
        with self._lock:
            if only_if_due and not self._dirty and time.monotonic() < self._next_poll:
                return  # another thread refreshed while this one waited for the lock
            self._dirty = False
            generation = self.registry.generation()
            if generation != self._generation:
                first = self._generation is None
                self._generation = generation
                if not first:
                    self._on_registry_change()
            if store:
                token = self.store.change_token()
                if token != self._store_token:
                    self._store_token = token
                    self._on_store_change()
            if self.poll_interval_s <= 0:
                self._next_poll = 0.0
            elif self._poller is not None:
                self._next_poll = math.inf
            elif self._stop.is_set():
                self._next_poll = time.monotonic() + self.poll_interval_s
            elif not only_if_due:
                self._next_poll = 0.0  # the first read checks again and starts the poller
            else:
                self._next_poll = math.inf
                # the thread holds the watcher weakly: a store dropped without close()
                # does not keep a thread polling for it
                self._poller = threading.Thread(
                    target=_poll, args=(weakref.ref(self), self._stop, self.poll_interval_s),
                    daemon=True, name="featureledger-change-poller")
                self._poller.start()

    def _changed(self) -> bool:
        try:
            return (self.registry.generation() != self._generation
                    or self.store.change_token() != self._store_token)
        except Exception:  # the reader's own refresh reports the error to its caller
            return True

    def close(self) -> None:
        self._stop.set()
        poller = self._poller
        if poller is not None and poller is not threading.current_thread():
            poller.join(timeout=5)
        if self._db is not None:
            self._db.remove_on_write(self._on_write)


def _poll(ref: weakref.ref[ChangeWatcher], stop: threading.Event, interval: float) -> None:
    """Look for changes by other processes; a change only raises the watcher's flag."""
    while not stop.wait(interval):
        watcher = ref()
        if watcher is None:
            return
        if watcher._changed() and not stop.is_set():
            watcher._dirty = True
        del watcher
