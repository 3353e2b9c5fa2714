"""What the online-state tests share: a fresh state of either backend, replays, comparisons.

Redis is the real server (`FRAUD_TEST_REDIS_URL`, default 127.0.0.1:6379); each state gets a
prefix of its own and its keys are deleted after. Without a reachable server the Redis cases skip
with the reason.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

import numpy as np
import pandas as pd
import pytest
import redis

from fraud_core.cards.definition import DEFAULT, FeatureDefinition
from fraud_core.cards.features import compute_features
from fraud_core.cards.memory_state import InProcessState
from fraud_core.cards.redis_state import RedisState
from fraud_core.cards.state import CardTransaction, FeatureState

REDIS_URL = os.environ.get("FRAUD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@cache
def redis_problem() -> str | None:
    """Why Redis cannot be used here, or None when it answers."""
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as error:
        return f"no Redis at {REDIS_URL}: {error}"
    return None


def need_redis() -> None:
    if (problem := redis_problem()) is not None:
        pytest.skip(problem)


#: The backends, for `@pytest.mark.parametrize("kind", KINDS)`: Redis skips where none answers.
KINDS = (
    pytest.param("memory", id="memory"),
    pytest.param(
        "redis",
        id="redis",
        marks=pytest.mark.skipif(redis_problem() is not None, reason=str(redis_problem())),
    ),
)


def new_prefix() -> str:
    return f"test-{uuid.uuid4().hex}"


@contextmanager
def fresh_state(
    kind: str, definition: FeatureDefinition = DEFAULT, prefix: str | None = None
) -> Iterator[FeatureState]:
    """An empty state of that backend; a Redis one's keys are all deleted afterwards."""
    if kind == "memory":
        yield InProcessState(definition)
        return
    need_redis()
    state = RedisState.from_url(REDIS_URL, definition, prefix=prefix or new_prefix())
    try:
        yield state
    finally:
        state.clear()
        state.close()


def transaction(row: Any) -> CardTransaction:
    """A frame row (an itertuples tuple) as a transaction to score."""
    return CardTransaction(
        str(row.transaction_id),
        int(row.tx_us),
        str(row.customer_id),
        str(row.terminal_id),
        float(row.amount),
    )


def transactions(frame: pd.DataFrame) -> list[CardTransaction]:
    return [transaction(row) for row in frame.itertuples(index=False)]


def replay(state: FeatureState, frame: pd.DataFrame, *, labels: bool = True) -> pd.DataFrame:
    """Score each row in the frame's order; with `labels`, its label arrives right after."""
    names = list(state.definition.feature_names)
    rows = []
    for row in frame.itertuples(index=False):
        scored = state.score(transaction(row))
        assert scored.new
        if labels:
            assert state.label(str(row.transaction_id), bool(row.is_fraud))
        rows.append(scored.features)
    return pd.DataFrame(
        np.array(rows, dtype=np.float64).reshape(-1, len(names)), columns=names, index=frame.index
    )


def assert_same_features(actual: pd.DataFrame, expected: pd.DataFrame) -> None:
    """Counts and flags exactly equal; means and risks within 1e-9."""
    assert list(actual.columns) == list(expected.columns)
    assert len(actual) == len(expected)
    for name in actual.columns:
        got, want = actual[name].to_numpy(), expected[name].to_numpy()
        if "_AVG_AMOUNT_" in name or "_RISK_" in name:
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-9, err_msg=name)
        else:
            np.testing.assert_array_equal(got, want, err_msg=name)


def offline(frame: pd.DataFrame, definition: FeatureDefinition = DEFAULT) -> pd.DataFrame:
    """The offline path's features of a frame: what a replay must equal."""
    return compute_features(frame, definition)


def row_features(state: FeatureState, values: tuple[float, ...]) -> pd.DataFrame:
    names = list(state.definition.feature_names)
    return pd.DataFrame([values], columns=names)
