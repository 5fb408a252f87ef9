# ct_assets: continuous training as a Dagster code location.
#   make demo   the closed loop on simulated drifting feedback, then the Dagster UI on :3000
#   make test   lint, type-check and the whole test suite
#   make dev    the Dagster UI and daemon on this project's CT_HOME

SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
CONSTRAINTS := .ci/constraints.txt
export CT_HOME ?= $(CURDIR)/.ct
export DAGSTER_HOME ?= $(CT_HOME)/dagster

.PHONY: install demo test lint typecheck unit dev bench clean

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH (or make PYTHON=/path/to/python3.11)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The browser tests drive Debian's Chromium (/usr/bin/chromium): Playwright never
# downloads a browser of its own.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1

# Installs the pinned stack (constraints = the lock) and the project in editable mode,
# with the celery and dask extras the distributed profile's tests need.
$(VENV)/.installed: $(BIN)/python pyproject.toml $(CONSTRAINTS)
	$(BIN)/pip install --quiet -c $(CONSTRAINTS) -e '.[dev,celery,dask]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/ct-assets demo

# The same loop on the distributed profile (ct_assets/cluster/): needs PostgreSQL,
# RabbitMQ and Redis on 127.0.0.1; starts every other engine itself.
.PHONY: cluster-demo
cluster-demo: install
	$(BIN)/ct-assets cluster-demo

lint: install
	$(BIN)/ruff check ct_assets ct_assets_tests benchmarks
	$(BIN)/ruff format --check ct_assets ct_assets_tests benchmarks

typecheck: install
	$(BIN)/mypy ct_assets

unit: install
	$(BIN)/pytest -q

test: lint typecheck unit

dev: install
	$(BIN)/ct-assets dagster-home
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

# The benchmarks need the bench extra (river's drift streams) on top of the lock.
bench: install
	$(BIN)/pip install --quiet -c $(CONSTRAINTS) -e '.[dev,celery,bench]'
	$(BIN)/python benchmarks/bench_load_definitions.py
	$(BIN)/python benchmarks/bench_ingest_api.py
	$(BIN)/python benchmarks/bench_compile_dataset.py
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/bench_gate_bootstrap.py
	$(BIN)/python benchmarks/bench_sensor_tick.py
	$(BIN)/python benchmarks/bench_backtest.py
	$(BIN)/python benchmarks/bench_predict.py
	$(BIN)/python benchmarks/bench_monitoring.py
	$(BIN)/python benchmarks/bench_drift_policies.py

clean:
	rm -rf $(CT_HOME)
