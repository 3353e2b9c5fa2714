"""The serving benchmark's model: trained (untimed) on synthetic data, and its in-process floor."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from serving_load import percentiles
from serving_servers import MODEL_NAME, ROOT

from fraud_core import synthetic
from fraud_core.bundle import FraudModel
from fraud_core.schema import FEATURE_COLUMNS

MATERIALIZE = """
import dagster as dg
from fraud_assets.definitions import ASSETS, CHECKS
from fraud_assets.defs.resources import default_resources
result = dg.materialize([*ASSETS, *CHECKS], resources=default_resources(), raise_on_error=False)
raise SystemExit(0 if result.success else 1)
"""


def train_model(state: Path, rows: int, fraud_rate: float) -> None:
    """Materialize the whole graph on synthetic data, every piece of state under `state`."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "FRAUD_DATA_DIR": str(state / "raw"),  # empty: the graph generates synthetic data
        "FRAUD_MODELS_DIR": str(state / "models"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{state / 'mlflow.db'}",
        "FRAUD_MLFLOW_ARTIFACT_ROOT": str(state / "mlartifacts"),
        "FRAUD_REGISTERED_MODEL": MODEL_NAME,
        "FRAUD_SYNTHETIC_ROWS": str(rows),
        "FRAUD_SYNTHETIC_FRAUD_RATE": str(fraud_rate),
    }
    log = state / "materialize.log"
    with log.open("w") as out:
        proc = subprocess.run(
            [sys.executable, "-c", MATERIALIZE], cwd=state, env=env, stdout=out, stderr=out
        )
    if proc.returncode != 0:
        sys.stderr.write(log.read_text()[-5000:])
        raise SystemExit(f"training the model failed (exit code {proc.returncode}); log: {log}")


def transactions(n: int, seed: int = 7) -> np.ndarray:
    """An (n, 30) matrix of synthetic transactions, about 5 % of them frauds."""
    frame = synthetic.generate(n_rows=n, fraud_rate=0.05, seed=seed)
    return frame[list(FEATURE_COLUMNS)].to_numpy(dtype=np.float64)


def in_process_floor(model: FraudModel, rows: np.ndarray, batch: np.ndarray) -> dict[str, float]:
    """`predict_proba` with nothing around it: one row many times, and a batch of 1,000."""
    one = rows[:1]
    for _ in range(200):
        model.predict_proba(one)
    singles = []
    for i in range(5_000):
        row = rows[i % len(rows) : i % len(rows) + 1]
        start = time.perf_counter()
        model.predict_proba(row)
        singles.append(time.perf_counter() - start)
    model.predict_proba(batch)
    batches = []
    for _ in range(50):
        start = time.perf_counter()
        model.predict_proba(batch)
        batches.append(time.perf_counter() - start)
    p50, p99 = percentiles(singles)
    b50, b99 = percentiles(batches)
    return {"one_p50_ms": p50, "one_p99_ms": p99, "batch_p50_ms": b50, "batch_p99_ms": b99}
