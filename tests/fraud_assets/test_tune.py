"""Optuna tuning: small real studies on SQLite, pruning, resuming, and the tuned training asset."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import optuna
import pytest
from mlflow.tracking import MlflowClient

from fraud_assets.defs.assets._tuning import optuna_storage
from fraud_assets.defs.assets.data import raw_transactions, transaction_splits
from fraud_assets.defs.assets.labels import labelled_transactions
from fraud_assets.defs.assets.model import (
    AnomalyConfig,
    TrainingConfig,
    anomaly_scores,
    fraud_model,
)
from fraud_core import synthetic
from fraud_core.data import as_arrays, split_by_time
from fraud_core.features import AnomalyScorer, base_features, model_features
from fraud_core.train import TrainConfig, train
from fraud_core.tune import VARIANT_PARAM, TuneConfig, TuneResult, tune
from tests.conftest import make_resources

#: One thread and few rounds: the studies must stay quick on a busy two-core machine.
BASE = TrainConfig(
    n_estimators=40, early_stopping_rounds=15, variants=("none", "scale_pos_weight"), n_jobs=1
)
SMALL = TuneConfig(
    n_trials=5,
    timeout_s=None,
    startup_trials=3,
    report_every=5,
    pruner_startup_trials=2,
    pruner_warmup_rounds=5,
)
SEARCHED = {
    VARIANT_PARAM,
    "max_depth",
    "learning_rate",
    "min_child_weight",
    "subsample",
    "colsample_bytree",
    "reg_lambda",
    "reg_alpha",
}
#: Booster config names of the tuned scikit-learn parameters.
BOOSTER_NAMES = {
    "max_depth": "max_depth",
    "learning_rate": "eta",
    "min_child_weight": "min_child_weight",
    "subsample": "subsample",
    "colsample_bytree": "colsample_bytree",
    "reg_lambda": "lambda",
    "reg_alpha": "alpha",
}
#: A strong and a hopeless configuration, to make pruning certain rather than likely.
STRONG = {
    VARIANT_PARAM: "none",
    "max_depth": 6,
    "learning_rate": 0.3,
    "min_child_weight": 1.0,
    "subsample": 1.0,
    "colsample_bytree": 1.0,
    "reg_lambda": 1.0,
    "reg_alpha": 0.001,
}
HOPELESS = {
    **STRONG,
    "max_depth": 2,
    "learning_rate": 0.02,
    "min_child_weight": 20.0,
    "subsample": 0.5,
    "colsample_bytree": 0.5,
    "reg_alpha": 10.0,
}


@dataclass
class Data:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        return self.x_train, self.y_train, self.x_val, self.y_val


class Recorder:
    """An `on_trial` hook that keeps what it was told."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, dict[str, Any], float | None, str]] = []

    def __call__(
        self, number: int, params: dict[str, Any], value: float | None, state: str
    ) -> None:
        self.calls.append((number, params, value, state))


@pytest.fixture(scope="module")
def data() -> Data:
    splits = split_by_time(synthetic.generate(n_rows=20_000, fraud_rate=0.02, seed=7))
    (raw_train, y_train), (raw_val, y_val) = as_arrays(splits.train), as_arrays(splits.validation)
    base_train, base_val = base_features(raw_train), base_features(raw_val)
    anomaly = AnomalyScorer.fit(base_train, n_estimators=20, seed=0, n_jobs=1)
    return Data(
        model_features(base_train, anomaly.score(base_train)),
        y_train,
        model_features(base_val, anomaly.score(base_val)),
        y_val,
    )


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("optuna")


@pytest.fixture(scope="module")
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture(scope="module")
def study(data: Data, study_dir: Path, recorder: Recorder) -> TuneResult:
    storage = f"sqlite:///{study_dir / 'small.db'}"
    return tune(*data.arrays(), BASE, storage, "small", SMALL, on_trial=recorder)


def load(study_dir: Path, name: str, db: str = "small.db") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{study_dir / db}")


def test_a_small_study_finishes(study: TuneResult, study_dir: Path, recorder: Recorder) -> None:
    assert study.added == 5 and study.complete + study.pruned == 5 and study.failed == 0
    assert set(study.best_params) == SEARCHED
    assert study.variant in BASE.variants
    assert 0.3 < study.best_value <= 1.0
    stored = load(study_dir, "small")
    assert stored.best_trial.number == study.best_trial
    assert stored.best_value == pytest.approx(study.best_value)
    # The hook heard of every trial, in order, with the state the storage recorded.
    assert [c[0] for c in recorder.calls] == [0, 1, 2, 3, 4]
    for (_, params, value, state), trial in zip(recorder.calls, stored.trials, strict=True):
        assert params == trial.params and state == trial.state.name.lower()
        assert (value is None) == (state == "pruned")


def test_trials_report_validation_aucpr_every_few_rounds(
    study: TuneResult, study_dir: Path
) -> None:
    for trial in load(study_dir, "small").trials:
        steps = sorted(trial.intermediate_values)
        assert steps[:2] == [4, 9], "a report every 5 rounds, counted from 0"
        values = [trial.intermediate_values[s] for s in steps]
        assert values == sorted(values), "the best so far never goes down"
        assert all(0.0 < v <= 1.0 for v in values)
        if trial.state == optuna.trial.TrialState.COMPLETE:
            assert "best_iteration" in trial.user_attrs


def test_a_trailing_trial_is_pruned(data: Data, tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'prune.db'}"
    # Queued in the storage first: the tuner resumes the study and runs these before sampling.
    queued = optuna.create_study(storage=storage, study_name="prune", direction="maximize")
    queued.enqueue_trial(STRONG)
    queued.enqueue_trial(HOPELESS)
    config = TuneConfig(
        n_trials=2, timeout_s=None, report_every=5, pruner_startup_trials=1, pruner_warmup_rounds=0
    )
    recorder = Recorder()
    result = tune(*data.arrays(), BASE, storage, "prune", config, on_trial=recorder)
    assert [c[3] for c in recorder.calls] == ["complete", "pruned"]
    assert (result.complete, result.pruned, result.best_trial) == (1, 1, 0)
    pruned = optuna.load_study(study_name="prune", storage=storage).trials[1]
    assert max(pruned.intermediate_values) < BASE.n_estimators - 1, "stopped before the end"


def test_resuming_a_study_adds_trials(data: Data, tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'resume.db'}"
    config = TuneConfig(n_trials=3, timeout_s=None, report_every=5)
    first, second = Recorder(), Recorder()
    before = tune(*data.arrays(), BASE, storage, "resume", config, on_trial=first)
    after = tune(*data.arrays(), BASE, storage, "resume", config, on_trial=second)
    assert before.added == 3 and after.added == 3
    assert after.complete + after.pruned + after.failed == 6
    assert [c[0] for c in second.calls] == [3, 4, 5]
    assert after.best_value >= before.best_value
    # The resumed session samples new points instead of replaying the first session's.
    assert second.calls[0][1] != first.calls[0][1]


def test_the_time_budget_stops_the_study(data: Data, tmp_path: Path) -> None:
    config = TuneConfig(n_trials=None, timeout_s=0.05, report_every=5)
    result = tune(*data.arrays(), BASE, f"sqlite:///{tmp_path / 't.db'}", "timed", config)
    assert result.added == 1  # checked between trials: the first one runs, no second starts


def test_the_best_params_reach_the_trained_model(data: Data, study: TuneResult) -> None:
    config = study.train_config(BASE)
    assert config.variants == (study.variant,) and config.selection == study.variant
    result = train(*data.arrays(), config)
    assert result.chosen == study.variant
    booster_params = json.loads(result.best.booster.save_config())["learner"]["gradient_booster"][
        "tree_train_param"
    ]
    for name, booster_name in BOOSTER_NAMES.items():
        assert float(booster_params[booster_name]) == pytest.approx(
            study.best_params[name], rel=1e-6
        ), name
    # Same splits, same training: the study's best value is what the final model scores.
    assert result.best.validation_ap == pytest.approx(study.best_value, rel=1e-9)


def test_train_config_takes_extra_xgboost_params_but_not_reserved_ones() -> None:
    # Without extras the logged parameters are the fields, as before.
    assert set(TrainConfig().as_params()) == {f.name for f in fields(TrainConfig)} - {"xgb_extra"}
    tuned = TrainConfig().with_params({"max_depth": 3, "reg_lambda": 2.5})
    assert tuned.max_depth == 3 and dict(tuned.xgb_extra) == {"reg_lambda": 2.5}
    assert tuned.as_params()["reg_lambda"] == 2.5 and tuned.xgb_params()["reg_lambda"] == 2.5
    for bad in ({"scale_pos_weight": 3.0}, {"seed": 1}, {"eval_metric": "auc"}, {"variants": 1}):
        with pytest.raises(ValueError, match="xgb_extra"):
            TrainConfig().with_params(bad)
    with pytest.raises(ValueError, match="budget"):
        TuneConfig(n_trials=None, timeout_s=None)


def test_default_storage_is_in_the_model_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FRAUD_OPTUNA_STORAGE", "")
    url = optuna_storage(str(tmp_path / "models"))
    assert url == f"sqlite:///{(tmp_path / 'models' / 'tuning' / 'optuna.db').resolve()}"
    assert (tmp_path / "models" / "tuning").is_dir()
    monkeypatch.setenv("FRAUD_OPTUNA_STORAGE", "postgresql://u@db:5432/optuna")
    assert optuna_storage(str(tmp_path / "models")) == "postgresql://u@db:5432/optuna"


def test_the_training_asset_tunes_and_logs_each_trial(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    studies = tmp_path / "studies.db"
    monkeypatch.setenv("FRAUD_OPTUNA_STORAGE", f"sqlite:///{studies}")
    # Small on purpose: this test checks the wiring; the studies above check the tuning.
    resources = make_resources(tmp_path, rows=10_000, fraud_rate=0.04)
    training = TrainingConfig(
        n_estimators=20,
        early_stopping_rounds=10,
        variants=["none", "scale_pos_weight"],
        tuning=True,
        tuning_trials=3,
        tuning_timeout_s=None,
        tuning_study="asset-test",
    )
    result = dg.materialize(
        [labelled_transactions, raw_transactions, transaction_splits, anomaly_scores, fraud_model],
        resources=resources,
        run_config=dg.RunConfig(
            ops={"anomaly_scores": AnomalyConfig(n_estimators=20), "fraud_model": training}
        ),
        raise_on_error=False,
    )
    assert result.success
    events = result.get_asset_materialization_events()
    [event] = [e for e in events if e.asset_key == dg.AssetKey("fraud_model")]
    meta: dict[str, Any] = {k: v.value for k, v in event.materialization.metadata.items()}
    best = meta["tuned_params"]
    assert set(best) == SEARCHED
    assert meta["tuning_trials_added"] == 3
    assert meta["tuning_trials_complete"] + meta["tuning_trials_pruned"] == 3
    assert meta["tuning_study"].startswith("asset-test-")
    assert meta["chosen_variant"] == best[VARIANT_PARAM]
    assert meta["validation_average_precision"] == pytest.approx(meta["tuning_best_value"])
    assert optuna.load_study(study_name=meta["tuning_study"], storage=f"sqlite:///{studies}")

    # The model handed downstream was trained with the best parameters.
    trained = result.asset_value("fraud_model")
    booster = json.loads(trained.model.booster.save_config())["learner"]["gradient_booster"]
    assert int(booster["tree_train_param"]["max_depth"]) == best["max_depth"]

    client = MlflowClient(resources["mlflow_tracking"].tracking_uri)
    run = client.get_run(meta["mlflow_run_id"])
    assert run.data.params["max_depth"] == str(best["max_depth"])
    assert float(run.data.params["reg_lambda"]) == pytest.approx(best["reg_lambda"])
    assert run.data.tags["optuna_best_trial"] == str(meta["tuning_best_trial"])
    nested = client.search_runs(
        [run.info.experiment_id], f"tags.mlflow.parentRunId = '{run.info.run_id}'"
    )
    trials = [r for r in nested if r.data.tags.get("tuning") == "optuna"]
    assert sorted(int(r.data.tags["optuna_trial"]) for r in trials) == [0, 1, 2]
    assert all(r.data.tags["optuna_study"] == meta["tuning_study"] for r in trials)
    first_trial = next(r for r in trials if r.data.tags["optuna_trial"] == "0")
    assert set(first_trial.data.params) == SEARCHED
    # Beside the trials, one variant run: only the study's best variant is trained.
    variants = [r.data.tags["variant"] for r in nested if "variant" in r.data.tags]
    assert variants == [best[VARIANT_PARAM]]
