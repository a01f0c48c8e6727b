# Common commands. `make demo` and `make test` are the two that matter (README).
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
# This machine's pip config names local indexes that lack most projects; pip warns per project.
QUIET_PIP := { grep -v 'is ignored: it is neither a file nor a directory' || true; }
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

export PREFECT_SERVER_ANALYTICS_ENABLED ?= false

.PHONY: setup demo test test-fast lint typecheck lock audit bench clean up down

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check pip==25.3 2>&1 | $(QUIET_PIP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev]" 2>&1 | $(QUIET_PIP)
	touch $(STAMP)

# Synthesize a small RSNA-layout set and run the nightly pipeline on it, embedded defaults.
demo: setup
	$(BIN)/mammo demo

test: setup
	$(BIN)/python -m pytest

test-fast: setup
	$(BIN)/python -m pytest -m "not integration and not slow"

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy mammo tasks flows infra/stack

# Re-resolve the pinned set from pyproject.toml into constraints.txt (in a throwaway venv).
lock:
	rm -rf /tmp/mammo-lock && $(PYTHON) -m venv /tmp/mammo-lock
	/tmp/mammo-lock/bin/python -m pip install --quiet pip==25.3 2>&1 | $(QUIET_PIP)
	/tmp/mammo-lock/bin/python -m pip install --quiet -e ".[dev]" 2>&1 | $(QUIET_PIP)
	/tmp/mammo-lock/bin/python -m pip freeze --exclude-editable --exclude mammo | sed 's/+cpu$$//' > constraints.txt

audit: setup
	$(BIN)/pip-audit -r constraints.txt --no-deps --disable-pip --strict

bench: setup
	$(BIN)/python -m benchmarks.run_all

up: setup
	$(BIN)/mammo up

down: setup
	$(BIN)/mammo down

clean:
	rm -rf .mammo build dist *.egg-info
