"""Fixtures for the API: a model store with a published bundle, apps on it, metric scraping."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from api.config import Settings
from api.main import create_app
from fraud_core import synthetic
from fraud_core.bundle import CLASSIFIER, MANIFEST, FraudModel
from fraud_core.data import as_arrays
from fraud_core.schema import FEATURE_COLUMNS
from fraud_core.store import ModelStore

MakeModel = Callable[..., FraudModel]
#: Parsed Prometheus samples: (sample name, labels) -> value.
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

TOKEN = "test-reload-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
#: Versions sort in publication order, as `new_version()` makes them.
V1, V2, V3 = (f"2025010{i}T000000Z-run{i}" for i in (1, 2, 3))
#: The served model's threshold: low enough that some test transactions are flagged.
THRESHOLD = 0.3
MAX_BATCH = 5
MAX_BODY_BYTES = 20_000

#: A known fraud pattern: the components real frauds push hardest, pushed far.
FRAUD_PATTERN = {"V14": -8.0, "V12": -8.0, "V10": -8.0, "V17": -8.0, "V4": 6.0}


def manifest(version: str) -> dict[str, Any]:
    return {
        "model_version": version,
        "mlflow_run_id": f"run-{version}",
        "data_fingerprint": f"fingerprint-{version}",
        "metrics": {"average_precision": 0.8, "roc_auc": 0.95},
    }


def publish(store: ModelStore, model: FraudModel, version: str) -> Path:
    """Stage and publish `model` as `version`; the release directory."""
    return store.publish(store.stage(model, manifest(version))).path


def flip_byte(path: Path) -> None:
    """Damage a file in place the way a bad disk or a partial copy would."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def spoil_smoke_test(release: Path) -> None:
    """Record a smoke prediction the bundle does not make (the checksums stay right)."""
    path = release / MANIFEST
    content = json.loads(path.read_text())
    content["smoke_test"]["fraud_probability"] = 1.0 - content["smoke_test"]["fraud_probability"]
    path.write_text(json.dumps(content))


CORRUPTIONS: dict[str, Callable[[Path], None]] = {
    "flipped byte in classifier": lambda release: flip_byte(release / CLASSIFIER),
    "wrong smoke prediction": spoil_smoke_test,
}


def transaction(**fields: float) -> dict[str, float]:
    """A typical transaction (every component at its mean), with `fields` changed."""
    record = {"Time": 3_600.0, **{f"V{i}": 0.0 for i in range(1, 29)}, "Amount": 50.0}
    record.update(fields)
    return record


def logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def make_settings(models_dir: Path, **overrides: Any) -> Settings:
    """Settings for a test app: nothing from the environment or a developer's `.env`."""
    values: dict[str, Any] = {
        "FRAUD_MODELS_DIR": models_dir,
        "FRAUD_MODEL_URI": None,
        "MLFLOW_TRACKING_URI": None,
        "FRAUD_API_RELOAD_INTERVAL_S": 0,
        "FRAUD_API_RELOAD_TOKEN": TOKEN,
        "FRAUD_API_MAX_BATCH": MAX_BATCH,
        "FRAUD_API_MAX_BODY_BYTES": MAX_BODY_BYTES,
        "FRAUD_API_EXPLAIN_TOP": 30,
        # Beside the model store, so that every app of a test shares one log in its own tmp dir.
        "FRAUD_PREDICTION_LOG_URL": f"sqlite:///{models_dir.parent / 'predictions.db'}",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def scrape(client: Any) -> Samples:
    """GET /metrics and parse it: (sample name, labels) -> value."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def metric(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    """The sum of the samples called `name` whose labels include `labels` (0 when none)."""
    wanted = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and wanted <= lab)


def has_metric(samples: Samples, name: str, **labels: str) -> bool:
    wanted = set(labels.items())
    return any(n == name and wanted <= lab for n, lab in samples)


@pytest.fixture(scope="session")
def records() -> list[dict[str, float]]:
    """Realistic transactions, frauds among them, as a client sends them."""
    x, y = as_arrays(synthetic.generate(n_rows=400, fraud_rate=0.05, seed=11))
    order = np.concatenate([np.flatnonzero(y == 1)[:6], np.flatnonzero(y == 0)[:6]])
    return [
        {name: float(value) for name, value in zip(FEATURE_COLUMNS, x[i], strict=True)}
        for i in order
    ]


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "models")


@pytest.fixture
def served_model(store: ModelStore, make_fraud_model: MakeModel) -> FraudModel:
    """The model published as V1 (its manifest filled in by publishing)."""
    model = make_fraud_model(seed=1, threshold=THRESHOLD)
    publish(store, model, V1)
    return model


@pytest.fixture
def client(store: ModelStore, served_model: FraudModel) -> Iterator[TestClient]:
    """The app serving V1, reload token set, small batch and body limits, long explanations."""
    with TestClient(create_app(make_settings(store.root))) as test_client:
        yield test_client


@pytest.fixture
def empty_client(store: ModelStore) -> Iterator[TestClient]:
    """The app started on a model store where nothing has been published."""
    with TestClient(create_app(make_settings(store.root))) as test_client:
        yield test_client
