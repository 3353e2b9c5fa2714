"""Watching the served model: how far its recent inputs and scores moved from training."""

import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg

from fraud_assets.defs import constants
from fraud_assets.defs.assets._metadata import image, table
from fraud_assets.defs.resources import ModelStoreResource, Notifier, PredictionLogResource
from fraud_core import drift
from fraud_core.contracts import CARDS
from fraud_core.data import Splits
from fraud_core.plots import drift_histograms
from fraud_core.prediction_log import recent_card_predictions, recent_predictions
from fraud_core.prediction_log.reports import save_report
from fraud_core.schema import FEATURE_COLUMNS


class DriftConfig(dg.Config):
    #: Predictions made within this many hours are compared with the training data.
    window_hours: float = constants.DRIFT_WINDOW_HOURS
    #: At most this many of the newest predictions in the window.
    max_rows: int = constants.DRIFT_MAX_ROWS
    #: Fewer predictions than this: no figures, the check says so.
    min_rows: int = constants.DRIFT.min_rows
    psi_warn: float = constants.DRIFT.psi_warn
    psi_fail: float = constants.DRIFT.psi_fail
    ks_warn: float = constants.DRIFT.ks_warn
    #: Training rows sampled as the reference (the whole split is not needed for deciles).
    reference_rows: int = constants.DRIFT_REFERENCE_ROWS

    def thresholds(self) -> drift.DriftThresholds:
        return drift.DriftThresholds(
            psi_warn=self.psi_warn,
            psi_fail=self.psi_fail,
            ks_warn=self.ks_warn,
            min_rows=self.min_rows,
        )


@dg.asset(
    # The newest week's splits where they are weekly (the card contract), not every week's.
    ins={"transaction_splits": dg.AssetIn(metadata={"newest_partition": True})},
    group_name="monitoring",
    kinds={"pandas", "scipy"},
    owners=[constants.OWNER],
    tags={"stage": "monitor"},
)
def prediction_drift(
    context: dg.AssetExecutionContext,
    config: DriftConfig,
    transaction_splits: Splits,
    model_store: ModelStoreResource,
    prediction_log: PredictionLogResource,
    notifier: Notifier,
) -> dg.Output:
    """How far the API's recent inputs and scores have moved from the training data (PSI, KS)."""
    engine = prediction_log.engine()
    if engine is None:
        raise dg.Failure(description="the prediction log is off (FRAUD_PREDICTION_LOG_URL=off)")
    since = datetime.now(UTC) - timedelta(hours=config.window_hours)
    splits = transaction_splits
    model = model_store.store().load_production(verify=False)
    mismatch = drift.contract_mismatch(splits, model)
    if mismatch is not None:
        # A served model of the other contract: its inputs are not this data's; no number.
        context.log.warning(mismatch)
        save_report(engine, "not_computed", 0, 0, {"message": mismatch})
        return dg.Output(
            {"status": "not_computed", "message": mismatch, "worst_features": []},
            metadata={
                "status": "not_computed",
                "message": mismatch,
                "contract": splits.contract,
                "production_version": model.version if model is not None else None,
            },
        )
    reference = drift.reference_sample(splits, config.reference_rows, constants.SEED, model)
    scored = model is not None
    if splits.contract == CARDS:
        recent = recent_card_predictions(engine, limit=config.max_rows, since=since)
        inputs = [name for name in splits.input_fields if name in recent.columns]
        current = recent[[*inputs, drift.SCORE]]
        definition = splits.feature_definition
        assert definition is not None  # a cards split always has one
        columns: list[str] | None = drift.card_window_columns(recent, definition, with_score=scored)
    else:
        recent = recent_predictions(engine, limit=config.max_rows, since=since)
        current = recent[[*FEATURE_COLUMNS, drift.SCORE]]
        columns = drift.window_columns(current, with_score=scored)
    if not scored:
        current = current.drop(columns=drift.SCORE)
    base: dict[str, Any] = {
        "contract": splits.contract,
        "window_hours": config.window_hours,
        "current_rows": len(current),
        "reference_rows": len(reference),
        "production_version": model.version if model is not None else None,
        "prediction_log": prediction_log.where(),
    }
    try:
        report = drift.compare(
            reference,
            current,
            config.thresholds(),
            threshold=model.threshold if model is not None else None,
            columns=columns,
        )
    except drift.InsufficientData as exc:
        context.log.warning(f"drift not computed: {exc}")
        save_report(
            engine, "insufficient_data", len(reference), len(current), {"message": str(exc)}
        )
        return dg.Output(
            {"status": "insufficient_data", "message": str(exc), "worst_features": []},
            metadata={**base, "status": "insufficient_data", "message": str(exc)},
        )

    features = {
        row["feature"]: {
            "psi": float(row["psi"]),
            "ks_statistic": float(row["ks_statistic"]),
            "status": row["status"],
        }
        for _, row in report.table.iterrows()
    }
    details = {
        "features": features,
        "score_psi": report.score.psi if report.score else None,
        "worst_features": list(report.worst_features),
    }
    save_report(engine, report.status, report.reference_rows, report.current_rows, details)
    with tempfile.TemporaryDirectory() as tmp:
        plot = image(
            drift_histograms(
                drift.comparable(reference),
                drift.comparable(current),
                report.worst(6),
                Path(tmp) / "drift.png",
            ),
            "Reference vs recent: the worst features",
        )
    summary: dict[str, Any] = {
        "status": report.status,
        "worst_features": list(report.worst_features),
        "features": features,
        "score_psi": details["score_psi"],
    }
    if report.status != "ok":
        notifier.drift_alert(report, context.run_id)
    metadata = {
        **base,
        "status": report.status,
        "worst_features": ", ".join(report.worst_features) or "none",
        "max_psi": float(report.table["psi"].max()),
        "table": table(
            {
                row["feature"]: {
                    "status": row["status"],
                    "psi": round(float(row["psi"]), 4),
                    "ks_statistic": round(float(row["ks_statistic"]), 4),
                    "ks_pvalue": float(f"{row['ks_pvalue']:.3g}"),
                }
                for _, row in report.table.iterrows()
            },
            "feature",
        ),
        "plot_worst_features": plot,
    }
    if report.score is not None:
        metadata["score_psi"] = report.score.psi
        metadata["score_mean_change"] = report.score.mean_change
    return dg.Output(summary, metadata=metadata)


@dg.asset_check(asset=prediction_drift, blocking=False)
def check_prediction_drift(prediction_drift: dict[str, Any]) -> dg.AssetCheckResult:
    """Warns above the PSI warn threshold, fails above the fail threshold; names the features."""
    status = prediction_drift["status"]
    worst = prediction_drift.get("worst_features") or []
    if status in ("insufficient_data", "not_computed"):
        return dg.AssetCheckResult(
            passed=False,
            severity=dg.AssetCheckSeverity.WARN,
            description=f"drift not computed: {prediction_drift['message']}",
        )
    features = prediction_drift.get("features", {})
    named = ", ".join(f"{f} (PSI {features[f]['psi']:.3f})" for f in worst[:8])
    if status == "ok":
        return dg.AssetCheckResult(passed=True, description="no feature drifted")
    return dg.AssetCheckResult(
        passed=False,
        severity=dg.AssetCheckSeverity.ERROR if status == "fail" else dg.AssetCheckSeverity.WARN,
        description=f"drift {status}: {named}",
        metadata={"worst_features": ", ".join(worst)},
    )
