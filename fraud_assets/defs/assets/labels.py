"""Closing the loop: labels sent back to the API become training rows for the next retrain."""

from typing import Any

import dagster as dg
import pandas as pd

from fraud_assets.defs import constants
from fraud_assets.defs.assets._metadata import table
from fraud_assets.defs.resources import PredictionLogResource
from fraud_core.prediction_log import PROVENANCE_COLUMNS, labelled_rows
from fraud_core.schema import COLUMNS, LABEL


@dg.asset(
    group_name="ingestion",
    kinds={"pandas", "sql"},
    owners=[constants.OWNER],
    tags={"stage": "validate"},
)
def labelled_transactions(
    context: dg.AssetExecutionContext, prediction_log: PredictionLogResource
) -> dg.Output:
    """Predictions the team labelled (POST /feedback), as training rows for the next retrain."""
    engine = prediction_log.engine()
    if engine is None:
        context.log.info("the prediction log is off (FRAUD_PREDICTION_LOG_URL): no labels")
        frame = pd.DataFrame({name: pd.Series(dtype="float64") for name in COLUMNS})
        return dg.Output(frame, metadata={"rows": 0, "prediction_log": "off"})
    labelled = labelled_rows(engine)
    frame = labelled[list(COLUMNS)].reset_index(drop=True)
    metadata: dict[str, Any] = {
        "rows": len(frame),
        "frauds": int((frame[LABEL] == 1).sum()),
        "legit": int((frame[LABEL] == 0).sum()),
        "prediction_log": prediction_log.where(),
        "dagster/row_count": len(frame),
    }
    if len(labelled):
        metadata["labelled_from"] = str(labelled["labelled_at"].min())
        metadata["labelled_to"] = str(labelled["labelled_at"].max())
        by_version = labelled.groupby("model_version")[LABEL].agg(["count", "sum"])
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
                str(r["request_id"]): {
                    "label": "fraud" if r[LABEL] == 1 else "legit",
                    **{k: str(r[k]) for k in PROVENANCE_COLUMNS if k != "request_id"},
                }
                for _, r in newest.iterrows()
            },
            "request_id",
        )
    return dg.Output(frame, metadata=metadata)
