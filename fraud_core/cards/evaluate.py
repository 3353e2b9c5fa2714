"""Card Precision top-k: of the k cards an investigator team can check each day, how many were hit.

The Fraud-Detection-Handbook's operational metric (chapter 4, "Precision top-k metrics",
`card_precision_top_k`), for the card-transactions contract:

1. Each day (UTC calendar day of `tx_us`), each customer (card) gets the highest score of its
   transactions that day, and is compromised that day when one of them is a fraud.
2. Customers are ranked by that score; of the top k, the share that are compromised is the day's
   precision (divided by k even on a day with fewer than k cards, as the book does).
3. A card found compromised in an earlier day's top k is known to be compromised: it is blocked,
   and left out of every later day's ranking.
4. Card Precision@k is the mean of the daily precisions.

Ties in score are ranked by customer id (the book leaves them to pandas' unstable sort).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import pandas as pd

from fraud_core.cards.definition import CUSTOMER_ID, LABEL, TX_US, US_PER_DAY

#: The Handbook's k: the cards a team of investigators can check in a day.
DEFAULT_K = 100


@dataclass(frozen=True)
class CardPrecision:
    """Card Precision@k: the mean over days, and the table of each day."""

    k: int
    mean: float
    #: One row per day: day (ISO date), cards (ranked that day), compromised (cards with a fraud
    #: that day, known ones left out), detected (compromised cards in the top k), precision.
    per_day: pd.DataFrame

    def as_rows(self) -> dict[str, dict[str, float | int]]:
        """The per-day table keyed by day, for a markdown table or JSON."""
        table = self.per_day
        return {
            str(day): {
                "cards": int(cards),
                "compromised": int(compromised),
                "detected": int(detected),
                "precision": float(precision),
            }
            for day, cards, compromised, detected, precision in zip(
                table["day"].tolist(),
                table["cards"].to_numpy(),
                table["compromised"].to_numpy(),
                table["detected"].to_numpy(),
                table["precision"].to_numpy(),
                strict=True,
            )
        }


def card_precision_top_k(
    frame: pd.DataFrame, scores: np.ndarray, k: int = DEFAULT_K
) -> CardPrecision:
    """Card Precision@k of `scores` (one per row of `frame`: `customer_id`, `tx_us`, `is_fraud`)."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    scores = np.asarray(scores, dtype=np.float64)
    if len(scores) != len(frame):
        raise ValueError(f"{len(scores)} scores for {len(frame)} transactions")
    missing = [c for c in (CUSTOMER_ID, TX_US, LABEL) if c not in frame.columns]
    if missing:
        raise ValueError(f"card precision needs column(s) {', '.join(missing)}")
    days = frame[TX_US].to_numpy(np.int64) // US_PER_DAY
    # Customer codes in id order, so that ranking ties break by id.
    customers, codes = np.unique(frame[CUSTOMER_ID].astype(str).to_numpy(), return_inverse=True)
    # Step 1 for every day at once: per (day, customer), the highest score and any fraud.
    per_card = (
        pd.DataFrame(
            {
                "day": days,
                "card": codes,
                "score": scores,
                "fraud": frame[LABEL].to_numpy(np.int64) == 1,
            }
        )
        .groupby(["day", "card"], sort=True)
        .agg(score=("score", "max"), fraud=("fraud", "max"))
        .reset_index()
    )
    known = np.zeros(len(customers), dtype=bool)  # cards found compromised on an earlier day
    rows = []
    bounds = np.flatnonzero(np.r_[True, np.diff(per_card["day"].to_numpy()) != 0, True])
    card, score, fraud = (per_card[c].to_numpy() for c in ("card", "score", "fraud"))
    day_numbers = per_card["day"].to_numpy(np.int64)
    for start, end in pairwise(bounds):
        day_cards = card[start:end]
        keep = ~known[day_cards]
        day_cards, day_scores, day_fraud = (
            day_cards[keep],
            score[start:end][keep],
            fraud[start:end][keep],
        )
        # Highest score first; day_cards is ascending, so a stable sort breaks ties by id.
        top = np.argsort(-day_scores, kind="stable")[:k]
        hit = day_cards[top][day_fraud[top]]
        known[hit] = True
        rows.append(
            {
                "day": str(np.datetime64(int(day_numbers[start]), "D")),
                "cards": len(day_cards),
                "compromised": int(day_fraud.sum()),
                "detected": len(hit),
                "precision": len(hit) / k,
            }
        )
    per_day = pd.DataFrame(rows, columns=["day", "cards", "compromised", "detected", "precision"])
    mean = float(per_day["precision"].mean()) if len(per_day) else float("nan")
    return CardPrecision(k, mean, per_day)
