"""`make demo`'s printed request fits the served model: it is sent to a real uvicorn and answered.

`servicectl.serve` asks `/ready` which contract is served and picks the route and example: a
Kaggle model gets `/predict`, a card model a new transaction at its state's newest time (an
example older than the lateness limit would be refused).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx
import pandas as pd
import pytest

from api.card_schemas import CARD_EXAMPLE
from api.schemas import EXAMPLE
from fraud_core.bundle import FraudModel
from fraud_core.store import ModelStore
from servicectl.health import http_probe, wait_until
from servicectl.process import running
from servicectl.serve import _example_for
from tests.conftest import free_port

pytestmark = pytest.mark.slow  # a uvicorn process importing the app: ~10 s on two busy cores

START_TIMEOUT_S = 120.0
EXAMPLES = {"kaggle": EXAMPLE, "cards": CARD_EXAMPLE}


def _served_example(store: ModelStore, tmp_path: Path) -> tuple[str, dict[str, object]]:
    """The demo's route and example against a live API on `store`; the API must answer 200."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        "PATH": "/usr/bin:/bin",
        "FRAUD_MODELS_DIR": str(store.root),
        "FRAUD_API_RELOAD_INTERVAL_S": "0",
        "FRAUD_PREDICTION_LOG_URL": f"sqlite:///{tmp_path / 'demo.db'}",
    }
    log = tmp_path / "uvicorn.log"
    command = [sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1"]
    command += ["--port", str(port)]
    with running(command, cwd=tmp_path, env=env, log=log) as proc:
        wait_until("uvicorn /ready", http_probe(f"{url}/ready"), START_TIMEOUT_S, logs=[log],
                   process=proc)  # fmt: skip
        route, example, _ = _example_for(url, EXAMPLES)
        answer = httpx.post(f"{url}{route}", content=json.dumps(example), timeout=30,
                            headers={"content-type": "application/json"})  # fmt: skip
    assert answer.status_code == 200, answer.text
    return route, example


def test_a_kaggle_model_gets_the_predict_example(
    store: ModelStore, served_model: FraudModel, tmp_path: Path
) -> None:
    route, example = _served_example(store, tmp_path)
    assert route == "/predict" and example == EXAMPLE


def test_a_card_model_gets_a_new_transaction_at_its_states_newest_time(
    store: ModelStore, card_model: FraudModel, tmp_path: Path
) -> None:
    history = card_model.history()
    assert history is not None
    route, example = _served_example(store, tmp_path)
    assert route == "/transactions/score"
    assert example["transaction_id"] != CARD_EXAMPLE["transaction_id"]
    # The example's time is the newest the state had seen: the history's last transaction.
    newest = pd.Timestamp(int(history["tx_us"].max()), unit="us")
    assert str(example["tx_datetime"]).startswith(newest.strftime("%Y-%m-%dT%H:%M:%S"))
