"""Closing the loop: labels sent back to the API become training rows for the next retrain."""

from typing import Any

import dagster as dg
import pandas as pd

from fraud_assets.defs import constants
from fraud_assets.defs.assets._metadata import table
from fraud_assets.defs.resources import DataSource, PredictionLogResource
from fraud_core.cards import definition as card_def
from fraud_core.contracts import CARDS, KAGGLE
from fraud_core.data import DataError
from fraud_core.prediction_log import (
    CARD_PROVENANCE_COLUMNS,
    PROVENANCE_COLUMNS,
    label_summary,
    labelled_card_transactions,
    labelled_rows,
)
from fraud_core.schema import COLUMNS, LABEL

#: The training columns of each contract's labelled rows (card rows keep `tx_us` too).
CARD_COLUMNS: tuple[str, ...] = (*card_def.COLUMNS, card_def.TX_US)


@dg.asset(
    group_name="ingestion",
    kinds={"pandas", "sql"},
    owners=[constants.OWNER],
    tags={"stage": "validate"},
)
def labelled_transactions(
    context: dg.AssetExecutionContext,
    prediction_log: PredictionLogResource,
    data_source: DataSource,
) -> dg.Output:
    """Predictions the team labelled (POST /feedback), as training rows for the next retrain.

    Of the data's contract: `/predict`'s rows for Kaggle data, `/transactions/score`'s for cards.
    """
    try:
        contract = data_source.current_contract()
    except DataError as exc:
        # raw_transactions fails on the same files and says why; the labels are not the problem.
        context.log.warning(f"the data files cannot be read ({exc}): reading the Kaggle labels")
        contract = KAGGLE
    columns = CARD_COLUMNS if contract == CARDS else COLUMNS
    label = card_def.LABEL if contract == CARDS else LABEL
    engine = prediction_log.engine()
    if engine is None:
        context.log.info("the prediction log is off (FRAUD_PREDICTION_LOG_URL): no labels")
        frame = pd.DataFrame({name: pd.Series(dtype="float64") for name in columns})
        frame.attrs["contract"] = contract
        return dg.Output(frame, metadata={"rows": 0, "prediction_log": "off", "contract": contract})
    provenance: tuple[str, ...]
    if contract == CARDS:
        labelled = labelled_card_transactions(engine)
        key, provenance = card_def.TRANSACTION_ID, CARD_PROVENANCE_COLUMNS
    else:
        labelled = labelled_rows(engine)
        key, provenance = "request_id", PROVENANCE_COLUMNS
    frame = labelled[list(columns)].reset_index(drop=True)
    frame.attrs["contract"] = contract
    metadata: dict[str, Any] = {
        "contract": contract,
        "rows": len(frame),
        "frauds": int((frame[label] == 1).sum()),
        "legit": int((frame[label] == 0).sum()),
        "prediction_log": prediction_log.where(),
        "dagster/row_count": len(frame),
    }
    # Who sent the labels this retrain learns from (current labels by API key id; "(none)":
    # stored without a key), and how many replaced another label (the history has both).
    summary = label_summary(engine, contract)
    metadata["by_key"] = dg.MetadataValue.json(summary.by_key)
    metadata["corrections"] = summary.corrections
    metadata["corrected_predictions"] = summary.corrected_predictions
    if len(labelled):
        metadata["labelled_from"] = str(labelled["labelled_at"].min())
        metadata["labelled_to"] = str(labelled["labelled_at"].max())
        by_version = labelled.groupby("model_version")[label].agg(["count", "sum"])
        metadata["by_model_version"] = dg.MetadataValue.json(
            {
                str(v): {"rows": int(r["count"]), "frauds": int(r["sum"])}
                for v, r in by_version.iterrows()
            }
        )
        sources = labelled["label_source"].fillna("(none)").value_counts()
        metadata["by_source"] = dg.MetadataValue.json({str(k): int(v) for k, v in sources.items()})
        newest = labelled.tail(10)
        metadata["newest_labels"] = table(
            {
                str(r[key]): {
                    "label": "fraud" if r[label] == 1 else "legit",
                    **{k: str(r[k]) for k in provenance if k != key},
                }
                for _, r in newest.iterrows()
            },
            key,
        )
    return dg.Output(frame, metadata=metadata)
