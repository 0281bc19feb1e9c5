"""Tampering is noticed: each scenario edits the registry by raw SQL (as someone with the
database's password would) or a commit file on disk, then checks what ``reconcile`` reports
and what reads do, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
import struct
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from featureledger import Entity, FeatureStore, FeatureView, Field
from featureledger.config import ParquetOfflineStoreConfig, ProjectConfig
from featureledger.errors import (
    CommitFileError,
    CommitTamperedError,
    DefinitionTamperedError,
    ValidationFailedError,
)
from featureledger.registry.commits import seal
from helpers import run_cli

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
DRIVER = Entity(name="driver", join_keys={"driver_id": "int64"})
# a fare no other row has: its eight bytes are found in the Parquet file and replaced there
MARKER_FARE = 1234.5678125


def stats_view(max_rate: float = 1.0) -> FeatureView:
    return FeatureView(name="stats", entities=["driver"], fields=[
        Field(name="conv_rate", dtype="float64", min=0, max=max_rate),
        Field(name="fare", dtype="float64")])


def frame(ids: list[int], hours: float, conv_rate: float = 0.5,
          fares: list[float] | None = None) -> pd.DataFrame:
    return pd.DataFrame({"driver_id": ids,
                         "event_timestamp": [T0 + dt.timedelta(hours=hours)] * len(ids),
                         "conv_rate": [conv_rate] * len(ids),
                         "fare": fares if fares is not None else [float(i) for i in ids]})


def open_store(root: Path, url: str, *, verify: bool = False) -> FeatureStore:
    return FeatureStore(root, config=ProjectConfig(
        registry=url, root=root,
        offline_store=ParquetOfflineStoreConfig(verify_digests=verify)))


@pytest.fixture
def world(tmp_path, registry_url) -> Iterator[tuple[FeatureStore, str]]:
    """A store with the driver entity and the stats view; yields it and the registry URL."""
    s = open_store(tmp_path / "repo", registry_url)
    s.apply([DRIVER, stats_view()])
    yield s, registry_url
    s.close()


def raw_sql(url: str, statement: str, **params) -> None:
    """Run one statement against the registry database directly, as an outsider would."""
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(statement), params)
    finally:
        engine.dispose()


def raw_row(url: str, commit_id: str) -> dict:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return dict(conn.execute(sa.text("SELECT * FROM commits WHERE commit_id = :c"),
                                     {"c": commit_id}).one()._mapping)
    finally:
        engine.dispose()


def entities(ids: list[int], hours: float = 10) -> pd.DataFrame:
    return pd.DataFrame({"driver_id": ids,
                         "event_timestamp": [T0 + dt.timedelta(hours=hours)] * len(ids)})


def problems(store: FeatureStore, deep: bool = False) -> list[tuple[str, dict]]:
    return sorted((p.code, p.ids) for p in store.reconcile(deep=deep).problems)


# -- definitions ---------------------------------------------------------------------------


def test_an_edited_spec_is_refused_on_load_and_reported(world, tmp_path) -> None:
    store, url = world
    store.ingest("stats", frame([1], 1, conv_rate=0.5))
    # max 1 -> 100 in the stored spec, the hash left as it was
    spec = json.loads(raw_text(url, "SELECT spec FROM definitions WHERE name = 'stats'"))
    fields = {f["name"]: f for f in spec["fields"]}
    assert fields["conv_rate"]["max"] == 1
    fields["conv_rate"]["max"] = 100
    raw_sql(url, "UPDATE definitions SET spec = :s WHERE name = 'stats'",
            s=json.dumps(spec, sort_keys=True, separators=(",", ":")))

    with pytest.raises(DefinitionTamperedError) as info:
        store.plan([DRIVER, stats_view(max_rate=100)])
    assert (info.value.kind, info.value.name, info.value.version) == (
        "feature_view", "stats", 1)
    assert "feature view stats@1 cannot be loaded" in str(info.value)
    assert "or restore the row from a registry backup" in str(info.value)
    # the edited bound is never used to accept a value
    with pytest.raises(DefinitionTamperedError, match="stats@1"):
        store.ingest("stats", frame([2], 2, conv_rate=50))
    assert len(store.commits("stats")) == 1
    with pytest.raises(DefinitionTamperedError):
        store.get_historical_features(entities([1]), ["stats:conv_rate"])

    assert problems(store) == [("definition_tampered", {"feature_view": "stats@1"})]
    (store.repo_path / "featureledger.yaml").write_text(f"registry: '{url}'\n")
    proc = run_cli("list", "--repo", str(store.repo_path), cwd=tmp_path, code=None)
    assert proc.returncode == 2
    assert "error (definition_tampered)" in proc.stderr
    assert "internal error" not in proc.stderr

    # the audit trail holds the spec the version was created with: restore it from there
    assert "restore_from_audit('feature_view', 'stats', 1)" in str(info.value)
    restored = store.registry.definitions.restore_from_audit("feature_view", "stats", 1)
    assert restored.definition.field("conv_rate").max == 1
    trail = store.registry.db.audit_trail("feature_view", "stats@1")
    assert trail[0]["action"] == "restore_spec"
    assert store.plan([DRIVER, stats_view()]).changed == []
    with pytest.raises(ValidationFailedError):
        store.ingest("stats", frame([2], 2, conv_rate=50))
    assert store.reconcile().ok


def test_edited_docs_are_reported_but_still_load(world) -> None:
    store, url = world
    docs = json.loads(raw_text(url, "SELECT docs FROM definitions WHERE name = 'stats'"))
    docs["description"] = "rewritten behind the registry's back"
    raw_sql(url, "UPDATE definitions SET docs = :d WHERE name = 'stats'",
            d=json.dumps(docs, sort_keys=True, separators=(",", ":")))
    assert store.get_view("stats").definition.description == (
        "rewritten behind the registry's back")
    assert problems(store) == [("definition_docs_tampered", {"feature_view": "stats@1"})]


def test_docs_that_shadow_a_spec_key_are_refused(world) -> None:
    store, url = world
    docs = json.loads(raw_text(url, "SELECT docs FROM definitions WHERE name = 'stats'"))
    # docs are merged over the spec when loading: a bound hidden there is still an edit
    docs["fields"][0]["max"] = 100
    raw_sql(url, "UPDATE definitions SET docs = :d WHERE name = 'stats'",
            d=json.dumps(docs, sort_keys=True, separators=(",", ":")))
    with pytest.raises(DefinitionTamperedError, match="stats@1"):
        store.get_view("stats")
    # restoring puts back the docs the version was created with (the spec was intact)
    restored = store.registry.definitions.restore_from_audit("feature_view", "stats", 1)
    assert restored.definition.field("conv_rate").max == 1
    assert store.reconcile().ok


def test_an_edited_audit_trail_is_not_restored_from(world) -> None:
    store, url = world
    # ':' would start a bind parameter in raw SQL text: the strings are bound instead
    edit = {"a": '"max":1,', "b": '"max":100,'}
    raw_sql(url, "UPDATE definitions SET spec = replace(spec, :a, :b) WHERE name = 'stats'",
            **edit)
    raw_sql(url, "UPDATE audit_log SET details = replace(details, :a, :b) "
            "WHERE object_id = 'stats@1'", **edit)
    assert '"max":100,' in raw_text(url, "SELECT spec FROM definitions WHERE name = 'stats'")
    with pytest.raises(DefinitionTamperedError, match="audit trail was edited too"):
        store.registry.definitions.restore_from_audit("feature_view", "stats", 1)
    with pytest.raises(DefinitionTamperedError):
        store.get_view("stats")


def raw_text(url: str, query: str) -> str:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return str(conn.execute(sa.text(query)).scalar_one())
    finally:
        engine.dispose()


# -- commit rows ---------------------------------------------------------------------------


def test_a_rolled_back_commit_set_back_to_committed_is_reported_and_not_served(world) -> None:
    store, url = world
    good = store.ingest("stats", frame([1, 2], 1, conv_rate=0.25)).commit
    bad = store.ingest("stats", frame([1, 2], 2, conv_rate=0.75)).commit
    store.materialize(end=T0 + dt.timedelta(hours=5))
    store.rollback(bad.commit_id, "wrong rates")
    assert store.get_online_features(["stats:conv_rate"], [{"driver_id": 1}]).to_dict()[
        "conv_rate"] == [0.25]

    raw_sql(url, "UPDATE commits SET status = 'committed' WHERE commit_id = :c",
            c=bad.commit_id)

    assert problems(store) == [
        ("commit_row_tampered", {"commit": bad.commit_id, "feature_version": "stats@1"}),
        ("commit_status_unaudited", {"commit": bad.commit_id, "feature_version": "stats@1"})]
    assert store.get_commit(bad.commit_id).seal == "broken"
    with pytest.raises(CommitTamperedError) as info:
        store.get_historical_features(entities([1, 2]), ["stats:conv_rate"])
    assert info.value.commit_id == bad.commit_id
    assert f"featureledger quarantine {bad.commit_id}" in str(info.value)
    with pytest.raises(CommitTamperedError):
        store.get_features_in_window(["stats:conv_rate"], T0, T0 + dt.timedelta(days=1))
    with pytest.raises(CommitTamperedError):
        store.materialize(end=T0 + dt.timedelta(hours=5))
    # online serving, reopened (the status sync runs): the commit stays hidden
    other = open_store(store.repo_path, url)
    try:
        got = other.get_online_features(["stats:conv_rate"], [{"driver_id": 1}])
        assert got.to_dict(metadata=True)["conv_rate__commit"] == [good.commit_id]
        # hiding the edited row is allowed; featureledger never vouches for the edit, so
        # restoring it is refused
        other.rollback(bad.commit_id, "status edited")
        with pytest.raises(CommitTamperedError, match="cannot be restored"):
            other.restore(bad.commit_id, "looks fine")
        ds = other.get_historical_features(entities([1, 2]), ["stats:conv_rate"])
        assert ds.to_pandas()["conv_rate"].tolist() == [0.25, 0.25]
        assert ds.commit_ids == [good.commit_id]
        # the row still does not match its seal: reported until restored from a backup
        assert problems(other) == [
            ("commit_row_tampered", {"commit": bad.commit_id, "feature_version": "stats@1"})]
    finally:
        other.close()


def test_a_status_flip_with_a_recomputed_seal_is_caught_by_the_audit_trail(world) -> None:
    store, url = world
    store.ingest("stats", frame([1], 1))
    c = store.ingest("stats", frame([1], 2)).commit
    store.quarantine(c.commit_id, "suspicious")
    row = {**raw_row(url, c.commit_id), "status": "committed"}
    raw_sql(url, "UPDATE commits SET status = 'committed', row_digest = :d "
            "WHERE commit_id = :c", d=seal(row), c=c.commit_id)
    assert problems(store) == [
        ("commit_status_unaudited", {"commit": c.commit_id, "feature_version": "stats@1"})]
    message = store.reconcile().problems[0].message
    assert "audit trail ends with 'quarantined'" in message
    assert f"featureledger quarantine {c.commit_id}" in message


@pytest.mark.parametrize("edit", ["row_count", "files", "max_event_ts"])
def test_an_edited_commit_row_is_reported_and_not_served(world, edit) -> None:
    store, url = world
    first = store.ingest("stats", frame([1, 2], 1)).commit
    second = store.ingest("stats", frame([3], 2)).commit
    ds = store.get_historical_features(entities([1, 2, 3]), ["stats:fare"])
    if edit == "row_count":
        raw_sql(url, "UPDATE commits SET row_count = 0 WHERE commit_id = :c",
                c=second.commit_id)
    elif edit == "files":  # point the commit at another commit's files
        raw_sql(url, "UPDATE commits SET files = :f WHERE commit_id = :c",
                f=json.dumps(first.files), c=second.commit_id)
    else:  # hide its rows from retrievals that prune by event time
        raw_sql(url, "UPDATE commits SET max_event_ts = 0, min_event_ts = 0 "
                "WHERE commit_id = :c", c=second.commit_id)

    assert problems(store) == [
        ("commit_row_tampered", {"commit": second.commit_id, "feature_version": "stats@1"})]
    assert [c.seal for c in store.commits("stats")] == ["ok", "broken"]
    if edit != "row_count":  # a commit of no rows is skipped before any read
        with pytest.raises(CommitTamperedError, match=second.commit_id):
            store.get_historical_features(entities([1, 2, 3]), ["stats:fare"])
        with pytest.raises(CommitTamperedError, match=second.commit_id):
            store.materialize(end=T0 + dt.timedelta(hours=5))
    # the dataset that read it cannot be rebuilt from an edited row
    with pytest.raises(CommitTamperedError, match=second.commit_id):
        store.reproduce(ds.id)


def test_unsealed_rows_from_before_seals_are_notices_not_problems(world) -> None:
    store, url = world
    old = store.ingest("stats", frame([1], 1)).commit
    store.ingest("stats", frame([2], 2))
    raw_sql(url, "UPDATE commits SET row_digest = NULL WHERE commit_id = :c",
            c=old.commit_id)
    report = store.reconcile()
    assert report.ok and report.problems == []
    assert [(n.code, n.ids["commit"]) for n in report.notices] == [
        ("commit_unsealed", old.commit_id)]
    assert store.get_commit(old.commit_id).seal == "unsealed"
    # an unsealed row is served: it predates seals
    ds = store.get_historical_features(entities([1, 2]), ["stats:fare"])
    assert ds.to_pandas()["fare"].tolist() == [1.0, 2.0]


def test_a_seal_removed_from_a_newer_row_is_a_problem(world) -> None:
    store, url = world
    store.ingest("stats", frame([1], 1))
    newer = store.ingest("stats", frame([2], 2)).commit
    raw_sql(url, "UPDATE commits SET row_digest = NULL, row_count = 7 WHERE commit_id = :c",
            c=newer.commit_id)
    assert problems(store) == [
        ("commit_seal_missing", {"commit": newer.commit_id, "feature_version": "stats@1"})]


def test_status_changes_keep_the_seal_and_reconcile_clean(world) -> None:
    store, _ = world
    c = store.ingest("stats", frame([1], 1)).commit
    for step in (store.quarantine, store.restore, store.rollback, store.restore):
        step(c.commit_id, "testing")
        assert store.get_commit(c.commit_id).seal == "ok"
    pushed = store.push("stats", [{"driver_id": 5, "event_timestamp": T0,
                                   "conv_rate": 0.1, "fare": 5.0}], flush=True)
    assert store.get_commit(pushed).seal == "ok"
    report = store.reconcile(deep=True)
    assert report.ok and report.notices == []


# -- commit files ----------------------------------------------------------------------------


def replace_fare(path: Path, old: float, new: float) -> None:
    """Change one value inside a Parquet file without changing its size: its plain-encoded
    eight bytes (and the statistics that repeat them) are overwritten in place."""
    data = path.read_bytes()
    before, after = struct.pack("<d", old), struct.pack("<d", new)
    assert data.count(before) >= 1
    path.write_bytes(data.replace(before, after))


def test_a_modified_file_of_an_unreferenced_commit(tmp_path, registry_url) -> None:
    root = tmp_path / "repo"
    store = open_store(root, registry_url)
    store.apply([DRIVER, stats_view()])
    store.ingest("stats", frame([1], 1))
    target = store.ingest("stats", frame([2, 3], 2, fares=[MARKER_FARE, 3.0])).commit
    path = store.ctx.offline_store.path(target.files[0])
    size = path.stat().st_size
    replace_fare(path, MARKER_FARE, 99.0)
    assert path.stat().st_size == size

    # sizes match, so only the deep check sees it
    assert problems(store) == []
    assert problems(store, deep=True) == [
        ("commit_digest_mismatch", {"commit": target.commit_id, "feature_version": "stats@1",
                                    "file": target.files[0]})]
    # without verify_digests the changed value is read (what the option is for)
    plain = store.get_historical_features(entities([2]), ["stats:fare"])
    assert plain.to_pandas()["fare"].tolist() == [99.0]
    store.close()

    verified = open_store(root, registry_url, verify=True)
    try:
        with pytest.raises(CommitFileError) as info:
            verified.get_historical_features(entities([2]), ["stats:fare"])
        assert (info.value.commit_id, info.value.path) == (target.commit_id, target.files[0])
        assert "no longer matches the commit's content digest" in str(info.value)
        with pytest.raises(CommitFileError, match=target.commit_id):
            verified.materialize(end=T0 + dt.timedelta(hours=5))
        with pytest.raises(CommitFileError, match=target.commit_id):
            verified.get_features_in_window(["stats:fare"], T0, T0 + dt.timedelta(days=1))
        # the original bytes back: verified reads work, and are digested once per change
        replace_fare(path, 99.0, MARKER_FARE)
        ds = verified.get_historical_features(entities([1, 2, 3]), ["stats:fare"])
        assert ds.to_pandas()["fare"].tolist() == [1.0, MARKER_FARE, 3.0]
        verified.materialize(end=T0 + dt.timedelta(hours=5))
        assert verified.reconcile(deep=True).ok
    finally:
        verified.close()
