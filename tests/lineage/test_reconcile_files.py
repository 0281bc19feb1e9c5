"""Reconcile finds every damaged file, and every read that meets one names the commit and
the file.

One store holds a commit of every kind (ingested from a file, from a frame, drop_invalid
with its rejected rows, pushed, and one written the way commits were before sizes were
recorded), a dataset's stored entity rows, and a model artifact that is a file and one
that is a folder. Each case damages one file (deletes it, cuts it in half, flips one bit),
checks what reconcile and the reads say, and puts the original bytes back.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from featureledger import Entity, FeatureStore, FeatureView, Field
from featureledger.cli.main import main
from featureledger.errors import CommitFileError, ReproductionError, StorageError
from featureledger.offline.storage import path_digest
from helpers import run_cli

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
# a string stored once in the entity rows: its bytes are found in the file and flipped there,
# which changes the rows (a flip elsewhere may only hit statistics, which the digest of the
# rows rightly ignores)
MARKER = "q7Zr2Kx9Lm4Pw8Vt3Ny6Bc1H"


def rows(ids: list[int], fare: float = 1.0) -> pd.DataFrame:
    return pd.DataFrame({"driver_id": ids, "event_timestamp": [T0] * len(ids),
                         "fare": [fare + i for i in range(len(ids))]})


@dataclass
class World:
    store: FeatureStore
    root: Path  # the repository folder
    commits: dict[str, str]  # kind -> commit id
    dataset: str
    models: dict[str, str]  # "model_file" / "model_folder" -> model id
    artifacts: dict[str, Path]
    entities: pd.DataFrame

    @property
    def offline(self) -> Path:
        return self.store.ctx.offline_store.root

    def target(self, kind: str) -> tuple[Path, dict[str, str]]:
        """The file to damage for ``kind`` and the ids reconcile names it by."""
        s = self.store
        if kind in self.commits:
            c = s.get_commit(self.commits[kind])
            rel = c.validation["rejected_path"] if kind == "rejected" else c.files[0]
            return self.offline / rel, {"commit": c.commit_id, "feature_version": "trips@1",
                                        "file": rel}
        if kind == "dataset":
            rel = s.ctx.offline_store.dataset_path(self.dataset)
            return self.offline / rel, {"dataset": self.dataset, "file": rel}
        art = self.artifacts[kind]
        path = art / "weights.bin" if art.is_dir() else art
        return path, {"model": self.models[kind], "file": str(art)}


@pytest.fixture(scope="module")
def world(tmp_path_factory, write_commit) -> Iterator[World]:
    root = tmp_path_factory.mktemp("damage")
    s = FeatureStore(root)
    s.apply([Entity(name="driver", join_keys={"driver_id": "int64"}),
             FeatureView(name="trips", entities=["driver"],
                         fields=[Field(name="fare", dtype="float64", min=0)])])
    commits = {}
    src = root / "trips.parquet"
    rows([1, 2]).to_parquet(src)
    commits["from_file"] = s.ingest("trips", str(src)).commit.commit_id
    commits["from_frame"] = s.ingest("trips", rows([3, 4])).commit.commit_id
    bad = rows([5, 6, 7]).assign(fare=[1.0, -1.0, 2.0])  # a negative fare is refused
    res = s.ingest("trips", bad, mode="drop_invalid")
    assert res.commit.rejected_count == 1
    commits["drop_invalid"] = commits["rejected"] = res.commit.commit_id
    commits["pushed"] = s.push("trips", [{"driver_id": 8, "event_timestamp": T0, "fare": 8.0}],
                               flush=True)
    legacy = write_commit(s, "trips", {"driver_id": [9], "event_timestamp": [T0],
                                       "fare": [9.0]})
    assert legacy.file_manifest is None  # as written before sizes were recorded
    commits["legacy"] = legacy.commit_id
    entities = pd.DataFrame({"driver_id": list(range(1, 10)),
                             "event_timestamp": [T0 + dt.timedelta(days=1)] * 9,
                             "label": [MARKER if i == 5 else f"l{i}" for i in range(1, 10)]})
    artifacts = {"model_file": root / "model.pkl", "model_folder": root / "model_dir"}
    artifacts["model_file"].write_bytes(b"pickled model " * 64)
    artifacts["model_folder"].mkdir()
    (artifacts["model_folder"] / "weights.bin").write_bytes(bytes(range(256)) * 8)
    (artifacts["model_folder"] / "sub").mkdir()
    (artifacts["model_folder"] / "sub" / "config.json").write_text('{"layers": 2}')
    with s.start_run("damage") as run:
        ds = s.get_historical_features(entities, ["trips:fare"])
        models = {kind: run.log_model(kind.replace("_", "-"), art, training_dataset=ds).model_id
                  for kind, art in artifacts.items()}
    assert sorted(ds.commit_ids) == sorted(set(commits.values()))
    s.materialize()
    w = World(s, root, commits, ds.id, models, artifacts, entities)
    yield w
    s.close()


@contextlib.contextmanager
def damaged(path: Path, how: str) -> Iterator[None]:
    """``path`` deleted, cut in half, with one bit flipped, or (same size) with its Parquet
    footer zeroed or the end of its first column chunk overwritten, until the block ends."""
    original = path.read_bytes()
    data = bytearray(original)
    if how == "delete":
        path.unlink()
    elif how == "truncate":
        path.write_bytes(original[:len(original) // 2])
    elif how == "flip":
        marker = MARKER.encode()
        spots = [i for i in range(len(original)) if original.startswith(marker, i)]
        for i in spots or [len(original) // 2]:  # every copy, statistics too
            data[i + (len(marker) // 2 if spots else 0)] ^= 0x01
        path.write_bytes(bytes(data))
    elif how == "footer":  # the footer's bytes zeroed, its length and magic kept
        n = int.from_bytes(original[-8:-4], "little")
        data[len(data) - 8 - n:len(data) - 8] = bytes(n)
        path.write_bytes(bytes(data))
    elif how == "pages":  # the footer intact, a data page that no longer decodes
        import pyarrow.parquet as pq

        chunk = pq.read_metadata(path).row_group(0).column(0)  # the join key: always read
        end = (chunk.dictionary_page_offset or chunk.data_page_offset) \
            + chunk.total_compressed_size
        data[end - 8:end] = b"\xff" * 8
        path.write_bytes(bytes(data))
    else:
        raise AssertionError(how)
    assert how == "delete" or path.read_bytes() != original
    try:
        yield
    finally:
        path.write_bytes(original)


# (code by default, code under --deep); None: not visible without reading the bytes
EXPECTED = {
    "delete": {"commit": ("commit_files_missing",) * 2,
               "dataset": ("dataset_entities_missing",) * 2,
               "model_file": ("model_artifact_missing",) * 2,
               # one file of the folder gone: the folder's size no longer fits
               "model_folder": ("model_artifact_size_mismatch",) * 2},
    "truncate": {"commit": ("commit_file_size_mismatch",) * 2,
                 "legacy": ("commit_file_unreadable",) * 2,  # no size: Parquet's own ends
                 "dataset": ("dataset_entities_unreadable",) * 2,
                 "model_file": ("model_artifact_size_mismatch",) * 2,
                 "model_folder": ("model_artifact_size_mismatch",) * 2},
    "flip": {"commit": (None, "commit_digest_mismatch"),
             "dataset": (None, "dataset_entities_digest_mismatch"),
             "model_file": (None, "model_artifact_digest_mismatch"),
             "model_folder": (None, "model_artifact_digest_mismatch")},
}
COMMIT_KINDS = ["from_file", "from_frame", "drop_invalid", "rejected", "pushed", "legacy"]
KINDS = [*COMMIT_KINDS, "dataset", "model_file", "model_folder"]


def expected(kind: str, how: str) -> tuple[str | None, str]:
    table = EXPECTED[how]
    if kind in table:
        return table[kind]
    return table["commit"]


def found(report) -> list[tuple[str, dict[str, str]]]:
    return [(p.code, p.ids) for p in report.problems]


@pytest.mark.parametrize("how", ["delete", "truncate", "flip"])
@pytest.mark.parametrize("kind", KINDS)
def test_reconcile_reports_each_damaged_file(world, kind, how, capsys):
    s = world.store
    assert found(s.reconcile(deep=True)) == []  # nothing left over from another case
    path, ids = world.target(kind)
    default_code, deep_code = expected(kind, how)
    with damaged(path, how):
        rep = s.reconcile()
        assert found(rep) == ([(default_code, ids)] if default_code else [])
        deep = s.reconcile(deep=True)
        assert found(deep) == [(deep_code, ids)]
        message = deep.problems[0].message
        assert ids["file"] in message
        assert "restore" in message
        if kind in world.commits:
            assert ids["commit"] in message
            assert f"featureledger quarantine {ids['commit']}" in message
        assert main(["reconcile", "--deep", "--json", "--repo", str(world.root)]) == 1
        out = json.loads(capsys.readouterr().out)
        assert out["ok"] is False and out["deep"] is True
        assert [(p["code"], p["ids"]) for p in out["problems"]] == [(deep_code, ids)]
        assert main(["reconcile", "--repo", str(world.root)]) == (1 if default_code else 0)
        text = capsys.readouterr().out
        assert (ids["file"] in text) == bool(default_code)
    assert found(s.reconcile(deep=True)) == []
    assert main(["reconcile", "--deep", "--repo", str(world.root)]) == 0
    assert "no problems" in capsys.readouterr().out


def test_reconcile_counts_what_it_checked(world):
    rep = world.store.reconcile(deep=True)
    assert rep.ok and rep.deep
    # six commit kinds in five commits; the drop_invalid commit has a side file
    assert {k: rep.checked[k] for k in ("commits", "commit_files", "datasets",
                                        "model_artifacts")} == {
        "commits": 5, "commit_files": 6, "datasets": 1, "model_artifacts": 2}


def test_a_whole_missing_artifact_folder(world):
    folder = world.artifacts["model_folder"]
    moved = folder.with_name("elsewhere")
    folder.rename(moved)
    try:
        assert found(world.store.reconcile()) == [
            ("model_artifact_missing", {"model": world.models["model_folder"],
                                        "file": str(folder)})]
    finally:
        moved.rename(folder)
    assert world.store.reconcile().ok


def test_log_model_records_the_artifact_digest(world):
    s = world.store
    file_model = s.get_model(world.models["model_file"])
    raw = world.artifacts["model_file"].read_bytes()
    assert file_model.artifact_sha256 == hashlib.sha256(raw).hexdigest()
    assert file_model.artifact_size == len(raw)
    folder = world.artifacts["model_folder"]
    h = hashlib.sha256(b"featureledger-tree-v1\n")
    total = 0
    for rel in ("sub/config.json", "weights.bin"):  # sorted relative paths
        data = (folder / rel).read_bytes()
        h.update(rel.encode() + b"\0" + str(len(data)).encode() + b"\0"
                 + hashlib.sha256(data).digest())
        total += len(data)
    folder_model = s.get_model(world.models["model_folder"])
    assert (folder_model.artifact_sha256, folder_model.artifact_size) == (h.hexdigest(), total)
    commit = s.get_commit(world.commits["from_frame"])
    assert {rel: entry["size"] for rel, entry in commit.file_manifest.items()} == {
        rel: (world.offline / rel).stat().st_size for rel in commit.files}
    # its one file is written in the clustered order, and says so
    assert [entry["order"] for entry in commit.file_manifest.values()] == [
        "keys,time,created,commit"]


def test_folder_digest_sees_renames_and_ignores_listing_order(tmp_path):
    a = tmp_path / "a"
    (a / "x").mkdir(parents=True)
    (a / "x" / "1.bin").write_bytes(b"one")
    (a / "2.bin").write_bytes(b"two")
    b = tmp_path / "b"
    b.mkdir()
    (b / "2.bin").write_bytes(b"two")  # created in the other order
    (b / "x").mkdir()
    (b / "x" / "1.bin").write_bytes(b"one")
    assert path_digest(a) == path_digest(b)
    assert path_digest(a).files == 2 and path_digest(a).size == 6
    (b / "x" / "1.bin").rename(b / "x" / "3.bin")  # same bytes, another name
    assert path_digest(a).sha256 != path_digest(b).sha256
    assert path_digest(a / "2.bin").sha256 == hashlib.sha256(b"two").hexdigest()
    with pytest.raises(StorageError, match="neither a file nor a folder"):
        path_digest(tmp_path / "nothing")


# -- reads that meet a damaged commit file --------------------------------------------------


def reads(world: World) -> dict[str, object]:
    s = world.store
    return {
        "historical": lambda: s.get_historical_features(world.entities, ["trips:fare"]),
        "window": lambda: s.get_features_in_window("trips", None, None),
        "materialize": lambda: s.materialize(),
        "reproduce": lambda: s.reproduce(world.dataset),
    }


@pytest.mark.parametrize("how", ["delete", "truncate", "footer", "pages"])
@pytest.mark.parametrize("kind", ["from_file", "from_frame", "drop_invalid", "pushed", "legacy"])
def test_reads_name_the_commit_and_the_file(world, kind, how):
    path, ids = world.target(kind)
    datasets_before = len(world.store.registry.datasets.list())
    with damaged(path, how):
        for name, read in reads(world).items():
            with pytest.raises(CommitFileError) as info:
                read()
            err = info.value
            assert (name, err.commit_id, err.path) == (name, ids["commit"], ids["file"])
            text = str(err)
            assert f"commit {ids['commit']} (trips@1) cannot be read: its file {ids['file']}" \
                in text
            assert f"featureledger quarantine {ids['commit']} --reason" in text
            assert err.code == "commit_file_error" and isinstance(err, StorageError)
    # nothing half-recorded by the failed retrievals, and every read works again
    assert len(world.store.registry.datasets.list()) == datasets_before
    assert world.store.reproduce(world.dataset).content_hash == \
        world.store.get_dataset(world.dataset).content_hash
    # 2 + 2 + 2 (one of three rejected) + 1 + 1 rows
    assert world.store.get_features_in_window("trips", None, None).num_rows == 8


def test_reproduce_says_when_the_entity_rows_are_damaged(world):
    path, _ = world.target("dataset")
    with damaged(path, "truncate"), pytest.raises(ReproductionError, match="cannot be read"):
        world.store.reproduce(world.dataset)
    with damaged(path, "flip"), pytest.raises(ReproductionError, match="do not match"):
        world.store.reproduce(world.dataset)


def test_cli_materialize_names_the_file_not_an_internal_error(world):
    path, ids = world.target("pushed")
    with damaged(path, "delete"):
        proc = run_cli("materialize", "2023-12-01T00:00:00Z", "2024-02-01T00:00:00Z",
                       "--repo", str(world.root), cwd=world.root, code=2)
    assert "internal error" not in proc.stderr
    assert "commit_file_error" in proc.stderr and ids["commit"] in proc.stderr


def test_a_lost_file_then_quarantine_then_reads_work(tmp_path):
    s = FeatureStore(tmp_path)
    try:
        s.apply([Entity(name="driver", join_keys={"driver_id": "int64"}),
                 FeatureView(name="trips", entities=["driver"],
                             fields=[Field(name="fare", dtype="float64")])])
        keep = s.ingest("trips", rows([1, 2], fare=10.0)).commit
        lost = s.ingest("trips", rows([2, 3], fare=20.0)).commit
        s.materialize()
        shutil.rmtree(s.ctx.offline_store.path(lost.files[0]).parent)
        with pytest.raises(CommitFileError, match=lost.commit_id):
            s.materialize()
        assert main(["quarantine", lost.commit_id, "--reason", "file lost",
                     "--repo", str(tmp_path)]) == 0
        s.materialize()
        online = s.get_online_features(["trips:fare"], [{"driver_id": k} for k in (1, 2, 3)])
        # key 2 falls back to the commit still served, key 3 had only the lost one
        assert online.to_dict() == {"driver_id": [1, 2, 3], "fare": [10.0, 11.0, None]}
        hist = s.get_historical_features(
            pd.DataFrame({"driver_id": [2, 3], "event_timestamp": [T0] * 2}), ["trips:fare"])
        assert hist.to_arrow().column("fare").to_pylist() == [11.0, None]
        assert keep.commit_id in hist.commit_ids and lost.commit_id not in hist.commit_ids
        # reconcile still reports the file, and says the commit is no longer served
        (problem,) = s.reconcile().problems
        assert (problem.code, problem.ids["commit"]) == ("commit_files_missing",
                                                          lost.commit_id)
        assert "quarantined, so it is not served" in problem.message
    finally:
        s.close()


def test_files_missing_before_the_query_are_found_by_stat(world):
    """require_files needs no query: a missing file is named before DuckDB runs."""
    commits = [world.store.get_commit(c) for c in world.commits.values()]
    world.store.ctx.offline_store.require_files(commits)  # all there: no error
    path, ids = world.target("from_frame")
    with damaged(path, "delete"), pytest.raises(CommitFileError, match="is missing") as info:
        world.store.ctx.offline_store.require_files(commits)
    assert info.value.path == ids["file"]


def test_a_query_error_unrelated_to_files_is_left_alone(world):
    """A query that fails for its own reasons keeps its error: the files are fine."""
    import duckdb

    c = world.store.get_commit(world.commits["from_frame"])
    path = world.offline / c.files[0]
    con = duckdb.connect()
    try:
        with pytest.raises(duckdb.BinderException, match="nope"), \
                world.store.ctx.offline_store.reading([c]):
            con.sql(f"SELECT nope FROM read_parquet(['{path}'])").fetchall()
        # the same query over a damaged file: now it is the file's fault
        with damaged(path, "pages"), pytest.raises(CommitFileError, match="content digest"), \
                world.store.ctx.offline_store.reading([c]):
            con.sql(f"SELECT * FROM read_parquet(['{path}'])").fetchall()
    finally:
        con.close()


def test_a_file_duckdb_names_is_blamed_without_digesting(tmp_path):
    """When DuckDB's error names the file (a page that fails to decompress), that file is
    reported with DuckDB's reason, before any digest is taken."""
    s = FeatureStore(tmp_path)
    try:
        s.apply([Entity(name="driver", join_keys={"driver_id": "int64"}),
                 FeatureView(name="notes", entities=["driver"],
                             fields=[Field(name="note", dtype="string")])])
        c = s.ingest("notes", pd.DataFrame({
            "driver_id": range(200), "event_timestamp": [T0] * 200,
            "note": [f"n{i}x" * 5 for i in range(200)]})).commit
        path = s.ctx.offline_store.path(c.files[0])
        original = path.read_bytes()
        path.write_bytes(original[:100] + b"\xff" * 64 + original[164:])
        with pytest.raises(CommitFileError) as info:
            s.get_features_in_window("notes", None, None)
        assert info.value.commit_id == c.commit_id and info.value.path == c.files[0]
        assert f"its file {c.files[0]} cannot be read (" in str(info.value)
        assert "content digest" not in str(info.value)
    finally:
        s.close()
