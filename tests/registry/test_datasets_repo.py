"""Dataset records on every registry backend: one transaction for the row, its commits and
its lineage edges."""

from __future__ import annotations

import pytest

from featureledger.errors import StateError, UnknownDatasetError
from featureledger.model.ids import new_id
from featureledger.registry import DatasetRecord, Registry
from featureledger.registry.commits import CommitRecord
from featureledger.registry.lineage_edges import READ, USED_BY, edges_of


@pytest.fixture
def registry(registry_url):
    r = Registry(registry_url, actor="tester")
    yield r
    r.close()


def commit(registry, view="v", t=1) -> str:
    cid = new_id("cmt")
    with registry.db.write() as conn:
        registry.commits.insert(conn, CommitRecord(
            commit_id=cid, view_name=view, view_version=1, commit_time=t, user="u",
            run_id=None, source={}, steps=[], row_count=1, rejected_count=0, validation={},
            profile={}, files=[f"views/{view}/v1/{cid}/part-00000.parquet"],
            content_digest="0" * 64, min_event_ts=0, max_event_ts=0))
    return cid


def record(commits, run_id=None, created_at=10) -> DatasetRecord:
    return DatasetRecord(
        dataset_id=new_id("ds"), created_at=created_at, created_by="tester", run_id=run_id,
        feature_set=None, features=["v@1:f"], as_of=None, entity_digest="e" * 64,
        entity_path="datasets/x/entities.parquet", content_hash="c" * 64, row_count=3,
        arrow_schema="f: double", manifest={"commit_ids": commits}, commit_ids=commits)


def test_insert_get_list_and_edges(registry):
    c1, c2 = commit(registry, t=1), commit(registry, t=2)
    a = registry.datasets.insert(record([c2, c1], run_id="run_x", created_at=10))
    b = registry.datasets.insert(record([c1], created_at=20))
    got = registry.datasets.get(a.dataset_id)
    assert got.commit_ids == [c2, c1]  # manifest order kept
    assert (got.run_id, got.row_count, got.features) == ("run_x", 3, ["v@1:f"])
    assert [d.dataset_id for d in registry.datasets.list()] == [b.dataset_id, a.dataset_id]
    assert [d.dataset_id for d in registry.datasets.list(commit_id=c2)] == [a.dataset_id]
    assert [d.dataset_id for d in registry.datasets.list(run_id="run_x")] == [a.dataset_id]
    with registry.db.read() as conn:
        edges = {(e["src"], e["dst"], e["relation"]) for e in edges_of(conn, a.dataset_id)}
    assert edges == {(c1, a.dataset_id, READ), (c2, a.dataset_id, READ),
                     (a.dataset_id, "run_x", USED_BY)}
    audit = registry.db.audit_trail("dataset", a.dataset_id)
    assert [x["action"] for x in audit] == ["create_dataset"]


def test_failed_insert_writes_nothing(registry):
    c1 = commit(registry)
    bad = record([c1, "cmt_00000000-0000-7000-8000-000000000000"], run_id="run_y")
    with pytest.raises(StateError, match="nothing was written"):
        registry.datasets.insert(bad)
    with pytest.raises(UnknownDatasetError):
        registry.datasets.get(bad.dataset_id)
    with registry.db.read() as conn:
        assert edges_of(conn, bad.dataset_id) == []
    assert registry.datasets.list() == []
