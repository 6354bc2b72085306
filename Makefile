# The README's two commands, each doing the whole set-up on a fresh machine:
#   make demo   # create .venv, install the pinned dependencies, plan and compare the bundled scenario
#   make test   # same set-up, then ruff and the test suite without the slow tests (CI)
#   make test-slow   # only the tests marked slow (minutes: the 300-instance solver agreement suite, ...)
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test test-slow lint bench clean

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

venv: $(STAMP)

demo: venv
	$(BIN)/coldpipe demo

lint: venv
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts

test: venv lint
	$(BIN)/python -m pytest -m "not slow"

test-slow: venv
	$(BIN)/python -m pytest -m slow

bench: venv
	$(BIN)/python benchmarks/bench_planner.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
