"""What every CLI command shares: the console, opening the store, output formats."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

RepoOption = typer.Option(
    Path("."), "--repo", "-r", help="Feature repository folder (holds featureledger.yaml).",
    envvar="FEATURELEDGER_REPO",
)
JsonOption = typer.Option(False, "--json", help="Print JSON instead of tables.")


def open_store(repo: Path) -> Any:
    from featureledger.store import FeatureStore

    return FeatureStore(repo)


def print_json(value: Any) -> None:
    console.print_json(json.dumps(value, default=str))
