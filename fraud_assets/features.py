"""From the 30 raw fields to model features, and the IsolationForest anomaly feature.

Training and serving call the same functions, so the model sees the same features in both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.ensemble import IsolationForest

from fraud_assets.schema import FEATURE_COLUMNS, PCA_COLUMNS

SECONDS_PER_DAY = 86_400.0
#: Features computed from the raw fields; raw `Time` is dropped (it only grows), its hour kept.
BASE_FEATURES: tuple[str, ...] = (*PCA_COLUMNS, "log_amount", "hour_sin", "hour_cos")
ANOMALY_FEATURE = "anomaly_score"
MODEL_FEATURES: tuple[str, ...] = (*BASE_FEATURES, ANOMALY_FEATURE)

_TIME = FEATURE_COLUMNS.index("Time")
_AMOUNT = FEATURE_COLUMNS.index("Amount")
_PCA = slice(1, 29)


def base_features(raw: np.ndarray) -> np.ndarray:
    """Map an (n, 30) matrix of raw fields in schema order to the base feature matrix."""
    raw = np.asarray(raw, dtype=np.float64)
    if raw.ndim != 2 or raw.shape[1] != len(FEATURE_COLUMNS):
        raise ValueError(f"expected an (n, {len(FEATURE_COLUMNS)}) matrix, got {raw.shape}")
    angle = (raw[:, _TIME] % SECONDS_PER_DAY) * (2 * np.pi / SECONDS_PER_DAY)
    out = np.empty((raw.shape[0], len(BASE_FEATURES)), dtype=np.float64)
    out[:, :28] = raw[:, _PCA]
    out[:, 28] = np.log1p(raw[:, _AMOUNT])
    out[:, 29] = np.sin(angle)
    out[:, 30] = np.cos(angle)
    return out


@dataclass
class AnomalyScorer:
    """An IsolationForest over the base features; higher scores are more anomalous."""

    forest: IsolationForest

    @classmethod
    def fit(
        cls, base: np.ndarray, n_estimators: int = 100, seed: int = 0, n_jobs: int | None = None
    ) -> AnomalyScorer:
        forest = IsolationForest(n_estimators=n_estimators, random_state=seed, n_jobs=n_jobs)
        forest.fit(base)
        return cls(forest)

    def score(self, base: np.ndarray) -> np.ndarray:
        return -self.forest.score_samples(base)


def model_features(base: np.ndarray, anomaly: np.ndarray) -> np.ndarray:
    """Append the anomaly score to the base features: the classifier's input."""
    return np.column_stack([base, anomaly])
