# Two commands: `make dev` (set up, start MLflow and Dagster) and `make test` (set up, run tests).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MANIFEST := dbt_project/target/manifest.json
DAGSTER_HOME := $(CURDIR)/.dagster_home
DAGSTER_PORT ?= 3000
MLFLOW_PORT ?= 5000
# Dagster stores a ranged run's per-partition events in batches of this size (0: one by one).
DAGSTER_EVENT_BATCH_SIZE ?= 1000
export DAGSTER_EVENT_BATCH_SIZE
DATA_DIR := $(CURDIR)/data

.PHONY: check lock setup platform-env worker dev test test-readme test-release fuzz test-month test-year test-stock test-conformance test-conformance-celery lint manifest clean browser bench bench-distributed

setup: $(STAMP) $(MANIFEST) $(DAGSTER_HOME)/dagster.yaml

# The whole dependency tree is pinned in uv.lock; uv itself is installed from the package index
# into .uv/ (a version pinned here), so nothing but Python is needed beforehand.
UV_VERSION := 0.13.9
UV := .uv/bin/uv

$(UV):
	$(PYTHON) -m venv .uv
	.uv/bin/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(STAMP): pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --extra dev --python $(PYTHON)
	touch $(STAMP)

# After changing dependencies in pyproject.toml: re-resolve and pin the whole tree.
lock: $(UV)
	$(UV) lock

# The dbt manifest is prepared here, for the warehouse the platform uses by default (dbt keys its
# parse state on the path), so builds start from it instead of re-parsing the project.
$(MANIFEST): $(STAMP) $(shell find dbt_project -name '*.sql' -o -name '*.yml' | grep -v target/)
	ML_PLATFORM_WAREHOUSE=$(shell pwd -P)/data/warehouse.duckdb \
		$(BIN)/dbt parse --quiet --project-dir dbt_project --profiles-dir dbt_project
	touch $(MANIFEST)

manifest: $(MANIFEST)

$(DAGSTER_HOME)/dagster.yaml: deploy/dagster.local.yaml
	mkdir -p $(DAGSTER_HOME)
	cp deploy/dagster.local.yaml $@

# The addresses the UIs are served on: links written into MLflow and lineage point here, and the
# platform's shell commands (`ml-platform ...`) read them from the instance directory.
DAGSTER_URL := http://127.0.0.1:$(DAGSTER_PORT)
MLFLOW_UI_URL := http://127.0.0.1:$(MLFLOW_PORT)

platform-env: $(DAGSTER_HOME)/dagster.yaml
	printf 'ML_PLATFORM_DAGSTER_URL=%s\nML_PLATFORM_MLFLOW_UI_URL=%s\n' $(DAGSTER_URL) $(MLFLOW_UI_URL) \
		> $(DAGSTER_HOME)/platform.env

# A Celery worker for the steps of runs, with ML_PLATFORM_EXECUTOR=celery (a lake warehouse, an
# MLflow server, ML_PLATFORM_CELERY_BROKER and the instance's DAGSTER_PG_* in the environment, the
# same as the code location's). It starts in WORKER_DIR (default: a new temporary directory), never
# in the checkout; WORKER_ARGS go to `celery worker` (e.g. WORKER_ARGS="--concurrency 2").
WORKER_ARGS ?=
worker: setup
	dir="$${WORKER_DIR:-$$(mktemp -d -t ml-platform-worker.XXXXXX)}"; mkdir -p "$$dir" && cd "$$dir" && \
		exec $(CURDIR)/$(BIN)/ml-platform-worker $(WORKER_ARGS)

dev: setup platform-env
	mkdir -p $(DATA_DIR)/mlflow/artifacts
	@echo "MLflow UI:  $(MLFLOW_UI_URL)   Dagster UI: $(DAGSTER_URL)"
	trap 'kill 0' EXIT INT TERM; \
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(BIN)/mlflow server --host 127.0.0.1 --port $(MLFLOW_PORT) \
		--backend-store-uri sqlite:///$(DATA_DIR)/mlflow/mlflow.db \
		--artifacts-destination $(DATA_DIR)/mlflow/artifacts --workers 1 & \
	DAGSTER_HOME=$(DAGSTER_HOME) MLFLOW_TRACKING_URI=$(MLFLOW_UI_URL) ML_PLATFORM_DAGSTER_URL=$(DAGSTER_URL) \
		DAGSTER_GRPC_SHUTDOWN_GRACE_PERIOD=10 DAGSTER_EVENT_BATCH_SIZE=$(DAGSTER_EVENT_BATCH_SIZE) \
		$(BIN)/dagster dev -h 127.0.0.1 -p $(DAGSTER_PORT) -w workspace.yaml

# Headless Chromium and its driver for the browser test (Debian packages; no browser downloads).
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
		|| echo "note: could not install chromium; the browser test will skip"; \
	else echo "note: chromium/chromedriver missing and not root; the browser test will skip"; fi

# Two workers, whole files each: most integration tests wait on processes, not on the CPU.
PYTEST_WORKERS ?= 2
test: setup browser
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

# Every shell command of the README, run as a new user would on a fresh copy of the checkout
# (set-up included; before a release: `make test` checks on every run that the README's commands
# still parse into this walkthrough).
test-readme: setup
	$(BIN)/python -m pytest -m walkthrough ml_platform_tests/integration/test_readme.py $(PYTEST_ARGS)

# Property-based fuzzing of the landing reader: 5,000+ generated deliveries, alone and in ranges
# (about 6 min on 2 cores); `make test` runs the same test as a deterministic 100-window sample.
fuzz: setup
	HYPOTHESIS_PROFILE=fuzz $(BIN)/python -m pytest -p no:cacheprovider \
		ml_platform_tests/reliability/test_fuzz_landing.py $(PYTEST_ARGS)

# Thirty days as concurrent daily runs through the daemon, then scored; and thirty days with their
# steps on two Celery workers over a lake (CI runs both).
test-month: setup
	$(BIN)/python -m pytest -m month -n 2 --dist loadfile $(PYTEST_ARGS)

# The cases marked `year`: all of 2013 in one run, then every day of it as its own run through the
# daemon, four at a time, on the DuckDB file (about 25 min on two cores) and on a lake with two
# Celery workers; before a release.
test-year: setup
	$(BIN)/python -m pytest -m year $(PYTEST_ARGS)

# Before a release: the README walkthrough, the year-long cases and dagster-celery's suite against
# the celery_watch accelerator (about 50 min on two cores).
test-release: test-readme test-year test-conformance-celery

# The same platform with every runtime accelerator off (Dagster's and dbt's stock behaviour):
# ingestion, features, training, the daemon case and the production topology.
STOCK_TESTS := ml_platform_tests/test_ingestion.py ml_platform_tests/test_features.py \
	ml_platform_tests/test_training.py ml_platform_tests/integration/test_daemon_e2e.py \
	ml_platform_tests/integration/test_production.py
test-stock: setup
	ML_PLATFORM_ACCELERATORS=off $(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile \
		--no-loadscope-reorder $(STOCK_TESTS) $(PYTEST_ARGS)

# Dagster's own storage test suites (from the pinned versions' source distributions) against the
# platform's instance storages, SQLite and PostgreSQL.
test-conformance: setup
	$(BIN)/python -m ml_platform_tests.conformance

# dagster-celery's own test suite (from the pinned version's source distribution) on this machine's
# RabbitMQ, each pytest process on a virtual host of its own: with the celery_watch accelerator
# patched in, then without it (about 10 min on two cores; before a release).
test-conformance-celery: setup
	$(BIN)/python -m ml_platform_tests.conformance.celery_run

# Asset checks in CI (the recipe the README's "In CI" gives): the definitions load, dbt compiles,
# and a sample day of ingestion + features materializes on a throwaway instance and warehouse with
# every blocking check passing; a failure names the asset, partition and check.
CHECK_DAY ?= 2013-01-01
check: setup
	$(BIN)/dg check defs
	tmp=$$(mktemp -d) && ML_PLATFORM_WAREHOUSE=$$tmp/warehouse.duckdb $(BIN)/dbt compile --quiet \
		--project-dir dbt_project --profiles-dir dbt_project --target-path $$tmp/target; \
		status=$$?; rm -rf $$tmp; exit $$status
	$(BIN)/python -m ml_platform.ci_check --day $(CHECK_DAY)

# Benchmarks: numbers, never a pass/fail; writes benchmarks/results/latest.{md,json}.
bench: setup
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

# The year of daily runs on the lake with Celery workers against the single-writer file, side by
# side (about five hours on two cores; PostgreSQL and RabbitMQ); merged into the latest results.
bench-distributed: setup
	$(BIN)/python -m benchmarks --only distributed --distributed-days 365 --merge $(BENCH_ARGS)

lint: setup
	$(BIN)/ruff check ml_platform ml_platform_tests
	$(BIN)/ruff format --check ml_platform ml_platform_tests

clean:
	rm -rf $(VENV) .uv $(DAGSTER_HOME) dbt_project/target dbt_project/logs
