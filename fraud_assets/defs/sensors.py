"""Sensors: retrain when the served data has drifted badly (stopped by default)."""

import dagster as dg

from fraud_assets.defs.assets.monitoring import prediction_drift
from fraud_assets.defs.jobs import weekly_retrain_job


@dg.asset_sensor(
    asset_key=prediction_drift.key,
    job=weekly_retrain_job,
    name="drift_retrain_sensor",
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Launches the weekly retrain when a drift report says fail.",
)
def drift_retrain_sensor(
    context: dg.SensorEvaluationContext, asset_event: dg.EventLogEntry
) -> dg.RunRequest | dg.SkipReason:
    """One retrain per failing drift report: the run key is the report's event."""
    materialization = asset_event.asset_materialization
    status = materialization.metadata.get("status") if materialization else None
    value = getattr(status, "value", status)
    if value != "fail":
        return dg.SkipReason(f"latest drift report: {value}")
    worst = materialization.metadata.get("worst_features") if materialization else None
    return dg.RunRequest(
        run_key=f"drift-{asset_event.run_id}-{asset_event.timestamp}",
        tags={"trigger": "drift", "drift/worst_features": str(getattr(worst, "value", worst))},
    )
