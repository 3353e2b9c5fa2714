"""The offline behavioural features: equal to the brute-force definition, free of label leaks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fraud_core.cards.definition import (
    DEFAULT,
    LABEL,
    TX_US,
    US_PER_DAY,
    FeatureDefinition,
)
from fraud_core.cards.features import compute_features, feature_matrix, time_order
from tests.fraud_core.cards.oracle import oracle_features
from tests.fraud_core.cards.strategies import (
    HANDBOOK_START_US,
    canonical_frame,
    shuffled,
    transaction_frames,
)

# The oracle is quadratic; frames stay small, so a hundred examples take a second or two.
FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

OTHER = FeatureDefinition(
    customer_windows_days=(2, 5), terminal_windows_days=(3,), delay_days=1, night_end_hour=0
)


def assert_same_features(actual: pd.DataFrame, expected: pd.DataFrame) -> None:
    """Counts and flags exactly equal; means and risks within 1e-9; same index and columns."""
    assert list(actual.columns) == list(expected.columns)
    assert actual.index.equals(expected.index)
    for name in actual.columns:
        got, want = actual[name].to_numpy(), expected[name].to_numpy()
        assert got.dtype == np.float64, name
        if "_AVG_AMOUNT_" in name or "_RISK_" in name:
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-9, err_msg=name)
        else:
            np.testing.assert_array_equal(got, want, err_msg=name)


@pytest.mark.parametrize("method", ["composite", "ranks"])
@pytest.mark.parametrize("definition", [DEFAULT, OTHER], ids=["default", "other"])
@FAST
@given(frame=transaction_frames())
def test_features_equal_the_definition(
    frame: pd.DataFrame, definition: FeatureDefinition, method: str
) -> None:
    got = compute_features(frame, definition, method=method)  # type: ignore[arg-type]
    assert_same_features(got, oracle_features(frame, definition))


@FAST
@given(data=st.data(), frame=transaction_frames())
def test_any_input_order_gives_the_same_features_in_input_order(
    data: st.DataObject, frame: pd.DataFrame
) -> None:
    mixed = data.draw(shuffled(frame))
    got = compute_features(mixed)
    assert_same_features(got, oracle_features(mixed, DEFAULT))
    # The same computation once sorted: exactly the canonical frame's values, id for id.
    by_id = got.set_axis(mixed["transaction_id"].to_numpy()).loc[frame["transaction_id"]]
    np.testing.assert_array_equal(by_id.to_numpy(), compute_features(frame).to_numpy())


def test_a_single_row_sees_itself_and_an_empty_terminal_history() -> None:
    frame = canonical_frame(["a"], [HANDBOOK_START_US + 3_600_000_000], ["C"], ["T"], [42.5], [1])
    row = compute_features(frame).iloc[0]
    assert row["TX_AMOUNT"] == 42.5
    assert row["TX_DURING_WEEKEND"] == 1.0  # 2018-04-01 was a Sunday
    assert row["TX_DURING_NIGHT"] == 1.0  # 01:00 UTC
    for w in DEFAULT.customer_windows_days:
        assert row[f"CUSTOMER_ID_NB_TX_{w}DAY_WINDOW"] == 1.0
        assert row[f"CUSTOMER_ID_AVG_AMOUNT_{w}DAY_WINDOW"] == 42.5
    for w in DEFAULT.terminal_windows_days:
        assert row[f"TERMINAL_ID_NB_TX_{w}DAY_WINDOW"] == 0.0
        assert row[f"TERMINAL_ID_RISK_{w}DAY_WINDOW"] == 0.0


def test_ties_in_time_are_ordered_by_id_as_strings() -> None:
    # "10" < "9" < "a" as strings (not as numbers): each sees the ones before it, not after.
    t = HANDBOOK_START_US
    frame = canonical_frame(["9", "a", "10"], [t, t, t], ["C"] * 3, ["T"] * 3, [1, 2, 4], [0] * 3)
    assert list(frame["transaction_id"]) == ["10", "9", "a"]
    got = compute_features(frame.iloc[[2, 0, 1]])  # any order in
    by_id = got.set_axis(frame["transaction_id"].iloc[[2, 0, 1]])
    assert by_id.loc[["10", "9", "a"], "CUSTOMER_ID_NB_TX_1DAY_WINDOW"].tolist() == [1, 2, 3]
    assert by_id.loc[["10", "9", "a"], "CUSTOMER_ID_AVG_AMOUNT_1DAY_WINDOW"].tolist() == [
        4.0,
        2.5,
        7 / 3,
    ]


def test_time_order_sorts_ties_by_id_and_keeps_times_sorted() -> None:
    t = np.array([5, 3, 5, 3, 1], dtype=np.int64)
    ids = np.array(["b", "z", "a", "y10", "q"], dtype=object)
    order = time_order(t, ids)
    assert [(int(t[i]), ids[i]) for i in order] == sorted(
        zip(t.tolist(), ids.tolist(), strict=True)
    )


def test_a_span_too_wide_for_the_composite_key_uses_exact_ranks() -> None:
    # 60 customers over ~8,000 years: key * (span + offset) overflows int64, so "auto" must fall
    # back to ranks, and the values must still be the definition's.
    rng = np.random.default_rng(7)
    n = 120
    years = rng.integers(0, 8_000, n)
    t = -1_900 * 365 * US_PER_DAY + years * 365 * US_PER_DAY + rng.integers(0, 3, n) * US_PER_DAY
    t = t + 1_800_000_000  # half past the hour: the oracle's float seconds stay on the same hour
    frame = canonical_frame(
        [f"id{i}" for i in range(n)],
        t,
        [f"C{i % 60}" for i in range(n)],
        [f"T{i % 3}" for i in range(n)],
        rng.integers(0, 1000, n) / 10,
        rng.integers(0, 2, n),
    )
    with pytest.raises(ValueError, match="overflow the composite int64 key"):
        compute_features(frame, method="composite")
    assert_same_features(compute_features(frame), oracle_features(frame, DEFAULT))


def test_means_use_per_key_prefix_sums_not_a_global_running_total() -> None:
    # A customer with huge totals sorts before a small one: a global cumsum would leave the
    # small customer's means with an error of about 1e-16 * 2e13; per key it stays exact.
    n_big = 20_000
    t_big = HANDBOOK_START_US + np.arange(n_big, dtype=np.int64) * 1_000
    small = [0.01, 0.02, 0.07]
    t_small = HANDBOOK_START_US + US_PER_DAY + np.arange(3, dtype=np.int64)
    frame = canonical_frame(
        [f"b{i:05d}" for i in range(n_big)] + ["s0", "s1", "s2"],
        np.concatenate([t_big, t_small]),
        ["BIG"] * n_big + ["SMALL"] * 3,
        ["T"] * (n_big + 3),
        [1e9] * n_big + small,
        [0] * (n_big + 3),
    )
    got = compute_features(frame).iloc[-3:]
    expected = [np.mean(small[: k + 1]) for k in range(3)]
    np.testing.assert_allclose(
        got["CUSTOMER_ID_AVG_AMOUNT_1DAY_WINDOW"], expected, rtol=1e-12, atol=0
    )


@FAST
@given(data=st.data(), frame=transaction_frames(min_rows=2))
def test_no_feature_of_a_row_depends_on_a_label_within_the_delay(
    data: st.DataObject, frame: pd.DataFrame
) -> None:
    """The issue's no-leak property: relabel everything x could not have known; x is unchanged."""
    x = data.draw(st.integers(min_value=0, max_value=len(frame) - 1), label="row")
    t_x = int(frame[TX_US].iloc[x])
    unknown = (frame[TX_US] > t_x - DEFAULT.delay_days * US_PER_DAY).to_numpy()
    unknown[x] = True
    relabelled = frame.copy()
    new_labels = data.draw(
        st.lists(st.integers(0, 1), min_size=int(unknown.sum()), max_size=int(unknown.sum())),
        label="new labels",
    )
    relabelled.loc[unknown, LABEL] = np.asarray(new_labels, dtype=np.int8)
    before = compute_features(frame).iloc[x]
    after = compute_features(relabelled).iloc[x]
    pd.testing.assert_series_equal(before, after, check_exact=True)


@FAST
@given(data=st.data(), frame=transaction_frames())
def test_a_known_label_in_a_terminal_window_does_change_the_risk(
    data: st.DataObject, frame: pd.DataFrame
) -> None:
    """The other side, so the no-leak test can fail: a label older than the delay counts."""
    x = data.draw(st.integers(min_value=0, max_value=len(frame) - 1), label="row")
    delay = DEFAULT.delay_days * US_PER_DAY
    longest = max(DEFAULT.terminal_windows_days) * US_PER_DAY
    edges = [delay] + [delay + w * US_PER_DAY - 1 for w in DEFAULT.terminal_windows_days]
    lag = data.draw(
        st.one_of(st.sampled_from(edges), st.integers(delay, delay + longest - 1)), label="lag"
    )
    # A new transaction y at the terminal of x, `lag` before it: in the windows w > lag - delay.
    y = frame.iloc[[x]].copy()
    y["transaction_id"] = "y-" + "".join(frame["transaction_id"])  # unique: longer than any id
    y[TX_US] = int(frame[TX_US].iloc[x]) - lag
    y["tx_datetime"] = y[TX_US].to_numpy().astype("datetime64[us]")
    y["customer_id"] = "elsewhere"
    with_y = pd.concat([frame, y], ignore_index=True)
    features = {}
    for label in (0, 1):
        with_y.loc[len(frame), LABEL] = label
        features[label] = compute_features(with_y).iloc[x]
    for w in DEFAULT.terminal_windows_days:
        risk = f"TERMINAL_ID_RISK_{w}DAY_WINDOW"
        count = f"TERMINAL_ID_NB_TX_{w}DAY_WINDOW"
        assert features[0][count] == features[1][count]
        if lag < delay + w * US_PER_DAY:
            assert features[1][risk] > features[0][risk], (w, lag)
        else:
            assert features[1][risk] == features[0][risk], (w, lag)
    customer = [n for n in DEFAULT.feature_names if n.startswith(("CUSTOMER", "TX_"))]
    pd.testing.assert_series_equal(features[0][customer], features[1][customer])


@settings(max_examples=20, deadline=None)
@given(frame=transaction_frames())
def test_feature_matrix_is_the_frame_in_model_order(frame: pd.DataFrame) -> None:
    matrix = feature_matrix(frame, OTHER)
    assert matrix.shape == (len(frame), len(OTHER.feature_names))
    np.testing.assert_array_equal(matrix, compute_features(frame, OTHER).to_numpy())


def test_missing_columns_are_named() -> None:
    frame = canonical_frame(["a"], [HANDBOOK_START_US], ["C"], ["T"], [1.0], None)
    with pytest.raises(ValueError, match=r"missing: \['is_fraud'\]"):
        compute_features(frame)


def test_an_empty_frame_gives_empty_features() -> None:
    frame = canonical_frame([], [], [], [], [], [])
    got = compute_features(frame)
    assert got.shape == (0, len(DEFAULT.feature_names))
    assert list(got.columns) == list(DEFAULT.feature_names)


def test_labels_other_than_0_1_and_empty_keys_are_named() -> None:
    frame = canonical_frame(
        ["a", "b"], [HANDBOOK_START_US] * 2, ["C", "C"], ["T", "T"], [1, 2], [0, 1]
    )
    bad_label = frame.assign(is_fraud=[0, 2])
    with pytest.raises(
        ValueError, match=r"'is_fraud' must hold 0/1 labels: 1 rows do not, e.g. \[1\]"
    ):
        compute_features(bad_label)
    no_terminal = frame.assign(terminal_id=pd.Series(["T", None], dtype=object))
    with pytest.raises(ValueError, match=r"'terminal_id' has empty keys, e.g. at rows \[1\]"):
        compute_features(no_terminal)
