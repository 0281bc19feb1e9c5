"""The offline store seam (``offline.interface.OfflineStore``): one suite, every store.

The local Parquet store always; the S3 store against moto's S3 server on 127.0.0.1."""

from __future__ import annotations

import hashlib

import pyarrow as pa
import pytest

from featureledger.offline.interface import OfflineStore


@pytest.fixture(params=["parquet", pytest.param("s3", marks=pytest.mark.s3)])
def offline(request, tmp_path) -> OfflineStore:
    if request.param == "parquet":
        from featureledger.offline.storage import ParquetOfflineStore

        store: OfflineStore = ParquetOfflineStore(tmp_path / "offline", project="p")
    else:
        from featureledger.offline.s3 import S3OfflineStore

        store = S3OfflineStore(request.getfixturevalue("s3_url"), project="p",
                               endpoint_url=request.getfixturevalue("s3_endpoint"))
    yield store
    store.close()


ROWS = pa.table({"k": [1, 2, 3], "v": [0.5, 1.5, 2.5]})


def test_a_commit_is_written_in_the_layout_with_its_digest_and_manifest(offline):
    w = offline.write_commit("trips", 2, "cmt_a", [ROWS, ROWS.slice(1)],
                             extra_tables={"rejected.parquet": ROWS.slice(0, 1)})
    folder = "p/views/trips/v2/cmt_a"
    assert offline.commit_dir("trips", 2, "cmt_a") == folder
    assert w.files == [f"{folder}/part-00000.parquet", f"{folder}/part-00001.parquet"]
    assert w.extra_files == {"rejected.parquet": f"{folder}/rejected.parquet"}
    assert offline.file_digest(w.files) == w.content_digest
    assert offline.verify_digest(w.files, w.content_digest)
    assert not offline.verify_digest(list(reversed(w.files)), w.content_digest)
    manifest = w.manifest()
    assert sorted(manifest) == sorted([*w.files, f"{folder}/rejected.parquet"])
    assert w.bytes == sum(manifest[f]["size"] for f in w.files)
    side = offline.read_table(f"{folder}/rejected.parquet")
    assert side.to_pylist() == [{"k": 1, "v": 0.5}]
    assert manifest[f"{folder}/rejected.parquet"]["sha256"] == offline.file_digest(
        [f"{folder}/rejected.parquet"])
    assert offline.read_table(w.files[1]).column("k").to_pylist() == [2, 3]
    for f in w.files:
        assert offline.file_problem(f, manifest[f]["size"]) is None
        assert offline.file_problem(f, None) is None  # a whole Parquet file
        kind, text = offline.file_problem(f, manifest[f]["size"] + 1)
        assert kind == "size_mismatch" and "when committed" in text
    assert offline.missing_files([*w.files, f"{folder}/part-00009.parquet"]) == [
        f"{folder}/part-00009.parquet"]


def test_removing_an_unregistered_commit_takes_its_side_files_too(offline):
    w = offline.write_commit("trips", 1, "cmt_b", ROWS,
                             extra_tables={"rejected.parquet": ROWS})
    offline.remove_commit_files(w.files)
    assert offline.missing_files([*w.files, *w.extra_files.values()]) == [
        *w.files, *w.extra_files.values()]
    assert offline.file_problem(w.files[0], 10) == ("missing", "is missing")
    # a second write of the same commit id is possible once cleared
    again = offline.write_commit("trips", 1, "cmt_b", ROWS)
    offline.clear_commit("trips", 1, "cmt_b")
    assert offline.missing_files(again.files) == again.files


def test_gc_keeps_young_and_referenced_folders(offline):
    kept = offline.write_commit("trips", 1, "cmt_kept", ROWS)
    orphan = offline.write_commit("trips", 1, "cmt_orphan", ROWS)
    young = offline.gc(set(kept.files), grace_seconds=3600)
    assert young.removed == [] and young.kept_recent == ["p/views/trips/v1/cmt_orphan"]
    old = offline.gc(set(kept.files), grace_seconds=0)
    assert old.removed == ["p/views/trips/v1/cmt_orphan"]
    assert old.bytes_freed == orphan.bytes
    assert offline.missing_files([*kept.files, *orphan.files]) == orphan.files


def test_gc_collects_dataset_folders_no_row_references_after_the_grace_period(offline):
    entities = pa.table({"driver_id": [1, 2]})
    for ds in ("ds_kept", "ds_orphan"):
        offline.publish_dataset(offline.stage_dataset(ds, entities))
    kept = {offline.dataset_path("ds_kept").rsplit("/", 1)[0]}
    # without the list of referenced datasets, dataset folders are not looked at
    assert offline.gc(set(), grace_seconds=0).removed == []
    young = offline.gc(set(), grace_seconds=3600, referenced_datasets=kept)
    assert young.removed == [] and young.kept_recent == ["p/datasets/ds_orphan"]
    dry = offline.gc(set(), grace_seconds=0, referenced_datasets=kept, dry_run=True)
    assert dry.removed == ["p/datasets/ds_orphan"]
    assert offline.read_dataset_entities(offline.dataset_path("ds_orphan")).num_rows == 2
    old = offline.gc(set(), grace_seconds=0, referenced_datasets=kept)
    assert old.removed == ["p/datasets/ds_orphan"] and old.bytes_freed > 0
    with pytest.raises(FileNotFoundError):
        offline.read_dataset_entities(offline.dataset_path("ds_orphan"))
    assert offline.read_dataset_entities(offline.dataset_path("ds_kept")).to_pylist() == [
        {"driver_id": 1}, {"driver_id": 2}]


def test_dataset_entity_rows_stage_publish_read_discard(offline):
    entities = pa.table({"driver_id": [1, 2], "n": ["a", None]})
    token = offline.stage_dataset("ds_x", entities)
    offline.publish_dataset(token)
    rel = offline.dataset_path("ds_x")
    assert rel == "p/datasets/ds_x/entities.parquet"
    assert offline.read_dataset_entities(rel).to_pylist() == entities.to_pylist()
    assert offline.file_problem(rel, None) is None
    offline.discard_dataset("ds_x")
    with pytest.raises(FileNotFoundError):
        offline.read_dataset_entities(rel)


def test_uris_name_the_files_and_the_probe_answers(offline):
    w = offline.write_commit("trips", 1, "cmt_u", ROWS)
    uri = offline.uri(w.files[0])
    assert uri.endswith(w.files[0]) and offline.location in uri
    fs = offline.filesystem
    if fs is None:  # local paths: any engine opens them
        with open(uri, "rb") as f:
            data = f.read()
    else:
        data = fs.cat_file(uri)
    assert hashlib.sha256(data).hexdigest() == w.content_digest
    offline.probe()
