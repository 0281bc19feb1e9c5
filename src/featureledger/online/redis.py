"""The Redis online store: one string value per entity key, read with a single MGET.

Key layout: ``<prefix>:<view>:<version>:<entity key>``; value:
``<event_ts>|<commit_time>|<commit_id>|<payload>``. Metadata lives in the hash
``<prefix>:_meta``. The prefix defaults to ``fl:<project>`` (:func:`default_key_prefix`), so
projects sharing a server and database keep apart without configuration; an explicit
``key_prefix`` replaces it (and then must differ between projects). Conditional writes
("never older over newer") run as a Lua script, so the comparison and the write are atomic
on the server whatever the number of writers.

Every call has explicit connect and read timeouts and a bounded number of retries with
exponential backoff; when the server does not answer within that budget the call raises
``BackendUnavailableError`` instead of hanging. ``probe()`` is one attempt without
retries, for health checks that ask often and must learn of an outage in one timeout.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from featureledger.errors import BackendUnavailableError, MissingDependencyError, StorageError
from featureledger.online.stores import (
    EPOCH_META,
    OnlineRecord,
    OnlineStore,
    ReadRequest,
    ServedRow,
    StoredValue,
    TableRef,
)

if TYPE_CHECKING:
    from featureledger.config import ProjectConfig

T = TypeVar("T")
_WRITE_BATCH = 1000


def default_key_prefix(project: str) -> str:
    """The key prefix of a project that configures none.

    >>> default_key_prefix("fraud")
    'fl:fraud'
    """
    return f"fl:{project}"

# KEYS: the record keys, then the meta hash. ARGV: the values, in the same order.
_UPSERT_LUA = """
local n = 0
local meta = KEYS[#KEYS]
local function split(s)
  local a = string.find(s, '|', 1, true)
  local b = string.find(s, '|', a + 1, true)
  local c = string.find(s, '|', b + 1, true)
  return tonumber(string.sub(s, 1, a - 1)), tonumber(string.sub(s, a + 1, b - 1)),
         string.sub(s, b + 1, c - 1)
end
for i = 1, #KEYS - 1 do
  local new = ARGV[i]
  local old = redis.call('GET', KEYS[i])
  local write = true
  if old then
    local ots, oct, ocid = split(old)
    local nts, nct, ncid = split(new)
    if nts < ots then write = false
    elseif nts == ots then
      if nct < oct then write = false
      elseif nct == oct and ncid <= ocid then write = false end
    end
  end
  if write then
    redis.call('SET', KEYS[i], new)
    n = n + 1
  end
end
redis.call('HINCRBY', meta, '""" + EPOCH_META + """', 1)
return n
"""


class RedisOnlineStore(OnlineStore):
    """Online values in Redis."""

    kind = "redis"

    @classmethod
    def from_config(cls, config: ProjectConfig) -> RedisOnlineStore:
        """The store of ``online_store: {type: redis, ...}`` (default key prefix: the
        project's own)."""
        cfg: Any = config.online_store
        prefix = cfg.key_prefix if cfg.key_prefix is not None else \
            default_key_prefix(config.project)
        return cls(cfg.url, key_prefix=prefix, timeout_s=cfg.timeout_s, retries=cfg.retries)

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", *, key_prefix: str = "fl",
                 timeout_s: float = 0.5, retries: int = 2) -> None:
        try:
            import redis
            from redis.backoff import ExponentialBackoff
            from redis.retry import Retry
        except ImportError:
            raise MissingDependencyError("the Redis online store", "redis", "redis") from None
        self._redis = redis
        self.url = url
        self.prefix = key_prefix
        self.timeout_s = timeout_s
        self.retries = retries
        self._meta = f"{key_prefix}:_meta"
        self.client = redis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(ExponentialBackoff(cap=timeout_s, base=0.01), retries),
            retry_on_error=[redis.exceptions.ConnectionError, redis.exceptions.TimeoutError],
            health_check_interval=0,
        )
        self._script: Any = None
        self._script_lock = threading.Lock()
        self._probe_client: Any = None

    @property
    def location(self) -> str:
        """The server's URL without its password (for messages and health reports)."""
        return self._safe_url()

    # -- plumbing -------------------------------------------------------------------
    def _safe_url(self) -> str:
        _head, sep, tail = self.url.rpartition("@")
        return f"redis://***@{tail}" if sep else self.url

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        exc_mod = self._redis.exceptions
        try:
            return fn()
        except (exc_mod.ConnectionError, exc_mod.TimeoutError) as exc:
            budget = (self.retries + 1) * self.timeout_s
            raise BackendUnavailableError(
                f"Redis at {self._safe_url()} did not answer {what} within "
                f"{self.retries + 1} attempt(s) of {self.timeout_s}s (about {budget:.1f}s): "
                f"{exc}. Check that the server is running and reachable, or raise "
                "online_store.timeout_s / retries."
            ) from None
        except exc_mod.RedisError as exc:
            raise StorageError(f"Redis {what} failed: {exc}") from None

    def _prefix(self, table: TableRef) -> str:
        return f"{self.prefix}:{table.view}:{int(table.version)}:"

    @staticmethod
    def _encode(r: OnlineRecord) -> bytes:
        return b"%d|%d|%s|" % (r.event_ts, r.commit_time, r.commit_id.encode()) + r.payload

    @staticmethod
    def _decode(raw: bytes | None) -> StoredValue | None:
        if raw is None:
            return None
        ts, ct, cid, payload = raw.split(b"|", 3)
        return StoredValue(int(ts), int(ct), cid.decode(), payload)

    # -- writes ---------------------------------------------------------------------
    def write(self, table: TableRef, records: Sequence[OnlineRecord], *,
              force: bool = False) -> int:
        if not records:
            return 0
        prefix = self._prefix(table)
        if self._script is None:
            with self._script_lock:
                if self._script is None:
                    self._script = self.client.register_script(_UPSERT_LUA)
        written = 0
        for i in range(0, len(records), _WRITE_BATCH):
            chunk = records[i:i + _WRITE_BATCH]
            keys = [prefix + r.key for r in chunk]
            values = [self._encode(r) for r in chunk]
            if force:
                def run(keys: list[str] = keys, values: list[bytes] = values) -> int:
                    pipe = self.client.pipeline(transaction=True)
                    pipe.mset(dict(zip(keys, values, strict=False)))
                    pipe.hincrby(self._meta, EPOCH_META, 1)
                    pipe.execute()
                    return len(keys)
            else:
                def run(keys: list[str] = keys, values: list[bytes] = values) -> int:
                    return int(self._script(keys=[*keys, self._meta], args=values))
            written += self._call(f"writing {len(chunk)} record(s) of {table}", run)
        return written

    def delete(self, table: TableRef, keys: Sequence[str] | None = None) -> int:
        prefix = self._prefix(table)

        def run() -> int:
            if keys is not None:
                names = [prefix + k for k in keys]
            else:
                names = list(self.client.scan_iter(match=_glob_escape(prefix) + "*",
                                                   count=1000))
            removed = 0
            for i in range(0, len(names), _WRITE_BATCH):
                removed += int(self.client.delete(*names[i:i + _WRITE_BATCH]))
            self.client.hincrby(self._meta, EPOCH_META, 1)
            return removed

        return self._call(f"deleting from {table}", run)

    # -- reads ----------------------------------------------------------------------
    def read(self, requests: Sequence[ReadRequest]) -> list[list[StoredValue | None]]:
        names: list[str] = []
        for table, keys in requests:
            prefix = self._prefix(table)
            names.extend(prefix + k for k in keys)
        if not names:
            return [[] for _ in requests]
        raw: Any = self._call("a read", lambda: self.client.mget(names))
        out: list[list[StoredValue | None]] = []
        pos = 0
        decode = self._decode
        for _table, keys in requests:
            out.append([decode(r) for r in raw[pos:pos + len(keys)]])
            pos += len(keys)
        return out

    def read_row(self, table: TableRef, key: str) -> ServedRow | None:
        name = self._prefix(table) + key
        raw: Any = self._call("a read", lambda: self.client.get(name))
        if raw is None:
            return None
        ts, _ct, cid, payload = raw.split(b"|", 3)
        return int(ts), cid.decode(), payload

    def read_rows(self, requests: Sequence[ReadRequest]) -> list[list[ServedRow | None]]:
        names: list[str] = []
        for table, keys in requests:
            prefix = self._prefix(table)
            names.extend([prefix + k for k in keys])
        if not names:
            return [[] for _ in requests]
        raw: Any = self._call("a read", lambda: self.client.mget(names))
        out: list[list[ServedRow | None]] = []
        pos = 0
        r: Any
        for _table, keys in requests:
            rows: list[ServedRow | None] = []
            for r in raw[pos:pos + len(keys)]:
                if r is None:
                    rows.append(None)
                else:
                    ts, _ct, cid, payload = r.split(b"|", 3)
                    rows.append((int(ts), cid.decode(), payload))
            out.append(rows)
            pos += len(keys)
        return out

    # -- metadata and health ----------------------------------------------------------
    def get_meta(self, name: str) -> str | None:
        value: Any = self._call("a metadata read",
                                lambda: self.client.hget(self._meta, name))
        return None if value is None else value.decode()

    def set_meta(self, name: str, value: str) -> None:
        self._call("a metadata write", lambda: self.client.hset(self._meta, name, value))

    def ping(self) -> None:
        self._call("PING", self.client.ping)

    def probe(self) -> None:
        """One PING on its own connection, no retries: a health check learns of an outage
        within one ``timeout_s`` (``ping`` would wait out the whole retry budget), and its
        connection is never one a read is waiting on."""
        if self._probe_client is None:
            from redis.backoff import NoBackoff
            from redis.retry import Retry

            self._probe_client = self._redis.Redis.from_url(
                self.url, socket_timeout=self.timeout_s,
                socket_connect_timeout=self.timeout_s, retry=Retry(NoBackoff(), 0),
                health_check_interval=0)
        exc_mod = self._redis.exceptions
        try:
            self._probe_client.ping()
        except (exc_mod.ConnectionError, exc_mod.TimeoutError) as exc:
            raise BackendUnavailableError(
                f"Redis at {self._safe_url()} did not answer PING within {self.timeout_s}s: "
                f"{str(exc).rstrip('.')}. Check that the server is running and reachable."
            ) from None
        except exc_mod.RedisError as exc:
            raise StorageError(f"Redis PING failed: {exc}") from None

    def close(self) -> None:
        self.client.close()
        if self._probe_client is not None:
            self._probe_client.close()


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
