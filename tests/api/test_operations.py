"""Health, readiness, the model manifest and Prometheus metrics; starting without a model."""

from __future__ import annotations

import time
from datetime import datetime

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from fraud_core.bundle import CLASSIFIER, FraudModel
from fraud_core.features import MODEL_FEATURES
from fraud_core.store import ModelStore
from tests.api.conftest import (
    THRESHOLD,
    V1,
    MakeModel,
    flip_byte,
    has_metric,
    make_settings,
    metric,
    publish,
    scrape,
    transaction,
)


def test_root_is_the_original_health_check(client: TestClient) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "service": "fraud-detection-api",
        "model_loaded": True,
        "model_version": V1,
    }


def test_health_and_ready_with_a_model(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "alive"}
    ready = client.get("/ready")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "model_version": V1}


def test_model_shows_the_manifest(
    client: TestClient, store: ModelStore, served_model: FraudModel
) -> None:
    response = client.get("/model")
    assert response.status_code == 200
    info = response.json()
    assert info["model_version"] == V1
    assert info["mlflow_run_id"] == f"run-{V1}"
    assert info["data_fingerprint"] == f"fingerprint-{V1}"
    assert info["metrics"] == {"average_precision": 0.8, "roc_auc": 0.95}
    assert info["threshold"] == THRESHOLD
    assert info["features"] == list(MODEL_FEATURES)
    assert info["created_at"] == served_model.manifest["created_at"]
    assert info["source"] == str((store.releases / V1).resolve())
    assert datetime.fromisoformat(info["loaded_at"]).tzinfo is not None


def test_without_a_model_the_app_starts_and_says_why_it_is_not_ready(
    empty_client: TestClient, store: ModelStore
) -> None:
    assert empty_client.get("/health").json() == {"status": "alive"}
    root = empty_client.get("/").json()
    assert root["status"] == "ok"
    assert root["model_loaded"] is False
    ready = empty_client.get("/ready")
    assert ready.status_code == 503
    assert ready.json()["status"] == "not ready"
    assert str(store.production) in ready.json()["reason"]
    for response in (
        empty_client.post("/predict", json=transaction()),
        empty_client.post("/predict/batch", json=[transaction()]),
        empty_client.get("/model"),
    ):
        assert response.status_code == 503
        assert response.json()["detail"] == ready.json()["reason"]
    # Bad input is still bad input, model or not.
    assert empty_client.post("/predict", json={}).status_code == 422
    assert empty_client.get("/metrics").status_code == 200


def test_a_corrupt_production_bundle_at_start_is_refused_with_the_reason(
    store: ModelStore, make_fraud_model: MakeModel
) -> None:
    release = publish(store, make_fraud_model(seed=1), V1)
    flip_byte(release / CLASSIFIER)
    with TestClient(create_app(make_settings(store.root))) as client:
        ready = client.get("/ready")
        assert ready.status_code == 503
        assert "sha256" in ready.json()["reason"]
        assert CLASSIFIER in ready.json()["reason"]
        assert client.post("/predict", json=transaction()).status_code == 503
        assert metric(scrape(client), "fraud_api_model_reloads_total", result="refused") == 1


def test_a_model_published_after_start_is_picked_up_by_the_watcher(
    store: ModelStore, make_fraud_model: MakeModel
) -> None:
    settings = make_settings(store.root, FRAUD_API_RELOAD_INTERVAL_S=0.05)
    with TestClient(create_app(settings)) as client:
        assert client.get("/ready").status_code == 503
        publish(store, make_fraud_model(seed=1), V1)
        deadline = time.monotonic() + 30
        while client.get("/ready").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.get("/ready").json() == {"status": "ready", "model_version": V1}
        assert client.post("/predict", json=transaction()).json()["model_version"] == V1
        thread = client.app.state.holder._thread  # type: ignore[attr-defined]
        assert thread is not None and thread.is_alive()
    # Leaving the lifespan stops the watcher.
    assert not thread.is_alive()


def test_metrics_count_requests_predictions_scores_and_the_model(
    client: TestClient, served_model: FraudModel, records: list[dict[str, float]]
) -> None:
    singles = [records[0], records[-1], records[1]]  # frauds first, legitimate last
    for record in singles:
        assert client.post("/predict", json=record).status_code == 200
    assert client.post("/predict/batch", json=singles[:2]).status_code == 200
    assert client.post("/predict", json={}).status_code == 422
    frauds = sum(served_model.predict_record(r) >= THRESHOLD for r in [*singles, *singles[:2]])
    assert 0 < frauds < 5  # both decisions are counted

    samples = scrape(client)
    requests = "fraud_api_requests_total"
    assert metric(samples, requests, route="/predict", method="POST", status="200") == 3
    assert metric(samples, requests, route="/predict", method="POST", status="422") == 1
    assert metric(samples, requests, route="/predict/batch", method="POST", status="200") == 1
    duration = "fraud_api_request_duration_seconds"
    assert has_metric(samples, f"{duration}_bucket", route="/predict", le="+Inf")
    assert metric(samples, f"{duration}_bucket", route="/predict", le="+Inf") == 4
    assert metric(samples, f"{duration}_count", route="/predict/batch") == 1
    # Five transactions scored (three alone, two in the batch), split by decision.
    predictions = "fraud_api_predictions_total"
    assert metric(samples, predictions, decision="fraud") == frauds
    assert metric(samples, predictions, decision="legit") == 5 - frauds
    assert metric(samples, predictions) == 5
    assert has_metric(samples, "fraud_api_fraud_probability_bucket", le="0.5")
    assert metric(samples, "fraud_api_fraud_probability_count") == 5
    assert metric(samples, "fraud_api_model_info", model_version=V1) == 1.0
    assert metric(samples, "fraud_api_model_reloads_total", result="loaded") == 1
    # The scrape itself is counted too, from the next scrape on.
    assert metric(scrape(client), requests, route="/metrics", status="200") >= 1


@pytest.mark.parametrize("path", ["/nowhere", "/predict/unknown"])
def test_unknown_routes_are_404_and_counted_apart(client: TestClient, path: str) -> None:
    assert client.get(path).status_code == 404
    samples = scrape(client)
    assert metric(samples, "fraud_api_requests_total", route="unmatched", status="404") == 1
    # Unmatched paths do not each make a label of their own.
    assert not has_metric(samples, "fraud_api_requests_total", route=path)
