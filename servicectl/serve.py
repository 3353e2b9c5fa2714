"""`make serve`: the API on :8000, the Dagster UI on :3000, the MLflow UI on :5000, until Ctrl-C.

Serves what `make demo` built, on the embedded defaults. Ports come from FRAUD_API_PORT,
DAGSTER_PORT and MLFLOW_PORT; a busy port is refused with a message (the API's ends the start).
Logs go to `.logs/`. Ctrl-C (or SIGTERM) stops all three and every process they started.

Once the API answers, it makes an API key for the local user (`fraud-keys create --replace`:
scopes score, feedback and label:correct; the previous one of `make serve` revoked) and prints it
with the curl lines that use it: labels always need a key.

    python -m servicectl.serve
"""

from __future__ import annotations

import getpass
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

from servicectl.health import http_get, wait_until
from servicectl.process import INTERRUPT, ServiceError, port_in_use, start, stop_all, tail

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
HOST = "127.0.0.1"
LOGS = REPO / ".logs"
READY_TIMEOUT_S = 90.0
UI_TIMEOUT_S = 120.0
#: The API reads its key table every FRAUD_API_KEYS_REFRESH_S (2 s).
KEY_TIMEOUT_S = 30.0
_EXAMPLES = (
    "import json; from api.schemas import EXAMPLE; from api.card_schemas import CARD_EXAMPLE; "
    "print(json.dumps({'kaggle': EXAMPLE, 'cards': CARD_EXAMPLE}))"
)
#: What the local user's key may do: everything but administer the API.
DEMO_SCOPES = ("score", "feedback", "label:correct")


class _Stopped(Exception):
    """Ctrl-C or SIGTERM: stop everything and exit 130, as the shell script did."""


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise _Stopped


def _ok(url: str) -> bool:
    """What `curl -f` calls success: an answer below 400."""
    response = http_get(url)
    return response is not None and response.status_code < 400


def serve() -> int:
    api_port = int(os.environ.get("FRAUD_API_PORT") or 8000)
    dagster_port = int(os.environ.get("DAGSTER_PORT") or 3000)
    mlflow_port = int(os.environ.get("MLFLOW_PORT") or 5000)
    env = dict(os.environ)
    env["DAGSTER_HOME"] = env.get("DAGSTER_HOME") or str(REPO / ".dagster_home")
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    LOGS.mkdir(exist_ok=True)
    if not (Path(env["DAGSTER_HOME"]) / "dagster.yaml").exists():
        python = [str(BIN / "python"), "-m", "fraud_assets.instance"]
        subprocess.run(python, cwd=REPO, env=env, check=True)

    procs: list[subprocess.Popen[bytes]] = []

    def launch(name: str, port: int, command: list[str]) -> bool:
        if port_in_use(port, HOST):
            print(f"port {port} is in use: {name} not started (set its port variable to move it)")
            return False
        argv = [str(BIN / command[0]), *command[1:]]
        procs.append(start(argv, cwd=REPO, env=env, log=LOGS / f"{name}.log"))
        return True

    tracking = env.get("MLFLOW_TRACKING_URI") or f"sqlite:///{REPO / 'mlflow.db'}"
    mlflow = ["mlflow", "ui", "--backend-store-uri", tracking, "--host", HOST]
    dagster = ["dagster", "dev", "-m", "fraud_assets.definitions", "-h", HOST]
    api = ["uvicorn", "api.main:app", "--host", HOST, "--no-access-log"]
    try:
        launch("mlflow", mlflow_port, [*mlflow, "--port", str(mlflow_port)])
        launch("dagster", dagster_port, [*dagster, "-p", str(dagster_port)])
        # Without the API there is nothing to serve; the UIs alone are `make ui` / `make mlflow-ui`.
        if not launch("api", api_port, [*api, "--port", str(api_port)]):
            return 1
        return _report(api_port, dagster_port, mlflow_port, env, procs)
    except _Stopped:
        return 130
    finally:
        # SIGINT first: `dagster dev` shuts its webserver and daemon down on it, not on SIGTERM.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stop_all(procs, signals=INTERRUPT)


def _report(
    api_port: int,
    dagster_port: int,
    mlflow_port: int,
    env: dict[str, str],
    procs: list[subprocess.Popen[bytes]],
) -> int:
    """Wait for the API, show a working request and its answer, then wait for the UIs."""
    api = f"http://{HOST}:{api_port}"
    try:
        wait_until("the API", partial(_ok, f"{api}/ready"), READY_TIMEOUT_S)
    except ServiceError:
        seconds = f"{READY_TIMEOUT_S:.0f} s"
        print(f"the API is not ready after {seconds}; its log (.logs/api.log) ends with:")
        print(tail(LOGS / "api.log", 20))
        answer = http_get(f"{api}/ready")
        print(answer.text if answer is not None else f"curl: (7) Failed to connect to {api}")
        return 1
    examples = json.loads(
        subprocess.run(
            [str(BIN / "python"), "-c", _EXAMPLES],
            cwd=REPO,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    route, example, id_field = _example_for(api, examples)
    body = json.dumps(example)
    key = _demo_key(env)
    if key:
        try:
            wait_until("the API to see the new key", partial(_accepted, api, key), KEY_TIMEOUT_S)
        except ServiceError:
            print(f"the API does not accept the new key after {KEY_TIMEOUT_S:.0f} s")
    auth = ' -H "Authorization: Bearer $FRAUD_API_KEY"' if key else ""
    json_type = " -H 'content-type: application/json'"
    curl = f"curl -s -X POST {api}{route}{auth}{json_type} -d '{body}'"
    headers = {"content-type": "application/json"}
    if key:
        headers["authorization"] = f"Bearer {key}"
    answer = httpx.post(f"{api}{route}", content=body, headers=headers, timeout=30)
    print()
    print("== Serving ==")
    print(f"API:        {api}/docs   (model: {api}/model)")
    print(f"Dagster UI: http://{HOST}:{dagster_port}   (starting; log: .logs/dagster.log)")
    print(f"MLflow UI:  http://{HOST}:{mlflow_port}   (starting; log: .logs/mlflow.log)")
    print()
    if key:
        print(f"Your API key ({', '.join(DEMO_SCOPES)}; shown this once, `fraud-keys list`):")
        print(f"  export FRAUD_API_KEY={key}")
        print()
    print("Score a transaction:")
    print(f"  {curl}")
    print(f"  -> {answer.text.rstrip()}")
    if key:
        scored = example[id_field] if id_field == "transaction_id" else _request_id(answer)
        label = json.dumps({id_field: scored, "label": "fraud", "source": "demo"})
        print("Send its true label (a key with label:correct may correct it later):")
        print(f"  curl -s -X POST {api}/feedback{auth}{json_type} -d '{label}'")
    print()
    for name, port, log in (
        ("Dagster UI", dagster_port, "dagster"),
        ("MLflow UI", mlflow_port, "mlflow"),
    ):
        try:
            wait_until(name, partial(_ok, f"http://{HOST}:{port}/"), UI_TIMEOUT_S)
            print(f"{name} is up on http://{HOST}:{port}")
        except ServiceError:
            print(f"{name} did not come up; .logs/{log}.log ends with:")
            print(tail(LOGS / f"{log}.log", 5))
    print("Ctrl-C stops all three.", flush=True)
    while any(p.poll() is None for p in procs):
        time.sleep(0.5)
    code = procs[-1].returncode or 0
    return code if code >= 0 else 128 - code


def _example_for(api: str, examples: dict[str, Any]) -> tuple[str, dict[str, Any], str]:
    """The route, a request and the id field that fit the served model's contract.

    A card model gets a new transaction at the newest time its state has seen, so the example
    is never too late to score.
    """
    answer = http_get(f"{api}/ready")
    ready = answer.json() if answer is not None and answer.status_code == 200 else {}
    if ready.get("contract") != "cards":
        return "/predict", dict(examples["kaggle"]), "request_id"
    example = {**examples["cards"], "transaction_id": f"demo-{secrets.token_hex(4)}"}
    newest = (ready.get("feature_state") or {}).get("newest")
    if newest:
        example["tx_datetime"] = newest
    return "/transactions/score", example, "transaction_id"


def _demo_key(env: dict[str, str]) -> str | None:
    """A new key for the local user in the API's key table (the last demo key revoked); None,
    with the reason printed, when there is none to make (the prediction log is off)."""
    name = f"{getpass.getuser()} (make serve)"
    command = [str(BIN / "fraud-keys"), "create", "--name", name, "--replace", "--json"]
    for scope in DEMO_SCOPES:
        command += ["--scope", scope]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        print(f"no API key made ({done.stderr.strip()}): POST /feedback needs one")
        return None
    key: str = json.loads(done.stdout)["key"]
    return key


def _accepted(api: str, key: str) -> bool:
    """The API knows `key` (it reads its key table every few seconds): POST /feedback with an
    empty body answers 422 past the key check, 401 before; nothing is written either way."""
    response = httpx.post(
        f"{api}/feedback", json={}, headers={"authorization": f"Bearer {key}"}, timeout=10
    )
    return response.status_code != 401


def _request_id(answer: httpx.Response) -> str:
    """The request id of the example's answer (a placeholder if it failed)."""
    try:
        return str(answer.json()["request_id"])
    except (ValueError, KeyError, TypeError):
        return "<request_id>"


def main() -> int:
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    return serve()


if __name__ == "__main__":
    raise SystemExit(main())
