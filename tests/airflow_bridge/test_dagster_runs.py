"""The Dagster client against a real webserver and daemon running `weekly_retrain_job`."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_bridge.dagster_client import IDEMPOTENCY_TAG, DagsterClient, DagsterError, RunState
from fraud_core import synthetic
from tests.airflow_bridge.conftest import JOB, DagsterServer, client_for

pytestmark = pytest.mark.slow

ASSETS = {
    "labelled_transactions",
    "raw_transactions",
    "transaction_splits",
    "anomaly_scores",
    "fraud_model",
    "evaluation_report",
    "promoted_model",
}
RAW_CHECKS = {
    "check_raw_transactions_schema",
    "check_raw_transactions_nulls",
    "check_raw_transactions_labels",
    "check_raw_transactions_ranges",
    "check_raw_transactions_unique_ids",
}
CHECKS = RAW_CHECKS | {
    "check_transaction_splits_min_frauds",
    "check_evaluation_report_quality_floor",
}
#: Generous: a run worker starts a Python process that imports the whole code location.
RUN_TIMEOUT_S = 600.0


def finish(client: DagsterClient, server: DagsterServer, run_id: str) -> RunState:
    try:
        return client.wait(run_id, poll_s=0.5, timeout_s=RUN_TIMEOUT_S, queued_timeout_s=120)
    except DagsterError as exc:
        pytest.fail(f"{exc}\n{server.log_tails()}")


def test_weekly_retrain_run_is_reported(dagster: DagsterServer) -> None:
    client = client_for(dagster)
    run_id = client.launch_run(JOB, tags={"test": "whole-graph"})

    assert finish(client, dagster, run_id) == RunState(run_id, "SUCCESS")
    report = client.report(run_id)

    assert report.status == "SUCCESS" and report.failure is None
    assert report.url == f"{dagster.url}/runs/{run_id}"
    assert set(report.materializations) == ASSETS
    assert report.decision == "promoted"
    assert report.failed_checks == []
    assert {c["check"] for c in report.checks} == CHECKS
    assert all(c["passed"] and c["severity"] == "ERROR" for c in report.checks)
    metrics = report.materializations["evaluation_report"]
    for name in ("average_precision", "roc_auc", "recall_at_precision_90", "threshold"):
        assert isinstance(metrics[name], float), name
    assert 0.5 < metrics["roc_auc"] <= 1.0
    model = report.materializations["fraud_model"]
    promoted = report.materializations["promoted_model"]
    assert promoted["challenger_version"] == promoted["production_version"]
    assert promoted["production_version"] == model["model_version"]
    assert promoted["promoted"] is True and promoted["reason"]
    assert promoted["mlflow_run"] == model["mlflow_run"]
    assert model["mlflow_run"].startswith("http") and "/runs/" in model["mlflow_run"]
    raw = report.materializations["raw_transactions"]
    assert raw["rows"] == 40_000 and raw["files"] == [] and raw["synthetic"] is True
    assert client.find_runs({"test": "whole-graph"}) == [RunState(run_id, "SUCCESS")]
    assert client.daemon_healthy() is True


def test_launch_or_find_launches_once_and_runs_the_selected_checks(
    dagster: DagsterServer,
) -> None:
    client = client_for(dagster)
    # An Airflow run id, as the DAG builds its keys: colons and a plus sign must survive.
    key = "airflow:weekly_retrain:scheduled__2026-11-22T02:00:00+00:00:validate_data"
    first = client.launch_or_find(
        JOB, idempotency_key=key, asset_selection=["raw_transactions"], tags={"test": "once"}
    )
    second = client.launch_or_find(
        JOB, idempotency_key=key, asset_selection=["raw_transactions"], tags={"test": "once"}
    )

    assert second == first
    assert [run.run_id for run in client.find_runs({IDEMPOTENCY_TAG: key})] == [first]
    assert finish(client, dagster, first).status == "SUCCESS"
    report = client.report(first)
    assert set(report.materializations) == {"raw_transactions"}
    # No check selection is sent: Dagster runs every check of the selected asset with it.
    assert {c["check"] for c in report.checks} == RAW_CHECKS
    assert all(c["passed"] for c in report.checks)
    assert report.decision is None
    # Finished successfully, the run is still the one for that key.
    again = client.launch_or_find(JOB, idempotency_key=key, asset_selection=["raw_transactions"])
    assert again == first


def test_failed_check_blocks_the_run(dagster: DagsterServer, tmp_path: Path) -> None:
    bad = synthetic.generate(n_rows=300, fraud_rate=0.05, seed=3).astype({"Amount": object})
    bad.loc[17, "Amount"] = "12,50 EUR"
    bad.to_csv(tmp_path / "creditcard.csv", index=False)
    client = client_for(dagster)
    # This run's own data directory, through the resource's run config.
    run_config = {"resources": {"data_source": {"config": {"data_dir": str(tmp_path)}}}}
    run_id = client.launch_run(JOB, run_config=run_config)

    assert finish(client, dagster, run_id).status == "FAILURE"
    report = client.report(run_id)

    assert report.status == "FAILURE"
    assert [(c["check"], c["asset"]) for c in report.failed_checks] == [
        ("check_raw_transactions_schema", "raw_transactions")
    ]
    description = report.failed_checks[0]["description"]
    assert "Amount" in description and "12,50 EUR" in description
    passed = {c["check"] for c in report.checks if c["passed"]}
    assert passed == RAW_CHECKS - {"check_raw_transactions_schema"}
    assert report.decision is None
    # The labels (none here) load before the file; the bad file stops everything after it.
    assert set(report.materializations) == {"labelled_transactions", "raw_transactions"}
    assert report.failure is not None
    assert "raw_transactions_checks" in report.failure
    assert "check_raw_transactions_schema on raw_transactions: " in report.failure
    assert description in report.failure
