"""The offline store on S3-compatible object storage, against a real S3 API (moto's server
over HTTP on 127.0.0.1): the same answers and hashes as the local store, commits all or
nothing without a rename, orphans invisible and collected, lost objects named."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import textwrap

import pyarrow as pa
import pytest

from featureledger import Entity, FeatureStore, FeatureView, Field
from featureledger.config import load_config
from featureledger.errors import (
    CommitFileError,
    ConfigError,
    FeatureDataWarning,
    StorageError,
    ValidationFailedError,
)

pytestmark = pytest.mark.s3

UTC = dt.UTC
BASE = dt.datetime(2024, 5, 1, tzinfo=UTC)
DEFINITIONS = [
    Entity(name="driver", join_keys={"driver_id": "int64"}),
    FeatureView(name="trips", entities=["driver"], ttl="1h",
                fields=[Field(name="count", dtype="int64", min=0),
                        Field(name="fare", dtype="float64")]),
    FeatureView(name="rating", entities=["driver"],  # no TTL: served whatever its age
                fields=[Field(name="stars", dtype="float64")]),
]


def t(minutes: float) -> dt.datetime:
    return BASE + dt.timedelta(minutes=minutes)


def first_rows() -> pa.Table:
    return pa.table({"driver_id": [1, 2, 1], "event_timestamp": [t(0), t(0), t(10)],
                     "count": [3, 7, 4], "fare": [10.5, 20.0, 11.0]})


def second_rows() -> pa.Table:
    return pa.table({"driver_id": [2, 3], "event_timestamp": [t(20), t(20)],
                     "count": [8, 1], "fare": [21.0, 5.5]})


ENTITIES = pa.table({"driver_id": [1, 2, 3, 1],
                     "event_timestamp": [t(5), t(25), t(25), t(200)]})


def open_store(path, overrides) -> FeatureStore:
    path.mkdir(exist_ok=True)
    cfg = load_config(path, overrides={"registry": f"sqlite:///{path / 'registry.db'}",
                                       **overrides})
    store = FeatureStore(path, config=cfg)
    store.apply(DEFINITIONS)
    return store


def s3_settings(url: str, endpoint: str) -> dict:
    return {"offline_store": {"type": "s3", "url": url, "endpoint_url": endpoint}}


@pytest.fixture
def s3_store(tmp_path, s3_url, s3_endpoint):
    store = open_store(tmp_path, s3_settings(s3_url, s3_endpoint))
    yield store
    store.close()


@pytest.fixture
def fs(s3_endpoint):
    import s3fs

    return s3fs.S3FileSystem(endpoint_url=s3_endpoint, skip_instance_cache=True,
                             use_listings_cache=False)


def keys(fs, url: str) -> list[str]:
    """Every object under ``url``, relative to it."""
    base = url.removeprefix("s3://")
    return sorted(k[len(base) + 1:] for k in fs.find(base + "/"))


def test_retrieval_and_reproduce_match_the_local_store(tmp_path, s3_store, s3_url, fs):
    local = open_store(tmp_path / "local", {})
    try:
        results = {}
        for name, store in (("s3", s3_store), ("local", local)):
            c1 = store.ingest("trips", first_rows()).commit
            c2 = store.ingest("trips", second_rows()).commit
            ds = store.get_historical_features(ENTITIES, ["trips:count", "trips:fare"])
            results[name] = (ds, c1, c2)
        s3_ds, c1, c2 = results["s3"]
        local_ds = results["local"][0]
        table = s3_ds.to_arrow()
        assert table.column("count").to_pylist() == [3, 8, 1, None]  # t(200): beyond the TTL
        assert table.column("fare").to_pylist() == [10.5, 21.0, 5.5, None]
        assert s3_ds.content_hash == local_ds.content_hash
        assert table.to_pylist() == local_ds.to_arrow().to_pylist()
        # the same layout under the prefix, and the same recorded paths
        assert c1.files == [f"default/views/trips/v1/{c1.commit_id}/part-00000.parquet"]
        assert keys(fs, s3_url) == sorted([
            *c1.files, *c2.files,
            f"default/datasets/{s3_ds.id}/entities.parquet"])
        again = s3_store.reproduce(s3_ds.id)
        assert again.content_hash == s3_ds.content_hash
        assert again.to_arrow().to_pylist() == table.to_pylist()
        assert s3_store.reconcile(deep=True).ok
    finally:
        local.close()


def test_materialize_then_read_online(s3_store):
    first = s3_store.ingest("rating", pa.table({
        "driver_id": [1, 2], "event_timestamp": [t(0), t(0)], "stars": [4.5, 3.0]})).commit
    second = s3_store.ingest("rating", pa.table({
        "driver_id": [2], "event_timestamp": [t(9)], "stars": [3.5]})).commit
    s3_store.materialize(t(-60), t(60))
    got = s3_store.get_online_features(["rating:stars"],
                                       [{"driver_id": 1}, {"driver_id": 2}, {"driver_id": 9}])
    assert got.to_dict()["stars"] == [4.5, 3.5, None]
    assert got.commits("stars") == [first.commit_id, second.commit_id, None]


def test_windows_read_the_objects(s3_store):
    s3_store.ingest("trips", first_rows())
    s3_store.ingest("trips", second_rows())
    rows = s3_store.get_features_in_window("trips", t(5), t(30))
    assert rows.column("count").to_pylist() == [4, 8, 1]


def test_a_rejected_ingestion_leaves_no_object(s3_store, s3_url, fs):
    bad = pa.table({"driver_id": [1], "event_timestamp": [t(0)], "count": [-1],
                    "fare": [1.0]})
    with pytest.raises(ValidationFailedError):
        s3_store.ingest("trips", bad)
    assert keys(fs, s3_url) == []
    assert s3_store.commits("trips") == []


def test_drop_invalid_keeps_the_rejected_rows_beside_the_commit(s3_store):
    rows = pa.table({"driver_id": [1, 2], "event_timestamp": [t(0), t(0)],
                     "count": [-1, 5], "fare": [1.0, 2.0]})
    result = s3_store.ingest("trips", rows, mode="drop_invalid")
    assert result.row_count == 1
    assert result.rejected().column("count").to_pylist() == [-1]


def test_a_registry_failure_after_the_objects_removes_them(s3_store, s3_url, fs, monkeypatch):
    commits = s3_store.registry.commits
    written = []
    real_write = s3_store.ctx.offline_store.write_commit

    def write_then_note(*args, **kwargs):
        files = real_write(*args, **kwargs)
        written.extend(files.files)
        return files

    def refuse(*args, **kwargs):
        raise StorageError("the registry refused the commit row (test)")

    monkeypatch.setattr(s3_store.ctx.offline_store, "write_commit", write_then_note)
    monkeypatch.setattr(commits, "insert", refuse)
    with pytest.raises(StorageError, match="refused the commit row"):
        s3_store.ingest("trips", first_rows())
    assert written  # the objects were written before the registry row failed ...
    assert keys(fs, s3_url) == []  # ... and removed
    monkeypatch.undo()
    assert s3_store.commits("trips") == []


def test_an_orphan_prefix_is_invisible_and_collected_after_the_grace_period(
        s3_store, s3_url, fs):
    kept = s3_store.ingest("trips", first_rows()).commit
    before = s3_store.get_historical_features(ENTITIES, ["trips:count"]).to_arrow()
    # a writer that died between its objects and its registry row
    orphan = s3_store.ctx.offline_store.write_commit(
        "trips", 1, "cmt_orphan", second_rows().append_column(
            "_commit_id", pa.array(["cmt_orphan"] * 2)))
    assert set(orphan.files) <= set(keys(fs, s3_url))
    after = s3_store.get_historical_features(ENTITIES, ["trips:count"]).to_arrow()
    assert after.column("count").to_pylist() == before.column("count").to_pylist()
    assert after.column("count").to_pylist() == [3, 7, None, None]

    young = s3_store.gc(grace_seconds=3600)
    assert young.kept_recent == ["default/views/trips/v1/cmt_orphan"] and not young.removed
    assert set(orphan.files) <= set(keys(fs, s3_url))
    dry = s3_store.gc(grace_seconds=0, dry_run=True)
    assert dry.removed == ["default/views/trips/v1/cmt_orphan"]
    assert set(orphan.files) <= set(keys(fs, s3_url))
    report = s3_store.gc(grace_seconds=0)
    assert report.removed == ["default/views/trips/v1/cmt_orphan"]
    assert report.bytes_freed == orphan.bytes
    assert not any("cmt_orphan" in k for k in keys(fs, s3_url))
    assert set(kept.files) <= set(keys(fs, s3_url))  # a registered commit is never touched


@pytest.mark.slow
def test_a_writer_killed_before_its_registry_row_leaves_an_invisible_orphan(
        tmp_path, s3_url, s3_endpoint, fs):
    (tmp_path / "featureledger.yaml").write_text(textwrap.dedent(f"""\
        project: default
        offline_store: {{type: s3, url: "{s3_url}", endpoint_url: "{s3_endpoint}"}}
        """))
    store = FeatureStore(tmp_path)
    store.apply(DEFINITIONS)
    store.close()
    first_rows().to_pandas().to_parquet(tmp_path / "rows.parquet")
    script = ("from featureledger import FeatureStore; import sys; "
              "FeatureStore(sys.argv[1]).ingest('trips', sys.argv[2])")
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path),
                           str(tmp_path / "rows.parquet")],
                          env={**os.environ, "FEATURELEDGER_CRASH_AT": "after_files"},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    assert len(keys(fs, s3_url)) == 1  # the objects were written, no row lists them
    store = FeatureStore(tmp_path)
    try:
        assert store.commits("trips") == []
        with pytest.warns(FeatureDataWarning, match="trips@1 has no data"):
            got = store.get_historical_features(ENTITIES, ["trips:count"]).to_arrow()
        assert got.column("count").to_pylist() == [None] * 4
        assert len(store.gc(grace_seconds=0).removed) == 1
        assert [k for k in keys(fs, s3_url) if "/views/" in k] == []
    finally:
        store.close()


def test_a_deleted_object_is_a_commit_file_error_naming_the_commit(s3_store, s3_url, fs):
    c = s3_store.ingest("trips", first_rows()).commit
    fs.rm(f"{s3_url.removeprefix('s3://')}/{c.files[0]}")
    with pytest.raises(CommitFileError) as exc:
        s3_store.get_historical_features(ENTITIES, ["trips:count"])
    assert exc.value.commit_id == c.commit_id
    assert c.files[0] in str(exc.value) and "is missing" in str(exc.value)
    assert "featureledger quarantine" in str(exc.value)
    with pytest.raises(CommitFileError, match=c.commit_id):
        s3_store.materialize(t(-60), t(60))


def test_reconcile_finds_missing_and_changed_objects(s3_store, s3_url, fs):
    lost = s3_store.ingest("trips", first_rows()).commit
    cut = s3_store.ingest("trips", second_rows()).commit
    base = s3_url.removeprefix("s3://")
    assert s3_store.reconcile().ok
    fs.rm(f"{base}/{lost.files[0]}")
    data = fs.cat_file(f"{base}/{cut.files[0]}")
    fs.pipe_file(f"{base}/{cut.files[0]}", data[:-10])
    report = s3_store.reconcile()
    found = {(p.code, p.ids["commit"]) for p in report.problems}
    assert found == {("commit_files_missing", lost.commit_id),
                     ("commit_file_size_mismatch", cut.commit_id)}
    # same size, other bytes: only the deep check sees it
    fs.pipe_file(f"{base}/{cut.files[0]}", data[:-1] + bytes([data[-1] ^ 1]))
    assert {p.code for p in s3_store.reconcile().problems} == {"commit_files_missing"}
    deep = {(p.code, p.ids["commit"]) for p in s3_store.reconcile(deep=True).problems}
    assert ("commit_digest_mismatch", cut.commit_id) in deep


def test_health_probe_and_typed_driver_errors(tmp_path, s3_endpoint, s3_store):
    from featureledger.errors import BackendUnavailableError
    from featureledger.offline.s3 import S3OfflineStore

    s3_store.ctx.offline_store.probe()  # answers
    assert s3_store.online.health()["offline_store"]["ok"] is True
    no_bucket = S3OfflineStore("s3://no-such-bucket/x", endpoint_url=s3_endpoint)
    with pytest.raises(StorageError, match=r"does not exist.*create it"):
        no_bucket.probe()
    down = S3OfflineStore("s3://b/x", endpoint_url="http://127.0.0.1:9", retries=1)
    with pytest.raises(BackendUnavailableError, match="did not answer"):
        down.probe()


def test_no_credentials_is_access_denied(s3_endpoint, monkeypatch, tmp_path):
    from featureledger.errors import AccessDeniedError
    from featureledger.offline.s3 import S3OfflineStore

    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE",
              "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    store = S3OfflineStore("s3://featureledger-test/x", endpoint_url=s3_endpoint)
    with pytest.raises(AccessDeniedError, match="no AWS credentials"):
        store.probe()


def test_config_takes_no_credentials_and_checks_the_url(tmp_path):
    with pytest.raises(ConfigError, match="known keys: type, url, endpoint_url"):
        load_config(tmp_path, overrides={"offline_store": {
            "type": "s3", "url": "s3://b/p", "aws_secret_access_key": "x"}})
    with pytest.raises(ConfigError, match="not an S3 URL"):
        load_config(tmp_path, overrides={"offline_store": {"type": "s3", "url": "b/p"}})
    cfg = load_config(tmp_path, overrides={"offline_store": {"type": "s3",
                                                             "url": "s3://b/p/"}})
    assert cfg.offline_store.url == "s3://b/p"


def test_a_missing_driver_names_the_extra(monkeypatch):
    from featureledger.backends import backend_class
    from featureledger.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, "s3fs", None)  # as if s3fs were not installed
    monkeypatch.delitem(sys.modules, "featureledger.offline.s3", raising=False)
    with pytest.raises(MissingDependencyError, match=r"featureledger\[s3\]"):
        backend_class("offline_store", "s3")


def test_an_engine_that_cannot_take_the_file_system_is_refused_at_open(tmp_path, s3_url,
                                                                       s3_endpoint):
    class LocalOnlyEngine:  # an engine with no attach_filesystem (reads local paths only)
        name = "local-only"
        version = "0"

        def close(self) -> None:
            pass

    cfg = load_config(tmp_path, overrides={"registry": f"sqlite:///{tmp_path / 'r.db'}",
                                           **s3_settings(s3_url, s3_endpoint)})
    store = FeatureStore(tmp_path, config=cfg, offline_engine=LocalOnlyEngine())
    try:
        with pytest.raises(ConfigError, match="cannot read the offline store at s3://"):
            _ = store.ctx.engine
    finally:
        store.close()


def test_verify_digests_refuses_an_object_changed_in_place(tmp_path, s3_url, s3_endpoint, fs):
    settings = s3_settings(s3_url, s3_endpoint)
    settings["offline_store"]["verify_digests"] = True
    store = open_store(tmp_path, settings)
    try:
        c = store.ingest("trips", first_rows()).commit
        good = store.get_historical_features(ENTITIES, ["trips:count"]).to_arrow()
        assert good.column("count").to_pylist() == [3, 7, None, None]
        key = f"{s3_url.removeprefix('s3://')}/{c.files[0]}"
        data = fs.cat_file(key)
        fs.pipe_file(key, data[:100] + bytes([data[100] ^ 1]) + data[101:])  # same size
        with pytest.raises(CommitFileError, match="no longer matches the commit's content "
                                                  "digest") as exc:
            store.get_historical_features(ENTITIES, ["trips:count"])
        assert exc.value.commit_id == c.commit_id
    finally:
        store.close()


def test_projects_sharing_a_prefix_collect_only_their_own_orphans(tmp_path, s3_url,
                                                                   s3_endpoint, fs):
    a = open_store(tmp_path / "a", {**s3_settings(s3_url, s3_endpoint), "project": "a"})
    b = open_store(tmp_path / "b", {**s3_settings(s3_url, s3_endpoint), "project": "b"})
    try:
        b.ctx.offline_store.write_commit("trips", 1, "cmt_b_orphan", first_rows())
        a.ctx.offline_store.write_commit("trips", 1, "cmt_a_orphan", first_rows())
        assert a.gc(grace_seconds=0).removed == ["a/views/trips/v1/cmt_a_orphan"]
        assert [k for k in keys(fs, s3_url) if "orphan" in k] == [
            "b/views/trips/v1/cmt_b_orphan/part-00000.parquet"]
    finally:
        a.close()
        b.close()


def test_pushed_rows_land_as_objects(s3_store, s3_url, fs):
    commit_id = s3_store.push("rating", pa.table({
        "driver_id": [7], "event_timestamp": [t(1)], "stars": [2.5]}), flush=True)
    landed = s3_store.get_commit(commit_id)
    assert landed.status == "committed"
    assert set(landed.files) <= set(keys(fs, s3_url))
    got = s3_store.get_historical_features(
        pa.table({"driver_id": [7], "event_timestamp": [t(2)]}), ["rating:stars"])
    assert got.to_arrow().column("stars").to_pylist() == [2.5]


def test_compaction_on_object_storage_keeps_every_answer(s3_store, s3_url, fs):
    c1 = s3_store.ingest("trips", first_rows()).commit
    c2 = s3_store.ingest("trips", second_rows()).commit
    before = s3_store.get_historical_features(ENTITIES, ["trips:count", "trips:fare"])
    (res,) = s3_store.compact("trips")
    seg_files = s3_store.segments("trips")[0].files
    assert res.files_before == 2 and len(seg_files) == 1
    assert keys(fs, s3_url).count(seg_files[0]) == 1
    after = s3_store.get_historical_features(ENTITIES, ["trips:count", "trips:fare"])
    assert after.content_hash == before.content_hash
    s3_store.quarantine(c2.commit_id, "bad")
    assert s3_store.get_historical_features(
        ENTITIES, ["trips:count"]).to_arrow().column("count").to_pylist() == [3, 7, None, None]
    # the commits' own objects go once gc's grace period is over; the segment serves
    s3_store.gc(grace_seconds=0)
    assert not set(c1.files + c2.files) & set(keys(fs, s3_url))
    assert s3_store.reproduce(before.id).content_hash == before.content_hash
    assert s3_store.reconcile(deep=True).ok
