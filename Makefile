# The two commands of the README. Each makes its own virtual environment on first use, from
# uv.lock: every package, direct or not, at the version and hash that was tested.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# One environment, two stamps: `make run` needs the gateway's own dependencies (about 80 MB);
# `make test`, `lint` and the benchmarks add the test extra (ruff, mypy, playwright,
# schemathesis, the providers' libraries: about 400 MB). Each stamp is touched by its own
# install, so either command after the other installs only what is missing, and neither undoes
# the other.
RUN_STAMP := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test
# uv installs into $(VENV), wherever it is (`make VENV=/tmp/env ...`), not into its default
# ./.venv.
export UV_PROJECT_ENVIRONMENT := $(abspath $(VENV))
# uv itself, pinned by hash in .ci/uv-requirements.txt, in a little environment of its own.
UV_HOME := .uv
UV := $(UV_HOME)/bin/uv
export UV_PYTHON_DOWNLOADS := never
# The platform's certificate store, as pip uses: a machine behind a TLS-inspecting proxy trusts
# its CA there, not in the certificates uv ships.
export UV_SYSTEM_CERTS := 1

.PHONY: run test lint lock lock-check bench bench-service bench-quick clean

$(UV): .ci/uv-requirements.txt
	$(PYTHON) -m venv $(UV_HOME)
	$(UV_HOME)/bin/python -m pip install --quiet --disable-pip-version-check --require-hashes \
		--no-deps -r .ci/uv-requirements.txt
	touch $(UV)

# --frozen: install exactly what uv.lock says, never re-resolve from pyproject's ranges.
# --inexact: leave the test extra alone when `make test` installed it first (a plain sync
# would remove it, and the next `make test` would install it again).
$(RUN_STAMP): pyproject.toml uv.lock $(UV)
	$(UV) sync --frozen --inexact --python $(PYTHON)
	touch $@

# Exact: the environment holds the lock's packages and the test extra, nothing else.
$(TEST_STAMP): pyproject.toml uv.lock $(UV)
	$(UV) sync --frozen --extra test --python $(PYTHON)
	touch $@

run: $(RUN_STAMP)
	$(BIN)/gateway serve --config config/gateway.toml

# Fails when pyproject.toml and uv.lock disagree (someone changed one and not the other).
lock-check: $(UV)
	$(UV) lock --check --python $(PYTHON)

lint: $(TEST_STAMP) lock-check
	$(BIN)/ruff check gateway adapters schemas tests bench
	$(BIN)/ruff format --check gateway adapters schemas
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest -n auto

# After editing pyproject.toml: `make lock` records the change, keeping every other version.
# A deliberate upgrade: `make lock UPGRADE=httpx` (one package) or `make lock UPGRADE=all`;
# then `make test`, and commit uv.lock with pyproject.toml.
UPGRADE_FLAGS = $(if $(filter all,$(UPGRADE)),--upgrade,$(if $(UPGRADE),--upgrade-package $(UPGRADE)))
lock: $(UV)
	$(UV) lock --python $(PYTHON) $(UPGRADE_FLAGS)

bench: $(TEST_STAMP)
	$(BIN)/python bench/adapters.py

# The service benchmarks (several minutes; see bench/README.md). The full outage run is
# `bench/outage.py` without --events: 1,000,000 events, about 23 minutes here.
bench-service: $(TEST_STAMP)
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/pipeline.py
	$(BIN)/python bench/http_client.py
	$(BIN)/python bench/outage.py --events 200000

bench-quick: $(TEST_STAMP)
	$(BIN)/python bench/adapters.py --rounds 3 --number 2000
	$(BIN)/python bench/ingest.py --quick
	$(BIN)/python bench/pipeline.py --quick
	$(BIN)/python bench/http_client.py --quick
	$(BIN)/python bench/outage.py --quick

# Tools and caches only: data/ holds the store (events, dead letters) and is never removed here.
clean:
	rm -rf $(VENV) $(UV_HOME) .pytest_cache .mypy_cache .ruff_cache .hypothesis
