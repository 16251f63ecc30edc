# The two commands of the README. Each makes its own virtual environment on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/gateway serve --config config/gateway.toml

lint: $(STAMP)
	$(BIN)/ruff check gateway adapters schemas tests bench
	$(BIN)/ruff format --check gateway adapters schemas
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest -n auto

bench: $(STAMP)
	$(BIN)/python bench/adapters.py

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache .hypothesis
