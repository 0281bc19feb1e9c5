"""Online stores keep projects apart: two projects on one SQLite file or one Redis database
(default prefixes) write the same view versions and keys and read only their own."""

from __future__ import annotations

import sqlite3
import uuid

import pytest

from featureledger.config import load_config
from featureledger.online.redis import RedisOnlineStore, default_key_prefix
from featureledger.online.sqlite import SqliteOnlineStore
from featureledger.online.stores import EPOCH_META, OnlineRecord, TableRef
from featureledger.store import FeatureStore

T = TableRef("driver_stats", 1)


def rec(key: str, payload: bytes) -> OnlineRecord:
    return OnlineRecord(key, 10, 1, "cmt_a", payload)


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def two_projects(request, tmp_path):
    """Stores of two projects on one file or one database, each with its default naming."""
    names = [f"p{uuid.uuid4().hex[:8]}", f"q{uuid.uuid4().hex[:8]}"]
    if request.param == "sqlite":
        stores = [SqliteOnlineStore(tmp_path / "online.db", project=n) for n in names]
    else:
        url, _ = request.getfixturevalue("redis_namespace")
        stores = [RedisOnlineStore(url, key_prefix=default_key_prefix(n), timeout_s=2.0)
                  for n in names]
    yield stores
    for s in stores:
        if request.param == "redis":
            for key in s.client.scan_iter(match=f"{s.prefix}:*", count=1000):
                s.client.delete(key)
        s.close()


def test_same_table_and_keys_never_cross(two_projects) -> None:
    a, b = two_projects
    a.write(T, [rec("1", b"[1]"), rec("2", b"[2]")])
    b.write(T, [rec("1", b"[100]")])
    assert [v and v.payload for v in a.read([(T, ["1", "2"])])[0]] == [b"[1]", b"[2]"]
    assert [v and v.payload for v in b.read([(T, ["1", "2"])])[0]] == [b"[100]", None]
    assert b.read_row(T, "2") is None and a.read_rows([(T, ["1"])])[0][0][2] == b"[1]"
    a.set_meta("state", "a")
    assert b.get_meta("state") is None
    token = b.change_token()
    assert a.delete(T) == 2  # dropping one project's view version leaves the other's
    assert b.read([(T, ["1"])])[0][0].payload == b"[100]"
    assert b.change_token() == token  # and does not disturb its change epoch


def test_a_file_from_before_projects_is_adopted_by_its_first_project(tmp_path) -> None:
    path = tmp_path / "online.db"
    conn = sqlite3.connect(path)  # the layout of a file written before projects
    conn.execute("CREATE TABLE fl_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
    conn.execute("INSERT INTO fl_meta VALUES (?, '7')", (EPOCH_META,))
    conn.execute('CREATE TABLE "fv_driver_stats_v1" (k TEXT PRIMARY KEY, ts INTEGER NOT NULL, '
                 "ct INTEGER NOT NULL, cid TEXT NOT NULL, v BLOB NOT NULL) WITHOUT ROWID")
    conn.execute("INSERT INTO fv_driver_stats_v1 VALUES ('1', 10, 1, 'cmt_a', X'5B315D')")
    conn.commit()
    conn.close()
    owner = SqliteOnlineStore(path, project="risk")
    assert owner.read([(T, ["1"])])[0][0].payload == b"[1]"
    assert owner.change_token() == "7"
    newcomer = SqliteOnlineStore(path, project="growth")
    assert newcomer.read([(T, ["1"])])[0] == [None] and newcomer.change_token() is None
    owner.close()
    newcomer.close()
    again = SqliteOnlineStore(path, project="risk")  # adoption happens once
    assert again.read([(T, ["1"])])[0][0].payload == b"[1]"
    again.close()


def test_redis_prefix_defaults_to_the_project_and_an_explicit_one_wins(tmp_path) -> None:
    def prefix(**online):
        cfg = load_config(tmp_path, environ={}, overrides={
            "project": "fraud", "online_store": {"type": "redis", **online}})
        with FeatureStore(tmp_path, config=cfg) as s:
            return s.ctx.online_store.prefix  # the client connects lazily: no server needed

    assert prefix() == "fl:fraud"
    assert prefix(key_prefix="shared") == "shared"
