"""Ingestion assets: the raw transactions and their time-ordered splits, for either contract."""

import time
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field

from fraud_assets.defs import constants
from fraud_assets.defs.assets._metadata import table
from fraud_assets.defs.resources import DataSource
from fraud_core.cards import definition as card_def
from fraud_core.cards import schema as card_schema
from fraud_core.cards.features import compute_features
from fraud_core.cards.splits import DayPlan, split_cards
from fraud_core.contracts import CARDS, KAGGLE
from fraud_core.data import DataError, LoadedData, Splits, split_by_time
from fraud_core.schema import LABEL, TIME


class FeaturesConfig(dg.Config):
    #: The card contract's behavioural features (`fraud_core.cards.definition`): recorded in the
    #: bundle, which the API's state follows. Kaggle data has no such features.
    customer_windows_days: list[int] = Field(
        default_factory=lambda: list(constants.FEATURES.customer_windows_days)
    )
    terminal_windows_days: list[int] = Field(
        default_factory=lambda: list(constants.FEATURES.terminal_windows_days)
    )
    delay_days: int = constants.FEATURES.delay_days
    night_end_hour: int = constants.FEATURES.night_end_hour
    max_lateness_days: int = constants.FEATURES.max_lateness_days

    def definition(self) -> card_def.FeatureDefinition:
        return card_def.FeatureDefinition(
            customer_windows_days=tuple(self.customer_windows_days),
            terminal_windows_days=tuple(self.terminal_windows_days),
            delay_days=self.delay_days,
            night_end_hour=self.night_end_hour,
            max_lateness_days=self.max_lateness_days,
        )


class SplitConfig(FeaturesConfig):
    validation_fraction: float = constants.VALIDATION_FRACTION
    test_fraction: float = constants.TEST_FRACTION


def contract_of(frame: pd.DataFrame) -> str:
    """The contract a frame was loaded as (the loader records it), else by its columns."""
    return str(frame.attrs.get("contract") or card_schema.contract_of(frame.columns) or KAGGLE)


def load_raw(
    context: dg.AssetExecutionContext, data_source: DataSource, labelled: pd.DataFrame
) -> tuple[pd.DataFrame, LoadedData, pd.DataFrame]:
    """The data folder's transactions (or synthetic) plus the labelled predictions not in it.

    Returns the frame, what the loader said of the files, and the feedback rows added.
    """
    try:
        loaded = data_source.load()
    except DataError as exc:
        raise dg.Failure(description=str(exc), metadata={"data_dir": data_source.data_dir}) from exc
    frame = loaded.frame
    contract = loaded.contract
    feedback = labelled
    if len(feedback) and contract_of(feedback) != contract:
        context.log.warning(
            f"{len(feedback):,} labelled predictions of the {contract_of(feedback)} contract "
            f"left out: the data is of the {contract} contract"
        )
        feedback = feedback.iloc[:0]
    if len(feedback) and contract == CARDS:
        feedback = _card_feedback(context, frame, feedback)
    if len(feedback):
        # The checks below judge these rows like the file's: a bad label cannot slip in.
        frame = pd.concat([frame, feedback[list(frame.columns)]], ignore_index=True)
        frame.attrs = loaded.frame.attrs
        context.log.info(f"added {len(feedback):,} labelled predictions")
    if loaded.ignored:
        context.log.info(
            f"ignored column(s) {', '.join(loaded.ignored)}: only the card contract's columns "
            "are read, and none of the others becomes a feature (a column beside the label, "
            "such as a fraud scenario, would leak the label into training)"
        )
    return frame, loaded, feedback


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
    frame, loaded, feedback = load_raw(context, data_source, labelled_transactions)
    contract = loaded.contract
    label = card_def.LABEL if contract == CARDS else LABEL
    labels = pd.to_numeric(frame[label], errors="coerce") if label in frame else None
    context.log.info(
        f"loaded {len(frame):,} rows ({loaded.source}, {contract} contract) "
        f"from {data_source.data_dir}"
    )
    metadata: dict[str, Any] = {
        "contract": contract,
        "rows": len(frame),
        "columns": len(frame.columns),
        "data_source": loaded.source,
        "synthetic": loaded.source == "synthetic",
        "files": dg.MetadataValue.json(loaded.files),
        "data_dir": data_source.data_dir,
        "dagster/row_count": len(frame),
        "feedback_rows": len(feedback),
        "feedback_frauds": int((feedback[label] == 1).sum()) if len(feedback) else 0,
    }
    if labels is not None and len(frame):
        metadata["frauds"] = int((labels == 1).sum())
        metadata["fraud_rate"] = float((labels == 1).mean())
    if contract == CARDS:
        metadata.update(_card_metadata(frame, loaded.ignored))
    elif TIME in frame and len(frame):
        times = pd.to_numeric(frame[TIME], errors="coerce")
        metadata["time_span_hours"] = float((times.max() - times.min()) / 3600)
    return dg.Output(frame, metadata=metadata)


def _card_feedback(
    context: dg.AssetExecutionContext, frame: pd.DataFrame, feedback: pd.DataFrame
) -> pd.DataFrame:
    """Labelled card predictions not already in the files, in the files' form.

    A transaction scored by the API and later delivered in a file too is counted once (the
    file's row and label), instead of failing the duplicate-id check on our own feedback.
    """
    ids = card_def.TRANSACTION_ID
    try:
        known = set(card_schema.id_strings(frame[ids])) if ids in frame else set()
    except ValueError:  # the checks name the bad ids; the feedback is matched as text
        known = set(frame[ids].astype(str))
    repeated = feedback[ids].isin(known).to_numpy()
    if repeated.any():
        context.log.info(
            f"{int(repeated.sum()):,} labelled predictions are in the data files already: "
            "the files' rows are kept"
        )
    out = feedback[~repeated].reindex(columns=frame.columns)
    column = card_def.TX_DATETIME
    if column in frame and not pd.api.types.is_datetime64_any_dtype(frame[column]):
        # The files' times are text: the feedback's go in as ISO 8601 text too, so that one
        # parser reads them all.
        out[column] = pd.to_datetime(out[column]).dt.strftime("%Y-%m-%dT%H:%M:%S.%f")
    return out


def _card_metadata(frame: pd.DataFrame, ignored: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "ignored_columns": dg.MetadataValue.json(list(ignored)),
        "renamed_columns": dg.MetadataValue.json(dict(frame.attrs.get("column_names", {}))),
    }
    for column, name in ((card_def.CUSTOMER_ID, "customers"), (card_def.TERMINAL_ID, "terminals")):
        if column in frame:
            out[name] = int(frame[column].nunique())
    dates = card_dates(frame)
    if dates is not None:
        out["date_from"], out["date_to"] = dates
    return out


def card_dates(frame: pd.DataFrame) -> tuple[str, str] | None:
    """The first and last UTC date of a card frame's readable times (None: no such time)."""
    if card_def.TX_DATETIME not in frame or not len(frame):
        return None
    values = frame[card_def.TX_DATETIME]
    times = (
        values
        if pd.api.types.is_datetime64_any_dtype(values)
        else pd.to_datetime(values, utc=True, format="ISO8601", errors="coerce")
    )
    if getattr(times.dt, "tz", None) is not None:
        times = times.dt.tz_convert("UTC")  # the days are UTC days, as the partitions' are
    if not times.notna().any():
        return None
    return str(times.min().date()), str(times.max().date())


@dg.asset(
    group_name="ingestion",
    kinds={"pandas"},
    owners=[constants.OWNER],
    tags={"stage": "validate"},
)
def transaction_splits(
    context: dg.AssetExecutionContext, config: SplitConfig, raw_transactions: pd.DataFrame
) -> dg.Output:
    """Train / validation / test splits in time order: the model never trains on the future.

    Card transactions get their behavioural features first, on the whole history, and the label
    delay before validation and before test is left out (`fraud_core.cards.splits`).
    """
    if contract_of(raw_transactions) == CARDS:
        return _card_splits(context, config, raw_transactions)
    splits = split_by_time(raw_transactions, config.validation_fraction, config.test_fraction)
    summary = splits.summary()
    context.log.info(
        "; ".join(f"{k}: {v['rows']:,} rows, {v['frauds']} frauds" for k, v in summary.items())
    )
    return dg.Output(
        splits,
        metadata={
            "contract": KAGGLE,
            "splits": table(summary, "split"),
            "data_fingerprint": splits.fingerprint,
            **{f"{name}_rows": int(v["rows"]) for name, v in summary.items()},
            **{f"{name}_frauds": int(v["frauds"]) for name, v in summary.items()},
        },
    )


def _card_splits(
    context: dg.AssetExecutionContext, config: SplitConfig, raw: pd.DataFrame
) -> dg.Output:
    try:
        definition = config.definition()
        canonical = card_schema.conform(raw)
        start = time.perf_counter()
        features = compute_features(canonical, definition)
        seconds = time.perf_counter() - start
        splits, plan = split_cards(
            canonical,
            features,
            definition,
            config.validation_fraction,
            config.test_fraction,
            source=str(raw.attrs.get("data_source", "unknown")),
        )
    except ValueError as exc:
        raise dg.Failure(description=str(exc)) from exc
    context.log.info(
        f"{len(definition.feature_names)} behavioural features of {len(canonical):,} "
        f"transactions in {seconds:.2f}s"
    )
    return card_splits_output(
        context, splits, plan, definition, {"feature_seconds": round(seconds, 3)}
    )


def card_splits_output(
    context: dg.AssetExecutionContext,
    splits: Splits,
    plan: DayPlan,
    definition: card_def.FeatureDefinition,
    extra: dict[str, Any],
) -> dg.Output:
    """The card splits with their periods, gaps and history, logged and in the metadata."""
    summary = splits.summary()
    gaps = splits.gaps if splits.gaps is not None else splits.test.iloc[:0]
    history = splits.history if splits.history is not None else splits.test.iloc[:0]
    periods = plan.describe()
    context.log.info(
        "; ".join(
            f"{k}: {v['rows']:,} rows, {v['frauds']} frauds ({periods[k]})"
            for k, v in summary.items()
        )
        + f"; {len(gaps):,} rows of the {definition.delay_days}-day label delay left out"
    )
    history_days = history[card_def.TX_US].to_numpy(np.int64) // card_def.US_PER_DAY
    return dg.Output(
        splits,
        metadata={
            "contract": CARDS,
            "splits": table(summary, "split"),
            "periods": dg.MetadataValue.json(periods),
            "data_fingerprint": splits.fingerprint,
            **{f"{name}_rows": int(v["rows"]) for name, v in summary.items()},
            **{f"{name}_frauds": int(v["frauds"]) for name, v in summary.items()},
            "delay_gap_rows": len(gaps),
            "feature_definition": dg.MetadataValue.json(definition.as_dict()),
            **extra,
            "history_rows": len(history),
            "history_days": int(history_days.max() - history_days.min() + 1) if len(history) else 0,
        },
    )
