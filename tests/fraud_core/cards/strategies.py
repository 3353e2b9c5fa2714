"""Hypothesis strategies for card-transaction frames: small, tie-heavy, edge-heavy histories.

The frames are canonical (the contract's in-memory form): `transaction_id`, `tx_datetime`
(datetime64[us]), `tx_us` (int64), `customer_id`, `terminal_id`, `amount` (float64),
`is_fraud` (int8, unless `labelled=False`), sorted by (`tx_us`, `transaction_id`) with a fresh
RangeIndex. They are built to break window code where it usually breaks:

- few customers and terminals, so windows hold many rows;
- heavy duplicate timestamps (rows draw their time from a small pool of instants), so ties
  ordered by id matter;
- instants on whole days and hours plus or minus one microsecond, so a row sits exactly on,
  just inside or just outside another row's window edge (t - w, t - d, t - d - w);
- ids whose string order differs from their numeric order ("10" < "9"), mixed with text ids;
- time spans from 0 to `max_days` days (80 by default: past the longest window plus delay).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import strategies as st

from fraud_core.cards.definition import (
    AMOUNT,
    CUSTOMER_ID,
    LABEL,
    TERMINAL_ID,
    TRANSACTION_ID,
    TX_DATETIME,
    TX_US,
    US_PER_DAY,
)

#: 2018-04-01 00:00 UTC (a Sunday), the Handbook's first day.
HANDBOOK_START_US = 1_522_540_800 * 1_000_000
_US_PER_HOUR = 3_600 * 1_000_000

# Offsets within a day that put rows on, or one microsecond either side of, day and hour
# boundaries (window edges are whole days; the night flag turns at 07:00).
_EDGE_OFFSETS = (0, 1, US_PER_DAY - 1, 6 * _US_PER_HOUR, 7 * _US_PER_HOUR - 1, 7 * _US_PER_HOUR)

_ID_ALPHABET = "0123456789abcXYZ-_é"

ids = st.one_of(
    st.integers(min_value=0, max_value=10**6).map(str),
    st.text(alphabet=_ID_ALPHABET, min_size=1, max_size=5),
)
"""One transaction id: digits (string order is not numeric order) or short text."""


@st.composite
def instants(draw: st.DrawFn, max_days: int) -> int:
    """An offset in µs from the frame's start: on an edge most of the time, anywhere otherwise."""
    day = draw(st.integers(min_value=0, max_value=max_days))
    offset = draw(
        st.one_of(
            st.sampled_from(_EDGE_OFFSETS),
            st.integers(min_value=0, max_value=US_PER_DAY - 1),
        )
    )
    return int(day * US_PER_DAY + offset)


def canonical_frame(
    transaction_id: list[str],
    tx_us: list[int] | np.ndarray,
    customer_id: list[str],
    terminal_id: list[str],
    amount: list[float] | np.ndarray,
    is_fraud: list[int] | np.ndarray | None = None,
) -> pd.DataFrame:
    """A canonical frame from columns: dtypes fixed, sorted by (tx_us, transaction_id)."""
    t = np.asarray(tx_us, dtype=np.int64)
    columns: dict[str, object] = {
        TRANSACTION_ID: pd.Series(transaction_id, dtype=object).astype(str).astype(object),
        TX_DATETIME: t.astype("datetime64[us]"),
        TX_US: t,
        CUSTOMER_ID: pd.Series(customer_id, dtype=object).astype(str).astype(object),
        TERMINAL_ID: pd.Series(terminal_id, dtype=object).astype(str).astype(object),
        AMOUNT: np.asarray(amount, dtype=np.float64),
    }
    if is_fraud is not None:
        columns[LABEL] = np.asarray(is_fraud, dtype=np.int8)
    frame = pd.DataFrame(columns)
    # Python's string order for the ties (a stable sort on id, then on time).
    order = sorted(range(len(frame)), key=lambda r: (int(t[r]), str(transaction_id[r])))
    return frame.iloc[order].reset_index(drop=True)


@st.composite
def transaction_frames(
    draw: st.DrawFn,
    *,
    min_rows: int = 1,
    max_rows: int = 40,
    max_customers: int = 3,
    max_terminals: int = 3,
    max_days: int = 80,
    labelled: bool = True,
    start_us: int | None = None,
) -> pd.DataFrame:
    """A canonical card-transaction frame (see the module docstring for what it stresses).

    `start_us` fixes the first possible instant; by default it is the Handbook's start date
    shifted by a drawn number of days (so weekends fall on different rows).
    """
    n = draw(st.integers(min_value=min_rows, max_value=max_rows))
    span = draw(st.integers(min_value=0, max_value=max_days))
    if start_us is None:
        start_us = HANDBOOK_START_US + draw(st.integers(min_value=0, max_value=6)) * US_PER_DAY
    pool = draw(st.lists(instants(span), min_size=1, max_size=max(1, min(n, 12))))
    offsets = draw(st.lists(st.sampled_from(pool), min_size=n, max_size=n))
    n_customers = draw(st.integers(min_value=1, max_value=max_customers))
    n_terminals = draw(st.integers(min_value=1, max_value=max_terminals))
    customers = draw(st.lists(st.integers(0, n_customers - 1), min_size=n, max_size=n))
    terminals = draw(st.lists(st.integers(0, n_terminals - 1), min_size=n, max_size=n))
    transaction_ids = draw(st.lists(ids, min_size=n, max_size=n, unique=True))
    amounts = draw(
        st.lists(
            st.one_of(
                st.sampled_from([0.0, 1.0, 0.1, 220.0]),
                st.integers(min_value=0, max_value=500_000).map(lambda c: c / 100),
                st.floats(min_value=0.0, max_value=5_000.0, allow_nan=False),
            ),
            min_size=n,
            max_size=n,
        )
    )
    labels = None
    if labelled:
        labels = draw(st.lists(st.integers(min_value=0, max_value=1), min_size=n, max_size=n))
    return canonical_frame(
        transaction_ids,
        [start_us + o for o in offsets],
        [f"C{c}" for c in customers],
        [f"T{m}" for m in terminals],
        amounts,
        labels,
    )


@st.composite
def shuffled(draw: st.DrawFn, frame: pd.DataFrame) -> pd.DataFrame:
    """`frame`'s rows in a drawn order, with a non-default index (to check index handling)."""
    order = draw(st.permutations(range(len(frame))))
    out = frame.iloc[list(order)].copy()
    out.index = pd.Index([10 * i + 3 for i in order])
    return out
