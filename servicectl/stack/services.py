"""The services of `make stack`: what each is, how it maps onto docker-compose.yml, its command."""

from __future__ import annotations

import os
import shutil
import string
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from servicectl.stack.state import Stack

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DAG_ID = "weekly_retrain"
#: The login of the Airflow UI and REST API, as the original system had it.
AIRFLOW_USER = "airflow"
START_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Service:
    """One long-running process of the stack, and how it maps onto `docker-compose.yml`."""

    #: Also its service name in docker-compose.yml.
    name: str
    #: The variable that moves its port, and the port of DESIGN.md; None for a worker.
    port_env: str | None = None
    default_port: int | None = None
    #: The port it listens on inside its container.
    container_port: int | None = None
    #: The HTTP path that answers 200 once it serves.
    health_path: str | None = None
    #: The database it keeps its state in (a suffix of STACK_DB_PREFIX).
    database: str | None = None
    #: Platform variables it reads; the compose file must give each of them to the container.
    env: tuple[str, ...] = ()
    #: Started only where its program is installed (`make stack` says so when it is not).
    optional: bool = False


TRAINING_ENV = (
    "MLFLOW_TRACKING_URI",
    "FRAUD_MODELS_DIR",
    "FRAUD_DATA_DIR",
    "FRAUD_MLFLOW_EXPERIMENT",
    "FRAUD_REGISTERED_MODEL",
    "FRAUD_MLFLOW_UI_URL",
    "DAGSTER_POSTGRES_URL",
    "FRAUD_PREDICTION_LOG_URL",
)
AIRFLOW_ENV = (
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
    "AIRFLOW__CORE__EXECUTOR",
    "AIRFLOW__API_AUTH__JWT_SECRET",
    "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
    "DAGSTER_WEBSERVER_URL",
)

SERVICES: tuple[Service, ...] = (
    Service("mlflow", "MLFLOW_PORT", 5000, 5000, "/health", "mlflow"),
    Service(
        "dagster-webserver", "DAGSTER_PORT", 3000, 3000, "/server_info", "dagster", TRAINING_ENV
    ),
    Service("dagster-daemon", database="dagster", env=TRAINING_ENV),
    Service(
        "airflow-apiserver",
        "AIRFLOW_PORT",
        8080,
        8080,
        "/api/v2/monitor/health",
        "airflow",
        AIRFLOW_ENV,
    ),
    Service("airflow-scheduler", database="airflow", env=AIRFLOW_ENV),
    Service("airflow-dag-processor", database="airflow", env=AIRFLOW_ENV),
    # Runs the deferred tasks (a deferrable stage waits for its Dagster run there, not in a slot).
    Service("airflow-triggerer", database="airflow", env=AIRFLOW_ENV),
    Service(
        "api",
        "FRAUD_API_PORT",
        8000,
        8080,
        "/health",
        "predictions",
        (
            "FRAUD_MODELS_DIR",
            "FRAUD_PREDICTION_LOG_URL",
            "FRAUD_FEATURE_STATE",
            "FRAUD_FEATURE_STATE_PREFIX",
            "FRAUD_API_REQUIRE_SCORE_KEY",
        ),
    ),
    # Scrapes the API and evaluates monitoring/prometheus/alerts.yml; not a Python package, so
    # only where a `prometheus` binary is installed (Debian: apt-get install prometheus).
    Service("prometheus", "PROMETHEUS_PORT", 9090, 9090, "/-/ready", optional=True),
)
BY_NAME = {s.name: s for s in SERVICES}
#: Each of these must be healthy before the named service starts.
STARTS_AFTER = {"dagster-daemon": "dagster-webserver"}
#: The Airflow workers, and what `/api/v2/monitor/health` calls each of them.
AIRFLOW_COMPONENTS = {
    "airflow-scheduler": "scheduler",
    "airflow-dag-processor": "dag_processor",
    "airflow-triggerer": "triggerer",
}


def prometheus_binary() -> str | None:
    return os.environ.get("PROMETHEUS_BIN") or shutil.which("prometheus")


def installed(service: Service) -> bool:
    return not service.optional or (service.name == "prometheus" and bool(prometheus_binary()))


def command(stack: Stack, name: str) -> list[str]:
    """The command line of service `name` in `stack`."""
    host = stack.host
    port = str(stack.ports.get(name, ""))
    if name == "prometheus":
        folder = stack.root / "prometheus"
        return [
            prometheus_binary() or "prometheus",
            f"--config.file={folder / 'prometheus.yml'}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address={host}:{port}",
        ]
    commands = {
        "mlflow": [
            "mlflow",
            "server",
            "--backend-store-uri",
            stack.database_url("mlflow"),
            # Artifacts go through the server: clients need no access to its disk.
            "--artifacts-destination",
            str(stack.root / "mlartifacts"),
            "--host",
            host,
            "--port",
            port,
            "--workers",
            "1",
        ],
        "dagster-webserver": [
            "dagster-webserver",
            "-w",
            str(REPO / "workspace.yaml"),
            "-h",
            host,
            "-p",
            port,
        ],
        "dagster-daemon": ["dagster-daemon", "run", "-w", str(REPO / "workspace.yaml")],
        "airflow-apiserver": ["airflow", "api-server", "--host", host, "--port", port],
        "airflow-scheduler": ["airflow", "scheduler"],
        "airflow-dag-processor": ["airflow", "dag-processor"],
        "airflow-triggerer": ["airflow", "triggerer"],
        "api": ["uvicorn", "api.main:app", "--host", host, "--port", port, "--no-access-log"],
    }
    argv = commands[name]
    return [str(BIN / argv[0]), *argv[1:]]


def render_prometheus_config(stack: Stack) -> Path:
    """monitoring/prometheus's local template, aimed at this stack's API."""
    folder = stack.root / "prometheus"
    folder.mkdir(parents=True, exist_ok=True)
    template = REPO / "monitoring" / "prometheus" / "prometheus.local.yml.template"
    text = string.Template(template.read_text()).substitute(
        FRAUD_API_TARGET=f"{stack.host}:{stack.ports['api']}",
        FRAUD_ALERT_RULES=str(REPO / "monitoring" / "prometheus" / "alerts.yml"),
    )
    path = folder / "prometheus.yml"
    path.write_text(text)
    return path
