"""Fixtures for the API: a model store with a published bundle, apps on it, metric scraping.

Both contracts: a Kaggle model (`served_model`, `client`) and a card model (`card_model`,
`card_client`), each trained small and published into the test's own store.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from api.config import Settings
from api.main import create_app
from fraud_core import synthetic
from fraud_core.api_keys import create_key
from fraud_core.bundle import CLASSIFIER, MANIFEST, FraudModel
from fraud_core.cards import synthetic as cards_synthetic
from fraud_core.cards.definition import DEFAULT
from fraud_core.cards.features import feature_matrix
from fraud_core.cards.state import HISTORY_COLUMNS
from fraud_core.contracts import CARDS
from fraud_core.data import as_arrays
from fraud_core.features import AnomalyScorer, model_features
from fraud_core.prediction_log import make_engine
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
        "FRAUD_PREDICTION_LOG_URL": default_log_url(models_dir),
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def default_log_url(models_dir: Path) -> str:
    """The prediction log `make_settings` gives an app on `models_dir`."""
    return f"sqlite:///{models_dir.parent / 'predictions.db'}"


def new_key(url: str, *scopes: str, name: str = "test") -> str:
    """A new API key with `scopes` in the prediction log at `url` (an app sees it when it starts,
    or at its next key refresh)."""
    engine = make_engine(url)
    try:
        return create_key(engine, name, scopes)[1]
    finally:
        engine.dispose()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


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


# -- the card-transactions contract ------------------------------------------------------------

#: The test card model's data: small, but with the Handbook simulator's three fraud scenarios.
CARD_DAYS = 40
#: How many of the data's last transactions the bundle's history holds.
CARD_HISTORY_ROWS = 400
CARD_THRESHOLD = 0.3
#: Where a test's transactions start: the day after the history ends.
CARD_START = "2018-05-12T00:00:00"


def card_data(seed: int = 0) -> pd.DataFrame:
    """The canonical labelled frame the test card models are trained on (cached per seed)."""
    if seed not in _CARD_DATA:
        _CARD_DATA[seed] = cards_synthetic.generate(
            n_customers=150, n_terminals=300, n_days=CARD_DAYS, seed=seed
        )
    return _CARD_DATA[seed]


_CARD_DATA: dict[int, pd.DataFrame] = {}


def card_history(seed: int = 0) -> pd.DataFrame:
    """The bundle's history: the last rows of the training data, its columns."""
    frame = card_data(seed).tail(CARD_HISTORY_ROWS)
    return frame[list(HISTORY_COLUMNS)].reset_index(drop=True)


@pytest.fixture(scope="session")
def make_card_model() -> Callable[..., FraudModel]:
    """Small trained card `FraudModel`s (contract `cards`, `DEFAULT` definition): one fit a seed.

    The features are the offline ones of a small synthetic set, so the model has learnt the
    Handbook's patterns (large amounts, risky terminals); its history is the set's last rows.
    """
    fitted: dict[int, tuple[AnomalyScorer, xgb.Booster]] = {}

    def make(seed: int = 0, threshold: float = CARD_THRESHOLD) -> FraudModel:
        if seed not in fitted:
            frame = card_data(seed)
            x = feature_matrix(frame, DEFAULT)
            anomaly = AnomalyScorer.fit(x, n_estimators=20, seed=seed)
            classifier = xgb.XGBClassifier(
                n_estimators=20, max_depth=3, random_state=seed, n_jobs=1
            )
            classifier.fit(model_features(x, anomaly.score(x)), frame["is_fraud"].to_numpy())
            fitted[seed] = (anomaly, classifier.get_booster())
        anomaly, booster = fitted[seed]
        return FraudModel(
            anomaly,
            booster,
            threshold,
            contract=CARDS,
            feature_definition=DEFAULT,
            history_frame=card_history(seed),
        )

    return make


@pytest.fixture
def card_model(store: ModelStore, make_card_model: Callable[..., FraudModel]) -> FraudModel:
    """The card model published as V1."""
    model = make_card_model(seed=0)
    publish(store, model, V1)
    return model


@pytest.fixture
def card_client(store: ModelStore, card_model: FraudModel) -> Iterator[TestClient]:
    """The app serving the card model V1 with the in-process feature state."""
    with TestClient(create_app(make_settings(store.root))) as test_client:
        yield test_client


def card_transaction(n: int | str, when: str = CARD_START, **fields: Any) -> dict[str, Any]:
    """A card transaction as a client sends it: id `n`, at `when`, customer c1 at terminal t1."""
    record: dict[str, Any] = {
        "transaction_id": str(n),
        "tx_datetime": when,
        "customer_id": "c-test",
        "terminal_id": "t-test",
        "amount": 20.0,
    }
    record.update(fields)
    return record
