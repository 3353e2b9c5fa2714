"""SMOTE of a whole training split that lives on a Dask cluster, gathering only its frauds.

SMOTE's synthetic rows depend on the minority rows alone: each is a fraud moved towards one of
its k nearest frauds, the fraud, the neighbour and the step drawn from the seed. The majority
rows only set how many to make. So the frauds (a small share of a fraud data set) are gathered,
one legitimate row stands for the others, and the count of the whole split is passed as the
target: imbalanced-learn then makes exactly the rows it appends to the whole split
(`fraud_core.train` runs that), and the majority rows never leave their workers.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
from distributed import Client
from imblearn.over_sampling import SMOTE

from fraud_core.train import TrainConfig


def smote_rows(
    x: np.ndarray | da.Array,
    labels: np.ndarray,
    config: TrainConfig,
    *,
    client: Client | None = None,
) -> np.ndarray:
    """The rows SMOTE under `config` appends to (x, labels): synthetic frauds, in its order.

    `x` is local or a Dask array (then `client` gathers its frauds); `labels` are local (0/1).
    No rows when the frauds are already the asked share.
    """
    frauds_at = np.flatnonzero(labels == 1)
    majority = len(labels) - len(frauds_at)
    k = min(config.smote_k_neighbors, len(frauds_at) - 1)
    if k < 1:
        raise ValueError("SMOTE needs at least two frauds in the training split")
    # imbalanced-learn's count for a float ratio: int(majority x ratio) frauds in all.
    target = int(majority * config.smote_ratio)
    if target <= len(frauds_at) or majority == 0:
        return np.empty((0, x.shape[1]), dtype=np.float64)
    legit_at = np.flatnonzero(labels != 1)[:1]
    sample = _take(x, np.concatenate([frauds_at, legit_at]), client)
    classes = np.zeros(len(sample), dtype=labels.dtype)
    classes[: len(frauds_at)] = 1
    smote = SMOTE(sampling_strategy={1: target}, k_neighbors=k, random_state=config.seed)
    resampled, _ = smote.fit_resample(sample, classes)
    return np.asarray(resampled[len(sample) :])


def _take(x: np.ndarray | da.Array, rows: np.ndarray, client: Client | None) -> np.ndarray:
    if isinstance(x, da.Array):
        if client is None:
            raise ValueError("a Dask array's frauds are gathered through a client")
        return np.asarray(client.compute(x[rows], sync=True))
    return np.asarray(x)[rows]
