"""The in-process state: snapshots, threads, history loading, `open_state`, the shared rules."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fraud_core.cards.definition import DEFAULT, US_PER_DAY, FeatureDefinition
from fraud_core.cards.memory_state import SNAPSHOT_KEY
from fraud_core.cards.redis_state import RedisState
from fraud_core.cards.state import (
    CardTransaction,
    InProcessState,
    TooLate,
    WindowCodec,
    features_of,
    open_state,
    summarise,
    window_sums,
)
from tests.fraud_core.cards.state_support import (
    REDIS_URL,
    assert_same_features,
    need_redis,
    new_prefix,
    offline,
    replay,
    transactions,
)
from tests.fraud_core.cards.strategies import HANDBOOK_START_US, canonical_frame, transaction_frames

EXAMPLES = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
T0 = HANDBOOK_START_US + 100 * US_PER_DAY


@EXAMPLES
@given(frame=transaction_frames(), data=st.data())
def test_snapshot_and_restore_give_the_same_later_features(
    tmp_path_factory: pytest.TempPathFactory, frame, data: st.DataObject
) -> None:
    k = data.draw(st.integers(0, len(frame)), label="rows before the snapshot")
    path = tmp_path_factory.mktemp("snap") / "state.parquet"
    state = InProcessState(DEFAULT)
    before = replay(state, frame.iloc[:k])
    state.load_history(frame.iloc[:0], marker="model-1")
    state.snapshot(path)
    assert [p.name for p in path.parent.iterdir()] == ["state.parquet"]  # no temporary left
    restored = InProcessState.restore(path, DEFAULT)
    assert restored.stats()["events"] == state.stats()["events"]
    assert restored.stats()["labels"] == state.stats()["labels"]
    assert restored.newest_us() == state.newest_us()
    assert restored.load_history(frame, marker="model-1") == 0  # the marker survived
    # Re-sends after the restart keep their first answers (those not gone yet).
    newest = restored.newest_us()
    for row, features in zip(transactions(frame.iloc[:k]), before.to_numpy(), strict=True):
        assert newest is not None
        if row.tx_us <= newest - DEFAULT.retention_us:
            with pytest.raises(TooLate):
                restored.score(row)
            continue
        scored = restored.score(row)
        assert not scored.new
        assert scored.features == tuple(features)
    after = replay(restored, frame.iloc[k:])
    assert_same_features(after, replay(state, frame.iloc[k:]))
    assert_same_features(after, offline(frame).iloc[k:])


def test_a_snapshot_is_parquet_and_refuses_another_definition(tmp_path: Path) -> None:
    state = InProcessState(DEFAULT)
    state.score(CardTransaction("a", T0, "C", "T", 5.0))
    state.snapshot(tmp_path / "s.parquet")
    table = pq.read_table(tmp_path / "s.parquet")  # plain Parquet: no pickle anywhere
    assert SNAPSHOT_KEY in (table.schema.metadata or {})
    other = FeatureDefinition(customer_windows_days=(2,), terminal_windows_days=(2,))
    with pytest.raises(ValueError, match="another feature definition"):
        InProcessState.restore(tmp_path / "s.parquet", other)
    pq.write_table(table.replace_schema_metadata({}), tmp_path / "plain.parquet")
    with pytest.raises(ValueError, match="not a feature-state snapshot"):
        InProcessState.restore(tmp_path / "plain.parquet", DEFAULT)


def test_two_threads_scoring_one_card_both_count() -> None:
    state = InProcessState(DEFAULT)
    n = 2_000
    rows = [CardTransaction(f"tx{i}", T0 + i * 1_000_000, "card", "T", 1.0) for i in range(n)]
    barrier = threading.Barrier(2)

    def run(part: list[CardTransaction]) -> None:
        barrier.wait()
        for row in part:
            state.score(row)

    threads = [threading.Thread(target=run, args=(rows[i::2],)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    probe = state.score(CardTransaction("probe", T0 + n * 1_000_000, "card", "T", 1.0))
    assert probe.features[DEFAULT.feature_names.index("CUSTOMER_ID_NB_TX_1DAY_WINDOW")] == n + 1
    assert state.stats()["events"] == n + 1


def test_load_history_with_a_marker_loads_once_and_checks_its_columns() -> None:
    frame = canonical_frame(
        [str(i) for i in range(10)],
        [T0 + i * 3_600_000_000 for i in range(10)],
        [f"C{i % 3}" for i in range(10)],
        [f"T{i % 2}" for i in range(10)],
        [float(i) for i in range(10)],
        [i % 2 for i in range(10)],
    )
    state = InProcessState(DEFAULT)
    assert state.load_history(frame, marker="m") == 10
    assert state.load_history(frame.iloc[:0], marker="m") == 0
    assert state.load_history(frame, marker="other") == 0  # the same ids: none added again
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['is_fraud'\]"):
        state.load_history(frame.drop(columns="is_fraud"))
    bad = frame.assign(is_fraud=2)
    with pytest.raises(ValueError, match="values other than"):
        InProcessState(DEFAULT).load_history(bad)


def test_stats_count_keys_events_labels_and_memory() -> None:
    state = InProcessState(DEFAULT)
    empty = state.stats()["memory_bytes"]
    for i in range(100):
        state.score(CardTransaction(f"t{i}", T0 + i, f"C{i % 7}", f"T{i % 3}", 2.5))
    state.label("t1", True)
    stats = state.stats()
    assert (stats["customers"], stats["terminals"], stats["events"], stats["labels"]) == (
        7,
        3,
        100,
        1,
    )
    assert stats["memory_bytes"] > empty + 100 * 100  # at least ~100 bytes an event


def test_open_state_picks_the_backend() -> None:
    for url in (None, "", "memory"):
        assert isinstance(open_state(url, DEFAULT), InProcessState)
    with pytest.raises(ValueError, match="unknown feature state 'postgres://x'"):
        open_state("postgres://x", DEFAULT)
    need_redis()
    state = open_state(REDIS_URL, DEFAULT, prefix=new_prefix())
    try:
        assert isinstance(state, RedisState)
    finally:
        state.clear()  # type: ignore[attr-defined]
        state.close()


@given(amounts=st.lists(st.floats(0, 1e6), min_size=1, max_size=50), data=st.data())
@settings(max_examples=100, deadline=None)
def test_windows_survive_the_codec(amounts: list[float], data: st.DataObject) -> None:
    counts = data.draw(st.lists(st.integers(1, len(amounts)), min_size=3, max_size=3))
    terminal = data.draw(st.lists(st.integers(0, 10), min_size=3, max_size=3))
    frauds = [data.draw(st.integers(0, c)) for c in terminal]
    w = summarise(
        T0, amounts[-1], counts, window_sums(amounts, 0, len(amounts), counts), terminal, frauds
    )
    codec = WindowCodec(DEFAULT)
    assert codec.unpack(codec.pack(w)) == w
    assert codec.features(codec.pack(w)) == features_of(w, DEFAULT.night_end_hour)
    assert all(np.isfinite(w.customer_means))
    # The means are those of the last `count` amounts.
    for count, mean in zip(counts, w.customer_means, strict=True):
        assert mean == pytest.approx(sum(amounts[len(amounts) - count :]) / count, rel=1e-12)
