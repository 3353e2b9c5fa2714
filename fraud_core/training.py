"""The training protocol, from time-ordered splits to the model to publish (no Dagster, no MLflow).

1. The anomaly feature: an IsolationForest fitted on the training split, scored on every split.
2. Every configured variant trained on the training split, early stopping on validation; the
   chosen one by validation AP (or forced).
3. The decision threshold, on the chosen variant's validation scores.
4. With `TrainConfig.refit` (the default): the IsolationForest and the chosen variant trained
   again on training + validation rows, the variant for the rounds early stopping found (scaled by
   the rows, `refit_rounds`), keeping the threshold of step 3. The validation period is the most
   recent before the test: without the refit the published model never learns from it. SMOTE
   stays a training-time step: the refit resamples its own training rows, nothing else.

The test split is not touched here: it is for the evaluation of what this returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb

from fraud_core.bundle import FraudModel
from fraud_core.cards.definition import FeatureDefinition
from fraud_core.contracts import KAGGLE
from fraud_core.data import Splits
from fraud_core.evaluate import ThresholdPolicy, choose_threshold
from fraud_core.features import AnomalyScorer, base_features, model_features
from fraud_core.train import (
    REFIT_PROTOCOL,
    RefitResult,
    TrainConfig,
    TrainResult,
    VariantResult,
    refit_rounds,
    refit_variant,
    train,
)

SPLITS = ("train", "validation", "test")


@dataclass
class AnomalyFeatures:
    """The IsolationForest fitted on the training split, and its score on every split."""

    scorer: AnomalyScorer
    scores: dict[str, np.ndarray]
    #: How it was fitted, so that a refit on more rows fits the same forest.
    n_estimators: int = 100
    seed: int = 0


def _base(splits: Splits, x: np.ndarray) -> np.ndarray:
    """The features the forest and the classifier share: Kaggle's from the raw fields; the
    card contract's behavioural features are already that."""
    return base_features(x) if splits.contract == KAGGLE else x


def fit_anomaly(
    splits: Splits, n_estimators: int = 100, seed: int = 0, n_jobs: int | None = None
) -> AnomalyFeatures:
    """Fit the IsolationForest on the training split only and score every split."""
    bases = {name: _base(splits, splits.arrays(part)[0]) for name, part in splits.items()}
    scorer = AnomalyScorer.fit(bases["train"], n_estimators=n_estimators, seed=seed, n_jobs=n_jobs)
    scores = {name: scorer.score(base) for name, base in bases.items()}
    return AnomalyFeatures(scorer, scores, n_estimators, seed)


@dataclass
class ModelInputs:
    """Each split's base features, classifier input (with the anomaly score) and labels."""

    base: dict[str, np.ndarray]
    x: dict[str, np.ndarray]
    y: dict[str, np.ndarray]
    #: What the models built from these inputs take (`FraudModel`'s fields of the same names).
    contract: str = KAGGLE
    feature_definition: FeatureDefinition | None = None
    history: pd.DataFrame | None = None

    def model(self, scorer: AnomalyScorer, booster: xgb.Booster, threshold: float) -> FraudModel:
        """A model of these inputs' contract (with the cards' definition and history)."""
        return FraudModel(
            scorer,
            booster,
            threshold,
            contract=self.contract,
            feature_definition=self.feature_definition,
            history_frame=self.history,
        )


def model_inputs(splits: Splits, anomaly: AnomalyFeatures) -> ModelInputs:
    raw = {name: splits.arrays(part) for name, part in splits.items()}
    base = {name: _base(splits, raw[name][0]) for name in raw}
    x = {name: model_features(base[name], anomaly.scores[name]) for name in raw}
    return ModelInputs(
        base,
        x,
        {name: raw[name][1] for name in raw},
        contract=splits.contract,
        feature_definition=splits.feature_definition,
        history=splits.history,
    )


@dataclass
class TrainingOutcome:
    """What training produced: the model to publish, and everything to record about it."""

    #: The model to evaluate and publish: the refit one, or the selected one without a refit.
    model: FraudModel
    #: The chosen variant as trained on the training split, with the threshold: what selection
    #: and the threshold were judged on (the published model when the refit is off).
    selected: FraudModel
    result: TrainResult
    config: TrainConfig
    threshold: float
    #: The chosen variant's scores on the validation split (the threshold's basis).
    validation_scores: np.ndarray
    refit: RefitResult | None
    #: Rows and frauds the published model learnt from (before any resampling).
    training_rows: int
    training_frauds: int

    @property
    def chosen(self) -> str:
        return self.result.chosen

    @property
    def best(self) -> VariantResult:
        return self.result.best

    @property
    def boosting_rounds(self) -> int:
        if self.refit is not None:
            return self.refit.rounds
        return self.best.best_iteration + 1

    def record(self) -> dict[str, Any]:
        """The protocol, for the manifest and MLflow: what was refit, on how many rows, rounds."""
        return {
            "refit": REFIT_PROTOCOL[self.refit is not None],
            "refit_rounds": self.config.refit_rounds if self.refit is not None else None,
            "training_rows": self.training_rows,
            "training_frauds": self.training_frauds,
            "best_iteration": self.best.best_iteration,
            "boosting_rounds": self.boosting_rounds,
            "threshold_chosen_on": "validation",
        }

    def metrics(self) -> dict[str, float]:
        """The run's headline numbers (validation only: the test split is not seen here)."""
        figures = {
            "validation_average_precision": self.best.validation_ap,
            "best_iteration": float(self.best.best_iteration),
            "boosting_rounds": float(self.boosting_rounds),
            "training_rows": float(self.training_rows),
            "training_frauds": float(self.training_frauds),
            "threshold": self.threshold,
            **{f"validation_ap_{n}": v.validation_ap for n, v in self.result.variants.items()},
        }
        if self.refit is not None:
            figures["refit_seconds"] = self.refit.seconds
        return figures


@dataclass
class Selection:
    """Steps 2 and 3: the variants trained on the training split, the choice and its threshold."""

    result: TrainResult
    threshold: float
    validation_scores: np.ndarray
    #: The chosen variant with the training split's forest and the threshold.
    model: FraudModel


def select(
    inputs: ModelInputs,
    anomaly: AnomalyFeatures,
    config: TrainConfig,
    policy: ThresholdPolicy,
) -> Selection:
    """Train every variant on the training split, choose one and its threshold on validation."""
    x, y = inputs.x, inputs.y
    result = train(x["train"], y["train"], x["validation"], y["validation"], config)
    scores = np.asarray(result.best.booster.inplace_predict(x["validation"]))
    threshold = choose_threshold(y["validation"], scores, policy)
    return Selection(
        result, threshold, scores, inputs.model(anomaly.scorer, result.best.booster, threshold)
    )


def finish(
    selection: Selection, inputs: ModelInputs, anomaly: AnomalyFeatures, config: TrainConfig
) -> TrainingOutcome:
    """Step 4: refit the selection on training + validation rows, or keep it (`refit` off)."""
    y = inputs.y

    def outcome(
        model: FraudModel, refit: RefitResult | None, labels: np.ndarray
    ) -> TrainingOutcome:
        return TrainingOutcome(
            model=model,
            selected=selection.model,
            result=selection.result,
            config=config,
            threshold=selection.threshold,
            validation_scores=selection.validation_scores,
            refit=refit,
            training_rows=len(labels),
            training_frauds=int(labels.sum()),
        )

    if not config.refit:
        return outcome(selection.model, None, y["train"])
    base = np.vstack([inputs.base["train"], inputs.base["validation"]])
    labels = np.concatenate([y["train"], y["validation"]])
    # The served forest scores what the refit classifier learnt from: fit it on the same rows.
    scorer = AnomalyScorer.fit(
        base, n_estimators=anomaly.n_estimators, seed=anomaly.seed, n_jobs=config.n_jobs
    )
    best = selection.result.best
    rounds = refit_rounds(best.best_iteration, len(y["train"]), len(labels), config.refit_rounds)
    refit = refit_variant(
        best.name, model_features(base, scorer.score(base)), labels, config, rounds
    )
    return outcome(inputs.model(scorer, refit.booster, selection.threshold), refit, labels)


def fit_fraud_model(
    inputs: ModelInputs,
    anomaly: AnomalyFeatures,
    config: TrainConfig | None = None,
    policy: ThresholdPolicy | None = None,
) -> TrainingOutcome:
    """Run the protocol above on one set of splits; return the model and its record."""
    config = config or TrainConfig()
    selection = select(inputs, anomaly, config, policy or ThresholdPolicy())
    return finish(selection, inputs, anomaly, config)
