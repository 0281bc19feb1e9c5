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


def snapshot(store) -> tuple[dict[str, str], dict[str, list]]:
    """sha256 of every file under the store root, and every registry table's rows."""
    import hashlib

    import sqlalchemy as sa

    files = {}
    for p in sorted(store.config.root.rglob("*")):
        if p.is_file():
            files[str(p.relative_to(store.config.root))] = hashlib.sha256(
                p.read_bytes()).hexdigest()
    tables = {}
    with store.registry.db.read_all_projects() as conn:
        for name in sorted(sa.inspect(conn).get_table_names()):
            rows = conn.execute(sa.text(f'SELECT * FROM "{name}"')).all()
            tables[name] = sorted(tuple(map(repr, r)) for r in rows)
    return files, tables


def read_commit(store, commit):
    """The rows of one commit, read from its Parquet files."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    return pa.concat_tables(pq.read_table(store.ctx.offline_store.path(f))
                            for f in commit.files)
