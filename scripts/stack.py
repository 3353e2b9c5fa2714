"""`make stack`: the production shape as local processes, for machines without Docker.

The same services as `docker-compose.yml`, each a process of its own on one local PostgreSQL with
a database per service: the MLflow tracking server (PostgreSQL backend, artifacts served through
it), Dagster's webserver and daemon (PostgreSQL storage), Airflow's API server, scheduler and DAG
processor (PostgreSQL metadata, LocalExecutor) and the scoring API. State (models, artifacts,
DAGSTER_HOME, AIRFLOW_HOME) and every log live under one folder, `.stack/` by default.

    python scripts/stack.py up        # start what is not running, wait for health, print URLs
    python scripts/stack.py status    # each service's health
    python scripts/stack.py stop mlflow | start mlflow
    python scripts/stack.py down [--drop-databases]

Ports come from the same variables as the compose file (MLFLOW_PORT, DAGSTER_PORT, AIRFLOW_PORT,
FRAUD_API_PORT); the PostgreSQL server from STACK_POSTGRES_URL.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import string
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg2
from psycopg2 import sql

# Dagster calls a daemon healthy for 30 minutes after its last heartbeat: the client's limit too.
from airflow_bridge.dagster_client import STALE_HEARTBEAT_S

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DAG_ID = "weekly_retrain"
#: The login of the Airflow UI and REST API, as the original system had it.
AIRFLOW_USER = "airflow"


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
    Service(
        "api",
        "FRAUD_API_PORT",
        8000,
        8080,
        "/health",
        "predictions",
        ("FRAUD_MODELS_DIR", "FRAUD_PREDICTION_LOG_URL"),
    ),
    # Scrapes the API and evaluates monitoring/prometheus/alerts.yml; not a Python package, so
    # only where a `prometheus` binary is installed (Debian: apt-get install prometheus).
    Service("prometheus", "PROMETHEUS_PORT", 9090, 9090, "/-/ready", optional=True),
)
BY_NAME = {s.name: s for s in SERVICES}
#: Each of these must be healthy before the named service starts.
STARTS_AFTER = {"dagster-daemon": "dagster-webserver"}
START_TIMEOUT_S = 300.0


class StackError(RuntimeError):
    """Something the user must act on; the message says what."""


@dataclass
class Stack:
    """Where the stack keeps its state, and what it is running (`<root>/stack.json`)."""

    root: Path
    postgres_url: str
    db_prefix: str
    ports: dict[str, int]
    host: str = "127.0.0.1"
    pids: dict[str, int] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load_or_new(cls, root: Path) -> Stack:
        state = root / "stack.json"
        if state.exists():
            data = json.loads(state.read_text())
            return cls(root=root, **{k: v for k, v in data.items() if k != "root"})
        ports = {
            s.name: int(os.environ.get(s.port_env) or s.default_port)
            for s in SERVICES
            if s.port_env and s.default_port
        }
        return cls(
            root=root,
            postgres_url=os.environ.get(
                "STACK_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432"
            ),
            db_prefix=os.environ.get("STACK_DB_PREFIX", "fraud_"),
            ports=ports,
            secrets={
                "jwt": secrets.token_urlsafe(32),
                "api_secret": secrets.token_urlsafe(32),
                "airflow_password": os.environ.get("AIRFLOW_PASSWORD", "airflow"),
            },
        )

    def save(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        data = {k: v for k, v in self.__dict__.items() if k != "root"}
        path = self.root / "stack.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        os.chmod(tmp, 0o600)  # it holds the Airflow password and JWT secret
        tmp.replace(path)

    # --- addresses ------------------------------------------------------------------------------

    def url(self, name: str) -> str:
        return f"http://{self.host}:{self.ports[name]}"

    def database_url(self, suffix: str, driver: str = "postgresql") -> str:
        parts = urlsplit(self.postgres_url)
        return urlunsplit((driver, parts.netloc, f"/{self.db_prefix}{suffix}", "", ""))

    @property
    def databases(self) -> list[str]:
        return sorted({f"{self.db_prefix}{s.database}" for s in SERVICES if s.database})

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    # --- environments ---------------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        """The environment every service shares: each knows where the others are."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "DAGSTER_"))}
        env.update(
            PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            MLFLOW_TRACKING_URI=self.url("mlflow"),
            FRAUD_MLFLOW_UI_URL=self.url("mlflow"),
            FRAUD_MODELS_DIR=str(self.root / "models"),
            FRAUD_DATA_DIR=os.environ.get("FRAUD_DATA_DIR", str(REPO / "data" / "raw")),
            DAGSTER_HOME=str(self.root / "dagster_home"),
            DAGSTER_POSTGRES_URL=self.database_url("dagster"),
            DAGSTER_WEBSERVER_URL=self.url("dagster-webserver"),
            # The API logs every prediction there; training reads the labels, drift the inputs.
            FRAUD_PREDICTION_LOG_URL=self.database_url("predictions"),
            # The MLflow server's job runner serves GenAI features; it would only compete with
            # training for the cores.
            MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
            **self.airflow_env(),
        )
        return env

    def airflow_env(self) -> dict[str, str]:
        home = self.root / "airflow_home"
        api = self.url("airflow-apiserver")
        return {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "airflow_bridge" / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            # Production shape: the weekly schedule is live as soon as the DAG is parsed.
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.database_url(
                "airflow", "postgresql+psycopg2"
            ),
            "AIRFLOW__API__HOST": self.host,
            "AIRFLOW__API__PORT": str(self.ports["airflow-apiserver"]),
            "AIRFLOW__API__BASE_URL": api,
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__SECRET_KEY": self.secrets["api_secret"],
            # Tasks report to the API server with JWTs the scheduler signs: one shared secret.
            "AIRFLOW__API_AUTH__JWT_SECRET": self.secrets["jwt"],
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{AIRFLOW_USER}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.logs / "airflow"),
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
            # A task's first call to the API server can take over the 5 s default on a busy
            # machine; the retry then finds the task already running and the task fails.
            "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "60",
        }

    def command(self, name: str) -> list[str]:
        host = self.host
        port = str(self.ports.get(name, ""))
        commands = {
            "mlflow": [
                "mlflow",
                "server",
                "--backend-store-uri",
                self.database_url("mlflow"),
                # Artifacts go through the server: clients need no access to its disk.
                "--artifacts-destination",
                str(self.root / "mlartifacts"),
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
            "api": [
                "uvicorn",
                "api.main:app",
                "--host",
                host,
                "--port",
                port,
                "--no-access-log",
            ],
        }
        if name == "prometheus":
            folder = self.root / "prometheus"
            return [
                prometheus_binary() or "prometheus",
                f"--config.file={folder / 'prometheus.yml'}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address={host}:{port}",
            ]
        argv = commands[name]
        return [str(BIN / argv[0]), *argv[1:]]

    def render_prometheus_config(self) -> Path:
        """monitoring/prometheus's local template, aimed at this stack's API."""
        folder = self.root / "prometheus"
        folder.mkdir(parents=True, exist_ok=True)
        template = REPO / "monitoring" / "prometheus" / "prometheus.local.yml.template"
        text = string.Template(template.read_text()).substitute(
            FRAUD_API_TARGET=f"{self.host}:{self.ports['api']}",
            FRAUD_ALERT_RULES=str(REPO / "monitoring" / "prometheus" / "alerts.yml"),
        )
        path = folder / "prometheus.yml"
        path.write_text(text)
        return path


def prometheus_binary() -> str | None:
    return os.environ.get("PROMETHEUS_BIN") or shutil.which("prometheus")


def installed(service: Service) -> bool:
    return not service.optional or (service.name == "prometheus" and bool(prometheus_binary()))


# --- processes -----------------------------------------------------------------------------------


def alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.killpg(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def start(stack: Stack, name: str, env: dict[str, str]) -> int:
    stack.logs.mkdir(parents=True, exist_ok=True)
    log = stack.logs / f"{name}.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            stack.command(name),
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: stopped with all its children
        )
    stack.pids[name] = proc.pid
    stack.save()
    return proc.pid


def stop(stack: Stack, name: str, timeout_s: float = 20.0) -> None:
    pid = stack.pids.pop(name, None)
    stack.save()
    if not alive(pid):
        return
    assert pid is not None
    for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            _reap(pid)
            if not alive(pid):
                return
            time.sleep(0.2)


def _reap(pid: int) -> None:
    """Collect an exited child started by this process (a zombie would look alive)."""
    with suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def tail(path: Path, lines: int = 30) -> str:
    text = path.read_text(errors="replace") if path.exists() else "(no log)"
    return "\n".join(text.splitlines()[-lines:])


# --- set-up --------------------------------------------------------------------------------------


def create_databases(stack: Stack) -> list[str]:
    """Create each service's database on the PostgreSQL server if it is missing."""
    created = []
    try:
        conn = psycopg2.connect(stack.database_url("").rsplit("/", 1)[0] + "/postgres")
    except psycopg2.OperationalError as exc:
        raise StackError(
            f"PostgreSQL at {stack.postgres_url} is not reachable ({exc}). Start it, or point "
            "STACK_POSTGRES_URL at one."
        ) from exc
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for db in stack.databases:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,))
                if cur.fetchone() is None:
                    cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))
                    created.append(db)
    finally:
        conn.close()
    return created


def drop_databases(stack: Stack) -> None:
    conn = psycopg2.connect(stack.database_url("").rsplit("/", 1)[0] + "/postgres")
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for db in stack.databases:
                cur.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db))
                )
    finally:
        conn.close()


def prepare(stack: Stack, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Write dagster.yaml and the Airflow password file; start `airflow db migrate`."""
    subprocess.run(
        [str(BIN / "python"), "-m", "fraud_assets.instance"], cwd=REPO, env=env, check=True
    )
    home = stack.root / "airflow_home"
    home.mkdir(parents=True, exist_ok=True)
    passwords = home / "passwords.json"
    passwords.write_text(json.dumps({AIRFLOW_USER: stack.secrets["airflow_password"]}) + "\n")
    os.chmod(passwords, 0o600)
    stack.logs.mkdir(parents=True, exist_ok=True)
    log = (stack.logs / "airflow-db-migrate.log").open("ab")
    return subprocess.Popen(
        [str(BIN / "airflow"), "db", "migrate"],
        cwd=stack.root,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )


# --- health --------------------------------------------------------------------------------------


def airflow_token(stack: Stack, client: httpx.Client | None = None) -> str:
    """A JWT for Airflow's REST API, from the stack's login."""
    body = {"username": AIRFLOW_USER, "password": stack.secrets["airflow_password"]}
    post = client.post if client else httpx.post
    response = post(f"{stack.url('airflow-apiserver')}/auth/token", json=body, timeout=10)
    response.raise_for_status()
    return str(response.json()["access_token"])


def _get(url: str, **kwargs: Any) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=5, **kwargs)
    except httpx.TransportError:
        return None


def health(stack: Stack, name: str) -> tuple[bool, str]:
    """Whether `name` serves, and a word on why not."""
    service = BY_NAME[name]
    if service.health_path:
        response = _get(stack.url(name) + service.health_path)
        if response is None:
            return False, "not answering"
        if response.status_code != 200:
            return False, f"HTTP {response.status_code}"
    if name == "dagster-webserver":
        return _dagster_location_loaded(stack)
    if name == "dagster-daemon":
        return _dagster_daemon_healthy(stack)
    if name.startswith("airflow-"):
        return _airflow_healthy(stack, name)
    return True, "ok"


_LOCATION = """{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus
  locationOrLoadError { __typename ... on PythonError { message } } } } } }"""
_DAEMONS = """{ instance { daemonHealth { allDaemonStatuses {
  daemonType healthy required lastHeartbeatTime } } } }"""


def _graphql(stack: Stack, query: str) -> dict[str, Any] | None:
    try:
        response = httpx.post(
            f"{stack.url('dagster-webserver')}/graphql", json={"query": query}, timeout=10
        )
        return dict(response.json()["data"])
    except (httpx.TransportError, ValueError, KeyError, TypeError):
        return None


def _dagster_location_loaded(stack: Stack) -> tuple[bool, str]:
    data = _graphql(stack, _LOCATION)
    if not data:
        return False, "GraphQL not answering"
    for entry in data["workspaceOrError"].get("locationEntries", []):
        loaded = entry["locationOrLoadError"]
        if loaded and loaded["__typename"] == "PythonError":
            raise StackError(f"code location {entry['name']} failed to load: {loaded['message']}")
        if entry["loadStatus"] != "LOADED" or not loaded:
            return False, f"loading code location {entry['name']}"
    return True, "ok"


def _dagster_daemon_healthy(stack: Stack) -> tuple[bool, str]:
    data = _graphql(stack, _DAEMONS)
    if not data:
        return False, "webserver not answering"
    statuses = data["instance"]["daemonHealth"]["allDaemonStatuses"]
    now = time.time()
    sick = [
        s["daemonType"]
        for s in statuses
        if s["required"]
        and not (
            s["healthy"]
            and s["lastHeartbeatTime"] is not None
            and now - float(s["lastHeartbeatTime"]) < STALE_HEARTBEAT_S
        )
    ]
    return (not sick, "ok" if not sick else "no heartbeat from " + ", ".join(sick))


def _airflow_healthy(stack: Stack, name: str) -> tuple[bool, str]:
    response = _get(stack.url("airflow-apiserver") + "/api/v2/monitor/health")
    if response is None or response.status_code != 200:
        return False, "API server not answering"
    component = {"airflow-scheduler": "scheduler", "airflow-dag-processor": "dag_processor"}
    if name in component:
        status = (response.json().get(component[name]) or {}).get("status")
        return status == "healthy", f"{component[name]} {status}"
    return True, "ok"


def _dag_parsed(stack: Stack) -> tuple[bool, str]:
    try:
        token = airflow_token(stack)
    except (httpx.HTTPError, KeyError, ValueError) as exc:
        return False, f"no Airflow token: {exc}"
    response = _get(
        f"{stack.url('airflow-apiserver')}/api/v2/dags/{DAG_ID}",
        headers={"Authorization": f"Bearer {token}"},
    )
    if response is None or response.status_code != 200:
        return False, f"DAG {DAG_ID} not parsed yet"
    return True, "ok"


def wait_until(
    what: str, check: Callable[[], tuple[bool, str]], timeout_s: float, logs: Iterable[Path]
) -> None:
    deadline = time.monotonic() + timeout_s
    reason = ""
    while time.monotonic() < deadline:
        ok, reason = check()
        if ok:
            return
        time.sleep(1.0)
    tails = "\n".join(f"--- {log}\n{tail(log)}" for log in logs)
    raise StackError(f"{what} not healthy after {timeout_s:.0f} s ({reason}):\n{tails}")


# --- commands ------------------------------------------------------------------------------------


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
        stack.render_prometheus_config()
    created = create_databases(stack)
    if created:
        print(f"created databases: {', '.join(created)}")
    stack.save()
    env = stack.env()
    migrate = prepare(stack, env) if any(n.startswith("airflow") for n in wanted) else None
    started: list[str] = []

    def launch(name: str) -> None:
        if alive(stack.pids.get(name)):
            return
        port = stack.ports.get(name)
        if port and _get(f"http://{stack.host}:{port}/") is not None:
            service = BY_NAME[name]
            raise StackError(
                f"port {port} is taken: {name} not started (set {service.port_env} to move it)"
            )
        start(stack, name, env)
        started.append(name)
        print(f"started {name:22} log: {stack.logs / (name + '.log')}")

    try:
        for name in wanted:
            if name not in STARTS_AFTER and not name.startswith("airflow"):
                launch(name)
        if migrate is not None:
            if migrate.wait(timeout=timeout_s) != 0:
                raise StackError(
                    "airflow db migrate failed:\n" + tail(stack.logs / "airflow-db-migrate.log")
                )
            for name in wanted:
                if name.startswith("airflow"):
                    launch(name)
        for name in wanted:
            if name in STARTS_AFTER:
                # On a new instance the webserver creates the storage schema first; two processes
                # doing it at once race on the schema's version stamp.
                first = STARTS_AFTER[name]
                wait_until(first, lambda f=first: health(stack, f), timeout_s, [_log(stack, first)])
                launch(name)
        for name in wanted:
            wait_until(
                name, lambda n=name: _health_or_exit(stack, n), timeout_s, [_log(stack, name)]
            )
            print(f"healthy {name}")
        if "airflow-dag-processor" in wanted:
            wait_until(
                f"DAG {DAG_ID}",
                lambda: _dag_parsed(stack),
                timeout_s,
                [_log(stack, "airflow-dag-processor")],
            )
    except BaseException:
        # Half a stack is worse than none: stop what this call started, keep the logs.
        print(f"start-up failed; stopping {', '.join(started) or 'nothing'}", file=sys.stderr)
        down(stack, started)
        if migrate is not None and migrate.poll() is None:
            migrate.kill()
        raise


def _log(stack: Stack, name: str) -> Path:
    return stack.logs / f"{name}.log"


def _health_or_exit(stack: Stack, name: str) -> tuple[bool, str]:
    pid = stack.pids.get(name)
    if pid is not None:
        _reap(pid)
    if not alive(pid):
        raise StackError(f"{name} exited:\n{tail(_log(stack, name))}")
    return health(stack, name)


def down(stack: Stack, names: list[str] | None = None) -> None:
    # The reverse order: the API and Airflow stop before what they call.
    for service in reversed(SERVICES):
        if (names is None or service.name in names) and service.name in stack.pids:
            stop(stack, service.name)
            print(f"stopped {service.name}")


def print_urls(stack: Stack) -> None:
    password = stack.secrets["airflow_password"]
    rows = [
        ("MLflow", stack.url("mlflow"), f"PostgreSQL {stack.database_url('mlflow')}"),
        ("Dagster", stack.url("dagster-webserver"), f"storage {stack.database_url('dagster')}"),
        (
            "Airflow",
            stack.url("airflow-apiserver"),
            f"login {AIRFLOW_USER}/{password if password == 'airflow' else '(AIRFLOW_PASSWORD)'}",
        ),
        ("Fraud API", stack.url("api") + "/docs", f"models {stack.root / 'models'}"),
    ]
    if "prometheus" in stack.pids:
        rows.append(("Prometheus", stack.url("prometheus"), "alerts: /alerts, scraping the API"))
    print()
    for label, url, note in rows:
        print(f"  {label:10} {url:40} {note}")
    print(f"\n  logs: {stack.logs}    stop: make stack-down")
    print(f"  retrain now: Airflow > {DAG_ID} > Trigger, or Dagster > Jobs > weekly_retrain_job")


def print_status(stack: Stack) -> bool:
    all_ok = True
    for service in SERVICES:
        pid = stack.pids.get(service.name)
        if not installed(service):
            print(f"  {service.name:22} {'-':8} {'':28} not installed (optional)")
            continue
        if not alive(pid):
            ok, why = False, "not running"
        else:
            try:
                ok, why = health(stack, service.name)
            except StackError as exc:
                ok, why = False, str(exc)
        all_ok &= ok
        where = stack.url(service.name) if service.name in stack.ports else ""
        print(f"  {service.name:22} {'healthy' if ok else 'DOWN':8} {where:28} {why}")
    return all_ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument(
        "--root", type=Path, default=Path(os.environ.get("STACK_DIR", REPO / ".stack"))
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="start every service and wait for health")
    sub.add_parser("status", help="each service's health")
    for verb in ("start", "stop"):
        p = sub.add_parser(verb, help=f"{verb} some services")
        p.add_argument("services", nargs="+", choices=list(BY_NAME))
    p = sub.add_parser("down", help="stop everything")
    p.add_argument("--drop-databases", action="store_true", help="and drop the stack's databases")
    args = parser.parse_args(argv)

    stack = Stack.load_or_new(args.root.resolve())
    try:
        if args.command == "up":
            up(stack)
            print_urls(stack)
        elif args.command == "start":
            up(stack, args.services)
        elif args.command == "stop":
            down(stack, args.services)
        elif args.command == "down":
            down(stack)
            if args.drop_databases:
                drop_databases(stack)
                (stack.root / "stack.json").unlink(missing_ok=True)
                print(f"dropped databases: {', '.join(stack.databases)}")
        elif args.command == "status":
            return 0 if print_status(stack) else 1
    except StackError as exc:
        print(f"stack: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
