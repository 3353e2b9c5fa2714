"""End to end: `airflow dags test weekly_retrain` against a real Dagster webserver and daemon.

The real DAG file, the real client, a real Dagster doing the work (small synthetic data), and the
notification reaching a local Slack-like webhook and a local SMTP server. Airflow runs in a
subprocess on a throw-away AIRFLOW_HOME with a SQLite metadata database.
"""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

import pytest

from airflow_bridge.dagster_client import IDEMPOTENCY_TAG
from tests.airflow_bridge._airflow_env import (
    VENV_BIN,
    airflow_env,
    migrate,
    smtp_receiver,
    webhook_receiver,
)
from tests.airflow_bridge.conftest import DagsterServer, client_for

pytestmark = pytest.mark.slow

STAGES = {
    "validate_data": {"raw_transactions", "transaction_splits"},
    "train": {"anomaly_scores", "fraud_model"},
    "evaluate_and_compare": {"evaluation_report"},
    "deploy_if_better": {"promoted_model"},
}
TASKS = [*STAGES, "notify"]
LOGICAL_DATE = "2024-01-14"
#: Four Dagster runs, each a run worker importing the whole code location, then training.
DAG_TEST_TIMEOUT_S = 360


def _airflow_run(db: Path) -> tuple[str, str, dict[str, str]]:
    """The one run of weekly_retrain in the metadata database: run_id, state, task states."""
    with sqlite3.connect(db) as conn:
        runs = conn.execute(
            "SELECT run_id, state FROM dag_run WHERE dag_id = 'weekly_retrain'"
        ).fetchall()
        assert len(runs) == 1, runs
        ((run_id, state),) = runs
        rows = conn.execute(
            "SELECT task_id, state FROM task_instance WHERE dag_id = 'weekly_retrain' "
            "AND run_id = ?",
            (run_id,),
        ).fetchall()
    return run_id, state, dict(rows)


def test_airflow_dags_test_runs_the_retrain_in_dagster_and_notifies(
    dagster: DagsterServer, tmp_path: Path
) -> None:
    home = tmp_path / "airflow"
    migrate(home)
    with webhook_receiver() as slack, smtp_receiver() as mailbox:
        env = airflow_env(
            home,
            DAGSTER_WEBSERVER_URL=dagster.url,
            DAGSTER_CODE_LOCATION="fraud_assets",
            FRAUD_SLACK_WEBHOOK_URL=slack.url,
            FRAUD_SMTP_HOST=mailbox.host,
            FRAUD_SMTP_PORT=str(mailbox.port),
            FRAUD_SMTP_TO="fraud-team@example.com",
            # Short pokes: each follows its run 3 s, then the sensor reschedules for 1 s.
            FRAUD_AIRFLOW_POKE_WAIT_S="3",
            FRAUD_AIRFLOW_POKE_INTERVAL_S="1",
            FRAUD_AIRFLOW_QUEUED_TIMEOUT_S="180",
            FRAUD_AIRFLOW_RETRIES="0",
        )
        try:
            proc = subprocess.run(
                [str(VENV_BIN / "airflow"), "dags", "test", "weekly_retrain", LOGICAL_DATE],
                env=env,
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=DAG_TEST_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired as exc:
            pytest.fail(
                f"airflow dags test ran past {DAG_TEST_TIMEOUT_S}s:\n"
                f"{str(exc.stdout or '')[-4000:]}\n{str(exc.stderr or '')[-4000:]}\n"
                f"{dagster.log_tails()}"
            )
        output = proc.stdout + proc.stderr
        bodies, emails = list(slack.bodies), list(mailbox.messages)

    assert proc.returncode == 0, output[-8000:] + "\n" + dagster.log_tails()

    # Airflow: every task succeeded, the run too, as the metadata database and the log say.
    run_id, run_state, task_states = _airflow_run(home / "airflow.db")
    assert run_state == "success", (run_state, task_states)
    assert task_states == dict.fromkeys(TASKS, "success"), task_states
    for task_id in TASKS:
        assert f"task_id={task_id}" in output, task_id
    assert "state=failed" not in output

    # Dagster: one successful run per stage, found by its idempotency key, with its assets.
    client = client_for(dagster)
    reports = {}
    for stage, assets in STAGES.items():
        runs = client.find_runs({IDEMPOTENCY_TAG: f"airflow:weekly_retrain:{run_id}:{stage}"})
        assert len(runs) == 1, (stage, runs)
        assert runs[0].status == "SUCCESS", (stage, runs)
        report = client.report(runs[0].run_id)
        assert set(report.materializations) == assets, (stage, report.materializations)
        assert report.failed_checks == [], (stage, report.failed_checks)
        reports[stage] = report
    # The newest run of the job is the deploy stage's, and it promoted the challenger.
    newest = client.find_runs({"airflow/run_id": run_id})
    assert [r.run_id for r in newest] == [reports[s].run_id for s in reversed(STAGES)], newest
    deploy = reports["deploy_if_better"]
    assert deploy.decision == "promoted"
    assert deploy.materializations["promoted_model"]["promoted"] is True
    ap = reports["evaluate_and_compare"].materializations["evaluation_report"]["average_precision"]
    assert isinstance(ap, float) and 0.0 < ap <= 1.0, ap

    # Slack and e-mail: one message each, with the decision, the AP and the Dagster runs' links.
    assert len(bodies) == 1, bodies
    text = str(bodies[0]["text"])
    assert len(emails) == 1, [m["Subject"] for m in emails]
    email = emails[0]
    body = email.get_content()
    assert "succeeded: promoted" in email["Subject"], email["Subject"]
    assert email["To"] == "fraud-team@example.com"
    for sent in (text, body):
        assert "Decision: promoted" in sent, sent
        assert f"average precision: {ap:.4f}" in sent, sent
        for stage, report in reports.items():
            assert f"Dagster run ({stage}): {dagster.url}/runs/{report.run_id}" in sent, sent
    subject = f"[fraud] weekly_retrain succeeded: promoted ({run_id})"
    assert email["Subject"] == subject
    assert text.splitlines()[0] == f"*{subject}*"
    assert f"weekly_retrain {run_id}: PROMOTED" in text and body.startswith(
        f"weekly_retrain {run_id}: PROMOTED"
    )
