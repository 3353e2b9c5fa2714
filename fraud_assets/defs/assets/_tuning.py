"""The Optuna study inside `fraud_model`: where studies live, and each trial as an MLflow run."""

from pathlib import Path
from typing import Any

import dagster as dg
import mlflow
import numpy as np
from sqlalchemy.engine import make_url

from fraud_core.settings import PlatformSettings
from fraud_core.train import TrainConfig
from fraud_core.tune import TuneConfig, TuneResult, tune


def optuna_storage(models_dir: str) -> str:
    """`FRAUD_OPTUNA_STORAGE`, else an SQLite file in the model store's `tuning/` folder."""
    configured = PlatformSettings().optuna_storage
    if configured:
        return configured
    folder = Path(models_dir) / "tuning"
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder.resolve() / 'optuna.db'}"


def run_study(
    context: dg.AssetExecutionContext,
    x: dict[str, np.ndarray],
    y: dict[str, np.ndarray],
    base: TrainConfig,
    tune_config: TuneConfig,
    storage: str,
    study_name: str,
) -> tuple[TuneResult, dict[str, Any]]:
    """Run the study on train/validation inside the active MLflow run; return it and metadata.

    Each trial becomes a nested run of the active (training) run; the study's outcome goes on the
    training run as tags and metrics.
    """

    def log_trial(number: int, params: dict[str, Any], value: float | None, state: str) -> None:
        tags = {
            "tuning": "optuna",
            "optuna_study": study_name,
            "optuna_trial": str(number),
            "optuna_state": state,
        }
        with mlflow.start_run(run_name=f"trial-{number}", nested=True, tags=tags):
            mlflow.log_params(params)
            if value is not None:
                mlflow.log_metric("validation_average_precision", value)
        shown = "-" if value is None else f"{value:.4f}"
        context.log.info(f"trial {number} {state}: validation AP {shown}, {params}")

    tuned = tune(
        x["train"],
        y["train"],
        x["validation"],
        y["validation"],
        base,
        storage,
        study_name,
        tune_config,
        on_trial=log_trial,
    )
    counts = {
        "tuning_trials_complete": tuned.complete,
        "tuning_trials_pruned": tuned.pruned,
        "tuning_trials_failed": tuned.failed,
    }
    mlflow.set_tags(
        {"tuning": "optuna", "optuna_study": study_name, "optuna_best_trial": tuned.best_trial}
    )
    mlflow.log_metrics({"tuning_best_value": tuned.best_value, **counts})
    context.log.info(
        f"study {study_name}: best trial {tuned.best_trial} (validation AP "
        f"{tuned.best_value:.4f}) of {tuned.complete} complete, {tuned.pruned} pruned"
    )
    metadata = {
        "tuning_study": study_name,
        # A PostgreSQL URL may carry a password; the UI shows metadata to everyone.
        "tuning_storage": make_url(storage).render_as_string(hide_password=True),
        "tuning_best_trial": tuned.best_trial,
        "tuning_best_value": tuned.best_value,
        **counts,
        "tuning_trials_added": tuned.added,
        "tuned_params": dg.MetadataValue.json(tuned.best_params),
    }
    return tuned, metadata
