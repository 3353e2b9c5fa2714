"""Serving from the MLflow registry: `FRAUD_MODEL_URI=models:/<name>@champion` follows the alias."""

from __future__ import annotations

import logging
from pathlib import Path

import mlflow
import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from fraud_core import tracking
from fraud_core.synthetic import generate
from tests.api.conftest import AUTH, MakeModel, make_settings, manifest

NAME = "fraud-detector"


def _log(uri: str, model, version: str, example) -> str:  # type: ignore[no-untyped-def]
    """Log `model` in a run, register it, point `champion` at it; the registry version."""
    with mlflow.start_run() as run:
        model_uri = tracking.log_model(model, manifest(version), example, ["mlflow"])
    registered = tracking.register(uri, NAME, model_uri, run.info.run_id, {})
    tracking.set_champion(uri, NAME, registered)
    return registered


def _lines(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "fraud_api.serving" and r.levelno == level
    ]


def test_the_api_follows_the_champion_alias(
    tmp_path: Path, make_fraud_model: MakeModel, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fraud_api")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(
        experiment_id=tracking.ensure_experiment(
            tracking.client(uri), "api-test", tmp_path / "artifacts"
        )
    )
    example = generate(n_rows=50, fraud_rate=0.1, seed=4).drop(columns="Class")
    first, second = make_fraud_model(seed=1), make_fraud_model(seed=2)
    _log(uri, first, "v-one", example)

    settings = make_settings(
        tmp_path / "no-store", FRAUD_MODEL_URI=f"models:/{NAME}@champion", MLFLOW_TRACKING_URI=uri
    )
    row = example.iloc[0].to_dict()
    with TestClient(create_app(settings)) as client:
        answer = client.post("/predict", json=row).json()
        assert answer["model_version"] == "v-one"
        assert answer["fraud_probability"] == pytest.approx(first.predict_record(row), abs=1e-9)
        assert client.get("/model").json()["source"] == f"models:/{NAME}/1"

        _log(uri, second, "v-two", example)  # the alias moves to version 2
        reload = client.post("/admin/reload", headers=AUTH)
        assert reload.json() == {"changed": True, "model_version": "v-two"}
        answer = client.post("/predict", json=row).json()
        assert answer["fraud_probability"] == pytest.approx(second.predict_record(row), abs=1e-9)
        assert client.get("/model").json()["source"] == f"models:/{NAME}/2"
    alias = f"MLflow models:/{NAME}@champion"
    assert _lines(caplog, logging.INFO) == [
        f"loaded model: from version none to version v-one (source: {alias} = models:/{NAME}/1)",
        f"loaded model: from version v-one to version v-two (source: {alias} = models:/{NAME}/2)",
    ]


def test_an_unreachable_registry_leaves_the_api_up_and_not_ready(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(
        tmp_path / "no-store",
        FRAUD_MODEL_URI=f"models:/{NAME}@champion",
        MLFLOW_TRACKING_URI="http://127.0.0.1:9",  # nothing listens on the discard port
    )
    with TestClient(create_app(settings)) as client:
        ready = client.get("/ready")
        assert ready.status_code == 503
        assert "cannot resolve models:/fraud-detector@champion" in ready.json()["reason"]
        assert client.get("/health").status_code == 200
        # Said once, not on every poll while the registry stays down.
        holder = client.app.state.holder  # type: ignore[attr-defined]
        holder.refresh()
    (error,) = _lines(caplog, logging.ERROR)
    assert error.startswith("cannot resolve models:/fraud-detector@champion: ")
    assert error.endswith("; still serving version none")
