"""The online store seam: a narrow interface, and the factory that picks a backend.

An online store keeps, per view version (a *table*), one record per entity key: the
record with the newest event time seen so far (ties go to the later commit). It knows
nothing about feature types: keys are text and values are opaque payload bytes laid out
by ``featureledger.online.codec``. Every backend implements the same few methods and
passes the same conformance suite (``tests/online/test_store_conformance.py``):

* ``write(table, records, force=False)`` — upsert records; unless ``force``, a record only
  replaces one with an older ``(event_ts, commit_time, commit_id)``;
* ``read(requests)`` — records for keys of several tables at once (one round trip where
  the backend allows it); ``read_rows(requests)`` and ``read_row(table, key)`` are the
  same read trimmed to what serving needs, ``(event_ts, commit_id, payload)`` tuples
  (backends override them with their cheapest query; the defaults derive from ``read``);
* ``delete(table, keys=None)`` — remove keys, or the whole table;
* ``get_meta(name)`` / ``set_meta(name, value)`` — small text values (materialization
  progress, the change epoch);
* ``ping()`` and ``close()``.

>>> import tempfile, os
>>> from featureledger.online.sqlite import SqliteOnlineStore
>>> store = SqliteOnlineStore(os.path.join(tempfile.mkdtemp(), "online.db"))
>>> t = TableRef("driver_stats", 1)
>>> store.write(t, [OnlineRecord("1001", 10, 5, "cmt_a", b"[1]")])
1
>>> store.write(t, [OnlineRecord("1001", 9, 6, "cmt_b", b"[2]")])  # older event: kept out
0
>>> store.read([(t, ["1001", "1002"])])
[[StoredValue(event_ts=10, commit_time=5, commit_id='cmt_a', payload=b'[1]'), None]]
>>> store.close()
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple, Protocol

from featureledger.errors import ConfigError

if TYPE_CHECKING:
    from featureledger.config import ProjectConfig

EPOCH_META = "_epoch"


class TableRef(NamedTuple):
    """One view version's records in the online store."""

    view: str
    version: int

    def __str__(self) -> str:
        return f"{self.view}@{self.version}"


class OnlineRecord(NamedTuple):
    """A record to write: the entity key and the row it came from."""

    key: str
    event_ts: int  # µs since the epoch, UTC
    commit_time: int  # µs since the epoch, UTC
    commit_id: str
    payload: bytes


class StoredValue(NamedTuple):
    """A record as read back (the key is implied by the request)."""

    event_ts: int
    commit_time: int
    commit_id: str
    payload: bytes


ReadRequest = tuple[TableRef, Sequence[str]]
ServedRow = tuple[int, str, bytes]  # (event_ts, commit_id, payload)


class RowReader(Protocol):
    """What the read path needs of a store: an online store, or a reader a store offers
    for a narrower use (``SqliteOnlineStore.loop_reader``, for an event loop)."""

    def read_rows(self, requests: Sequence[ReadRequest]) -> list[list[ServedRow | None]]:
        ...

    def read_row(self, table: TableRef, key: str) -> ServedRow | None:
        ...


class OnlineStore(ABC):
    """What every online store backend provides."""

    kind: str = "abstract"

    @abstractmethod
    def write(self, table: TableRef, records: Sequence[OnlineRecord], *,
              force: bool = False) -> int:
        """Upsert ``records``; return how many were written.

        Unless ``force``, a record is written only when its ``(event_ts, commit_time,
        commit_id)`` is greater than the stored one's, so an older event never overwrites
        a newer one whatever order writers run in, and rewriting a record is a no-op.
        """

    @abstractmethod
    def read(self, requests: Sequence[ReadRequest]) -> list[list[StoredValue | None]]:
        """For each ``(table, keys)``, the stored value of each key (None when absent)."""

    def read_rows(self, requests: Sequence[ReadRequest]) -> list[list[ServedRow | None]]:
        """Like ``read``, as ``(event_ts, commit_id, payload)`` tuples (the serving path)."""
        return [[None if v is None else (v.event_ts, v.commit_id, v.payload) for v in vals]
                for vals in self.read(requests)]

    def read_row(self, table: TableRef, key: str) -> ServedRow | None:
        """``read_rows`` for one key of one table (backends make this their cheapest call)."""
        return self.read_rows([(table, [key])])[0][0]

    @abstractmethod
    def delete(self, table: TableRef, keys: Sequence[str] | None = None) -> int:
        """Remove ``keys`` from ``table`` (every key when None); return how many were removed."""

    @abstractmethod
    def get_meta(self, name: str) -> str | None:
        """A small text value stored under ``name``, or None."""

    @abstractmethod
    def set_meta(self, name: str, value: str) -> None:
        """Store a small text value under ``name``."""

    @abstractmethod
    def ping(self) -> None:
        """Return when the store answers; raise BackendUnavailableError otherwise."""

    @classmethod
    def from_config(cls, config: ProjectConfig) -> OnlineStore:
        """The store ``online_store`` in featureledger.yaml describes (each backend
        reads its own section; see featureledger.backends)."""
        raise ConfigError(f"{cls.__name__} cannot be built from featureledger.yaml; hand a "
                          "ready instance to FeatureStore(online_store=...)")

    def change_token(self) -> str | None:
        """Changes whenever any process writes or deletes (writers bump it)."""
        return self.get_meta(EPOCH_META)

    def close(self) -> None:  # noqa: B027  (optional hook: most stores have connections)
        """Release connections."""
