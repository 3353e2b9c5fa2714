"""The online state equals the offline features: both backends, the same tests.

Replays of hypothesis frames (ties, window edges, string-ordered ids) through `score`, with labels
arriving at once through `label()` or in bulk through `load_history`; re-sends; late arrivals;
the label delay; eviction; batches. The offline side is `compute_features` (and the oracle).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fraud_core.cards.definition import DEFAULT, US_PER_DAY, FeatureDefinition
from fraud_core.cards.state import CardTransaction, TooLate, iso
from tests.fraud_core.cards.oracle import oracle_features
from tests.fraud_core.cards.state_support import (
    KINDS,
    assert_same_features,
    fresh_state,
    offline,
    redis_problem,
    replay,
    row_features,
    transactions,
)
from tests.fraud_core.cards.strategies import HANDBOOK_START_US, canonical_frame, transaction_frames

# Small frames, a fresh state per example (a new Redis prefix, deleted after): ~1 s per test.
EXAMPLES = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

OTHER = FeatureDefinition(
    customer_windows_days=(2, 5), terminal_windows_days=(3,), delay_days=1, night_end_hour=0
)
HOUR = 3_600 * 1_000_000
T0 = HANDBOOK_START_US + 100 * US_PER_DAY


def tx(tid: str, t: int, customer: str = "C1", terminal: str = "T1", amount: float = 10.0):
    return CardTransaction(tid, t, customer, terminal, amount)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("definition", [DEFAULT, OTHER], ids=["default", "other"])
@EXAMPLES
@given(frame=transaction_frames())
def test_replay_in_time_order_equals_offline(
    kind: str, definition: FeatureDefinition, frame: pd.DataFrame
) -> None:
    with fresh_state(kind, definition) as state:
        got = replay(state, frame)
    assert_same_features(got, offline(frame, definition))
    assert_same_features(got, oracle_features(frame, definition))


@pytest.mark.parametrize("kind", KINDS)
@EXAMPLES
@given(frame=transaction_frames(), data=st.data())
def test_history_then_stream_equals_offline(kind: str, frame: pd.DataFrame, data: st.DataObject):
    k = data.draw(st.integers(0, len(frame)), label="rows loaded as history")
    with fresh_state(kind) as state:
        added = state.load_history(frame.iloc[:k])
        assert added <= k
        assert state.load_history(frame.iloc[:k]) == 0  # ids already there are skipped
        got = replay(state, frame.iloc[k:])
    assert_same_features(got, offline(frame).iloc[k:])


@pytest.mark.parametrize("kind", KINDS)
@EXAMPLES
@given(frame=transaction_frames(), data=st.data())
def test_resent_transactions_get_their_first_answer_and_count_once(
    kind: str, frame: pd.DataFrame, data: st.DataObject
) -> None:
    n = len(frame)
    resends = data.draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1))))
    rows = transactions(frame)
    first: dict[str, tuple[float, ...]] = {}
    with fresh_state(kind) as state:
        for i, (row, label) in enumerate(zip(rows, frame["is_fraud"], strict=True)):
            first[row.transaction_id] = state.score(row).features
            state.label(row.transaction_id, bool(label))
            for j, at in resends:
                if at != i or j > i:
                    continue
                old = rows[j]
                # Only the id matters: the other fields of a re-send are not read.
                again = CardTransaction(old.transaction_id, old.tx_us, "other", "other", 1.5)
                newest = state.newest_us()
                assert newest is not None
                if old.tx_us <= newest - state.definition.retention_us:
                    with pytest.raises(TooLate):  # gone: as an unknown, far too late one
                        state.score(again)
                    continue
                scored = state.score(again)
                assert not scored.new
                assert scored.features == first[old.transaction_id]
        stats = state.stats()
    assert stats["events"] <= n
    got = pd.DataFrame([first[r.transaction_id] for r in rows], columns=offline(frame).columns)
    assert_same_features(got, offline(frame))


@pytest.mark.parametrize("kind", KINDS)
@EXAMPLES
@given(frame=transaction_frames(max_days=29), data=st.data())
def test_late_arrivals_within_the_lateness(kind: str, frame: pd.DataFrame, data: st.DataObject):
    # 29 days of span: every arrival order is within the 30 days of lateness.
    order = data.draw(st.permutations(range(len(frame))), label="arrival order")
    expected_rows = offline(frame)
    rows = transactions(frame)
    probe_offset = data.draw(st.sampled_from([0, 1, HOUR, 7 * US_PER_DAY, 40 * US_PER_DAY]))
    probe_row = data.draw(st.integers(0, len(frame) - 1))
    probe = CardTransaction(
        "probe",
        int(frame["tx_us"].max()) + probe_offset,
        rows[probe_row].customer_id,
        rows[probe_row].terminal_id,
        42.0,
    )
    arrived: set[int] = set()
    with fresh_state(kind) as state:
        for pos in order:
            scored = state.score(rows[pos])
            state.label(rows[pos].transaction_id, bool(frame["is_fraud"].iloc[pos]))
            # (a) in (time, id) order, rows before `pos` are those with a smaller position
            if arrived.issuperset(range(pos)):
                assert_same_features(
                    row_features(state, scored.features), expected_rows.iloc[[pos]]
                )
            arrived.add(pos)
        # (b) whatever the arrival order, the state is the set's: a probe sees all of it
        got = state.score(probe).features
    with_probe = canonical_frame(
        [*frame["transaction_id"], probe.transaction_id],
        [*frame["tx_us"], probe.tx_us],
        [*frame["customer_id"], probe.customer_id],
        [*frame["terminal_id"], probe.terminal_id],
        [*frame["amount"], probe.amount],
        [*frame["is_fraud"], 0],
    )
    expected = offline(with_probe)
    at = with_probe.index[with_probe["transaction_id"] == "probe"]
    assert_same_features(pd.DataFrame([got], columns=expected.columns), expected.loc[at])


@pytest.mark.parametrize("kind", KINDS)
def test_too_late_beyond_the_lateness_adds_nothing(kind: str) -> None:
    with fresh_state(kind) as state:
        state.score(tx("a", T0))
        limit = T0 - DEFAULT.max_lateness_us
        assert state.score(tx("b", limit)).new  # exactly at the limit: still scored
        with pytest.raises(TooLate) as info:
            state.score(tx("c", limit - 1))
        assert "'c'" in str(info.value) and iso(limit - 1) in str(info.value)
        assert iso(T0) in str(info.value) and "30 days" in str(info.value)
        assert (info.value.newest_us, info.value.tx_us) == (T0, limit - 1)
        assert state.stats()["events"] == 2
        assert not state.label("c", True)


@pytest.mark.parametrize("kind", KINDS)
def test_a_label_counts_in_terminal_risk_only_after_the_delay(kind: str) -> None:
    names = DEFAULT.feature_names
    count, risk = (
        names.index("TERMINAL_ID_NB_TX_1DAY_WINDOW"),
        names.index("TERMINAL_ID_RISK_1DAY_WINDOW"),
    )
    delay = DEFAULT.delay_days * US_PER_DAY
    with fresh_state(kind) as state:
        state.score(tx("fraud", T0, customer="victim"))
        assert state.label("fraud", True)
        assert not state.label("unknown", True)
        early = state.score(tx("early", T0 + delay - 1, customer="other")).features
        assert (early[count], early[risk]) == (0.0, 0.0)  # the label could not be known yet
        known = state.score(tx("known", T0 + delay, customer="other2")).features
        assert (known[count], known[risk]) == (1.0, 1.0)
        assert state.label("fraud", False)  # a corrected label
        corrected = state.score(tx("later", T0 + delay + 1, customer="other3")).features
        assert (corrected[count], corrected[risk]) == (1.0, 0.0)
        assert state.score(tx("known", 0)).features == known  # a re-send keeps its answer


@pytest.mark.parametrize("kind", KINDS)
def test_eviction_after_the_retention(kind: str) -> None:
    old = [
        tx("o1", T0, "A", "TA"),
        tx("o2", T0 + HOUR, "B", "TB"),
        tx("o3", T0 + 2 * HOUR, "A", "TB"),
    ]
    later = T0 + 2 * HOUR + DEFAULT.retention_us + 1
    new = [
        tx("n1", later, "C", "TC"),
        tx("n2", later + HOUR, "A", "TC"),
        tx("n3", later + HOUR, "C", "TA"),
    ]
    frame = canonical_frame(
        [t.transaction_id for t in old + new],
        [t.tx_us for t in old + new],
        [t.customer_id for t in old + new],
        [t.terminal_id for t in old + new],
        [t.amount for t in old + new],
        [1, 0, 1, 0, 0, 0],
    )
    with fresh_state(kind) as state:
        got = replay(state, frame)
        stats = state.stats()
        assert not state.label("o1", False)  # gone
        with pytest.raises(TooLate):
            state.score(old[0])
    assert_same_features(got, offline(frame))
    # Only the new events remain: A, TA and TC came back; B and TB are gone.
    assert (stats["customers"], stats["terminals"]) == (2, 2)
    assert (stats["events"], stats["labels"]) == (3, 3)


@pytest.mark.parametrize("kind", KINDS)
@EXAMPLES
@given(frame=transaction_frames())
def test_score_many_is_score_in_a_loop(kind: str, frame: pd.DataFrame) -> None:
    rows = transactions(frame)
    with fresh_state(kind) as batched, fresh_state(kind) as looped:
        assert batched.score_many(rows) == [looped.score(row) for row in rows]
        newest = batched.newest_us()
        assert newest is not None
        kept = [row for row in rows[:3] if row.tx_us > newest - DEFAULT.retention_us]
        assert batched.score_many(kept) == [looped.score(row) for row in kept]  # re-sends


@pytest.mark.parametrize("kind", KINDS)
def test_score_many_stops_at_a_too_late_transaction(kind: str) -> None:
    late = T0 - DEFAULT.max_lateness_us - 1
    with fresh_state(kind) as state:
        with pytest.raises(TooLate, match="'late'") as info:
            state.score_many([tx("a", T0), tx("late", late), tx("b", T0 + 1)])
        # What the batch added before the late one comes with the error, as `score` answered it.
        assert [s.new for s in info.value.scored] == [True]
        assert info.value.scored[0].features == state.score(tx("a", T0)).features
        assert state.stats()["events"] == 1
        assert state.score(tx("b", T0 + 1)).new  # not added by the batch


@pytest.mark.skipif(redis_problem() is not None, reason=str(redis_problem()))
@EXAMPLES
@given(frame=transaction_frames())
def test_the_backends_agree_to_the_bit(frame: pd.DataFrame) -> None:
    with fresh_state("memory") as memory, fresh_state("redis") as shared:
        a, b = replay(memory, frame), replay(shared, frame)
    np.testing.assert_array_equal(a.to_numpy(), b.to_numpy())
