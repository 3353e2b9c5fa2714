"""Closing the loop in Dagster: labels sent back reach raw_transactions; drift of served inputs.

The prediction log is the real one (SQLite here; PostgreSQL in the prediction-log tests), filled
by `PredictionLog` as the API fills it, labelled with `add_feedback` as POST /feedback does.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from api.prediction_log import PredictionLog
from fraud_assets.definitions import (
    ASSETS,
    CHECKS,
    MONITORING_ASSETS,
    MONITORING_CHECKS,
    defs,
)
from fraud_assets.defs.assets.labels import labelled_transactions
from fraud_assets.defs.assets.monitoring import prediction_drift
from fraud_assets.defs.sensors import drift_retrain_sensor
from fraud_core.prediction_log import add_feedback
from fraud_core.prediction_log.reports import latest_report
from fraud_core.prediction_log.tables import PredictionRow, make_engine
from fraud_core.schema import FEATURE_COLUMNS
from fraud_core.store import ModelStore
from fraud_core.synthetic import generate
from tests.airflow_bridge._airflow_env import webhook_receiver
from tests.conftest import SMALL_FRAUD_RATE, SMALL_ROWS, make_resources
from tests.fraud_assets.test_bad_inputs import snapshot

#: labelled_transactions, raw_transactions, transaction_splits: no training.
INGESTION = ASSETS[:3]


def log_predictions(url: str, frame: pd.DataFrame, model: Any, prefix: str) -> list[str]:
    """Score `frame` with `model` and write each row to the prediction log, as the API does."""
    x = frame[list(FEATURE_COLUMNS)].to_numpy(np.float64)
    scores = model.predict_proba(x)
    now = datetime.now(UTC)
    ids = [f"{prefix}-{i}" for i in range(len(frame))]
    rows = [
        PredictionRow(
            rid, now, model.version, model.threshold, x[i], float(s), bool(s >= model.threshold)
        )
        for i, (rid, s) in enumerate(zip(ids, scores, strict=True))
    ]
    log = PredictionLog(make_engine(url))
    log.record(rows)
    log.close()
    assert log.stats().written == len(rows)
    return ids


@pytest.fixture
def production(tmp_path: Path, make_fraud_model: Any) -> Any:
    """A small production model in this test's model store."""
    store = ModelStore(tmp_path / "models")
    store.publish(
        store.stage(make_fraud_model(seed=3), {"model_version": "v-drift", "metrics": {}})
    )
    model = store.load_production()
    assert model is not None
    return model


def test_labels_sent_back_join_the_next_raw_transactions(tmp_path: Path, production: Any) -> None:
    url = f"sqlite:///{tmp_path / 'predictions.db'}"
    served = generate(n_rows=40, fraud_rate=0.25, seed=9)
    ids = log_predictions(url, served, production, "req")
    engine = make_engine(url)
    truth = served["Class"].to_numpy()
    for rid, label in zip(ids[:30], truth[:30], strict=True):
        add_feedback(engine, rid, "fraud" if label == 1 else "legit", source="chargebacks")

    result = dg.materialize(
        [*INGESTION, *CHECKS[:2]],
        resources=make_resources(tmp_path, prediction_log_url=url),
        raise_on_error=False,
    )
    assert result.success
    (labelled,) = result.asset_materializations_for_node("labelled_transactions")
    meta = {k: v.value for k, v in labelled.metadata.items()}
    assert meta["rows"] == 30 and meta["frauds"] == int(truth[:30].sum())
    assert meta["by_source"] == {"chargebacks": 30}
    assert meta["by_model_version"] == {"v-drift": {"rows": 30, "frauds": int(truth[:30].sum())}}
    (raw,) = result.asset_materializations_for_node("raw_transactions")
    raw_meta = {k: v.value for k, v in raw.metadata.items()}
    assert raw_meta["rows"] == SMALL_ROWS + 30
    assert raw_meta["feedback_rows"] == 30
    assert raw_meta["feedback_frauds"] == int(truth[:30].sum())
    # The labelled rows are in the data that was split, with the label the team gave.
    value = result.output_for_node("raw_transactions")
    tail = value.tail(30).reset_index(drop=True)
    expected = dict(zip(served["V4"][:30], truth[:30], strict=True))
    assert {v4: label for v4, label in zip(tail["V4"], tail["Class"], strict=True)} == expected
    # And every check passed on the combined data.
    assert all(e.passed for e in result.get_asset_check_evaluations())


def test_a_bad_label_cannot_enter_training_through_feedback(
    tmp_path: Path, production: Any
) -> None:
    url = f"sqlite:///{tmp_path / 'predictions.db'}"
    ids = log_predictions(url, generate(n_rows=5, fraud_rate=0.2, seed=4), production, "r")
    engine = make_engine(url)
    add_feedback(engine, ids[0], "fraud")
    with pytest.raises(ValueError):
        add_feedback(engine, ids[1], "maybe")
    result = dg.materialize(
        [labelled_transactions], resources=make_resources(tmp_path, prediction_log_url=url)
    )
    assert result.output_for_node("labelled_transactions")["Class"].tolist() == [1]


def drift_run(tmp_path: Path, url: str) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [*INGESTION, *MONITORING_ASSETS, *MONITORING_CHECKS],
        resources=make_resources(tmp_path, prediction_log_url=url),
        raise_on_error=False,
    )


def drift_check(result: dg.ExecuteInProcessResult) -> dg.AssetCheckEvaluation:
    (evaluation,) = [
        e for e in result.get_asset_check_evaluations() if e.check_name == "check_prediction_drift"
    ]
    return evaluation


def served_traffic(rows: int = 3_000, seed: int = 77) -> pd.DataFrame:
    # The same generator as the training data, another seed: the same population.
    return generate(n_rows=rows, fraud_rate=SMALL_FRAUD_RATE, seed=seed)


def test_unchanged_traffic_raises_no_drift_alarm(
    tmp_path: Path, production: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'predictions.db'}"
    log_predictions(url, served_traffic(), production, "same")
    with webhook_receiver() as slack:
        monkeypatch.setenv("FRAUD_SLACK_WEBHOOK_URL", slack.url)
        result = drift_run(tmp_path, url)
    assert slack.bodies == []  # no drift, no alert
    assert result.success
    check = drift_check(result)
    assert check.passed, check.description
    summary = result.output_for_node("prediction_drift")
    assert summary["status"] == "ok" and summary["worst_features"] == []
    stored = latest_report(make_engine(url))
    assert stored is not None and stored.status == "ok"
    assert set(stored.details["features"]) >= {"V1", "Amount", "fraud_probability"}


def test_shifted_traffic_fails_the_check_naming_the_features(
    tmp_path: Path, production: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'predictions.db'}"
    shifted = served_traffic()
    shifted["Amount"] *= 3
    shifted["V4"] += 2
    log_predictions(url, shifted, production, "shift")
    before = snapshot(tmp_path / "models")
    with webhook_receiver() as slack:
        # The weekly retrain's notifier and settings carry the drift alert.
        monkeypatch.setenv("FRAUD_SLACK_WEBHOOK_URL", slack.url)
        result = drift_run(tmp_path, url)
    (alert,) = slack.bodies
    assert alert["text"].startswith("*[fraud] prediction drift fail:")
    assert "- V4: PSI" in alert["text"] and "- Amount: PSI" in alert["text"]

    check = drift_check(result)
    assert not check.passed
    assert check.severity == dg.AssetCheckSeverity.ERROR
    assert check.description is not None and check.description.startswith("drift fail")
    assert "Amount (PSI" in check.description and "V4 (PSI" in check.description
    summary = result.output_for_node("prediction_drift")
    assert summary["features"]["Amount"]["status"] == "fail"
    assert summary["features"]["V4"]["status"] == "fail"
    assert summary["features"]["V7"]["status"] == "ok"
    (event,) = result.asset_materializations_for_node("prediction_drift")
    assert event.metadata["status"].value == "fail"
    assert "V4" in str(event.metadata["worst_features"].value)
    # The report the API exports as gauges.
    stored = latest_report(make_engine(url))
    assert stored is not None and stored.status == "fail"
    assert stored.details["features"]["V4"]["psi"] >= 0.25
    # Watching does not touch the served model.
    assert snapshot(tmp_path / "models") == before

    # The sensor (off by default) asks for one retrain for this failing report.
    instance = dg.DagsterInstance.ephemeral()
    instance.report_runless_asset_event(
        dg.AssetMaterialization(
            asset_key=prediction_drift.key, metadata={"status": "fail", "worst_features": "V4"}
        )
    )
    context = dg.build_sensor_context(instance=instance, definitions=defs)
    data = drift_retrain_sensor.evaluate_tick(context)
    (request,) = data.run_requests or []
    assert request.tags["trigger"] == "drift"
    assert drift_retrain_sensor.job_name == "weekly_retrain_job"


def test_too_few_predictions_say_so_instead_of_a_number(tmp_path: Path, production: Any) -> None:
    url = f"sqlite:///{tmp_path / 'predictions.db'}"
    log_predictions(url, served_traffic(rows=120), production, "few")
    result = drift_run(tmp_path, url)
    assert result.success
    check = drift_check(result)
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert check.description is not None
    assert "at least 500 current rows, got 120" in check.description
    summary = result.output_for_node("prediction_drift")
    assert summary == {
        "status": "insufficient_data",
        "message": summary["message"],
        "worst_features": [],
    }
    stored = latest_report(make_engine(url))
    assert stored is not None and stored.status == "insufficient_data"
    assert "features" not in stored.details
