"""Jobs: the weekly retrain (the training graph, checks included) and the drift check."""

import dagster as dg

#: Everything from the labels and raw data to the promoted model: not the monitoring group, and
#: not the daily partitions of the card contract (their own job, `daily_cards_job`).
TRAINING = dg.AssetSelection.all() - dg.AssetSelection.groups("monitoring", "daily")

weekly_retrain_job = dg.define_asset_job(
    name="weekly_retrain_job",
    selection=TRAINING,
    description="Load, split, score anomalies, train, evaluate and promote (if better).",
    tags={"team": "fraud-ml"},
)

drift_job = dg.define_asset_job(
    name="drift_job",
    selection=dg.AssetSelection.groups("monitoring"),
    description="Compare the API's recent inputs and scores with the training data.",
    tags={"team": "fraud-ml"},
)
