"""Rolling a view back to an earlier data state or definition: nothing is deleted, the
online store follows, audit and lineage record it."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from featureledger import Field
from featureledger.errors import StateError
from featureledger.model.timeutil import from_us

N = 200


def _online_x(store) -> list[float]:
    return store.get_online_features(["stats:x"], {"driver_id": list(range(N))}).values["x"]


def test_data_rollback_to_a_commit_and_to_a_time(store, h):
    a_rows = h.batch(1, hours=1, n=N)
    a = store.ingest("stats", a_rows)
    b = store.ingest("stats", h.batch(2, hours=2, n=N))
    c = store.ingest("stats", h.batch(3, hours=3, n=N))
    store.materialize(end=h.T0 + dt.timedelta(hours=10))
    done = store.rollback_data("stats", to_commit=a.commit_id, reason="bad upstream")
    assert [x.commit_id for x in done] == [b.commit_id, c.commit_id]
    assert {store.get_commit(x.commit_id).status for x in done} == {"rolled_back"}
    assert _online_x(store) == a_rows.column("x").to_pylist()
    # nothing deleted: the files are still there and a restore brings one back
    assert store.ctx.offline_store.missing_files(store.get_commit(c.commit_id).files) == []
    store.restore(c.commit_id, "c was fine")
    assert store.get_commit(c.commit_id).status == "committed"
    # to a time: what was committed after it
    done = store.rollback_data("stats", to_time=from_us(a.commit.commit_time),
                               reason="again")
    assert [x.commit_id for x in done] == [c.commit_id]
    with store.registry.db.read_all_projects() as conn:
        audit = conn.execute(sa.text("SELECT action, object_id FROM audit_log WHERE action "
                                     "LIKE 'view_rollback%'")).all()
        edges = conn.execute(sa.text("SELECT src, dst FROM lineage_edges WHERE relation = "
                                     "'rolled_back'")).all()
    assert [tuple(r) for r in audit] == [("view_rollback:data", "stats")] * 2
    assert {tuple(e) for e in edges} == {("view:stats@1", b.commit_id),
                                         ("view:stats@1", c.commit_id)}
    with pytest.raises(StateError, match="exactly one"):
        store.rollback_data("stats", reason="x")


def test_definition_rollback_applies_the_old_definition_as_a_new_version(store, h):
    store.ingest("stats", h.batch(1, hours=1, n=N))
    wider = h.stats_view(fields=[Field(name="x", dtype="float64", nullable=True),
                                 Field(name="c", dtype="string", nullable=True),
                                 Field(name="y", dtype="int64", nullable=True)])
    store.apply([h.DRIVER, wider])
    assert store.get_view("stats").version == 2
    plan = store.rollback_definition("stats", 1, reason="y is not ready")
    latest = store.get_view("stats")
    assert latest.version == 3 and latest.definition.feature_names == ["x", "c"]
    assert [i.to_version for i in plan.items if i.name == "stats"] == [3]
    # the data is still read by the new version
    rows = store.get_features_in_window("stats", h.T0, h.T0 + dt.timedelta(hours=5))
    assert rows.num_rows == N
    with pytest.raises(StateError, match="not older"):
        store.rollback_definition("stats", 3, reason="x")
