"""Hyperparameter tuning with Optuna: XGBoost's main parameters and the variant, by validation AP.

Each trial trains exactly as `train.train_variant` does (same splits, early stopping on the
time-later validation split, never the test split), so the study's best value is the validation AP
the final training reproduces. A small XGBoost callback reports the validation `aucpr` every few
rounds and prunes the trial when the median pruner says it trails the others. Studies live in an
Optuna RDB storage (SQLite file or PostgreSQL URL) under a name, and resume when run again.
No MLflow here: the caller logs each trial through the `on_trial` hook.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import optuna
import xgboost as xgb
from optuna.trial import FrozenTrial, TrialState

from fraud_core.train import TrainConfig, train_variant

#: The trial parameter that names the variant; every other parameter is an XGBoost one.
VARIANT_PARAM = "variant"

#: `on_trial(trial_number, params, value, state)`; value is None unless the trial completed,
#: state is "complete", "pruned" or "fail".
TrialHook = Callable[[int, dict[str, Any], float | None, str], None]


@dataclass(frozen=True)
class TuneConfig:
    """The study's budget, sampler and pruner; a study stops at whichever budget ends first."""

    #: Trials to add in this session (a resumed study keeps its earlier ones); None: no limit.
    n_trials: int | None = 30
    #: Seconds for this session, checked between trials (a running trial finishes); None: no limit.
    timeout_s: float | None = 900.0
    seed: int = 0
    #: Trials of random search before TPE models the results.
    startup_trials: int = 10
    #: Boosting rounds between reports to the pruner.
    report_every: int = 10
    #: Completed trials needed before any pruning, and rounds each trial gets before it can be.
    pruner_startup_trials: int = 5
    pruner_warmup_rounds: int = 30

    def __post_init__(self) -> None:
        if self.n_trials is None and self.timeout_s is None:
            raise ValueError("set n_trials or timeout_s (or both): a study needs a budget")
        if self.n_trials is not None and self.n_trials < 1:
            raise ValueError(f"n_trials must be at least 1, got {self.n_trials}")
        if self.timeout_s is not None and self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {self.timeout_s}")
        if self.report_every < 1:
            raise ValueError(f"report_every must be at least 1, got {self.report_every}")


@dataclass(frozen=True)
class TuneResult:
    """The best trial of the whole study (earlier sessions included) and trial counts."""

    study_name: str
    best_trial: int
    best_value: float
    best_params: dict[str, Any]
    complete: int
    pruned: int
    failed: int
    #: Trials this session added (a resumed study also holds earlier ones).
    added: int

    @property
    def variant(self) -> str:
        return str(self.best_params[VARIANT_PARAM])

    @property
    def xgb_params(self) -> dict[str, Any]:
        """The best XGBoost parameters, for `TrainConfig.with_params`."""
        return {k: v for k, v in self.best_params.items() if k != VARIANT_PARAM}

    def train_config(self, base: TrainConfig) -> TrainConfig:
        """`base` with the best parameters, training only the best variant.

        The study already compared the variants, each with its own tuned parameters; training the
        others with parameters tuned for another variant would compare tuned against untuned.
        """
        return replace(
            base.with_params(self.xgb_params), variants=(self.variant,), selection=self.variant
        )


class PruningCallback(xgb.callback.TrainingCallback):
    """Reports the best validation `aucpr` so far every `every` rounds; prunes when told to.

    The running best, not the last round's value, is reported: early stopping keeps the best
    round, so that is what the trial can still deliver, and it never moves backwards.
    """

    def __init__(self, trial: optuna.Trial, every: int = 10, metric: str = "aucpr") -> None:
        super().__init__()
        self.trial = trial
        self.every = every
        self.metric = metric
        self.best = -math.inf

    def after_iteration(
        self, model: Any, epoch: int, evals_log: xgb.callback.TrainingCallback.EvalsLog
    ) -> bool:
        # The last evaluation set is the validation split (it is the only one training passes).
        history = list(evals_log.values())[-1][self.metric]
        latest = history[-1]
        self.best = max(self.best, float(latest[0] if isinstance(latest, tuple) else latest))
        if (epoch + 1) % self.every == 0:
            self.trial.report(self.best, step=epoch)
            if self.trial.should_prune():
                raise optuna.TrialPruned(
                    f"validation {self.metric} {self.best:.4f} after round {epoch} trails "
                    "the median of earlier trials"
                )
        return False


def suggest(trial: optuna.Trial, variants: tuple[str, ...]) -> dict[str, Any]:
    """The search space: tree shape, step size, sampling, regularisation and the variant."""
    return {
        VARIANT_PARAM: trial.suggest_categorical(VARIANT_PARAM, variants),
        "max_depth": trial.suggest_int("max_depth", 2, 10),
        "learning_rate": trial.suggest_float("learning_rate", 0.02, 0.3, log=True),
        # Heavier leaves resist fitting the handful of frauds in one corner of the space.
        "min_child_weight": trial.suggest_float("min_child_weight", 0.5, 20.0, log=True),
        "subsample": trial.suggest_float("subsample", 0.5, 1.0),
        "colsample_bytree": trial.suggest_float("colsample_bytree", 0.5, 1.0),
        "reg_lambda": trial.suggest_float("reg_lambda", 1e-3, 10.0, log=True),
        "reg_alpha": trial.suggest_float("reg_alpha", 1e-3, 10.0, log=True),
    }


def tune(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    base: TrainConfig,
    storage: str,
    study_name: str,
    config: TuneConfig | None = None,
    on_trial: TrialHook | None = None,
) -> TuneResult:
    """Run (or resume) the study `study_name` in `storage`; return its best trial so far.

    The variants searched are `base.variants`, or only the forced one when `base.selection`
    names it. Every other training setting (rounds, early stopping, seed, threads) is `base`'s.
    """
    config = config or TuneConfig()
    if y_train.sum() == 0 or y_val.sum() == 0:
        raise ValueError("both the training and the validation split need at least one fraud")
    variants = base.variants if base.selection == "best" else (base.selection,)
    study = optuna.create_study(
        storage=storage,
        study_name=study_name,
        direction="maximize",
        load_if_exists=True,
        pruner=optuna.pruners.MedianPruner(
            n_startup_trials=config.pruner_startup_trials,
            n_warmup_steps=config.pruner_warmup_rounds,
        ),
    )
    if study.direction != optuna.study.StudyDirection.MAXIMIZE:
        raise ValueError(f"study {study_name!r} in this storage minimizes; use another name")
    before = len(study.get_trials(deepcopy=False))
    # Offset by the trials already there: the same seed would otherwise replay the random
    # start-up points of the first session when the study resumes.
    study.sampler = optuna.samplers.TPESampler(
        seed=config.seed + before, n_startup_trials=config.startup_trials
    )

    def objective(trial: optuna.Trial) -> float:
        params = suggest(trial, variants)
        variant = params.pop(VARIANT_PARAM)
        result = train_variant(
            variant,
            x_train,
            y_train,
            x_val,
            y_val,
            base.with_params(params),
            callbacks=[PruningCallback(trial, config.report_every)],
        )
        trial.set_user_attr("best_iteration", result.best_iteration)
        trial.set_user_attr("seconds", round(result.seconds, 3))
        return result.validation_ap

    callbacks: list[Callable[[optuna.Study, FrozenTrial], None]] = []
    if on_trial is not None:
        hook = on_trial

        def report(_: optuna.Study, trial: FrozenTrial) -> None:
            # Optuna gives a pruned trial its last reported `aucpr` as value: not an AP, so
            # hidden from the hook rather than logged as one.
            value = trial.value if trial.state == TrialState.COMPLETE else None
            hook(trial.number, dict(trial.params), value, trial.state.name.lower())

        callbacks.append(report)
    study.optimize(
        objective, n_trials=config.n_trials, timeout=config.timeout_s, callbacks=callbacks
    )
    trials = study.get_trials(deepcopy=False)
    states = [t.state for t in trials]
    # Only trials of a variant still allowed count: a resumed study may hold others.
    eligible = [
        (float(t.value), t)
        for t in trials
        if t.state == TrialState.COMPLETE
        and t.value is not None
        and t.params.get(VARIANT_PARAM) in variants
    ]
    if not eligible:
        raise RuntimeError(
            f"study {study_name!r} has no completed trial of {list(variants)} "
            f"({states.count(TrialState.PRUNED)} pruned, {states.count(TrialState.FAIL)} "
            "failed): give it more trials or more time"
        )
    value, best = max(eligible, key=lambda pair: pair[0])
    return TuneResult(
        study_name=study_name,
        best_trial=best.number,
        best_value=float(value),
        best_params=dict(best.params),
        complete=states.count(TrialState.COMPLETE),
        pruned=states.count(TrialState.PRUNED),
        failed=states.count(TrialState.FAIL),
        added=len(trials) - before,
    )
