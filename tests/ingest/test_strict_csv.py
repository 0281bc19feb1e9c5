"""Strict CSV: a stray quote or a short row is an error naming the line; drop_invalid
leaves such lines out and says which."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from featureledger import Entity, FeatureStore, FeatureView, Field
from featureledger.config import ProjectConfig
from featureledger.errors import CsvFormatError
from featureledger.ingest.csvstrict import scan_csv
from helpers import read_commit, run_cli, snapshot

DRIVER = Entity(name="driver", join_keys={"driver_id": "int64"})
VIEW = FeatureView(name="trips", entities=[DRIVER],
                   fields=[Field(name="n", dtype="int64"), Field(name="note", dtype="string")])
HEADER = "driver_id,event_timestamp,n,note"


def lines(k: int = 20) -> list[str]:
    return [HEADER] + [f"{i},2024-01-01T{i % 24:02d}:00:00Z,{i},note {i}" for i in range(k)]


def write(repo: Path, rows: list[str], name: str = "batch.csv") -> str:
    (repo / "data").mkdir(parents=True, exist_ok=True)
    (repo / "data" / name).write_text("\n".join(rows) + "\n")
    return f"data/{name}"


@pytest.fixture
def store(tmp_path, sqlite_url):
    repo = tmp_path / "repo"
    s = FeatureStore(repo, config=ProjectConfig(registry=sqlite_url, root=repo))
    s.apply([DRIVER, VIEW])
    yield s
    s.close()


def test_a_stray_quote_is_an_error_naming_its_line(store) -> None:
    rows = lines()
    # one quote opens on line 4 and another closes on line 21: a lenient parser reads the
    # 17 records between them as one field, silently
    rows[3] = '2,2024-01-01T02:00:00Z,2,"note 2'
    rows[20] = '19,2024-01-01T19:00:00Z,19,note" 19'
    path = write(store.config.root, rows)
    before = snapshot(store)
    with pytest.raises(CsvFormatError) as exc:
        store.ingest("trips", path)
    message = str(exc.value)
    assert "line 4: a quote opens a value that does not close on this line" in message
    assert "line 21: a quote opens" in message and "nothing was read" in message
    assert [p["line"] for p in exc.value.problems] == [4, 21]
    assert exc.value.total == 2
    assert snapshot(store) == before


def test_a_short_row_is_an_error_naming_its_line(store) -> None:
    rows = lines(5)
    rows[3] = "2,2024-01-01T02:00:00Z,2"
    rows[5] = "4,2024-01-01T04:00:00Z,4,a,b"
    with pytest.raises(CsvFormatError, match=r"line 4: 3 fields; the header has 4; line 6: 5 "
                                             r"fields; the header has 4"):
        store.ingest("trips", write(store.config.root, rows))
    assert store.commits() == []


def test_drop_invalid_reports_the_lines_it_could_not_parse(store) -> None:
    rows = lines()
    rows[3] = '2,2024-01-01T02:00:00Z,2,"note 2'
    rows[20] = '19,2024-01-01T19:00:00Z,19,note" 19'
    rows[10] = "9,2024-01-01T09:00:00Z"
    result = store.ingest("trips", write(store.config.root, rows), mode="drop_invalid")
    assert result.row_count == 17  # 20 records, 3 unparsable lines
    report = result.report
    assert report.rows_unparsed == 3
    assert [(u["line"], u["problem"]) for u in report.unparsed] == [
        (4, "a quote opens a value that does not close on this line"),
        (11, "2 fields; the header has 4"),
        (21, "a quote opens a value that does not close on this line")]
    assert "3 input line(s) could not be parsed" in str(report)
    stored = store.get_commit(result.commit_id).validation
    assert stored["rows_unparsed"] == 3 and stored["unparsed"][0]["line"] == 4
    stored_notes = read_commit(store, result.commit).column("note").to_pylist()
    assert sorted(stored_notes) == sorted(f"note {i}" for i in range(20) if i not in (2, 9, 19))


def test_a_bad_header_is_an_error_even_under_drop_invalid(store) -> None:
    rows = lines(3)
    rows[0] = 'driver_id,"event_timestamp,n,note'
    with pytest.raises(CsvFormatError, match="line 1: the header has an unbalanced quote"):
        store.ingest("trips", write(store.config.root, rows), mode="drop_invalid")


def test_quoted_values_with_commas_and_doubled_quotes_are_fine(store) -> None:
    rows = lines(3)
    rows[1] = '0,2024-01-01T00:00:00Z,0,"a, b and ""c"""'
    result = store.ingest("trips", write(store.config.root, rows))
    assert result.row_count == 3 and result.report.rows_unparsed == 0


def test_the_scan_counts_lines_as_the_parser_does() -> None:
    data = b'a,b\r\n\r\n1,"x,y"\r\n2,3,4\r\n\n"5",6'
    problems, bad = scan_csv(data)
    assert [(p.line, p.problem) for p in problems] == [(4, "3 fields; the header has 2")]
    assert bad.tolist() == [3]
    assert scan_csv(b"a;b\n1;2;3\n", delimiter=ord(";"))[0][0].line == 2


@pytest.mark.e2e
def test_the_cli_names_the_lines(tmp_path) -> None:
    repo = tmp_path / "cli"
    repo.mkdir()
    (repo / "featureledger.yaml").write_text("project: csv\n")
    with FeatureStore(repo) as s:
        s.apply([DRIVER, VIEW])
    rows = lines(5)
    rows[2] = '1,2024-01-01T01:00:00Z,1,"oops'
    path = write(repo, rows)
    proc = run_cli("ingest", "trips", path, cwd=repo, code=2)
    assert "error (csv_format_error)" in proc.stderr and "line 3: a quote opens" in proc.stderr
    out = run_cli("ingest", "trips", path, "--mode", "drop_invalid", cwd=repo)
    assert "committed" in out.stdout and "4 rows" in out.stdout
    assert "1 input line(s) could not be parsed" in out.stdout
    assert "line 3: a quote opens a value" in out.stdout
    shown = json.loads(run_cli("commits", "--json", cwd=repo).stdout)
    assert shown[0]["validation"]["rows_unparsed"] == 1
