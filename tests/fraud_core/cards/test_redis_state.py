"""The Redis state on the real server: concurrency, restarts, layout, one script call per score."""

from __future__ import annotations

import multiprocessing
import threading
from typing import Any

import pandas as pd
import pytest
import redis

from fraud_core.cards.definition import DEFAULT, US_PER_DAY, FeatureDefinition
from fraud_core.cards.redis_state import RedisState
from fraud_core.cards.state import CardTransaction
from tests.fraud_core.cards.state_support import (
    REDIS_URL,
    assert_same_features,
    new_prefix,
    offline,
    redis_problem,
    replay,
    transactions,
)
from tests.fraud_core.cards.strategies import HANDBOOK_START_US, canonical_frame

pytestmark = pytest.mark.skipif(redis_problem() is not None, reason=str(redis_problem()))

T0 = HANDBOOK_START_US + 100 * US_PER_DAY
SECOND = 1_000_000


@pytest.fixture
def prefix() -> Any:
    """A prefix of the test's own; every key under it is deleted after."""
    name = new_prefix()
    yield name
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{{{name}}}:*"))
    if keys:
        client.unlink(*keys)
    client.close()


def stream(n: int, customers: int = 5, terminals: int = 4) -> pd.DataFrame:
    """n labelled transactions, an hour apart on average, ties included."""
    return canonical_frame(
        [f"id{i:05d}" for i in range(n)],
        [T0 + (i // 2) * 3_600 * SECOND for i in range(n)],
        [f"C{(i * 7) % customers}" for i in range(n)],
        [f"T{(i * 3) % terminals}" for i in range(n)],
        [round(1.0 + (i * 37 % 1000) / 10, 2) for i in range(n)],
        [1 if i % 9 == 0 else 0 for i in range(n)],
    )


def _score_part(prefix: str, rows: list[CardTransaction], barrier: Any, out: Any) -> None:
    state = RedisState.from_url(REDIS_URL, DEFAULT, prefix=prefix)
    barrier.wait()
    out.put(sum(state.score(row).new for row in rows))
    state.close()


def test_two_processes_scoring_one_card_both_count(prefix: str) -> None:
    n = 600
    rows = [CardTransaction(f"tx{i}", T0 + i * SECOND, "card", f"T{i % 3}", 1.0) for i in range(n)]
    ctx = multiprocessing.get_context("fork")
    barrier, out = ctx.Barrier(2), ctx.Queue()
    workers = [
        ctx.Process(target=_score_part, args=(prefix, rows[i::2], barrier, out)) for i in range(2)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    assert out.get(timeout=5) + out.get(timeout=5) == n
    state = RedisState.from_url(REDIS_URL, DEFAULT, prefix=prefix)
    probe = state.score(CardTransaction("probe", T0 + n * SECOND, "card", "T0", 1.0))
    assert probe.features[DEFAULT.feature_names.index("CUSTOMER_ID_NB_TX_1DAY_WINDOW")] == n + 1
    assert state.stats()["events"] == n + 1
    state.close()


def test_the_state_survives_a_restart(prefix: str) -> None:
    frame = stream(200)
    first = RedisState.from_url(REDIS_URL, DEFAULT, prefix=prefix)
    before = replay(first, frame.iloc[:120])
    first.close()
    client = redis.Redis.from_url(REDIS_URL)
    assert client.hlen(f"{{{prefix}}}:first") == 120
    # A second object on the same prefix: a restarted API, or another replica.
    second = RedisState.from_url(REDIS_URL, DEFAULT, prefix=prefix)
    assert second.newest_us() == int(frame["tx_us"].iloc[119])
    after = replay(second, frame.iloc[120:160])
    for row, values in zip(transactions(frame.iloc[120:160]), after.to_numpy(), strict=True):
        assert second.score(row).features == tuple(values)
    # One that dies without close() loses nothing: the state is all in Redis.
    third = RedisState.from_url(REDIS_URL, DEFAULT, prefix=prefix)
    answers = pd.concat([before, after]).to_numpy()
    for row, values in zip(transactions(frame.iloc[:160]), answers, strict=True):
        scored = third.score(row)
        assert not scored.new and scored.features == tuple(values)
    rest = replay(third, frame.iloc[160:])
    got = pd.concat([before, after, rest])
    assert_same_features(got, offline(frame))
    third.close()
    client.close()


def test_another_definition_on_the_same_prefix_is_refused(prefix: str) -> None:
    RedisState.from_url(REDIS_URL, DEFAULT, prefix=prefix).close()
    other = FeatureDefinition(customer_windows_days=(2,), terminal_windows_days=(2,))
    with pytest.raises(ValueError, match="another feature definition"):
        RedisState.from_url(REDIS_URL, other, prefix=prefix)
    with pytest.raises(ValueError, match="bad Redis key prefix"):
        RedisState.from_url(REDIS_URL, DEFAULT, prefix="a{b}")


def test_replicas_starting_at_once_load_a_history_once(prefix: str) -> None:
    frame = stream(3_000)
    replicas = [RedisState.from_url(REDIS_URL, DEFAULT, prefix=prefix) for _ in range(4)]
    added: list[int] = []
    barrier = threading.Barrier(len(replicas))

    def start(state: RedisState) -> None:
        barrier.wait()
        added.append(state.load_history(frame, marker="model-v1"))

    threads = [threading.Thread(target=start, args=(state,)) for state in replicas]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(added) == [0, 0, 0, len(frame)]
    stats = replicas[0].stats()
    assert (stats["events"], stats["labels"]) == (len(frame), len(frame))
    assert stats["customers"] == 5 and stats["terminals"] == 4
    assert redis.Redis.from_url(REDIS_URL).get(f"{{{prefix}}}:history:model-v1") == b"done"
    # The loaded history is what later transactions see, as offline.
    later = stream(3_100).iloc[3_000:]
    assert_same_features(replay(replicas[1], later), offline(stream(3_100)).iloc[3_000:])
    for state in replicas:
        state.close()


class CountingRedis(redis.Redis):
    """The real client, counting the commands it sends."""

    sent: list[str]

    def execute_command(self, *args: Any, **options: Any) -> Any:
        self.sent.append(str(args[0]))
        return super().execute_command(*args, **options)


def test_one_script_call_per_score_and_the_key_layout(prefix: str) -> None:
    client = CountingRedis(connection_pool=redis.ConnectionPool.from_url(REDIS_URL))
    client.sent = []
    state = RedisState(client, DEFAULT, prefix=prefix)
    state.score(CardTransaction("warm", T0, "C", "T", 1.0))  # loads the scripts once
    state.label("warm", False)
    client.sent.clear()
    for i in range(20):
        state.score(CardTransaction(f"x{i}", T0 + i, "C", "T", 2.5))
        state.label(f"x{i}", i % 2 == 0)
    assert client.sent == ["EVALSHA"] * 40  # one call per score, one per label
    keys = {k.decode() for k in client.scan_iter(match=f"{{{prefix}}}:*")}
    assert keys == {
        f"{{{prefix}}}:{name}"
        for name in ("newest", "events", "labelled", "first", "idle:c", "idle:t", "definition")
    } | {f"{{{prefix}}}:c:C", f"{{{prefix}}}:t:T", f"{{{prefix}}}:f:T"}
    members = client.zrange(f"{{{prefix}}}:c:C", 0, 1, withscores=True)
    assert members == [(b"warm\x001.0", float(T0)), (b"x0\x002.5", float(T0))]
    assert client.zcard(f"{{{prefix}}}:f:T") == 10
    assert state.clear() == len(keys)
    assert not list(client.scan_iter(match=f"{{{prefix}}}:*"))
    client.close()
