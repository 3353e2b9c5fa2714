"""The stack's state (`<root>/stack.json`): ports, secrets, pids; and the services' environment."""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from servicectl.process import alive
from servicectl.stack.services import AIRFLOW_USER, BIN, REPO, SERVICES

#: Bytes of randomness in each generated secret. Airflow signs its JWTs with HS512 and warns
#: (InsecureKeyLengthWarning) below 64 bytes of key; token_urlsafe(64) gives 86 characters.
SECRET_BYTES = 64


def new_secret() -> str:
    return secrets.token_urlsafe(SECRET_BYTES)


def write_private(path: Path, text: str) -> None:
    """Write `path` readable by its owner alone, atomically: never on disk with a wider mode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)  # O_CREAT keeps the mode of a file that is already there
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    tmp.replace(path)


@dataclass
class Stack:
    """Where the stack keeps its state, and what it is running (`<root>/stack.json`)."""

    root: Path
    postgres_url: str
    db_prefix: str
    ports: dict[str, int]
    host: str = "127.0.0.1"
    #: The Redis that holds the API's online feature state (card transactions); "memory": none,
    #: each API worker keeps its own (a laptop without Redis).
    redis_url: str = "redis://127.0.0.1:6379/0"
    pids: dict[str, int] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load_or_new(cls, root: Path) -> Stack:
        state = root / "stack.json"
        if state.exists():
            data = json.loads(state.read_text())
            stack = cls(root=root, **{k: v for k, v in data.items() if k != "root"})
            stack._renew_short_secrets()
            return stack
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
            redis_url=os.environ.get("STACK_REDIS_URL", "redis://127.0.0.1:6379/0"),
            secrets={
                "jwt": new_secret(),
                "api_secret": new_secret(),
                "airflow_password": os.environ.get("AIRFLOW_PASSWORD", "airflow"),
            },
        )

    def _renew_short_secrets(self) -> None:
        """Replace the too short secrets of an older stack.json, while nothing runs on them."""
        if any(alive(pid) for pid in self.pids.values()):
            return
        for key in ("jwt", "api_secret"):
            if len(self.secrets.get(key, "").encode()) < SECRET_BYTES:
                self.secrets[key] = new_secret()

    def save(self) -> None:
        data = {k: v for k, v in self.__dict__.items() if k != "root"}
        # It holds the Airflow password and the JWT secret.
        write_private(self.root / "stack.json", json.dumps(data, indent=2))

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

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

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
            # The card-transactions state, shared by the API's workers, under the stack's prefix.
            FRAUD_FEATURE_STATE=self.redis_url,
            FRAUD_FEATURE_STATE_PREFIX=f"{self.db_prefix}state",
            # Production shape: scoring needs a key with the `score` scope too (`fraud-keys`).
            FRAUD_API_REQUIRE_SCORE_KEY="true",
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
