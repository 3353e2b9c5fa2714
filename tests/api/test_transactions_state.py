"""The card feature state across restarts, in both backends, and shared by two uvicorn workers.

In process: a clean shutdown snapshots the state and a start restores it, then replays the
prediction log's newer card predictions and labels (so even a crash after the last snapshot loses
nothing logged). Redis: the state outlives the app; a second app on the same prefix sees it.
Redis is the real server at 127.0.0.1:6379 (each test its own prefix, its keys deleted after), or
one started here where a test stops it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import sqlalchemy as sa
from fastapi.testclient import TestClient

from api.main import create_app
from fraud_core.api_keys import FEEDBACK
from fraud_core.bundle import FraudModel
from fraud_core.cards.definition import FeatureDefinition
from fraud_core.cards.memory_state import InProcessState
from fraud_core.prediction_log import card_predictions, make_engine
from fraud_core.store import ModelStore
from servicectl.health import http_probe, wait_until
from servicectl.process import running
from tests.api.conftest import bearer, card_transaction, make_settings, new_key
from tests.api.test_card_feedback import DELAY_H, features, label
from tests.api.test_transactions import at
from tests.conftest import free_port
from tests.fraud_core.cards.state_support import REDIS_URL, redis_problem

needs_redis = pytest.mark.skipif(redis_problem() is not None, reason=str(redis_problem()))
START_TIMEOUT_S = 120.0


@pytest.fixture
def prefix() -> Iterator[str]:
    """A key prefix of this test's own; every key under it is deleted after."""
    name = f"test-api-{uuid.uuid4().hex}"
    yield name
    if redis_problem() is None:
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=f"{{{name}}}:*", count=1000))
        if keys:
            client.unlink(*keys)
        client.close()


def app(store: ModelStore, **overrides: Any) -> TestClient:
    """The app on `store`; its client sends a `feedback` key (in its log) with every request."""
    settings = make_settings(store.root, **overrides)
    key = new_key(settings.prediction_log_url, FEEDBACK)
    return TestClient(create_app(settings), headers=bearer(key))


def logged_ids(store: ModelStore) -> list[str]:
    engine = make_engine(f"sqlite:///{store.root.parent / 'predictions.db'}")
    try:
        with engine.connect() as conn:
            return sorted(conn.scalars(sa.select(card_predictions.c.transaction_id)))
    finally:
        engine.dispose()


T = {"terminal_id": "t-restart", "customer_id": "c-restart"}


def check_after_restart(client: TestClient, first: dict[str, float], scored: int) -> None:
    """The customer's `scored` transactions and the labels of X1 and X2 are all in the state."""
    # X1 sent again: its first answer, not counted again.
    assert features(client, card_transaction("X1", at(0), **T)) == first
    late = features(client, card_transaction("X9", at(DELAY_H + 3), **T))
    assert late["CUSTOMER_ID_NB_TX_30DAY_WINDOW"] == scored + 1
    # X1..X3 are in X9's 1-day terminal window (a label delay back); X1 and X2 labelled fraud.
    assert late["TERMINAL_ID_NB_TX_1DAY_WINDOW"] == 3
    assert late["TERMINAL_ID_RISK_1DAY_WINDOW"] == pytest.approx(2 / 3, abs=1e-12)


def test_in_process_state_survives_a_restart_and_a_crash_after_its_snapshot(
    store: ModelStore, card_model: FraudModel, tmp_path: Path
) -> None:
    snapshot = tmp_path / "state" / "snapshot.parquet"
    settings = {"FRAUD_FEATURE_STATE_SNAPSHOT": str(snapshot)}
    with app(store, **settings) as first_app:
        first = features(first_app, card_transaction("X1", at(0), **T))
        features(first_app, card_transaction("X2", at(1), **T))
        assert label(first_app, "X1", "fraud").status_code == 201
    assert snapshot.is_file()
    kept = tmp_path / "kept"
    kept.mkdir()
    for path in snapshot.parent.iterdir():
        shutil.copy2(path, kept / path.name)

    with app(store, **settings) as second_app:
        assert features(second_app, card_transaction("X1", at(0), **T)) == first
        third = features(second_app, card_transaction("X3", at(2), **T))
        assert third["CUSTOMER_ID_NB_TX_1DAY_WINDOW"] == 3  # X1, X2 from the snapshot
        assert label(second_app, "X2", "fraud").status_code == 201
    # As if the second app had died before its snapshot: the first one's is all there is.
    for path in kept.iterdir():
        shutil.copy2(path, snapshot.parent / path.name)

    with app(store, **settings) as third_app:
        # X3 and X2's label come back from the prediction log, scored after the snapshot.
        check_after_restart(third_app, first, scored=3)
    assert logged_ids(store) == ["X1", "X2", "X3", "X9"]  # a re-send is never logged twice


def test_without_a_snapshot_the_prediction_log_alone_rebuilds_the_state(
    store: ModelStore, card_model: FraudModel
) -> None:
    settings = {"FRAUD_FEATURE_STATE_SNAPSHOT": "off"}
    with app(store, **settings) as first_app:
        first = features(first_app, card_transaction("X1", at(0), **T))
        features(first_app, card_transaction("X2", at(1), **T))
        features(first_app, card_transaction("X3", at(2), **T))
        assert label(first_app, "X1", "fraud").status_code == 201
        assert label(first_app, "X2", "fraud").status_code == 201
    assert not (store.root / "feature_state").exists()
    with app(store, **settings) as second_app:
        check_after_restart(second_app, first, scored=3)


@needs_redis
def test_a_redis_state_is_seen_by_the_next_app_on_the_same_prefix(
    store: ModelStore, card_model: FraudModel, prefix: str
) -> None:
    settings = {"FRAUD_FEATURE_STATE": REDIS_URL, "FRAUD_FEATURE_STATE_PREFIX": prefix}
    with app(store, **settings) as first_app:
        first = features(first_app, card_transaction("X1", at(0), **T))
        features(first_app, card_transaction("X2", at(1), **T))
        features(first_app, card_transaction("X3", at(2), **T))
        assert label(first_app, "X1", "fraud").status_code == 201
        assert label(first_app, "X2", "fraud").status_code == 201
        ready = first_app.get("/ready").json()
        assert ready["feature_state"]["backend"] == "redis"
    with app(store, **settings) as second_app:
        check_after_restart(second_app, first, scored=3)
    # Another prefix is another state: the same customer starts from nothing there.
    with app(store, **{**settings, "FRAUD_FEATURE_STATE_PREFIX": prefix + "-other"}) as other:
        try:
            alone = features(other, card_transaction("Y1", at(0), **T))
            assert alone["CUSTOMER_ID_NB_TX_30DAY_WINDOW"] == 1
        finally:
            client = redis.Redis.from_url(REDIS_URL)
            keys = list(client.scan_iter(match=f"{{{prefix}-other}}:*", count=1000))
            client.unlink(*keys)
            client.close()


def test_an_unreachable_redis_keeps_the_card_model_from_serving_and_says_why(
    store: ModelStore, card_model: FraudModel
) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    with app(store, FRAUD_FEATURE_STATE=url) as client:
        ready = client.get("/ready")
        assert ready.status_code == 503
        reason = ready.json()["reason"]
        assert "Redis" in reason and url in reason
        response = client.post("/transactions/score", json=card_transaction(1))
        assert response.status_code == 503


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A redis-server of this test's own on a free port, to be stopped while the API runs."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("no redis-server on the PATH")
    port = free_port()
    proc = subprocess.Popen(
        [server, "--port", str(port), "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"

    def answers() -> bool:
        try:
            return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
        except redis.RedisError:
            return False

    try:
        wait_until("redis-server", answers, 20.0, interval_s=0.05)
        yield url, proc
    finally:
        proc.kill()
        proc.wait()


def test_redis_going_away_fails_ready_and_scores_with_503(
    store: ModelStore, card_model: FraudModel, own_redis: tuple[str, Any]
) -> None:
    url, proc = own_redis
    with app(store, FRAUD_FEATURE_STATE=url) as client:
        assert client.get("/ready").status_code == 200
        features(client, card_transaction("R1", at(0)))
        proc.kill()
        proc.wait()
        ready = client.get("/ready")
        assert ready.status_code == 503 and "unreachable" in ready.json()["reason"]
        response = client.post("/transactions/score", json=card_transaction("R2", at(1)))
        assert response.status_code == 503
        assert "unreachable" in response.json()["detail"]


@pytest.mark.slow  # two uvicorn workers importing the app: ~20 s on two busy cores
@needs_redis
def test_two_workers_sharing_redis_count_every_concurrent_transaction(
    store: ModelStore, card_model: FraudModel, prefix: str, tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        "PATH": "/usr/bin:/bin",
        "FRAUD_MODELS_DIR": str(store.root),
        "FRAUD_API_RELOAD_INTERVAL_S": "0",
        "FRAUD_PREDICTION_LOG_URL": f"sqlite:///{tmp_path / 'workers.db'}",
        "FRAUD_FEATURE_STATE": REDIS_URL,
        "FRAUD_FEATURE_STATE_PREFIX": prefix,
    }
    log = tmp_path / "uvicorn.log"
    command = [sys.executable, "-m", "uvicorn", "api.main:app", "--workers", "2"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "info"]
    sent = 64
    card = {"customer_id": "c-shared", "terminal_id": "t-shared"}
    with running(command, cwd=tmp_path, env=env, log=log) as proc:
        wait_until("uvicorn /ready", http_probe(f"{url}/ready"), START_TIMEOUT_S, logs=[log],
                   process=proc)  # fmt: skip

        def post(i: int) -> int:
            # A connection per request: the kernel spreads them over both workers.
            with httpx.Client(base_url=url, timeout=30) as client:
                body = card_transaction(f"w{i}", at(i / 100), **card)
                return client.post("/transactions/score", json=body).status_code

        with ThreadPoolExecutor(max_workers=16) as pool:
            statuses = list(pool.map(post, range(sent)))
        assert statuses == [200] * sent
        final = httpx.post(
            f"{url}/transactions/score?features=true",
            json=card_transaction("w-final", at(1), **card),
            timeout=30,
        ).json()
    assert final["features"]["CUSTOMER_ID_NB_TX_1DAY_WINDOW"] == sent + 1
    started = log.read_text(errors="replace").count("Application startup complete")
    assert started == 2, log.read_text(errors="replace")


@needs_redis
def test_both_backends_answer_a_stream_alike_to_the_bit(
    store: ModelStore, card_model: FraudModel, prefix: str
) -> None:
    history_terminal = {"terminal_id": "t-both"}
    stream = [
        card_transaction("s2", at(0), **history_terminal),
        card_transaction("s1", at(0), **history_terminal, amount=33.3),
        card_transaction("s3", at(-30), customer_id="other", **history_terminal),
        card_transaction("s4", at(DELAY_H + 2), **history_terminal, amount=0.1),
        card_transaction("s2", at(5), **history_terminal),  # a re-send
    ]
    answers = {}
    for kind, settings in {
        "memory": {"FRAUD_FEATURE_STATE_SNAPSHOT": "off"},
        "redis": {"FRAUD_FEATURE_STATE": REDIS_URL, "FRAUD_FEATURE_STATE_PREFIX": prefix},
    }.items():
        # Each backend on a log of its own, so that neither replays the other's predictions.
        log = f"sqlite:///{store.root.parent / f'{kind}.db'}"
        with app(store, FRAUD_PREDICTION_LOG_URL=log, **settings) as client:
            one = [client.post("/transactions/score?features=true", json=r) for r in stream[:2]]
            batch = client.post("/transactions/score/batch?features=true", json=stream[2:])
            assert label(client, "s1", "fraud").status_code == 201
            after = client.post(
                "/transactions/score?features=true",
                json=card_transaction("s5", at(DELAY_H + 3), **history_terminal),
            )
            answers[kind] = [r.json() for r in one] + batch.json()["results"] + [after.json()]
    assert answers["memory"] == answers["redis"]
    assert answers["memory"][-1]["features"]["TERMINAL_ID_RISK_1DAY_WINDOW"] == 0.5


def test_a_snapshot_of_other_feature_windows_is_ignored_and_the_log_replayed_whole(
    store: ModelStore, card_model: FraudModel, tmp_path: Path
) -> None:
    snapshot = tmp_path / "snapshot.parquet"
    settings = {"FRAUD_FEATURE_STATE_SNAPSHOT": str(snapshot)}
    with app(store, **settings) as first_app:
        first = features(first_app, card_transaction("X1", at(0), **T))
        features(first_app, card_transaction("X2", at(1), **T))
        features(first_app, card_transaction("X3", at(2), **T))
        assert label(first_app, "X1", "fraud").status_code == 201
        assert label(first_app, "X2", "fraud").status_code == 201
    # Replaced by the (empty) state of other windows, taken after everything was logged.
    InProcessState(FeatureDefinition(customer_windows_days=(1, 2))).snapshot(snapshot)
    with app(store, **settings) as second_app:
        check_after_restart(second_app, first, scored=3)
