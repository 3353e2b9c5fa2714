"""The classifier trained with xgboost.dask: the single path's quality, types and bundle."""

from __future__ import annotations

from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import xgboost as xgb
from distributed import Client
from imblearn.over_sampling import SMOTE
from sklearn.metrics import average_precision_score

from fraud_core.bundle import FraudModel, load_bundle, save_bundle
from fraud_core.cards import synthetic
from fraud_core.cards.definition import DEFAULT
from fraud_core.cards.features import compute_features
from fraud_core.cards.splits import split_cards
from fraud_core.features import AnomalyScorer
from fraud_core.scale.protocol import fit_fraud_model_dask
from fraud_core.scale.resample import smote_rows
from fraud_core.scale.training import train_dask, train_variant_dask
from fraud_core.train import VARIANTS, TrainConfig, VariantResult, refit_rounds, train_variant
from fraud_core.training import AnomalyFeatures, ModelInputs, fit_anomaly, model_inputs

#: ~100,000 transactions over 90 days: past the 37-day warm-up of the terminal windows, the
#: variants' test AP is stable enough that two equally good fits agree to a few thousandths
#: (on 60 days, two seeds of the SAME single-process fit differ by up to 0.05).
PARITY_CARDS = (600, 600, 90)
#: The quality parity the issue asks for: test AP within this of the single-process model's.
AP_TOLERANCE = 0.01


def inputs_of(
    shape: tuple[int, int, int], seed: int, trees: int
) -> tuple[ModelInputs, AnomalyFeatures]:
    """Features, delay-gapped splits and the (single-process) anomaly feature of a card set."""
    frame = synthetic.generate(*shape, seed=seed)
    splits, _ = split_cards(frame, compute_features(frame, DEFAULT), DEFAULT)
    anomaly = fit_anomaly(splits, n_estimators=trees, seed=0, n_jobs=1)
    return model_inputs(splits, anomaly), anomaly


@pytest.fixture(scope="module")
def parity_inputs() -> ModelInputs:
    return inputs_of(PARITY_CARDS, seed=0, trees=50)[0]


@pytest.fixture(scope="module")
def small() -> tuple[ModelInputs, AnomalyFeatures]:
    return inputs_of((250, 500, 60), seed=1, trees=20)


@pytest.fixture(scope="module")
def small_inputs(small: tuple[ModelInputs, AnomalyFeatures]) -> ModelInputs:
    return small[0]


def average_precision(y: np.ndarray, booster: xgb.Booster, x: np.ndarray) -> float:
    return float(average_precision_score(y, booster.inplace_predict(x)))


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_cluster_model_has_the_single_process_test_ap(
    cluster: Client, parity_inputs: ModelInputs, variant: str
) -> None:
    x, y = parity_inputs.x, parity_inputs.y
    config = TrainConfig(n_jobs=1)
    single = train_variant(
        variant, x["train"], y["train"], x["validation"], y["validation"], config
    )
    dask = train_variant_dask(
        cluster, variant, x["train"], y["train"], x["validation"], y["validation"], config
    )
    assert isinstance(dask, VariantResult) and isinstance(dask.booster, xgb.Booster)
    assert dask.booster.num_boosted_rounds() == dask.best_iteration + 1
    # The same rows learnt from: SMOTE's synthetic frauds included.
    assert (dask.train_rows, dask.train_frauds) == (single.train_rows, single.train_frauds)
    assert {k: v for k, v in dask.params.items() if k != "n_jobs"} == {
        k: v for k, v in single.params.items() if k != "n_jobs"
    }
    ap_single = average_precision(y["test"], single.booster, x["test"])
    ap_dask = average_precision(y["test"], dask.booster, x["test"])
    assert ap_single > 0.6  # a model worth comparing
    assert abs(ap_dask - ap_single) <= AP_TOLERANCE, (variant, ap_single, ap_dask)


@pytest.mark.parametrize("variant", ["scale_pos_weight", "smote"])
def test_with_every_row_in_one_partition_it_is_the_single_process_model(
    local_cluster: Client, small_inputs: ModelInputs, variant: str
) -> None:
    """The same parameters, early stopping and resampling: only the partitioning differs."""
    x, y = small_inputs.x, small_inputs.y
    config = TrainConfig(n_estimators=60, early_stopping_rounds=10, n_jobs=1)
    single = train_variant(
        variant, x["train"], y["train"], x["validation"], y["validation"], config
    )
    dask = train_variant_dask(
        local_cluster, variant, x["train"], y["train"], x["validation"], y["validation"], config,
        npartitions=1,
    )  # fmt: skip
    assert dask.best_iteration == single.best_iteration
    assert np.array_equal(
        dask.booster.inplace_predict(x["test"]), single.booster.inplace_predict(x["test"])
    )
    assert dask.validation_ap == single.validation_ap


def test_smote_makes_the_rows_it_makes_from_the_whole_split(
    local_cluster: Client, small_inputs: ModelInputs
) -> None:
    x, y = small_inputs.x["train"], small_inputs.y["train"]
    config = TrainConfig(smote_ratio=0.3, smote_k_neighbors=4, seed=7)
    whole = SMOTE(sampling_strategy=0.3, k_neighbors=4, random_state=7).fit_resample(x, y)[0]
    expected = whole[len(x) :]
    assert len(expected) > 0
    assert np.array_equal(smote_rows(x, y, config), expected)
    # From a Dask array of the split, only its frauds gathered.
    on_cluster = da.from_array(x, chunks=(len(x) // 3 + 1, -1))
    assert np.array_equal(smote_rows(on_cluster, y, config, client=local_cluster), expected)
    # Frauds already at the asked share: nothing to add.
    assert len(smote_rows(x, y, TrainConfig(smote_ratio=0.01))) == 0


def test_train_dask_chooses_by_validation_ap_like_train(
    local_cluster: Client, small_inputs: ModelInputs
) -> None:
    x, y = small_inputs.x, small_inputs.y
    config = TrainConfig(n_estimators=40, variants=("none", "scale_pos_weight"), n_jobs=1)
    result = train_dask(
        local_cluster, x["train"], y["train"], x["validation"], y["validation"], config
    )
    assert set(result.variants) == {"none", "scale_pos_weight"}
    assert result.chosen == max(result.variants.values(), key=lambda r: r.validation_ap).name
    forced = TrainConfig(n_estimators=10, variants=("none",), selection="none", n_jobs=1)
    no_fraud = np.zeros_like(y["validation"])
    with pytest.raises(ValueError, match="at least one fraud"):
        train_dask(local_cluster, x["train"], y["train"], x["validation"], no_fraud, forced)


def test_the_protocol_on_the_cluster_publishes_an_ordinary_bundle(
    local_cluster: Client, small: tuple[ModelInputs, AnomalyFeatures], tmp_path: Path
) -> None:
    inputs, anomaly = small
    config = TrainConfig(n_estimators=40, variants=("none", "scale_pos_weight"), n_jobs=1)
    outcome = fit_fraud_model_dask(local_cluster, inputs, anomaly, config)
    assert isinstance(outcome.model, FraudModel)
    assert outcome.refit is not None
    train_rows = len(inputs.y["train"])
    rows = train_rows + len(inputs.y["validation"])
    assert outcome.training_rows == rows == outcome.refit.rows
    assert outcome.refit.rounds == refit_rounds(
        outcome.best.best_iteration, train_rows, rows, config.refit_rounds
    )
    # The refit forest is the single path's (fewer rows than the sample size): same scores.
    base = np.vstack([inputs.base["train"], inputs.base["validation"]])
    single_forest = AnomalyScorer.fit(base, n_estimators=anomaly.n_estimators, seed=0)
    assert np.array_equal(outcome.model.anomaly.score(base), single_forest.score(base))
    # Saved and loaded as any bundle, it predicts what the trained model predicts.
    test_rows = inputs.base["test"][:500]
    directory = save_bundle(outcome.model, tmp_path / "bundle", {"engine": "dask"})
    loaded = load_bundle(directory)
    assert loaded.contract == outcome.model.contract == "cards"
    assert np.array_equal(loaded.predict_proba(test_rows), outcome.model.predict_proba(test_rows))
    assert loaded.booster.num_boosted_rounds() == outcome.refit.rounds
