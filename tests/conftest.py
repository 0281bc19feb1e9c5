"""Shared fixtures: backends parametrized over every available server.

PostgreSQL (127.0.0.1:5432, database ``test``) and Redis (127.0.0.1:6379) are used when
they answer. Without them a test skips with a message saying how to enable it; under CI
(``CI`` set) a missing server fails the test instead, so CI can never pass by skipping.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator

import pytest

PG_HOST, PG_PORT, PG_DB = "127.0.0.1", 5432, "test"
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int, how: str) -> None:
    if _reachable(host, port):
        return
    msg = f"{name} is not reachable at {host}:{port}; {how}"
    if os.environ.get("CI"):
        pytest.fail(f"{msg} (CI must run every backend)")
    pytest.skip(msg)


def require_postgres() -> None:
    require_service(
        "PostgreSQL", PG_HOST, PG_PORT,
        "start it (trust auth, database 'test') to run the PostgreSQL tests",
    )


def require_redis() -> None:
    require_service(
        "Redis", REDIS_HOST, REDIS_PORT,
        "start it with: redis-server --port 6379 --save '' to run the Redis tests",
    )


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema, dropped afterwards."""
    require_postgres()
    import sqlalchemy as sa

    schema = f"fl_test_{uuid.uuid4().hex[:12]}"
    base = f"postgresql+psycopg://postgres@{PG_HOST}:{PG_PORT}/{PG_DB}"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{base}?options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as c:
            c.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'registry.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def registry_url(request) -> str:
    """The registry URL of every registry backend in turn."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("pg_url")


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A Redis URL on a database flushed before and after the test."""
    require_redis()
    import redis

    db = int(os.environ.get("FEATURELEDGER_TEST_REDIS_DB", "15"))
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=db)
    client.flushdb()
    try:
        yield f"redis://{REDIS_HOST}:{REDIS_PORT}/{db}"
    finally:
        client.flushdb()
        client.close()
