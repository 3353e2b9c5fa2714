"""`make stack`: the production shape as local processes, for machines without Docker.

The same services as `docker-compose.yml`, each a process of its own on one local PostgreSQL with
a database per service: the MLflow tracking server (PostgreSQL backend, artifacts served through
it), Dagster's webserver and daemon (PostgreSQL storage), Airflow's API server, scheduler, DAG
processor and triggerer (PostgreSQL metadata, LocalExecutor) and the scoring API. State (models,
artifacts, DAGSTER_HOME, AIRFLOW_HOME, `stack.json`) and every log live under one folder, `.stack/`
by default.

    python -m servicectl.stack up        # start what is not running, wait for health, print URLs
    python -m servicectl.stack status    # each service's health
    python -m servicectl.stack stop mlflow | start mlflow
    python -m servicectl.stack down [--drop-databases]

Ports come from the same variables as the compose file (MLFLOW_PORT, DAGSTER_PORT, AIRFLOW_PORT,
FRAUD_API_PORT, PROMETHEUS_PORT); the PostgreSQL server from STACK_POSTGRES_URL.

Modules: `services` (what runs and how), `state` (stack.json, the environment), `databases`,
`health`, `control` (up, down) and `cli`.
"""

from servicectl.process import alive
from servicectl.stack.control import down, up
from servicectl.stack.errors import StackError
from servicectl.stack.health import airflow_token, health
from servicectl.stack.services import (
    AIRFLOW_ENV,
    AIRFLOW_USER,
    BY_NAME,
    DAG_ID,
    SERVICES,
    STARTS_AFTER,
    TRAINING_ENV,
    Service,
    prometheus_binary,
)
from servicectl.stack.state import Stack

__all__ = [
    "AIRFLOW_ENV",
    "AIRFLOW_USER",
    "BY_NAME",
    "DAG_ID",
    "SERVICES",
    "STARTS_AFTER",
    "TRAINING_ENV",
    "Service",
    "Stack",
    "StackError",
    "airflow_token",
    "alive",
    "down",
    "health",
    "prometheus_binary",
    "up",
]
