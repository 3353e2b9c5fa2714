"""The drift report Dagster stored, exported on /metrics as `fraud_drift_*` gauges."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from api.main import create_app
from fraud_core.prediction_log import make_engine
from fraud_core.prediction_log.reports import save_report
from fraud_core.store import ModelStore
from tests.api.conftest import has_metric, make_settings, metric, scrape

DETAILS = {
    "features": {
        "V4": {"psi": 0.41, "ks_statistic": 0.30, "status": "fail"},
        "Amount": {"psi": 0.12, "ks_statistic": 0.08, "status": "warn"},
        "V7": {"psi": 0.01, "ks_statistic": 0.02, "status": "ok"},
    },
    "score_psi": 0.05,
    "worst_features": ["V4", "Amount"],
}


def log_url(store: ModelStore) -> str:
    return f"sqlite:///{store.root.parent / 'predictions.db'}"


def test_no_report_yet_exports_no_drift_gauges(client: TestClient) -> None:
    samples = scrape(client)
    assert not any(name.startswith("fraud_drift_") for name, _ in samples)


def test_the_newest_report_becomes_gauges(store: ModelStore, served_model: object) -> None:
    engine = make_engine(log_url(store))
    save_report(engine, "ok", 50_000, 900, {"features": {"V4": {"psi": 0.0, "ks_statistic": 0.0}}})
    newest = save_report(engine, "fail", 50_000, 3_000, DETAILS)
    with TestClient(create_app(make_settings(store.root))) as client:
        samples = scrape(client)
    assert metric(samples, "fraud_drift_status") == 2
    assert metric(samples, "fraud_drift_psi", feature="V4") == 0.41
    assert metric(samples, "fraud_drift_psi", feature="Amount") == 0.12
    assert metric(samples, "fraud_drift_ks_statistic", feature="V4") == 0.30
    assert metric(samples, "fraud_drift_score_psi") == 0.05
    assert metric(samples, "fraud_drift_current_rows") == 3_000
    assert metric(samples, "fraud_drift_report_timestamp_seconds") == newest.created_at.timestamp()


def test_too_few_predictions_export_no_verdict(store: ModelStore, served_model: object) -> None:
    save_report(make_engine(log_url(store)), "insufficient_data", 50_000, 120, {"message": "few"})
    with TestClient(create_app(make_settings(store.root))) as client:
        samples = scrape(client)
    assert metric(samples, "fraud_drift_current_rows") == 120
    assert has_metric(samples, "fraud_drift_report_timestamp_seconds")
    assert not has_metric(samples, "fraud_drift_status")
    assert not has_metric(samples, "fraud_drift_psi")


def test_a_missing_database_keeps_metrics_answering(tmp_path: Path, served_model: object) -> None:
    store_root = tmp_path / "models"
    settings = make_settings(store_root, FRAUD_PREDICTION_LOG_URL="off")
    with TestClient(create_app(settings)) as client:
        response = client.get("/metrics")
    assert response.status_code == 200
    assert "fraud_drift_" not in response.text
