"""The feature definition written as plainly as possible: the ground truth of the parity tests.

Row by row, window by window, no cleverness: slow (quadratic per key) and obviously right.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd

from fraud_core.cards.definition import (
    AMOUNT,
    CUSTOMER_ID,
    LABEL,
    TERMINAL_ID,
    TRANSACTION_ID,
    TX_US,
    US_PER_DAY,
    FeatureDefinition,
)


def oracle_features(frame: pd.DataFrame, definition: FeatureDefinition) -> pd.DataFrame:
    """The behavioural features of every row of `frame` (any order), in the frame's order.

    `frame` holds `transaction_id` (str), `tx_us` (int µs), `customer_id`, `terminal_id`,
    `amount` and `is_fraud` (0/1).
    """
    rows = list(
        zip(
            frame[TRANSACTION_ID].astype(str),
            frame[TX_US].astype("int64"),
            frame[CUSTOMER_ID].astype(str),
            frame[TERMINAL_ID].astype(str),
            frame[AMOUNT].astype(float),
            frame[LABEL].astype(int),
            strict=True,
        )
    )
    delay = definition.delay_days * US_PER_DAY
    out = []
    for tid, t, customer, terminal, amount, _ in rows:
        when = datetime.fromtimestamp(t / 1e6, UTC)
        values = [
            amount,
            1.0 if when.weekday() >= 5 else 0.0,
            1.0 if when.hour <= definition.night_end_hour else 0.0,
        ]
        for w in definition.customer_windows_days:
            mine = [
                a
                for (i, s, c, _, a, _) in rows
                if c == customer and t - w * US_PER_DAY < s and (s, i) <= (t, tid)
            ]
            values += [float(len(mine)), float(np.mean(mine))]
        for w in definition.terminal_windows_days:
            seen = [
                f
                for (_, s, _, m, _, f) in rows
                if m == terminal and t - delay - w * US_PER_DAY < s <= t - delay
            ]
            values += [float(len(seen)), (sum(seen) / len(seen)) if seen else 0.0]
        out.append(values)
    return pd.DataFrame(out, columns=list(definition.feature_names), index=frame.index)
