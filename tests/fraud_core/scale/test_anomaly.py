"""The anomaly feature on the cluster: a forest fitted on a sample, scores equal to local ones."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from distributed import Client

from fraud_core.cards.definition import DEFAULT
from fraud_core.cards.features import compute_features
from fraud_core.cards.splits import split_cards
from fraud_core.features import AnomalyScorer
from fraud_core.scale.training import (
    anomaly_scorer,
    fit_anomaly_dask,
    fit_anomaly_sampled,
    score_anomaly_dask,
)


@pytest.fixture(scope="module")
def base(cards: pd.DataFrame) -> np.ndarray:
    return compute_features(cards, DEFAULT).to_numpy()


def test_parallel_scores_are_the_forests_own_scores(cluster: Client, base: np.ndarray) -> None:
    forest = fit_anomaly_sampled(base, sample_rows=5_000, n_estimators=40, seed=0)
    # Chunks of 997 rows: many chunks, none the size of sklearn's own batches.
    got = score_anomaly_dask(cluster, forest, base, chunk_rows=997)
    assert got.shape == (len(base),)
    assert np.array_equal(got, -forest.score_samples(base))
    # The convention of fraud_core.training: higher is more anomalous, as AnomalyScorer.score.
    assert np.array_equal(got, anomaly_scorer(forest).score(base))


def test_a_compiled_forest_alone_scores_as_it_does_locally(
    local_cluster: Client, base: np.ndarray
) -> None:
    """A loaded bundle's scorer has no sklearn forest: its compiled trees are scattered."""
    compiled = AnomalyScorer(anomaly_scorer(fit_anomaly_sampled(base, sample_rows=2_000)).forest)
    rows = base[:3_000]
    got = score_anomaly_dask(local_cluster, compiled, rows, chunk_rows=500)
    assert np.array_equal(got, -compiled.forest.score_samples(rows))


def test_the_forest_is_fitted_on_a_seeded_sample_of_at_most_sample_rows(base: np.ndarray) -> None:
    forest = fit_anomaly_sampled(base, sample_rows=3_000, n_estimators=25, seed=5)
    # Each tree's rows are drawn from the rows the forest was fitted on: the sample.
    assert max(int(s.max()) for s in forest.estimators_samples_) < 3_000
    again = fit_anomaly_sampled(base, sample_rows=3_000, n_estimators=25, seed=5)
    other = fit_anomaly_sampled(base, sample_rows=3_000, n_estimators=25, seed=6)
    rows = base[:2_000]
    assert np.array_equal(forest.score_samples(rows), again.score_samples(rows))
    assert not np.array_equal(forest.score_samples(rows), other.score_samples(rows))


def test_with_enough_sample_rows_it_is_the_single_process_forest(base: np.ndarray) -> None:
    forest = fit_anomaly_sampled(base, sample_rows=len(base), n_estimators=30, seed=2)
    single = AnomalyScorer.fit(base, n_estimators=30, seed=2)
    assert np.array_equal(anomaly_scorer(forest).score(base), single.score(base))


def test_fit_anomaly_dask_scores_every_split_with_its_forest(
    local_cluster: Client, cards: pd.DataFrame
) -> None:
    splits, _ = split_cards(cards, compute_features(cards, DEFAULT), DEFAULT)
    anomaly = fit_anomaly_dask(local_cluster, splits, sample_rows=4_000, n_estimators=30, seed=1)
    assert set(anomaly.scores) == {"train", "validation", "test"}
    assert (anomaly.n_estimators, anomaly.seed) == (30, 1)
    for name, part in splits.items():
        x = splits.arrays(part)[0]
        assert np.array_equal(anomaly.scores[name], anomaly.scorer.score(x))
    with pytest.raises(ValueError, match="sample_rows"):
        fit_anomaly_sampled(splits.arrays(splits.train)[0], sample_rows=0)
