"""Ingestion assets: the raw transactions and their time-ordered splits."""

from typing import Any

import dagster as dg
import pandas as pd

from fraud_assets.defs import constants
from fraud_assets.defs.assets._metadata import table
from fraud_assets.defs.resources import DataSource
from fraud_core.data import DataError, split_by_time
from fraud_core.schema import LABEL, TIME


class SplitConfig(dg.Config):
    validation_fraction: float = constants.VALIDATION_FRACTION
    test_fraction: float = constants.TEST_FRACTION


@dg.asset(
    group_name="ingestion",
    kinds={"pandas", "csv"},
    owners=[constants.OWNER],
    tags={"stage": "validate"},
)
def raw_transactions(
    context: dg.AssetExecutionContext,
    data_source: DataSource,
    labelled_transactions: pd.DataFrame,
) -> dg.Output:
    """Card transactions from the data directory (or synthetic), plus the labels sent back."""
    try:
        loaded = data_source.load()
    except DataError as exc:
        raise dg.Failure(description=str(exc), metadata={"data_dir": data_source.data_dir}) from exc
    frame = loaded.frame
    if len(labelled_transactions):
        # The checks below judge these rows like the file's: a bad label cannot slip in.
        frame = pd.concat([frame, labelled_transactions[list(frame.columns)]], ignore_index=True)
        frame.attrs = loaded.frame.attrs
        context.log.info(f"added {len(labelled_transactions):,} labelled predictions")
    labels = pd.to_numeric(frame[LABEL], errors="coerce") if LABEL in frame else None
    times = pd.to_numeric(frame[TIME], errors="coerce") if TIME in frame else None
    context.log.info(f"loaded {len(frame):,} rows ({loaded.source}) from {data_source.data_dir}")
    metadata: dict[str, Any] = {
        "rows": len(frame),
        "columns": len(frame.columns),
        "data_source": loaded.source,
        "synthetic": loaded.source == "synthetic",
        "files": dg.MetadataValue.json(loaded.files),
        "data_dir": data_source.data_dir,
        "dagster/row_count": len(frame),
        "feedback_rows": len(labelled_transactions),
        "feedback_frauds": int((labelled_transactions[LABEL] == 1).sum())
        if len(labelled_transactions)
        else 0,
    }
    if labels is not None and len(frame):
        metadata["frauds"] = int((labels == 1).sum())
        metadata["fraud_rate"] = float((labels == 1).mean())
    if times is not None and len(frame):
        metadata["time_span_hours"] = float((times.max() - times.min()) / 3600)
    return dg.Output(frame, metadata=metadata)


@dg.asset(
    group_name="ingestion",
    kinds={"pandas"},
    owners=[constants.OWNER],
    tags={"stage": "validate"},
)
def transaction_splits(
    context: dg.AssetExecutionContext, config: SplitConfig, raw_transactions: pd.DataFrame
) -> dg.Output:
    """Train / validation / test splits in time order: the model never trains on the future."""
    splits = split_by_time(raw_transactions, config.validation_fraction, config.test_fraction)
    summary = splits.summary()
    context.log.info(
        "; ".join(f"{k}: {v['rows']:,} rows, {v['frauds']} frauds" for k, v in summary.items())
    )
    return dg.Output(
        splits,
        metadata={
            "splits": table(summary, "split"),
            "data_fingerprint": splits.fingerprint,
            **{f"{name}_rows": int(v["rows"]) for name, v in summary.items()},
            **{f"{name}_frauds": int(v["frauds"]) for name, v in summary.items()},
        },
    )
