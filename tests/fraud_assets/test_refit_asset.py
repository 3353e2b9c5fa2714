"""The refit through Dagster: what `fraud_model` records, and what the production manifest says."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from mlflow.tracking import MlflowClient

from fraud_assets.definitions import ASSETS, CHECKS
from fraud_assets.defs.assets.model import AnomalyConfig, TrainingConfig
from fraud_assets.defs.resources import PromotionRules
from tests.conftest import make_resources

#: Small on purpose: these tests check the wiring, test_training.py checks the protocol.
QUICK: dict[str, Any] = {"n_estimators": 40, "variants": ["none", "scale_pos_weight"]}
LOW_FLOOR = PromotionRules(floor_average_precision=0.05, floor_roc_auc=0.6)


def run(tmp_path: Path, training: TrainingConfig) -> tuple[dg.ExecuteInProcessResult, Any]:
    resources = make_resources(tmp_path, rows=10_000, fraud_rate=0.04, promotion_rules=LOW_FLOOR)
    result = dg.materialize(
        [*ASSETS, *CHECKS],
        resources=resources,
        run_config=dg.RunConfig(
            ops={"anomaly_scores": AnomalyConfig(n_estimators=20), "fraud_model": training}
        ),
        raise_on_error=False,
    )
    assert result.success
    return result, resources


def metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, Any]:
    events = result.get_asset_materialization_events()
    [event] = [e for e in events if e.asset_key == dg.AssetKey(asset)]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def test_the_published_model_is_refit_on_train_and_validation(tmp_path: Path) -> None:
    result, resources = run(tmp_path, TrainingConfig(**QUICK))
    splits = metadata(result, "transaction_splits")
    model = metadata(result, "fraud_model")
    rows = splits["train_rows"] + splits["validation_rows"]
    assert model["refit"] == "train+validation"
    assert model["training_rows"] == rows
    assert model["training_frauds"] == splits["train_frauds"] + splits["validation_frauds"]
    assert model["boosting_rounds"] > model["best_iteration"]

    manifest = json.loads((tmp_path / "models/production/manifest.json").read_text())
    assert manifest["training"]["refit"] == "train+validation"
    assert manifest["training"]["training_rows"] == rows
    assert manifest["training"]["boosting_rounds"] == model["boosting_rounds"]
    trained = result.asset_value("fraud_model")
    assert trained.model.booster.num_boosted_rounds() == model["boosting_rounds"]

    client = MlflowClient(resources["mlflow_tracking"].tracking_uri)
    mlflow_run = client.get_run(model["mlflow_run_id"])
    assert mlflow_run.data.params["refit"] == "train+validation"
    assert mlflow_run.data.params["refit_rounds"] == "scaled"
    assert mlflow_run.data.params["boosting_rounds"] == str(model["boosting_rounds"])
    assert mlflow_run.data.metrics["training_rows"] == rows
    # The evaluation is of the refit model, on the test rows it has not seen.
    report = metadata(result, "evaluation_report")
    assert report["rows"] == splits["test_rows"]
    assert mlflow_run.data.metrics["test_average_precision"] == pytest.approx(
        report["average_precision"]
    )


def test_switched_off_it_publishes_the_model_trained_on_train(tmp_path: Path) -> None:
    result, resources = run(tmp_path, TrainingConfig(**QUICK, refit=False))
    splits = metadata(result, "transaction_splits")
    model = metadata(result, "fraud_model")
    assert model["refit"] == "off"
    assert model["training_rows"] == splits["train_rows"]
    assert model["boosting_rounds"] == model["best_iteration"] + 1
    manifest = json.loads((tmp_path / "models/production/manifest.json").read_text())
    assert manifest["training"]["refit"] == "off"
    assert manifest["training"]["training_rows"] == splits["train_rows"]
    client = MlflowClient(resources["mlflow_tracking"].tracking_uri)
    assert client.get_run(model["mlflow_run_id"]).data.params["refit"] == "off"
