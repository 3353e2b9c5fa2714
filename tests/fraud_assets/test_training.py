"""The training protocol in the ML core, without Dagster: selection on validation, then the refit.

One small synthetic set, split in time; the protocol runs once with the refit (the default) and
once without, on the same selection settings.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from fraud_core import synthetic
from fraud_core.data import Splits, as_arrays, split_by_time
from fraud_core.evaluate import ThresholdPolicy, choose_threshold
from fraud_core.train import TrainConfig, refit_rounds, refit_variant
from fraud_core.training import (
    AnomalyFeatures,
    ModelInputs,
    TrainingOutcome,
    fit_anomaly,
    fit_fraud_model,
    model_inputs,
)

ROOT = Path(__file__).resolve().parents[2]
#: Small and on one thread: the two-core machine is shared.
CONFIG = TrainConfig(n_estimators=60, variants=("none", "scale_pos_weight"), n_jobs=1)


@pytest.fixture(scope="module")
def splits() -> Splits:
    return split_by_time(synthetic.generate(n_rows=30_000, fraud_rate=0.01, seed=7))


@pytest.fixture(scope="module")
def anomaly(splits: Splits) -> AnomalyFeatures:
    return fit_anomaly(splits, n_estimators=30, seed=0, n_jobs=1)


@pytest.fixture(scope="module")
def inputs(splits: Splits, anomaly: AnomalyFeatures) -> ModelInputs:
    return model_inputs(splits, anomaly)


@pytest.fixture(scope="module")
def refit(inputs: ModelInputs, anomaly: AnomalyFeatures) -> TrainingOutcome:
    return fit_fraud_model(inputs, anomaly, CONFIG)


@pytest.fixture(scope="module")
def no_refit(inputs: ModelInputs, anomaly: AnomalyFeatures) -> TrainingOutcome:
    return fit_fraud_model(inputs, anomaly, TrainConfig(**{**CONFIG.__dict__, "refit": False}))


def test_the_anomaly_feature_is_fitted_on_train_and_scores_every_split(
    splits: Splits, anomaly: AnomalyFeatures, inputs: ModelInputs
) -> None:
    assert {name: len(s) for name, s in anomaly.scores.items()} == {
        name: len(part) for name, part in splits.items()
    }
    assert anomaly.scorer.forest.n_trees == anomaly.n_estimators == 30
    assert inputs.x["test"].shape == (len(splits.test), inputs.base["test"].shape[1] + 1)
    np.testing.assert_array_equal(inputs.x["validation"][:, -1], anomaly.scores["validation"])


def test_the_refit_model_has_learnt_from_the_validation_rows(
    splits: Splits, inputs: ModelInputs, refit: TrainingOutcome
) -> None:
    rows = len(splits.train) + len(splits.validation)
    assert refit.training_rows == rows
    assert refit.training_frauds == int(
        splits.train["Class"].sum() + splits.validation["Class"].sum()
    )
    assert refit.refit is not None and refit.refit.rows == rows
    # Fitted on the validation rows, it scores them better than the model that only saw train.
    raw_val, y_val = as_arrays(splits.validation)
    seen = average_precision_score(y_val, refit.model.predict_proba(raw_val))
    unseen = average_precision_score(y_val, refit.selected.predict_proba(raw_val))
    assert seen > unseen
    # The served anomaly feature is the one refit on the same rows as the classifier.
    assert refit.model.anomaly is not refit.selected.anomaly
    assert not np.allclose(
        refit.model.anomaly.score(inputs.base["test"]),
        refit.selected.anomaly.score(inputs.base["test"]),
    )


def test_the_refit_trains_the_chosen_variant_for_the_scaled_rounds(
    splits: Splits, refit: TrainingOutcome
) -> None:
    assert refit.refit is not None
    best = refit.best
    assert refit.refit.name == refit.chosen == best.name
    expected = round((best.best_iteration + 1) * refit.training_rows / len(splits.train))
    assert refit.refit.rounds == refit.boosting_rounds == expected
    assert refit.model.booster.num_boosted_rounds() == expected
    assert refit.refit.params["n_estimators"] == expected
    assert refit.refit.params["early_stopping_rounds"] is None


def test_the_threshold_is_chosen_on_validation_and_kept_by_the_refit(
    inputs: ModelInputs, refit: TrainingOutcome
) -> None:
    scores = refit.best.booster.inplace_predict(inputs.x["validation"])
    expected = choose_threshold(inputs.y["validation"], scores, ThresholdPolicy())
    assert refit.threshold == expected == refit.model.threshold == refit.selected.threshold
    np.testing.assert_allclose(refit.validation_scores, scores)


def test_the_record_names_the_protocol(refit: TrainingOutcome, no_refit: TrainingOutcome) -> None:
    assert refit.record() == {
        "refit": "train+validation",
        "refit_rounds": "scaled",
        "training_rows": refit.training_rows,
        "training_frauds": refit.training_frauds,
        "best_iteration": refit.best.best_iteration,
        "boosting_rounds": refit.boosting_rounds,
        "threshold_chosen_on": "validation",
    }
    assert no_refit.record()["refit"] == "off" and no_refit.record()["refit_rounds"] is None
    metrics = refit.metrics()
    assert metrics["training_rows"] == refit.training_rows
    assert metrics["boosting_rounds"] == refit.boosting_rounds
    assert "refit_seconds" in metrics and "refit_seconds" not in no_refit.metrics()
    assert CONFIG.as_params()["refit"] == "train+validation"


def test_switched_off_it_is_the_model_trained_on_train(
    splits: Splits, inputs: ModelInputs, refit: TrainingOutcome, no_refit: TrainingOutcome
) -> None:
    assert no_refit.refit is None
    assert no_refit.model is no_refit.selected
    assert no_refit.training_rows == len(splits.train)
    assert no_refit.boosting_rounds == no_refit.best.best_iteration + 1
    assert no_refit.model.booster.num_boosted_rounds() == no_refit.boosting_rounds
    # The same selection either way: the refit only changes what is published.
    assert no_refit.chosen == refit.chosen and no_refit.threshold == refit.threshold
    raw_test, _ = as_arrays(splits.test)
    np.testing.assert_allclose(
        no_refit.model.predict_proba(raw_test), refit.selected.predict_proba(raw_test)
    )


def test_refit_rounds_follow_the_best_iteration() -> None:
    assert refit_rounds(99, 60_000, 80_000, "best") == 100
    assert refit_rounds(99, 60_000, 80_000, "scaled") == 133
    assert refit_rounds(0, 60_000, 60_000, "scaled") == 1
    with pytest.raises(ValueError, match="refit_rounds"):
        refit_rounds(10, 1, 2, "double")
    with pytest.raises(ValueError, match="refit_rounds"):
        TrainConfig(refit_rounds="double")


def test_a_smote_refit_resamples_only_its_training_rows(inputs: ModelInputs) -> None:
    x, y = inputs.x["train"], inputs.y["train"]
    result = refit_variant("smote", x, y, CONFIG, rounds=5)
    legit = len(y) - int(y.sum())
    assert result.rows == len(y) and result.frauds == int(y.sum())
    assert result.train_frauds == int(legit * CONFIG.smote_ratio) > result.frauds
    # The booster is all that is kept: it scores raw rows, no resampling step in it.
    assert result.booster.num_boosted_rounds() == 5
    assert result.booster.inplace_predict(inputs.x["test"]).shape == (len(inputs.y["test"]),)


def test_the_protocol_imports_no_framework() -> None:
    code = (
        "import sys, fraud_core.training, fraud_core.drift; "
        "bad = {'dagster', 'fastapi', 'airflow'} & {m.split('.')[0] for m in sys.modules}; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
