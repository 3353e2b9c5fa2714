"""POST /transactions/score(/batch): raw card transactions scored from the online feature state.

The served model is a small card model (tests/api/conftest.py) whose bundle history is the last
rows of a synthetic set; the tests' own transactions use a customer and a terminal of their own,
so every count they see is theirs.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from api.card_fields import tx_us_of
from api.main import create_app
from fraud_core import drift
from fraud_core.bundle import FraudModel
from fraud_core.cards.definition import DEFAULT
from fraud_core.cards.features import compute_features
from fraud_core.cards.splits import split_cards
from fraud_core.prediction_log import card_predictions, make_engine, recent_card_predictions
from fraud_core.store import ModelStore
from tests.api.conftest import (
    AUTH,
    CARD_START,
    MAX_BATCH,
    V1,
    MakeModel,
    card_data,
    card_history,
    card_transaction,
    make_settings,
    metric,
    publish,
    scrape,
    transaction,
)

NAMES = list(DEFAULT.feature_names)


def score(client: TestClient, record: dict[str, Any], query: str = "?features=true") -> Any:
    response = client.post(f"/transactions/score{query}", json=record)
    assert response.status_code == 200, response.text
    return response.json()


def at(hours: float, start: str = CARD_START) -> str:
    """`hours` after `start`, as ISO 8601 UTC text."""
    moment = datetime.fromisoformat(start).replace(tzinfo=UTC) + timedelta(hours=hours)
    return moment.isoformat().replace("+00:00", "Z")


def logged(store: ModelStore) -> pd.DataFrame:
    engine = make_engine(f"sqlite:///{store.root.parent / 'predictions.db'}")
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.select(card_predictions).order_by(card_predictions.c.tx_us))
            return pd.DataFrame([dict(r._mapping) for r in rows])
    finally:
        engine.dispose()


def test_a_transaction_is_scored_by_the_card_model_from_its_features(
    card_client: TestClient, card_model: FraudModel
) -> None:
    body = score(card_client, card_transaction(17, customer_id=42, terminal_id="t-9"))
    assert body["transaction_id"] == "17"
    assert body["model_version"] == V1
    assert body["threshold"] == card_model.threshold
    assert list(body["features"]) == NAMES
    row = np.array([[body["features"][name] for name in NAMES]])
    assert body["fraud_probability"] == pytest.approx(card_model.predict_proba(row)[0], abs=1e-12)
    assert body["is_fraud"] == (body["fraud_probability"] >= card_model.threshold)
    # Without ?features=true the answer carries no features.
    plain = score(card_client, card_transaction(18), query="")
    assert "features" not in plain and "explanation" not in plain


def test_a_large_amount_scores_higher_than_a_usual_one(card_client: TestClient) -> None:
    usual = score(card_client, card_transaction("u", amount=30.0, customer_id="a", terminal_id="a"))
    large = score(
        card_client, card_transaction("l", amount=900.0, customer_id="b", terminal_id="b")
    )
    # The Handbook's first fraud scenario (amounts over 220) is in the training data.
    assert large["fraud_probability"] > usual["fraud_probability"]


def _offline(sent: list[dict[str, Any]]) -> dict[str, float]:
    """The offline features of `sent[-1]`, over the bundle's history and everything in `sent`.

    What the state knows when the last one arrives: the history and the transactions before it.
    """
    extra = pd.DataFrame(
        {
            "transaction_id": [str(r["transaction_id"]) for r in sent],
            "tx_us": [tx_us_of(r["tx_datetime"]) for r in sent],
            "customer_id": [str(r["customer_id"]) for r in sent],
            "terminal_id": [str(r["terminal_id"]) for r in sent],
            "amount": [float(r["amount"]) for r in sent],
            "is_fraud": 0,
        }
    )
    frame = pd.concat([card_history(0), extra], ignore_index=True)
    return dict(compute_features(frame, DEFAULT).iloc[-1])


def test_the_served_features_are_the_offline_ones_of_the_same_transactions(
    card_client: TestClient,
) -> None:
    # The history's own customers and terminals; a tie in time (ordered by id, so "a" is before
    # "b" although it arrives after it); a late arrival; the label delay crossed.
    history = card_history(0)
    customer, terminal = history["customer_id"].iloc[-1], history["terminal_id"].iloc[-1]
    sent = [
        card_transaction("b", at(1), customer_id=customer, terminal_id=terminal, amount=10.0),
        card_transaction("a", at(1), customer_id=customer, terminal_id=terminal, amount=30.0),
        card_transaction("c", at(30), customer_id=customer, terminal_id="t-x", amount=5.5),
        card_transaction("d", at(-60), customer_id=customer, terminal_id=terminal, amount=7.25),
        card_transaction(99999999, at(24 * 8), customer_id="7", terminal_id=terminal, amount=120),
    ]
    answers = [score(card_client, record)["features"] for record in sent[:2]]
    batch = card_client.post("/transactions/score/batch?features=true", json=sent[2:])
    answers += [result["features"] for result in batch.json()["results"]]
    for i, got in enumerate(answers):
        expected = _offline(sent[: i + 1])
        for name in NAMES:
            if "_NB_TX_" in name or not name.startswith(("CUSTOMER", "TERMINAL")):
                assert got[name] == expected[name], (sent[i]["transaction_id"], name)
            else:
                assert got[name] == pytest.approx(expected[name], rel=0, abs=1e-9), name


def test_explanations_are_as_predict_gives_them_named_by_the_model_features(
    card_client: TestClient, card_model: FraudModel
) -> None:
    body = score(card_client, card_transaction("e", amount=700.0), query="?explain=true")
    explanation = body["explanation"]
    names = set(card_model.feature_names)
    pushes = explanation["toward_fraud"] + explanation["toward_legit"]
    assert pushes and {p["feature"] for p in pushes} <= names
    total = explanation["base_value"] + sum(p["contribution"] for p in pushes)
    # Every contribution is shown (FRAUD_API_EXPLAIN_TOP=30 in the tests): they sum to the logit.
    p = body["fraud_probability"]
    assert total == pytest.approx(math.log(p / (1 - p)), abs=1e-3)


def test_a_batch_is_scored_in_order_each_seeing_the_ones_before(card_client: TestClient) -> None:
    batch = [card_transaction(i, at(i), amount=10.0 * (i + 1)) for i in range(MAX_BATCH)]
    response = card_client.post("/transactions/score/batch?features=true", json=batch)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["count"] == MAX_BATCH and body["model_version"] == V1
    results = body["results"]
    assert [r["transaction_id"] for r in results] == [str(i) for i in range(MAX_BATCH)]
    counts = [r["features"]["CUSTOMER_ID_NB_TX_1DAY_WINDOW"] for r in results]
    assert counts == [float(i + 1) for i in range(MAX_BATCH)]
    means = [r["features"]["CUSTOMER_ID_AVG_AMOUNT_1DAY_WINDOW"] for r in results]
    assert means == pytest.approx([10.0 * (i + 2) / 2 for i in range(MAX_BATCH)])


def test_a_batch_over_the_limit_or_empty_or_with_a_bad_item_is_refused(
    card_client: TestClient,
) -> None:
    over = [card_transaction(i) for i in range(MAX_BATCH + 1)]
    assert card_client.post("/transactions/score/batch", json=over).status_code == 413
    assert card_client.post("/transactions/score/batch", json=[]).status_code == 422
    bad = [card_transaction(1), card_transaction(2, amount=-1)]
    response = card_client.post("/transactions/score/batch", json=bad)
    assert response.status_code == 422
    assert response.json()["detail"][0]["field"] == "1.amount"
    # Nothing of a refused batch was added: a new transaction is the customer's first.
    assert score(card_client, card_transaction(3))["features"]["CUSTOMER_ID_NB_TX_1DAY_WINDOW"] == 1


def test_a_resent_transaction_gets_its_first_answer_and_counts_once(
    card_client: TestClient, store: ModelStore
) -> None:
    first = score(card_client, card_transaction("r", at(0), amount=50.0))
    # Sent again, even with other fields, it is the same transaction: its first answer.
    again = score(card_client, card_transaction("r", at(2), amount=999.0))
    assert again == first
    batch = card_client.post(
        "/transactions/score/batch?features=true",
        json=[card_transaction("r", at(0), amount=50.0), card_transaction("s", at(3))],
    ).json()["results"]
    assert batch[0] == first
    assert batch[1]["features"]["CUSTOMER_ID_NB_TX_1DAY_WINDOW"] == 2.0
    samples = scrape(card_client)
    assert metric(samples, "fraud_api_card_transactions_total", outcome="new") == 2
    assert metric(samples, "fraud_api_card_transactions_total", outcome="resent") == 2
    assert metric(samples, "fraud_api_predictions_total") == 2
    card_client.app.state.prediction_log.flush(10)  # type: ignore[attr-defined]
    assert sorted(logged(store)["transaction_id"]) == ["r", "s"]


def test_a_transaction_too_far_behind_the_newest_is_a_422_saying_so(
    card_client: TestClient,
) -> None:
    score(card_client, card_transaction("new", at(24 * 20)))
    late = card_transaction("old", at(24 * 20 - 24 * 31))
    response = card_client.post("/transactions/score", json=late)
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["field"] == "tx_datetime" and "too late" in error["msg"]
    # In a batch the whole batch is refused, naming the late one, and nothing of it is added.
    batch = [card_transaction("fine", at(24 * 20)), late]
    response = card_client.post("/transactions/score/batch", json=batch)
    assert response.status_code == 422
    assert response.json()["detail"][0]["field"] == "1.tx_datetime"
    after = score(card_client, card_transaction("after", at(24 * 20 + 1)))
    assert after["features"]["CUSTOMER_ID_NB_TX_1DAY_WINDOW"] == 2.0  # "new" and itself
    assert metric(scrape(card_client), "fraud_api_card_transactions_total", outcome="too_late") == 2


def test_each_new_card_score_is_logged_with_its_features(
    card_client: TestClient, store: ModelStore
) -> None:
    # l2 is sent second but happened first: 01:30 at +01:00 is 00:30 UTC.
    sent = [card_transaction("l1", at(1)), card_transaction("l2", "2018-05-12T01:30:00+01:00")]
    answers = [score(card_client, record) for record in sent]
    card_client.app.state.prediction_log.flush(10)  # type: ignore[attr-defined]
    rows = logged(store)
    assert list(rows["transaction_id"]) == ["l2", "l1"]  # by time
    by_id = rows.set_index("transaction_id")
    for record, answer in zip(sent, answers, strict=True):
        row = by_id.loc[record["transaction_id"]]
        assert row["tx_us"] == tx_us_of(record["tx_datetime"])
        assert json.loads(row["features"]) == answer["features"]
        assert row["fraud_probability"] == answer["fraud_probability"]
        assert row["model_version"] == V1 and row["customer_id"] == "c-test"


def test_a_route_of_the_other_contract_answers_409_naming_the_right_one(
    card_client: TestClient, tmp_path: Path, make_fraud_model: MakeModel
) -> None:
    response = card_client.post("/predict", json=transaction())
    assert response.status_code == 409
    detail = response.json()["detail"]
    assert "cards contract" in detail and "POST /transactions/score" in detail
    assert card_client.post("/predict/batch", json=[transaction()]).status_code == 409
    kaggle = ModelStore(tmp_path / "kaggle-models")
    publish(kaggle, make_fraud_model(seed=1), V1)
    with TestClient(create_app(make_settings(kaggle.root))) as client:
        response = client.post("/transactions/score", json=card_transaction(1))
        assert response.status_code == 409
        detail = response.json()["detail"]
        assert "kaggle contract" in detail and "use POST /predict" in detail
        batch = client.post("/transactions/score/batch", json=[card_transaction(1)])
        assert batch.status_code == 409
        # Nothing was scored: the Kaggle app's /ready says nothing of a feature state.
        assert "feature_state" not in client.get("/ready").json()


def test_ready_and_model_describe_the_card_model_and_its_state(card_client: TestClient) -> None:
    ready = card_client.get("/ready").json()
    assert ready["status"] == "ready" and ready["contract"] == "cards"
    state = ready["feature_state"]
    assert state["backend"] == "memory"
    assert state["events"] == len(card_history(0))  # the bundle's history, loaded at start
    info = card_client.get("/model").json()
    assert info["contract"] == "cards" and info["input_fields"] == NAMES
    score(card_client, card_transaction("one"))
    samples = scrape(card_client)
    assert metric(samples, "fraud_api_feature_state_up", backend="memory") == 1
    assert metric(samples, "fraud_api_feature_state_events") >= len(card_history(0))


def test_a_kaggle_store_publishing_a_card_model_swaps_contract_on_reload(
    store: ModelStore, served_model: FraudModel, make_card_model: Any
) -> None:
    with TestClient(create_app(make_settings(store.root))) as app:
        assert app.post("/predict", json=transaction()).status_code == 200
        publish(store, make_card_model(seed=0), "20250102T000000Z-cards")
        assert app.post("/admin/reload", headers=AUTH).status_code == 200
        assert app.post("/predict", json=transaction()).status_code == 409
        body = score(app, card_transaction("after-swap"))
        assert body["model_version"] == "20250102T000000Z-cards"
        # The new model's history was loaded into the state at the swap.
        assert app.get("/ready").json()["feature_state"]["events"] == len(card_history(0)) + 1


def test_logged_card_features_can_be_compared_for_drift_with_the_training_data(
    card_client: TestClient,
    card_model: FraudModel,
    store: ModelStore,
    make_fraud_model: MakeModel,
) -> None:
    sent = [
        card_transaction(f"d{i}", at(i), customer_id=f"c{i % 4}", amount=5.0 + i) for i in range(12)
    ]
    card_client.post("/transactions/score/batch", json=sent[:5])
    card_client.post("/transactions/score/batch", json=sent[5:10])
    card_client.post("/transactions/score/batch", json=sent[10:])
    card_client.app.state.prediction_log.flush(10)  # type: ignore[attr-defined]
    engine = make_engine(f"sqlite:///{store.root.parent / 'predictions.db'}")
    try:
        current = recent_card_predictions(engine)
    finally:
        engine.dispose()
    assert list(current["transaction_id"]) == [r["transaction_id"] for r in sent]
    assert set(NAMES) <= set(current.columns)
    # Eleven hours of predictions: neither calendar flag has its period in the window.
    columns = drift.card_window_columns(current, DEFAULT, with_score=True)
    assert columns == [n for n in NAMES if n not in drift.CALENDAR_SPANS_DAYS] + [drift.SCORE]

    frame = card_data(0)
    splits, _ = split_cards(frame, compute_features(frame, DEFAULT), DEFAULT)
    assert drift.contract_mismatch(splits, card_model) is None
    assert "kaggle contract" in str(drift.contract_mismatch(splits, make_fraud_model(seed=1)))
    reference = drift.reference_sample(splits, 2_000, model=card_model)
    assert list(reference.columns) == [*NAMES, drift.SCORE]
    report = drift.compare(
        reference, current, drift.DriftThresholds(min_rows=10), threshold=0.3, columns=columns
    )
    assert set(report.table["feature"]) == set(columns)
    assert report.score is not None and report.current_rows == len(sent)
