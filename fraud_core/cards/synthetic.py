"""Synthetic card transactions: the Fraud-Detection-Handbook's simulator, vectorised.

Used when no file of the card-transactions contract is in the data directory. It follows the
Handbook's chapter 3 "Transaction data simulator" (`generate_customer_profiles_table`,
`generate_terminal_profiles_table`, `get_list_terminals_within_radius`,
`generate_transactions_table`, `add_frauds`) distribution for distribution:

- customers at (x, y) uniform in 100 x 100, a mean amount U(5, 100) with std = mean / 2 and a
  mean number of transactions a day U(0, 4); terminals at (x, y) uniform in 100 x 100; each
  customer uses the terminals closer than `radius` (5);
- each day, Poisson(mean) transactions per customer at N(noon, 20,000 s) seconds into the day,
  dropped outside the day; amount N(mean, std), redrawn U(0, 2 mean) when negative, rounded to
  cents; terminal uniform among the customer's;
- transaction ids "0", "1", ... in time order, like the Handbook's TRANSACTION_ID;
- frauds: (1) an amount over 220; (2) each day (but the last, as the book's loop) two terminals
  are compromised for 28 days: every transaction there is fraud; (3) each day three customers are
  compromised for 14 days: a third of their transactions in that time (drawn without
  replacement) get their amount x5 and are fraud. Later scenarios relabel earlier ones.

The book draws from Python's `random` and numpy's legacy global state customer by customer
(minutes at full size); this draws the same distributions from one `numpy.random.Generator` in
whole arrays (seconds), so it is deterministic by seed but not the book's exact rows.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from fraud_core.cards.definition import (
    AMOUNT,
    CUSTOMER_ID,
    LABEL,
    TERMINAL_ID,
    TRANSACTION_ID,
    TX_DATETIME,
    TX_US,
)
from fraud_core.cards.schema import sort_order

SECONDS_PER_DAY = 86_400
#: Scenario 1: an amount above this is fraud.
FRAUD_AMOUNT = 220.0
#: Scenario 2: terminals compromised a day, and for how many days.
TERMINALS_PER_DAY, TERMINAL_DAYS = 2, 28
#: Scenario 3: customers compromised a day, for how many days, and their amount factor.
CUSTOMERS_PER_DAY, CUSTOMER_DAYS, CUSTOMER_FACTOR = 3, 14, 5.0
SCENARIO = "fraud_scenario"


def _terminals_within(
    customers: np.ndarray, terminals: np.ndarray, radius: float
) -> tuple[np.ndarray, np.ndarray]:
    """Each customer's terminals within `radius`: (offsets, ids), customer i's are
    ids[offsets[i]:offsets[i + 1]] in id order."""
    # A k-d tree instead of the book's distance to every terminal: 5,000 x 10,000 distances
    # take seconds and 400 MB; the tree answers in milliseconds.
    near = cKDTree(terminals).query_ball_point(customers, r=radius, return_sorted=True)
    counts = np.fromiter(map(len, near), dtype=np.int64, count=len(near))
    ids = np.fromiter(itertools.chain.from_iterable(near), dtype=np.int64, count=counts.sum())
    return np.concatenate([[0], np.cumsum(counts)]), ids


def _two_distinct(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """`size` pairs of distinct values in [0, n), uniform: shape (size, 2)."""
    first = rng.integers(0, n, size)
    second = rng.integers(0, n - 1, size)
    second += second >= first
    return np.stack([first, second], axis=1)


def _compromised_terminals(
    rng: np.random.Generator, terminal: np.ndarray, day: np.ndarray, n_terminals: int, last: int
) -> np.ndarray:
    """Scenario 2's mask: the transaction's terminal was compromised within the last 28 days."""
    starts = np.repeat(np.arange(last), TERMINALS_PER_DAY)
    chosen = _two_distinct(rng, n_terminals, last).ravel()
    # +1 at the day a compromise starts, -1 when it ends; a running sum > 0 means compromised.
    change = np.zeros((n_terminals, last + TERMINAL_DAYS + 1), dtype=np.int32)
    np.add.at(change, (chosen, starts), 1)
    np.add.at(change, (chosen, starts + TERMINAL_DAYS), -1)
    active = np.cumsum(change, axis=1) > 0
    return active[terminal, day]


def generate(
    n_customers: int = 5000,
    n_terminals: int = 10000,
    n_days: int = 183,
    start_date: str = "2018-04-01",
    seed: int = 0,
    with_scenario: bool = False,
    radius: float = 5.0,
) -> pd.DataFrame:
    """Labelled card transactions in the canonical layout (`fraud_core.cards.schema`).

    `with_scenario` adds `fraud_scenario` (0 legitimate, 1-3 the scenario that made the row a
    fraud), for tests: it is the label in disguise and must never become a feature.
    """
    if n_customers < CUSTOMERS_PER_DAY or n_terminals < TERMINALS_PER_DAY or n_days < 1:
        raise ValueError(
            f"need at least {CUSTOMERS_PER_DAY} customers, {TERMINALS_PER_DAY} terminals and "
            f"one day, got {n_customers}, {n_terminals} and {n_days}"
        )
    rng = np.random.default_rng(seed)
    # Customer and terminal profiles.
    customer_xy = rng.uniform(0, 100, (n_customers, 2))
    mean_amount = rng.uniform(5, 100, n_customers)
    std_amount = mean_amount / 2
    mean_per_day = rng.uniform(0, 4, n_customers)
    terminal_xy = rng.uniform(0, 100, (n_terminals, 2))
    offsets, available = _terminals_within(customer_xy, terminal_xy, radius)
    n_available = np.diff(offsets)

    # Transactions, customer by customer and day by day, as whole arrays.
    per_day = rng.poisson(mean_per_day[:, None], (n_customers, n_days))
    per_day[n_available == 0] = 0  # a customer with no terminal in reach never pays
    customer = np.repeat(np.arange(n_customers), per_day.sum(axis=1))
    day = np.repeat(np.tile(np.arange(n_days), n_customers), per_day.ravel())
    in_day = np.trunc(rng.normal(SECONDS_PER_DAY / 2, 20_000, len(customer)))
    kept = (in_day > 0) & (in_day < SECONDS_PER_DAY)
    customer, day, in_day = customer[kept], day[kept], in_day[kept].astype(np.int64)
    n = len(customer)
    amount = rng.normal(mean_amount[customer], std_amount[customer])
    negative = np.flatnonzero(amount < 0)
    amount[negative] = rng.uniform(0, 2 * mean_amount[customer[negative]])
    amount = np.round(amount, 2)
    pick = rng.integers(0, n_available[customer])
    terminal = available[offsets[customer] + pick]

    # Time order (stable: a customer's transactions in one second keep their order) gives the
    # ids; the frame is then put in the contract's order, ties by id as strings.
    seconds = day * SECONDS_PER_DAY + in_day
    order = np.lexsort((customer, seconds))
    customer, terminal, day = customer[order], terminal[order], day[order]
    seconds, amount = seconds[order], amount[order]

    fraud = amount > FRAUD_AMOUNT
    scenario = fraud.astype(np.int8)
    last = int(day.max()) if n else 0  # the book loops over range(TX_TIME_DAYS.max())
    if n:
        hit = _compromised_terminals(rng, terminal, day, n_terminals, last)
        fraud |= hit
        scenario[hit] = 2
    by_customer = np.argsort(customer, kind="stable")  # each customer's rows in time order
    first_row = np.searchsorted(customer[by_customer], np.arange(n_customers + 1))
    for start in range(last):
        candidates = []
        for c in rng.choice(n_customers, CUSTOMERS_PER_DAY, replace=False):
            rows = by_customer[first_row[c] : first_row[c + 1]]
            lo, hi = np.searchsorted(day[rows], (start, start + CUSTOMER_DAYS))
            candidates.append(rows[lo:hi])
        pool = np.sort(np.concatenate(candidates))
        chosen = rng.choice(pool, len(pool) // 3, replace=False)
        amount[chosen] *= CUSTOMER_FACTOR
        fraud[chosen] = True
        scenario[chosen] = 3

    start_us = _start_us(start_date)
    tx_us = start_us + seconds * 1_000_000
    ids = pd.Series(np.arange(n)).astype(str).to_numpy(dtype=object)
    final = sort_order(tx_us, ids)
    customer_names = pd.Series(np.arange(n_customers)).astype(str).to_numpy(dtype=object)
    terminal_names = pd.Series(np.arange(n_terminals)).astype(str).to_numpy(dtype=object)
    frame = pd.DataFrame(
        {
            TRANSACTION_ID: ids[final],
            TX_DATETIME: tx_us[final].astype("datetime64[us]"),
            TX_US: tx_us[final],
            CUSTOMER_ID: customer_names[customer[final]],
            TERMINAL_ID: terminal_names[terminal[final]],
            AMOUNT: amount[final],
            LABEL: fraud[final].astype(np.int8),
        }
    )
    if with_scenario:
        frame[SCENARIO] = scenario[final]
    return frame


def _start_us(start_date: str) -> int:
    """Midnight of `start_date` in µs since the epoch; a date without a zone is UTC."""
    start = pd.Timestamp(start_date)
    start = start.tz_localize("UTC") if start.tzinfo is None else start.tz_convert("UTC")
    return int(start.value // 1_000)
