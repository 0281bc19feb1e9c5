"""The audit trail is a hash chain: every edit, deletion, insertion or reordering of an
entry, made directly in the registry database (SQLite and PostgreSQL), is found by
``verify_audit`` / ``featureledger audit verify``, which names the first bad entry."""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from featureledger import Entity, FeatureStore, FeatureView, Field
from featureledger.config import ProjectConfig
from featureledger.errors import FeatureLedgerError
from featureledger.registry import audit as chain
from helpers import run_cli

DRIVER = Entity(name="driver", join_keys={"driver_id": "int64"})
STATS = FeatureView(name="stats", entities=["driver"], timestamp_field="ts",
                    fields=[Field(name="trips", dtype="int64")])


def rows(n: int, start: int = 0) -> pd.DataFrame:
    return pd.DataFrame({"driver_id": range(start, start + n), "trips": range(n),
                         "ts": pd.Timestamp("2026-01-01", tz="UTC")})


@pytest.fixture
def store(tmp_path, registry_url):
    repo = tmp_path / "repo"
    repo.mkdir()
    s = FeatureStore(repo, config=ProjectConfig(registry=registry_url, root=repo))
    s.apply([DRIVER, STATS])
    for i in range(3):
        s.ingest("stats", rows(5, 10 * i))
    first = s.commits("stats")[-1]
    s.quarantine(first.commit_id, reason="suspect")
    s.registry.db.audit_now("read_offline", "feature_view", "stats@1", actor="mallory",
                            reason="no grant read_offline on stats")
    yield s
    s.close()


@contextlib.contextmanager
def raw(store: FeatureStore) -> Iterator[sa.Connection]:
    """A transaction on the registry database outside featureledger: what someone with
    write access to the database can do."""
    engine = sa.create_engine(store.registry.db.url)
    try:
        with engine.begin() as conn:
            yield conn
    finally:
        engine.dispose()


def sql(store: FeatureStore, statement: str, **params) -> None:
    with raw(store) as conn:
        conn.execute(sa.text(statement), params)


def seqs(store: FeatureStore) -> list[tuple[int, int]]:
    """(id, seq) of every entry, in chain order."""
    with raw(store) as conn:
        return [tuple(r) for r in conn.execute(sa.text(
            "SELECT id, seq FROM audit_log ORDER BY seq"))]


def test_an_untouched_chain_verifies_and_records_decisions(store) -> None:
    result = store.verify_audit()
    assert result.ok, result.problems
    entries = store.audit_trail(limit=1000)
    assert result.entries == len(entries) >= 6
    assert [e.seq for e in entries] == list(range(len(entries), 0, -1))
    # each entry names its predecessor's hash
    ordered = entries[::-1]
    assert ordered[0].prev_hash == chain.GENESIS
    for before, after in itertools.pairwise(ordered):
        assert after.prev_hash == before.entry_hash
    assert result.head_seq == ordered[-1].seq and result.head_hash == ordered[-1].entry_hash
    denied = store.audit_trail(decision="deny")
    assert [(e.actor, e.action, e.object_id, e.reason) for e in denied] == [
        ("mallory", "read_offline", "stats@1", "no grant read_offline on stats")]
    assert {e.action for e in store.audit_trail(kind="commit")} >= {
        "commit", "commit_status:quarantined"}


@pytest.mark.parametrize("tamper", [
    "edit_details", "edit_actor", "edit_time", "delete_middle", "delete_first",
    "delete_tail", "insert_forged", "insert_taken_seq", "swap_rows", "swap_seq"])
def test_every_kind_of_tampering_is_found_and_named(store, tamper) -> None:
    order = seqs(store)
    n = len(order)
    target = 3  # the entry tampered with (or the first one affected)
    tid = order[target - 1][0]
    expected_kind = {"edit_details": "edited", "edit_actor": "edited", "edit_time": "edited",
                     "delete_middle": "deleted", "delete_first": "deleted",
                     "delete_tail": "truncated", "insert_forged": "inserted",
                     "insert_taken_seq": "inserted", "swap_rows": "reordered",
                     "swap_seq": "reordered"}[tamper]
    if tamper == "edit_details":
        sql(store, "UPDATE audit_log SET details = :d WHERE id = :i", d='{"reason":"ok"}',
            i=tid)
    elif tamper == "edit_actor":
        sql(store, "UPDATE audit_log SET actor = 'someone-else' WHERE id = :i", i=tid)
    elif tamper == "edit_time":
        sql(store, "UPDATE audit_log SET at = at - 1 WHERE id = :i", i=tid)
    elif tamper == "delete_middle":
        sql(store, "DELETE FROM audit_log WHERE id = :i", i=tid)
    elif tamper == "delete_first":
        target = 1
        sql(store, "DELETE FROM audit_log WHERE id = :i", i=order[0][0])
    elif tamper == "delete_tail":
        target = n
        sql(store, "DELETE FROM audit_log WHERE id = :i", i=order[-1][0])
    elif tamper == "insert_forged":
        # a forged entry made to look like the next one, with a self-consistent hash
        target = n + 1
        last = store.audit_trail(limit=1)[0]
        digest = chain.entry_hash(project=store.config.project, seq=n + 1, at=last.at + 1,
                                  actor="root", action="set_status:active",
                                  kind="feature_view", object_id="stats@1", details="{}",
                                  prev_hash=last.entry_hash)
        sql(store, "INSERT INTO audit_log (project, at, actor, action, object_kind, "
                   "object_id, details, seq, prev_hash, entry_hash) VALUES (:p, :at, "
                   "'root', 'set_status:active', 'feature_view', 'stats@1', '{}', :s, "
                   ":prev, :h)", p=store.config.project, at=last.at + 1, s=n + 1,
            prev=last.entry_hash, h=digest)
    elif tamper == "insert_taken_seq":
        # squeeze an entry in between by giving it the number of an existing one
        sql(store, "DROP INDEX ix_audit_seq")
        sql(store, "INSERT INTO audit_log (project, at, actor, action, object_kind, "
                   "object_id, details, seq, prev_hash, entry_hash) SELECT project, at, "
                   "'root', 'forged', object_kind, object_id, details, seq, prev_hash, "
                   "entry_hash FROM audit_log WHERE id = :i", i=tid)
    elif tamper == "swap_rows":
        # swap two whole rows' places: same content, stored the other way round
        a, b = order[target - 1][0], order[target][0]
        sql(store, "UPDATE audit_log SET id = -1 WHERE id = :a", a=a)
        sql(store, "UPDATE audit_log SET id = :a WHERE id = :b", a=a, b=b)
        sql(store, "UPDATE audit_log SET id = :b WHERE id = -1", b=b)
    elif tamper == "swap_seq":
        # swap the positions (sequence numbers) of two entries, keeping their contents
        a, b = order[target - 1][0], order[target][0]
        sql(store, "DROP INDEX ix_audit_seq")
        sql(store, "UPDATE audit_log SET seq = :s WHERE id = :i", s=target + 1, i=a)
        sql(store, "UPDATE audit_log SET seq = :s WHERE id = :i", s=target, i=b)
    result = store.verify_audit()
    assert not result.ok
    first = result.first_bad
    assert first is not None
    assert (first.seq, first.kind) == (target, expected_kind), result.problems


def test_the_cli_names_the_first_bad_entry(tmp_path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    with FeatureStore(repo) as s:
        s.apply([DRIVER, STATS])
        s.ingest("stats", rows(3))
    ok = run_cli("audit", "verify", cwd=repo)
    assert "ok" in ok.stdout and "3 entries" in ok.stdout
    head = ok.stdout.split("head ")[1].split()[0]
    assert head.startswith("3:") and len(head) == 66
    with FeatureStore(repo) as s:
        sql(s, "UPDATE audit_log SET actor = 'x' WHERE seq = 2")
    bad = run_cli("audit", "verify", cwd=repo, code=1)
    assert "first bad entry 2 (edited)" in " ".join(bad.stdout.split())
    listed = run_cli("audit", "list", "--json", cwd=repo)
    assert '"seq": 3' in listed.stdout


def test_a_chain_rewritten_from_scratch_needs_the_key_or_an_anchor(store, monkeypatch) -> None:
    """Someone with write access can recompute every hash and the head; a signing key kept
    away from the registry, or a head kept elsewhere, still catches it."""
    anchor = store.verify_audit()
    monkeypatch.setenv(chain.KEY_ENV, "secret-key")
    store.ingest("stats", rows(2, 100))  # signed from here on
    signed = store.verify_audit(key="secret-key")
    assert not signed.ok and signed.first_bad.kind == "unsigned"  # the older entries
    monkeypatch.delenv(chain.KEY_ENV)
    # rewrite: change entry 2's actor, recompute every hash after it and the head
    sql(store, "UPDATE audit_log SET actor = 'forger' WHERE seq = 2")
    with raw(store) as conn:
        prev = chain.GENESIS
        for r in conn.execute(sa.text("SELECT * FROM audit_log ORDER BY seq")).all():
            digest = chain.entry_hash(project=r.project, seq=r.seq, at=r.at, actor=r.actor,
                                      action=r.action, kind=r.object_kind,
                                      object_id=r.object_id, details=r.details,
                                      prev_hash=prev)
            conn.execute(sa.text("UPDATE audit_log SET prev_hash = :p, entry_hash = :h "
                                 "WHERE id = :i"), {"p": prev, "h": digest, "i": r.id})
            prev = digest
        conn.execute(sa.text("UPDATE registry_state SET audit_head = :h"), {"h": prev})
    assert store.verify_audit().ok  # consistent without outside knowledge
    rewritten = store.verify_audit(anchor=f"{anchor.head_seq}:{anchor.head_hash}")
    assert not rewritten.ok and rewritten.first_bad.seq == anchor.head_seq
    keyed = store.verify_audit(key="secret-key")
    assert any(p.kind == "bad_signature" for p in keyed.problems)


def test_an_action_whose_audit_entry_cannot_be_written_does_not_happen(tmp_path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    with FeatureStore(repo) as s:
        s.apply([DRIVER, STATS])
        with raw(s) as conn:
            conn.execute(sa.text("CREATE TRIGGER no_audit BEFORE INSERT ON audit_log "
                                 "BEGIN SELECT RAISE(ABORT, 'audit log is read-only'); END"))
        with pytest.raises((FeatureLedgerError, sa.exc.DBAPIError)):
            s.ingest("stats", rows(3))
        assert s.commits("stats") == []
        with pytest.raises((FeatureLedgerError, sa.exc.DBAPIError)):
            s.registry.db.audit_now("read_online", "feature_view", "stats@1", actor="eve")
        with raw(s) as conn:
            conn.execute(sa.text("DROP TRIGGER no_audit"))
        assert s.verify_audit().ok


def test_concurrent_writers_keep_one_unbroken_chain(store) -> None:
    errors: list[BaseException] = []

    def deny(i: int) -> None:
        try:
            for j in range(10):
                store.registry.db.audit_now("read_online", "feature_view", f"v{i}.{j}",
                                            actor=f"p{i}")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    before = store.verify_audit().entries
    threads = [threading.Thread(target=deny, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    result = store.verify_audit()
    assert result.ok, result.problems
    assert result.entries == before + 40


def test_entries_written_before_the_chain_are_chained_by_the_upgrade(tmp_path) -> None:
    """A registry at revision 0006 with audit entries: the upgrade chains them in the
    order they were written, and the chain then verifies and grows."""
    from featureledger.registry.engine import RegistryDB

    url = f"sqlite:///{tmp_path / 'r.db'}"
    db = RegistryDB(url, migrate=False)
    db.migrate("0006")
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for i in range(5):
            conn.execute(sa.text(
                "INSERT INTO audit_log (project, at, actor, action, object_kind, object_id, "
                "details) VALUES ('default', :at, 'old', 'apply', 'feature_view', :o, '{}')"),
                {"at": 1000 + i, "o": f"v@{i}"})
    engine.dispose()
    db.dispose()
    repo = tmp_path / "repo"
    repo.mkdir()
    with FeatureStore(repo, config=ProjectConfig(registry=url, root=Path(repo))) as s:
        result = s.verify_audit()
        assert result.ok and result.entries == 5
        assert [e.object_id for e in s.audit_trail()] == [f"v@{i}" for i in range(4, -1, -1)]
        s.apply([DRIVER])
        assert s.verify_audit().ok and s.verify_audit().entries == 6


def test_two_projects_on_one_registry_keep_separate_chains(tmp_path, registry_url) -> None:
    """Each project's chain is its own: one tenant's entries never link into another's,
    and tampering with one project's entry is reported for that project only."""
    stores = []
    for project in ("risk", "growth"):
        repo = tmp_path / project
        repo.mkdir()
        s = FeatureStore(repo, config=ProjectConfig(registry=registry_url, root=repo,
                                                    project=project))
        s.apply([DRIVER, STATS])
        s.ingest("stats", rows(3))
        stores.append(s)
    risk, growth = stores
    try:
        assert risk.verify_audit().ok and growth.verify_audit().ok
        assert {e.seq for e in risk.audit_trail()} == {e.seq for e in growth.audit_trail()}
        assert risk.verify_audit().head_hash != growth.verify_audit().head_hash
        sql(risk, "UPDATE audit_log SET actor = 'x' WHERE project = 'risk' AND seq = 2")
        assert not risk.verify_audit().ok and risk.verify_audit().first_bad.seq == 2
        assert growth.verify_audit().ok
        growth.ingest("stats", rows(2, 50))  # the other tenant keeps appending
        assert growth.verify_audit().ok
    finally:
        for s in stores:
            s.close()
