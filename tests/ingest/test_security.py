"""The security corpus: user SQL, crafted names and source paths that reach outside.

Every payload is refused with a clear error, and the file system and the store say so:
the canary file outside the repository is never read (its access time is watched, and its
content never appears in any message), no COPY or ATTACH target is ever created, and the
registry and the offline store are exactly as they were.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from featureledger import Entity, FeatureStore, FeatureView, Field, FileSource, RowCheck
from featureledger.config import ProjectConfig
from featureledger.errors import (
    DefinitionError,
    FeatureLedgerError,
    IngestionError,
    SourcePathError,
)
from helpers import run_cli, snapshot

SECRET = "CANARY-7f3a9"
T0 = pd.Timestamp("2024-01-01", tz="UTC")
DRIVER = Entity(name="driver", join_keys={"driver_id": "int64"})


def trips(**overrides) -> FeatureView:
    spec = dict(name="trips", entities=[DRIVER],
                fields=[Field(name="n", dtype="int64"), Field(name="city", dtype="string")])
    spec.update(overrides)
    return FeatureView(**spec)


def frame(k: int = 3) -> pd.DataFrame:
    return pd.DataFrame({"driver_id": range(1, k + 1),
                         "event_timestamp": [T0 + pd.Timedelta(hours=h) for h in range(k)],
                         "n": range(k), "city": ["ams"] * k})


class Outside:
    """The places an attack aims at, outside the repository: a canary file to read, a
    folder to list, and targets that COPY or ATTACH would create."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "outside"
        self.dir.mkdir()
        self.canary = self.dir / "canary.csv"
        self.canary.write_text(f"driver_id,event_timestamp,n,city\n1,2024-01-01,1,{SECRET}\n")
        self.copy_target = self.dir / "pwned.csv"
        self.db_target = self.dir / "attached.db"
        self._mark()
        self.watch_atime = self._atime_works(root)

    def _mark(self) -> None:
        # relatime updates the access time on a read when it is older than the mtime
        st = self.canary.stat()
        os.utime(self.canary, ns=(st.st_mtime_ns - 10**12, st.st_mtime_ns))
        self.atime = self.canary.stat().st_atime_ns

    @staticmethod
    def _atime_works(root: Path) -> bool:
        probe = root / "probe"
        probe.write_text("x")
        st = probe.stat()
        os.utime(probe, ns=(st.st_mtime_ns - 10**12, st.st_mtime_ns))
        before = probe.stat().st_atime_ns
        probe.read_text()
        return probe.stat().st_atime_ns != before

    def untouched(self, *texts: str) -> None:
        """Nothing read, nothing written; no text shows the canary's content."""
        assert not self.copy_target.exists()
        assert not self.db_target.exists()
        assert sorted(p.name for p in self.dir.iterdir()) == ["canary.csv"]
        if self.watch_atime:
            assert self.canary.stat().st_atime_ns == self.atime, "the canary file was read"
        for t in texts:
            assert SECRET not in t


@pytest.fixture
def outside(tmp_path) -> Outside:
    return Outside(tmp_path)


@pytest.fixture
def repo(tmp_path) -> Path:
    root = tmp_path / "repo"
    (root / "data").mkdir(parents=True)
    frame().to_csv(root / "data" / "trips.csv", index=False)
    return root


@pytest.fixture
def store(repo, registry_url):
    s = FeatureStore(repo, config=ProjectConfig(registry=registry_url, root=repo))
    s.apply([DRIVER, trips()])
    yield s
    s.close()


def _payloads(o: Outside) -> dict[str, str]:
    c, d = o.canary.as_posix(), o.dir.as_posix()
    return {
        "from_read_csv": f"TRUE) FROM read_csv('{c}') WHERE (TRUE",
        "subquery_read_csv": f"(SELECT count(*) FROM read_csv('{c}')) > 0",
        "read_text": f"len((SELECT content FROM read_text('{c}'))) > 0",
        "read_text_call": f"read_text('{c}') IS NOT NULL",
        "replacement_scan": f"driver_id IN (SELECT driver_id FROM '{c}')",
        "glob": f"(SELECT count(*) FROM glob('{d}/*')) > 0",
        "glob_call": f"len(glob('{d}/*')) > 0",
        "copy_stacked": f"TRUE); COPY (SELECT 1) TO '{o.copy_target.as_posix()}'; SELECT (TRUE",
        "attach_stacked": f"TRUE); ATTACH '{o.db_target.as_posix()}' AS x; SELECT (TRUE",
        "install_stacked": "TRUE); INSTALL httpfs FROM 'http://127.0.0.1:9/'; SELECT (TRUE",
        "load_stacked": "TRUE); LOAD httpfs; SELECT (TRUE",
        "set_stacked": "TRUE); SET enable_external_access = true; SELECT (TRUE",
        "pragma_stacked": "TRUE); PRAGMA version; SELECT (TRUE",
        "union": "TRUE) UNION ALL SELECT (TRUE",
        "setting": "current_setting('enable_external_access')",
        "qualified": "system.main.lower(city) = 'ams'",
        "aggregate": "count(*) > 0",
    }


PAYLOAD_NAMES = ["from_read_csv", "subquery_read_csv", "read_text", "read_text_call",
                 "replacement_scan", "glob", "glob_call", "copy_stacked", "attach_stacked",
                 "install_stacked", "load_stacked", "set_stacked", "pragma_stacked", "union",
                 "setting", "qualified", "aggregate"]


def test_the_corpus_names_every_payload(outside) -> None:
    assert sorted(_payloads(outside)) == sorted(PAYLOAD_NAMES)


# -- --filter ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", PAYLOAD_NAMES)
def test_filter_payloads_are_refused(store, outside, name) -> None:
    payload = _payloads(outside)[name]
    before = snapshot(store)
    with pytest.raises(IngestionError, match=r"filter .* is refused: it ") as exc:
        store.ingest("trips", frame(), filter=payload)
    assert "Write one SQL expression" in str(exc.value)
    assert snapshot(store) == before and store.commits() == []
    outside.untouched(str(exc.value))


@pytest.mark.e2e
def test_filter_payloads_are_refused_by_the_cli(repo, outside) -> None:
    run_cli("init", "cli", cwd=repo)
    cli_repo = repo / "cli"
    run_cli("apply", cwd=cli_repo)
    payloads = _payloads(outside)
    for name in ("from_read_csv", "copy_stacked", "attach_stacked", "read_text_call",
                 "install_stacked"):
        proc = run_cli("ingest", "driver_stats", "--filter", payloads[name], cwd=cli_repo,
                       code=2)
        assert "error (ingestion_error): filter" in proc.stderr and "is refused" in proc.stderr
        outside.untouched(proc.stdout, proc.stderr)
    assert run_cli("commits", "--json", cwd=cli_repo).stdout.strip() == "[]"


def test_an_accepted_filter_still_runs_on_the_sandbox(store, outside) -> None:
    result = store.ingest("trips", frame(5), filter="n >= 2 AND city = 'ams' -- a comment")
    assert result.row_count == 3
    outside.untouched()


# -- row checks: apply, plan, ingest and push ------------------------------------------------
@pytest.mark.parametrize("name", PAYLOAD_NAMES)
def test_check_payloads_are_refused_at_apply(store, outside, name) -> None:
    payload = _payloads(outside)[name]
    before = snapshot(store)
    view = trips(checks=[RowCheck(name="evil", expr=payload)])
    for call in (store.plan, store.apply):
        with pytest.raises(DefinitionError, match=r"row check 'evil': .* is refused: it "):
            call([DRIVER, view])
    assert snapshot(store) == before
    outside.untouched()


def _smuggle(store, view: FeatureView) -> None:
    """Store a view as a registry written before the guard existed would hold it: the
    registry's own apply, without the checks the store's apply makes."""
    store.registry.definitions.apply([DRIVER, view])


@pytest.mark.parametrize("name", ["from_read_csv", "subquery_read_csv", "read_text_call",
                                  "copy_stacked", "attach_stacked", "glob_call", "setting"])
def test_a_stored_unsafe_check_refuses_every_ingest_and_push(store, outside, name) -> None:
    _smuggle(store, trips(checks=[RowCheck(name="evil", expr=_payloads(outside)[name])]))
    store.get_online_features(["trips:n"], [{"driver_id": 1}])  # the online store exists
    before = snapshot(store)
    with pytest.raises(IngestionError, match=r"row check 'evil': .* is refused") as exc:
        store.ingest("trips", frame())
    with pytest.raises(IngestionError, match=r"row check 'evil': .* is refused") as pushed:
        store.push("trips", frame().to_dict("records"), flush=True)
    assert snapshot(store) == before
    outside.untouched(str(exc.value), str(pushed.value))


def test_broken_checks_are_definition_errors_at_apply(store) -> None:
    before = snapshot(store)
    cases = {
        "nope > 1": r"names column.s. 'nope', which are not among its columns: 'driver_id'",
        "list_contains(n, 1)": r"cannot be evaluated: Binder Error: No function matches",
        "n + 1": r"is of type BIGINT, not a boolean",
        "n >": r"is refused: it does not parse",
    }
    for expr, message in cases.items():
        with pytest.raises(DefinitionError, match=message):
            store.apply([DRIVER, trips(checks={"broken": expr})])
    assert snapshot(store) == before
    # a check over a join key that comes from a registered entity binds
    store.apply([trips(entities=["driver"], checks={"keyed": "driver_id > 0 AND n >= 0"})])
    assert store.ingest("trips", frame()).row_count == 3


# -- migrations ---------------------------------------------------------------------------
def test_migration_payloads_are_refused(store, outside) -> None:
    store.ingest("trips", frame())
    c, tgt, db = outside.canary.as_posix(), outside.copy_target.as_posix(), \
        outside.db_target.as_posix()
    new = trips(fields=[Field(name="n", dtype="string"), Field(name="city", dtype="string")])
    before = snapshot(store)
    payloads = {
        f"SELECT * FROM read_csv('{c}')": "table function read_csv",
        f"SELECT * FROM read_text('{c}')": "table function read_text",
        f"SELECT * FROM '{c}'": "it may read only old",
        f"SELECT * FROM old UNION ALL SELECT * FROM read_csv('{c}')": "read_csv",
        f"WITH x AS (SELECT * FROM glob('{c}')) SELECT * FROM old": "glob",
        f"SELECT * FROM old; COPY old TO '{tgt}'": "2 statements",
        f"COPY old TO '{tgt}'": "COPY statement",
        f"ATTACH '{db}'": "ATTACH statement",
        "INSTALL httpfs": "statement",
        "LOAD httpfs": "statement",
        "SELECT current_setting('threads') AS n FROM old": "current_setting",
        "SELECT * FROM duckdb_settings": "it may read only old",
        "WITH duckdb_settings AS (SELECT * FROM duckdb_settings) SELECT * FROM old":
            "it may read only old",
    }
    for sql, why in payloads.items():
        with pytest.raises(DefinitionError, match="migration") as exc:
            store.apply([DRIVER, new], allow_breaking="retype", migrations={"trips": sql})
        assert why in str(exc.value), (sql, str(exc.value))
        outside.untouched(str(exc.value))
    assert snapshot(store) == before


# -- crafted names ------------------------------------------------------------------------
@pytest.mark.parametrize("overrides", [
    {"timestamp_field": "event_timestamp\" FROM read_csv('/etc/passwd') --"},
    {"timestamp_field": "ts\"); COPY (SELECT 1) TO '/tmp/pwned' --"},
    {"created_timestamp_field": "created\", 1) TO '/tmp/pwned' (FORMAT csv) --"},
    {"created_timestamp_field": "a b"},
    {"join_keys": {"driver_id\" --": "int64"}},
    {"entities": ["driver; DROP"]},
    {"fields": [Field(name="n", dtype="int64")], "name": "v" * 300},
], ids=["ts_from", "ts_copy", "created_copy", "created_space", "join_key", "entity",
        "long_name"])
def test_crafted_names_are_refused_when_the_definition_is_made(overrides) -> None:
    with pytest.raises(DefinitionError, match=r"is not valid|is too long") as exc:
        trips(**overrides)
    assert len(str(exc.value)) < 400  # the name is shown cut, not whole


def test_a_long_view_name_is_a_clear_definition_error() -> None:
    with pytest.raises(DefinitionError, match=r"'v{40}\.\.\.' \(300 chars\) is too long: at "
                                              r"most 128 characters"):
        trips(name="v" * 300)
    assert trips(name="v" * 128).name == "v" * 128


def test_column_map_targets_follow_the_name_rule(store, outside) -> None:
    df = frame().rename(columns={"n": "trips_n"})
    with pytest.raises(IngestionError, match=r"column map target name .* is not valid"):
        store.ingest("trips", df, column_map={"trips_n": "n\" FROM read_csv('x') --"})
    assert store.commits() == []


# -- source paths -------------------------------------------------------------------------
def test_paths_outside_the_repository_are_refused(store, repo, outside) -> None:
    before = snapshot(store)  # (taken before the links: it reads every file it finds)
    (repo / "data" / "link.csv").symlink_to(outside.canary)
    (repo / "linked").symlink_to(outside.dir, target_is_directory=True)
    attempts = [
        "../outside/canary.csv",
        "data/../../outside/canary.csv",
        str(outside.canary),
        "data/link.csv",
        "data/*.csv",  # the glob matches the link too
        "linked/canary.csv",
        "linked",
        "../outside/*.csv",
        "/etc/passwd",
    ]
    for path in attempts:
        with pytest.raises(SourcePathError) as exc:
            store.ingest("trips", path)
        message = str(exc.value)
        assert "outside the repository" in message and "sources: {allowed_prefixes" in message
        assert exc.value.code == "source_path_not_allowed"
        outside.untouched(message)
    (repo / "data" / "link.csv").unlink()
    (repo / "linked").unlink()
    assert snapshot(store) == before


def test_a_view_source_outside_the_repository_is_refused(store, outside) -> None:
    store.apply([DRIVER, trips(source=FileSource(path="../outside/canary.csv"))])
    before = snapshot(store)
    with pytest.raises(SourcePathError, match=r"source path '\.\./outside/canary\.csv' leads to "
                                              r".*outside/canary\.csv, outside the repository"):
        store.ingest("trips")
    assert snapshot(store) == before
    outside.untouched()


def test_an_allowed_prefix_opens_a_folder_outside(repo, outside, registry_url) -> None:
    (repo / "featureledger.yaml").write_text(
        f"registry: {registry_url}\nsources:\n  allowed_prefixes: [../outside]\n")
    with FeatureStore(repo) as s:
        s.apply([DRIVER, trips()])
        commit = s.ingest("trips", "../outside/canary.csv").commit
        assert commit.row_count == 1
        with pytest.raises(SourcePathError, match=r"now: .*/outside\)"):
            s.ingest("trips", "/etc/hostname")


def test_relative_paths_are_relative_to_the_repository(store, repo, tmp_path,
                                                       monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # not the repository
    assert store.ingest("trips", "data/trips.csv").row_count == 3
    with pytest.raises(IngestionError, match="relative to the repository folder"):
        store.ingest("trips", "trips.csv")


@pytest.mark.e2e
def test_the_cli_refuses_paths_outside_the_repository(repo, outside) -> None:
    run_cli("init", "cli", cwd=repo)
    run_cli("apply", cwd=repo / "cli")
    proc = run_cli("ingest", "driver_stats", "../../outside/canary.csv", cwd=repo / "cli",
                   code=2)
    assert "error (source_path_not_allowed)" in proc.stderr
    outside.untouched(proc.stdout, proc.stderr)


def test_read_errors_never_show_the_file(store, repo) -> None:
    (repo / "data" / "secret.csv").write_text(f"a,b\n{SECRET},x,y\n")
    with pytest.raises(FeatureLedgerError) as exc:
        store.ingest("trips", "data/secret.csv")
    assert SECRET not in str(exc.value) and "line 2" in str(exc.value)
