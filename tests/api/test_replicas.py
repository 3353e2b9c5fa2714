"""Two API replicas behind one address share one card state, one prediction log, one model store.

Two `uvicorn api.main:app --workers 2` processes (four workers) hold sockets bound with
SO_REUSEPORT on one port (tests/api/replica_fleet.py), so the kernel spreads new connections over
both, as a Kubernetes Service spreads them over pods. They share one Redis prefix (the online
feature state), one PostgreSQL database (prediction log, labels, API keys) and one model store.
Which worker answered is read from the operating system (the socket's holder), not the API.

Slow: four workers import the app (numpy, xgboost, FastAPI) on a shared machine.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import redis
import sqlalchemy as sa

from fraud_core.api_keys import FEEDBACK
from fraud_core.bundle import FraudModel
from fraud_core.cards.definition import DEFAULT
from fraud_core.cards.memory_state import InProcessState
from fraud_core.cards.state import CardTransaction
from fraud_core.prediction_log import card_feedback, card_predictions, label_events, make_engine
from fraud_core.store import ModelStore
from servicectl.health import wait_until
from tests.api.conftest import (
    CARD_THRESHOLD,
    V1,
    V2,
    bearer,
    card_history,
    card_transaction,
    new_key,
    publish,
)
from tests.api.replica_fleet import Fleet, serving
from tests.api.test_transactions import at
from tests.conftest import fresh_database
from tests.fraud_core.cards.state_support import REDIS_URL, redis_problem

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(redis_problem() is not None, reason=str(redis_problem())),
]

#: Importing the app four times over on a busy two-core machine.
START_TIMEOUT_S = 180.0
WORKERS = 2
RELOAD_INTERVAL_S = 0.2
SWAP_THRESHOLD = 0.35
LOG_TIMEOUT_S = 30.0
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Deployment:
    """The replicas and what they share besides Redis: the model store and the log's database."""

    fleet: Fleet
    store: ModelStore
    database: str


def delete_prefix(prefix: str) -> None:
    """Delete the deployment's Redis keys: the feature state's and the rate limits'."""
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"*{prefix}*", count=1000))
    if keys:
        client.unlink(*keys)
    client.close()


@pytest.fixture(scope="module")
def deployment(
    tmp_path_factory: pytest.TempPathFactory, make_card_model: Callable[..., FraudModel]
) -> Iterator[Deployment]:
    """Two replicas of two workers on one port, serving the card model V1, every worker ready."""
    root = tmp_path_factory.mktemp("replicas")
    store = ModelStore(root / "models")
    publish(store, make_card_model(seed=0), V1)
    prefix = f"test-replicas-{uuid.uuid4().hex}"
    with fresh_database() as database, ExitStack() as stack:
        stack.callback(delete_prefix, prefix)  # runs last: after the servers have stopped
        key = new_key(database, FEEDBACK)  # before the start: every worker reads it at once
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FRAUD_", "MLFLOW_"))}
        env.update(
            FRAUD_MODELS_DIR=str(store.root),
            FRAUD_API_RELOAD_INTERVAL_S=str(RELOAD_INTERVAL_S),
            FRAUD_PREDICTION_LOG_URL=database,
            FRAUD_FEATURE_STATE=REDIS_URL,
            FRAUD_FEATURE_STATE_PREFIX=prefix,
            # Slower than the 0.2 s default: a row scored by one replica stays in its queue long
            # enough for a label sent at once to the other to find it not yet written.
            FRAUD_PREDICTION_LOG_FLUSH_INTERVAL_S=str(FLUSH_INTERVAL_S),
        )
        fleet = stack.enter_context(
            serving(root, env, workers=WORKERS, start_timeout_s=START_TIMEOUT_S,
                    headers=bearer(key))
        )  # fmt: skip
        fleet.until_every_worker(
            "/ready", lambda r: r.status_code == 200 and r.json()["model_version"] == V1,
            "every worker ready with V1",
        )  # fmt: skip
        yield Deployment(fleet, store, database)


def tx_us(when: str) -> int:
    """`when` (ISO 8601, UTC) as µs since the epoch, as the API reads it."""
    moment = datetime.fromisoformat(when.replace("Z", "+00:00"))
    return (moment - EPOCH) // timedelta(microseconds=1)


def logged(database: str, prefix: str) -> dict[str, str]:
    """{transaction_id: model_version} of the logged card predictions whose id starts `prefix`."""
    t = card_predictions.c
    engine = make_engine(database)
    try:
        with engine.connect() as conn:
            query = sa.select(t.transaction_id, t.model_version).where(
                t.transaction_id.startswith(prefix)
            )
            return {tid: version for tid, version in conn.execute(query)}
    finally:
        engine.dispose()


def until_logged(database: str, prefix: str, count: int) -> dict[str, str]:
    """`logged` once it holds `count` rows (each worker's writer flushes every 0.2 s)."""
    deadline = time.monotonic() + LOG_TIMEOUT_S
    while len(rows := logged(database, prefix)) < count:
        assert time.monotonic() < deadline, f"{len(rows)} of {count} {prefix}* rows logged"
        time.sleep(0.1)
    return rows


def test_the_one_address_is_answered_by_both_replicas(deployment: Deployment) -> None:
    fleet = deployment.fleet
    answered: dict[int, int] = {}
    # Fresh connections until each replica has answered a few (64 all on one: odds of 2**-63).
    for _ in range(64):
        with httpx.Client(base_url=fleet.url, timeout=30) as client:
            response = client.get("/model")
            assert response.status_code == 200, response.text
            replica = fleet.worker_of(response).replica  # a worker of the fleet, no one else
        answered[replica] = answered.get(replica, 0) + 1
        if len(answered) == 2 and min(answered.values()) >= 3:
            break
    assert sorted(answered) == [0, 1] and min(answered.values()) >= 3, answered
    for log in fleet.logs:  # each replica's own access log has its share
        assert '"GET /model HTTP/1.1" 200' in log.read_text(errors="replace")


CUSTOMER, TERMINAL = "c-replicas", "t-replicas"
FLUSH_INTERVAL_S = 1.0
DELAY_H = DEFAULT.delay_days * 24.0
SCORE = "/transactions/score?features=true"


def one_process_features(state: InProcessState, record: dict[str, Any]) -> dict[str, float]:
    """What one process holding the whole state answers for `record`, by feature name."""
    tx = CardTransaction(
        record["transaction_id"],
        tx_us(record["tx_datetime"]),
        record["customer_id"],
        record["terminal_id"],
        record["amount"],
    )
    return dict(zip(DEFAULT.feature_names, state.score(tx).features, strict=True))


def test_one_card_state_one_log_and_labels_across_both_replicas(deployment: Deployment) -> None:
    fleet, database = deployment.fleet, deployment.database
    # One process would have loaded the bundle's history, then seen these in this order.
    one_process = InProcessState(DEFAULT)
    one_process.load_history(card_history(0))

    def score(replica: int, record: dict[str, Any]) -> dict[str, Any]:
        response = fleet.post_on(replica, SCORE, record)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        assert body["features"] == one_process_features(one_process, record)  # to the bit
        return body

    records = [
        card_transaction(f"state-{i}", at(i), customer_id=CUSTOMER, terminal_id=TERMINAL,
                         amount=10.0 + 7.5 * i)
        for i in range(8)
    ]  # fmt: skip
    answers = []
    for i, record in enumerate(records):
        body = score(i % 2, record)  # each on a fresh connection, the replicas in turn
        # Every earlier one counted, whichever replica scored it.
        assert body["features"]["CUSTOMER_ID_NB_TX_1DAY_WINDOW"] == i + 1
        answers.append(body)
    # Sent again through the replica that did not score it: its first answer, not counted again.
    assert score(0, records[3]) == answers[3]
    # Every scored transaction in the one log, once, under the version that scored it.
    versions = {body["transaction_id"]: body["model_version"] for body in answers}
    assert until_logged(database, "state-", len(records)) == versions

    # A label sent to one replica is seen by the other: stored once, the same, and final.
    first = fleet.post_on(1, "/feedback", {"transaction_id": "state-0", "label": "fraud"})
    assert first.status_code == 201, first.text  # state-0 was scored by replica 0
    repeat = fleet.post_on(0, "/feedback", {"transaction_id": "state-0", "label": "fraud"})
    assert repeat.status_code == 200, repeat.text
    assert repeat.json()["created"] is False
    assert repeat.json()["labelled_at"] == first.json()["labelled_at"]
    other = fleet.post_on(0, "/feedback", {"transaction_id": "state-0", "label": "legit"})
    assert other.status_code == 409, other.text
    second = fleet.post_on(0, "/feedback", {"transaction_id": "state-1", "label": "fraud"})
    assert second.status_code == 201, second.text  # state-1 was scored by replica 1
    one_process.label("state-0", True)
    one_process.label("state-1", True)

    # Both labels count in the terminal's risk on either replica, a label delay later.
    late = {"customer_id": "c-replicas-late", "terminal_id": TERMINAL}
    after = [
        score(0, card_transaction("state-late-0", at(DELAY_H + 2), **late)),
        score(1, card_transaction("state-late-1", at(DELAY_H + 5), **late)),
    ]
    # (t - 8 days, t - 7 days]: state-0..2, then state-0..5; state-0 and state-1 are frauds.
    assert after[0]["features"]["TERMINAL_ID_NB_TX_1DAY_WINDOW"] == 3
    assert after[0]["features"]["TERMINAL_ID_RISK_1DAY_WINDOW"] == pytest.approx(2 / 3, abs=1e-12)
    assert after[1]["features"]["TERMINAL_ID_NB_TX_1DAY_WINDOW"] == 6
    assert after[1]["features"]["TERMINAL_ID_RISK_1DAY_WINDOW"] == pytest.approx(1 / 3, abs=1e-12)
    assert until_logged(database, "state-", len(records) + 2).keys() == {
        *versions,
        "state-late-0",
        "state-late-1",
    }
    engine = make_engine(database)
    try:
        with engine.connect() as conn:
            f = card_feedback.c
            query = sa.select(f.transaction_id, f.label).where(
                f.transaction_id.startswith("state-")
            )
            labels = {tid: label for tid, label in conn.execute(query)}
            events = conn.scalar(
                sa.select(sa.func.count())
                .select_from(label_events)
                .where(label_events.c.prediction_id.startswith("state-"))
            )
    finally:
        engine.dispose()
    assert labels == {"state-0": "fraud", "state-1": "fraud"}
    assert events == 2  # the repeat and the refused label wrote nothing


@dataclass(frozen=True)
class Answer:
    started: float
    ended: float
    status: int | None
    transaction_id: str
    version: str | None
    threshold: float | None
    error: str


CLIENT_THREADS = 2
#: After the state test's transactions, within the 30 days a late one may be behind.
SWAP_START_H = DELAY_H + 48


def hammer(url: str, name: str, stop: threading.Event, out: list[Answer]) -> None:
    """Score new card transactions until `stop`, each on a fresh connection (every worker's)."""
    with httpx.Client(base_url=url, timeout=30, headers={"Connection": "close"}) as client:
        n = 0
        while not stop.is_set():
            tid = f"swap-{name}-{n}"
            record = card_transaction(
                tid,
                at(SWAP_START_H + n / 3600),
                customer_id=f"c-swap-{n % 7}",
                terminal_id="t-swap",
            )
            started = time.monotonic()
            body: dict[str, Any] = {}
            try:
                response = client.post("/transactions/score", json=record)
            except httpx.HTTPError as exc:
                status, error = None, repr(exc)
            else:
                status, error = response.status_code, response.text
                if status == 200:
                    body, error = response.json(), ""
            version, threshold = body.get("model_version"), body.get("threshold")
            out.append(Answer(started, time.monotonic(), status, tid, version, threshold, error))
            n += 1


def test_a_label_sent_at_once_to_the_other_replica_is_stored(deployment: Deployment) -> None:
    fleet, database = deployment.fleet, deployment.database
    record = card_transaction(
        "race-0", at(DELAY_H + 30), customer_id="c-race", terminal_id=TERMINAL
    )
    scored = fleet.post_on(0, SCORE, record)
    assert scored.status_code == 200, scored.text
    # Replica 0 writes the row within a flush interval (1 s); the label reaches replica 1 now.
    label = fleet.post_on(1, "/feedback", {"transaction_id": "race-0", "label": "legit"})
    assert label.status_code == 201, label.text
    assert until_logged(database, "race-", 1) == {"race-0": scored.json()["model_version"]}
    # An id nobody scored is still a 404, after the second look.
    unknown = fleet.post_on(1, "/feedback", {"transaction_id": "race-none", "label": "legit"})
    assert unknown.status_code == 404, unknown.text


def test_both_replicas_swap_to_a_new_model_together_without_a_failed_request(
    deployment: Deployment, make_card_model: Callable[..., FraudModel]
) -> None:
    fleet = deployment.fleet
    stop = threading.Event()
    answers: list[list[Answer]] = [[] for _ in range(CLIENT_THREADS)]
    threads = [
        threading.Thread(target=hammer, args=(fleet.url, str(i), stop, out), daemon=True)
        for i, out in enumerate(answers)
    ]
    for thread in threads:
        thread.start()

    def answered() -> int:
        return sum(len(out) for out in answers)

    try:
        wait_until("answers from V1", lambda: answered() >= 20, 60, interval_s=0.05)
        published = time.monotonic()
        # The same fit under a new version and another threshold: its answers tell it apart.
        publish(deployment.store, make_card_model(seed=0, threshold=SWAP_THRESHOLD), V2)
        fleet.until_every_worker(
            "/model", lambda r: r.status_code == 200 and r.json()["model_version"] == V2,
            "every worker of both replicas on V2",
        )  # fmt: skip
        swapped, before = time.monotonic(), answered()
        wait_until("answers after the swap", lambda: answered() >= before + 20, 60, interval_s=0.05)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)

    everything = [answer for out in answers for answer in out]
    failed = [a for a in everything if a.status != 200]
    assert not failed, f"{len(failed)} of {len(everything)} failed, e.g. {failed[:3]}"
    assert {a.version for a in everything} == {V1, V2}
    assert {(a.version, a.threshold) for a in everything} == {
        (V1, CARD_THRESHOLD),
        (V2, SWAP_THRESHOLD),
    }
    assert not [a for a in everything if a.version == V2 and a.ended < published]
    after_swap = [a for a in everything if a.started > swapped]
    assert len(after_swap) >= 10, f"only {len(after_swap)} answers after the swap"
    stale = [a for a in after_swap if a.version != V2]
    assert not stale, f"{len(stale)} answers from {V1} after every worker served {V2}: {stale[:3]}"
    # Each worker of each replica loaded V2 once, straight from V1; the load went to both.
    for log in fleet.logs:
        text = log.read_text(errors="replace")
        assert text.count(f"loaded model: from version {V1} to version {V2} ") == WORKERS
        assert '"POST /transactions/score HTTP/1.1" 200' in text
    # Every answer is in the one log, under the version that gave it.
    expected = {a.transaction_id: a.version for a in everything}
    assert until_logged(deployment.database, "swap-", len(everything)) == expected
