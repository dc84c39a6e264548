# Developer and CI entry points. `make test` is the one command a fresh machine needs:
# it creates .venv, installs the project with its test extras, lints and runs pytest.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := test

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LINT_PATHS := tileserver tests fixtures bench
PYTEST_ARGS ?=

DEMO_DIR ?= .data/demo
CASES_DIR ?= .data/cases
CATALOG ?= .data/catalog.sqlite
DEMO ?=
HOST ?= 127.0.0.1
PORT ?= 8000
BENCH_ARGS ?=

# Browsers are never downloaded: the browser tests drive Debian's /usr/bin/chromium.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: venv lint test run bench bench-index clean distclean

NPM_STAMP := tests/browser/node_modules/.package-lock.json

venv: $(STAMP) $(NPM_STAMP)

# The browser tests' JavaScript (dicom-microscopy-viewer, dicomweb-client), pinned by the lock.
$(NPM_STAMP): tests/browser/package-lock.json
	npm ci --prefix tests/browser --no-audit --no-fund
	touch $@

$(BIN)/python:
	@$(PYTHON) -m venv $(VENV)

# Reinstall only when pyproject.toml changed since the last successful install.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@# The driver ships inside the playwright wheel; check it runs (no `playwright install`).
	$(BIN)/python -m playwright --version
	touch $@

# Each check runs even when an earlier one failed; `s` collects the failure. No $(MAKE)
# recursion, so `make -n test` only prints.
LINT = $(BIN)/ruff check $(LINT_PATHS) || s=1; \
	$(BIN)/ruff format --check $(LINT_PATHS) || s=1; \
	$(BIN)/mypy --strict tileserver bench || s=1

lint: venv
	s=0; $(LINT); exit $$s

# Lint and tests both run so one report shows everything; either failing fails the target.
test: venv
	s=0; $(LINT); $(BIN)/python -m pytest -q $(PYTEST_ARGS) || s=$$?; exit $$s

# `make run` installs only what the server needs (no test extras, no npm), once; pip's
# output goes to a log that is shown only when the install fails. An environment that
# `make test` set up already has all of it.
RUN_STAMP := $(VENV)/.installed-run
RUN_LOG := $(VENV)/install-run.log

$(RUN_STAMP): pyproject.toml | $(BIN)/python
	@if [ -f $(STAMP) ] && [ $(STAMP) -nt pyproject.toml ]; then touch $@; exit 0; fi; \
	echo "installing tileserver into $(VENV) (first run only)"; \
	$(BIN)/python -m pip install --quiet -e . > $(RUN_LOG) 2>&1 || { cat $(RUN_LOG); exit 1; }; \
	touch $@

# The curated demo slides (written once, in seconds); DEMO=all adds the tests' edge cases.
RUN_SLIDES := --slides $(DEMO_DIR) $(if $(filter all,$(DEMO)),--slides $(CASES_DIR))

run: $(RUN_STAMP)
	@$(BIN)/tileserver demo $(DEMO_DIR) $(if $(filter all,$(DEMO)),--cases $(CASES_DIR))
	@exec $(BIN)/tileserver serve $(RUN_SLIDES) --catalog $(CATALOG) \
	  --host $(HOST) --port $(PORT) --log-level warning

# Every bench/*_bench.py is a benchmark; each one is bounded to a few minutes.
BENCH_STAMP := $(VENV)/.installed-bench

$(BENCH_STAMP): pyproject.toml | $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $@

bench: venv $(BENCH_STAMP)
	@for script in bench/*_bench.py; do \
	  echo "== $$script"; \
	  $(BIN)/python -m bench.$$(basename $$script .py) $(BENCH_ARGS); \
	done

bench-index: venv
	$(BIN)/python -m bench.index_bench $(BENCH_ARGS)

clean:
	rm -rf build dist .pytest_cache .mypy_cache .ruff_cache *.egg-info bench/results
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +

# Also drops the environment, the demo slides and the cached benchmark files (several GB).
distclean: clean
	rm -rf $(VENV) .data bench/data tests/browser/node_modules
