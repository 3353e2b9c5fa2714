"""Offline behavioural features at the Handbook's size: ours against the Handbook's pandas code.

    python benchmarks/card_features.py [--customers 5000] [--terminals 10000] [--days 183]
                                       [--seed 0] [--repeat 3] [--no-book] [--json PATH]

On the synthetic card set (`fraud_core.cards.synthetic.generate`, about 1.75 M transactions at
the default size), it times `fraud_core.cards.features.compute_features` (best of `--repeat`),
measures its peak memory (tracemalloc: what numpy and pandas allocate during the call), then
runs, in the same process on the same rows, the feature transformation of the
Fraud-Detection-Handbook's chapter 3.4 "Baseline feature transformation" (`is_weekend`,
`is_night`, `get_customer_spending_behaviour_features`, `get_count_risk_rolling_window`, applied
with `groupby(...).apply` per customer and per terminal), once, and compares the two feature by
feature (max absolute difference, rows that differ by more than 1e-9).

The book breaks ties in time by the order of its frame, so it is given the frame in the
contract's (time, transaction id) order, under its own column names.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
import tracemalloc
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fraud_core.cards.definition import DEFAULT, US_PER_DAY
from fraud_core.cards.features import compute_features

BOOK_NAMES = {
    "transaction_id": "TRANSACTION_ID",
    "tx_datetime": "TX_DATETIME",
    "customer_id": "CUSTOMER_ID",
    "terminal_id": "TERMINAL_ID",
    "amount": "TX_AMOUNT",
    "is_fraud": "TX_FRAUD",
}


# ---------------------------------------------------------------------------------------------
# The Handbook's code (Le Borgne et al., "Reproducible Machine Learning for Credit Card Fraud
# Detection - Practical Handbook", chapter 3.4 "Baseline feature transformation"): the same
# functions and pandas calls as published, comments shortened. Only what a benchmark needs was
# changed: none of the logic.
# ---------------------------------------------------------------------------------------------


def is_weekend(tx_datetime: pd.Timestamp) -> int:
    weekday = tx_datetime.weekday()
    return int(weekday >= 5)


def is_night(tx_datetime: pd.Timestamp) -> int:
    tx_hour = tx_datetime.hour
    return int(tx_hour <= 6)


def get_customer_spending_behaviour_features(
    customer_transactions: pd.DataFrame, windows_size_in_days: Sequence[int] = (1, 7, 30)
) -> pd.DataFrame:
    customer_transactions = customer_transactions.sort_values("TX_DATETIME")
    customer_transactions.index = customer_transactions.TX_DATETIME
    for window_size in windows_size_in_days:
        rolling = customer_transactions["TX_AMOUNT"].rolling(str(window_size) + "d")
        sum_amount_tx_window = rolling.sum()
        nb_tx_window = rolling.count()
        avg_amount_tx_window = sum_amount_tx_window / nb_tx_window
        customer_transactions["CUSTOMER_ID_NB_TX_" + str(window_size) + "DAY_WINDOW"] = list(
            nb_tx_window
        )
        customer_transactions["CUSTOMER_ID_AVG_AMOUNT_" + str(window_size) + "DAY_WINDOW"] = list(
            avg_amount_tx_window
        )
    customer_transactions.index = customer_transactions.TRANSACTION_ID
    return customer_transactions


def get_count_risk_rolling_window(
    terminal_transactions: pd.DataFrame,
    delay_period: int = 7,
    windows_size_in_days: Sequence[int] = (1, 7, 30),
    feature: str = "TERMINAL_ID",
) -> pd.DataFrame:
    terminal_transactions = terminal_transactions.sort_values("TX_DATETIME")
    terminal_transactions.index = terminal_transactions.TX_DATETIME
    nb_fraud_delay = terminal_transactions["TX_FRAUD"].rolling(str(delay_period) + "d").sum()
    nb_tx_delay = terminal_transactions["TX_FRAUD"].rolling(str(delay_period) + "d").count()
    for window_size in windows_size_in_days:
        span = str(delay_period + window_size) + "d"
        nb_fraud_delay_window = terminal_transactions["TX_FRAUD"].rolling(span).sum()
        nb_tx_delay_window = terminal_transactions["TX_FRAUD"].rolling(span).count()
        nb_fraud_window = nb_fraud_delay_window - nb_fraud_delay
        nb_tx_window = nb_tx_delay_window - nb_tx_delay
        risk_window = nb_fraud_window / nb_tx_window
        terminal_transactions[feature + "_NB_TX_" + str(window_size) + "DAY_WINDOW"] = list(
            nb_tx_window
        )
        terminal_transactions[feature + "_RISK_" + str(window_size) + "DAY_WINDOW"] = list(
            risk_window
        )
    terminal_transactions.index = terminal_transactions.TRANSACTION_ID
    terminal_transactions.fillna(0, inplace=True)
    return terminal_transactions


def book_features(transactions_df: pd.DataFrame) -> pd.DataFrame:
    """The chapter's transformation cells, in order, on a frame with the book's column names."""
    transactions_df = transactions_df.copy()
    transactions_df["TX_DURING_WEEKEND"] = transactions_df.TX_DATETIME.apply(is_weekend)
    transactions_df["TX_DURING_NIGHT"] = transactions_df.TX_DATETIME.apply(is_night)
    transactions_df = transactions_df.groupby("CUSTOMER_ID").apply(
        lambda x: get_customer_spending_behaviour_features(x, windows_size_in_days=[1, 7, 30])
    )
    transactions_df = transactions_df.sort_values("TX_DATETIME").reset_index(drop=True)
    transactions_df = transactions_df.groupby("TERMINAL_ID").apply(
        lambda x: get_count_risk_rolling_window(
            x, delay_period=7, windows_size_in_days=[1, 7, 30], feature="TERMINAL_ID"
        )
    )
    return transactions_df.sort_values("TX_DATETIME").reset_index(drop=True)


# ---------------------------------------------------------------------------------------------


def transactions(n_customers: int, n_terminals: int, n_days: int, seed: int) -> pd.DataFrame:
    """The synthetic card set in the contract's canonical layout."""
    try:
        from fraud_core.cards.synthetic import generate
    except ImportError:  # the generator lands with another change: a plain random set instead
        return _random_transactions(n_customers, n_terminals, n_days, seed)
    return generate(n_customers=n_customers, n_terminals=n_terminals, n_days=n_days, seed=seed)


def _random_transactions(
    n_customers: int, n_terminals: int, n_days: int, seed: int
) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = int(n_customers * n_days * 1.9)  # ~1.75 M at the Handbook's size
    tx_us = 1_522_540_800_000_000 + rng.integers(0, n_days * 86_400, n) * 1_000_000
    ids = pd.Series(np.arange(n)).astype(str).to_numpy(dtype=object)
    frame = pd.DataFrame(
        {
            "transaction_id": ids,
            "tx_datetime": tx_us.astype("datetime64[us]"),
            "tx_us": tx_us,
            "customer_id": rng.integers(0, n_customers, n).astype(str).astype(object),
            "terminal_id": rng.integers(0, n_terminals, n).astype(str).astype(object),
            "amount": np.round(rng.gamma(2.0, 30.0, n), 2),
            "is_fraud": (rng.random(n) < 0.0084).astype(np.int8),
        }
    )
    order = np.lexsort((frame["transaction_id"].to_numpy().astype(str), tx_us))
    return frame.iloc[order].reset_index(drop=True)


def time_ours(
    frame: pd.DataFrame, repeat: int
) -> tuple[pd.DataFrame, list[float], list[float], int]:
    """`compute_features`' result, wall and CPU seconds of `repeat` runs, traced peak bytes."""
    times, cpu = [], []
    result = compute_features(frame)  # warm-up: imports, first-touch of pages
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = compute_features(frame)
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    tracemalloc.start()
    compute_features(frame)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return result, times, cpu, peak


def compare(ours: pd.DataFrame, frame: pd.DataFrame, book: pd.DataFrame) -> dict[str, Any]:
    """Per feature: the largest absolute difference and the rows differing by more than 1e-9.

    The book sorts each customer's rows with `sort_values` (quicksort: not stable), so rows of
    one customer at the same instant may swap places there; they are counted apart.
    """
    book = book.set_index("TRANSACTION_ID").loc[frame["transaction_id"].to_numpy()]
    tied = frame.duplicated(["customer_id", "tx_us"], keep=False).to_numpy()
    out: dict[str, Any] = {"rows_in_customer_ties": int(tied.sum())}
    for name in DEFAULT.feature_names:
        diff = np.abs(ours[name].to_numpy(np.float64) - book[name].to_numpy(np.float64))
        out[name] = {
            "max_abs_diff": float(diff.max()),
            "max_abs_diff_outside_ties": float(diff[~tied].max()),
            "rows_over_1e-9": int((diff > 1e-9).sum()),
            "rows_over_1e-9_outside_ties": int((diff[~tied] > 1e-9).sum()),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=5000)
    parser.add_argument("--terminals", type=int, default=10000)
    parser.add_argument("--days", type=int, default=183)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-book", action="store_true", help="skip the Handbook's code")
    parser.add_argument("--json", type=Path, help="write the figures here as well")
    args = parser.parse_args()

    start = time.perf_counter()
    frame = transactions(args.customers, args.terminals, args.days, args.seed)
    generated_s = time.perf_counter() - start
    t = frame["tx_us"].to_numpy()
    span_days = (int(t[-1]) - int(t[0])) / US_PER_DAY
    print(
        f"{len(frame):,} transactions, {frame['customer_id'].nunique():,} customers, "
        f"{frame['terminal_id'].nunique():,} terminals, {span_days:.1f} days, "
        f"{frame['is_fraud'].mean():.2%} fraud (generated in {generated_s:.1f} s)"
    )
    ours, times, cpu, peak = time_ours(frame, args.repeat)
    figures: dict[str, Any] = {
        "rows": len(frame),
        "ours_s": times,
        "ours_best_s": min(times),
        "ours_cpu_s": cpu,
        "ours_peak_traced_bytes": peak,
        "input_frame_bytes": int(frame.memory_usage(deep=True).sum()),
    }
    print(
        f"ours: best {min(times):.3f} s of {[round(x, 3) for x in times]} (CPU "
        f"{[round(x, 3) for x in cpu]}); peak traced memory "
        f"{peak / 2**20:.0f} MiB (input frame {figures['input_frame_bytes'] / 2**20:.0f} MiB)"
    )
    if not args.no_book:
        named = frame.rename(columns=BOOK_NAMES)[list(BOOK_NAMES.values())]
        start = time.perf_counter()
        with warnings.catch_warnings():
            # pandas 2.x warns that apply sees the grouping column: the book's code relies on it.
            warnings.simplefilter("ignore", FutureWarning)
            book = book_features(named)
        book_s = time.perf_counter() - start
        differences = compare(ours, frame, book)
        figures |= {"book_s": book_s, "ratio": book_s / min(times), "differences": differences}
        print(f"book: {book_s:.1f} s, {book_s / min(times):.1f}x ours")
        print(
            f"  rows of one customer at one instant (tie order: ours by id, the book's by its "
            f"unstable sort): {differences['rows_in_customer_ties']}"
        )
        for name in DEFAULT.feature_names:
            d = differences[name]
            print(
                f"  {name:36s} max |ours - book| {d['max_abs_diff']:<9.3g} "
                f"rows > 1e-9: {d['rows_over_1e-9']:<3d} outside ties: "
                f"{d['max_abs_diff_outside_ties']:<9.3g} rows: {d['rows_over_1e-9_outside_ties']}"
            )
    figures["max_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(f"process peak RSS {figures['max_rss_bytes'] / 2**20:.0f} MiB")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
