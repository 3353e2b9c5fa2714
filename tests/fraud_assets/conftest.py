"""Fixtures of the graph: a real MLflow server on fresh PostgreSQL; shared trained state."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from servicectl.health import http_probe, wait_until
from servicectl.process import running
from tests.conftest import free_port, fresh_database
from tests.fraud_assets.trained import (  # noqa: F401 (shared fixtures)
    trained,
    trained_cards,
    trained_weak,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
#: Importing MLflow and migrating a new database takes ~35 s on an idle two-core machine.
SERVER_START_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class MlflowServer:
    url: str
    backend_store_uri: str
    artifacts_dir: Path
    log: Path


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """`mlflow server` on PostgreSQL with proxied artifacts, on a free port, for one module."""
    root = tmp_path_factory.mktemp("mlflow_server")
    artifacts = root / "artifacts"
    log = root / "server.log"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with fresh_database() as db_url:
        # A plain postgresql:// URL, as users write it (psycopg 3 is SQLAlchemy 2.1's default).
        backend = db_url
        env = dict(os.environ)
        # The job runner (a huey consumer) serves GenAI features these tests do not use; it would
        # only compete with training for the two cores.
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
        command = [
            str(VENV_BIN / "mlflow"),
            "server",
            "--backend-store-uri",
            backend,
            "--artifacts-destination",
            str(artifacts),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ]
        # cwd: anything the server writes by default lands there, not in the repo.
        with running(command, cwd=root, env=env, log=log) as proc:
            probe = http_probe(f"{url}/health", timeout_s=2)
            wait_until("mlflow server", probe, SERVER_START_TIMEOUT_S, logs=[log], process=proc)
            yield MlflowServer(url, backend, artifacts, log)
