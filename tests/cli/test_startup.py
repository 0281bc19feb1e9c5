"""Start-up stays cheap: `featureledger --help` (and every command module, including ones
added later to COMMAND_MODULES) imports nothing heavy, and a command on a current registry
does not load alembic. The timings themselves are measured by bench/cli.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from featureledger.cli.main import COMMAND_MODULES
from helpers import run_cli

HEAVY = ("pandas", "pyarrow", "duckdb", "sqlalchemy", "alembic", "numpy", "pydantic",
         "yaml", "polars", "fastapi", "mlflow")


def loaded_after(code: str, cwd: Path | None = None) -> list[str]:
    """The HEAVY modules loaded once ``code`` ran in a fresh interpreter."""
    probe = (f"import sys\ntry:\n    {code}\nexcept SystemExit:\n    pass\n"
             f"print('\\n' + __import__('json').dumps([m for m in {HEAVY!r} "
             "if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, cwd=cwd)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_help_imports_nothing_heavy() -> None:
    code = ("import runpy; sys.argv = ['featureledger', '--help']; "
            "runpy.run_module('featureledger', run_name='__main__')")
    assert loaded_after(code) == []


@pytest.mark.parametrize("module", COMMAND_MODULES)
def test_command_modules_import_nothing_heavy(module: str) -> None:
    # a command module imports typer and featureledger.cli.common at its top, everything
    # else inside the command that uses it (see featureledger/cli/main.py)
    assert loaded_after(f"import {module}") == [], (
        f"{module} imports a heavy module when it is imported; move that import into the "
        "command function that needs it")


def test_a_command_help_imports_nothing_heavy() -> None:
    code = ("from featureledger.cli.main import main; "
            "main(['ingest', '--help']); main(['runs', 'list', '--help'])")
    # typer validates option values with pydantic once a command is parsed: its own
    # import, and every command needs pydantic for the configuration anyway
    assert [m for m in loaded_after(code) if m != "pydantic"] == []


def test_head_revision_is_alembics() -> None:
    from featureledger.registry.engine import alembic_head_revision, head_revision

    assert head_revision() == alembic_head_revision()


@pytest.mark.e2e
def test_a_current_registry_is_opened_without_alembic(tmp_path: Path) -> None:
    run_cli("init", "demo", "--no-data", cwd=tmp_path)
    repo = tmp_path / "demo"
    run_cli("apply", cwd=repo)  # creates and migrates the registry
    code = "from featureledger.cli.main import main; assert main(['list']) == 0"
    loaded = loaded_after(code, cwd=repo)
    assert "alembic" not in loaded and "pandas" not in loaded
    assert "sqlalchemy" in loaded  # the registry was read
