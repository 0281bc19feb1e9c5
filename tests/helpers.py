"""Helpers shared by test modules (on the test path via ``pythonpath`` in pyproject)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run_cli(*args: str, cwd: Path, code: int | None = 0) -> subprocess.CompletedProcess:
    """Run ``featureledger ARGS`` in a real process; check its exit code unless ``code=None``."""
    env = {**os.environ, "COLUMNS": "200", "FEATURELEDGER_USER": "tester"}
    env.pop("FEATURELEDGER_REPO", None)
    proc = subprocess.run([sys.executable, "-m", "featureledger", *args], cwd=cwd, env=env,
                          capture_output=True, text=True)
    if code is not None and proc.returncode != code:
        raise AssertionError(f"exit {proc.returncode} (expected {code})\n{proc.stdout}\n"
                             f"{proc.stderr}")
    return proc
