"""Card Precision@k against the Fraud-Detection-Handbook's own pandas code."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fraud_core.cards.definition import US_PER_DAY
from fraud_core.cards.evaluate import card_precision_top_k

DAY0 = 17_622 * US_PER_DAY  # 2018-04-01, the Handbook's first day


# -- The book's code (chapter 4, "Precision top-k metrics"), transcribed as published ----------
def book_card_precision_top_k_day(df_day: pd.DataFrame, top_k: int) -> tuple[list, float]:
    df_day = (
        df_day.groupby("CUSTOMER_ID")
        .max()
        .sort_values(by="predictions", ascending=False)
        .reset_index(drop=False)
    )
    df_day_top_k = df_day.head(top_k)
    list_detected_compromised_cards = list(df_day_top_k[df_day_top_k.TX_FRAUD == 1].CUSTOMER_ID)
    card_precision_top_k = len(list_detected_compromised_cards) / top_k
    return list_detected_compromised_cards, card_precision_top_k


def book_card_precision_top_k(
    predictions_df: pd.DataFrame, top_k: int, remove_detected_compromised_cards: bool = True
) -> tuple[list, list, float]:
    list_days = list(predictions_df["TX_TIME_DAYS"].unique())
    list_days.sort()
    list_detected_compromised_cards: list = []
    card_precision_top_k_per_day_list = []
    nb_compromised_cards_per_day = []
    for day in list_days:
        df_day = predictions_df[predictions_df["TX_TIME_DAYS"] == day]
        df_day = df_day[["predictions", "CUSTOMER_ID", "TX_FRAUD"]]
        df_day = df_day[~df_day.CUSTOMER_ID.isin(list_detected_compromised_cards)]
        nb_compromised_cards_per_day.append(len(df_day[df_day.TX_FRAUD == 1].CUSTOMER_ID.unique()))
        detected_compromised_cards, card_precision_top_k = book_card_precision_top_k_day(
            df_day, top_k
        )
        card_precision_top_k_per_day_list.append(card_precision_top_k)
        if remove_detected_compromised_cards:
            list_detected_compromised_cards.extend(detected_compromised_cards)
    mean_card_precision_top_k = np.array(card_precision_top_k_per_day_list).mean()
    return (
        nb_compromised_cards_per_day,
        card_precision_top_k_per_day_list,
        mean_card_precision_top_k,
    )


# ---------------------------------------------------------------------------------------------
def random_transactions(seed: int, n: int = 3_000, customers: int = 120, days: int = 9):
    rng = np.random.default_rng(seed)
    tx_us = DAY0 + rng.integers(0, days * US_PER_DAY, n)
    customer = rng.integers(0, customers, n)
    # Some customers are compromised for a few days: frauds cluster by card, as in the book.
    bad = rng.random(customers) < 0.15
    fraud = (bad[customer] & (rng.random(n) < 0.5)).astype(np.int8)
    frame = pd.DataFrame({"customer_id": customer.astype(str), "tx_us": tx_us, "is_fraud": fraud})
    # Informative but imperfect scores, all distinct (the book breaks ties by an unstable sort).
    scores = rng.random(n) * 0.7 + fraud * rng.random(n) * 0.6
    return frame, scores


@pytest.mark.parametrize(("seed", "k"), [(0, 10), (1, 5), (2, 30), (3, 500)])
def test_equals_the_books_code(seed: int, k: int) -> None:
    frame, scores = random_transactions(seed)
    book = pd.DataFrame(
        {
            "CUSTOMER_ID": frame["customer_id"],
            "TX_TIME_DAYS": (frame["tx_us"] - DAY0) // US_PER_DAY,
            "TX_FRAUD": frame["is_fraud"],
            "predictions": scores,
        }
    )
    compromised, per_day, mean = book_card_precision_top_k(book, k)
    got = card_precision_top_k(frame, scores, k)
    assert got.per_day["precision"].tolist() == pytest.approx(per_day, abs=1e-12)
    assert got.per_day["compromised"].tolist() == compromised
    assert got.mean == pytest.approx(mean, abs=1e-12)
    # The removal of known cards mattered in this data (else the comparison proves less).
    _, without_removal, _ = book_card_precision_top_k(
        book, k, remove_detected_compromised_cards=False
    )
    assert without_removal != per_day or k >= 120


def test_a_card_found_compromised_is_not_counted_again() -> None:
    # Day 1: card a (fraud, top score) and b; day 2: a again (still fraud) and c (fraud).
    frame = pd.DataFrame(
        {
            "customer_id": ["a", "b", "a", "c", "b"],
            "tx_us": [DAY0, DAY0 + 5, DAY0 + US_PER_DAY, DAY0 + US_PER_DAY + 1, DAY0 + US_PER_DAY],
            "is_fraud": [1, 0, 1, 1, 0],
        }
    )
    got = card_precision_top_k(frame, np.array([0.9, 0.1, 0.95, 0.2, 0.5]), k=1)
    # Day 2's best card is a, but a is known compromised: b (0.5) is ranked first, a miss.
    assert got.per_day["precision"].tolist() == [1.0, 0.0]
    assert got.per_day["detected"].tolist() == [1, 0]
    assert got.per_day["compromised"].tolist() == [1, 1]  # c; a no longer counts
    assert got.per_day["day"].tolist() == ["2018-04-01", "2018-04-02"]
    assert got.mean == 0.5
    # The day's score of a card is its highest transaction's, its label any fraud that day.
    per_card = card_precision_top_k(frame.iloc[:2], np.array([0.1, 0.9]), k=1)
    assert per_card.mean == 0.0
    assert card_precision_top_k(frame.iloc[:2], np.array([0.1, 0.9]), k=2).mean == 0.5


def test_bad_arguments_are_refused() -> None:
    frame, scores = random_transactions(0, n=50)
    with pytest.raises(ValueError, match="50 transactions"):
        card_precision_top_k(frame, scores[:-1])
    with pytest.raises(ValueError, match="is_fraud"):
        card_precision_top_k(frame.drop(columns="is_fraud"), scores)
    with pytest.raises(ValueError, match="k must be"):
        card_precision_top_k(frame, scores, k=0)
