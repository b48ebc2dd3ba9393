# Two commands do all set-up on a fresh machine with Python 3.11+:
#   make run    create .venv, install hfcord, start the bot (python -m bot)
#   make test   create .venv, install hfcord with dev tools, run ruff, mypy and pytest
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run check sync test lint bench bench-overhead bench-history bench-memory clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.runtime: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.dev: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.runtime

run: $(VENV)/.runtime
	$(BIN)/python -m bot

check: $(VENV)/.runtime
	$(BIN)/python -m bot check

sync: $(VENV)/.runtime
	$(BIN)/python -m bot sync

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest

# Benchmarks print tables of figures (see README); each finishes in under two minutes.
bench-overhead: $(VENV)/.dev
	$(BIN)/python -m bench.overhead

bench-history: $(VENV)/.dev
	$(BIN)/python -m bench.history

bench-memory: $(VENV)/.dev
	$(BIN)/python -m bench.memory

bench: bench-overhead bench-history bench-memory

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
