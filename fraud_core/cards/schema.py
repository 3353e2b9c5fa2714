"""The card-transactions contract: columns, the Handbook's names, checks, the canonical frame.

A file of raw card transactions has `transaction_id`, `tx_datetime`, `customer_id`,
`terminal_id`, `amount` and (to train on) `is_fraud`, or the same columns under the
Fraud-Detection-Handbook's names. `problems` reports everything wrong with such a frame at once,
each problem naming the column, the count and example rows as `file:line`; `conform` turns a
clean one into the canonical frame that features, training and the API share. Every check is
vectorised: real files have millions of rows.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from fraud_core import schema as kaggle
from fraud_core.cards.definition import (
    AMOUNT,
    CANONICAL_COLUMNS,
    COLUMNS,
    CUSTOMER_ID,
    LABEL,
    REQUEST_FIELDS,
    TERMINAL_ID,
    TRANSACTION_ID,
    TX_DATETIME,
    TX_US,
)
from fraud_core.cards.values import id_strings, ids_of, parse_datetimes, times_of
from fraud_core.schema import Problem, describe_sources, locate

__all__ = [
    "CANONICAL_COLUMNS",
    "HANDBOOK_COLUMNS",
    "conform",
    "contract_columns",
    "contract_of",
    "id_strings",
    "ignored_columns",
    "parse_datetimes",
    "problems",
    "sort_order",
]

#: The Handbook's simulated-data column names, and the contract's names for them.
HANDBOOK_COLUMNS: dict[str, str] = {
    "TRANSACTION_ID": TRANSACTION_ID,
    "TX_DATETIME": TX_DATETIME,
    "CUSTOMER_ID": CUSTOMER_ID,
    "TERMINAL_ID": TERMINAL_ID,
    "TX_AMOUNT": AMOUNT,
    "TX_FRAUD": LABEL,
}
_HANDBOOK_NAME = {canonical: name for name, canonical in HANDBOOK_COLUMNS.items()}
ID_COLUMNS: tuple[str, ...] = (TRANSACTION_ID, CUSTOMER_ID, TERMINAL_ID)


def _name(column: Any) -> str:
    return str(column).strip().strip('"')


def contract_columns(columns: Iterable[Any]) -> dict[str, str]:
    """The columns the contract reads, as {name in the frame or file: canonical name}.

    A canonical name wins over the Handbook's when a file has both; the other is ignored.
    """
    names = [_name(c) for c in columns]
    present = set(names)
    out: dict[str, str] = {}
    for raw, name in zip(columns, names, strict=True):
        if name in COLUMNS:
            out[str(raw)] = name
        elif name in HANDBOOK_COLUMNS and HANDBOOK_COLUMNS[name] not in present:
            out[str(raw)] = HANDBOOK_COLUMNS[name]
    return out


def ignored_columns(columns: Iterable[Any]) -> list[str]:
    """Columns nobody reads (a fraud scenario, the Handbook's day counters): never features."""
    columns = list(columns)
    read = contract_columns(columns)
    return [str(c) for c in columns if str(c) not in read]


def contract_of(columns: Iterable[Any]) -> str | None:
    """ "kaggle" or "cards" by a file's columns, or None when it looks like neither.

    A contract is recognised from at least half of its columns, and more of them than the
    other's, so that a file missing a column is still recognised and the checks can name it.
    """
    names = {_name(c) for c in columns}
    kaggle_share = len(names & set(kaggle.COLUMNS)) / len(kaggle.COLUMNS)
    cards_share = len(set(contract_columns(names).values())) / len(COLUMNS)
    if max(kaggle_share, cards_share) < 0.5 or kaggle_share == cards_share:
        return None
    return "kaggle" if kaggle_share > cards_share else "cards"


def _canonical_view(frame: pd.DataFrame) -> dict[str, pd.Series]:
    """The contract's columns by canonical name, Handbook names renamed (no copy)."""
    read = contract_columns(frame.columns)
    return {read[str(c)]: frame[c] for c in frame.columns if str(c) in read}


def _label(frame: pd.DataFrame, column: str) -> str:
    """`column amount`, with the file's own name when the loader renamed it."""
    original = frame.attrs.get("column_names", {}).get(column)
    if original is None and column not in frame.columns and _HANDBOOK_NAME[column] in frame:
        original = _HANDBOOK_NAME[column]
    return f"column {column}" + (f" ({original} in the file)" if original else "")


def _examples(values: pd.Series, bad: np.ndarray) -> str:
    return ", ".join(repr(values.iloc[i]) for i in bad[:3])


def _problem(
    frame: pd.DataFrame, kind: str, column: str, bad: np.ndarray, what: str, values: pd.Series
) -> Problem:
    rows = locate(frame, bad)
    shown = f"e.g. {_examples(values, bad)} at " if kind != "nulls" else "e.g. at "
    return Problem(
        kind,
        column,
        len(bad),
        f"{describe_sources(frame)}: {_label(frame, column)} has {len(bad)} {what}, "
        f"{shown}{', '.join(rows)}",
        rows,
    )


# -- the checks -----------------------------------------------------------------------------


def _numbers(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(float64 values, mask of text that is not a number)."""
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        return values.to_numpy(dtype=np.float64, na_value=np.nan), np.zeros(len(values), bool)
    coerced = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    return coerced, np.isnan(coerced) & values.notna().to_numpy()


def _inspect(frame: pd.DataFrame, labelled: bool) -> tuple[list[Problem], dict[str, np.ndarray]]:
    """Every problem of `frame`, and its columns converted (used by `conform` when clean)."""
    where = describe_sources(frame)
    view = _canonical_view(frame)
    found: list[Problem] = []
    parts: dict[str, np.ndarray] = {}
    if len(frame) == 0:
        found.append(Problem("empty", None, 0, f"{where}: no rows"))
    required = COLUMNS if labelled else REQUEST_FIELDS
    missing = [c for c in required if c not in view]
    if missing:
        found.append(
            Problem(
                "missing_column",
                missing[0],
                len(missing),
                f"{where}: missing column(s) {', '.join(missing)} (Handbook names: "
                f"{', '.join(_HANDBOOK_NAME[c] for c in missing)})",
            )
        )
    for name in required:
        if name not in view:
            continue
        values = view[name]
        null = values.isna().to_numpy()
        if null.any():
            found.append(_problem(frame, "nulls", name, np.flatnonzero(null), "missing value(s)",
                                  values))  # fmt: skip
        if name in ID_COLUMNS:
            parts[name], invalid = ids_of(values, null)
            if invalid.any():
                what = "invalid id(s) (a string without control characters, or an integer)"
                found.append(_problem(frame, "id", name, np.flatnonzero(invalid), what, values))
        elif name == TX_DATETIME:
            parts[TX_US], bad = times_of(values, null)
            if bad.any():
                what = "value(s) that are not ISO 8601 datetimes"
                found.append(_problem(frame, "datetime", name, np.flatnonzero(bad), what, values))
        elif name == AMOUNT:
            parts[name], text = _numbers(values)
            if text.any():
                found.append(_problem(frame, "not_numeric", name, np.flatnonzero(text),
                                      "non-numeric value(s)", values))  # fmt: skip
            with np.errstate(invalid="ignore"):
                out_of_range = (parts[name] < 0) | np.isinf(parts[name])
            if out_of_range.any():
                what = "value(s) out of range (must be finite and >= 0)"
                found.append(_problem(frame, "range", name, np.flatnonzero(out_of_range), what,
                                      values))  # fmt: skip
        else:  # the label
            numbers, _ = _numbers(values)
            other = ~np.isin(numbers, (0.0, 1.0)) & ~null
            parts[name] = np.where(other | null, 0, numbers).astype(np.int8)
            if other.any():
                found.append(_problem(frame, "label", name, np.flatnonzero(other),
                                      "value(s) other than 0/1", values))  # fmt: skip
    if TRANSACTION_ID in parts:
        found.extend(_duplicates(frame, parts[TRANSACTION_ID]))
    return found, parts


def _duplicates(frame: pd.DataFrame, ids: np.ndarray) -> list[Problem]:
    """Rows whose transaction_id an earlier row already has: count and the first pairs."""
    repeated = pd.Series(ids).duplicated(keep=False).to_numpy()
    if not repeated.any():
        return []
    # Null and invalid ids are None here: reported by their own checks, not as duplicates.
    involved = np.flatnonzero(repeated & ~pd.isna(ids))
    if not len(involved):
        return []
    repeated_ids = ids[involved]
    distinct = pd.unique(repeated_ids)
    repeats = len(involved) - len(distinct)
    pairs, rows = [], []
    for value in distinct[:3]:
        where = locate(frame, involved[repeated_ids == value], limit=2)
        rows += where
        pairs.append(f"{value!r} at {' and '.join(where)}")
    return [
        Problem(
            "duplicate_id",
            TRANSACTION_ID,
            repeats,
            f"{describe_sources(frame)}: {_label(frame, TRANSACTION_ID)} has {repeats} "
            f"row(s) repeating an earlier id ({len(distinct)} distinct id(s)), "
            f"e.g. {'; '.join(pairs)}",
            rows,
        )
    ]


def problems(frame: pd.DataFrame, *, labelled: bool = True) -> list[Problem]:
    """Everything wrong with a frame of card transactions, all at once.

    Missing columns, nulls, invalid ids, duplicate transaction ids, unparseable datetimes,
    non-numeric, negative or infinite amounts and labels other than 0/1 (when `labelled`); each
    problem names the column, the count and example rows as `file:line` (`attrs["sources"]`).
    """
    return _inspect(frame, labelled)[0]


def sort_order(tx_us: np.ndarray, transaction_ids: np.ndarray) -> np.ndarray:
    """Positions in the contract's order: by time, ties by transaction_id as Python strings."""
    order = np.argsort(tx_us, kind="stable")
    t = tx_us[order]
    tied = np.zeros(len(t), dtype=bool)
    if len(t) > 1:
        same = t[1:] == t[:-1]
        tied[1:] |= same
        tied[:-1] |= same
    if tied.any():
        # Only rows that share a time need the string comparison: numpy's fixed-width unicode
        # compares by code point, as Python's str does.
        pos = np.flatnonzero(tied)
        sub = order[pos]
        texts = np.asarray(transaction_ids[sub], dtype=str)
        order[pos] = sub[np.lexsort((texts, t[pos]))]
    return order


def conform(frame: pd.DataFrame, labelled: bool = True) -> pd.DataFrame:
    """The canonical frame of `frame`; `ValueError` naming every problem when it has any.

    Handbook names are renamed, other columns dropped; ids become str, `tx_datetime`
    datetime64[us] (naive, UTC) with `tx_us` its int64 µs, `amount` float64, `is_fraud` int8
    (only when `labelled`); rows sorted by (`tx_us`, `transaction_id`) with a fresh index.
    `attrs` are kept: `sources` still names the files, but positions no longer follow them.
    """
    found, parts = _inspect(frame, labelled)
    if found:
        raise ValueError("; ".join(p.message for p in found))
    order = sort_order(parts[TX_US], parts[TRANSACTION_ID])
    tx_us = parts[TX_US][order]
    columns: dict[str, Any] = {
        TRANSACTION_ID: parts[TRANSACTION_ID][order],
        TX_DATETIME: tx_us.astype("datetime64[us]"),
        TX_US: tx_us,
        CUSTOMER_ID: parts[CUSTOMER_ID][order],
        TERMINAL_ID: parts[TERMINAL_ID][order],
        AMOUNT: parts[AMOUNT][order],
    }
    if labelled:
        columns[LABEL] = parts[LABEL][order]
    out = pd.DataFrame(columns)
    out.attrs = dict(frame.attrs)
    return out
