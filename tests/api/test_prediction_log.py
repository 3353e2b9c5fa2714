"""Every prediction the API makes lands in the prediction log, once, with its request id."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from api.main import create_app
from api.prediction_log import DROP_REASONS
from fraud_core.bundle import FraudModel
from fraud_core.prediction_log import make_engine, predictions
from fraud_core.schema import FEATURE_COLUMNS
from fraud_core.store import ModelStore
from tests.api.conftest import (
    MAX_BATCH,
    THRESHOLD,
    V1,
    Samples,
    make_settings,
    metric,
    scrape,
    transaction,
)
from tests.conftest import free_port, fresh_database, pg_address
from tests.prediction_log_db import writer_blocked

# Finite values beyond float32 overflow in the anomaly feature's float32 cast: expected here.
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")

Record = dict[str, float]
UUID_HEX = re.compile(r"[0-9a-f]{32}")
THREADS = 8
REQUESTS_PER_THREAD = 50


@pytest.fixture(params=["sqlite", "postgresql"])
def log_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'log.db'}"
    else:
        with fresh_database() as url:
            yield url


def logged(url: str) -> dict[str, Any]:
    """The rows of the predictions table by request id (after the app's log has written them)."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return {row.request_id: row for row in conn.execute(sa.select(predictions))}
    finally:
        engine.dispose()


def final_samples(app: FastAPI) -> Samples:
    """The app's metrics read from its registry: still there after the server has stopped."""
    body, _ = app.state.metrics.render()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def assert_logged(row: Any, record: Record, answer: dict[str, Any]) -> None:
    assert [getattr(row, name) for name in FEATURE_COLUMNS] == [record[n] for n in FEATURE_COLUMNS]
    assert row.fraud_probability == answer["fraud_probability"]
    assert row.is_fraud is answer["is_fraud"]
    assert row.model_version == V1
    assert row.threshold == THRESHOLD
    assert row.created_at.tzinfo is not None


def test_each_prediction_has_a_request_id_and_is_logged_under_it(
    client: TestClient, records: list[Record], tmp_path: Path
) -> None:
    answers = []
    for record in records:
        response = client.post("/predict", json=record)
        assert response.status_code == 200, response.text
        body = response.json()
        assert UUID_HEX.fullmatch(body["request_id"])
        assert response.headers["X-Request-ID"] == body["request_id"]
        answers.append(body)
    assert len({a["request_id"] for a in answers}) == len(records)
    assert client.app.state.prediction_log.flush(timeout=30)
    rows = logged(f"sqlite:///{tmp_path / 'predictions.db'}")
    assert set(rows) == {a["request_id"] for a in answers}
    for record, answer in zip(records, answers, strict=True):
        assert_logged(rows[answer["request_id"]], record, answer)
    # Frauds and legitimate transactions alike.
    assert {row.is_fraud for row in rows.values()} == {True, False}


@pytest.mark.parametrize("given", ["order-42:retry.1", "A" * 64, "7"])
def test_a_plain_client_request_id_is_kept(
    client: TestClient, records: list[Record], tmp_path: Path, given: str
) -> None:
    response = client.post("/predict", json=records[0], headers={"X-Request-ID": given})
    assert response.json()["request_id"] == response.headers["X-Request-ID"] == given
    assert client.app.state.prediction_log.flush(timeout=30)
    assert set(logged(f"sqlite:///{tmp_path / 'predictions.db'}")) == {given}


@pytest.mark.parametrize("given", ["A" * 65, "two words", "a/b", "-lead", "x;drop", ""])
def test_any_other_client_request_id_is_replaced(
    client: TestClient, records: list[Record], given: str
) -> None:
    response = client.post("/predict", json=records[0], headers={"X-Request-ID": given})
    assert response.status_code == 200
    request_id = response.json()["request_id"]
    assert UUID_HEX.fullmatch(request_id)
    assert response.headers["X-Request-ID"] == request_id


def test_a_batch_logs_each_item_under_the_batch_id_and_its_position(
    client: TestClient, records: list[Record], tmp_path: Path
) -> None:
    batch = records[:MAX_BATCH]
    response = client.post("/predict/batch", json=batch, headers={"X-Request-ID": "batch-7"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["request_id"] == response.headers["X-Request-ID"] == "batch-7"
    ids = [item["request_id"] for item in body["results"]]
    assert ids == [f"batch-7-{i}" for i in range(len(batch))]
    unnamed = client.post("/predict/batch", json=batch[:2]).json()
    assert UUID_HEX.fullmatch(unnamed["request_id"])
    assert [r["request_id"] for r in unnamed["results"]] == [
        f"{unnamed['request_id']}-{i}" for i in range(2)
    ]
    assert client.app.state.prediction_log.flush(timeout=30)
    rows = logged(f"sqlite:///{tmp_path / 'predictions.db'}")
    assert set(rows) == {*ids, *(r["request_id"] for r in unnamed["results"])}
    for record, item in zip(batch, body["results"], strict=True):
        assert_logged(rows[item["request_id"]], record, item)


@contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """`app` in a real uvicorn on a free port, shut down gracefully (as on SIGTERM) after."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name="uvicorn")
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            assert thread.is_alive(), "uvicorn exited while starting"
            assert time.monotonic() < deadline, "uvicorn did not start within 60 s"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=120)
        assert not thread.is_alive(), "uvicorn did not shut down within 120 s"


def test_no_prediction_is_lost_in_a_burst_and_a_graceful_shutdown(
    store: ModelStore, served_model: FraudModel, records: list[Record], log_url: str
) -> None:
    settings = make_settings(
        store.root,
        FRAUD_PREDICTION_LOG_URL=log_url,
        FRAUD_PREDICTION_LOG_BATCH_SIZE=25,
        FRAUD_PREDICTION_LOG_SHUTDOWN_TIMEOUT_S=60,
    )
    app = create_app(settings)
    answers: list[tuple[Record, dict[str, Any]]] = []
    failures: list[str] = []

    def client_thread(number: int) -> None:
        with httpx.Client(timeout=60) as http:
            for i in range(REQUESTS_PER_THREAD):
                record = records[(number + i) % len(records)]
                # Half name their request, half leave it to the API.
                headers = {"X-Request-ID": f"t{number}-{i}"} if i % 2 else {}
                response = http.post(f"{url}/predict", json=record, headers=headers)
                if response.status_code != 200:
                    failures.append(response.text)
                    continue
                answers.append((record, response.json()))

    with serving(app) as url:
        # The writer is held up for the whole burst and into the shutdown, so that the shutdown
        # finds one batch in the writer's hands and the rest in its queue, all to be written.
        block = writer_blocked(log_url)
        block.__enter__()
        release = threading.Timer(2.0, block.__exit__, args=(None, None, None))
        threads = [threading.Thread(target=client_thread, args=(n,)) for n in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert app.state.prediction_log.stats().written == 0
        release.start()
    release.join()

    assert failures == []
    total = THREADS * REQUESTS_PER_THREAD
    assert len(answers) == total
    rows = logged(log_url)
    # Exactly once each: as many rows as answers, under the ids the clients were given.
    assert len(rows) == total
    assert set(rows) == {answer["request_id"] for _, answer in answers}
    for record, answer in answers:
        assert_logged(rows[answer["request_id"]], record, answer)
    named = {f"t{n}-{i}" for n in range(THREADS) for i in range(1, REQUESTS_PER_THREAD, 2)}
    assert named <= set(rows)
    samples = final_samples(app)
    assert metric(samples, "fraud_api_prediction_log_written_total") == total
    assert metric(samples, "fraud_api_prediction_log_dropped_total") == 0
    assert metric(samples, "fraud_api_prediction_log_queue_depth") == 0


def test_a_full_queue_drops_predictions_and_counts_each_one(
    store: ModelStore, served_model: FraudModel, records: list[Record], log_url: str
) -> None:
    queue_size, batch_size, requests = 5, 2, 40
    settings = make_settings(
        store.root,
        FRAUD_PREDICTION_LOG_URL=log_url,
        FRAUD_PREDICTION_LOG_QUEUE_SIZE=queue_size,
        FRAUD_PREDICTION_LOG_BATCH_SIZE=batch_size,
        FRAUD_PREDICTION_LOG_FLUSH_INTERVAL_S=0.05,
    )
    app = create_app(settings)
    with TestClient(app) as client:
        assert client.post("/predict", json=records[0]).status_code == 200
        assert app.state.prediction_log.flush(timeout=30)
        with writer_blocked(log_url):
            for i in range(requests):
                # A request never waits for the log, nor fails because of it.
                assert client.post("/predict", json=records[i % len(records)]).status_code == 200
            blocked = scrape(client)
        assert metric(blocked, "fraud_api_prediction_log_written_total") == 1
        assert metric(blocked, "fraud_api_prediction_log_queue_depth") == queue_size
        dropped = metric(blocked, "fraud_api_prediction_log_dropped_total", reason="queue_full")
        assert requests - queue_size - batch_size <= dropped <= requests - queue_size
    samples = final_samples(app)
    written = metric(samples, "fraud_api_prediction_log_written_total")
    assert written + metric(samples, "fraud_api_prediction_log_dropped_total") == requests + 1
    assert metric(samples, "fraud_api_prediction_log_dropped_total", reason="queue_full") == dropped
    assert len(logged(log_url)) == written


def test_a_database_that_is_down_never_fails_a_prediction(
    store: ModelStore, served_model: FraudModel, records: list[Record]
) -> None:
    # A server that refuses the database: the API starts, serves, and counts what it lost.
    settings = make_settings(
        store.root,
        FRAUD_PREDICTION_LOG_URL=pg_address().url("fraud_test_no_such_db"),
        FRAUD_PREDICTION_LOG_SHUTDOWN_TIMEOUT_S=0.5,
    )
    app = create_app(settings)
    with TestClient(app) as client:
        for record in records[:5]:
            assert client.post("/predict", json=record).status_code == 200
        assert client.post("/predict/batch", json=records[:3]).status_code == 200
        # No key can be checked either (they live in that database): a well-formed one is
        # answered 503, not 401.
        key = {"Authorization": f"Bearer fk_{'0' * 12}_{'A' * 43}"}
        response = client.post("/feedback", json={"request_id": "x", "label": "fraud"}, headers=key)
        assert response.status_code == 503
        assert "API keys" in response.json()["detail"]
    samples = final_samples(app)
    assert metric(samples, "fraud_api_prediction_log_written_total") == 0
    assert metric(samples, "fraud_api_prediction_log_dropped_total", reason="write_failed") == 8
    assert metric(samples, "fraud_api_prediction_log_write_errors_total") >= 1


def test_a_url_that_is_not_a_database_stops_the_start_up_naming_the_variable(
    store: ModelStore, served_model: FraudModel
) -> None:
    settings = make_settings(store.root, FRAUD_PREDICTION_LOG_URL="predictions.db")
    with (
        pytest.raises(ValueError, match="FRAUD_PREDICTION_LOG_URL"),
        TestClient(create_app(settings)),
    ):
        pass


def test_with_the_log_off_predictions_keep_their_ids_and_nothing_is_written(
    store: ModelStore, served_model: FraudModel, tmp_path: Path
) -> None:
    settings = make_settings(store.root, FRAUD_PREDICTION_LOG_URL="off")
    with TestClient(create_app(settings)) as client:
        response = client.post("/predict", json=transaction())
        assert response.status_code == 200
        assert UUID_HEX.fullmatch(response.json()["request_id"])
        feedback = client.post(
            "/feedback", json={"request_id": response.json()["request_id"], "label": "fraud"}
        )
        assert feedback.status_code == 503
        assert "FRAUD_PREDICTION_LOG_URL=off" in feedback.json()["detail"]
        samples = scrape(client)
    assert not list(tmp_path.glob("predictions*"))
    assert metric(samples, "fraud_api_prediction_log_written_total") == 0
    for reason in DROP_REASONS:
        assert metric(samples, "fraud_api_prediction_log_dropped_total", reason=reason) == 0
