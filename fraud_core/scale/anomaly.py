"""The anomaly feature on a Dask cluster: a forest fitted on a sample, scored in parallel.

The IsolationForest is fitted on a seeded sample of the training rows (each of its trees looks
at 256 rows: a sample of 100,000 is plenty) and scored in chunks, the trees scattered to every
worker once. A row's score depends on that row alone, so the chunks give exactly the scores of
one local call. The workers import only what scoring needs (scikit-learn, numpy).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
from distributed import Client
from sklearn.ensemble import IsolationForest

from fraud_core.contracts import KAGGLE
from fraud_core.features import AnomalyScorer, CompiledForest, base_features

if TYPE_CHECKING:
    from fraud_core.data import Splits
    from fraud_core.training import AnomalyFeatures

#: The training rows the anomaly forest is fitted on by default.
ANOMALY_SAMPLE_ROWS = 100_000


def fit_anomaly_sampled(
    x_train: np.ndarray, *, sample_rows: int, n_estimators: int = 100, seed: int = 0
) -> IsolationForest:
    """An IsolationForest fitted on at most `sample_rows` training rows, drawn with `seed`.

    With no more rows than that it is fitted on all of them, as they are: the very forest
    `AnomalyScorer.fit(x_train, n_estimators, seed)` fits.
    """
    if sample_rows < 1:
        raise ValueError(f"sample_rows must be at least 1, got {sample_rows}")
    x = np.asarray(x_train)
    if len(x) > sample_rows:
        picked = np.random.default_rng(seed).choice(len(x), sample_rows, replace=False)
        x = x[np.sort(picked)]  # rows in their order: the same rows in any draw order
    return IsolationForest(n_estimators=n_estimators, random_state=seed).fit(x)


def anomaly_scorer(forest: IsolationForest) -> AnomalyScorer:
    """The bundle's anomaly feature of a fitted forest (compiled, the fitted one kept)."""
    return AnomalyScorer(CompiledForest.from_sklearn(forest), forest)


def _forest_scores(forest: IsolationForest | CompiledForest, x: np.ndarray) -> np.ndarray:
    return np.asarray(-forest.score_samples(x))


def score_anomaly_dask(
    client: Client,
    forest: IsolationForest | AnomalyScorer,
    x: np.ndarray,
    *,
    chunk_rows: int | None = None,
) -> np.ndarray:
    """The anomaly feature of `x` (higher is more anomalous), computed in parallel chunks.

    For a forest, `-forest.score_samples(x)`; for an `AnomalyScorer`, `scorer.score(x)` (its
    fitted forest for bulk rows, else its compiled trees, as it chooses for the whole `x`).
    The trees go to every worker once; `x` is cut into chunks of `chunk_rows` rows (default:
    two per worker thread) scored where they land. A row's score depends on that row only, so
    the chunks give exactly the scores of one local call.
    """
    x = np.asarray(x)
    if len(x) == 0:
        return np.zeros(0, dtype=np.float64)
    trees: IsolationForest | CompiledForest
    if not isinstance(forest, AnomalyScorer):
        trees = forest
    elif forest.fitted is not None and len(x) >= forest.BULK_ROWS:
        trees = forest.fitted
    else:
        trees = forest.forest
    threads = max(1, sum(client.nthreads().values()))
    size = chunk_rows or math.ceil(len(x) / (2 * threads))
    chunks = [x[i : i + size] for i in range(0, len(x), size)]
    # Unhashed: a forest or chunk scattered again (one scorer, three splits) gets a key of its
    # own, so the release of the last call's futures cannot drop this call's data.
    [shared] = client.scatter([trees], broadcast=True, hash=False)
    scattered = client.scatter(chunks, hash=False)
    parts = client.map(_forest_scores, [shared] * len(chunks), scattered, pure=False)
    return np.concatenate(client.gather(parts))


def fit_anomaly_dask(
    client: Client,
    splits: Splits,
    *,
    sample_rows: int = ANOMALY_SAMPLE_ROWS,
    n_estimators: int = 100,
    seed: int = 0,
) -> AnomalyFeatures:
    """`fraud_core.training.fit_anomaly` with a sampled fit and the splits scored in parallel."""
    # Here, not at the top: the workers import this module, and need none of the training code.
    from fraud_core.training import AnomalyFeatures

    bases = {name: splits.arrays(part)[0] for name, part in splits.items()}
    if splits.contract == KAGGLE:  # the card contract's features are the base already
        bases = {name: base_features(x) for name, x in bases.items()}
    forest = fit_anomaly_sampled(
        bases["train"], sample_rows=sample_rows, n_estimators=n_estimators, seed=seed
    )
    scorer = anomaly_scorer(forest)
    scores = {name: score_anomaly_dask(client, scorer, x) for name, x in bases.items()}
    return AnomalyFeatures(scorer, scores, n_estimators, seed)
