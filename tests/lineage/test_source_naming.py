"""One naming scheme for sources: files by absolute file URI (labelled relative to the
project), frames by content digest, pushes by endpoint and principal; the same names in
the definition's feeds edge, the commits' ingested edges and the rendered graphs."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from featureledger import Entity, FeatureStore, FeatureView, Field, FileSource
from featureledger.config import ProjectConfig
from featureledger.ingest.sources import arrow_digest
from featureledger.lineage.render import to_dot, to_html, to_mermaid, to_text
from featureledger.registry import schema
from featureledger.registry.lineage_edges import (
    file_source_uri,
    openlineage_dataset,
    push_source_uri,
    source_label,
)

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
DRIVER = Entity(name="driver", join_keys={"driver_id": "int64"})


def view(**kw) -> FeatureView:
    return FeatureView(name="trips", entities=[DRIVER],
                       fields=[Field(name="n", dtype="int64")], **kw)


def frame(n: int = 3, start: int = 0) -> pd.DataFrame:
    ids = range(start, start + n)
    return pd.DataFrame({"driver_id": ids, "event_timestamp": [T0] * n, "n": ids})


@pytest.fixture
def repo(tmp_path) -> Path:
    root = tmp_path / "my repo"  # a space, so the URI must be encoded and the label not
    (root / "data").mkdir(parents=True)
    frame().to_parquet(root / "data" / "trips.parquet", index=False)
    return root


def open_store(root: Path, url: str, actor: str = "alice",
               allowed_prefixes: tuple[str, ...] = ()) -> FeatureStore:
    return FeatureStore(root, config=ProjectConfig(
        project="rides", registry=url, root=root,
        sources={"allowed_prefixes": list(allowed_prefixes)}), actor=actor)


def edges_into(store, node: str) -> set[tuple[str, str]]:
    t = schema.lineage_edges
    with store.registry.db.read() as conn:
        return set(conn.execute(sa.select(t.c.relation, t.c.dst).where(
            store.registry.db.scope(t), t.c.src == node)))


def ingested_from(store, commit_id: str) -> list[str]:
    t = schema.lineage_edges
    with store.registry.db.read() as conn:
        return list(conn.execute(sa.select(t.c.src).where(
            store.registry.db.scope(t), t.c.dst == commit_id, t.c.relation == "ingested")).scalars())


def test_a_file_is_one_node_however_it_is_named(repo, registry_url, monkeypatch) -> None:
    store = open_store(repo, registry_url)
    try:
        store.apply([DRIVER, view(source=FileSource(path="data/trips.parquet"))])
        path = repo / "data" / "trips.parquet"
        node = "source:" + path.as_uri()
        assert node == f"source:file://{repo.as_posix().replace(' ', '%20')}/data/trips.parquet"
        by_default = store.ingest("trips").commit_id
        by_absolute = store.ingest("trips", str(path)).commit_id
        monkeypatch.chdir(repo / "data")  # a relative path is relative to the repository
        by_relative = store.ingest("trips", "data/trips.parquet").commit_id
        assert edges_into(store, node) == {("feeds", "view:trips@1"),
                                           ("ingested", by_default),
                                           ("ingested", by_absolute),
                                           ("ingested", by_relative)}
        graph = store.lineage(by_default, direction="upstream")
        assert graph.nodes[node]["label"] == "data/trips.parquet"
        assert graph.nodes[node]["uri"] == path.as_uri()
        # every rendering shows the label, and keeps the full name as the id
        assert f'"{node}" [label="data/trips.parquet"' in to_dot(graph)
        assert '["data/trips.parquet"]' in to_mermaid(graph)
        assert f"{node}  [data/trips.parquet]" in to_text(graph)
        assert '"label": "data/trips.parquet"' in to_html(graph)
    finally:
        store.close()


def test_files_outside_the_project_and_globs(repo, registry_url, tmp_path) -> None:
    outside = tmp_path / "elsewhere" / "batch.parquet"
    outside.parent.mkdir()
    frame().to_parquet(outside, index=False)
    for i in range(2):
        frame(start=10 * i).to_parquet(repo / "data" / f"part-{i}.parquet", index=False)
    store = open_store(repo, registry_url, allowed_prefixes=(str(outside.parent),))
    try:
        store.apply([DRIVER, view()])
        a = store.ingest("trips", str(outside)).commit_id
        b = store.ingest("trips", str(repo / "data" / "part-*.parquet")).commit_id
        [na], [nb] = ingested_from(store, a), ingested_from(store, b)
        assert na == "source:" + outside.as_uri()
        assert nb == "source:" + file_source_uri(repo / "data" / "part-*.parquet")
        assert nb.endswith("/data/part-%2A.parquet")
        nodes = store.lineage(b, direction="upstream").nodes
        assert nodes[nb]["label"] == "data/part-*.parquet"
        assert store.lineage(a, direction="upstream").nodes[na]["label"] == str(outside)
    finally:
        store.close()


def test_a_frame_is_its_content_digest(repo, registry_url) -> None:
    store = open_store(repo, registry_url)
    try:
        store.apply([DRIVER, view()])
        first = store.ingest("trips", frame(), source_name="morning")
        again = store.ingest("trips", frame(), source_name="evening")
        other = store.ingest("trips", frame(4))
        digest = first.commit.source["digest"]
        node = f"source:memory:sha256:{digest}"
        # the same data is the same node, whatever it was called
        assert ingested_from(store, first.commit_id) == [node]
        assert ingested_from(store, again.commit_id) == [node]
        assert ingested_from(store, other.commit_id) != [node]
        assert digest == arrow_digest(pa.Table.from_pandas(frame()))
        label = store.lineage(first.commit_id, direction="upstream").nodes[node]["label"]
        assert label == f"frame sha256:{digest[:12]}"
        # the name given is kept in the commit, as a description
        assert first.commit.source["name"] == "morning"
    finally:
        store.close()


def test_a_push_is_its_endpoint_and_principal(repo, registry_url) -> None:
    store = open_store(repo, registry_url, actor="svc@ingest")
    try:
        store.apply([DRIVER, view()])
        cid = store.push("trips", [{"driver_id": 1, "event_timestamp": T0, "n": 5}],
                         flush=True)
        node = "source:push://rides/trips?principal=svc%40ingest"
        assert node == "source:" + push_source_uri("rides", "trips", "svc@ingest")
        assert ingested_from(store, cid) == [node]
        graph = store.lineage(cid, direction="upstream")
        assert graph.nodes[node]["label"] == "push rides/trips by svc@ingest"
        assert graph.nodes[node]["kind"] == "source"
        # impact analysis starts from the push source like from any other
        assert cid in store.lineage(node, direction="downstream").node_ids()
    finally:
        store.close()
    # another principal pushing to the same endpoint is another node
    store = open_store(repo, registry_url, actor="bob")
    try:
        cid = store.push("trips", [{"driver_id": 2, "event_timestamp": T0, "n": 6}],
                         flush=True)
        assert ingested_from(store, cid) == ["source:push://rides/trips?principal=bob"]
    finally:
        store.close()


def test_labels_and_openlineage_names_of_every_kind() -> None:
    root = Path("/srv/repo")
    f = file_source_uri("data/x.csv", root)
    assert f == "file:///srv/repo/data/x.csv"
    assert file_source_uri("/srv/repo/./data/../data/x.csv") == f
    assert source_label(f, root) == "data/x.csv"
    assert source_label(f, "/srv/other") == "/srv/repo/data/x.csv"
    assert source_label("file:///srv/repository/x.csv", root) == "/srv/repository/x.csv"
    assert openlineage_dataset(f) == ("file", "/srv/repo/data/x.csv")
    assert openlineage_dataset("memory:sha256:ab12") == ("memory", "sha256:ab12")
    assert openlineage_dataset(push_source_uri("p", "v", "a b")) == ("push://p", "v")
    assert source_label(push_source_uri("p", "v", "a b")) == "push p/v by a b"
    # names written before this scheme are shown as they are
    assert source_label("data/x.csv", root) == "data/x.csv"
    assert source_label("memory:pandas@sha256:0123") == "memory:pandas@sha256:0123"
    assert os.path.isabs(file_source_uri("x.csv")[len("file://"):])


def test_definition_feeds_edge_uses_the_project_folder(repo, registry_url) -> None:
    # the process runs elsewhere: the relative source path is still under the project
    store = open_store(repo, registry_url)
    try:
        store.apply([DRIVER, view(source=FileSource(path="data/trips.parquet"))])
        node = "source:" + (repo / "data" / "trips.parquet").as_uri()
        assert edges_into(store, node) == {("feeds", "view:trips@1")}
        assert pq.read_metadata(repo / "data" / "trips.parquet").num_rows == 3
    finally:
        store.close()
