"""Bounds: a value of any size is cut, with its size shown, in messages, validation reports,
profiles and CLI output. The assertions are on sizes (characters, bytes), not on time."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from featureledger import Entity, FeatureStore, FeatureView, Field
from featureledger.config import ProjectConfig
from featureledger.errors import IngestionError, ValidationFailedError
from featureledger.model.bounds import shorten
from helpers import run_cli

BIG = 10 * 1024 * 1024  # 10,485,760 characters
DRIVER = Entity(name="driver", join_keys={"driver_id": "int64"})
VIEW = FeatureView(name="notes", entities=[DRIVER], fields=[
    Field(name="note", dtype="string", regex=r"[a-z ]{0,50}"),  # a 10 MB value fails it
    Field(name="free", dtype="string")])  # any value passes


def rows(note: str, free: str = "ok") -> pa.Table:
    ts = pa.array([0, 3_600_000_000], pa.timestamp("us", tz="UTC"))
    return pa.table({"driver_id": [1, 2], "event_timestamp": ts, "note": [note, "fine"],
                     "free": [free, "short"]})


def open_store(repo: Path, url: str, **bounds) -> FeatureStore:
    s = FeatureStore(repo, config=ProjectConfig(registry=url, root=repo,
                                                bounds=bounds or {}))
    s.apply([DRIVER, VIEW])
    return s


@pytest.fixture
def store(tmp_path, sqlite_url):
    s = open_store(tmp_path / "repo", sqlite_url)
    yield s
    s.close()


def test_shorten_shows_the_head_and_the_length() -> None:
    assert shorten("a" * BIG, 4) == "'aaaa...' (10,485,760 chars)"
    assert shorten("short") == "'short'"


def test_a_huge_failing_value_gives_a_small_message_and_report(store) -> None:
    with pytest.raises(ValidationFailedError) as exc:
        store.ingest("notes", rows("A" * BIG))
    message = str(exc.value)
    assert len(message) < 2_000
    assert "(10,485,760 chars)" in message
    sample = exc.value.report.rule("regex:note").sample[0]
    assert sample["values"]["note"] == "A" * 200 + "..."
    assert sample["truncated"] == {"note": "10,485,760 chars"}
    assert len(json.dumps(exc.value.report.to_dict())) < 3_000


def test_a_huge_value_in_a_push_gives_a_small_message(store) -> None:
    with pytest.raises(ValidationFailedError) as exc:
        store.push("notes", rows("A" * BIG))
    assert len(str(exc.value)) < 2_000 and "(10,485,760 chars)" in str(exc.value)


def test_a_huge_accepted_value_gives_a_small_profile(store) -> None:
    result = store.ingest("notes", rows("fine", free="z" * BIG))
    profile = store.get_commit(result.commit_id).profile
    assert len(json.dumps(profile)) < 4_000
    free = profile["columns"]["free"]
    assert free["max"] == "z" * 200 + "..." and free["max_chars"] == BIG
    assert free["min"] == "short" and "min_chars" not in free
    top = {e["value"]: e for e in free["top_k"]}
    assert top["z" * 200 + "..."]["chars"] == BIG and top["short"]["count"] == 1
    assert result.report.ok


def test_the_bounds_are_configurable(tmp_path, sqlite_url) -> None:
    with open_store(tmp_path / "repo", sqlite_url, value_chars=20, profile_chars=10) as s:
        with pytest.raises(ValidationFailedError) as exc:
            s.ingest("notes", rows("A" * 1000))
        sample = exc.value.report.rule("regex:note").sample[0]
        assert sample["values"]["note"] == "A" * 20 + "..."
        profile = s.ingest("notes", rows("fine", free="z" * 1000)).profile
        assert profile["columns"]["free"]["max"] == "z" * 10 + "..."


def test_a_huge_filter_is_refused_unread(store) -> None:
    with pytest.raises(IngestionError, match=r"10,485,769 characters long \(at most 10,000\)") \
            as exc:
        store.ingest("notes", rows("fine"), filter="note = '" + "x" * BIG + "'")
    assert len(str(exc.value)) < 1_000


def test_driver_errors_quoting_a_huge_value_are_cut(store) -> None:
    with pytest.raises(IngestionError, match="cannot be evaluated") as exc:
        store.ingest("notes", rows("9" * BIG + "x"), filter="CAST(note AS INTEGER) > 0")
    assert len(str(exc.value)) < 1_000


def test_huge_column_names_are_cut_in_messages(store) -> None:
    table = rows("fine").append_column("c" * BIG, pa.array([1, 2]))
    with pytest.raises(IngestionError, match=r"\(10,485,760 chars\) are not in feature view") \
            as exc:
        store.ingest("notes", table)
    assert len(str(exc.value)) < 1_000


@pytest.mark.e2e
def test_the_cli_renders_bounded_values(tmp_path) -> None:
    repo = tmp_path / "cli"
    (repo / "data").mkdir(parents=True)
    (repo / "featureledger.yaml").write_text("project: bounds\n")
    with FeatureStore(repo) as s:
        s.apply([DRIVER, VIEW])
    pq.write_table(rows("A" * BIG), repo / "data" / "bad.parquet")
    pq.write_table(rows("fine", free="z" * BIG), repo / "data" / "good.parquet")

    rejected = run_cli("ingest", "notes", "data/bad.parquet", cwd=repo, code=3)
    assert len(rejected.stdout) + len(rejected.stderr) < 20_000
    assert "(10,485,760 chars)" in rejected.stderr.replace("\n", "")
    as_json = run_cli("ingest", "notes", "data/bad.parquet", "--json", cwd=repo, code=3)
    assert len(as_json.stdout) < 20_000
    assert json.loads(as_json.stdout)["report"]["rules"]

    done = run_cli("ingest", "notes", "data/good.parquet", "--json", cwd=repo)
    assert len(done.stdout) < 20_000
    shown = run_cli("commit", "show", json.loads(done.stdout)["commit_id"], cwd=repo)
    assert len(shown.stdout) < 20_000 and "chars)" in shown.stdout
