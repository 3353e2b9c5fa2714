"""Start and stop the stack's services, in order, each waited for until it is healthy."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

from servicectl.health import wait_until
from servicectl.process import alive, port_in_use, start, stop, tail
from servicectl.stack.databases import check_feature_state, create_databases
from servicectl.stack.errors import StackError
from servicectl.stack.health import dag_parsed, health, health_or_exit
from servicectl.stack.services import (
    AIRFLOW_USER,
    BIN,
    BY_NAME,
    DAG_ID,
    REPO,
    SERVICES,
    START_TIMEOUT_S,
    STARTS_AFTER,
    command,
    installed,
    render_prometheus_config,
)
from servicectl.stack.state import Stack, write_private

#: How long a service gets to stop on SIGTERM before it is killed.
STOP_TIMEOUT_S = 20.0


def launch(stack: Stack, name: str, env: dict[str, str]) -> int:
    """Start service `name` (output appended to its log) and record its pid."""
    proc = start(command(stack, name), cwd=REPO, env=env, log=stack.log(name), append=True)
    stack.pids[name] = proc.pid
    stack.save()
    return proc.pid


def halt(stack: Stack, name: str) -> None:
    """Stop service `name` and every process of its group."""
    pid = stack.pids.pop(name, None)
    stack.save()
    if alive(pid):
        assert pid is not None
        stop(pid, signals=((signal.SIGTERM, STOP_TIMEOUT_S),))


def prepare(stack: Stack, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Write dagster.yaml and the Airflow password file; start `airflow db migrate`."""
    subprocess.run(
        [str(BIN / "python"), "-m", "fraud_assets.instance"], cwd=REPO, env=env, check=True
    )
    passwords = stack.root / "airflow_home" / "passwords.json"
    write_private(passwords, json.dumps({AIRFLOW_USER: stack.secrets["airflow_password"]}) + "\n")
    migrate = [str(BIN / "airflow"), "db", "migrate"]
    return start(migrate, cwd=stack.root, env=env, log=stack.log("airflow-db-migrate"), append=True)


def up(stack: Stack, names: list[str] | None = None, timeout_s: float = START_TIMEOUT_S) -> None:
    """Start every service (or `names`) that is not running, and wait until each is healthy."""
    wanted = []
    for service in SERVICES:
        if names is not None and service.name not in names:
            continue
        if installed(service):
            wanted.append(service.name)
        else:
            print(
                f"not started {service.name}: no `{service.name}` program here (Debian/Ubuntu: "
                f"apt-get install {service.name}, or set PROMETHEUS_BIN); docker compose runs it"
            )
    if "prometheus" in wanted:
        render_prometheus_config(stack)
    if "api" in wanted:
        check_feature_state(stack)
    created = create_databases(stack)
    if created:
        print(f"created databases: {', '.join(created)}")
    stack.save()
    env = stack.env()
    migrate = prepare(stack, env) if any(n.startswith("airflow") for n in wanted) else None
    started: list[str] = []

    def begin(name: str) -> None:
        if alive(stack.pids.get(name)):
            return
        port = stack.ports.get(name)
        if port and port_in_use(port, stack.host):
            service = BY_NAME[name]
            raise StackError(
                f"port {port} is taken: {name} not started (set {service.port_env} to move it)"
            )
        launch(stack, name, env)
        started.append(name)
        print(f"started {name:22} log: {stack.log(name)}")

    def healthy(name: str, check_exit: bool = True) -> None:
        probe = (lambda: health_or_exit(stack, name)) if check_exit else lambda: health(stack, name)
        wait_until(name, probe, timeout_s, logs=[stack.log(name)])

    try:
        for name in wanted:
            if name not in STARTS_AFTER and not name.startswith("airflow"):
                begin(name)
        if migrate is not None:
            if migrate.wait(timeout=timeout_s) != 0:
                raise StackError(
                    "airflow db migrate failed:\n" + tail(stack.log("airflow-db-migrate"), 30)
                )
            for name in wanted:
                if name.startswith("airflow"):
                    begin(name)
        for name in wanted:
            if name in STARTS_AFTER:
                # On a new instance the webserver creates the storage schema first; two processes
                # doing it at once race on the schema's version stamp.
                healthy(STARTS_AFTER[name], check_exit=False)
                begin(name)
        for name in wanted:
            healthy(name)
            print(f"healthy {name}")
        if "airflow-dag-processor" in wanted:
            logs = [stack.log("airflow-dag-processor")]
            wait_until(f"DAG {DAG_ID}", lambda: dag_parsed(stack), timeout_s, logs=logs)
    except BaseException:
        # Half a stack is worse than none: stop what this call started, keep the logs.
        print(f"start-up failed; stopping {', '.join(started) or 'nothing'}", file=sys.stderr)
        down(stack, started)
        if migrate is not None and migrate.poll() is None:
            stop(migrate)
        raise


def down(stack: Stack, names: list[str] | None = None) -> None:
    # The reverse order: the API and Airflow stop before what they call.
    for service in reversed(SERVICES):
        if (names is None or service.name in names) and service.name in stack.pids:
            halt(stack, service.name)
            print(f"stopped {service.name}")
