# The two commands of the README. Each makes its own virtual environment on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench bench-service bench-quick clean

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

# The service benchmarks (several minutes; see bench/README.md). The full outage run is
# `bench/outage.py` without --events: 1,000,000 events, about 23 minutes here.
bench-service: $(STAMP)
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/pipeline.py
	$(BIN)/python bench/http_client.py
	$(BIN)/python bench/outage.py --events 200000

bench-quick: $(STAMP)
	$(BIN)/python bench/adapters.py --rounds 3 --number 2000
	$(BIN)/python bench/ingest.py --quick
	$(BIN)/python bench/pipeline.py --quick
	$(BIN)/python bench/http_client.py --quick
	$(BIN)/python bench/outage.py --quick

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache .hypothesis
