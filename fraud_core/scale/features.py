"""The card contract's behavioural features on a Dask cluster, each key's windows where it lives.

A customer's windows depend on that customer's rows only, a terminal's on that terminal's rows
only (`fraud_core.cards.definition`). So the rows are hash-partitioned twice: by `customer_id`,
and each partition computes its customers' windows with `fraud_core.cards.features.key_features`;
by `terminal_id`, the same for terminals. The amount and the calendar flags are per row and
are computed where the rows already are. The three parts are joined back by a row number.

The per-key computation is the single-process code on the same rows in the same (time, id)
order (ties in both broken by the input order, kept by sorting each partition on the row
number), so the result is EXACTLY `compute_features` on the same frame, bit for bit: counts are
integers, and each mean is the same per-key prefix sums in the same order.
"""

from __future__ import annotations

from typing import Any, Literal

import dask.dataframe as dd
import numpy as np
import pandas as pd
from distributed import Client

from fraud_core.cards.definition import (
    AMOUNT,
    CUSTOMER_ID,
    TERMINAL_ID,
    TX_US,
    FeatureDefinition,
    calendar_arrays,
)
from fraud_core.cards.features import KIND_COLUMNS, REQUIRED, Kind, key_features, kind_columns
from fraud_core.scale.cluster import total_threads

#: The row number that joins the parts back (0 .. n - 1 in the input's order).
ROW = "_fraud_row"
#: dask's shuffles that are right on a multi-machine cluster ("disk" is per machine).
ShuffleMethod = Literal["p2p", "tasks"]
_KEYS: dict[Kind, str] = {"customer": CUSTOMER_ID, "terminal": TERMINAL_ID}


def compute_features_dask(
    frame: pd.DataFrame | dd.DataFrame,
    definition: FeatureDefinition,
    client: Client,
    *,
    npartitions: int | None = None,
    shuffle_method: ShuffleMethod = "p2p",
) -> pd.DataFrame:
    """`compute_features(frame, definition)`, computed on the cluster of `client`: equal values.

    `frame` holds canonical card rows (at least `HISTORY_COLUMNS`), as pandas or as a dask
    DataFrame. The result is always a pandas frame of `definition.feature_names` (float64): for
    pandas input with its index and row order; for dask input with the rows and index that
    `frame.compute()` would give, in that order. `npartitions` is how many hash partitions
    each key kind is split into (default: the input's partitions for dask, the cluster's
    threads, at least 2, for pandas).
    """
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise ValueError(
            f"card features need the columns {list(REQUIRED)}; missing: {missing} "
            f"(columns present: {list(frame.columns)})"
        )
    names = list(definition.feature_names)
    if isinstance(frame, pd.DataFrame):
        n = len(frame)
        if n == 0:
            return pd.DataFrame(np.empty((0, len(names))), columns=names, index=frame.index)
        parts = npartitions or max(2, total_threads(client))
        numbered = dd.from_pandas(
            frame[list(REQUIRED)].assign(**{ROW: np.arange(n, dtype=np.int64)}),
            npartitions=min(parts, n),
            sort=False,  # keep the input's order and index, whatever the index is
        )
    else:
        parts = npartitions or frame.npartitions
        numbered = _numbered(client, frame[list(REQUIRED)])
    pieces = [_row_features(numbered, definition)]
    for kind in _KEYS:
        pieces.append(_key_part(numbered, definition, kind, parts, shuffle_method))
    rows, *keyed = client.compute(pieces, sync=True)
    n = len(rows)
    if not np.array_equal(rows[ROW].to_numpy(), np.arange(n)):
        raise RuntimeError("the row part came back out of order: the input cannot be rebuilt")
    out = np.empty((n, len(names)), dtype=np.float64, order="F")
    out[:, :3] = rows[names[:3]].to_numpy()
    for kind, part in zip(_KEYS, keyed, strict=True):
        columns = list(kind_columns(definition, kind))
        at = part[ROW].to_numpy()
        # Every row exactly once: a lost or doubled row would leave garbage in `out`.
        if len(at) != n or np.bincount(at, minlength=n).max(initial=0) != 1:
            raise RuntimeError(f"the {kind} partitions lost or repeated rows")
        first = names.index(columns[0])
        out[at, first : first + len(columns)] = part[columns].to_numpy()
    index = frame.index if isinstance(frame, pd.DataFrame) else rows.index
    return pd.DataFrame(out, columns=names, index=index)


def _numbered(client: Client, frame: dd.DataFrame) -> dd.DataFrame:
    """The dask frame with its global row numbers (partition order, then row order)."""
    lengths = client.compute(frame.map_partitions(len), sync=True)
    offsets = np.concatenate([[0], np.cumsum(np.asarray(lengths, dtype=np.int64))[:-1]])
    meta = frame._meta.assign(**{ROW: np.zeros(0, dtype=np.int64)})
    return frame.map_partitions(_number_rows, offsets.tolist(), meta=meta)


def _number_rows(
    part: pd.DataFrame, offsets: list[int], partition_info: dict[str, Any] | None = None
) -> pd.DataFrame:
    if partition_info is None:  # dask passes it to every partition of a computed frame
        raise RuntimeError("dask did not say which partition this is")
    start = offsets[partition_info["number"]]
    return part.assign(**{ROW: np.arange(start, start + len(part), dtype=np.int64)})


def _row_features(numbered: dd.DataFrame, definition: FeatureDefinition) -> dd.DataFrame:
    """The per-row features (amount, weekend, night), where the rows are: no shuffle."""
    names = list(definition.feature_names[:3])
    meta = pd.DataFrame({ROW: np.zeros(0, np.int64), **{c: np.zeros(0) for c in names}})
    meta.index = numbered._meta.index
    return numbered[[ROW, TX_US, AMOUNT]].map_partitions(
        _calendar_part, names, definition.night_end_hour, meta=meta
    )


def _calendar_part(part: pd.DataFrame, names: list[str], night_end_hour: int) -> pd.DataFrame:
    weekend, night = calendar_arrays(part[TX_US].to_numpy(np.int64), night_end_hour)
    values = [part[AMOUNT].to_numpy(dtype=np.float64), weekend, night]
    return pd.DataFrame(
        {ROW: part[ROW].to_numpy(), **dict(zip(names, values, strict=True))}, index=part.index
    )


def _key_part(
    numbered: dd.DataFrame,
    definition: FeatureDefinition,
    kind: Kind,
    npartitions: int,
    shuffle_method: ShuffleMethod,
) -> dd.DataFrame:
    """One key kind's windows: rows hash-partitioned by the key, computed per partition."""
    columns = kind_columns(definition, kind)
    meta = pd.DataFrame({ROW: np.zeros(0, np.int64), **{c: np.zeros(0) for c in columns}})
    shuffled = numbered[[ROW, *KIND_COLUMNS[kind]]].shuffle(
        on=_KEYS[kind], npartitions=npartitions, shuffle_method=shuffle_method
    )
    return shuffled.map_partitions(_key_windows, definition, kind, meta=meta)


def _key_windows(part: pd.DataFrame, definition: FeatureDefinition, kind: Kind) -> pd.DataFrame:
    """`key_features` of one partition (every row of its keys), with the rows' numbers."""
    # The input's order, as the single-process sort sees it: rows equal in (time, id) then
    # keep the same relative order, so even their sums add up in the same order.
    part = part.sort_values(ROW, kind="stable")
    values = key_features(part, definition, kind)
    values.insert(0, ROW, part[ROW].to_numpy())
    return values.reset_index(drop=True)
