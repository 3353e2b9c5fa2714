"""The training protocol of `fraud_core.training` with its heavy steps on a Dask cluster.

The same four steps (`fraud_core.training`'s docstring): the variants trained and one chosen on
validation, its threshold, then the refit of the anomaly forest and of the chosen variant on
training + validation rows. The variants and the refit run with `xgboost.dask`; the refit's
forest is fitted on a sample (all rows when there are no more than `sample_rows`: the same
forest as the single path) and scored in parallel. What it returns is a `TrainingOutcome`
holding a `FraudModel`: the Dagster layer records and publishes it as it does the other.
"""

from __future__ import annotations

import numpy as np
from distributed import Client

from fraud_core.evaluate import ThresholdPolicy, choose_threshold
from fraud_core.features import model_features
from fraud_core.scale.training import (
    ANOMALY_SAMPLE_ROWS,
    anomaly_scorer,
    fit_anomaly_sampled,
    refit_variant_dask,
    score_anomaly_dask,
    train_dask,
)
from fraud_core.train import TrainConfig, refit_rounds
from fraud_core.training import AnomalyFeatures, ModelInputs, TrainingOutcome


def fit_fraud_model_dask(
    client: Client,
    inputs: ModelInputs,
    anomaly: AnomalyFeatures,
    config: TrainConfig | None = None,
    policy: ThresholdPolicy | None = None,
    *,
    sample_rows: int = ANOMALY_SAMPLE_ROWS,
    npartitions: int | None = None,
) -> TrainingOutcome:
    """`fraud_core.training.fit_fraud_model` on the cluster of `client`: the same outcome type."""
    config = config or TrainConfig()
    x, y = inputs.x, inputs.y
    result = train_dask(
        client, x["train"], y["train"], x["validation"], y["validation"], config,
        npartitions=npartitions,
    )  # fmt: skip
    best = result.best
    scores = np.asarray(best.booster.inplace_predict(x["validation"]))
    threshold = choose_threshold(y["validation"], scores, policy or ThresholdPolicy())
    selected = inputs.model(anomaly.scorer, best.booster, threshold)
    if not config.refit:
        model, refit, labels = selected, None, y["train"]
    else:
        base = np.vstack([inputs.base["train"], inputs.base["validation"]])
        labels = np.concatenate([y["train"], y["validation"]])
        # The served forest scores what the refit classifier learnt from: fit it on those rows.
        forest = fit_anomaly_sampled(
            base, sample_rows=sample_rows, n_estimators=anomaly.n_estimators, seed=anomaly.seed
        )
        scorer = anomaly_scorer(forest)
        rounds = refit_rounds(
            best.best_iteration, len(y["train"]), len(labels), config.refit_rounds
        )
        features = model_features(base, score_anomaly_dask(client, scorer, base))
        refit = refit_variant_dask(
            client, best.name, features, labels, config, rounds, npartitions=npartitions
        )
        model = inputs.model(scorer, refit.booster, threshold)
    return TrainingOutcome(
        model=model,
        selected=selected,
        result=result,
        config=config,
        threshold=threshold,
        validation_scores=scores,
        refit=refit,
        training_rows=len(labels),
        training_frauds=int(labels.sum()),
    )
