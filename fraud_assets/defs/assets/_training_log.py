"""What `fraud_model` records of a training outcome: MLflow params, metrics, runs, and metadata."""

from typing import Any

import mlflow

from fraud_assets.defs.assets._metadata import table
from fraud_core.evaluate import ThresholdPolicy
from fraud_core.training import TrainingOutcome


def log_training(
    outcome: TrainingOutcome,
    policy: ThresholdPolicy,
    splits_summary: dict[str, dict[str, float]],
    version: str,
) -> None:
    """Log the outcome to the active MLflow run: one nested run per variant, then the choice."""
    record = outcome.record()
    # With tuning, these are the tuned values (reg_lambda, reg_alpha among them).
    mlflow.log_params(
        {
            **outcome.config.as_params(),
            "threshold_policy": policy.kind,
            "cost_missed_fraud": policy.cost_missed_fraud,
            "cost_false_alarm": policy.cost_false_alarm,
            "anomaly_trees": outcome.model.anomaly.forest.n_trees,
            "features": ",".join(outcome.model.feature_names),
            "contract": outcome.model.contract,
            # The protocol: what the published model was trained on, and for how many rounds.
            "refit_rounds": record["refit_rounds"] or "-",
            "boosting_rounds": record["boosting_rounds"],
            "threshold_chosen_on": record["threshold_chosen_on"],
        }
    )
    mlflow.log_metrics(
        {
            f"{name}_{k}": float(v[k])
            for name, v in splits_summary.items()
            for k in ("rows", "frauds")
        }
    )
    for name, variant in outcome.result.variants.items():
        with mlflow.start_run(run_name=f"variant-{name}", nested=True):
            mlflow.set_tag("variant", name)
            mlflow.log_params({k: v for k, v in variant.params.items() if v is not None})
            mlflow.log_metrics(
                {
                    "validation_average_precision": variant.validation_ap,
                    "best_iteration": variant.best_iteration,
                    "train_seconds": variant.seconds,
                    "train_rows_after_resampling": variant.train_rows,
                    "train_frauds_after_resampling": variant.train_frauds,
                }
            )
    mlflow.set_tags({"chosen_variant": outcome.chosen, "model_version": version})
    mlflow.log_metrics(outcome.metrics())


def training_metadata(outcome: TrainingOutcome) -> dict[str, Any]:
    """The asset's metadata about the choice and the protocol."""
    variants = {
        name: {
            "validation_ap": v.validation_ap,
            "best_iteration": v.best_iteration,
            "seconds": round(v.seconds, 1),
        }
        for name, v in outcome.result.variants.items()
    }
    record = outcome.record()
    return {
        "chosen_variant": outcome.chosen,
        "validation_average_precision": outcome.best.validation_ap,
        "variants": table(variants, "variant"),
        "threshold": outcome.threshold,
        "refit": record["refit"],
        "training_rows": record["training_rows"],
        "training_frauds": record["training_frauds"],
        "boosting_rounds": record["boosting_rounds"],
        "best_iteration": record["best_iteration"],
    }
