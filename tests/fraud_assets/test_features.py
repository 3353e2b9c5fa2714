"""Model features from the 30 raw fields, and the IsolationForest anomaly feature."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fraud_core import synthetic
from fraud_core.data import as_arrays
from fraud_core.features import (
    ANOMALY_FEATURE,
    BASE_FEATURES,
    MODEL_FEATURES,
    AnomalyScorer,
    base_features,
    model_features,
)
from fraud_core.schema import FEATURE_COLUMNS, PCA_COLUMNS


def raw_rows(times: list[float], amount: float = 10.0) -> np.ndarray:
    raw = np.zeros((len(times), len(FEATURE_COLUMNS)))
    raw[:, 0] = times
    raw[:, 1:29] = np.arange(1, 29) / 10
    raw[:, 29] = amount
    return raw


def test_feature_names_are_in_model_order() -> None:
    assert (*PCA_COLUMNS, "log_amount", "hour_sin", "hour_cos") == BASE_FEATURES
    assert (*BASE_FEATURES, ANOMALY_FEATURE) == MODEL_FEATURES
    assert "Time" not in MODEL_FEATURES


def test_base_features_shape_and_columns() -> None:
    x, _ = as_arrays(synthetic.generate(n_rows=50, fraud_rate=0.1, seed=2))
    base = base_features(x)
    assert base.shape == (50, len(BASE_FEATURES))
    np.testing.assert_array_equal(base[:, :28], x[:, 1:29])
    np.testing.assert_allclose(base[:, BASE_FEATURES.index("log_amount")], np.log1p(x[:, 29]))


def test_hour_features_repeat_every_day() -> None:
    times = [0.0, 3_600.0, 15_000.5, 43_200.0, 86_399.0]
    today = base_features(raw_rows(times))
    tomorrow = base_features(raw_rows([t + 86_400 for t in times]))
    np.testing.assert_allclose(today, tomorrow, rtol=0, atol=1e-9)


def test_hour_features_place_the_time_of_day_on_a_circle() -> None:
    base = base_features(raw_rows([0.0, 21_600.0, 43_200.0, 86_399.0]))
    sin = base[:, BASE_FEATURES.index("hour_sin")]
    cos = base[:, BASE_FEATURES.index("hour_cos")]
    np.testing.assert_allclose(sin[:3], [0.0, 1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(cos[:3], [1.0, 0.0, -1.0], atol=1e-12)
    # A second before midnight is next to midnight, not far from it.
    assert cos[3] == pytest.approx(1.0, abs=1e-8)
    np.testing.assert_allclose(sin**2 + cos**2, 1.0)


def test_log_amount() -> None:
    base = base_features(np.vstack([raw_rows([0.0], 0.0), raw_rows([0.0], np.e - 1)]))
    np.testing.assert_allclose(base[:, BASE_FEATURES.index("log_amount")], [0.0, 1.0])


@pytest.mark.parametrize("shape", [(5, 29), (5, 31), (30,), (2, 3, 30)])
def test_a_wrong_shape_raises(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="30"):
        base_features(np.zeros(shape))


def test_model_features_append_the_anomaly_score() -> None:
    base = base_features(raw_rows([0.0, 1.0, 2.0]))
    scores = np.array([0.1, 0.2, 0.3])
    features = model_features(base, scores)
    assert features.shape == (3, len(MODEL_FEATURES))
    np.testing.assert_array_equal(features[:, -1], scores)
    np.testing.assert_array_equal(features[:, :-1], base)


def test_anomaly_scores_are_higher_for_frauds() -> None:
    x, y = as_arrays(synthetic.generate(n_rows=20_000, fraud_rate=0.01, seed=4))
    base = base_features(x)
    scorer = AnomalyScorer.fit(base, n_estimators=50, seed=0)
    scores = scorer.score(base)
    assert scores.shape == (len(y),)
    assert scores[y == 1].mean() > scores[y == 0].mean()
    assert np.median(scores[y == 1]) > np.quantile(scores[y == 0], 0.75)


def test_anomaly_scorer_is_deterministic_by_seed() -> None:
    x, _ = as_arrays(synthetic.generate(n_rows=2_000, fraud_rate=0.02, seed=4))
    base = base_features(x)
    a = AnomalyScorer.fit(base, n_estimators=20, seed=3).score(base)
    b = AnomalyScorer.fit(base, n_estimators=20, seed=3).score(base)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("max_features", [1.0, 0.5])
def test_compiled_forest_scores_exactly_like_scikit_learn(
    tmp_path: Path, max_features: float
) -> None:
    from sklearn.ensemble import IsolationForest

    from fraud_core.features import CompiledForest
    from fraud_core.synthetic import generate

    raw = generate(n_rows=6000, fraud_rate=0.02, seed=11).drop(columns="Class").to_numpy()
    base = base_features(raw)
    forest = IsolationForest(n_estimators=30, max_features=max_features, random_state=1)
    forest.fit(base[:4000])
    compiled = CompiledForest.from_sklearn(forest)
    expected = forest.score_samples(base)
    np.testing.assert_allclose(compiled.score_samples(base), expected, rtol=0, atol=1e-12)
    # One row at a time (the serving path) and in small chunks give the same numbers.
    np.testing.assert_allclose(compiled.score_samples(base[:1]), expected[:1], atol=1e-12)
    np.testing.assert_allclose(compiled.score_samples(base, chunk=7), expected, atol=1e-12)
    compiled.save(tmp_path / "forest.npz")
    loaded = CompiledForest.load(tmp_path / "forest.npz")
    np.testing.assert_array_equal(loaded.score_samples(base), compiled.score_samples(base))


def test_scorer_gives_the_same_feature_in_bulk_and_row_by_row() -> None:
    from fraud_core.synthetic import generate

    raw = generate(n_rows=5000, fraud_rate=0.02, seed=12).drop(columns="Class").to_numpy()
    base = base_features(raw)
    scorer = AnomalyScorer.fit(base, n_estimators=25, seed=2)
    bulk = scorer.score(base)  # scikit-learn's walk (>= BULK_ROWS rows)
    rows = np.concatenate([scorer.score(base[i : i + 1]) for i in range(0, 5000, 97)])
    np.testing.assert_allclose(rows, bulk[::97], atol=1e-12)
