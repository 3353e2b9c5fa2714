"""The behavioural features of a whole card-transaction history at once (the offline path).

It computes exactly what `fraud_core.cards.definition` writes down (its docstring is the rule),
vectorised: one sort of the rows by (time, transaction id); then, per key (customer, terminal),
a stable sort by key of that order, so each key's rows sit together in (time, id) order; window
edges found by binary search over those per-key sorted times; window sums from per-key prefix
sums. No Python loop over rows or keys.

Window bounds are searched on one sorted int64 array per key kind, `key * M + (t - t_min)`,
with M larger than the time span plus the longest window offset, so a query `t - offset` never
reaches the previous key's rows. When that cannot be represented in int64 (a span of centuries
over thousands of keys), times are first replaced by their rank among the distinct times, which
keeps every comparison `y.t <= t - offset` exact and always fits.

Amount sums come from prefix sums restarted at each key (a single global cumsum would carry a
rounding error proportional to the running total of every key before). Fraud counts are
integers, so their prefix sums are exact.

`key_features` computes one key kind's windows alone, with the same code: a key's values depend
on its own rows only, so any frame holding all of a key's rows gives them exactly
(`fraud_core.scale.features` computes them per hash partition of the keys).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd

from fraud_core.cards.definition import (
    AMOUNT,
    CUSTOMER_ID,
    DEFAULT,
    HISTORY_COLUMNS,
    LABEL,
    TERMINAL_ID,
    TRANSACTION_ID,
    TX_US,
    US_PER_DAY,
    FeatureDefinition,
    calendar_arrays,
)

#: The columns `compute_features` reads (any other column is ignored).
REQUIRED: tuple[str, ...] = HISTORY_COLUMNS

Method = Literal["auto", "composite", "ranks"]
#: The key kinds whose window features `key_features` computes alone.
Kind = Literal["customer", "terminal"]
#: The columns `key_features` reads for each kind: a key's windows need nothing of other keys.
KIND_COLUMNS: dict[str, tuple[str, ...]] = {
    "customer": (TRANSACTION_ID, TX_US, CUSTOMER_ID, AMOUNT),
    "terminal": (TRANSACTION_ID, TX_US, TERMINAL_ID, LABEL),
}

_INT64_MAX = int(np.iinfo(np.int64).max)


def compute_features(
    frame: pd.DataFrame, definition: FeatureDefinition = DEFAULT, *, method: Method = "auto"
) -> pd.DataFrame:
    """The features of every row of `frame`: columns `definition.feature_names`, float64.

    `frame` may be in any order; the result has its index and row order. It needs
    `transaction_id`, `tx_us` (int64 µs), `customer_id`, `terminal_id`, `amount` and `is_fraud`
    (0/1). `method` picks how window bounds are searched: "auto" (the composite int64 key when
    it fits, else ranks), or one of them forced ("composite" raises if it would overflow).
    """
    values = _feature_values(frame, definition, method)
    return pd.DataFrame(values, columns=list(definition.feature_names), index=frame.index)


def feature_matrix(frame: pd.DataFrame, definition: FeatureDefinition = DEFAULT) -> np.ndarray:
    """The (n, len(feature_names)) float64 matrix in model order, rows in `frame`'s order."""
    return _feature_values(frame, definition, "auto")


def kind_columns(definition: FeatureDefinition, kind: Kind) -> tuple[str, ...]:
    """The feature names of one key kind's windows, in model order."""
    names = definition.feature_names
    n_customer = 2 * len(definition.customer_windows_days)
    if kind == "customer":
        return names[3 : 3 + n_customer]
    if kind == "terminal":
        return names[3 + n_customer :]
    raise ValueError(f"kind must be 'customer' or 'terminal', got {kind!r}")


def key_features(
    frame: pd.DataFrame,
    definition: FeatureDefinition = DEFAULT,
    kind: Kind = "customer",
    *,
    method: Method = "auto",
) -> pd.DataFrame:
    """One key kind's window features of every row: columns `kind_columns(definition, kind)`.

    The same computation as `compute_features` for those columns, on `KIND_COLUMNS[kind]` only.
    A key's values depend on that key's rows alone, so a frame holding every row of some keys
    gives those rows exactly their `compute_features` values (how the Dask path partitions).
    """
    columns = kind_columns(definition, kind)
    _require(frame, KIND_COLUMNS[kind])
    n = len(frame)
    out = np.empty((n, len(columns)), dtype=np.float64, order="F")
    if n:
        t = _int64_times(frame[TX_US])
        order = time_order(t, frame[TRANSACTION_ID].to_numpy())
        if kind == "customer":
            amount = frame[AMOUNT].to_numpy(dtype=np.float64)[order]
            _customer_windows(out, 0, frame, definition, method, order, t[order], amount)
        else:
            fraud = _labels(frame[LABEL])[order]
            _terminal_windows(out, 0, frame, definition, method, order, t[order], fraud)
    return pd.DataFrame(out, columns=list(columns), index=frame.index)


def _require(frame: pd.DataFrame, columns: tuple[str, ...]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(
            f"card features need the columns {list(columns)}; missing: {missing} "
            f"(columns present: {list(frame.columns)})"
        )


def _feature_values(
    frame: pd.DataFrame, definition: FeatureDefinition, method: Method
) -> np.ndarray:
    _require(frame, REQUIRED)
    n = len(frame)
    names = definition.feature_names
    # Column-major: each feature is written (scattered) into a contiguous column, and pandas
    # takes the array as its block without a copy.
    out = np.empty((n, len(names)), dtype=np.float64, order="F")
    if n == 0:
        return out
    t = _int64_times(frame[TX_US])
    order = time_order(t, frame[TRANSACTION_ID].to_numpy())
    ts = t[order]
    out[:, 0] = frame[AMOUNT].to_numpy(dtype=np.float64)
    out[:, 1], out[:, 2] = calendar_arrays(t, definition.night_end_hour)
    amount = out[order, 0]
    fraud = _labels(frame[LABEL])[order]
    # Window values are computed in grouped order and written straight to their rows of the
    # frame (`order[group.rows]`): no second (n, 15) array in sorted order.
    col = _customer_windows(out, 3, frame, definition, method, order, ts, amount)
    # The customer arrays are freed on return, before the terminal ones: lower peak memory.
    _terminal_windows(out, col, frame, definition, method, order, ts, fraud)
    return out


def _customer_windows(
    out: np.ndarray,
    col: int,
    frame: pd.DataFrame,
    definition: FeatureDefinition,
    method: Method,
    order: np.ndarray,
    ts: np.ndarray,
    amount: np.ndarray,
) -> int:
    """Write the customer windows' (count, mean) columns from `col`; return the next column.

    `order` is the (time, id) order of the frame's rows, `ts` and `amount` in that order.
    """
    n = len(order)
    windows = [w * US_PER_DAY for w in definition.customer_windows_days]
    codes, n_keys = _key_codes(frame[CUSTOMER_ID])
    group = _KeyGroups(codes[order], n_keys, ts, max(windows), method)
    rows = order[group.rows]
    totals = group.prefix_sums(amount)
    last = np.arange(1, n + 1, dtype=np.int64)  # a grouped row's window ends with the row itself
    for w in windows:
        start = group.count_at_most(w)  # rows of the key with y.t <= t - w come before
        count = last - start
        window_sum = totals - group.prefix_before(totals, start)
        out[:, col][rows] = count  # a column of the F-ordered array: a contiguous view
        out[:, col + 1][rows] = window_sum / count
        col += 2
    return col


def _terminal_windows(
    out: np.ndarray,
    col: int,
    frame: pd.DataFrame,
    definition: FeatureDefinition,
    method: Method,
    order: np.ndarray,
    ts: np.ndarray,
    fraud: np.ndarray,
) -> int:
    """Write the terminal windows' (count, risk) columns from `col`; return the next column."""
    n = len(order)
    delay = definition.delay_days * US_PER_DAY
    windows = [w * US_PER_DAY for w in definition.terminal_windows_days]
    codes, n_keys = _key_codes(frame[TERMINAL_ID])
    group = _KeyGroups(codes[order], n_keys, ts, delay + max(windows), method)
    rows = order[group.rows]
    # Integers: a global prefix sum is exact, and differences within one key are what count.
    frauds = np.concatenate(([0], np.cumsum(fraud[group.rows], dtype=np.int64)))
    end = group.count_at_most(delay)
    for w in windows:
        start = group.count_at_most(delay + w)
        count = end - start
        risk = np.divide(
            frauds[end] - frauds[start],
            count,
            out=np.zeros(n, dtype=np.float64),
            where=count > 0,
        )
        out[:, col][rows] = count
        out[:, col + 1][rows] = risk
        col += 2
    return col


def time_order(tx_us: np.ndarray, transaction_ids: np.ndarray | Sequence[object]) -> np.ndarray:
    """The permutation that sorts rows by (time, transaction id as a string).

    A stable sort by time, then only the rows whose time is shared by another one are sorted
    again by (time, id): ties are usually a small part of a data set, and comparing strings is
    the expensive part. numpy compares str arrays by code point, as Python compares str.
    """
    order = np.argsort(tx_us, kind="stable")
    ts = tx_us[order]
    tie = ts[1:] == ts[:-1]
    if tie.any():
        in_tie = np.zeros(len(ts), dtype=bool)
        in_tie[1:] |= tie
        in_tie[:-1] |= tie
        at = np.flatnonzero(in_tie)  # positions in time order; times ascending along them
        rows = order[at]
        tied_ids = np.asarray(transaction_ids, dtype=object)[rows].astype(str)
        order[at] = rows[np.lexsort((tied_ids, ts[at]))]
    return order


class _KeyGroups:
    """The rows of one key kind, grouped by key in (time, id) order, and a search over them.

    `rows[j]` is the time-sorted position of the j-th grouped row; `count_at_most(offset)[j]`
    is the grouped position of the first row of j's key later than `t_j - offset`, i.e. the
    key's start plus the number of its rows with y.t <= t_j - offset.
    """

    def __init__(
        self, codes: np.ndarray, n_keys: int, ts: np.ndarray, max_offset: int, method: Method
    ) -> None:
        # `codes` are the time-sorted rows' key numbers (0 .. n_keys - 1). Small integers sort
        # by radix: much faster than a comparison sort of int64.
        small = codes.astype(np.uint16) if n_keys <= np.iinfo(np.uint16).max else codes
        self.rows = np.argsort(small, kind="stable")
        self.codes = codes[self.rows].astype(np.int64)
        sizes = np.bincount(codes, minlength=n_keys)
        self.key_start = np.repeat(np.cumsum(sizes) - sizes, sizes)
        t = ts[self.rows]
        t_min = int(ts[0])
        span = int(ts[-1]) - t_min
        # M > span + max_offset keeps `key * M + (t - t_min) - offset` above the previous key's
        # largest value; the queries go down to -max_offset.
        m = span + max_offset + 1
        fits = n_keys * m <= _INT64_MAX
        if method == "composite" and not fits:
            raise ValueError(
                f"{n_keys} keys over a span of {span} µs overflow the composite int64 key"
            )
        self._distinct: np.ndarray | None = None
        if method == "ranks" or (method == "auto" and not fits):
            # Rank r(x) = number of distinct times <= x: y.t <= v exactly when r(y.t) <= r(v),
            # and key * (distinct + 1) + rank always fits.
            self._distinct = np.unique(ts)
            self._t = t
            self._base = self.codes * (len(self._distinct) + 1)
            self._sorted = self._base + np.searchsorted(self._distinct, t, side="right")
        else:
            self._sorted = self.codes * m + (t - t_min)

    def count_at_most(self, offset: int) -> np.ndarray:
        """Per grouped row j: the grouped position after its key's rows with y.t <= t_j - offset."""
        if self._distinct is None:
            queries = self._sorted - offset
        else:
            queries = self._base + np.searchsorted(self._distinct, self._t - offset, side="right")
        return np.searchsorted(self._sorted, queries, side="right")

    def prefix_sums(self, values: np.ndarray) -> np.ndarray:
        """Inclusive prefix sums of `values` (time-sorted) in grouped order, restarted per key."""
        grouped = values[self.rows]
        return pd.Series(grouped).groupby(self.codes, sort=False).cumsum().to_numpy(np.float64)

    def prefix_before(self, totals: np.ndarray, start: np.ndarray) -> np.ndarray:
        """The key's prefix sum just before grouped position `start` (0 at the key's first row)."""
        inside = start > self.key_start
        return np.where(inside, totals[np.maximum(start - 1, 0)], 0.0)


def _key_codes(keys: pd.Series) -> tuple[np.ndarray, int]:
    """Each row's key as a number 0 .. n_keys - 1 (hashing the column once, in frame order)."""
    codes, uniques = pd.factorize(keys.to_numpy())
    if len(codes) and codes.min() < 0:
        rows = keys.index[codes < 0][:5].tolist()
        raise ValueError(f"column {keys.name!r} has empty keys, e.g. at rows {rows}")
    return codes, len(uniques)


def _int64_times(values: pd.Series) -> np.ndarray:
    if not pd.api.types.is_integer_dtype(values.dtype):
        raise ValueError(f"column {TX_US!r} must hold int64 microseconds, not {values.dtype}")
    return values.to_numpy(dtype=np.int64)


def _labels(values: pd.Series) -> np.ndarray:
    labels = values.to_numpy()
    if labels.dtype.kind not in "biuf":
        raise ValueError(f"column {LABEL!r} must hold 0/1 labels, not {values.dtype}")
    bad = (labels != 0) & (labels != 1)
    if bad.any():
        rows = values.index[bad][:5].tolist()
        raise ValueError(
            f"column {LABEL!r} must hold 0/1 labels: {int(bad.sum())} rows do not, e.g. {rows}"
        )
    return labels.astype(np.int64)
