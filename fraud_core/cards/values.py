"""One value of each field of a card transaction, read the same way from files and requests.

Ids are text (an integer as its decimals: 17 and 17.0 are "17"; "007" stays "007") without
control characters; times are ISO 8601 (no zone is UTC) as int64 µs since the epoch. The
checks and `conform` of `fraud_core.cards.schema` (which re-exports `id_strings` and
`parse_datetimes`) read files with these functions, and the API reads requests with them, so
a file and a request cannot read one value two ways.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

_CONTROL = "[\\x00-\\x1f]"


def _id_text(value: Any) -> str | None:
    """One id as text, or None when it is not a string or an integral number."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool | np.bool_):
        return None
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating) and np.isfinite(value) and float(value).is_integer():
        return str(int(value))
    return None


def ids_of(values: pd.Series, null: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ids as an object array of str, mask of invalid ids); nulls are None and not invalid.

    Vectorised for a column of one type; a column mixing text and numbers goes value by value.
    """
    n = len(values)
    out = np.full(n, None, dtype=object)
    invalid = np.zeros(n, dtype=bool)
    keep = ~null
    if pd.api.types.is_bool_dtype(values):
        return out, keep.copy()
    if pd.api.types.is_integer_dtype(values):
        out[keep] = values[keep].astype("int64").astype(str).to_numpy(dtype=object)
        return out, invalid
    if pd.api.types.is_float_dtype(values):
        v = values.to_numpy(dtype=np.float64, na_value=np.nan)
        with np.errstate(invalid="ignore"):
            integral = keep & np.isfinite(v) & (v == np.floor(v)) & (np.abs(v) < 2.0**63)
        out[integral] = pd.Series(v[integral].astype(np.int64)).astype(str).to_numpy(object)
        return out, keep & ~integral
    kind = pd.api.types.infer_dtype(values, skipna=True)
    if kind in ("string", "empty"):
        if keep.all():
            out = values.to_numpy(dtype=object)
        else:
            out[keep] = values.to_numpy(dtype=object)[keep]
    else:  # mixed text and numbers (a hand-made frame, JSON): each value on its own
        texts = [_id_text(v) for v in values.to_numpy(dtype=object)[keep]]
        out[keep] = np.array(texts, dtype=object)
        invalid[keep] = np.array([t is None for t in texts], dtype=bool)
    # Control characters (a stray NUL, a newline) would break logs and Redis member keys.
    text = pa.array(out, type=pa.string(), from_pandas=True)
    ctrl = pc.fill_null(pc.match_substring_regex(text, _CONTROL), False)
    empty = pc.fill_null(pc.equal(pc.utf8_length(text), 0), False)
    invalid |= keep & pc.or_(ctrl, empty).to_numpy(zero_copy_only=False)
    return out, invalid


def id_strings(values: pd.Series | Sequence[Any]) -> np.ndarray:
    """Ids as an object array of str (17 and 17.0 become "17"); `ValueError` on a bad one."""
    series = values if isinstance(values, pd.Series) else pd.Series(list(values), dtype=object)
    null = series.isna().to_numpy()
    out, invalid = ids_of(series, null)
    bad = np.flatnonzero(invalid | null)
    if len(bad):
        shown = ", ".join(f"row {i}: {series.iloc[i]!r}" for i in bad[:3])
        raise ValueError(
            f"{len(bad)} invalid id(s) (a string without control characters, or an integer), "
            f"e.g. {shown}"
        )
    return out


def times_of(values: pd.Series, null: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(int64 µs since the epoch UTC, mask of unparseable values); nulls are 0 and not bad.

    Text is ISO 8601 (zones converted to UTC); a datetime column without a zone is UTC.
    """
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        parsed = values.dt.tz_convert("UTC").dt.tz_localize(None)
    elif pd.api.types.is_datetime64_dtype(values):
        parsed = values  # a timestamp without a zone is UTC, as text without one is
    elif pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        # A bare number has no unit anyone agrees on: seconds, ms, µs, days since 2018-04-01...
        return np.zeros(len(values), dtype=np.int64), ~null
    else:
        parsed = pd.to_datetime(values, utc=True, format="ISO8601", errors="coerce")
        parsed = parsed.dt.tz_localize(None)
    us = parsed.to_numpy(dtype="datetime64[us]")
    bad = np.isnat(us) & ~null
    return np.where(np.isnat(us), 0, us.view(np.int64)), bad


def parse_datetimes(values: pd.Series | Sequence[Any]) -> np.ndarray:
    """ISO 8601 times (also "2018-04-01 00:00:31") as int64 µs since the epoch, UTC.

    No zone means UTC; a zone is converted to UTC. `ValueError` names unparseable values and
    their rows.
    """
    series = values if isinstance(values, pd.Series) else pd.Series(list(values), dtype=object)
    null = series.isna().to_numpy()
    us, bad = times_of(series, null)
    rows = np.flatnonzero(bad | null)
    if len(rows):
        shown = ", ".join(f"row {i}: {series.iloc[i]!r}" for i in rows[:3])
        raise ValueError(f"{len(rows)} time(s) that are not ISO 8601 datetimes, e.g. {shown}")
    return us
