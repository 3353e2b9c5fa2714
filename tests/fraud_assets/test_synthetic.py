"""The synthetic stand-in for `creditcard.csv`: schema, size, rhythm, imbalance, determinism."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from fraud_core import synthetic
from fraud_core.schema import COLUMNS, PCA_COLUMNS, all_problems


@pytest.fixture(scope="module")
def full() -> pd.DataFrame:
    return synthetic.generate()


def hours(frame: pd.DataFrame) -> pd.Series:
    return (frame["Time"] % 86_400) / 3_600


def test_a_small_set_has_the_schema_and_no_problems() -> None:
    frame = synthetic.generate(n_rows=2_000, fraud_rate=0.01, seed=1)
    assert frame.shape == (2_000, 31)
    assert tuple(frame.columns) == COLUMNS
    assert frame["Class"].sum() == 20
    assert all_problems(frame) == []


def test_the_default_set_matches_the_real_one_in_size_and_imbalance(full: pd.DataFrame) -> None:
    assert full.shape == (284_807, 31)
    assert int(full["Class"].sum()) == 492
    assert full["Class"].mean() == pytest.approx(0.00172, abs=0.00002)
    assert all_problems(full) == []


def test_time_covers_two_days_with_quiet_nights(full: pd.DataFrame) -> None:
    assert full["Time"].min() >= 0
    assert full["Time"].max() < 2 * 86_400
    assert full["Time"].max() > 1.95 * 86_400
    assert full["Time"].is_monotonic_increasing
    # Both days carry traffic.
    assert (full["Time"] < 86_400).mean() == pytest.approx(0.5, abs=0.02)
    hour = hours(full)
    night = int(((hour >= 2) & (hour < 5)).sum())
    afternoon = int(((hour >= 14) & (hour < 17)).sum())
    assert night < afternoon / 3


def test_the_same_seed_gives_the_same_set() -> None:
    a = synthetic.generate(n_rows=1_000, fraud_rate=0.02, seed=5)
    b = synthetic.generate(n_rows=1_000, fraud_rate=0.02, seed=5)
    pd.testing.assert_frame_equal(a, b)


def test_different_seeds_give_different_sets() -> None:
    a = synthetic.generate(n_rows=1_000, fraud_rate=0.02, seed=5)
    b = synthetic.generate(n_rows=1_000, fraud_rate=0.02, seed=6)
    assert not np.array_equal(a["V1"].to_numpy(), b["V1"].to_numpy())
    assert not np.array_equal(a["Amount"].to_numpy(), b["Amount"].to_numpy())


def test_component_spread_decreases_like_a_pca(full: pd.DataFrame) -> None:
    std = full[list(PCA_COLUMNS)].std()
    assert std["V1"] > std["V14"] > std["V28"]
    assert std["V1"] > 1.5 * std["V14"]
    # Mostly decreasing: a rank correlation with the component index close to -1.
    ranks = std.rank().to_numpy()
    assert np.corrcoef(ranks, np.arange(28))[0, 1] < -0.95


def test_amounts_are_non_negative_and_heavy_tailed(full: pd.DataFrame) -> None:
    amount = full["Amount"]
    assert amount.min() >= 0
    assert amount.max() > 100 * amount.median()
    assert amount.mean() > amount.median()


def test_frauds_shift_the_known_components(full: pd.DataFrame) -> None:
    fraud = full[full["Class"] == 1]
    legit = full[full["Class"] == 0]
    for name in ("V14", "V12", "V10", "V17"):
        assert fraud[name].mean() < legit[name].mean() - 1.0, name
    assert fraud["V4"].mean() > legit["V4"].mean()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_rows": 0},
        {"n_rows": -5},
        {"fraud_rate": 0.0},
        {"fraud_rate": 0.5},
        {"fraud_rate": -0.1},
        {"fraud_rate": 1.2},
    ],
)
def test_invalid_arguments_raise(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        synthetic.generate(**kwargs)
