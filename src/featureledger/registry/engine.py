"""Registry connection: engine creation, migrations, transactions, generation, audit.

SQLite is the embedded default and PostgreSQL the server backend; the same code serves
both. Writers serialise: SQLite transactions begin IMMEDIATE (one writer at a time, others
wait up to the busy timeout), PostgreSQL write transactions may take an advisory lock.

A RegistryDB serves one project: its connections carry the project (``conn.info``), its
queries are scoped with :meth:`RegistryDB.scope`, and every statement is checked for that
scope before it runs (see ``scope.py``).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from featureledger.config import check_project_name
from featureledger.errors import (
    BackendUnavailableError,
    ConcurrencyError,
    ConfigError,
    DiskFullError,
    FeatureLedgerError,
    NameTooLongError,
    RegistryReadOnlyError,
    StorageError,
    ValueTooLongError,
)
from featureledger.model.hashing import canonical_json
from featureledger.model.timeutil import now_us
from featureledger.registry import audit as chain
from featureledger.registry import schema
from featureledger.registry.actor import acting_principal, default_principal
from featureledger.registry.scope import INFO_KEY, SKIP_KEY, check_statement, scope

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
DEFAULT_PROJECT = "default"


def _alembic_config(connection: Connection, project: str = DEFAULT_PROJECT) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = connection
    # rows that predate projects (revision 0003) are given to the project that upgrades
    cfg.attributes["project"] = project
    return cfg


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("featureledger")
    except PackageNotFoundError:
        return "(not installed)"


_REVISION_LINE = re.compile(r'^(down_revision|revision)\s*=\s*(None|"([^"]*)")\s*$', re.M)


@functools.cache
def known_revisions() -> dict[str, str | None]:
    """Every migration revision this featureledger ships, to its ``down_revision``, read
    from the migration files' own ``revision = "..."`` / ``down_revision = "..."`` lines."""
    revisions: dict[str, str | None] = {}
    for path in sorted((MIGRATIONS_DIR / "versions").glob("*.py")):
        found = {m.group(1): m.group(3) for m in _REVISION_LINE.finditer(path.read_text())}
        if found.get("revision"):
            revisions[found["revision"]] = found.get("down_revision")
    return revisions


@functools.cache
def head_revision() -> str:
    """The newest migration's revision id (see :func:`known_revisions`).

    Every command opens the registry and compares its revision with this one; importing
    alembic to find it cost more than the rest of a short command, so alembic is loaded
    only to migrate (or here, when the files are not one plain chain).
    """
    revisions = known_revisions()
    heads = set(revisions) - {down for down in revisions.values() if down}
    if len(heads) == 1:
        return heads.pop()
    return alembic_head_revision()


def alembic_head_revision() -> str:
    """The head revision as alembic computes it (imports alembic: slow)."""
    from alembic.script import ScriptDirectory

    cfg = _alembic_config(None)  # type: ignore[arg-type]
    return ScriptDirectory.from_config(cfg).get_current_head() or ""


def create_registry_engine(url: str) -> Engine:
    """An engine for ``url`` with the settings featureledger relies on."""
    try:
        sa_url = sa.engine.make_url(url)
    except Exception as exc:
        raise ConfigError(
            f"registry URL {url!r} is not a valid SQLAlchemy URL ({exc}); "
            "use e.g. sqlite:///registry.db or postgresql+psycopg://host/db"
        ) from None
    if sa_url.get_backend_name() == "sqlite":
        if sa_url.database and sa_url.database != ":memory:":
            Path(sa_url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(
            sa_url, connect_args={"timeout": 60, "check_same_thread": False}
        )

        @sa.event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _rec: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.close()

        @sa.event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            mode = conn.info.get("begin_mode", "DEFERRED")
            conn.exec_driver_sql(f"BEGIN {mode}")

        return engine
    if sa_url.get_backend_name() == "postgresql":
        if sa_url.drivername == "postgresql":
            sa_url = sa_url.set(drivername="postgresql+psycopg")
        return sa.create_engine(
            sa_url, pool_pre_ping=True, connect_args={"connect_timeout": 10}
        )
    raise ConfigError(
        f"registry backend {sa_url.get_backend_name()!r} is not supported; "
        "use sqlite or postgresql"
    )


# -- driver errors, translated where featureledger meets the driver --------------------------
# SQLite result codes (sqlite3.Error.sqlite_errorcode, primary code in the low byte) and
# PostgreSQL SQLSTATEs that are the environment, not a bug: each becomes a typed error that
# says what happened, so a full disk is never reported as a server that may be down.
_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_READONLY = 5, 6, 8
_SQLITE_IOERR, _SQLITE_FULL, _SQLITE_CANTOPEN = 10, 13, 14
_LOW_SPACE = 1 << 20  # a folder with less free space than this counts as full


def _disk_nearly_full(path: Path | None) -> bool:
    import shutil

    for p in (path, path.parent if path else None):
        if p is not None and p.exists():
            try:
                return shutil.disk_usage(p).free < _LOW_SPACE
            except OSError:
                return False
    return False


def translate_error(exc: sa.exc.DBAPIError, *, where: str, sqlite_path: Path | None,
                    connecting: bool = False) -> FeatureLedgerError:
    """The typed error for a driver error met while ``connecting`` to, reading or writing
    the registry at ``where`` (a URL without its password)."""
    orig = exc.orig
    text = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    nothing = "the transaction was rolled back, so nothing was written"
    if sqlite_path is not None:  # SQLite: the file system is the server
        code = (getattr(orig, "sqlite_errorcode", None) or 0) & 0xFF
        if code == _SQLITE_FULL or (code in (_SQLITE_IOERR, _SQLITE_CANTOPEN, 0)
                                    and _disk_nearly_full(sqlite_path)):
            return DiskFullError(
                f"the disk holding the registry {sqlite_path} is full ({text}); {nothing}. "
                "Free space on that disk (or move the registry) and retry",
                path=str(sqlite_path))
        if code == _SQLITE_READONLY:
            return RegistryReadOnlyError(
                f"the registry {sqlite_path} is read-only ({text}); {nothing}. Make the "
                "file and its folder writable for this user (SQLite also writes "
                f"{sqlite_path.name}-wal and -shm beside it), or open a writable copy")
        if code in (_SQLITE_BUSY, _SQLITE_LOCKED):
            return ConcurrencyError(
                f"the registry {sqlite_path} stayed locked by another writer for the whole "
                f"busy timeout ({text}); {nothing}. Retry; if it persists, look for a "
                "process holding a long write transaction")
        if code == _SQLITE_CANTOPEN:
            return StorageError(
                f"cannot open the registry file {sqlite_path} ({text}); check that its "
                "folder exists and that this user may create files there")
        return StorageError(
            f"the registry {sqlite_path} failed: {text}; {nothing}. Check the disk holding "
            "it; run 'featureledger reconcile' once it works again")
    state = str(getattr(orig, "sqlstate", "") or "")
    if state == "53100":
        return DiskFullError(f"the PostgreSQL server of the registry at {where} has no disk "
                             f"space left ({text}); {nothing}. Free space on the server and "
                             "retry", path=where)
    if state == "25006":
        return RegistryReadOnlyError(
            f"the registry at {where} is read-only ({text}: a standby, or "
            f"default_transaction_read_only); {nothing}. Point the registry at the primary")
    if state == "22001":
        return ValueTooLongError(f"a value is longer than its registry column ({text}); "
                                 f"{nothing}. Shorten it")
    if state in ("40001", "40P01", "55P03"):
        return ConcurrencyError(f"the registry at {where} aborted the transaction to resolve "
                                f"a conflict with another writer ({text}); {nothing}. Retry")
    if connecting or state.startswith(("08", "57P")) or state in ("53300",):
        return BackendUnavailableError(
            f"cannot connect to the registry at {where}: {text}. Check that the database "
            "server is running and the URL is right")
    return StorageError(f"the registry at {where} failed: {text}; {nothing}. Retry; if it "
                        "persists, check the database server")


# Columns that hold a definition's name: a value too long for them is a definition error.
_NAME_COLUMNS = frozenset({("definitions", "name"), ("commits", "view_name"),
                           ("model_features", "view_name")})


def check_lengths(conn: Connection, statement: Any, multiparams: Any, params: Any,
                  _execution_options: Any) -> None:
    """``before_execute`` hook: refuse an INSERT or UPDATE whose text value is longer than
    its ``String(n)`` column, naming the column, before the driver sees it.

    SQLite does not enforce lengths and PostgreSQL fails with a driver error, so without
    this the same input would be stored on one backend and be an "internal error" on the
    other.
    """
    if not isinstance(statement, (sa.sql.dml.Insert, sa.sql.dml.Update)):
        return
    table: Any = statement.table
    columns = getattr(table, "c", None)
    if columns is None:
        return
    rows: list[Any] = [{k: getattr(v, "value", v) for k, v in statement._values.items()}
                       if statement._values else {}]
    for group in (multiparams or ()):
        rows.extend(group if isinstance(group, (list, tuple)) else [group])
    if params:
        rows.append(params)
    for row in rows:
        if not isinstance(row, dict):
            continue
        for key, value in row.items():
            name = key if isinstance(key, str) else getattr(key, "key", None)
            col = columns.get(name) if name else None
            limit = getattr(getattr(col, "type", None), "length", None)
            if not isinstance(value, str) or limit is None or len(value) <= limit:
                continue
            what = f"{table.name}.{name}"
            shown = value[:40] + "..." if len(value) > 40 else value
            message = (f"{shown!r} is {len(value)} characters, longer than the "
                       f"{limit} the registry holds in {what}; nothing was written. Use a "
                       "shorter value")
            if (table.name, name) in _NAME_COLUMNS:
                raise NameTooLongError(message.replace("Use a shorter value",
                                                       "Give the definition a shorter name"),
                                       column=what, limit=limit)
            raise ValueTooLongError(message, column=what, limit=limit)


class RegistryDB:
    """A migrated registry database, seen as one project: transactions, the project's
    generation counter and its audit trail."""

    def __init__(self, url: str, *, project: str = DEFAULT_PROJECT, actor: str | None = None,
                 migrate: bool = True) -> None:
        self.url = url
        self._write_listeners: list[Callable[[], None]] = []
        self.project = check_project_name(project)
        self.principal = default_principal(actor)
        self.engine = create_registry_engine(url)
        self.dialect = self.engine.dialect.name
        sa.event.listen(self.engine, "before_execute", check_statement)
        sa.event.listen(self.engine, "before_execute", check_lengths)
        if migrate:
            self.migrate()

    @property
    def actor(self) -> str:
        """Who is acting: the principal this context acts as (``acting_as``), else the
        store's own (``principal=``, ``FEATURELEDGER_PRINCIPAL``, else the OS user)."""
        return acting_principal() or self.principal

    def scope(self, *tables: Any) -> Any:
        """The condition keeping only this project's rows of ``tables``; every query over
        the registry has it (the engine refuses statements that do not)."""
        return scope(self.project, *tables)

    # -- migrations -----------------------------------------------------------------
    def current_revision(self) -> str | None:
        with self._connect() as conn:
            if not sa.inspect(conn).has_table("alembic_version"):
                return None
            return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()

    def migrate(self, revision: str = "head") -> None:
        """Upgrade the schema to ``revision`` (default: the newest); safe when processes race.

        Rows written before revision 0003 (when the registry had no projects) become rows
        of this RegistryDB's project.
        """
        target = head_revision() if revision == "head" else revision
        current = self.current_revision()
        if current == target:
            return
        if current is not None and current not in known_revisions():
            # a newer featureledger upgraded it: this one would misread its rows
            raise StorageError(
                f"the registry at {self._safe_url()} has schema revision {current}, newer "
                f"than this featureledger {_version()} knows (its newest is {target}); "
                "another process with a newer featureledger upgraded it. Upgrade "
                "featureledger here to that version (pip install -U featureledger); nothing "
                "was changed")
        from alembic import command

        with self._connect() as conn:
            conn.info[SKIP_KEY] = True  # migrations rewrite every project's rows
            try:
                if self.dialect == "postgresql":
                    conn.exec_driver_sql("SELECT pg_advisory_lock(7428190311)")
                    try:
                        command.upgrade(_alembic_config(conn, self.project), target)
                        conn.commit()
                    except BaseException:
                        # end the failed transaction, so the unlock runs and the upgrade's
                        # own error is the one reported (the session lock outlives it)
                        conn.rollback()
                        raise
                    finally:
                        conn.exec_driver_sql("SELECT pg_advisory_unlock(7428190311)")
                        conn.commit()
                else:
                    self._migrate_sqlite(conn, command, target)
            finally:
                conn.info.pop(SKIP_KEY, None)

    def _migrate_sqlite(self, conn: Connection, command: Any, target: str) -> None:
        # SQLite changes a table's keys by copying it into a new table; foreign keys are
        # switched off meanwhile (outside the transaction: the pragma is ignored inside
        # one) and checked before the commit, as SQLite's own procedure prescribes. The
        # transaction is ours, so every revision of the upgrade commits or none does.
        raw: Any = conn.connection.dbapi_connection
        raw.execute("PRAGMA foreign_keys=OFF")
        conn.info["begin_mode"] = "IMMEDIATE"  # one migrator at a time
        try:
            conn.begin()
            command.upgrade(_alembic_config(conn, self.project), target)
            broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
            if broken:
                raise StorageError(
                    f"upgrading the registry at {self._safe_url()} would break "
                    f"{len(broken)} foreign key(s) (first: {tuple(broken[0])}); nothing was "
                    "changed. Restore the registry from a backup and retry")
            conn.commit()
        finally:
            if conn.in_transaction():
                conn.rollback()
            conn.info.pop("begin_mode", None)
            raw.execute("PRAGMA foreign_keys=ON")

    # -- transactions -----------------------------------------------------------------
    def _sqlite_path(self) -> Path | None:
        if self.dialect != "sqlite":
            return None
        database = sa.engine.make_url(self.url).database
        return Path(database).absolute() if database and database != ":memory:" else Path(
            ":memory:")

    def translate(self, exc: sa.exc.DBAPIError, *, connecting: bool = False
                  ) -> FeatureLedgerError:
        """The typed error for a driver error of this registry (see :func:`translate_error`)."""
        return translate_error(exc, where=self._safe_url(), sqlite_path=self._sqlite_path(),
                               connecting=connecting)

    @contextlib.contextmanager
    def _connect(self) -> Iterator[Connection]:
        try:
            conn = self.engine.connect()
        except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
            raise self.translate(exc, connecting=True) from None
        conn.info[INFO_KEY] = self.project
        try:
            yield conn
        finally:
            conn.close()

    def _safe_url(self) -> str:
        return sa.engine.make_url(self.url).render_as_string(hide_password=True)

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only transaction."""
        with self._connect() as conn:
            try:
                with conn.begin():
                    yield conn
            except (sa.exc.OperationalError, sa.exc.DataError, sa.exc.InternalError) as exc:
                raise self.translate(exc) from None

    @contextlib.contextmanager
    def read_all_projects(self) -> Iterator[Connection]:
        """A read-only transaction over every project's rows, with no scope check: for
        maintenance and for tests that compare whole databases, never for answering one
        project's requests."""
        with self._connect() as conn:
            conn.info[SKIP_KEY] = True
            try:
                with conn.begin():
                    yield conn
            finally:
                conn.info.pop(SKIP_KEY, None)

    @contextlib.contextmanager
    def write(self, lock_key: str | None = None, *, bump: bool = True) -> Iterator[Connection]:
        """A write transaction that bumps the registry generation when it commits.

        ``lock_key`` serialises writers that touch the same object of this project on
        PostgreSQL (SQLite write transactions are already serial). ``bump=False`` is for
        bookkeeping that no cache depends on (usage counters), so it does not invalidate
        serving plans. The generation bumped is this project's own.
        """
        with self._connect() as conn:
            conn.info["begin_mode"] = "IMMEDIATE"
            try:
                with conn.begin():
                    if lock_key:
                        self.lock(conn, lock_key)
                    yield conn
                    if bump:
                        self._bump(conn)
            except (sa.exc.OperationalError, sa.exc.DataError, sa.exc.InternalError) as exc:
                # not IntegrityError: apply retries on it (another writer took a version);
                # psycopg reports a read-only transaction (25006) as an InternalError
                raise self.translate(exc) from None
            finally:
                conn.info.pop("begin_mode", None)
        for listener in list(self._write_listeners):
            listener()

    def on_write(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` after each write transaction of this process commits (the
        serving caches re-plan at once instead of at the next poll)."""
        self._write_listeners.append(listener)

    def remove_on_write(self, listener: Callable[[], None]) -> None:
        with contextlib.suppress(ValueError):
            self._write_listeners.remove(listener)

    def lock(self, conn: Connection, lock_key: str) -> None:
        """Serialise with other writers of ``lock_key`` until ``conn``'s transaction ends
        (PostgreSQL; SQLite write transactions are serial already)."""
        if self.dialect == "postgresql":
            # objects of different projects never contend for one lock
            digest = hashlib.sha256(f"{self.project}\0{lock_key}".encode()).digest()
            key = int.from_bytes(digest[:8], "big", signed=True)
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})

    def _bump(self, conn: Connection) -> None:
        # an upsert: a project's first write creates its counter, and two first writers
        # racing on PostgreSQL both succeed
        t = schema.registry_state
        dialect: Any
        if self.dialect == "postgresql":
            from sqlalchemy.dialects import postgresql as dialect
        else:
            from sqlalchemy.dialects import sqlite as dialect
        stmt = dialect.insert(t).values(project=self.project, generation=1)
        conn.execute(stmt.on_conflict_do_update(
            index_elements=[t.c.project], set_={"generation": t.c.generation + 1}))

    def generation(self) -> int:
        """A number that changes whenever anything in this project's registry changes."""
        t = schema.registry_state
        with self.read() as conn:
            return int(conn.execute(
                sa.select(t.c.generation).where(self.scope(t))).scalar() or 0)

    def audit(self, conn: Connection, action: str, kind: str, object_id: str,
              details: dict[str, Any] | None = None, actor: str | None = None, *,
              decision: str = "allow", reason: str | None = None) -> None:
        """Append an audit entry inside the caller's transaction: the entry and the change
        it records commit together or not at all."""
        body = dict(details or {})
        if decision != "allow":
            body["decision"] = decision
        if reason is not None:
            body["reason"] = reason
        chain.append(self, conn, at=now_us(), actor=actor or self.actor, action=action,
                     kind=kind, object_id=object_id, details=canonical_json(body),
                     decision=decision)

    def audit_now(self, action: str, kind: str, object_id: str,
                  details: dict[str, Any] | None = None, actor: str | None = None, *,
                  decision: str = "deny", reason: str | None = None) -> None:
        """Append an audit entry in a transaction of its own (a denied request changes
        nothing else); raises if it cannot be written."""
        with self.write(bump=False) as conn:
            self.audit(conn, action, kind, object_id, details, actor,
                       decision=decision, reason=reason)

    def audit_trail(self, kind: str | None = None, object_id: str | None = None,
                    limit: int = 1000) -> list[dict[str, Any]]:
        t = schema.audit_log
        q = sa.select(t).where(self.scope(t)).order_by(t.c.seq.desc(), t.c.id.desc()).limit(
            limit)
        if kind:
            q = q.where(t.c.object_kind == kind)
        if object_id:
            q = q.where(t.c.object_id == object_id)
        with self.read() as conn:
            return [
                {**dict(r._mapping), "details": json.loads(r.details)}
                for r in conn.execute(q)
            ]

    def dispose(self) -> None:
        self.engine.dispose()
