"""The classifier and the anomaly feature on a Dask cluster: `xgboost.dask` and a sampled forest.

The results are the single-process path's types (`fraud_core.train.VariantResult`,
`RefitResult`, `TrainResult`; `fraud_core.training.AnomalyFeatures`), holding plain local
`xgboost.Booster`s and `AnomalyScorer`s: the bundle and the served format do not change.

- The classifier: the same XGBoost parameters as `fraud_core.train` (`TrainConfig.xgb_params`),
  trained by `xgboost.dask.DaskXGBClassifier` on row partitions spread over the workers, early
  stopping on the validation rows. Trees differ slightly from a single-process fit (each worker
  sketches its own rows' quantiles and samples its own rows), so the model is equal in quality,
  not in bytes; with all rows in one partition it is the single-process model exactly.
- SMOTE is SMOTE on the whole training split, as `fraud_core.train` runs it: its synthetic
  frauds depend on the frauds alone (their neighbours among frauds), so only the frauds are
  gathered (a small share of the rows), resampled with the same seed — the same synthetic rows
  as imbalanced-learn makes from the whole split — and appended as partitions of their own.
- The anomaly feature (`fraud_core.scale.anomaly`, named here too): an IsolationForest fitted
  on a seeded sample of the training rows, scored in parallel chunks with the forest scattered
  to the workers once; the scores are those of scoring locally.

Inputs are local arrays (scattered to the workers in row partitions, default one per worker)
or Dask arrays, x and y with the same row chunks.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

import dask.array as da
import numpy as np
from distributed import Client
from sklearn.metrics import average_precision_score
from xgboost import dask as dxgb

from fraud_core.scale.anomaly import (
    ANOMALY_SAMPLE_ROWS,
    anomaly_scorer,
    fit_anomaly_dask,
    fit_anomaly_sampled,
    score_anomaly_dask,
)
from fraud_core.scale.resample import smote_rows
from fraud_core.train import (
    VARIANTS,
    RefitResult,
    TrainConfig,
    TrainResult,
    VariantResult,
)

#: The anomaly feature's functions live in `fraud_core.scale.anomaly` (its workers import no
#: XGBoost or imbalanced-learn); named here too, beside the classifier's.
__all__ = [
    "ANOMALY_SAMPLE_ROWS",
    "anomaly_scorer",
    "fit_anomaly_dask",
    "fit_anomaly_sampled",
    "refit_variant_dask",
    "score_anomaly_dask",
    "train_dask",
    "train_variant_dask",
]
#: Rows or a Dask array of them: local arrays are scattered to the workers in row partitions.
Rows = np.ndarray | da.Array


def _partitioned(client: Client, rows: Rows, npartitions: int) -> da.Array:
    """`rows` as a Dask array of about `npartitions` row partitions, spread over the workers."""
    if isinstance(rows, da.Array):
        return rows
    size = max(1, math.ceil(len(rows) / npartitions))
    chunks = [rows[i : i + size] for i in range(0, len(rows), size)]
    futures = client.scatter(chunks, hash=False)  # round-robin over the workers
    return da.concatenate(
        [
            da.from_delayed(f, shape=c.shape, dtype=c.dtype)
            for f, c in zip(futures, chunks, strict=True)
        ]
    )


def _local(client: Client, rows: Rows) -> np.ndarray:
    return np.asarray(client.compute(rows, sync=True)) if isinstance(rows, da.Array) else rows


def _fit(
    client: Client,
    name: str,
    x: Rows,
    y: Rows,
    config: TrainConfig,
    overrides: Mapping[str, Any],
    npartitions: int | None,
    eval_set: tuple[Rows, Rows] | None = None,
) -> tuple[dxgb.DaskXGBClassifier, dict[str, Any], int, int]:
    """Fit one variant on the cluster; the classifier, its params and the rows it saw."""
    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}: one of {VARIANTS}")
    if isinstance(x, da.Array) != isinstance(y, da.Array):
        raise TypeError("x and y must both be local arrays or both Dask arrays (same row chunks)")
    parts = npartitions or max(1, len(client.nthreads()))
    labels = _local(client, y)
    rows, frauds = len(labels), int(labels.sum())
    extra: dict[str, Any] = {}
    if name == "scale_pos_weight":
        extra["scale_pos_weight"] = float((rows - frauds) / max(1, frauds))
    # The cluster's threads, not the caller's n_jobs: xgboost.dask gives each worker its own.
    params = {**config.xgb_params(), **overrides, **extra, "n_jobs": None}
    if name == "smote" and frauds < (rows - frauds) * config.smote_ratio:
        synthetic = smote_rows(x, labels, config, client=client)
        ones = np.ones(len(synthetic), dtype=labels.dtype)
        # SMOTE's own layout: the split's rows, then the synthetic frauds.
        if isinstance(x, da.Array):
            x = da.concatenate([x, da.from_array(synthetic)])
            y = da.concatenate([y, da.from_array(ones)])
        else:
            x, y = np.vstack([x, synthetic]), np.concatenate([labels, ones])
        frauds += len(synthetic)
        rows += len(synthetic)
    x_fit, y_fit = _partitioned(client, x, parts), _partitioned(client, y, parts)
    classifier = dxgb.DaskXGBClassifier(**params)
    classifier.client = client
    fit_kwargs: dict[str, Any] = {"verbose": False}
    if eval_set is not None:
        x_eval = _partitioned(client, eval_set[0], parts)
        fit_kwargs["eval_set"] = [(x_eval, _partitioned(client, eval_set[1], parts))]
    # xgboost.dask looks the client up as dask's current one, even when it is given one.
    with client.as_current():
        classifier.fit(x_fit, y_fit, **fit_kwargs)
    return classifier, params, rows, frauds


def train_variant_dask(
    client: Client,
    name: str,
    x_train: Rows,
    y_train: Rows,
    x_val: Rows,
    y_val: Rows,
    config: TrainConfig,
    *,
    npartitions: int | None = None,
) -> VariantResult:
    """`fraud_core.train.train_variant` on the cluster: early stopping on validation.

    `npartitions` row partitions of the training rows (default: one per worker). The booster
    is truncated at the best iteration, as the single path's is. No tuning callbacks: they
    would run on the workers.
    """
    start = time.perf_counter()
    classifier, params, rows, frauds = _fit(
        client, name, x_train, y_train, config, {}, npartitions, eval_set=(x_val, y_val)
    )
    best_iteration = int(getattr(classifier, "best_iteration", config.n_estimators - 1))
    booster = classifier.get_booster()[: best_iteration + 1]
    scores = booster.inplace_predict(_local(client, x_val))
    return VariantResult(
        name=name,
        booster=booster,
        validation_ap=float(average_precision_score(_local(client, y_val), scores)),
        best_iteration=best_iteration,
        seconds=time.perf_counter() - start,
        train_rows=rows,
        train_frauds=frauds,
        params=params,
    )


def refit_variant_dask(
    client: Client,
    name: str,
    x: Rows,
    y: Rows,
    config: TrainConfig,
    rounds: int,
    *,
    npartitions: int | None = None,
) -> RefitResult:
    """`fraud_core.train.refit_variant` on the cluster: exactly `rounds` rounds, no stopping."""
    labels = _local(client, y)
    if rounds < 1 or labels.sum() == 0:
        raise ValueError("a refit needs at least one round and one fraud")
    start = time.perf_counter()
    classifier, params, rows, frauds = _fit(
        client,
        name,
        x,
        labels,
        config,
        {"n_estimators": rounds, "early_stopping_rounds": None},
        npartitions,
    )
    return RefitResult(
        name=name,
        booster=classifier.get_booster(),
        rounds=rounds,
        rows=len(labels),
        frauds=int(labels.sum()),
        train_rows=rows,
        train_frauds=frauds,
        seconds=time.perf_counter() - start,
        params=params,
    )


def train_dask(
    client: Client,
    x_train: Rows,
    y_train: Rows,
    x_val: Rows,
    y_val: Rows,
    config: TrainConfig | None = None,
    *,
    npartitions: int | None = None,
) -> TrainResult:
    """`fraud_core.train.train` on the cluster: every configured variant, then the choice."""
    config = config or TrainConfig()
    if _local(client, y_train).sum() == 0 or _local(client, y_val).sum() == 0:
        raise ValueError("both the training and the validation split need at least one fraud")
    results = {
        name: train_variant_dask(
            client, name, x_train, y_train, x_val, y_val, config, npartitions=npartitions
        )
        for name in config.variants
    }
    if config.selection == "best":
        chosen = max(results.values(), key=lambda r: r.validation_ap).name
    else:
        chosen = config.selection
    return TrainResult(results, chosen)
