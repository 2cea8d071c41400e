# The maintainer's commands. `make check` is what .ci/run and pre-commit run besides the tests.
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: help venv lint format typecheck check test test-fast test-slow bench screenshots

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

venv:  ## create .venv with the test and benchmark extras
	python3 -m venv $(VENV) && $(BIN)/pip install -q -e '.[test,bench]'

lint:  ## ruff check (includes the C901 complexity gate)
	$(BIN)/ruff check .

format:  ## ruff format, and apply ruff's safe fixes
	$(BIN)/ruff check --fix-only -q .
	$(BIN)/ruff format .

typecheck:  ## mypy, strict
	$(BIN)/mypy

check: lint typecheck  ## lint, format check and typecheck, changing nothing
	$(BIN)/ruff format --check .

test:  ## every suite, as the README's test command runs them (several minutes)
	$(BIN)/pytest

test-fast:  ## unit, integration and e2e (about a minute); skips the slow fault and load suites
	$(BIN)/pytest -q -m 'not slow'

test-slow:  ## only the fault-injection and load suites
	$(BIN)/pytest -q -m slow

bench:  ## the 1M-job benchmark against PostgreSQL (see docs/performance.md)
	$(BIN)/python -m tests.benchmarks.run --jobs 1000000 --reuse --keep .bench

screenshots:  ## regenerate the README's screenshots (docs/*.png) with the browser tests
	JOBREG_UPDATE_SCREENSHOTS=1 $(BIN)/pytest -q tests/e2e/test_dashboard_v2.py -k "charts or dead_letters"
