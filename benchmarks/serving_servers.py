"""The servers the serving benchmark drives: the API and `mlflow models serve`, via servicectl."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from servicectl.health import http_probe, wait_until
from servicectl.process import ServiceError, group_members, running

ROOT = Path(__file__).resolve().parents[1]
MODEL_NAME = "fraud-detector"
MODEL_URI = f"models:/{MODEL_NAME}@champion"


def group_cpu_seconds(pgid: int) -> float:
    """CPU time (user + sys) of the live processes in a process group, from /proc (Linux)."""
    total = 0
    for folder in group_members(pgid):
        try:
            fields = (folder / "stat").read_text().rpartition(")")[2].split()
        except OSError:  # the process ended while we looked
            continue
        # After the command name: state, ppid, pgrp, ... utime and stime are the 12th and 13th.
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def server_stack() -> str:
    """The versions, event loop and HTTP parser that both servers run on (the same uvicorn)."""
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    versions = {name: importlib.metadata.version(name) for name in ("uvicorn", "fastapi", "mlflow")}
    return (
        f"uvicorn {versions['uvicorn']} ({loop}, {http}), FastAPI {versions['fastapi']}, "
        f"MLflow {versions['mlflow']}"
    )


@contextmanager
def server(
    name: str, argv: list[str], env: dict[str, str], url: str, log: Path, timeout: float = 180.0
) -> Iterator[int]:
    """Run a server in its own process group until `url` answers 200; stop the whole group after."""
    # `mlflow models serve` runs uvicorn as a child: the group is stopped, not only the leader.
    stopping = ((signal.SIGTERM, 10.0),)
    with running(argv, cwd=log.parent, env=env, log=log, signals=stopping) as proc:
        try:
            ready = http_probe(url, timeout_s=2.0)
            wait_until(name, ready, timeout, logs=[log], process=proc, interval_s=0.25)
        except ServiceError as exc:
            raise SystemExit(f"{exc}\nlog: {log}") from exc
        yield proc.pid  # the process group: `mlflow models serve` and its uvicorn child


def api_server(
    models_dir: Path,
    port: int,
    state: Path,
    workers: int = 1,
    loop: str = "auto",
    prediction_log: str | None = None,
) -> AbstractContextManager[int]:
    """The API on `port`; it logs predictions to `prediction_log` (default: SQLite in `state`)."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "FRAUD_MODELS_DIR": str(models_dir),
        "FRAUD_MODEL_URI": "",  # serve the bundle of the model store, not MLflow
        "FRAUD_API_RELOAD_INTERVAL_S": "0",
        # Never the project's own predictions.db: the benchmark's requests are not predictions.
        "FRAUD_PREDICTION_LOG_URL": prediction_log or f"sqlite:///{state / 'predictions.db'}",
        # One wrk address would pass the per-client limit: a benchmark measures serving, not limits.
        "FRAUD_API_RATE_LIMIT_SCORE": "off",
    }
    argv = [sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1"]
    argv += ["--port", str(port), "--workers", str(workers), "--no-access-log"]
    argv += ["--loop", loop, "--log-level", "warning"]
    tag = "" if prediction_log is None else ("-log-off" if prediction_log == "off" else "-log-on")
    log = state / f"api-{workers}w-{loop}{tag}.log"
    return server("the API", argv, env, f"http://127.0.0.1:{port}/ready", log)


def mlflow_server(tracking_uri: str, port: int, state: Path) -> AbstractContextManager[int]:
    mlflow = Path(sys.executable).parent / "mlflow"
    env = {
        **os.environ,
        # `mlflow models serve` execs `uvicorn` by name: the virtualenv must come first.
        "PATH": os.pathsep.join([str(mlflow.parent), os.environ.get("PATH", "")]),
        "MLFLOW_TRACKING_URI": tracking_uri,
        # The same logging as the API's (uvicorn reads UVICORN_* for its command-line options).
        "UVICORN_ACCESS_LOG": "false",
        "UVICORN_LOG_LEVEL": "warning",
    }
    argv = [str(mlflow), "models", "serve", "-m", MODEL_URI, "--env-manager", "local"]
    argv += ["-h", "127.0.0.1", "-p", str(port), "--workers", "1", "--timeout", "60"]
    return server(
        "mlflow models serve", argv, env, f"http://127.0.0.1:{port}/ping", log=state / "mlflow.log"
    )
