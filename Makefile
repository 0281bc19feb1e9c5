# The two commands a newcomer needs:
#   make demo   installs everything into .venv and runs the end-to-end demo (no server needed)
#   make test   installs everything into .venv and runs the whole test suite
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do command -v $$p >/dev/null && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' && echo $$p && break; done)
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: install install-dev demo test lint bench clean

$(BIN)/python:
	@test -n "$(PYTHON)" || (echo "featureledger needs Python 3.11 or newer on PATH" && exit 1)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[all]'

install-dev: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'

demo: install
	PATH="$(abspath $(BIN)):$$PATH" bash scripts/demo.sh

test: install-dev
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy src/featureledger
	$(BIN)/mypy --strict --follow-imports=silent src/featureledger/store.py src/featureledger/context.py src/featureledger/backends.py
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -n 2 $(PYTEST_ARGS)

lint: install-dev
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy src/featureledger
	$(BIN)/mypy --strict --follow-imports=silent src/featureledger/store.py src/featureledger/context.py src/featureledger/backends.py
	$(BIN)/lint-imports

# every benchmark in turn; each prints its table and writes bench/results/<name>.json.
# Feast columns need `bash bench/setup_feast.sh` once (Feast lives in its own venv).
bench: install-dev
	$(BIN)/python bench/ingest.py --runs 5
	$(BIN)/python bench/offline.py --runs 5
	$(BIN)/python bench/compaction.py --runs 3
	$(BIN)/python bench/aggregations.py --runs 3
	$(BIN)/python bench/online.py
	$(BIN)/python bench/push.py
	$(BIN)/python bench/lineage.py
	$(BIN)/python bench/cli.py
	$(BIN)/python bench/access.py --rounds 6 --calls 6000 --historical-rounds 7

clean:
	rm -rf $(VENV) demo-repo .pytest_cache build *.egg-info
