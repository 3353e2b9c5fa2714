"""A real Dagster webserver (and daemon) on a free port, over the project's workspace.yaml."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest

from airflow_bridge.dagster_client import DagsterClient
from servicectl.health import dagster_webserver_ready, log_tails, wait_until
from servicectl.process import running
from tests.conftest import SMALL_FRAUD_RATE, SMALL_ROWS, free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
#: The webserver loads the code location (mlflow, xgboost, scikit-learn) before it serves.
START_TIMEOUT_S = 180.0
JOB = "weekly_retrain_job"


@dataclass(frozen=True)
class DagsterServer:
    url: str
    root: Path
    logs: tuple[Path, ...]

    def log_tails(self) -> str:
        return log_tails(self.logs, 40)


def client_for(server: DagsterServer) -> DagsterClient:
    return DagsterClient(server.url, retries=2, backoff_s=0.5)


def server_env(root: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of the Dagster processes: every state directory under `root`."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("FRAUD_", "MLFLOW_", "DAGSTER_"))
    }
    env.update(
        DAGSTER_HOME=str(root / "dagster_home"),
        FRAUD_DATA_DIR=str(root / "raw"),
        FRAUD_MODELS_DIR=str(root / "models"),
        MLFLOW_TRACKING_URI=f"sqlite:///{root / 'mlflow.db'}",
        FRAUD_MLFLOW_ARTIFACT_ROOT=str(root / "mlartifacts"),
        FRAUD_SYNTHETIC_ROWS=str(SMALL_ROWS),
        FRAUD_SYNTHETIC_FRAUD_RATE=str(SMALL_FRAUD_RATE),
    )
    env.update(extra or {})
    return env


@contextmanager
def dagster_server(
    root: Path, *, daemon: bool, extra_env: dict[str, str] | None = None
) -> Iterator[DagsterServer]:
    """`dagster-webserver -w workspace.yaml` (and `dagster-daemon run`) with state under `root`."""
    env = server_env(root, extra_env)
    subprocess.run(
        [sys.executable, "-m", "fraud_assets.instance"],
        cwd=REPO_ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    web_log, daemon_log = root / "webserver.log", root / "daemon.log"
    server = DagsterServer(url, root, (web_log, daemon_log) if daemon else (web_log,))
    web = [str(BIN / "dagster-webserver"), "-w", "workspace.yaml", "-h", "127.0.0.1"]
    with ExitStack() as stack:
        webserver = stack.enter_context(
            running([*web, "-p", str(port)], cwd=REPO_ROOT, env=env, log=web_log)
        )
        ready = partial(dagster_webserver_ready, url)
        wait_until("dagster-webserver", ready, START_TIMEOUT_S, logs=[web_log], process=webserver)
        if daemon:
            # Only now: started together on a new DAGSTER_HOME, both create the SQLite storage
            # and stamp its schema version twice, and the code location then fails to load
            # ("Version table 'alembic_version' has more than one head present").
            command = [str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"]
            stack.enter_context(running(command, cwd=REPO_ROOT, env=env, log=daemon_log))
        yield server


@pytest.fixture(scope="module")
def dagster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DagsterServer]:
    """A webserver and a daemon: launched runs are dequeued and executed."""
    with dagster_server(tmp_path_factory.mktemp("dagster"), daemon=True) as server:
        yield server


@pytest.fixture(scope="module")
def dagster_without_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DagsterServer]:
    """A webserver alone: launched runs stay QUEUED, as when nobody started the daemon."""
    with dagster_server(tmp_path_factory.mktemp("dagster_no_daemon"), daemon=False) as server:
        yield server
