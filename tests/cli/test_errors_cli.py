"""The command line's errors, run as a user would: what the environment or the user's own
definitions cause is an error that says what happened; "internal error" is left for bugs."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import run_cli as fl


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("errors")
    fl("init", "demo", cwd=root)
    repo = root / "demo"
    fl("apply", cwd=repo)
    fl("ingest", "driver_stats", "data/driver_stats.parquet", cwd=repo)
    return repo


def test_an_output_path_that_cannot_be_written_is_not_an_internal_error(demo) -> None:
    (demo / "a_file").write_text("not a folder")
    proc = fl("historical", "data/entity_rows.parquet", "--features",
              "driver_stats:conv_rate", "--out", "a_file/train.parquet", cwd=demo, code=2)
    assert "error (os_error)" in proc.stderr and "a_file" in proc.stderr
    assert "internal error" not in proc.stderr


def test_a_check_that_fails_on_the_data_is_named(demo) -> None:
    drivers = demo / "drivers.py"
    original = drivers.read_text()
    broken = original.replace('"acc_rate <= 1.0 OR conv_rate > 0"',
                              '"CAST(vehicle_type AS INTEGER) > 0"')
    assert broken != original
    drivers.write_text(broken)
    try:
        fl("apply", cwd=demo)
        proc = fl("ingest", "driver_stats", "data/driver_stats.parquet", cwd=demo, code=2)
    finally:
        drivers.write_text(original)
    assert "error (ingestion_error): rule check:completion_needs_acceptance" in proc.stderr
    assert "cannot be evaluated: Conversion Error" in proc.stderr
    assert "internal error" not in proc.stderr


def test_an_in_process_call_leaves_the_environment_as_it_found_it(tmp_path, monkeypatch,
                                                                   capsys) -> None:
    """--repo and --principal reach commands through the environment; a call of main() in a
    longer-lived process must not leave them behind for whatever runs next (a server
    started later would otherwise open that repository as that principal)."""
    import os

    from featureledger.cli.main import main

    monkeypatch.delenv("FEATURELEDGER_REPO", raising=False)
    monkeypatch.setenv("FEATURELEDGER_PRINCIPAL", "before")
    assert main(["--repo", str(tmp_path), "--principal", "alice", "list"]) == 0
    assert "FEATURELEDGER_REPO" not in os.environ
    assert os.environ["FEATURELEDGER_PRINCIPAL"] == "before"


def _printed_error(monkeypatch, terminal: bool, message: str) -> str:
    import io

    from rich.console import Console

    from featureledger.cli import common

    out = io.StringIO()
    monkeypatch.setattr(common, "err_console", Console(
        file=out, force_terminal=terminal, width=80, color_system=None))
    common.print_error("error (not_found)", message)
    return out.getvalue()


def test_an_error_wraps_at_the_terminal_between_words_and_keeps_ids_whole(monkeypatch
                                                                          ) -> None:
    cid = "cmt_0193b2c4-5d6e-7f80-9a1b-2c3d4e5f6a7b"
    path = "/srv/features/" + "deeply/nested/" * 6 + "driver_stats.parquet"
    message = (f"commit {cid} of view driver_stats is quarantined; release it with "
               f"`featureledger quarantine release {cid}` or read {path} as of an "
               "earlier time [not markup]")
    text = _printed_error(monkeypatch, True, message)
    lines = text.rstrip("\n").split("\n")
    assert len(lines) > 2
    for line in lines:  # a line is longer only when it is one unbreakable word
        assert len(line) <= 80 or " " not in line.strip(), line
    assert all(line.startswith("  ") for line in lines[1:])
    assert sum(line.count(cid) for line in lines) == 2  # never split across lines
    assert any(line.strip() == path for line in lines)
    assert " ".join(line.strip() for line in lines) == f"error (not_found): {message}"


def test_an_error_piped_stays_on_one_line(monkeypatch) -> None:
    message = "word " * 60 + "end"
    text = _printed_error(monkeypatch, False, message)
    assert text == f"error (not_found): {message}\n"
