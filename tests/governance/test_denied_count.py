"""Denied requests are counted from the access decision, not from text in audit details.

A denial is recorded with its decision in a column of its own; an entry whose details
merely contain ``"decision": "deny"`` (a view tagged ``decision: deny``) is not one, a
second project's denials on the same registry are not this project's, and a listing of
denials finds the newest ones however many other entries came after them.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from featureledger import Entity, FeatureStore, FeatureView, Field
from featureledger.config import load_config
from featureledger.errors import PermissionDeniedError
from featureledger.registry import schema
from governance.access_demo import make_repo


def test_denials_are_counted_from_their_decision(tmp_path, registry_url):
    store = make_repo(tmp_path / "repo", registry=registry_url)
    other_root = tmp_path / "other"
    other_root.mkdir()
    other = FeatureStore(other_root, config=load_config(
        other_root, overrides={"registry": registry_url, "project": "other"}))
    try:
        tagged = FeatureView(name="tagged", entities=["rider"],
                             fields=[Field(name="x", dtype="float64")],
                             tags={"decision": "deny"})
        other.apply([Entity(name="rider", join_keys={"rider_id": "int64"}), tagged])
        assert other.governance_report().denied_requests == 0  # a tag, not a denial
        assert other.audit_trail(decision="deny") == []

        with store.acting_as("alice"), pytest.raises(PermissionDeniedError):
            store.get_features_in_window("riders", None, None)
        for i in range(8):  # entries after the denial
            store.registry.db.audit_now("note", "feature_view", f"n{i}", {"i": i},
                                        decision="allow")
        assert store.governance_report().denied_requests == 1
        (denial,) = store.audit_trail(decision="deny", limit=3)
        assert denial.actor == "alice" and denial.object_id == "riders:name"
        assert other.governance_report().denied_requests == 0

        # the column is checked against the hashed details: flipping it is an edit
        assert store.verify_audit().ok
        a = schema.audit_log
        with store.registry.db.read_all_projects() as conn:
            seq = conn.execute(sa.select(a.c.seq).where(
                a.c.project == "demo", a.c.decision == "deny")).scalar_one()
        with store.registry.db.engine.begin() as conn:
            conn.execute(a.update().where(a.c.project == "demo", a.c.seq == seq)
                         .values(decision="allow"))
        assert store.governance_report().denied_requests == 0
        problems = store.verify_audit().problems
        assert [(p.seq, p.kind) for p in problems] == [(seq, "edited")]
    finally:
        other.close()
        store.close()


def test_upgrading_fills_the_decision_of_earlier_entries(tmp_path, registry_url):
    """Entries written before revision 0011 get their decision from their own details:
    the denial counts, the entry of a view tagged ``decision: deny`` does not."""
    from alembic import command

    from featureledger.registry.engine import _alembic_config, head_revision

    store = make_repo(tmp_path / "repo", registry=registry_url)
    try:
        store.apply([FeatureView(name="tagged", entities=["rider"],
                                 fields=[Field(name="x", dtype="float64")],
                                 tags={"decision": "deny"})])
        with store.acting_as("alice"), pytest.raises(PermissionDeniedError):
            store.get_features_in_window("riders", None, None)
        db = store.registry.db
        with db.engine.begin() as conn:
            command.downgrade(_alembic_config(conn, db.project), "0010")
        with db.engine.connect() as conn:
            assert "decision" not in {c["name"] for c in sa.inspect(conn).get_columns(
                "audit_log")}
        with db.engine.begin() as conn:
            command.upgrade(_alembic_config(conn, db.project), head_revision())
        assert store.governance_report().denied_requests == 1
        (denial,) = store.audit_trail(decision="deny")
        assert denial.actor == "alice"
        assert store.verify_audit().ok
    finally:
        store.close()
