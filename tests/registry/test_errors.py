"""What the registry says when its database fails: each driver error a user can meet
becomes a typed error that says what happened (no "the database server may be down" for a
full disk, no driver error for a name that is too long)."""

from __future__ import annotations

import sqlite3

import pyarrow as pa
import pytest
import sqlalchemy as sa

from featureledger import Entity, FeatureStore, FeatureView, Field
from featureledger.config import ProjectConfig
from featureledger.errors import (
    BackendUnavailableError,
    ConcurrencyError,
    DefinitionError,
    NameTooLongError,
    RegistryReadOnlyError,
    ValueTooLongError,
)
from featureledger.model.timeutil import now_us
from featureledger.offline.storage import ParquetOfflineStore
from featureledger.registry import schema
from featureledger.registry.engine import RegistryDB, translate_error


def test_a_server_that_does_not_answer_is_unavailable() -> None:
    with pytest.raises(BackendUnavailableError) as info:
        RegistryDB("postgresql+psycopg://postgres@127.0.0.1:1/test")
    assert "cannot connect to the registry at postgresql+psycopg://postgres@127.0.0.1:1" \
        in str(info.value)
    assert info.value.transient


@pytest.mark.postgres
def test_a_read_only_postgres_registry(pg_url) -> None:
    RegistryDB(pg_url).dispose()  # migrated while writable
    read_only = pg_url.replace("options=", "options=-cdefault_transaction_read_only%3Don%20")
    db = RegistryDB(read_only, migrate=False)
    try:
        with pytest.raises(RegistryReadOnlyError) as info, db.write() as conn:
            db.audit(conn, "test", "test", "x")
        assert "is read-only" in str(info.value) and "nothing was written" in str(info.value)
        assert "database server is running" not in str(info.value)
    finally:
        db.dispose()


def test_a_read_only_sqlite_registry(tmp_path) -> None:
    path = tmp_path / "registry.db"
    RegistryDB(f"sqlite:///{path}").dispose()
    db = RegistryDB(f"sqlite:///file:{path}?mode=ro&uri=true", migrate=False)
    try:
        with pytest.raises(RegistryReadOnlyError, match="is read-only"), db.write() as conn:
            db.audit(conn, "test", "test", "x")
    finally:
        db.dispose()


def test_a_locked_sqlite_registry_is_a_conflict(tmp_path) -> None:
    path = tmp_path / "locked.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN IMMEDIATE")
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        with pytest.raises(sqlite3.OperationalError) as raised:
            other.execute("BEGIN IMMEDIATE")
        err = translate_error(sa.exc.OperationalError("BEGIN", {}, raised.value),
                              where=str(path), sqlite_path=path)
        assert isinstance(err, ConcurrencyError) and err.transient
        assert "stayed locked by another writer" in str(err)
    finally:
        other.close()
        holder.close()


@pytest.mark.postgres
def test_a_postgres_value_too_long_is_typed(pg_url) -> None:
    db = RegistryDB(pg_url)
    try:
        # past the length check (a table it does not know): PostgreSQL's own refusal
        with pytest.raises(ValueTooLongError, match="longer than its registry column"), \
                db.write() as conn:
            conn.execute(sa.text("CREATE TEMP TABLE tiny (x VARCHAR(3)) ON COMMIT DROP"))
            conn.execute(sa.text("INSERT INTO tiny VALUES (:v)"), {"v": "abcdef"})
    finally:
        db.dispose()


def test_values_longer_than_their_column_are_refused_by_name(tmp_path, registry_url) -> None:
    store = FeatureStore(tmp_path, config=ProjectConfig(registry=registry_url, root=tmp_path))
    try:
        db = store.registry.db
        with pytest.raises(ValueTooLongError) as info, db.write() as conn:
            db.audit(conn, "test", "commit", "c" * 300)
        assert (info.value.column, info.value.limit) == ("audit_log.object_id", 255)
        assert "is 300 characters, longer than the 255" in str(info.value)
        with db.write() as conn:  # exactly the limit fits, on both backends
            db.audit(conn, "test", "commit", "c" * 255)
        with pytest.raises(NameTooLongError) as named, db.write() as conn:
            conn.execute(schema.definitions.insert().values(
                project=db.project, kind="feature_view", name="v" * 300, version=1,
                definition_hash="0" * 64, spec="{}", docs="{}", docs_hash="0" * 64,
                created_at=now_us(), created_by="me", changes="[]", status="active",
                stale=0))
        assert isinstance(named.value, DefinitionError)
        assert named.value.column == "definitions.name"
    finally:
        store.close()


def test_a_view_name_too_long_for_the_store_is_a_definition_error(tmp_path,
                                                                  registry_url) -> None:
    store = FeatureStore(tmp_path, config=ProjectConfig(registry=registry_url, root=tmp_path))
    try:
        # the model's own identifier rule may refuse it first; either way it is a
        # DefinitionError and nothing is applied
        with pytest.raises(DefinitionError):
            store.apply([Entity(name="driver", join_keys={"driver_id": "int64"}),
                         FeatureView(name="v" * 300, entities=["driver"],
                                     fields=[Field(name="x", dtype="int64")])])
        assert store.list() == []
    finally:
        store.close()


def test_a_file_name_too_long_for_the_file_system(tmp_path) -> None:
    store = ParquetOfflineStore(tmp_path)
    with pytest.raises(NameTooLongError, match="too long for the file system"):
        store.write_commit("v" * 300, 1, "cmt_x", pa.table({"x": [1]}))
    assert not any((tmp_path / "default" / "_tmp").iterdir())
