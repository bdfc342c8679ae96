# cnnserve: the two set-up commands a newcomer needs are `make serve` and `make test`.
# Each creates .venv on first use and installs exactly what it needs (the service never needs torch).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000

.PHONY: serve test lint typecheck pytest default-model bench loadtest clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Stamp files make re-running cheap: pip runs again only when pyproject.toml changes.
$(VENV)/.service-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.dev-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.service-installed

serve: $(VENV)/.service-installed  ## Start the service on the built-in default model (LeNet-5 digits).
	$(BIN)/python -m service --host 127.0.0.1 --port $(PORT)

test: lint typecheck pytest  ## Everything CI runs: lint, type check, the whole test suite.

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.dev-installed
	$(BIN)/mypy

pytest: $(VENV)/.dev-installed
	$(BIN)/python -m pytest

default-model: $(VENV)/.dev-installed  ## Re-train and re-export the committed default model.
	$(BIN)/python -m export train-digits --out models/

bench: $(VENV)/.dev-installed  ## Benchmark suite, ~3 min (bench/RESULTS.md); BENCH=--full for ~13 min.
	$(BIN)/python -m bench $(or $(BENCH),--quick)

loadtest: $(VENV)/.dev-installed  ## Load-test a running service: make loadtest ARGS="--concurrency 1,4,16,64"
	$(BIN)/python -m loadtest $(ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
