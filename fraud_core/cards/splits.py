"""Time-ordered splits of card transactions, the label delay left out before validation and test.

The Fraud-Detection-Handbook's protocol (chapter 3, "Baseline fraud detection system"): the
labels of the last days before a model is deployed are not known yet when it is trained, so the
`delay_days` before the validation period and before the test period belong to no split. The
features are computed on the WHOLE history first (`fraud_core.cards.features`): a test
transaction's features see the gap's transactions, as the served model's state would, and the
terminal risk windows end `delay_days` before each transaction, so no split's features use a
label its model could not have known.

The cut points are whole UTC days: each split gets its fraction (the Kaggle contract's row
fractions) of the days outside the two delays:

    [ train | gap (delay) ][ validation | gap (delay) ][ test ]
    day 0                  b1                          b2          last day

`history` is what the served model's state must start from: the labelled transactions of the
last `definition.retention_us` of the WHOLE data set, test period included (the bundle's
`history.parquet`). The model is deployed after the last transaction of the data and scores
transactions that come after it; their offline features count every earlier transaction in
their windows, so the state must hold those too. Labels of its last `delay_days` are there
but count only for transactions more than the delay later, as offline.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from fraud_core.cards.definition import (
    CANONICAL_COLUMNS,
    HISTORY_COLUMNS,
    TRANSACTION_ID,
    TX_DATETIME,
    TX_US,
    US_PER_DAY,
    FeatureDefinition,
)
from fraud_core.cards.features import feature_matrix
from fraud_core.cards.schema import sort_order
from fraud_core.contracts import CARDS
from fraud_core.data import Splits


@dataclass(frozen=True)
class DayPlan:
    """Where the periods start and end, as day numbers since the epoch (UTC), ends exclusive."""

    first_day: int
    validation_day: int
    test_day: int
    end_day: int
    delay_days: int

    @property
    def train_end(self) -> int:
        return self.validation_day - self.delay_days

    @property
    def validation_end(self) -> int:
        return self.test_day - self.delay_days

    def periods(self) -> dict[str, tuple[int, int]]:
        return {
            "train": (self.first_day, self.train_end),
            "validation_gap": (self.train_end, self.validation_day),
            "validation": (self.validation_day, self.validation_end),
            "test_gap": (self.validation_end, self.test_day),
            "test": (self.test_day, self.end_day),
        }

    def describe(self) -> dict[str, str]:
        """Each period's first and last day, ISO dates."""
        return {
            name: f"{_day(start)}..{_day(end - 1)}" if end > start else "-"
            for name, (start, end) in self.periods().items()
        }


def _day(day: int) -> str:
    return str(np.datetime64(int(day), "D"))


def plan_days(
    first_day: int,
    last_day: int,
    delay_days: int,
    validation_fraction: float = 0.2,
    test_fraction: float = 0.2,
) -> DayPlan:
    """The cut days for data from `first_day` to `last_day` (inclusive); ValueError if too short."""
    if not (0 < validation_fraction < 1 and 0 < test_fraction < 1):
        raise ValueError("validation_fraction and test_fraction must be in (0, 1)")
    if validation_fraction + test_fraction >= 1:
        raise ValueError("validation_fraction + test_fraction must leave rows to train on")
    n_days = last_day - first_day + 1
    # The fractions are of the days that belong to a split: the two delays belong to none. (Of
    # the whole span, both delays came out of train and validation alone, and a 28-day window
    # with a 7-day delay could not be cut at all.)
    labelled = max(n_days - 2 * delay_days, 0)
    train_days = round(labelled * (1 - validation_fraction - test_fraction))
    validation_days = round(labelled * (1 - test_fraction)) - train_days
    validation_day = first_day + train_days + delay_days
    plan = DayPlan(
        first_day=first_day,
        validation_day=validation_day,
        test_day=validation_day + validation_days + delay_days,
        end_day=last_day + 1,
        delay_days=delay_days,
    )
    empty = [name for name, (start, end) in plan.periods().items() if end <= start]
    if empty:
        raise ValueError(
            f"{n_days} days of transactions ({_day(first_day)} to {_day(last_day)}) are too few "
            f"to cut train / validation / test at fractions "
            f"{1 - validation_fraction - test_fraction:.2f} / {validation_fraction:.2f} / "
            f"{test_fraction:.2f} with a {delay_days}-day label "
            f"delay left out before validation and before test: {', '.join(empty)} would be empty"
        )
    return plan


def fingerprint_cards(frame: pd.DataFrame) -> str:
    """A sha256 of a canonical frame's content in its (time, id) order, whatever file it came from.

    Hashing the raw bytes of each column (strings through Arrow's buffers) is some ten times
    faster than a hash per row of text columns, and as exact.
    """
    digest = hashlib.sha256()
    for name in CANONICAL_COLUMNS:
        if name not in frame.columns or name == TX_DATETIME:  # tx_datetime is tx_us
            continue
        values = frame[name]
        digest.update(name.encode())
        if pd.api.types.is_numeric_dtype(values):
            digest.update(np.ascontiguousarray(values.to_numpy()).tobytes())
            continue
        array = pa.array(values.astype(str), type=pa.large_string())
        for buffer in array.buffers()[1:]:
            digest.update(memoryview(buffer) if buffer is not None else b"")
    return digest.hexdigest()


def split_cards(
    frame: pd.DataFrame,
    features: pd.DataFrame,
    definition: FeatureDefinition,
    validation_fraction: float = 0.2,
    test_fraction: float = 0.2,
    source: str = "unknown",
    history_from: pd.DataFrame | None = None,
) -> tuple[Splits, DayPlan]:
    """Cut a canonical labelled frame and its features (same index) into delay-gapped splits.

    `frame` is sorted by (`tx_us`, `transaction_id`) (`fraud_core.cards.schema.conform`);
    `features` is `compute_features(frame, definition)`, on the whole history. `history_from`
    (canonical, sorted, up to `frame`'s newest transaction) is where the served state's history
    comes from when `frame` is a window shorter than the retention: else `frame` itself.
    """
    if len(frame) == 0:
        raise ValueError("no card transactions to split")
    if not features.index.equals(frame.index):
        raise ValueError("the features must have the frame's index (compute_features keeps it)")
    tx_us = frame[TX_US].to_numpy(np.int64)
    if np.any(np.diff(tx_us) < 0):
        raise ValueError("the frame must be sorted by time (fraud_core.cards.schema.conform)")
    days = tx_us // US_PER_DAY
    plan = plan_days(
        int(days[0]), int(days[-1]), definition.delay_days, validation_fraction, test_fraction
    )
    whole = frame[list(CANONICAL_COLUMNS)].join(features[list(definition.feature_names)])

    def rows(start_day: int, end_day: int) -> pd.DataFrame:
        lo, hi = np.searchsorted(tx_us, [start_day * US_PER_DAY, end_day * US_PER_DAY])
        return whole.iloc[lo:hi].reset_index(drop=True)

    periods = plan.periods()
    parts = {name: rows(*bounds) for name, bounds in periods.items()}
    gaps = pd.concat([parts["validation_gap"], parts["test_gap"]], ignore_index=True)
    history = _history(frame if history_from is None else history_from, int(tx_us[-1]), definition)
    splits = Splits(
        train=parts["train"],
        validation=parts["validation"],
        test=parts["test"],
        fingerprint=fingerprint_cards(frame),
        source=source,
        contract=CARDS,
        feature_definition=definition,
        history=history,
        gaps=gaps,
    )
    return splits, plan


def _history(source: pd.DataFrame, newest_us: int, definition: FeatureDefinition) -> pd.DataFrame:
    """Everything after `newest - retention` (the state's own cut-off rule), up to the newest."""
    tx_us = source[TX_US].to_numpy(np.int64)
    lo, hi = np.searchsorted(tx_us, [newest_us - definition.retention_us, newest_us], side="right")
    return source.iloc[int(lo) : int(hi)][list(HISTORY_COLUMNS)].reset_index(drop=True)


def whole_history(splits: Splits) -> pd.DataFrame:
    """Every transaction of the splits and their gaps, canonical columns, in time order."""
    parts = [splits.train, splits.validation, splits.test]
    if splits.gaps is not None:
        parts.append(splits.gaps)
    whole = pd.concat([p[list(CANONICAL_COLUMNS)] for p in parts], ignore_index=True)
    order = sort_order(whole[TX_US].to_numpy(np.int64), whole[TRANSACTION_ID].to_numpy())
    return whole.iloc[order].reset_index(drop=True)


def features_under(splits: Splits, definition: FeatureDefinition) -> np.ndarray:
    """The test rows' features under another `definition` (a champion trained with other windows).

    They are recomputed from the whole history, gaps included, as that model's state would have
    seen it; the test period is the history's last days, so its rows come last, in order.
    """
    if definition == splits.feature_definition:
        return splits.arrays(splits.test)[0]
    whole = whole_history(splits)
    values = feature_matrix(whole, definition)
    return values[len(whole) - len(splits.test) :]
