#!/usr/bin/env bash
# Create bench/.venv-feast with Feast 0.67 and its DuckDB offline store.
#
# Feast pins its dependencies, so it lives in its own virtual environment and is never a
# dependency of featureledger; bench/offline.py runs Feast's side in a child process of
# this interpreter.  Usage: bash bench/setup_feast.sh   (idempotent)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/.venv-feast"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null || python=python3
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --upgrade pip
"$venv/bin/pip" install --quiet "feast[duckdb]==0.67.0" psutil
"$venv/bin/python" -c "import feast, duckdb; print('feast', feast.__version__, 'duckdb', duckdb.__version__)"
