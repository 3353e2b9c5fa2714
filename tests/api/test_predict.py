"""Scoring: one transaction, a batch, explanations, limits, and the model's behaviour."""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from fraud_core.bundle import FraudModel
from fraud_core.features import MODEL_FEATURES
from fraud_core.schema import FEATURE_COLUMNS
from fraud_core.store import ModelStore
from tests.api.conftest import (
    FRAUD_PATTERN,
    MAX_BATCH,
    MAX_BODY_BYTES,
    THRESHOLD,
    V1,
    logit,
    make_settings,
    transaction,
)

# Finite values beyond float32 overflow in the anomaly feature's float32 cast: expected here.
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")

Record = dict[str, float]


def test_predict_returns_the_bundles_probability_and_decision(
    client: TestClient, served_model: FraudModel, records: list[Record]
) -> None:
    decisions = set()
    for record in [*records, transaction(**FRAUD_PATTERN)]:
        response = client.post("/predict", json=record)
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {
            "request_id",
            "fraud_probability",
            "is_fraud",
            "threshold",
            "model_version",
        }
        assert body["fraud_probability"] == pytest.approx(
            served_model.predict_record(record), abs=1e-9
        )
        assert 0.0 <= body["fraud_probability"] <= 1.0
        assert body["threshold"] == THRESHOLD
        assert body["is_fraud"] is (body["fraud_probability"] >= THRESHOLD)
        assert body["model_version"] == V1
        decisions.add(body["is_fraud"])
    # The records hold frauds and legitimate transactions: both decisions were exercised.
    assert decisions == {True, False}


def test_explanation_adds_up_to_the_probability(
    client: TestClient, served_model: FraudModel, records: list[Record]
) -> None:
    for record in [*records[:4], *records[-2:], transaction(**FRAUD_PATTERN)]:
        response = client.post("/predict", params={"explain": "true"}, json=record)
        assert response.status_code == 200, response.text
        body = response.json()
        explanation = body["explanation"]
        up, down = explanation["toward_fraud"], explanation["toward_legit"]
        assert up or down
        assert all(item["contribution"] > 0 for item in up)
        assert all(item["contribution"] < 0 for item in down)
        # Strongest first in each direction.
        pushes_up = [item["contribution"] for item in up]
        pushes_down = [item["contribution"] for item in down]
        assert pushes_up == sorted(pushes_up, reverse=True)
        assert pushes_down == sorted(pushes_down)
        names = [item["feature"] for item in up + down]
        assert set(names) <= set(MODEL_FEATURES)
        assert len(names) == len(set(names))
        # Each value is the model's input for that feature.
        features = served_model.features(np.array([[record[c] for c in FEATURE_COLUMNS]]))[0]
        for item in up + down:
            expected = features[MODEL_FEATURES.index(item["feature"])]
            assert item["value"] == pytest.approx(expected, abs=1e-9)
            if item["feature"] in record:
                assert item["value"] == record[item["feature"]]
        total = explanation["base_value"] + sum(item["contribution"] for item in up + down)
        assert total == pytest.approx(logit(body["fraud_probability"]), abs=1e-4)


def test_explanations_are_cut_to_the_configured_length(
    store: ModelStore, served_model: FraudModel, records: list[Record]
) -> None:
    settings = make_settings(store.root, FRAUD_API_EXPLAIN_TOP=1)
    with TestClient(create_app(settings)) as client:
        lengths = set()
        for record in records:
            body = client.post("/predict?explain=true", json=record).json()
            lengths.add(len(body["explanation"]["toward_fraud"]))
            lengths.add(len(body["explanation"]["toward_legit"]))
    assert lengths <= {0, 1}
    assert 1 in lengths


def test_no_explanation_unless_asked(client: TestClient, records: list[Record]) -> None:
    for params in ({}, {"explain": "false"}):
        body = client.post("/predict", params=params, json=records[0]).json()
        assert "explanation" not in body


def test_batch_answers_in_order_as_single_requests_do(
    client: TestClient, records: list[Record]
) -> None:
    batch = [records[0], records[-1], records[1], records[-2], transaction(**FRAUD_PATTERN)]
    assert len(batch) == MAX_BATCH
    response = client.post("/predict/batch", json=batch)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["count"] == len(batch) == len(body["results"])
    assert body["model_version"] == V1
    assert body["threshold"] == THRESHOLD
    for record, result in zip(batch, body["results"], strict=True):
        single = client.post("/predict", json=record).json()
        assert result["fraud_probability"] == pytest.approx(single["fraud_probability"], abs=1e-12)
        assert result["is_fraud"] is single["is_fraud"]
        assert "explanation" not in result
    # Not all the same answer: the order is really checked.
    assert len({round(r["fraud_probability"], 9) for r in body["results"]}) > 1


def test_batch_explanations_equal_the_single_ones(
    client: TestClient, records: list[Record]
) -> None:
    batch = records[:3]
    results = client.post("/predict/batch?explain=true", json=batch).json()["results"]
    for record, result in zip(batch, results, strict=True):
        single = client.post("/predict?explain=true", json=record).json()["explanation"]
        assert result["explanation"]["base_value"] == pytest.approx(single["base_value"])
        for key in ("toward_fraud", "toward_legit"):
            assert [i["feature"] for i in result["explanation"][key]] == [
                i["feature"] for i in single[key]
            ]


def test_empty_batch_is_a_422(client: TestClient) -> None:
    response = client.post("/predict/batch", json=[])
    assert response.status_code == 422
    assert response.json()["detail"][0]["field"] == "body"


def test_batch_over_the_limit_is_a_413_naming_the_limit(
    client: TestClient, records: list[Record]
) -> None:
    response = client.post("/predict/batch", json=records[: MAX_BATCH + 1])
    assert response.status_code == 413
    assert f"limit of {MAX_BATCH}" in response.json()["detail"]
    assert f"{MAX_BATCH + 1} transactions" in response.json()["detail"]


def test_body_over_the_size_limit_is_a_413(client: TestClient) -> None:
    # Valid JSON, one transaction, padded past the limit: refused on its size alone.
    body = json.dumps(transaction()) + " " * MAX_BODY_BYTES
    response = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert str(MAX_BODY_BYTES) in response.json()["detail"]


def _chunks(body: bytes, size: int = 4_096) -> Iterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


def test_chunked_body_over_the_size_limit_is_a_413(client: TestClient) -> None:
    # No Content-Length: the limit must hold while the body streams in.
    body = (json.dumps(transaction()) + " " * MAX_BODY_BYTES).encode()
    response = client.post(
        "/predict", content=_chunks(body), headers={"content-type": "application/json"}
    )
    assert "content-length" not in response.request.headers
    assert response.status_code == 413
    assert str(MAX_BODY_BYTES) in response.json()["detail"]


def test_chunked_body_under_the_limit_is_scored(client: TestClient, records: list[Record]) -> None:
    body = json.dumps(records[:2]).encode()
    response = client.post(
        "/predict/batch", content=_chunks(body, 512), headers={"content-type": "application/json"}
    )
    assert "content-length" not in response.request.headers
    assert response.status_code == 200, response.text
    assert response.json()["count"] == 2


# -- behaviour of the served model (Made-With-ML style) ----------------------------------------


def test_known_fraud_pattern_scores_higher_than_a_typical_transaction(
    client: TestClient,
) -> None:
    typical = client.post("/predict", json=transaction()).json()["fraud_probability"]
    fraud = client.post("/predict", json=transaction(**FRAUD_PATTERN)).json()["fraud_probability"]
    assert fraud > typical


@pytest.mark.parametrize("days", [1, 7, 30])
def test_the_same_hour_on_another_day_scores_the_same(client: TestClient, days: int) -> None:
    # Raw `Time` only grows; the model sees the hour of day, so whole days must not matter.
    for record in (transaction(), transaction(**FRAUD_PATTERN)):
        later = {**record, "Time": record["Time"] + days * 86_400.0}
        first = client.post("/predict", json=record).json()["fraud_probability"]
        second = client.post("/predict", json=later).json()["fraud_probability"]
        assert second == pytest.approx(first, abs=1e-9)


@pytest.mark.parametrize(
    ("field", "value"),
    [("V9", 3.4028235677973366e38), ("V14", -1e300), ("Amount", 1e308), ("Time", 1e300)],
)
def test_values_beyond_float32_are_scored_and_explained(
    client: TestClient, served_model: FraudModel, field: str, value: float
) -> None:
    # Finite, so valid input; XGBoost works in float32, where these overflow.
    record = transaction(**{field: value})
    response = client.post("/predict", params={"explain": "true"}, json=record)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["fraud_probability"] == pytest.approx(served_model.predict_record(record), abs=1e-9)
    explanation = body["explanation"]
    items = explanation["toward_fraud"] + explanation["toward_legit"]
    total = explanation["base_value"] + sum(item["contribution"] for item in items)
    assert total == pytest.approx(logit(body["fraud_probability"]), abs=1e-4)
    batch = client.post("/predict/batch?explain=true", json=[record, transaction()])
    assert batch.status_code == 200, batch.text
