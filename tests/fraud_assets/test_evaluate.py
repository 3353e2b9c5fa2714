"""Evaluation metrics, the decision threshold and the paired bootstrap of average precision."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from fraud_core.evaluate import (
    ThresholdPolicy,
    _weighted_ap,
    choose_threshold,
    metrics,
    paired_bootstrap_ap,
    recall_at_precision,
)

# Ranked best first: fraud, fraud, legit, fraud, legit, legit.
Y = np.array([1, 1, 0, 1, 0, 0])
SCORES = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])


def labelled_scores(seed: int, n: int = 3_000, frauds: int = 60) -> tuple[np.ndarray, ...]:
    """Labels, a good scorer and a noisy one, on the same rows."""
    rng = np.random.default_rng(seed)
    y = np.zeros(n, dtype=np.int8)
    y[rng.choice(n, frauds, replace=False)] = 1
    good = y * 3.0 + rng.normal(0, 1, n)
    noisy = y * 1.0 + rng.normal(0, 1, n)
    return y, good, noisy


def test_recall_at_precision_on_a_hand_made_ranking() -> None:
    # Top 2: precision 1, recall 2/3. Top 4: precision 3/4, recall 1.
    assert recall_at_precision(Y, SCORES, 1.0) == pytest.approx(2 / 3)
    assert recall_at_precision(Y, SCORES, 0.9) == pytest.approx(2 / 3)
    assert recall_at_precision(Y, SCORES, 0.75) == pytest.approx(1.0)


def test_recall_at_an_unreachable_precision_is_zero() -> None:
    assert recall_at_precision(np.array([0, 1]), np.array([0.9, 0.1]), 0.9) == 0.0


def test_f1_threshold_on_a_hand_made_ranking() -> None:
    # F1 by cut: 0.50, 0.80, 0.67, 0.86 (top 4: P=3/4, R=1), 0.75, 0.67.
    assert choose_threshold(Y, SCORES, ThresholdPolicy("f1")) == pytest.approx(0.6)


def test_cost_threshold_follows_the_cost_of_a_missed_fraud() -> None:
    expensive_miss = ThresholdPolicy("cost", cost_missed_fraud=1_000.0, cost_false_alarm=1.0)
    cheap_miss = ThresholdPolicy("cost", cost_missed_fraud=0.1, cost_false_alarm=1.0)
    # Catching every fraud costs one false alarm; when misses are cheap, stop at the top two.
    assert choose_threshold(Y, SCORES, expensive_miss) == pytest.approx(0.6)
    assert choose_threshold(Y, SCORES, cheap_miss) == pytest.approx(0.8)


def test_a_costlier_miss_never_raises_the_threshold_on_noisy_scores() -> None:
    y, _, noisy = labelled_scores(seed=1)
    thresholds = [
        choose_threshold(y, noisy, ThresholdPolicy("cost", cost_missed_fraud=c))
        for c in (1.0, 10.0, 100.0, 1_000.0)
    ]
    assert thresholds == sorted(thresholds, reverse=True)
    assert thresholds[-1] < thresholds[0]


def test_metrics_confusion_counts_add_up() -> None:
    y, good, _ = labelled_scores(seed=2)
    policy = ThresholdPolicy("cost", cost_missed_fraud=50.0, cost_false_alarm=2.0)
    threshold = choose_threshold(y, good, policy)

    m = metrics(y, good, threshold, policy)

    assert m["tp"] + m["fp"] + m["fn"] + m["tn"] == m["rows"] == len(y)
    assert m["tp"] + m["fn"] == m["frauds"] == y.sum()
    assert m["tp"] == np.sum((good >= threshold) & (y == 1))
    assert m["precision"] == pytest.approx(m["tp"] / (m["tp"] + m["fp"]))
    assert m["recall"] == pytest.approx(m["tp"] / m["frauds"])
    assert m["expected_cost"] == pytest.approx(m["fn"] * 50.0 + m["fp"] * 2.0)
    assert m["cost_per_1000"] == pytest.approx(m["expected_cost"] * 1000 / len(y))
    assert m["average_precision"] == pytest.approx(average_precision_score(y, good))
    assert m["recall_at_precision_95"] <= m["recall_at_precision_90"]
    assert m["threshold"] == threshold


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kind": "youden"},
        {"kind": "cost", "cost_missed_fraud": 0.0},
        {"kind": "cost", "cost_false_alarm": -1.0},
    ],
)
def test_an_invalid_threshold_policy_raises(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        ThresholdPolicy(**kwargs)


def test_bootstrap_of_identical_scores_is_all_zero() -> None:
    y, good, _ = labelled_scores(seed=3)
    deltas = paired_bootstrap_ap(y, good, good.copy(), n_resamples=200)
    assert deltas.shape == (200,)
    np.testing.assert_array_equal(deltas, 0.0)


def test_bootstrap_of_a_clearly_better_challenger_is_mostly_positive() -> None:
    y, good, noisy = labelled_scores(seed=4)
    deltas = paired_bootstrap_ap(y, good, noisy, n_resamples=300)
    assert np.mean(deltas > 0) > 0.95
    # Centred on the gain measured on the rows themselves.
    gain = average_precision_score(y, good) - average_precision_score(y, noisy)
    assert np.median(deltas) == pytest.approx(gain, abs=0.05)
    reverse = paired_bootstrap_ap(y, noisy, good, n_resamples=300)
    assert np.mean(reverse < 0) > 0.95


def test_bootstrap_is_reproducible_by_seed_and_any_length() -> None:
    y, good, noisy = labelled_scores(seed=5)
    a = paired_bootstrap_ap(y, good, noisy, n_resamples=75, seed=9, chunk=50)
    b = paired_bootstrap_ap(y, good, noisy, n_resamples=75, seed=9, chunk=50)
    assert a.shape == (75,)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, paired_bootstrap_ap(y, good, noisy, n_resamples=75, seed=10))


def prepare(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The ranking and the fraud-holding tie-run ends, as `paired_bootstrap_ap` prepares them."""
    order = np.argsort(-scores, kind="stable")
    ranked = scores[order]
    run_ends = np.flatnonzero(np.r_[ranked[1:] != ranked[:-1], True])
    has_fraud = np.add.reduceat(y[order], np.r_[0, run_ends[:-1] + 1]) > 0
    return order, run_ends[has_fraud]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_weighted_ap_matches_sklearn_with_ties_and_weights(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 800
    y = (rng.random(n) < 0.08).astype(np.float64)
    # One decimal: many ties, some of them mixing frauds and legitimate rows.
    scores = np.round(rng.random(n) + 0.4 * y, 1)
    weights = rng.integers(0, 4, size=(5, n)).astype(np.float64)
    order, ends = prepare(y, scores)

    got = _weighted_ap(y[order], ends, weights[:, order])

    expected = [average_precision_score(y, scores, sample_weight=w) for w in weights]
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_weighted_ap_ignores_legitimate_rows_ranked_below_every_fraud() -> None:
    y = np.array([1.0, 0.0, 1.0, 0.0, 0.0, 0.0])
    scores = np.array([0.9, 0.8, 0.7, 0.3, 0.2, 0.1])
    order, ends = prepare(y, scores)
    got = _weighted_ap(y[order], ends, np.ones((1, len(y))))
    assert got[0] == pytest.approx(average_precision_score(y, scores))
    assert got[0] == pytest.approx((1.0 + 2 / 3) / 2)
