"""POST /feedback by transaction_id: card labels stored once, and counted in terminal risk only
for transactions more than the label delay later."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from api.prediction_log import PredictionLog
from fraud_core.api_keys import FEEDBACK
from fraud_core.bundle import FraudModel
from fraud_core.cards.definition import DEFAULT, TX_US
from fraud_core.prediction_log import (
    CARD_PROVENANCE_COLUMNS,
    CardPredictionRow,
    PredictionRow,
    add_card_feedback,
    card_events,
    labelled_card_transactions,
    make_engine,
    recent_card_predictions,
)
from fraud_core.store import ModelStore
from tests.api.conftest import (
    V1,
    bearer,
    card_transaction,
    default_log_url,
    make_settings,
    metric,
    new_key,
    scrape,
)
from tests.api.test_transactions import at

DAY = 24.0
DELAY_H = DEFAULT.delay_days * DAY


@pytest.fixture
def labelling(store: ModelStore, card_model: FraudModel) -> Iterator[TestClient]:
    """The card app with a log that waits 30 s to fill a batch: a new score is still queued.

    Its client sends a `feedback` key with every request.
    """
    settings = make_settings(
        store.root,
        FRAUD_PREDICTION_LOG_FLUSH_INTERVAL_S=30,
        FRAUD_PREDICTION_LOG_BATCH_SIZE=1_000,
    )
    key = new_key(default_log_url(store.root), FEEDBACK)
    with TestClient(create_app(settings), headers=bearer(key)) as client:
        yield client


def features(client: TestClient, record: dict[str, Any]) -> dict[str, float]:
    response = client.post("/transactions/score?features=true", json=record)
    assert response.status_code == 200, response.text
    return dict(response.json()["features"])


def label(client: TestClient, transaction_id: Any, value: str, **extra: Any) -> Any:
    return client.post(
        "/feedback", json={"transaction_id": transaction_id, "label": value, **extra}
    )


def test_a_card_label_is_stored_once_and_final(labelling: TestClient, store: ModelStore) -> None:
    features(labelling, card_transaction(101))
    # Still in the log's queue (a 30 s batch): the route writes it out before it looks.
    first = label(labelling, 101, "fraud", source="chargeback")
    assert first.status_code == 201, first.text
    body = first.json()
    assert body["transaction_id"] == "101" and body["label"] == "fraud" and body["created"]
    again = label(labelling, "101", "fraud")
    assert again.status_code == 200 and again.json()["created"] is False
    assert again.json()["labelled_at"] == body["labelled_at"]
    other = label(labelling, 101, "legit")
    assert other.status_code == 409
    assert "'101'" in other.json()["detail"] and "'fraud'" in other.json()["detail"]
    unknown = label(labelling, "never-scored", "fraud")
    assert unknown.status_code == 404 and "never-scored" in unknown.json()["detail"]
    assert metric(scrape(labelling), "fraud_api_feedback_total", label="fraud") == 1

    engine = make_engine(f"sqlite:///{store.root.parent / 'predictions.db'}")
    try:
        frame = labelled_card_transactions(engine)
    finally:
        engine.dispose()
    assert list(frame.columns[:7]) == [
        "transaction_id",
        "tx_datetime",
        TX_US,
        "customer_id",
        "terminal_id",
        "amount",
        "is_fraud",
    ]
    assert list(frame.columns[7:]) == list(CARD_PROVENANCE_COLUMNS)
    [row] = frame.itertuples(index=False)
    assert (row.transaction_id, row.customer_id, row.amount, row.is_fraud) == (
        "101",
        "c-test",
        20.0,
        1,
    )
    assert row.model_version == V1 and row.label_source == "chargeback"
    assert str(frame["tx_datetime"].dtype) == "datetime64[us]"
    assert frame["tx_datetime"].iloc[0] == pd.Timestamp("2018-05-12T00:00:00")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"label": "fraud"}, "request_id"),
        ({"request_id": "r", "transaction_id": "t", "label": "fraud"}, "transaction_id"),
        ({"transaction_id": "", "label": "fraud"}, "transaction_id"),
        ({"transaction_id": True, "label": "fraud"}, "transaction_id"),
        ({"transaction_id": "t", "label": "maybe"}, "label"),
    ],
)
def test_a_label_naming_no_prediction_or_two_is_a_422(
    labelling: TestClient, body: dict[str, Any], field: str
) -> None:
    response = labelling.post("/feedback", json=body)
    assert response.status_code == 422, response.text
    assert field in [error["field"] for error in response.json()["detail"]]


def test_a_fraud_label_counts_in_the_terminal_risk_only_after_the_delay(
    labelling: TestClient,
) -> None:
    terminal = {"terminal_id": "t-risk"}
    features(labelling, card_transaction("A", at(0), customer_id="ca", **terminal))
    # Before the label: A is in the 1-day terminal window of a transaction 7 days and 30 min
    # later, as a legitimate transaction.
    before = features(
        labelling, card_transaction("D", at(DELAY_H + 0.5), customer_id="cd", **terminal)
    )
    assert (before["TERMINAL_ID_NB_TX_1DAY_WINDOW"], before["TERMINAL_ID_RISK_1DAY_WINDOW"]) == (
        1.0,
        0.0,
    )
    assert label(labelling, "A", "fraud").status_code == 201
    # Within the delay the label is not known yet: no window of a transaction 3 days on holds A.
    within = features(labelling, card_transaction("B", at(3 * DAY), customer_id="cb", **terminal))
    assert within["TERMINAL_ID_NB_TX_30DAY_WINDOW"] == 0.0
    assert within["TERMINAL_ID_RISK_30DAY_WINDOW"] == 0.0
    # After the delay it counts: A is the one transaction of C's 1-day window, and a fraud.
    after = features(
        labelling, card_transaction("C", at(DELAY_H + 1), customer_id="cc", **terminal)
    )
    assert after["TERMINAL_ID_NB_TX_1DAY_WINDOW"] == 1.0
    assert after["TERMINAL_ID_RISK_1DAY_WINDOW"] == 1.0
    # D, scored before the label, keeps the answer it had (a re-send returns it).
    assert features(labelling, card_transaction("D", at(DELAY_H + 0.5))) == before


def test_a_legit_label_leaves_the_risk_at_zero(labelling: TestClient) -> None:
    terminal = {"terminal_id": "t-legit"}
    features(labelling, card_transaction("L", at(0), **terminal))
    assert label(labelling, "L", "legit").status_code == 201
    after = features(labelling, card_transaction("M", at(DELAY_H + 1), customer_id="m", **terminal))
    assert (after["TERMINAL_ID_NB_TX_1DAY_WINDOW"], after["TERMINAL_ID_RISK_1DAY_WINDOW"]) == (
        1.0,
        0.0,
    )


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_card_and_kaggle_rows_share_the_writer_and_read_back_exactly(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = (
        f"sqlite:///{tmp_path / 'mixed.db'}"
        if backend == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    engine = make_engine(url)
    names = DEFAULT.feature_names
    # Before any table exists every reader answers an empty frame of its columns.
    assert len(labelled_card_transactions(engine)) == len(card_events(engine)) == 0
    empty = recent_card_predictions(engine, feature_names=names)
    assert len(empty) == 0 and set(names) <= set(empty.columns)
    log = PredictionLog(engine, max_latency_s=0.05)
    now = datetime.now(UTC)
    # Ids a CSV or a text protocol would trip on: separators, quotes, backslashes, non-ASCII.
    odd = ["a,b", 'say "hi"', "back\\slash", "é-ü-中", "17"]
    cards = [
        CardPredictionRow(tid, now, "v1", 0.5, 1_526_083_200_000_000 + i, f"c{tid}", tid, 0.1 * i,
                          names, tuple(float(i) + 0.125 for _ in names), 0.25, False)
        for i, tid in enumerate(odd)
    ]  # fmt: skip
    kaggle = PredictionRow("req-1", now, "v1", 0.5, [0.5] * 30, 0.1, False)
    try:
        log.record([cards[0], kaggle, *cards[1:]])
        log.record(cards[:1])  # the same transaction again: dropped by its key, counted
        assert log.flush(30)
        stats = log.stats()
        assert stats.written == len(odd) + 1 and stats.dropped["duplicate_id"] == 1
        for tid in odd[:2]:
            assert add_card_feedback(engine, tid, "fraud", source="test").created
        frame = labelled_card_transactions(engine)
        assert list(frame["transaction_id"]) == odd[:2]
        assert list(frame["customer_id"]) == ["ca,b", 'csay "hi"']
        assert list(frame["is_fraud"]) == [1, 1]
        events = card_events(engine)
        assert list(events["transaction_id"]) == odd
        assert list(events["terminal_id"]) == odd
        assert list(events["amount"]) == [0.1 * i for i in range(len(odd))]
        recent = recent_card_predictions(engine).set_index("transaction_id")
        for i, tid in enumerate(odd):
            values = recent.loc[tid, list(names)].to_numpy(dtype=float).tolist()
            assert values == [float(i) + 0.125] * len(names)
    finally:
        log.close()
