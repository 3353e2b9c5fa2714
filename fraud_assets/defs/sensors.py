"""Sensors: retrain when the served data has drifted badly (stopped by default)."""

from collections.abc import Callable

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import (
    UnresolvedAssetJobDefinition,
)

from fraud_assets.defs.assets.monitoring import prediction_drift
from fraud_assets.defs.jobs import weekly_retrain_job


def build_drift_retrain_sensor(
    job: UnresolvedAssetJobDefinition, partition_key: Callable[[], str] | None = None
) -> dg.SensorDefinition:
    """The sensor launching `job` on a failing drift report (`partition_key`: of which week)."""

    @dg.asset_sensor(
        asset_key=prediction_drift.key,
        job=job,
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
            partition_key=partition_key() if partition_key is not None else None,
        )

    return drift_retrain_sensor


drift_retrain_sensor = build_drift_retrain_sensor(weekly_retrain_job)
