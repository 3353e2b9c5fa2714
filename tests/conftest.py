"""Shared fixtures: isolated state directories, small synthetic data, a real PostgreSQL database."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
import psycopg2
import pytest
import xgboost as xgb

from fraud_assets.defs.io_managers import ParquetIOManager
from fraud_assets.defs.resources import (
    ComputeEngine,
    DataSource,
    MlflowTracking,
    ModelStoreResource,
    Notifier,
    PredictionLogResource,
    PromotionRules,
)
from fraud_core import synthetic
from fraud_core.bundle import FraudModel
from fraud_core.data import as_arrays
from fraud_core.features import AnomalyScorer, base_features, model_features
from servicectl.process import free_port as free_port

# The PostgreSQL of the run (the configured one, or the tests' own): its hooks and address.
from tests.postgres import (  # noqa: F401 (pytest finds hooks by name here)
    pg_address,
    pytest_configure,
    pytest_report_header,
    pytest_unconfigure,
)
from tests.run_cache import run_scoped_dir, seed_mlflow_db, set_root

#: Small but learnable: 40,000 rows at 1 % fraud give ~80 frauds in each later split.
SMALL_ROWS = 40_000
SMALL_FRAUD_RATE = 0.01
#: A small synthetic card set (customers, terminals, days): ~28,000 transactions over 60 days.
SMALL_CARDS = (250, 500, 60)


@pytest.fixture(autouse=True, scope="session")
def _run_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Where what is built once per run (tests/run_cache.py) lives: pytest's tmp, kept 3 runs."""
    set_root(run_scoped_dir(tmp_path_factory.getbasetemp()))


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point every default at the test's own directory: no test touches the project's state."""
    # mlflow.set_tracking_uri/set_registry_uri (the MLflow resource calls both) also set globals
    # that outrank the variables below, and outlive the test that set them: a test that reads a
    # store it did not write itself (a shared trained one) would read the last test's.
    mlflow.set_tracking_uri(None)  # type: ignore[arg-type]
    mlflow.set_registry_uri(None)  # type: ignore[arg-type]
    monkeypatch.setenv("FRAUD_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("FRAUD_DATA_DIR", str(tmp_path / "raw"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_db_uri(tmp_path))
    # mlflow.set_registry_uri() writes this variable; without it here it would leak between tests.
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    # The API sets these defaults when it follows an MLflow alias; each test starts without them.
    for name in (
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
        "MLFLOW_HTTP_REQUEST_TIMEOUT",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FRAUD_MLFLOW_ARTIFACT_ROOT", str(tmp_path / "mlartifacts"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    monkeypatch.setenv("FRAUD_SYNTHETIC_ROWS", str(SMALL_ROWS))
    monkeypatch.setenv("FRAUD_SYNTHETIC_FRAUD_RATE", str(SMALL_FRAUD_RATE))
    # The contract follows the test's files, whatever the developer's shell has set.
    monkeypatch.setenv("FRAUD_DATA_CONTRACT", "auto")
    for name, value in zip(("CUSTOMERS", "TERMINALS", "DAYS"), SMALL_CARDS, strict=True):
        monkeypatch.setenv(f"FRAUD_CARDS_{name}", str(value))
    monkeypatch.setenv("FRAUD_PREDICTION_LOG_URL", f"sqlite:///{tmp_path / 'predictions.db'}")
    (tmp_path / "dagster_home").mkdir()


def make_resources(
    tmp_path: Path,
    *,
    tracking_uri: str | None = None,
    rows: int = SMALL_ROWS,
    fraud_rate: float = SMALL_FRAUD_RATE,
    seed: int = 42,
    promotion_rules: PromotionRules | None = None,
    prediction_log_url: str | None = None,
    contract: str = "auto",
    cards: tuple[int, int, int] = SMALL_CARDS,
) -> dict[str, Any]:
    """Resources for `dg.materialize`, all state under `tmp_path`.

    `contract` "cards" with no file in `tmp_path/raw` trains on a synthetic card set of `cards`
    (customers, terminals, days).
    """
    if tracking_uri is None:
        seed_mlflow_db(tmp_path / "mlflow.db")
    return {
        "prediction_log": PredictionLogResource(
            url=prediction_log_url or f"sqlite:///{tmp_path / 'predictions.db'}"
        ),
        "notifier": Notifier(),
        "data_source": DataSource(
            data_dir=str(tmp_path / "raw"),
            contract=contract,
            synthetic_rows=rows,
            synthetic_seed=seed,
            synthetic_fraud_rate=fraud_rate,
            cards_customers=cards[0],
            cards_terminals=cards[1],
            cards_days=cards[2],
        ),
        "model_store": ModelStoreResource(models_dir=str(tmp_path / "models")),
        "io_manager": ParquetIOManager(root=str(tmp_path / "storage")),
        "compute": ComputeEngine(),
        "promotion_rules": promotion_rules or PromotionRules(),
        "mlflow_tracking": MlflowTracking(
            tracking_uri=tracking_uri or mlflow_db_uri(tmp_path),
            artifact_root=str(tmp_path / "mlartifacts"),
        ),
    }


def mlflow_db_uri(tmp_path: Path) -> str:
    """The MLflow store of a test, as _isolated_env points MLFLOW_TRACKING_URI at it."""
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture
def mlflow_db(tmp_path: Path) -> str:
    """MLFLOW_TRACKING_URI's database, already created (a copy of the run's migrated one)."""
    seed_mlflow_db(tmp_path / "mlflow.db")
    return mlflow_db_uri(tmp_path)


@pytest.fixture
def resources(tmp_path: Path) -> dict[str, Any]:
    return make_resources(tmp_path)


@contextmanager
def fresh_database() -> Iterator[str]:
    """A new, uniquely named database on the tests' PostgreSQL, dropped after; any scope."""
    name = f"fraud_test_{uuid.uuid4().hex[:12]}"
    server = pg_address()
    admin = psycopg2.connect(server.url("postgres"))
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield server.url(name)
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture(scope="session")
def make_fraud_model() -> Callable[..., FraudModel]:
    """Small trained `FraudModel`s: one fit per seed, a fresh wrapper (and manifest) each call.

    Different seeds give models that predict differently, so a test can tell which one is served.
    """
    fitted: dict[int, tuple[AnomalyScorer, xgb.Booster]] = {}

    def make(seed: int = 0, threshold: float = 0.5) -> FraudModel:
        if seed not in fitted:
            x, y = as_arrays(synthetic.generate(n_rows=5_000, fraud_rate=0.02, seed=seed))
            base = base_features(x)
            anomaly = AnomalyScorer.fit(base, n_estimators=20, seed=seed)
            classifier = xgb.XGBClassifier(
                n_estimators=15, max_depth=3, random_state=seed, n_jobs=1
            )
            classifier.fit(model_features(base, anomaly.score(base)), y)
            fitted[seed] = (anomaly, classifier.get_booster())
        anomaly, booster = fitted[seed]
        return FraudModel(anomaly, booster, threshold)

    return make


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A new, uniquely named database on the tests' PostgreSQL, dropped after the test."""
    with fresh_database() as url:
        yield url
