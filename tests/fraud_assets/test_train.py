"""Training the classifier, and behavioural tests of the trained model (as in Made-With-ML).

One small synthetic set, split in time, trained once per module: minimum quality on its later test
rows, invariance (a whole day more of `Time` changes nothing) and direction (the known fraud
pattern raises the probability).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from fraud_core import synthetic
from fraud_core.bundle import FraudModel
from fraud_core.data import as_arrays, split_by_time
from fraud_core.evaluate import ThresholdPolicy, choose_threshold
from fraud_core.features import AnomalyScorer, base_features, model_features
from fraud_core.schema import FEATURE_COLUMNS
from fraud_core.train import VARIANTS, TrainConfig, TrainResult, train

N_ESTIMATORS = 60
#: One thread per fit: on a small, shared machine more threads only fight each other.
N_JOBS = 1
FRAUD_PATTERN = ("V14", "V12", "V10", "V17")
PATTERN_INDEX = [FEATURE_COLUMNS.index(name) for name in FRAUD_PATTERN]


@dataclass
class Prepared:
    anomaly: AnomalyScorer
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    raw_val: np.ndarray
    raw_test: np.ndarray
    y_test: np.ndarray


@pytest.fixture(scope="module")
def prepared() -> Prepared:
    frame = synthetic.generate(n_rows=30_000, fraud_rate=0.01, seed=7)
    splits = split_by_time(frame)
    raw_train, y_train = as_arrays(splits.train)
    raw_val, y_val = as_arrays(splits.validation)
    raw_test, y_test = as_arrays(splits.test)
    base_train, base_val = base_features(raw_train), base_features(raw_val)
    anomaly = AnomalyScorer.fit(base_train, n_estimators=50, seed=0, n_jobs=N_JOBS)
    return Prepared(
        anomaly,
        model_features(base_train, anomaly.score(base_train)),
        y_train,
        model_features(base_val, anomaly.score(base_val)),
        y_val,
        raw_val,
        raw_test,
        y_test,
    )


@pytest.fixture(scope="module")
def result(prepared: Prepared) -> TrainResult:
    config = TrainConfig(n_estimators=N_ESTIMATORS, seed=0, n_jobs=N_JOBS)
    return train(prepared.x_train, prepared.y_train, prepared.x_val, prepared.y_val, config)


@pytest.fixture(scope="module")
def model(prepared: Prepared, result: TrainResult) -> FraudModel:
    booster = result.best.booster
    draft = FraudModel(prepared.anomaly, booster, 0.5)
    threshold = choose_threshold(
        prepared.y_val, draft.predict_proba(prepared.raw_val), ThresholdPolicy()
    )
    return FraudModel(prepared.anomaly, booster, threshold)


def ordinary_legit(prepared: Prepared) -> np.ndarray:
    """Legitimate test rows of ordinary traffic (look-alikes deep in the fraud region left out)."""
    legit = prepared.raw_test[prepared.y_test == 0]
    return legit[(legit[:, PATTERN_INDEX] > -2.0).all(axis=1)]


def test_trains_every_variant(prepared: Prepared, result: TrainResult) -> None:
    assert set(result.variants) == set(VARIANTS)
    for name, variant in result.variants.items():
        assert variant.name == name
        assert 0.0 < variant.validation_ap <= 1.0
        assert 0 <= variant.best_iteration < N_ESTIMATORS
        # The booster is cut at the best iteration, so every consumer predicts the same.
        assert variant.booster.num_boosted_rounds() == variant.best_iteration + 1
        scores = variant.booster.inplace_predict(prepared.x_val)
        assert average_precision_score(prepared.y_val, scores) == pytest.approx(
            variant.validation_ap
        )


def test_chooses_the_best_validation_ap(result: TrainResult) -> None:
    best = max(result.variants.values(), key=lambda v: v.validation_ap)
    assert result.chosen == best.name
    assert result.best is result.variants[best.name]


def test_variants_record_what_they_trained_on(prepared: Prepared, result: TrainResult) -> None:
    frauds = int(prepared.y_train.sum())
    legit = len(prepared.y_train) - frauds
    assert result.variants["none"].train_frauds == frauds
    assert result.variants["scale_pos_weight"].params["scale_pos_weight"] == pytest.approx(
        legit / frauds
    )
    # SMOTE resamples the minority up to 10 % of the majority: more frauds than were real.
    smote = result.variants["smote"]
    assert smote.train_frauds == int(legit * 0.1) > frauds
    assert smote.train_rows == legit + smote.train_frauds


def test_selection_forces_a_variant(prepared: Prepared) -> None:
    config = TrainConfig(
        n_estimators=N_ESTIMATORS, variants=("none", "smote"), selection="smote", n_jobs=N_JOBS
    )
    forced = train(prepared.x_train, prepared.y_train, prepared.x_val, prepared.y_val, config)
    assert set(forced.variants) == {"none", "smote"}
    assert forced.chosen == "smote"
    assert forced.best is forced.variants["smote"]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"variants": ("bogus",)},
        {"variants": ("none", "oversample")},
        {"variants": ()},
        {"selection": "fastest"},
        {"variants": ("none",), "selection": "smote"},
    ],
)
def test_invalid_variants_raise(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        TrainConfig(**kwargs)


def test_training_needs_frauds_in_both_splits(prepared: Prepared) -> None:
    config = TrainConfig(n_estimators=5, variants=("none",), n_jobs=N_JOBS)
    no_frauds = np.zeros_like(prepared.y_val)
    with pytest.raises(ValueError, match="fraud"):
        train(prepared.x_train, prepared.y_train, prepared.x_val, no_frauds, config)


def test_minimum_quality_on_later_test_rows(prepared: Prepared, model: FraudModel) -> None:
    scores = model.predict_proba(prepared.raw_test)
    assert prepared.y_test.sum() >= 30
    assert average_precision_score(prepared.y_test, scores) > 0.5
    assert roc_auc_score(prepared.y_test, scores) > 0.95
    assert 0.0 < model.threshold < 1.0


def test_invariance_one_day_later_scores_the_same(prepared: Prepared, model: FraudModel) -> None:
    raw = prepared.raw_test
    later = raw.copy()
    later[:, FEATURE_COLUMNS.index("Time")] += 86_400
    np.testing.assert_allclose(model.predict_proba(later), model.predict_proba(raw), atol=1e-9)


def test_directional_the_fraud_pattern_raises_the_probability(
    prepared: Prepared, model: FraudModel
) -> None:
    ordinary = ordinary_legit(prepared)
    assert len(ordinary) > 5_000
    moved = ordinary.copy()
    moved[:, PATTERN_INDEX] = -8.0
    before, after = model.predict_proba(ordinary), model.predict_proba(moved)
    assert np.all(after > before)
    assert after.mean() > 10 * before.mean()


def test_directional_one_record(prepared: Prepared, model: FraudModel) -> None:
    record = dict(zip(FEATURE_COLUMNS, ordinary_legit(prepared)[0].tolist(), strict=True))
    fraudulent = {**record, **dict.fromkeys(FRAUD_PATTERN, -8.0)}
    assert model.predict_record(fraudulent) > model.predict_record(record)


def test_smote_trains_on_the_rows_as_they_are_when_frauds_are_already_common() -> None:
    """A set whose frauds exceed the SMOTE ratio (small card sets reach 13 %): nothing to add."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2_000, 4))
    y = (x[:, 0] + rng.normal(scale=0.5, size=2_000) > 1.0).astype(np.int8)  # ~16 % frauds
    config = TrainConfig(n_estimators=20, variants=("smote",), smote_ratio=0.1, n_jobs=N_JOBS)
    result = train(x[:1_500], y[:1_500], x[1_500:], y[1_500:], config)
    smote = result.variants["smote"]
    assert smote.train_rows == 1_500 and smote.train_frauds == int(y[:1_500].sum())
    assert smote.validation_ap > 0.6
