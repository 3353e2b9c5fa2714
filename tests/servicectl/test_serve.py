"""`python -m servicectl.serve` (make serve): a busy port is refused with a message."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def busy_ports() -> Iterator[list[int]]:
    """Three ports something listens on."""
    with ExitStack() as stack:
        ports = []
        for _ in range(3):
            sock = stack.enter_context(socket.socket())
            sock.bind(("127.0.0.1", 0))
            sock.listen()
            ports.append(int(sock.getsockname()[1]))
        yield ports


def test_serve_refuses_busy_ports_and_does_not_start_the_api(
    tmp_path: Path, busy_ports: list[int]
) -> None:
    api, dagster, mlflow = busy_ports
    home = tmp_path / "serve_dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("")
    env = {
        **os.environ,
        "FRAUD_API_PORT": str(api),
        "DAGSTER_PORT": str(dagster),
        "MLFLOW_PORT": str(mlflow),
        "DAGSTER_HOME": str(home),
    }
    done = subprocess.run(
        [sys.executable, "-m", "servicectl.serve"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines == [
        f"port {mlflow} is in use: mlflow not started (set its port variable to move it)",
        f"port {dagster} is in use: dagster not started (set its port variable to move it)",
        f"port {api} is in use: api not started (set its port variable to move it)",
    ]
    assert "== Serving ==" not in done.stdout
