"""`make stack`'s Redis: checked before the API starts, its keys cleared with the databases."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import redis

from servicectl.process import free_port
from servicectl.stack.databases import check_feature_state, clear_feature_state
from servicectl.stack.errors import StackError
from servicectl.stack.services import SERVICES
from servicectl.stack.state import Stack

REDIS_URL = "redis://127.0.0.1:6379/0"


def _stack(redis_url: str, prefix: str = "fraud_") -> Stack:
    return Stack(
        root=Path("/nowhere"),
        postgres_url="postgresql://postgres@127.0.0.1:5432",
        db_prefix=prefix,
        ports={s.name: s.default_port for s in SERVICES if s.default_port},
        secrets={"jwt": "j", "api_secret": "a", "airflow_password": "p"},
        redis_url=redis_url,
    )


def test_an_unreachable_redis_stops_the_stack_with_what_to_do() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    with pytest.raises(StackError) as caught:
        check_feature_state(_stack(url))
    assert url in str(caught.value)
    assert "STACK_REDIS_URL=memory" in str(caught.value)


def test_memory_needs_no_redis() -> None:
    check_feature_state(_stack("memory"))
    assert clear_feature_state(_stack("memory")) == 0


def test_the_api_gets_the_stacks_redis_under_its_own_prefix() -> None:
    env = _stack(REDIS_URL, prefix="team_").env()
    assert env["FRAUD_FEATURE_STATE"] == REDIS_URL
    assert env["FRAUD_FEATURE_STATE_PREFIX"] == "team_state"


def test_clearing_deletes_only_the_stacks_keys() -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}_"
    stack = _stack(REDIS_URL, prefix=prefix)
    check_feature_state(stack)
    state_prefix = stack.env()["FRAUD_FEATURE_STATE_PREFIX"]
    client = redis.Redis.from_url(REDIS_URL)
    other = f"{{{prefix}other}}:keep"
    try:
        client.set(f"{{{state_prefix}}}:c:1", "x")
        client.set(f"{state_prefix}:meta", "y")
        client.set(other, "z")
        assert clear_feature_state(stack) == 2
        assert client.exists(f"{{{state_prefix}}}:c:1", f"{state_prefix}:meta") == 0
        assert client.get(other) == b"z"
    finally:
        client.delete(other, f"{{{state_prefix}}}:c:1", f"{state_prefix}:meta")
        client.close()
