"""End-to-end fixtures: a real MLflow tracking server on a fresh PostgreSQL database."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port, fresh_database
from tests.processes import running, stop, tail

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


def _wait_healthy(proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"mlflow server exited with {proc.returncode}:\n{tail(log)}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    stop(proc)
    pytest.fail(f"mlflow server not healthy after {SERVER_START_TIMEOUT_S:.0f}s:\n{tail(log)}")


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
            _wait_healthy(proc, url, log)
            yield MlflowServer(url, backend, artifacts, log)
