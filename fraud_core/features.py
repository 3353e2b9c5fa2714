"""From the 30 raw fields to model features, and the IsolationForest anomaly feature.

Training and serving call the same functions, so the model sees the same features in both.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.ensemble import IsolationForest

from fraud_core.schema import FEATURE_COLUMNS, PCA_COLUMNS

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
class CompiledForest:
    """An IsolationForest's trees as padded numpy arrays, scored all at once.

    scikit-learn's `score_samples` walks the trees one call at a time through joblib (5-8 ms for a
    single row); walking every tree together, one level per numpy step, gives the same scores in
    well under a millisecond and needs no pickle to store. Arrays are (trees, nodes); a leaf's
    children point at itself, so rows that reach a leaf early stay there.
    """

    feature: np.ndarray  # int32: the input column each node splits on (0 at leaves)
    threshold: np.ndarray  # float64: go left when x[feature] <= threshold
    left: np.ndarray  # int32
    right: np.ndarray  # int32
    leaf_value: np.ndarray  # float64: path length credited to a row ending at this node
    denominator: float  # trees x average path length of `max_samples` points
    depth: int  # levels to walk: the deepest tree's depth

    ARRAYS = ("feature", "threshold", "left", "right", "leaf_value")

    @classmethod
    def from_sklearn(cls, forest: IsolationForest) -> CompiledForest:
        trees = forest.estimators_
        width = max(t.tree_.node_count for t in trees)
        shape = (len(trees), width)
        feature = np.zeros(shape, np.int32)
        threshold = np.zeros(shape, np.float64)
        left = np.tile(np.arange(width, dtype=np.int32), (len(trees), 1))
        right = left.copy()
        leaf_value = np.zeros(shape, np.float64)
        for i, (estimator, columns) in enumerate(
            zip(trees, forest.estimators_features_, strict=True)
        ):
            tree = estimator.tree_
            n = tree.node_count
            internal = tree.children_left[:n] != -1
            feature[i, :n] = np.where(internal, np.asarray(columns)[tree.feature[:n].clip(0)], 0)
            threshold[i, :n] = tree.threshold[:n]
            left[i, :n] = np.where(internal, tree.children_left[:n], np.arange(n))
            right[i, :n] = np.where(internal, tree.children_right[:n], np.arange(n))
            # The per-leaf credit scikit-learn adds up (_iforest._parallel_compute_tree_depths).
            leaf_value[i, :n] = (
                forest._decision_path_lengths[i] + forest._average_path_length_per_tree[i] - 1.0
            )
        denominator = len(trees) * float(_average_path_length(np.array([forest._max_samples]))[0])
        depth = max(t.tree_.max_depth for t in trees)
        return cls(feature, threshold, left, right, leaf_value, denominator, depth)

    @property
    def n_trees(self) -> int:
        return int(self.feature.shape[0])

    def __post_init__(self) -> None:
        # Flat views and absolute child indices, built once: one `take` per step is several
        # times faster than 2-D fancy indexing.
        width = self.feature.shape[1]
        self._offsets = (np.arange(self.n_trees, dtype=np.int64) * width)[:, None]
        self._flat_feature = self.feature.ravel()
        self._flat_threshold = self.threshold.ravel()
        self._flat_left = (self.left + self._offsets).ravel()
        self._flat_right = (self.right + self._offsets).ravel()
        self._flat_leaf_value = self.leaf_value.ravel()

    def score_samples(self, x: np.ndarray, chunk: int = 8192) -> np.ndarray:
        """Equal to `IsolationForest.score_samples(x)`: lower is more anomalous."""
        # scikit-learn compares float32 inputs with float64 thresholds; so do we.
        x = np.asarray(x, dtype=np.float32)
        n_rows, n_cols = x.shape
        feature, threshold = self._flat_feature, self._flat_threshold
        left, right = self._flat_left, self._flat_right
        out = np.empty(n_rows, dtype=np.float64)
        for start in range(0, n_rows, chunk):
            rows = x[start : start + chunk]
            flat_rows = rows.ravel()
            row_base = (np.arange(rows.shape[0], dtype=np.int64) * n_cols)[None, :]
            node = np.repeat(self._offsets, rows.shape[0], axis=1)
            for _ in range(self.depth):
                go_left = flat_rows.take(feature.take(node) + row_base) <= threshold.take(node)
                node = np.where(go_left, left.take(node), right.take(node))
            depths = self._flat_leaf_value.take(node).sum(axis=0)
            out[start : start + rows.shape[0]] = -np.exp2(-depths / self.denominator)
        return out

    def save(self, path: Path) -> None:
        with path.open("wb") as fh:
            np.savez(
                fh,
                **{name: getattr(self, name) for name in self.ARRAYS},
                scalars=np.array([self.denominator, self.depth], dtype=np.float64),
            )

    @classmethod
    def load(cls, path: Path) -> CompiledForest:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in cls.ARRAYS}
            denominator, depth = data["scalars"]
        return cls(**arrays, denominator=float(denominator), depth=int(depth))


def _average_path_length(n: np.ndarray) -> np.ndarray:
    """Average path length of an unsuccessful search in a binary tree of n points (iForest c(n))."""
    n = np.asarray(n, dtype=np.float64)
    out = np.zeros_like(n)
    out[n == 2] = 1.0
    big = n > 2
    out[big] = 2.0 * (np.log(n[big] - 1.0) + np.euler_gamma) - 2.0 * (n[big] - 1.0) / n[big]
    return out


@dataclass
class AnomalyScorer:
    """The anomaly feature: an IsolationForest's score, higher for more anomalous rows."""

    forest: CompiledForest
    #: Kept after fitting for bulk scoring, where scikit-learn's Cython walk is faster; a loaded
    #: bundle has only the compiled forest. Both give the same scores (to 1e-15).
    fitted: IsolationForest | None = None

    BULK_ROWS = 2048

    @classmethod
    def fit(
        cls, base: np.ndarray, n_estimators: int = 100, seed: int = 0, n_jobs: int | None = None
    ) -> AnomalyScorer:
        forest = IsolationForest(n_estimators=n_estimators, random_state=seed, n_jobs=n_jobs)
        forest.fit(base)
        return cls(CompiledForest.from_sklearn(forest), forest)

    def score(self, base: np.ndarray) -> np.ndarray:
        if self.fitted is not None and len(base) >= self.BULK_ROWS:
            return -self.fitted.score_samples(base)
        return -self.forest.score_samples(base)


def model_features(base: np.ndarray, anomaly: np.ndarray) -> np.ndarray:
    """Append the anomaly score to the base features: the classifier's input."""
    return np.column_stack([base, anomaly])
