"""The whole asset graph through `dg.materialize`: metadata, checks, promotion decisions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dagster as dg
import mlflow
import pytest
from mlflow.tracking import MlflowClient

from fraud_assets.definitions import ASSETS, CHECKS, build_defs, defs
from fraud_core.bundle import load_bundle
from fraud_core.store import ModelStore
from tests.conftest import make_resources
from tests.fraud_assets.trained import WEAK, Trained, materialize


def metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, Any]:
    events = [e for e in result.get_asset_materialization_events() if e.asset_key.path == [asset]]
    assert len(events) == 1, f"{asset} was not materialized exactly once"
    return {k: v.value for k, v in events[0].materialization.metadata.items()}


def checks(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def test_the_card_contract_is_by_day_and_its_model_by_week() -> None:
    cards = build_defs("cards")
    graph = cards.resolve_asset_graph()
    daily = cards.resolve_job_def("daily_cards_job")
    assert {k.to_user_string() for k in daily.asset_layer.selected_asset_keys} == {
        "labelled_transactions",
        "card_transactions",
        "card_features",
    }
    card_parents = graph.get(dg.AssetKey("card_features")).parent_keys
    assert {k.to_user_string() for k in card_parents} == {"card_transactions"}
    # A job and a daily schedule of their own, stopped by default; the weekly job trains.
    schedule = cards.resolve_schedule_def("daily_cards_job_schedule")
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    weekly = cards.resolve_job_def("weekly_retrain_job")
    assert {k.to_user_string() for k in weekly.asset_layer.selected_asset_keys} == {
        "transaction_splits",
        "anomaly_scores",
        "fraud_model",
        "evaluation_report",
        "promoted_model",
    }
    assert weekly.partitions_def is not None
    splits_parents = graph.get(dg.AssetKey("transaction_splits")).parent_keys
    assert {k.to_user_string() for k in splits_parents} == {"card_features", "card_transactions"}
    # No raw_transactions: the days are the card contract's ingestion (card_transactions fails
    # naming the columns and lines, as its checks would).
    assert dg.AssetKey("raw_transactions") not in graph.get_all_asset_keys()
    assert cards.resolve_sensor_def("drift_retrain_sensor").job_name == "weekly_retrain_job"
    # Kaggle data has no dates: none of it there (`--select '*'` needs no partition).
    kaggle = build_defs("kaggle").resolve_asset_graph().get_all_asset_keys()
    assert dg.AssetKey("card_features") not in kaggle


def test_definitions_wire_the_graph() -> None:
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    training = {
        "labelled_transactions",
        "raw_transactions",
        "transaction_splits",
        "anomaly_scores",
        "fraud_model",
        "evaluation_report",
        "promoted_model",
    }
    assert keys == training | {"prediction_drift"}
    parents = {k.to_user_string() for k in graph.get(dg.AssetKey("promoted_model")).parent_keys}
    assert parents == {"fraud_model", "evaluation_report", "transaction_splits"}
    raw_parents = graph.get(dg.AssetKey("raw_transactions")).parent_keys
    assert {k.to_user_string() for k in raw_parents} == {"labelled_transactions"}
    # The weekly retrain trains; watching drift is a job of its own.
    job = defs.resolve_job_def("weekly_retrain_job")
    assert {k.to_user_string() for k in job.asset_layer.selected_asset_keys} == training
    drift = defs.resolve_job_def("drift_job")
    assert {k.to_user_string() for k in drift.asset_layer.selected_asset_keys} == {
        "prediction_drift"
    }
    sensor = defs.resolve_sensor_def("drift_retrain_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED
    assert sensor.job_name == "weekly_retrain_job"
    schedule = defs.resolve_schedule_def("weekly_retrain_schedule")
    assert schedule.cron_schedule == "0 2 * * 0"
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    blocking = {key.name: graph.get_check_spec(key).blocking for key in graph.asset_check_keys}
    assert blocking == {
        "check_raw_transactions_schema": True,
        "check_raw_transactions_nulls": True,
        "check_raw_transactions_labels": True,
        "check_raw_transactions_ranges": True,
        "check_raw_transactions_unique_ids": True,
        "check_transaction_splits_min_frauds": True,
        "check_evaluation_report_quality_floor": True,
        # Drift warns or fails, but nothing downstream waits for it.
        "check_prediction_drift": False,
    }


def test_first_run_promotes_and_records_everything(trained: Trained) -> None:
    resources, result = trained.resources, trained.result
    assert result.success

    assert all(e.passed for e in checks(result).values())
    assert len(checks(result)) == 7

    raw = metadata(result, "raw_transactions")
    assert raw["rows"] == 40_000
    assert raw["data_source"] == "synthetic" and raw["synthetic"] is True
    assert 0.005 < raw["fraud_rate"] < 0.015

    splits = metadata(result, "transaction_splits")
    assert splits["train_rows"] + splits["validation_rows"] + splits["test_rows"] == 40_000
    assert min(splits["train_frauds"], splits["validation_frauds"], splits["test_frauds"]) >= 20

    model = metadata(result, "fraud_model")
    assert model["chosen_variant"] in {"none", "scale_pos_weight", "smote"}
    assert "| smote |" in model["variants"] and "| none |" in model["variants"]
    assert model["mlflow_run"].startswith("http://127.0.0.1:5000/#/experiments/")

    report = metadata(result, "evaluation_report")
    assert 0.5 < report["average_precision"] < 1.0
    assert report["roc_auc"] > 0.95
    assert report["tp"] + report["fp"] + report["fn"] + report["tn"] == splits["test_rows"]
    for plot in ("pr_curve", "roc_curve", "score_distribution", "feature_importance"):
        assert "data:image/png;base64," in report[f"plot_{plot}"]

    promoted = metadata(result, "promoted_model")
    assert promoted["decision"] == "promoted"
    assert promoted["reason"].startswith("first model")
    assert promoted["production_version"] == model["model_version"]
    assert promoted["registered_model_version"] == "1"

    manifest = json.loads((trained.root / "models/production/manifest.json").read_text())
    assert manifest["model_version"] == model["model_version"]
    assert manifest["mlflow_run_id"] == model["mlflow_run_id"]
    assert manifest["data_fingerprint"] == splits["data_fingerprint"]
    assert manifest["metrics"]["average_precision"] == pytest.approx(report["average_precision"])
    assert manifest["promotion"]["promote"] is True
    assert set(manifest["files"]) == {"classifier.ubj", "anomaly.npz"}

    client = MlflowClient(resources["mlflow_tracking"].tracking_uri)
    run = client.get_run(model["mlflow_run_id"])
    assert run.data.tags["promotion_decision"] == "promoted"
    assert run.data.params["n_estimators"] == "300"
    assert run.data.metrics["test_average_precision"] == pytest.approx(report["average_precision"])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert artifacts == {
        "plots/pr_curve.png",
        "plots/roc_curve.png",
        "plots/score_distribution.png",
        "plots/feature_importance.png",
    }
    nested = client.search_runs(
        [run.info.experiment_id], f"tags.mlflow.parentRunId = '{run.info.run_id}'"
    )
    assert {r.data.tags["variant"] for r in nested} == {"none", "scale_pos_weight", "smote"}
    champion = client.get_model_version_by_alias("fraud-detector", "champion")
    assert str(champion.version) == "1" and champion.run_id == run.info.run_id
    assert run.info.status == "FINISHED"


def test_the_same_model_again_is_not_promoted(tmp_path: Path, trained: Trained) -> None:
    resources = trained.copy_to(tmp_path)  # the first run's state, to run again on
    first = trained.result
    version = metadata(first, "promoted_model")["production_version"]
    second = materialize(resources)
    assert second.success
    promoted = metadata(second, "promoted_model")
    assert promoted["decision"] == "kept production"
    assert "not above the margin" in promoted["reason"]
    assert ModelStore(tmp_path / "models").current_version() == version
    client = MlflowClient(resources["mlflow_tracking"].tracking_uri)
    assert str(client.get_model_version_by_alias("fraud-detector", "champion").version) == "1"


def test_better_challenger_promotes_and_worse_does_not(
    tmp_path: Path, trained_weak: Trained
) -> None:
    resources = trained_weak.copy_to(tmp_path)  # the weak model in production, LOW_FLOOR
    weak = trained_weak.result
    assert metadata(weak, "promoted_model")["decision"] == "promoted"
    weak_version = metadata(weak, "promoted_model")["production_version"]

    strong = materialize(resources)
    promoted = metadata(strong, "promoted_model")
    assert promoted["decision"] == "promoted", promoted["reason"]
    assert promoted["ap_gain"] > 0.05 and promoted["bootstrap_confidence"] >= 0.9
    strong_version = promoted["production_version"]
    assert strong_version != weak_version

    worse = materialize(resources, fraud_model=WEAK)
    kept = metadata(worse, "promoted_model")
    assert kept["decision"] == "kept production"
    store = ModelStore(tmp_path / "models")
    assert store.current_version() == strong_version
    # The displaced weak model was backed up, and a rollback brings it back.
    assert [m["model_version"] for _, m in store.list_backups()] == [weak_version]
    assert store.rollback().version == weak_version
    client = MlflowClient(resources["mlflow_tracking"].tracking_uri)
    assert str(client.get_model_version_by_alias("fraud-detector", "champion").version) == "2"


def test_model_below_the_floor_is_blocked(tmp_path: Path) -> None:
    resources = make_resources(tmp_path)
    result = materialize(resources, fraud_model=WEAK)
    assert not result.success
    floor = checks(result)["check_evaluation_report_quality_floor"]
    assert not floor.passed
    assert "average_precision" in floor.description and "floor" in floor.description
    materialized = {e.asset_key.path[0] for e in result.get_asset_materialization_events()}
    assert "promoted_model" not in materialized
    assert not (tmp_path / "models/production").exists()


def test_crash_while_publishing_leaves_production_serving(
    tmp_path: Path, trained_weak: Trained, monkeypatch: pytest.MonkeyPatch
) -> None:
    resources = trained_weak.copy_to(tmp_path)  # the weak model in production, LOW_FLOOR
    weak = trained_weak.result
    weak_version = metadata(weak, "promoted_model")["production_version"]

    def crash(self: ModelStore, release: Path) -> None:
        raise OSError("disk full (injected)")

    monkeypatch.setattr(ModelStore, "_switch", crash)
    result = materialize(resources)
    assert not result.success
    model = load_bundle(tmp_path / "models/production", verify=True)
    assert model.version == weak_version
    client = MlflowClient(resources["mlflow_tracking"].tracking_uri)
    # The registry follows the files: the alias did not move to the version that failed.
    assert str(client.get_model_version_by_alias("fraud-detector", "champion").version) == "1"


def test_pyfunc_in_mlflow_matches_the_bundle(trained: Trained) -> None:
    resources, result = trained.resources, trained.result
    assert result.success
    import pandas as pd

    from fraud_core.synthetic import generate

    sample = generate(n_rows=200, fraud_rate=0.05, seed=3).drop(columns=["Class"])
    mlflow.set_tracking_uri(resources["mlflow_tracking"].tracking_uri)
    pyfunc = mlflow.pyfunc.load_model("models:/fraud-detector@champion")
    served = load_bundle(trained.root / "models/production")
    expected = served.predict_proba(sample.to_numpy())
    got = pd.Series(pyfunc.predict(sample)).to_numpy()
    assert got == pytest.approx(expected, abs=1e-9)


def test_a_real_file_in_the_data_dir_replaces_the_synthetic_set(tmp_path: Path) -> None:
    """Kaggle's creditcard.csv quotes its header and its Class values; it loads as it is."""
    from fraud_core.schema import COLUMNS
    from fraud_core.synthetic import generate

    frame = generate(n_rows=10_000, fraud_rate=0.02, seed=9)
    lines = [",".join(f'"{c}"' for c in COLUMNS)]
    for row in frame.itertuples(index=False):
        *values, label = row
        lines.append(",".join(repr(float(v)) for v in values) + f',"{int(label)}"')
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "creditcard.csv").write_text("\n".join(lines) + "\n")

    ingestion = {"labelled_transactions", "raw_transactions", "transaction_splits"}
    selection = [a for a in ASSETS if a.key.path[0] in ingestion]
    result = dg.materialize(
        [*selection, *CHECKS[:2]], resources=make_resources(tmp_path), raise_on_error=False
    )
    assert result.success
    raw = metadata(result, "raw_transactions")
    assert raw["data_source"] == "real" and raw["synthetic"] is False
    assert raw["rows"] == 10_000 and raw["frauds"] == int(frame["Class"].sum())
    assert raw["files"] == [str(tmp_path / "raw" / "creditcard.csv")]
    assert all(e.passed for e in result.get_asset_check_evaluations())
