# Two commands do all the set-up: `make demo` and `make test` (see README.md).
SHELL := /bin/bash
.DEFAULT_GOAL := help

export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
# Copies, not hard links: the uv cache may sit on another file system.
export UV_LINK_MODE ?= copy
# MLflow 3 reports usage to its makers' servers unless told not to: nothing here calls out.
export MLFLOW_DISABLE_TELEMETRY ?= true
export DO_NOT_TRACK ?= true
UV := $(shell command -v uv 2>/dev/null)
ifeq ($(UV),)
UV := python3 -m uv
endif
RUN := $(UV) run --locked

.PHONY: help uv install dagster-home demo serve api materialize status rollback history ui mlflow-ui \
	airflow stack stack-status stack-down lint format typecheck test test-fast test-tools bench clean \
	requirements

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

uv:  ## make sure uv is there (installs it with pip when missing)
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv

install: uv  ## create .venv from uv.lock
	$(UV) sync --locked

dagster-home: install
	@$(RUN) python -m fraud_assets.instance

# The data contract follows the files in data/raw (FRAUD_DATA_DIR): Kaggle's creditcard.csv, or raw card
# transactions (the Fraud-Detection-Handbook's layout loads as it is). With no file, the synthetic set of
# FRAUD_DATA_CONTRACT: `make demo FRAUD_DATA_CONTRACT=cards` trains on the Handbook's simulator (5,000
# customers, 10,000 terminals, 183 days; FRAUD_CARDS_CUSTOMERS / _TERMINALS / _DAYS make it smaller) and
# serves POST /transactions/score. Variables given on make's command line reach every recipe.
demo: materialize  ## install, materialize everything on the embedded defaults, then serve it
	@echo
	@echo "== Production model (models/production) =="
	@$(RUN) fraud-models status
	@echo
	@echo "Rollback:    make rollback   (or: uv run fraud-models rollback)"
	@$(RUN) python -m servicectl.serve

serve: install  ## the API on :8000, the Dagster UI on :3000, the MLflow UI on :5000 (Ctrl-C stops)
	@$(RUN) python -m servicectl.serve

api: install  ## only the API, on :8000
	$(RUN) uvicorn api.main:app --host 127.0.0.1 --port $${FRAUD_API_PORT:-8000}

materialize: dagster-home  ## train, evaluate, promote if better (weekly_retrain_job), a line per stage (FRAUD_DATA_CONTRACT=cards: card transactions)
	$(RUN) python scripts/run_pipeline.py

status: install  ## print what is in production
	@$(RUN) fraud-models status

history: install  ## list the backups a rollback can return to
	@$(RUN) fraud-models history

rollback: install  ## put the previous production model back
	$(RUN) fraud-models rollback

ui: dagster-home  ## Dagster webserver and daemon on :3000
	$(RUN) dagster dev -m fraud_assets.definitions -h 127.0.0.1 -p 3000

mlflow-ui: install  ## MLflow UI on :5000 over the local mlflow.db
	$(RUN) mlflow ui --backend-store-uri "$${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/mlflow.db}" \
		--host 127.0.0.1 --port 5000

# Airflow keeps the weekly contract (DAG weekly_retrain, airflow_bridge/dags) and drives Dagster at
# DAGSTER_WEBSERVER_URL (default http://127.0.0.1:3000, i.e. `make ui`). Its state (SQLite metadata
# DB, logs) lives in AIRFLOW_HOME, default .airflow_home; point AIRFLOW__DATABASE__SQL_ALCHEMY_CONN
# at PostgreSQL (:5433) for the production-shaped set. Every user is admin on the local UI.
AIRFLOW_PORT ?= 8080
AIRFLOW_ENV = AIRFLOW_HOME="$${AIRFLOW_HOME:-$(CURDIR)/.airflow_home}" \
	AIRFLOW__CORE__DAGS_FOLDER="$(CURDIR)/airflow_bridge/dags" \
	AIRFLOW__CORE__LOAD_EXAMPLES=False \
	AIRFLOW__API__HOST="$${AIRFLOW__API__HOST:-127.0.0.1}" \
	AIRFLOW__API__PORT=$(AIRFLOW_PORT) \
	AIRFLOW__API__BASE_URL="$${AIRFLOW__API__BASE_URL:-http://127.0.0.1:$(AIRFLOW_PORT)}" \
	AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="$${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS:-True}"

airflow: install  ## Airflow UI on :8080 (api-server, scheduler, dag-processor, triggerer): weekly_retrain
	$(AIRFLOW_ENV) $(RUN) airflow standalone

lint: install
	$(RUN) ruff check .
	$(RUN) ruff format --check .

format: install
	$(RUN) ruff format .
	$(RUN) ruff check --fix .

typecheck: install
	$(RUN) mypy

# Two workers, a file each at a time: the suite waits on servers more than it computes. The
# OpenAPI fuzz runs on its own: under pytest-xdist schemathesis' generated tests collapse into one
# (7 of its 8 routes went untested).
PYTEST_PARALLEL = -n 2 --dist loadfile
FUZZ = tests/api/test_openapi_fuzz.py

test: test-tools lint typecheck  ## ruff, mypy and the whole pytest suite (starts the servers it needs)
	$(RUN) pytest $(PYTEST_PARALLEL) --ignore=$(FUZZ)
	$(RUN) pytest $(FUZZ)

test-fast: test-tools install  ## the suite without the slow end-to-end tests
	$(RUN) pytest -m "not slow" $(PYTEST_PARALLEL) --ignore=$(FUZZ)
	$(RUN) pytest -m "not slow" $(FUZZ)

# promtool (Debian's prometheus package) runs Prometheus' own checks of monitoring/; without it
# those tests skip. As root with apt-get (CI) it is installed the first time; anywhere else the
# run says at its start that they will skip. PostgreSQL needs nothing here: where none answers,
# the tests start their own (tests/postgres.py).
test-tools:  ## install the system tools the tests use (promtool) where root and apt-get allow
	@command -v promtool >/dev/null 2>&1 && exit 0; \
	if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then \
		echo "test-tools: promtool is missing and installing it here needs root and apt-get: the" \
			"Prometheus rule tests will skip (Debian: apt-get install prometheus)."; \
		exit 0; \
	fi; \
	echo "test-tools: installing promtool (apt-get install prometheus)"; \
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
		--no-install-recommends prometheus >/dev/null \
		|| echo "test-tools: apt-get could not install prometheus: the Prometheus rule tests will skip."

bench: install  ## full-size timing: platform vs a bare script (prints a table)
	$(RUN) python benchmarks/materialize_vs_script.py

# pip's view of uv.lock, for users without uv. requirements.txt: every group but dev, and the project
# itself in editable mode (`-e .`, as `uv sync` installs it); no hashes, which pip refuses next to an
# editable. api/requirements.txt: what the API image installs (the ML core and the api group, not
# the project: the code runs from the checkout), with hashes. NCCL stays in both: xgboost requires
# it on Linux, and pip would fetch it unpinned (or refuse it, with hashes) if it were left out.
REQUIREMENTS_ALL = --no-dev --no-hashes
REQUIREMENTS_API = --no-default-groups --group api --no-emit-project
# $(1) the file, $(2) the uv export options, $(3) what it is for. Written to a temporary file first:
# a stale lock (--locked) leaves the old file in place.
define export-requirements
	@{ echo "# Generated from uv.lock by \`make requirements\`: do not edit (a test compares it with the lock)."; \
	   echo "# $(3)"; \
	   echo "#   uv export --locked --no-header $(2)"; \
	   $(UV) export --locked --quiet --no-header $(2); } > $(1).tmp && mv $(1).tmp $(1) || { rm -f $(1).tmp; exit 1; }
	@echo "wrote $(1)"
endef

requirements: uv  ## regenerate requirements.txt and api/requirements.txt from uv.lock (for pip)
	$(call export-requirements,requirements.txt,$(REQUIREMENTS_ALL),The platform without the dev tools: pip install -r requirements.txt (Python 3.11) from the repository root.)
	$(call export-requirements,api/requirements.txt,$(REQUIREMENTS_API),The scoring API as its image installs it: pip install -r api/requirements.txt; run it from the repository root.)

clean:  ## remove local state (models, MLflow, Dagster, Airflow); keeps data/raw
	rm -rf models mlflow.db mlartifacts mlruns .dagster_home .airflow_home

# The production shape without Docker (servicectl/stack/): MLflow server, Dagster webserver and
# daemon, Airflow API server, scheduler, DAG processor and triggerer, the API, on the PostgreSQL at
# STACK_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432), a database per service.
# State and logs: .stack/. `docker compose up` runs the same set in containers.
stack: install  ## the production shape as local processes on PostgreSQL; prints every URL
	$(RUN) python -m servicectl.stack up

stack-status: install  ## health of each `make stack` service
	$(RUN) python -m servicectl.stack status

stack-down: install  ## stop what `make stack` started (data and databases are kept)
	$(RUN) python -m servicectl.stack down
