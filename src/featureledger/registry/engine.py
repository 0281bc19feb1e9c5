"""Registry connection: engine creation, migrations, transactions, generation, audit.

SQLite is the embedded default and PostgreSQL the server backend; the same code serves
both. Writers serialise: SQLite transactions begin IMMEDIATE (one writer at a time, others
wait up to the busy timeout), PostgreSQL write transactions may take an advisory lock.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from featureledger.errors import BackendUnavailableError, ConfigError, StorageError
from featureledger.model.hashing import canonical_json
from featureledger.model.timeutil import current_user, now_us
from featureledger.registry import schema

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def _alembic_config(connection: Connection) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
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


class RegistryDB:
    """A migrated registry database: transactions, generation counter and audit trail."""

    def __init__(self, url: str, *, actor: str | None = None, migrate: bool = True) -> None:
        self.url = url
        self.actor = actor or current_user()
        self.engine = create_registry_engine(url)
        self.dialect = self.engine.dialect.name
        if migrate:
            self.migrate()

    # -- migrations -----------------------------------------------------------------
    def current_revision(self) -> str | None:
        with self._connect() as conn:
            if not sa.inspect(conn).has_table("alembic_version"):
                return None
            return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()

    def migrate(self) -> None:
        """Upgrade the schema to the newest revision; safe when processes race."""
        head = head_revision()
        if self.current_revision() == head:
            return
        from alembic import command

        with self._connect() as conn:
            if self.dialect == "postgresql":
                conn.exec_driver_sql("SELECT pg_advisory_lock(7428190311)")
                try:
                    command.upgrade(_alembic_config(conn), "head")
                    conn.commit()
                finally:
                    conn.exec_driver_sql("SELECT pg_advisory_unlock(7428190311)")
                    conn.commit()
            else:
                conn.info["begin_mode"] = "IMMEDIATE"  # one migrator at a time
                try:
                    command.upgrade(_alembic_config(conn), "head")
                    conn.commit()
                finally:
                    conn.info.pop("begin_mode", None)

    # -- transactions -----------------------------------------------------------------
    @contextlib.contextmanager
    def _connect(self) -> Iterator[Connection]:
        try:
            conn = self.engine.connect()
        except sa.exc.OperationalError as exc:
            raise BackendUnavailableError(
                f"cannot connect to the registry at {self._safe_url()}: {exc.orig}. "
                "Check that the database server is running and the URL is right."
            ) from None
        try:
            yield conn
        finally:
            conn.close()

    def _safe_url(self) -> str:
        return sa.engine.make_url(self.url).render_as_string(hide_password=True)

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only transaction."""
        with self._connect() as conn, conn.begin():
            yield conn

    @contextlib.contextmanager
    def write(self, lock_key: str | None = None, *, bump: bool = True) -> Iterator[Connection]:
        """A write transaction that bumps the registry generation when it commits.

        ``lock_key`` serialises writers that touch the same object on PostgreSQL (SQLite
        write transactions are already serial). ``bump=False`` is for bookkeeping that no
        cache depends on (usage counters), so it does not invalidate serving plans.
        """
        with self._connect() as conn:
            conn.info["begin_mode"] = "IMMEDIATE"
            try:
                with conn.begin():
                    if lock_key:
                        self.lock(conn, lock_key)
                    yield conn
                    if bump:
                        conn.execute(
                            schema.registry_state.update()
                            .where(schema.registry_state.c.id == 1)
                            .values(generation=schema.registry_state.c.generation + 1)
                        )
            except sa.exc.OperationalError as exc:
                raise StorageError(
                    f"registry write failed: {exc.orig}. Retry; if it persists, check the "
                    "database server and disk."
                ) from None
            finally:
                conn.info.pop("begin_mode", None)

    def lock(self, conn: Connection, lock_key: str) -> None:
        """Serialise with other writers of ``lock_key`` until ``conn``'s transaction ends
        (PostgreSQL; SQLite write transactions are serial already)."""
        if self.dialect == "postgresql":
            key = int.from_bytes(hashlib.sha256(lock_key.encode()).digest()[:8], "big",
                                 signed=True)
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})

    def generation(self) -> int:
        """A number that changes whenever anything in the registry changes."""
        with self.read() as conn:
            return int(
                conn.execute(sa.select(schema.registry_state.c.generation)).scalar() or 0
            )

    def audit(self, conn: Connection, action: str, kind: str, object_id: str,
              details: dict[str, Any] | None = None, actor: str | None = None) -> None:
        conn.execute(
            schema.audit_log.insert().values(
                at=now_us(),
                actor=actor or self.actor,
                action=action,
                object_kind=kind,
                object_id=object_id,
                details=canonical_json(details or {}),
            )
        )

    def audit_trail(self, kind: str | None = None, object_id: str | None = None,
                    limit: int = 1000) -> list[dict[str, Any]]:
        t = schema.audit_log
        q = sa.select(t).order_by(t.c.id.desc()).limit(limit)
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
