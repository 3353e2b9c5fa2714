"""Model assets: the anomaly feature, the classifier and its evaluation on the test split."""

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import mlflow
import numpy as np
from pydantic import Field
from sklearn.metrics import average_precision_score, roc_auc_score

from fraud_assets.defs import constants
from fraud_assets.defs.assets._evaluation import confusion_rows, log_plots
from fraud_assets.defs.assets._metadata import image, table
from fraud_assets.defs.assets._training_log import log_training, training_metadata
from fraud_assets.defs.assets._tuning import optuna_storage, run_study
from fraud_assets.defs.resources import ComputeEngine, MlflowTracking, ModelStoreResource
from fraud_core import plots, tracking
from fraud_core.bundle import FraudModel, new_version
from fraud_core.cards.evaluate import card_precision_top_k
from fraud_core.contracts import CARDS, KAGGLE
from fraud_core.data import Splits
from fraud_core.evaluate import ThresholdPolicy, metrics
from fraud_core.train import VARIANTS, TrainConfig
from fraud_core.training import AnomalyFeatures, fit_anomaly, fit_fraud_model, model_inputs
from fraud_core.tune import TuneConfig

__all__ = ["AnomalyFeatures", "EvaluationReport", "TrainedModel"]


@dataclass
class TrainedModel:
    model: FraudModel
    version: str
    variant: str
    validation_ap: dict[str, float]
    mlflow_run_id: str
    model_uri: str
    data_fingerprint: str
    data_source: str
    threshold_policy: dict[str, Any]
    #: The training protocol (refit, rows, rounds): `TrainingOutcome.record()`.
    training: dict[str, Any] = field(default_factory=dict)


@dataclass
class EvaluationReport:
    metrics: dict[str, float]
    test_scores: np.ndarray
    mlflow_run_id: str
    #: Cards: Card Precision@k of each test day (`CardPrecision.as_rows()`).
    card_precision_per_day: dict[str, dict[str, float | int]] | None = None
    #: The data contract of the model and its test rows (the floor depends on it).
    contract: str = KAGGLE


_HEADLINE = ("average_precision", "roc_auc", f"card_precision_top_{constants.CARD_PRECISION_K}")


class AnomalyConfig(dg.Config):
    n_estimators: int = constants.ANOMALY_TREES
    seed: int = constants.SEED


class TrainingConfig(dg.Config):
    n_estimators: int = constants.TRAIN.n_estimators
    max_depth: int = constants.TRAIN.max_depth
    learning_rate: float = constants.TRAIN.learning_rate
    early_stopping_rounds: int = constants.TRAIN.early_stopping_rounds
    smote_ratio: float = constants.TRAIN.smote_ratio
    variants: list[str] = Field(default_factory=lambda: list(VARIANTS))
    #: "best" keeps the best validation AP; "smote" (or another variant) forces that variant.
    selection: str = constants.TRAIN.selection
    seed: int = constants.SEED
    #: Refit the chosen variant (and the anomaly feature) on train + validation before test.
    refit: bool = constants.TRAIN.refit
    #: The refit's rounds: "scaled" (best iteration x rows ratio) or "best" (best iteration).
    refit_rounds: str = constants.TRAIN.refit_rounds
    threshold_policy: str = constants.THRESHOLD.kind
    cost_missed_fraud: float = constants.THRESHOLD.cost_missed_fraud
    cost_false_alarm: float = constants.THRESHOLD.cost_false_alarm
    #: Run an Optuna study first and train with its best parameters and variant.
    tuning: bool = False
    #: Trials this run adds to the study (None: until the timeout).
    tuning_trials: int | None = constants.TUNE.n_trials
    #: Seconds this run may spend on the study, checked between trials (None: until the trials).
    tuning_timeout_s: float | None = constants.TUNE.timeout_s
    #: The study, resumed when it exists; the data fingerprint is appended to it.
    tuning_study: str = constants.TUNING_STUDY

    def train_config(self) -> TrainConfig:
        return TrainConfig(
            n_estimators=self.n_estimators,
            max_depth=self.max_depth,
            learning_rate=self.learning_rate,
            early_stopping_rounds=self.early_stopping_rounds,
            smote_ratio=self.smote_ratio,
            variants=tuple(self.variants),
            selection=self.selection,
            seed=self.seed,
            refit=self.refit,
            refit_rounds=self.refit_rounds,
        )

    def policy(self) -> ThresholdPolicy:
        return ThresholdPolicy(self.threshold_policy, self.cost_missed_fraud, self.cost_false_alarm)

    def tune_config(self) -> TuneConfig:
        return TuneConfig(
            n_trials=self.tuning_trials, timeout_s=self.tuning_timeout_s, seed=self.seed
        )


@dg.asset(
    group_name="features",
    kinds={"scikitlearn"},
    owners=[constants.OWNER],
    tags={"stage": "train"},
)
def anomaly_scores(
    context: dg.AssetExecutionContext,
    config: AnomalyConfig,
    transaction_splits: Splits,
    compute: ComputeEngine,
) -> dg.Output:
    """IsolationForest anomaly scores, fitted on the training split only, for every split."""
    start = time.perf_counter()
    with compute.dask_client() as client:
        if client is None:
            features = fit_anomaly(transaction_splits, config.n_estimators, config.seed)
        else:
            # Fitted on a seeded sample of the training rows, every split scored on the cluster.
            from fraud_core.scale.anomaly import fit_anomaly_dask

            features = fit_anomaly_dask(
                client, transaction_splits, n_estimators=config.n_estimators, seed=config.seed
            )
    scores = features.scores
    label = transaction_splits.label
    y_val = transaction_splits.validation[label].to_numpy()
    y_train = transaction_splits.train[label].to_numpy()
    with tempfile.TemporaryDirectory() as tmp:
        plot = plots.anomaly_by_class(y_train, scores["train"], Path(tmp) / "anomaly.png")
        shown = image(plot, "Anomaly score by class (train)")
    context.log.info(f"IsolationForest fitted and scored in {time.perf_counter() - start:.1f}s")
    return dg.Output(
        features,
        metadata={
            "validation_ap_alone": float(average_precision_score(y_val, scores["validation"])),
            "validation_roc_auc_alone": float(roc_auc_score(y_val, scores["validation"])),
            "mean_score_fraud": float(scores["train"][y_train == 1].mean()),
            "mean_score_legit": float(scores["train"][y_train == 0].mean()),
            "n_estimators": config.n_estimators,
            "engine": compute.engine(),
            "plot": shown,
        },
    )


@dg.asset(
    group_name="training",
    kinds={"xgboost", "mlflow"},
    owners=[constants.OWNER],
    tags={"stage": "train"},
)
def fraud_model(
    context: dg.AssetExecutionContext,
    config: TrainingConfig,
    transaction_splits: Splits,
    anomaly_scores: AnomalyFeatures,
    mlflow_tracking: MlflowTracking,
    model_store: ModelStoreResource,
    compute: ComputeEngine,
) -> dg.Output:
    """XGBoost on the raw features and the anomaly score: the best variant (optionally tuned)."""
    train_config = config.train_config()
    # Built first, so a config without any budget fails before an MLflow run is opened.
    tune_config = config.tune_config() if config.tuning else None
    policy = config.policy()
    inputs = model_inputs(transaction_splits, anomaly_scores)
    with mlflow_tracking.run(
        context,
        run_name=f"train-{context.run_id[:8]}",
        tags={
            "data_fingerprint": transaction_splits.fingerprint,
            "data_source": transaction_splits.source,
            "contract": transaction_splits.contract,
        },
    ) as run:
        run_id = run.info.run_id
        if transaction_splits.feature_definition is not None:
            # The behavioural features' definition: what the API's state must compute.
            mlflow.log_dict(
                transaction_splits.feature_definition.as_dict(), "features/definition.json"
            )
        tuning_metadata: dict[str, Any] = {}
        if tune_config is not None:
            # Trials scored on other data are not comparable: new data, new study.
            study = f"{config.tuning_study}-{transaction_splits.fingerprint[:12]}"
            storage = optuna_storage(model_store.models_dir)
            tuned, tuning_metadata = run_study(
                context, inputs.x, inputs.y, train_config, tune_config, storage, study
            )
            train_config = tuned.train_config(train_config)
        with compute.dask_client() as client:
            if client is None:
                outcome = fit_fraud_model(inputs, anomaly_scores, train_config, policy)
            else:
                # The same protocol with xgboost.dask: the same bundle comes out.
                from fraud_core.scale.protocol import fit_fraud_model_dask

                outcome = fit_fraud_model_dask(client, inputs, anomaly_scores, train_config, policy)
        version = new_version(run_id)
        log_training(outcome, policy, transaction_splits.summary(), version)
        manifest = {
            "model_version": version,
            "mlflow_run_id": run_id,
            "data_fingerprint": transaction_splits.fingerprint,
            "data_source": transaction_splits.source,
            "variant": outcome.chosen,
            "threshold_policy": policy.kind,
            "training": outcome.record(),
        }
        model_uri = tracking.log_model(
            outcome.model,
            manifest,
            transaction_splits.test.head(50),
            constants.MODEL_PIP_REQUIREMENTS,
        )
    context.log.info(
        f"chose {outcome.chosen}: validation AP {outcome.best.validation_ap:.4f}; "
        f"refit {outcome.record()['refit']}, {outcome.boosting_rounds} rounds on "
        f"{outcome.training_rows:,} rows"
    )
    return dg.Output(
        TrainedModel(
            model=outcome.model,
            version=version,
            variant=outcome.chosen,
            validation_ap={n: v.validation_ap for n, v in outcome.result.variants.items()},
            mlflow_run_id=run_id,
            model_uri=model_uri,
            data_fingerprint=transaction_splits.fingerprint,
            data_source=transaction_splits.source,
            threshold_policy={
                "kind": policy.kind,
                "cost_missed_fraud": policy.cost_missed_fraud,
                "cost_false_alarm": policy.cost_false_alarm,
            },
            training=outcome.record(),
        ),
        metadata={
            "model_version": version,
            **training_metadata(outcome),
            "mlflow_run_id": run_id,
            "mlflow_run": dg.MetadataValue.url(mlflow_tracking.run_url(run_id)),
            "model_uri": model_uri,
            "engine": compute.engine(),
            **tuning_metadata,
        },
    )


@dg.asset(
    group_name="training",
    kinds={"mlflow"},
    owners=[constants.OWNER],
    tags={"stage": "evaluate"},
)
def evaluation_report(
    context: dg.AssetExecutionContext,
    fraud_model: TrainedModel,
    transaction_splits: Splits,
    mlflow_tracking: MlflowTracking,
) -> dg.Output:
    """Test-split metrics at the validation-chosen threshold, with plots, logged to MLflow."""
    x_test, y_test = transaction_splits.arrays(transaction_splits.test)
    # Score through the bundle's own path (input fields -> probability), exactly as it is served.
    scores = fraud_model.model.predict_proba(x_test)
    policy = ThresholdPolicy(**fraud_model.threshold_policy)
    figures = metrics(y_test, scores, fraud_model.model.threshold, policy)
    card_precision = None
    if transaction_splits.contract == CARDS:
        card_precision = card_precision_top_k(
            transaction_splits.test, scores, constants.CARD_PRECISION_K
        )
        figures[f"card_precision_top_{card_precision.k}"] = card_precision.mean
    names = fraud_model.model.feature_names
    gain = fraud_model.model.booster.get_score(importance_type="gain")
    importance = {names[int(k[1:])]: float(v) for k, v in gain.items()}  # type: ignore[arg-type]
    with mlflow_tracking.run(context, run_id=fraud_model.mlflow_run_id):
        mlflow.log_metrics({f"test_{k}": v for k, v in figures.items()})
        shown = log_plots(y_test, scores, figures, importance)
        mlflow.log_dict(figures, "evaluation/test_metrics.json")
        if card_precision is not None:
            mlflow.log_table(card_precision.per_day, "evaluation/card_precision_per_day.json")
    context.log.info(
        f"test AP {figures['average_precision']:.4f}, ROC AUC {figures['roc_auc']:.4f}, "
        f"recall@P90 {figures['recall_at_precision_90']:.3f}"
        + (
            f", Card Precision@{card_precision.k} {card_precision.mean:.3f} over "
            f"{len(card_precision.per_day)} days"
            if card_precision is not None
            else ""
        )
    )
    per_day = card_precision.as_rows() if card_precision is not None else None
    extra: dict[str, Any] = {}
    if per_day is not None:
        extra["card_precision_per_day"] = table(per_day, "day")
    return dg.Output(
        EvaluationReport(
            figures, scores, fraud_model.mlflow_run_id, per_day, transaction_splits.contract
        ),
        metadata={
            # The headline first (the command line shows the first few): AP, AUC, CP@k.
            **{k: float(figures[k]) for k in _HEADLINE if k in figures},
            **{k: float(v) for k, v in figures.items()},
            **extra,
            "confusion_matrix": table(confusion_rows(figures), "at threshold"),
            "mlflow_run": dg.MetadataValue.url(mlflow_tracking.run_url(fraud_model.mlflow_run_id)),
            **shown,
        },
    )
