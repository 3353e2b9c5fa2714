"""Training the classifier: no resampling, `scale_pos_weight` and SMOTE, best by validation AP.

All three variants are XGBoost with early stopping on the (time-later) validation split. SMOTE runs
inside an imbalanced-learn pipeline, so it only ever resamples the training rows; it is a
training-time step and not part of the served model.

`refit_variant` then trains the chosen variant again on training + validation rows, for a fixed
number of rounds (no early stopping: validation is training data now). On time-ordered data the
validation period is the most recent before the test, so a model that never learns from it is
a model of older traffic (`fraud_core.training` runs the whole protocol).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import numpy as np
import xgboost as xgb
from imblearn.over_sampling import SMOTE
from imblearn.pipeline import Pipeline
from sklearn.metrics import average_precision_score

VARIANTS: tuple[str, ...] = ("none", "scale_pos_weight", "smote")
#: TrainConfig fields that are XGBoost parameters: `with_params` replaces these by name.
XGB_FIELDS: tuple[str, ...] = (
    "n_estimators",
    "max_depth",
    "learning_rate",
    "subsample",
    "colsample_bytree",
    "min_child_weight",
    "early_stopping_rounds",
)
#: Set by training itself (metric, seed, threads) or by a variant: never taken from `xgb_extra`.
RESERVED_XGB_PARAMS = frozenset(
    {"eval_metric", "random_state", "seed", "n_jobs", "callbacks", "scale_pos_weight"}
)
#: How the refit's rounds follow from the best iteration: "scaled" by the rows ratio, or "best".
REFIT_ROUNDS: tuple[str, ...] = ("scaled", "best")
#: The protocol's name in params and manifests, with and without the refit.
REFIT_PROTOCOL = {True: "train+validation", False: "off"}


@dataclass(frozen=True)
class TrainConfig:
    n_estimators: int = 300
    max_depth: int = 6
    learning_rate: float = 0.1
    subsample: float = 0.9
    colsample_bytree: float = 0.9
    min_child_weight: float = 1.0
    early_stopping_rounds: int = 30
    smote_ratio: float = 0.1
    smote_k_neighbors: int = 5
    variants: tuple[str, ...] = VARIANTS
    #: "best" keeps the variant with the highest validation AP; a variant name forces it.
    selection: str = "best"
    seed: int = 0
    n_jobs: int | None = None
    #: Refit the chosen variant on training + validation rows before it is tested and published.
    refit: bool = True
    #: The refit's rounds: "scaled" = (best iteration + 1) x refit rows / training rows; "best" =
    #: best iteration + 1.
    refit_rounds: str = "scaled"
    #: Further XGBoost parameters by their scikit-learn names (e.g. tuned `reg_lambda`,
    #: `reg_alpha`); empty unless a caller asks for them.
    xgb_extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = set(self.variants) - set(VARIANTS)
        if unknown or not self.variants:
            raise ValueError(f"variants must be a non-empty subset of {VARIANTS}, got {unknown}")
        if self.selection != "best" and self.selection not in self.variants:
            raise ValueError(f"selection must be 'best' or one of {self.variants}")
        if self.refit_rounds not in REFIT_ROUNDS:
            raise ValueError(f"refit_rounds must be one of {REFIT_ROUNDS}: {self.refit_rounds!r}")
        # A field given twice would leave the logged value and the trained one disagreeing.
        clash = set(self.xgb_extra) & {f.name for f in fields(self)}
        reserved = set(self.xgb_extra) & RESERVED_XGB_PARAMS
        if clash or reserved:
            raise ValueError(
                f"xgb_extra cannot set {sorted(clash | reserved)}: set fields by name "
                f"(with_params does), and {sorted(RESERVED_XGB_PARAMS)} belong to training"
            )

    def with_params(self, params: Mapping[str, Any]) -> TrainConfig:
        """A copy that trains with these XGBoost parameters: fields by name, the rest as extra."""
        own = {k: v for k, v in params.items() if k in XGB_FIELDS}
        extra = {k: v for k, v in params.items() if k not in XGB_FIELDS}
        return replace(self, **own, xgb_extra={**self.xgb_extra, **extra})

    def xgb_params(self) -> dict[str, Any]:
        return {
            "n_estimators": self.n_estimators,
            "max_depth": self.max_depth,
            "learning_rate": self.learning_rate,
            "subsample": self.subsample,
            "colsample_bytree": self.colsample_bytree,
            "min_child_weight": self.min_child_weight,
            "early_stopping_rounds": self.early_stopping_rounds,
            "eval_metric": "aucpr",
            "tree_method": "hist",
            "random_state": self.seed,
            "n_jobs": self.n_jobs,
            **self.xgb_extra,
        }

    def as_params(self) -> dict[str, Any]:
        params = asdict(self)
        params["variants"] = ",".join(self.variants)
        params["refit"] = REFIT_PROTOCOL[self.refit]
        # Flat, so each extra parameter is its own MLflow param (names cannot clash: see above).
        params.update(params.pop("xgb_extra"))
        return params


@dataclass
class VariantResult:
    name: str
    booster: xgb.Booster
    validation_ap: float
    best_iteration: int
    seconds: float
    train_rows: int
    train_frauds: int
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainResult:
    variants: dict[str, VariantResult]
    chosen: str

    @property
    def best(self) -> VariantResult:
        return self.variants[self.chosen]


def _fit(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    config: TrainConfig,
    overrides: Mapping[str, Any],
    eval_set: list[tuple[np.ndarray, np.ndarray]] | None = None,
) -> tuple[xgb.XGBClassifier, dict[str, Any], int, int]:
    """Fit one variant on (x, y); return the classifier, its params and the rows it saw."""
    extra: dict[str, Any] = {}
    rows, frauds = len(y), int(y.sum())
    if name == "scale_pos_weight":
        extra["scale_pos_weight"] = float((len(y) - y.sum()) / max(1, y.sum()))
    params = {**config.xgb_params(), **overrides, **extra}
    classifier = xgb.XGBClassifier(**params)
    fit_kwargs: dict[str, Any] = {"verbose": False}
    if eval_set is not None:
        fit_kwargs["eval_set"] = eval_set
    if name == "smote" and frauds >= (rows - frauds) * config.smote_ratio:
        # The frauds are already at least the asked share: SMOTE could only remove some (it
        # refuses to), so the variant trains on the rows as they are.
        classifier.fit(x, y, **fit_kwargs)
    elif name == "smote":
        k = min(config.smote_k_neighbors, frauds - 1)
        if k < 1:
            raise ValueError("SMOTE needs at least two frauds in the training split")
        smote = SMOTE(sampling_strategy=config.smote_ratio, k_neighbors=k, random_state=config.seed)
        pipeline = Pipeline([("smote", smote), ("classifier", classifier)])
        pipeline.fit(x, y, **{f"classifier__{key}": v for key, v in fit_kwargs.items()})
        # What the classifier saw after resampling, for the record.
        majority = rows - frauds
        frauds = max(frauds, int(majority * config.smote_ratio))
        rows = majority + frauds
    else:
        classifier.fit(x, y, **fit_kwargs)
    return classifier, {k: v for k, v in params.items() if k != "callbacks"}, rows, frauds


def train_variant(
    name: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    config: TrainConfig,
    callbacks: Sequence[xgb.callback.TrainingCallback] = (),
) -> VariantResult:
    """Train one variant with early stopping on validation; return its truncated booster.

    `callbacks` run after each boosting round (tuning uses one to prune poor trials early).
    """
    start = time.perf_counter()
    classifier, params, train_rows, train_frauds = _fit(
        name,
        x_train,
        y_train,
        config,
        {"callbacks": list(callbacks) or None},
        eval_set=[(x_val, y_val)],
    )
    best_iteration = int(getattr(classifier, "best_iteration", config.n_estimators - 1))
    # Keep only the trees up to the best iteration, so every consumer predicts the same.
    booster = classifier.get_booster()[: best_iteration + 1]
    scores = booster.inplace_predict(x_val)
    return VariantResult(
        name=name,
        booster=booster,
        validation_ap=float(average_precision_score(y_val, scores)),
        best_iteration=best_iteration,
        seconds=time.perf_counter() - start,
        train_rows=train_rows,
        train_frauds=train_frauds,
        params=params,
    )


@dataclass
class RefitResult:
    """The chosen variant trained again on more rows, for a fixed number of rounds."""

    name: str
    booster: xgb.Booster
    rounds: int
    #: Rows and frauds given to the refit (before SMOTE), and what it saw after resampling.
    rows: int
    frauds: int
    train_rows: int
    train_frauds: int
    seconds: float
    params: dict[str, Any] = field(default_factory=dict)


def refit_rounds(best_iteration: int, train_rows: int, refit_rows: int, how: str) -> int:
    """The refit's boosting rounds: the best iteration's count, scaled by the rows if asked.

    More rows per round make each tree's gradient step count for more of the data, and a model of
    more data usually takes more trees to reach the same fit: "scaled" keeps the rounds per row.
    """
    rounds = best_iteration + 1
    if how == "scaled":
        return max(1, round(rounds * refit_rows / max(1, train_rows)))
    if how == "best":
        return rounds
    raise ValueError(f"refit_rounds must be one of {REFIT_ROUNDS}, got {how!r}")


def refit_variant(
    name: str, x: np.ndarray, y: np.ndarray, config: TrainConfig, rounds: int
) -> RefitResult:
    """Train variant `name` on (x, y) for exactly `rounds` rounds, with no early stopping."""
    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}: one of {VARIANTS}")
    if rounds < 1 or y.sum() == 0:
        raise ValueError("a refit needs at least one round and one fraud")
    start = time.perf_counter()
    classifier, params, train_rows, train_frauds = _fit(
        name, x, y, config, {"n_estimators": rounds, "early_stopping_rounds": None}
    )
    return RefitResult(
        name=name,
        booster=classifier.get_booster(),
        rounds=rounds,
        rows=len(y),
        frauds=int(y.sum()),
        train_rows=train_rows,
        train_frauds=train_frauds,
        seconds=time.perf_counter() - start,
        params=params,
    )


def train(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    config: TrainConfig | None = None,
) -> TrainResult:
    """Train every configured variant and choose one (best validation AP unless forced)."""
    config = config or TrainConfig()
    if y_train.sum() == 0 or y_val.sum() == 0:
        raise ValueError("both the training and the validation split need at least one fraud")
    results = {
        name: train_variant(name, x_train, y_train, x_val, y_val, config)
        for name in config.variants
    }
    if config.selection == "best":
        chosen = max(results.values(), key=lambda r: r.validation_ap).name
    else:
        chosen = config.selection
    return TrainResult(results, chosen)
