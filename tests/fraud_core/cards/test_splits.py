"""The cards splits: whole-history features, day cuts, the delay gaps, a bundle's history."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fraud_core.cards.definition import DEFAULT, US_PER_DAY, FeatureDefinition
from fraud_core.cards.features import compute_features
from fraud_core.cards.schema import conform
from fraud_core.cards.splits import (
    HISTORY_COLUMNS,
    features_under,
    fingerprint_cards,
    plan_days,
    split_cards,
)

DAY0 = 17_622  # 2018-04-01, the Handbook's first day, in days since the epoch


def transactions(days: int = 60, n: int = 4_000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    tx_us = DAY0 * US_PER_DAY + rng.integers(0, days * US_PER_DAY, n)
    tx_us[:50] = tx_us[50]  # ties in time, ordered by id
    raw = pd.DataFrame(
        {
            "transaction_id": [f"t{i}" for i in range(n)],
            "tx_datetime": pd.to_datetime(tx_us, unit="us").astype(str),
            "customer_id": rng.integers(0, 40, n),
            "terminal_id": rng.integers(0, 60, n),
            "amount": rng.gamma(2.0, 30.0, n).round(2),
            "is_fraud": (rng.random(n) < 0.05).astype(int),
        }
    )
    return conform(raw)


def day_of(frame: pd.DataFrame) -> np.ndarray:
    return frame["tx_us"].to_numpy() // US_PER_DAY - DAY0


def test_splits_leave_the_delay_out_before_validation_and_test() -> None:
    frame = transactions()
    features = compute_features(frame, DEFAULT)
    splits, plan = split_cards(frame, features, DEFAULT, 0.2, 0.2, source="synthetic")
    # 60 days, 7 before validation and 7 before test out: 0.6 / 0.2 / 0.2 of the other 46 are
    # 28 / 9 / 9 days, validation from day 35, test from day 51.
    assert (plan.validation_day - DAY0, plan.test_day - DAY0) == (35, 51)
    assert day_of(splits.train).max() == 35 - 7 - 1 and day_of(splits.train).min() == 0
    assert day_of(splits.validation).min() == 35 and day_of(splits.validation).max() == 51 - 7 - 1
    assert day_of(splits.test).min() == 51 and day_of(splits.test).max() == 59
    assert splits.gaps is not None
    assert set(np.unique(day_of(splits.gaps))) == set(range(28, 35)) | set(range(44, 51))
    # Every row in exactly one place.
    ids = [p["transaction_id"] for p in (splits.train, splits.validation, splits.test, splits.gaps)]
    together = pd.concat(ids)
    assert len(together) == len(frame) and together.is_unique
    # Each split is in time order, and every test row is later than every training row.
    for _, part in splits.items():
        assert part["tx_us"].is_monotonic_increasing
    assert splits.train["tx_us"].max() < splits.validation["tx_us"].min()
    summary = splits.summary()
    assert summary["test"]["date_from"] == "2018-05-22" and summary["test"]["days"] == 9
    assert summary["train"]["frauds"] == int(splits.train["is_fraud"].sum())
    assert splits.contract == "cards" and splits.source == "synthetic"
    assert splits.input_fields == DEFAULT.feature_names
    x, y = splits.arrays(splits.test)
    assert x.shape == (len(splits.test), 15) and y.dtype == np.int8


def test_features_come_from_the_whole_history() -> None:
    frame = transactions()
    features = compute_features(frame, DEFAULT)
    splits, _ = split_cards(frame, features, DEFAULT)
    # The first test days' features count the gap's transactions: computed before the cut.
    expected = features.set_index(frame["transaction_id"]).loc[splits.test["transaction_id"]]
    got = splits.test[list(DEFAULT.feature_names)]
    np.testing.assert_array_equal(got.to_numpy(), expected.to_numpy())
    recomputed_on_test_alone = compute_features(splits.test, DEFAULT)
    assert not np.array_equal(
        recomputed_on_test_alone["CUSTOMER_ID_NB_TX_30DAY_WINDOW"].to_numpy(),
        got["CUSTOMER_ID_NB_TX_30DAY_WINDOW"].to_numpy(),
    )


def test_history_is_the_retention_window_before_the_newest_transaction() -> None:
    frame = transactions()
    definition = FeatureDefinition(max_lateness_days=3)  # retention 40 days: not all of it
    splits, _ = split_cards(frame, compute_features(frame, definition), definition)
    history = splits.history
    assert history is not None and tuple(history.columns) == HISTORY_COLUMNS
    newest = int(frame["tx_us"].max())
    inside = frame[frame["tx_us"] > newest - definition.retention_us]
    assert history["transaction_id"].tolist() == inside["transaction_id"].tolist()
    # The served model scores what comes after the data: its state holds the test period too.
    assert history["tx_us"].max() == newest
    assert set(splits.test["transaction_id"]) <= set(history["transaction_id"])
    assert history["is_fraud"].sum() == inside["is_fraud"].sum() > 0
    assert history["tx_us"].min() > frame["tx_us"].min()  # the retention cut, not everything


def test_a_champion_of_other_windows_gets_its_own_features_for_the_test_rows() -> None:
    frame = transactions(seed=3)
    splits, _ = split_cards(frame, compute_features(frame, DEFAULT), DEFAULT)
    other = FeatureDefinition(customer_windows_days=(2, 14), terminal_windows_days=(3,))
    expected = compute_features(frame, other).iloc[len(frame) - len(splits.test) :]
    np.testing.assert_allclose(
        features_under(splits, other), expected.to_numpy(), rtol=0, atol=1e-12
    )
    np.testing.assert_array_equal(features_under(splits, DEFAULT), splits.arrays(splits.test)[0])


def test_a_four_week_window_is_cut_around_its_two_delays() -> None:
    # The weekly card model's default: 28 days, 14 of them the delays; 8 / 3 / 3 days remain.
    plan = plan_days(0, 27, 7)
    assert plan.periods() == {
        "train": (0, 8),
        "validation_gap": (8, 15),
        "validation": (15, 18),
        "test_gap": (18, 25),
        "test": (25, 28),
    }


def test_too_few_days_are_refused_naming_the_span() -> None:
    frame = transactions(days=16, n=500)
    with pytest.raises(ValueError, match=r"16 days of transactions \(2018-04-01 to 2018-04-16\)"):
        split_cards(frame, compute_features(frame, DEFAULT), DEFAULT)
    with pytest.raises(ValueError, match="must be in"):
        plan_days(0, 100, 7, 0.0, 0.2)
    with pytest.raises(ValueError, match="index"):
        split_cards(
            frame,
            compute_features(frame, DEFAULT)
            .iloc[::-1]
            .reset_index(drop=True)
            .set_axis(range(1, len(frame) + 1)),
            DEFAULT,
        )


def test_the_fingerprint_follows_the_content_only() -> None:
    frame = transactions(n=800)
    same = conform(frame.sample(frac=1.0, random_state=1).astype({"tx_datetime": str}))
    assert fingerprint_cards(same) == fingerprint_cards(frame)
    changed = frame.copy()
    changed.loc[7, "amount"] += 0.01
    assert fingerprint_cards(changed) != fingerprint_cards(frame)
    relabelled = frame.copy()
    relabelled.loc[7, "customer_id"] = "someone else"
    assert fingerprint_cards(relabelled) != fingerprint_cards(frame)
