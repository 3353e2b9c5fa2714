"""The Handbook's transaction simulator: canonical, deterministic, its three fraud scenarios."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from fraud_core.cards import synthetic
from fraud_core.cards.definition import US_PER_DAY
from fraud_core.cards.schema import CANONICAL_COLUMNS, conform, problems

SMALL: dict[str, Any] = {"n_customers": 300, "n_terminals": 600, "n_days": 60}


@pytest.fixture(scope="module")
def small() -> pd.DataFrame:
    return synthetic.generate(**SMALL, seed=7, with_scenario=True)


def days_of(frame: pd.DataFrame, start: str = "2018-04-01") -> np.ndarray:
    start_us = pd.Timestamp(start, tz="UTC").value // 1000
    return (frame["tx_us"].to_numpy() - start_us) // US_PER_DAY


def test_the_same_seed_gives_the_same_rows_and_another_seed_others() -> None:
    first = synthetic.generate(**SMALL, seed=1)
    pd.testing.assert_frame_equal(first, synthetic.generate(**SMALL, seed=1))
    other = synthetic.generate(**SMALL, seed=2)
    assert len(other) != len(first) or not other["amount"].equals(first["amount"])


def test_it_is_a_clean_canonical_frame(small: pd.DataFrame) -> None:
    frame = small.drop(columns=synthetic.SCENARIO)
    assert tuple(frame.columns) == CANONICAL_COLUMNS
    assert problems(frame) == []
    pd.testing.assert_frame_equal(conform(frame), frame)


def test_ids_count_up_in_time_order_like_the_handbooks(small: pd.DataFrame) -> None:
    numbers = small["transaction_id"].astype(int).to_numpy()
    assert sorted(numbers) == list(range(len(small)))
    by_id = small["tx_us"].to_numpy()[np.argsort(numbers)]
    assert (np.diff(by_id) >= 0).all()


def test_times_fall_in_the_days_around_noon(small: pd.DataFrame) -> None:
    days = days_of(small)
    assert days.min() == 0 and days.max() == SMALL["n_days"] - 1
    seconds = (small["tx_us"].to_numpy() // 1_000_000) % 86_400
    assert seconds.min() > 0
    assert abs(seconds.mean() - 43_200) < 1_000  # N(noon, 20,000 s), clipped to the day


def test_customers_pay_at_a_few_nearby_terminals(small: pd.DataFrame) -> None:
    # Terminals within 5 of a customer on a 100 x 100 map: about pi * 25 / 10,000 of them.
    per_customer = small.groupby("customer_id")["terminal_id"].nunique()
    expected = SMALL["n_terminals"] * np.pi * 25 / 10_000
    assert per_customer.mean() < 2 * expected
    assert small["customer_id"].nunique() <= SMALL["n_customers"]


def test_scenario_1_is_every_amount_over_220_not_otherwise_fraud(small: pd.DataFrame) -> None:
    scenario = small[synthetic.SCENARIO]
    assert (small["is_fraud"] == (scenario > 0)).all()
    assert (small.loc[scenario == 1, "amount"] > 220).all()
    assert (small.loc[scenario == 0, "amount"] <= 220).all()
    assert (small["amount"] >= 0).all()


def test_scenario_2_makes_a_compromised_terminal_fraudulent_all_day(small: pd.DataFrame) -> None:
    frame = small.assign(day=days_of(small))
    hit = frame.loc[frame[synthetic.SCENARIO] == 2, ["terminal_id", "day"]].drop_duplicates()
    assert len(hit) > 0
    same_day = frame.merge(hit, on=["terminal_id", "day"])
    # Every row of that terminal that day is fraud (scenario 3 may have relabelled some).
    assert same_day[synthetic.SCENARIO].isin([2, 3]).all()
    # Two terminals a day, each for 28 days: never more compromised at once than were drawn.
    per_day = hit.groupby("day")["terminal_id"].nunique()
    drawn = 2 * np.minimum(per_day.index.to_numpy() + 1, 28)
    assert (per_day.to_numpy() <= drawn).all()
    assert per_day.max() > 2  # compromises outlast the day they were drawn


def test_scenario_3_multiplies_a_third_of_a_customers_amounts_by_5(small: pd.DataFrame) -> None:
    scenario = small[synthetic.SCENARIO]
    victims = small.loc[scenario == 3, "customer_id"].unique()
    assert len(victims) > 0
    theirs = small[small["customer_id"].isin(victims)]
    # Amounts x5: a victim's frauds are far above the same customer's legitimate payments.
    medians = theirs.groupby([theirs[synthetic.SCENARIO] == 3, "customer_id"])["amount"].median()
    ratio = (medians.loc[True] / medians.loc[False].reindex(medians.loc[True].index)).dropna()
    assert ratio.median() > 3
    # A third of the 14 days after each draw, for three customers a day: far from all of theirs.
    assert 0.05 < (theirs[synthetic.SCENARIO] == 3).mean() < 0.5


def test_the_handbooks_size_gives_its_fraud_rate_in_a_few_seconds() -> None:
    # Full customers and terminals (what sets the scenarios' share), a third of the days: the
    # first 28 days build up scenario 2, so the rate is a little under the book's 0.84 %.
    frame = synthetic.generate(n_customers=5000, n_terminals=10000, n_days=60, seed=0)
    assert len(frame) == pytest.approx(5000 * 60 * 2 * 0.969, rel=0.05)
    assert 0.005 < frame["is_fraud"].mean() < 0.011


def test_too_small_a_world_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 3 customers"):
        synthetic.generate(n_customers=2, n_terminals=10, n_days=5)


def test_start_date_moves_the_whole_set() -> None:
    frame = synthetic.generate(n_customers=20, n_terminals=40, n_days=3, start_date="2021-06-01")
    assert frame["tx_datetime"].min() >= pd.Timestamp("2021-06-01")
    assert frame["tx_datetime"].max() < pd.Timestamp("2021-06-04")
