"""Rate limits per key (per client address without one): 429 with Retry-After, limits as settings.

In memory (one app, as one worker) and in Redis (two apps on one prefix, as two workers or
replicas, share their counts). Redis is the real server; each test has a prefix of its own and
deletes its keys after.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from api.main import create_app
from fraud_core.api_keys import FEEDBACK, SCORE
from fraud_core.bundle import FraudModel
from fraud_core.store import ModelStore
from tests.api.conftest import (
    bearer,
    default_log_url,
    make_settings,
    metric,
    new_key,
    scrape,
    transaction,
)
from tests.fraud_core.cards.state_support import REDIS_URL, redis_problem

pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
needs_redis = pytest.mark.skipif(redis_problem() is not None, reason=str(redis_problem()))


def app(store: ModelStore, **overrides: Any) -> TestClient:
    return TestClient(create_app(make_settings(store.root, **overrides)))


def assert_limited(response: Any, limit: str, group: str) -> int:
    """The 429 of `group`'s `limit`; its Retry-After in seconds."""
    assert response.status_code == 429, response.text
    retry = response.headers["retry-after"]
    assert retry.isdigit(), retry
    seconds = int(retry)
    assert 1 <= seconds <= 60
    detail = response.json()["detail"]
    assert limit in detail and group in detail and f"retry in {seconds} s" in detail
    return seconds


def test_scoring_is_limited_per_key_and_per_address_without_one(
    store: ModelStore, served_model: FraudModel
) -> None:
    url = default_log_url(store.root)
    first, second = new_key(url, SCORE), new_key(url, SCORE)
    with app(store, FRAUD_API_RATE_LIMIT_SCORE="3/minute") as client:
        for _ in range(3):
            assert (
                client.post("/predict", json=transaction(), headers=bearer(first)).status_code
                == 200
            )
        # The four scoring routes share one count: a batch is one request.
        limited = client.post("/predict/batch", json=[transaction()], headers=bearer(first))
        assert_limited(limited, "3 per 1 minute", "score")
        # Another key, and a caller without one (counted by its address), have counts of their own.
        assert (
            client.post("/predict", json=transaction(), headers=bearer(second)).status_code == 200
        )
        for _ in range(3):
            assert client.post("/predict", json=transaction()).status_code == 200
        anonymous = client.post("/transactions/score", json={})
        assert_limited(anonymous, "3 per 1 minute", "score")
        assert "address:" in anonymous.json()["detail"]
        assert metric(scrape(client), "fraud_api_rate_limited_total", group="score") == 2
        # Health, metrics and the model's card are never limited.
        assert all(client.get("/model").status_code == 200 for _ in range(5))


def test_feedback_is_limited_per_key(store: ModelStore, served_model: FraudModel) -> None:
    url = default_log_url(store.root)
    first, second = new_key(url, FEEDBACK), new_key(url, FEEDBACK)
    body = {"request_id": "never-predicted", "label": "fraud"}
    settings = {"FRAUD_API_RATE_LIMIT_FEEDBACK": "2/minute", "FRAUD_API_RATE_LIMIT_SCORE": "off"}
    with app(store, **settings) as client:
        for _ in range(2):
            assert client.post("/feedback", json=body, headers=bearer(first)).status_code == 404
        limited = client.post("/feedback", json=body, headers=bearer(first))
        assert_limited(limited, "2 per 1 minute", "feedback")
        assert first.split("_")[1] in limited.json()["detail"]
        assert first not in limited.text
        assert client.post("/feedback", json=body, headers=bearer(second)).status_code == 404
        # Scoring is off: any number of requests.
        assert all(
            client.post("/predict", json=transaction()).status_code == 200 for _ in range(20)
        )
        # A request refused for its key is not counted against anyone.
        assert client.post("/feedback", json=body).status_code == 401


def test_several_limits_and_a_short_window(store: ModelStore, served_model: FraudModel) -> None:
    with app(store, FRAUD_API_RATE_LIMIT_SCORE="2/second;100/hour") as client:
        answers = [client.post("/predict", json=transaction()) for _ in range(3)]
        assert [a.status_code for a in answers[:2]] == [200, 200]
        assert assert_limited(answers[2], "2 per 1 second", "score") == 1


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("FRAUD_API_RATE_LIMIT_SCORE", "lots"),
        ("FRAUD_API_RATE_LIMIT_FEEDBACK", "10 per fortnight"),
        ("FRAUD_API_RATE_LIMIT_STORAGE", "memcached://127.0.0.1:11211"),
    ],
)
def test_a_limit_that_cannot_be_read_stops_the_start_naming_the_variable(
    store: ModelStore, variable: str, value: str
) -> None:
    with pytest.raises(ValueError, match=variable), app(store, **{variable: value}):
        pass


@pytest.fixture
def prefix() -> Iterator[str]:
    """A Redis key prefix of this test's own; its keys deleted after."""
    name = f"test-limits-{uuid.uuid4().hex[:12]}"
    yield name
    if redis_problem() is None:
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=f"{name}:*", count=1000))
        if keys:
            client.unlink(*keys)
        client.close()


@needs_redis
def test_counts_in_redis_are_shared_by_workers(
    store: ModelStore, served_model: FraudModel, prefix: str
) -> None:
    key = new_key(default_log_url(store.root), SCORE)
    settings = {
        "FRAUD_API_RATE_LIMIT_SCORE": "3/minute",
        "FRAUD_API_RATE_LIMIT_STORAGE": REDIS_URL,
        "FRAUD_FEATURE_STATE_PREFIX": prefix,
    }
    with app(store, **settings) as one, app(store, **settings) as two:
        assert one.post("/predict", json=transaction(), headers=bearer(key)).status_code == 200
        assert two.post("/predict", json=transaction(), headers=bearer(key)).status_code == 200
        assert one.post("/predict", json=transaction(), headers=bearer(key)).status_code == 200
        assert_limited(
            two.post("/predict", json=transaction(), headers=bearer(key)), "3 per", "score"
        )
    with redis.Redis.from_url(REDIS_URL) as client:
        stored = list(client.scan_iter(match=f"{prefix}:ratelimit*"))
    assert stored  # the counts were in Redis, under the deployment's prefix


@needs_redis
def test_the_feature_states_redis_is_the_default_storage(
    store: ModelStore, served_model: FraudModel, prefix: str
) -> None:
    settings = {
        "FRAUD_API_RATE_LIMIT_SCORE": "1/minute",
        "FRAUD_FEATURE_STATE": REDIS_URL,
        "FRAUD_FEATURE_STATE_PREFIX": prefix,
    }
    with app(store, **settings) as one, app(store, **settings) as two:
        assert one.post("/predict", json=transaction()).status_code == 200
        assert two.post("/predict", json=transaction()).status_code == 429


def test_unreachable_counts_let_requests_through_and_say_so(
    store: ModelStore, served_model: FraudModel, caplog: pytest.LogCaptureFixture
) -> None:
    # Nothing listens on port 1: every count fails at once.
    settings = {
        "FRAUD_API_RATE_LIMIT_SCORE": "1/minute",
        "FRAUD_API_RATE_LIMIT_STORAGE": "redis://127.0.0.1:1/0",
    }
    with app(store, **settings) as client:
        assert all(client.post("/predict", json=transaction()).status_code == 200 for _ in range(3))
        assert metric(scrape(client), "fraud_api_rate_limit_errors_total") == 3
    warnings = [r.getMessage() for r in caplog.records if r.name == "fraud_api.rate_limits"]
    assert len(warnings) == 1 and "unreachable" in warnings[0]
