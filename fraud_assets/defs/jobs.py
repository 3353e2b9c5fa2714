"""Jobs: the weekly retrain materializes the whole graph, checks included."""

import dagster as dg

weekly_retrain_job = dg.define_asset_job(
    name="weekly_retrain_job",
    selection=dg.AssetSelection.all(),
    description="Load, split, score anomalies, train, evaluate and promote (if better).",
    tags={"team": "fraud-ml"},
)
