"""The embedded online store: one SQLite file, one ``WITHOUT ROWID`` table per view version.

Each project's tables are named ``"<project>:fv_<view>_v<version>"`` and its metadata lives
in ``"<project>:fl_meta"``, so projects pointed at one file never see each other's values
(the default file is per repository anyway). A name prefix rather than a project column
keeps every read a one-column primary-key lookup, keeps dropping a view version's values a
``DROP TABLE``, and makes the separation structural: no query can forget a condition. A
file written before projects (tables ``fv_...`` and ``fl_meta``) is adopted, by renaming,
by the first project that opens it, which for the per-repository default file is its
own project.

Reads use one connection per thread (WAL mode lets them run beside a writer); statements
are cached by the driver, and ``IN`` lists are padded to a power of two so a handful of
statements serve every request size. Writes run in ``BEGIN IMMEDIATE`` transactions, and
the "never older over newer" rule is the upsert's ``WHERE`` clause, so it holds across
processes.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

from featureledger.config import ProjectConfig, check_project_name
from featureledger.errors import BackendUnavailableError, StorageError
from featureledger.online.stores import (
    EPOCH_META,
    OnlineRecord,
    OnlineStore,
    ReadRequest,
    ServedRow,
    StoredValue,
    TableRef,
)

_MAX_IN = 512  # keys per SELECT; padded sizes are powers of two up to this
_WRITE_BATCH = 5000


def table_name(table: TableRef, project: str = "default") -> str:
    # view names are identifiers (checked by the model) and project names letters, digits,
    # '_', '-' and '.' (checked by the config), so this is safe to quote
    return f'"{project}:fv_{table.view}_v{int(table.version)}"'


def meta_name(project: str = "default") -> str:
    return f'"{project}:fl_meta"'


_LEGACY_META = "fl_meta"  # the metadata table of a file from before projects


def _padded(n: int) -> int:
    size = 1
    while size < n:
        size <<= 1
    return size


class SqliteOnlineStore(OnlineStore):
    """Online values in a SQLite file."""

    kind = "sqlite"

    @classmethod
    def from_config(cls, config: ProjectConfig) -> SqliteOnlineStore:
        """The store of ``online_store: {type: sqlite, path: ...}``."""
        return cls(config.resolve(config.online_store.path),  # type: ignore[union-attr]
                   project=config.project)

    def __init__(self, path: str | Path, *, project: str = "default",
                 busy_timeout_s: float = 30.0) -> None:
        self.path = Path(path)
        self.project = check_project_name(project)
        self._meta = meta_name(self.project)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._busy_timeout_s = busy_timeout_s
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._known: set[TableRef] = set()
        self._select: dict[tuple[TableRef, int], str] = {}
        self._select_one: dict[TableRef, str] = {}
        conn = self._conn()
        with self._lock:
            self._open_project(conn)

    def _open_project(self, conn: sqlite3.Connection) -> None:
        """Create this project's metadata table, adopting a file from before projects."""
        conn.execute("BEGIN IMMEDIATE")  # one opener at a time decides about adoption
        try:
            names = {r[0] for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
            if self._meta.strip('"') not in names and _LEGACY_META in names:
                for name in sorted(n for n in names if n.startswith("fv_")):
                    conn.execute(f'ALTER TABLE "{name}" RENAME TO "{self.project}:{name}"')
                conn.execute(f"ALTER TABLE {_LEGACY_META} RENAME TO {self._meta}")
            conn.execute(f"CREATE TABLE IF NOT EXISTS {self._meta} (name TEXT PRIMARY KEY, "
                         "value TEXT NOT NULL) WITHOUT ROWID")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    # -- connections ----------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect(self._busy_timeout_s)
        return conn

    def _connect(self, busy_timeout_s: float) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.path, timeout=busy_timeout_s,
                                   isolation_level=None, check_same_thread=False,
                                   cached_statements=256)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error as exc:
            raise BackendUnavailableError(
                f"cannot open the SQLite online store {self.path}: {exc}; check that "
                "the folder exists and is writable"
            ) from None
        with self._lock:
            self._all.append(conn)
        return conn

    def loop_reader(self) -> SqliteLoopReader:
        """A reader for an event loop (see :class:`SqliteLoopReader`)."""
        return SqliteLoopReader(self)

    def _ensure(self, conn: sqlite3.Connection, table: TableRef) -> None:
        if table in self._known:
            return
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {table_name(table, self.project)} "
            "(k TEXT PRIMARY KEY, ts INTEGER NOT NULL, ct INTEGER NOT NULL, cid TEXT NOT NULL, "
            "v BLOB NOT NULL) WITHOUT ROWID"
        )
        self._known.add(table)

    # -- writes ---------------------------------------------------------------------
    def write(self, table: TableRef, records: Sequence[OnlineRecord], *,
              force: bool = False) -> int:
        if not records:
            return 0
        name = table_name(table, self.project)
        if force:
            sql = f"INSERT OR REPLACE INTO {name} (k, ts, ct, cid, v) VALUES (?, ?, ?, ?, ?)"
        else:
            sql = (
                f"INSERT INTO {name} AS t (k, ts, ct, cid, v) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(k) DO UPDATE SET ts = excluded.ts, ct = excluded.ct, "
                "cid = excluded.cid, v = excluded.v "
                "WHERE (excluded.ts, excluded.ct, excluded.cid) > (t.ts, t.ct, t.cid)"
            )
        conn = self._conn()
        written = 0
        try:
            for i in range(0, len(records), _WRITE_BATCH):
                chunk = records[i:i + _WRITE_BATCH]
                conn.execute("BEGIN IMMEDIATE")
                try:
                    self._ensure(conn, table)
                    before = conn.total_changes
                    conn.executemany(sql, chunk)
                    written += conn.total_changes - before
                    self._bump(conn)
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
        except sqlite3.Error as exc:
            self._known.discard(table)
            raise StorageError(
                f"writing {len(records)} record(s) of {table} to the SQLite online store "
                f"{self.path} failed: {exc}; check disk space and permissions, then retry"
            ) from None
        return written

    def _bump(self, conn: sqlite3.Connection) -> None:
        conn.execute(
            f"INSERT INTO {self._meta} (name, value) VALUES (?, '1') ON CONFLICT(name) DO "
            "UPDATE SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT)", (EPOCH_META,)
        )

    def delete(self, table: TableRef, keys: Sequence[str] | None = None) -> int:
        conn = self._conn()
        name = table_name(table, self.project)
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                exists = conn.execute(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                    (name.strip('"'),),
                ).fetchone()
                removed = 0
                if exists:
                    before = conn.total_changes
                    if keys is None:
                        removed = conn.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
                        conn.execute(f"DROP TABLE {name}")
                        self._known.discard(table)
                    else:
                        conn.executemany(f"DELETE FROM {name} WHERE k = ?",
                                         [(k,) for k in keys])
                        removed = conn.total_changes - before
                self._bump(conn)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StorageError(
                f"deleting from {table} in the SQLite online store {self.path} failed: "
                f"{exc}; retry"
            ) from None
        return removed

    # -- reads ----------------------------------------------------------------------
    def read(self, requests: Sequence[ReadRequest]) -> list[list[StoredValue | None]]:
        conn = self._conn()
        out: list[list[StoredValue | None]] = []
        for table, keys in requests:
            try:
                out.append(self._read_table(conn, table, keys))
            except sqlite3.OperationalError as exc:
                if "no such table" in str(exc):  # nothing materialized for this version yet
                    out.append([None] * len(keys))
                    continue
                raise StorageError(
                    f"reading {table} from the SQLite online store {self.path} failed: {exc}"
                ) from None
        return out

    def _read_table(self, conn: sqlite3.Connection, table: TableRef,
                    keys: Sequence[str]) -> list[StoredValue | None]:
        if len(keys) == 1:
            sql = self._select.get((table, 1))
            if sql is None:
                sql = f"SELECT ts, ct, cid, v FROM {table_name(table, self.project)} WHERE k = ?"
                self._select[(table, 1)] = sql
            row = conn.execute(sql, (keys[0],)).fetchone()
            return [None if row is None else StoredValue(*row)]
        found: dict[str, StoredValue] = {}
        for i in range(0, len(keys), _MAX_IN):
            chunk = list(keys[i:i + _MAX_IN])
            size = _padded(len(chunk))
            sql = self._select.get((table, size))
            if sql is None:
                sql = (f"SELECT k, ts, ct, cid, v FROM {table_name(table, self.project)} "
                       f"WHERE k IN ({','.join('?' * size)})")
                self._select[(table, size)] = sql
            chunk += [chunk[-1]] * (size - len(chunk))
            for k, ts, ct, cid, v in conn.execute(sql, chunk):
                found[k] = StoredValue(ts, ct, cid, v)
        get = found.get
        return [get(k) for k in keys]

    def read_row(self, table: TableRef, key: str) -> ServedRow | None:
        return self._read_row(getattr(self._local, "conn", None) or self._conn(), table, key)

    def _read_row(self, conn: sqlite3.Connection, table: TableRef, key: str
                  ) -> ServedRow | None:
        sql = self._select_one.get(table)
        if sql is None:
            sql = self._select_one[table] = (
                f"SELECT ts, cid, v FROM {table_name(table, self.project)} WHERE k = ?")
        try:
            return conn.execute(sql, (key,)).fetchone()  # type: ignore[no-any-return]
        except sqlite3.OperationalError:
            return self._read_rows(conn, [(table, [key])])[0][0]  # its errors say what failed

    def read_rows(self, requests: Sequence[ReadRequest]) -> list[list[ServedRow | None]]:
        return self._read_rows(self._conn(), requests)

    def _read_rows(self, conn: sqlite3.Connection, requests: Sequence[ReadRequest]
                   ) -> list[list[ServedRow | None]]:
        # the serving path: one prepared SELECT per table (a primary-key lookup, or one
        # padded IN list per 512 keys) returning the three columns serving needs
        out: list[list[ServedRow | None]] = []
        for table, keys in requests:
            try:
                if len(keys) == 1:
                    sql = self._select.get((table, 0))
                    if sql is None:
                        sql = self._select[(table, 0)] = (
                            f"SELECT ts, cid, v FROM {table_name(table, self.project)} "
                            "WHERE k = ?")
                    out.append([conn.execute(sql, (keys[0],)).fetchone()])
                    continue
                found: dict[str, ServedRow] = {}
                for i in range(0, len(keys), _MAX_IN):
                    chunk = list(keys[i:i + _MAX_IN])
                    size = _padded(len(chunk))
                    sql = self._select.get((table, -size))
                    if sql is None:
                        sql = self._select[(table, -size)] = (
                            f"SELECT k, ts, cid, v FROM {table_name(table, self.project)} "
                            f"WHERE k IN ({','.join('?' * size)})")
                    if size > len(chunk):
                        chunk += [chunk[-1]] * (size - len(chunk))
                    found.update({k: (ts, cid, v)
                                  for k, ts, cid, v in conn.execute(sql, chunk)})
                get = found.get
                out.append([get(k) for k in keys])
            except sqlite3.OperationalError as exc:
                if "no such table" in str(exc):  # nothing materialized for this version yet
                    out.append([None] * len(keys))
                    continue
                raise StorageError(
                    f"reading {table} from the SQLite online store {self.path} failed: {exc}"
                ) from None
        return out

    # -- metadata and health ----------------------------------------------------------
    def get_meta(self, name: str) -> str | None:
        row = self._conn().execute(f"SELECT value FROM {self._meta} WHERE name = ?",
                                   (name,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, name: str, value: str) -> None:
        conn = self._conn()
        try:
            conn.execute(f"INSERT INTO {self._meta} (name, value) VALUES (?, ?) "
                         "ON CONFLICT(name) DO UPDATE SET value = excluded.value", (name, value))
        except sqlite3.Error as exc:
            raise StorageError(f"writing metadata to {self.path} failed: {exc}; retry") from None

    def ping(self) -> None:
        try:
            self._conn().execute("SELECT 1").fetchone()
        except sqlite3.Error as exc:
            raise BackendUnavailableError(
                f"the SQLite online store {self.path} does not answer: {exc}"
            ) from None

    def close(self) -> None:
        with self._lock:
            conns, self._all = self._all, []
        for c in conns:
            with contextlib.suppress(sqlite3.Error):
                c.close()
        self._local = threading.local()


class SqliteLoopReader:
    """``read_row`` and ``read_rows`` of a :class:`SqliteOnlineStore` for an event loop.

    A primary-key read of a local SQLite file takes microseconds, less than handing it to
    a thread and being woken with the answer, so a server may answer small reads on its
    event loop. What could make such a read wait is refused at once instead: the reader
    has a connection of its own with no busy timeout, so a file locked against readers
    (a WAL being recovered, a writer in rollback-journal mode) is an immediate
    ``StorageError`` ("database is locked"), and the caller reads on a thread. What
    cannot be refused (a disk that stalls) is the caller's to bound: it times each read
    and stops reading on the loop after one that took too long.
    """

    kind = "sqlite"

    def __init__(self, store: SqliteOnlineStore) -> None:
        self.store = store
        self._conn = store._connect(0.0)

    def read_row(self, table: TableRef, key: str) -> ServedRow | None:
        return self.store._read_row(self._conn, table, key)

    def read_rows(self, requests: Sequence[ReadRequest]) -> list[list[ServedRow | None]]:
        return self.store._read_rows(self._conn, requests)
