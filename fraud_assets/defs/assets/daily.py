"""The card contract by day: each day's transactions and their behavioural features, on Parquet.

A new day of data is one new partition of `card_transactions` and of `card_features`; a backfill
of months runs as one run (`BackfillPolicy.single_run()`), which reads the data folder once. The
features of day D read the transactions of days D - horizon … D (a `TimeWindowPartitionMapping`),
everything any window of D's rows can reach: a day's features equal those computed on the
whole history at once. With `FRAUD_DASK_ADDRESS` set, they are computed on that Dask cluster.
"""

import math
import time
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd

from fraud_assets.defs import constants
from fraud_assets.defs.assets.data import FeaturesConfig, load_raw
from fraud_assets.defs.resources import ComputeEngine, DataSource
from fraud_core.cards import definition as card_def
from fraud_core.cards import schema as card_schema
from fraud_core.cards.features import compute_features
from fraud_core.contracts import CARDS

DAILY = dg.DailyPartitionsDefinition(start_date=constants.PARTITIONS_START, timezone="UTC")
#: Days before a transaction's own that its features can reach (the default definition's).
HORIZON_DAYS = math.ceil(constants.FEATURES.horizon_us / card_def.US_PER_DAY)


def day_keys(tx_us: np.ndarray) -> np.ndarray:
    """The daily partition key (UTC date, `YYYY-MM-DD`) of each µs timestamp."""
    days = (np.asarray(tx_us, dtype=np.int64) // card_def.US_PER_DAY).astype("datetime64[D]")
    return np.datetime_as_string(days, unit="D")


def day_range(first: np.datetime64, last: np.datetime64) -> list[str]:
    """The partition keys from day `first` to day `last`, both included."""
    return [str(d) for d in np.arange(first, last + 1, dtype="datetime64[D]")]


def by_day(frame: pd.DataFrame, keys: list[str]) -> dict[str, pd.DataFrame]:
    """One frame per partition key of `keys` (empty for a day without rows), index from 0.

    A frame in time order (the canonical one, and the features of one) is cut into slices that
    share its memory: the days are written one by one and no copy of the whole is made. Any
    other order is sorted by day first (stable: each day's rows stay in their order).
    """
    days = np.asarray(frame[card_def.TX_US].to_numpy(), dtype=np.int64) // card_def.US_PER_DAY
    if len(days) > 1 and np.any(np.diff(days) < 0):
        order = np.argsort(days, kind="stable")
        frame, days = frame.iloc[order], days[order]
    numbers = np.array([np.datetime64(key, "D").astype(np.int64) for key in keys], dtype=np.int64)
    bounds = np.searchsorted(days, np.concatenate([numbers, numbers + 1]))
    out: dict[str, pd.DataFrame] = {}
    for key, lo, hi in zip(keys, bounds[: len(keys)], bounds[len(keys) :], strict=True):
        part = frame.iloc[int(lo) : int(hi)]
        part.index = pd.RangeIndex(len(part))  # the slice's own index: the data stay shared
        part.attrs = dict(frame.attrs)
        out[key] = part
    return out


@dg.asset(
    partitions_def=DAILY,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="daily",
    kinds={"pandas", "parquet"},
    owners=[constants.OWNER],
    tags={"stage": "validate"},
)
def card_transactions(
    context: dg.AssetExecutionContext,
    data_source: DataSource,
    labelled_transactions: pd.DataFrame,
) -> dg.Output[dict[str, pd.DataFrame]]:
    """Each day's card transactions, canonical: the data folder's and the labelled predictions'."""
    frame, loaded, feedback = load_raw(context, data_source, labelled_transactions)
    if loaded.contract != CARDS:
        raise dg.Failure(
            description=f"the data in {data_source.data_dir} is of the {loaded.contract} "
            "contract: daily partitions are for card transactions (FRAUD_DATA_CONTRACT=cards)"
        )
    try:
        # The same rules as the checks of raw_transactions: every problem named, by column.
        canonical = card_schema.conform(frame)
    except ValueError as exc:
        raise dg.Failure(description=f"{data_source.data_dir}: {exc}") from exc
    keys = list(context.partition_keys)
    # The folder's first day: the features refuse a day whose windows reach an earlier day of
    # the data that no run has stored (they would count too few transactions).
    if len(canonical):
        canonical.attrs["data_first_day"] = str(
            day_keys(canonical[card_def.TX_US].to_numpy()[:1])[0]
        )
    days = by_day(canonical, keys)
    rows = sum(len(part) for part in days.values())
    outside = len(canonical) - rows
    context.log.info(
        f"{rows:,} of {len(canonical):,} transactions fall on the {len(keys)} day(s) "
        f"{keys[0]} … {keys[-1]}; {outside:,} on other days are left to their partitions"
    )
    return dg.Output(
        days,
        metadata={
            "contract": CARDS,
            "data_source": loaded.source,
            "days": len(keys),
            "rows": rows,
            "dagster/row_count": rows,
            "frauds": int(sum(int(p[card_def.LABEL].sum()) for p in days.values())),
            "feedback_rows": len(feedback),
            "rows_on_other_days": outside,
        },
    )


@dg.asset(
    partitions_def=DAILY,
    backfill_policy=dg.BackfillPolicy.single_run(),
    ins={
        "card_transactions": dg.AssetIn(
            partition_mapping=dg.TimeWindowPartitionMapping(
                start_offset=-HORIZON_DAYS, allow_nonexistent_upstream_partitions=True
            ),
            # By day even when the window holds one day (the first partition's): a dict.
            metadata={"partitions_as_dict": True},
        )
    },
    group_name="daily",
    kinds={"pandas", "parquet", "dask"},
    owners=[constants.OWNER],
    tags={"stage": "features"},
)
def card_features(
    context: dg.AssetExecutionContext,
    config: FeaturesConfig,
    compute: ComputeEngine,
    card_transactions: dict[str, pd.DataFrame],
) -> dg.Output[dict[str, pd.DataFrame]]:
    """Each day's transactions with their features, from all the days their windows reach."""
    definition = config.definition()
    reach = math.ceil(definition.horizon_us / card_def.US_PER_DAY)
    if reach > HORIZON_DAYS:
        raise dg.Failure(
            description=f"windows reaching {reach} days back need {reach} days of transactions "
            f"before each day; the partitions bring {HORIZON_DAYS} (constants.FEATURES)"
        )
    keys = list(context.partition_keys)
    _refuse_missing_days(keys, card_transactions)
    present = [card_transactions[k] for k in sorted(card_transactions)]
    history = pd.concat(present, ignore_index=True) if present else pd.DataFrame()
    if history.empty:
        raise dg.Failure(description=f"no card_transactions for {keys[0]} … {keys[-1]}")
    start = time.perf_counter()
    with compute.dask_client() as client:
        if client is None:
            features = compute_features(history, definition)
        else:
            from fraud_core.scale.features import compute_features_dask

            features = compute_features_dask(history, definition, client)
    seconds = time.perf_counter() - start
    # The features beside the transactions, added as columns: no copy of the history.
    frame = history
    for name in features.columns:
        frame[name] = features[name]  # by index, as the two come back from either engine
    del features
    # Each day records the definition it was computed with: the weekly splits refuse a mix.
    frame.attrs = {**history.attrs, "feature_definition": definition.as_dict()}
    days = by_day(frame, keys)
    rows = sum(len(p) for p in days.values())
    context.log.info(
        f"{len(definition.feature_names)} features of {rows:,} transactions on {len(keys)} "
        f"day(s), from {len(history):,} rows of {len(present)} day(s), in {seconds:.2f}s "
        f"({compute.engine()})"
    )
    metadata: dict[str, Any] = {
        "rows": rows,
        "dagster/row_count": rows,
        "days": len(keys),
        "context_rows": len(history),
        "feature_seconds": round(seconds, 3),
        "engine": compute.engine(),
        "feature_definition": dg.MetadataValue.json(definition.as_dict()),
    }
    return dg.Output(days, metadata=metadata)


def _refuse_missing_days(keys: list[str], days: dict[str, pd.DataFrame]) -> None:
    """Fail when a day the windows reach holds data (by the newest ingestion's folder) that no
    run of `card_transactions` stored: features computed without it would be silently low."""
    stored_first = [d.attrs.get("data_first_day") for d in days.values() if len(d)]
    data_first = max((f for f in stored_first if f), default=None)
    if data_first is None:
        return
    first = np.datetime64(keys[0]) - HORIZON_DAYS
    reach = day_range(first, np.datetime64(keys[-1]))
    missing = [d for d in reach if d >= data_first and d not in days]
    if missing:
        shown = ", ".join(missing[:5]) + (
            f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        )
        raise dg.Failure(
            description=f"the windows of {keys[0]} … {keys[-1]} reach {len(missing)} day(s) of "
            f"the data (from {data_first}) that card_transactions has not stored: {shown}. "
            f"Materialize card_transactions and card_features from {missing[0]} on in one run "
            "(a backfill: `make materialize` does every day of the folder)",
            metadata={"missing_days": dg.MetadataValue.json(missing)},
        )


daily_cards_job = dg.define_asset_job(
    name="daily_cards_job",
    # The labels sent back since the last run go into the days they belong to.
    selection=dg.AssetSelection.assets("labelled_transactions", card_transactions, card_features),
    partitions_def=DAILY,
    description="The labels sent back, then one day of card transactions and their features "
    "(a range of days: one run).",
    tags={"team": "fraud-ml"},
)

#: Yesterday's partition shortly after midnight UTC; stopped by default like every schedule here.
daily_cards_schedule = dg.build_schedule_from_partitioned_job(
    daily_cards_job, hour_of_day=0, minute_of_hour=30
)
