"""POST /feedback: the true label of a logged prediction, stored once; bad input changes nothing.

The app's client sends an API key with the `feedback` scope on every request
(`test_auth`, `test_label_history`: without one, and corrections).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from api.main import create_app
from fraud_core.api_keys import FEEDBACK, parse
from fraud_core.bundle import FraudModel
from fraud_core.prediction_log import feedback, labelled_rows, make_engine
from fraud_core.schema import COLUMNS, FEATURE_COLUMNS, LABEL
from fraud_core.store import ModelStore
from tests.api.conftest import bearer, make_settings, metric, new_key, scrape

pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")

Record = dict[str, float]


@pytest.fixture
def log_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'labels.db'}"


@pytest.fixture
def key(log_url: str) -> str:
    """A `feedback` key in the test's prediction log."""
    return new_key(log_url, FEEDBACK, name="chargebacks")


@pytest.fixture
def labelling(
    store: ModelStore, served_model: FraudModel, log_url: str, key: str
) -> Iterator[TestClient]:
    """The app with a log that waits 30 s to fill a batch: a new prediction is still queued.

    Its client sends `key` with every request.
    """
    settings = make_settings(
        store.root,
        FRAUD_PREDICTION_LOG_URL=log_url,
        FRAUD_PREDICTION_LOG_FLUSH_INTERVAL_S=30,
        FRAUD_PREDICTION_LOG_BATCH_SIZE=1_000,
    )
    with TestClient(create_app(settings), headers=bearer(key)) as client:
        yield client


def key_id(key: str) -> str:
    parsed = parse(key)
    assert parsed is not None
    return parsed[0]


def stored_labels(url: str) -> list[tuple[Any, ...]]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.select(feedback).order_by(feedback.c.request_id))
            return [tuple(row) for row in rows]
    finally:
        engine.dispose()


def predict(client: TestClient, record: Record) -> str:
    response = client.post("/predict", json=record)
    assert response.status_code == 200, response.text
    return str(response.json()["request_id"])


def test_a_label_right_after_the_prediction_is_stored(
    labelling: TestClient, records: list[Record], log_url: str, key: str
) -> None:
    request_id = predict(labelling, records[0])
    # Still in the log's queue (a 30 s batch): the route writes it out before it looks.
    response = labelling.post(
        "/feedback", json={"request_id": request_id, "label": "fraud", "source": "chargeback"}
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["request_id"] == request_id
    assert body["label"] == "fraud"
    assert body["source"] == "chargeback"
    assert body["created"] is True
    assert body["key_id"] == key_id(key) and body["corrected"] is False
    labelled_at = datetime.fromisoformat(body["labelled_at"])
    assert labelled_at.tzinfo is not None
    [(stored_id, label, stored_at, source, comment, stored_key)] = stored_labels(log_url)
    assert (stored_id, label, source, comment) == (request_id, "fraud", "chargeback", None)
    assert stored_key == key_id(key)
    assert stored_at == labelled_at
    assert metric(scrape(labelling), "fraud_api_feedback_total", label="fraud") == 1


def test_the_same_label_again_is_answered_with_the_first_one(
    labelling: TestClient, records: list[Record], log_url: str
) -> None:
    request_id = predict(labelling, records[0])
    first = labelling.post(
        "/feedback", json={"request_id": request_id, "label": "legit", "comment": "customer ok"}
    )
    assert first.status_code == 201
    again = labelling.post(
        "/feedback", json={"request_id": request_id, "label": "legit", "source": "analyst"}
    )
    assert again.status_code == 200, again.text
    assert again.json() == {**first.json(), "created": False}
    assert len(stored_labels(log_url)) == 1
    samples = scrape(labelling)
    assert metric(samples, "fraud_api_feedback_total", label="legit") == 1
    assert metric(samples, "fraud_api_feedback_total", label="fraud") == 0


def test_batch_items_are_labelled_by_their_own_ids(
    labelling: TestClient, records: list[Record], log_url: str
) -> None:
    results = labelling.post("/predict/batch", json=records[:3]).json()["results"]
    for item, label in zip(results, ["fraud", "legit", "fraud"], strict=True):
        response = labelling.post(
            "/feedback", json={"request_id": item["request_id"], "label": label}
        )
        assert response.status_code == 201, response.text
    # The training side gets them back in the transaction schema, Class from the labels.
    labelling.app.state.prediction_log.flush(timeout=30)
    engine = make_engine(log_url)
    try:
        frame = labelled_rows(engine)
    finally:
        engine.dispose()
    assert list(frame.columns[: len(COLUMNS)]) == list(COLUMNS)
    by_id = frame.set_index("request_id")
    for item, record, label in zip(results, records[:3], [1, 0, 1], strict=True):
        assert by_id.loc[item["request_id"], LABEL] == label
        assert by_id.loc[item["request_id"], list(FEATURE_COLUMNS)].tolist() == [
            record[name] for name in FEATURE_COLUMNS
        ]
        assert by_id.loc[item["request_id"], "fraud_probability"] == item["fraud_probability"]


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"request_id": "never-predicted", "label": "fraud"}, 404, None),
        ({"request_id": "{known}", "label": "Fraud"}, 422, "label"),
        ({"request_id": "{known}", "label": 1}, 422, "label"),
        ({"request_id": "{known}", "label": None}, 422, "label"),
        ({"request_id": "{known}"}, 422, "label"),
        ({"label": "fraud"}, 422, "request_id"),
        ({"request_id": "", "label": "fraud"}, 422, "request_id"),
        ({"request_id": "x" * 101, "label": "fraud"}, 422, "request_id"),
        ({"request_id": "{known}", "label": "fraud", "extra": 1}, 422, "extra"),
        ({"request_id": "{labelled}", "label": "legit"}, 409, None),
    ],
)
def test_bad_feedback_is_refused_and_changes_nothing(
    labelling: TestClient,
    records: list[Record],
    log_url: str,
    body: dict[str, Any],
    status: int,
    field: str | None,
) -> None:
    known = predict(labelling, records[0])
    labelled = predict(labelling, records[1])
    assert (
        labelling.post("/feedback", json={"request_id": labelled, "label": "fraud"}).status_code
        == 201
    )
    before = stored_labels(log_url)
    ids = {"{known}": known, "{labelled}": labelled}
    if "request_id" in body:
        body = {**body, "request_id": ids.get(body["request_id"], body["request_id"])}

    response = labelling.post("/feedback", json=body)

    assert response.status_code == status, response.text
    if field is not None:
        assert field in [error["field"] for error in response.json()["detail"]]
    elif status == 404:
        assert "never-predicted" in response.json()["detail"]
    else:
        detail = response.json()["detail"]
        assert labelled in detail and "'fraud'" in detail and "'legit'" in detail
    assert stored_labels(log_url) == before
    assert metric(scrape(labelling), "fraud_api_feedback_total") == 1
