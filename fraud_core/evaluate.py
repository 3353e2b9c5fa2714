"""Evaluation metrics: average precision, ROC AUC, recall at fixed precision, threshold, cost.

The decision threshold is chosen on the validation split and then applied to the test split, so
the reported confusion matrix and cost are what a user would see on unseen, later traffic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score


@dataclass(frozen=True)
class ThresholdPolicy:
    """How to choose the decision threshold: best F1, or least expected cost."""

    kind: str = "f1"  # "f1" or "cost"
    cost_missed_fraud: float = 100.0
    cost_false_alarm: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in ("f1", "cost"):
            raise ValueError(f"threshold policy must be 'f1' or 'cost', got {self.kind!r}")
        if self.cost_missed_fraud <= 0 or self.cost_false_alarm <= 0:
            raise ValueError("costs must be positive")


def recall_at_precision(y: np.ndarray, scores: np.ndarray, precision: float) -> float:
    """The highest recall reachable with at least `precision`; 0.0 when it is never reached."""
    p, r, _ = precision_recall_curve(y, scores)
    reachable = r[p >= precision]
    return float(reachable.max()) if reachable.size else 0.0


def choose_threshold(y: np.ndarray, scores: np.ndarray, policy: ThresholdPolicy) -> float:
    """The threshold (predict fraud when score >= it) that best serves the policy on (y, scores)."""
    p, r, t = precision_recall_curve(y, scores)
    p, r = p[:-1], r[:-1]  # the last point has no threshold
    if policy.kind == "f1":
        f1 = np.divide(2 * p * r, p + r, out=np.zeros_like(p), where=(p + r) > 0)
        return float(t[int(np.argmax(f1))])
    positives = float(np.sum(y))
    tp = r * positives
    fp = np.divide(tp, p, out=np.zeros_like(tp), where=p > 0) - tp
    cost = (positives - tp) * policy.cost_missed_fraud + fp * policy.cost_false_alarm
    return float(t[int(np.argmin(cost))])


def confusion(y: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, int]:
    predicted = scores >= threshold
    actual = y.astype(bool)
    return {
        "tp": int(np.sum(predicted & actual)),
        "fp": int(np.sum(predicted & ~actual)),
        "fn": int(np.sum(~predicted & actual)),
        "tn": int(np.sum(~predicted & ~actual)),
    }


def metrics(
    y: np.ndarray, scores: np.ndarray, threshold: float, policy: ThresholdPolicy
) -> dict[str, float]:
    """Every figure the evaluation report and the promotion rule use, on one split."""
    cm = confusion(y, scores, threshold)
    precision = cm["tp"] / max(1, cm["tp"] + cm["fp"])
    recall = cm["tp"] / max(1, cm["tp"] + cm["fn"])
    cost = cm["fn"] * policy.cost_missed_fraud + cm["fp"] * policy.cost_false_alarm
    return {
        "average_precision": float(average_precision_score(y, scores)),
        "roc_auc": float(roc_auc_score(y, scores)),
        "recall_at_precision_90": recall_at_precision(y, scores, 0.90),
        "recall_at_precision_95": recall_at_precision(y, scores, 0.95),
        "threshold": float(threshold),
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        **{k: float(v) for k, v in cm.items()},
        "expected_cost": float(cost),
        "cost_per_1000": float(cost * 1000 / max(1, len(y))),
        "rows": float(len(y)),
        "frauds": float(np.sum(y)),
    }


def _weighted_ap(sorted_y: np.ndarray, ends: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Average precision for each row of `weights` (rows: samples) over pre-sorted labels.

    `ends` are the last positions of the runs of tied scores that hold a fraud: recall only moves
    there, so precision is needed there only, summed segment by segment rather than over all rows.
    """
    if ends.size == 0:
        return np.zeros(weights.shape[0])
    # Rows after the last fraud's run never reach a recall step: leave them out, or the last
    # segment would count them as seen and drag its precision down to the base rate.
    stop = int(ends[-1]) + 1
    sorted_y, weights = sorted_y[:stop], weights[:, :stop]
    starts = np.r_[0, ends[:-1] + 1]
    tp = np.cumsum(np.add.reduceat(weights * sorted_y, starts, axis=1), axis=1)
    seen = np.cumsum(np.add.reduceat(weights, starts, axis=1), axis=1)
    total = tp[:, -1:]
    precision = np.divide(tp, seen, out=np.zeros_like(tp), where=seen > 0)
    recall = np.divide(tp, total, out=np.zeros_like(tp), where=total > 0)
    gain = np.diff(recall, axis=1, prepend=0.0)
    return np.sum(gain * precision, axis=1)


def paired_bootstrap_ap(
    y: np.ndarray,
    challenger: np.ndarray,
    champion: np.ndarray,
    n_resamples: int = 1000,
    seed: int = 0,
    chunk: int = 50,
) -> np.ndarray:
    """Bootstrap distribution of AP(challenger) - AP(champion), resampling the same test rows.

    Each resample draws row multiplicities once and applies them to both models, so the noise of
    which frauds happen to be in the test split cancels out of the difference.
    """
    y = np.asarray(y, dtype=np.float64)
    rng = np.random.default_rng(seed)
    orders, ends = [], []
    for scores in (challenger, champion):
        order = np.argsort(-scores, kind="stable")
        s = scores[order]
        # The last position of each run of tied scores (ties share one threshold) that holds
        # a fraud.
        run_ends = np.flatnonzero(np.r_[s[1:] != s[:-1], True])
        run_has_fraud = np.add.reduceat(y[order], np.r_[0, run_ends[:-1] + 1]) > 0
        orders.append(order)
        ends.append(run_ends[run_has_fraud])
    deltas = np.empty(n_resamples)
    for start in range(0, n_resamples, chunk):
        size = min(chunk, n_resamples - start)
        n = len(y)
        # Row multiplicities of `size` resamples with replacement (bincount is far faster than
        # rng.multinomial over n equally likely categories).
        counts = np.stack(
            [np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(size)]
        ).astype(np.float64)
        # np.take gathers the columns about twice as fast as `counts[:, order]`, same values.
        a = _weighted_ap(y[orders[0]], ends[0], np.take(counts, orders[0], axis=1))
        b = _weighted_ap(y[orders[1]], ends[1], np.take(counts, orders[1], axis=1))
        deltas[start : start + size] = a - b
    return deltas
