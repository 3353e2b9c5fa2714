"""The `weekly_retrain` DAG in real Airflow 3.2: it parses, it is wired as the contract says,
and its tasks really run (`dag.test()` and `airflow dags test`) on a throw-away AIRFLOW_HOME.

Airflow runs in subprocesses: importing it configures logging and a metadata database, which
must not leak into the pytest process. Where a test is about Airflow's side, the Dagster client
is `FakeDagster`; the run against a real Dagster lives with the client's tests.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pendulum
import pytest

from tests.airflow_bridge._airflow_env import (
    DAGS_FOLDER,
    REPO,
    VENV_BIN,
    Mailbox,
    Receiver,
    airflow_env,
    migrate,
    migrated_home,
    smtp_receiver,
    webhook_receiver,
)

STAGES = ["validate_data", "train", "evaluate_and_compare", "deploy_if_better"]
TASKS = [*STAGES, "notify"]

_INSPECT = textwrap.dedent(
    """
    import json, os, sys
    from airflow.dag_processing.dagbag import DagBag
    from airflow.serialization.serialized_objects import DagSerialization
    from airflow.timetables.base import TimeRestriction

    def load():
        return DagBag(dag_folder=sys.argv[1], include_examples=False)

    bag = load()
    dag = bag.dags["weekly_retrain"]
    scheduled = DagSerialization.from_dict(DagSerialization.to_dict(dag))
    tasks = {
        t.task_id: {
            "type": type(t).__name__,
            "upstream": sorted(t.upstream_task_ids),
            "downstream": sorted(t.downstream_task_ids),
            "trigger_rule": str(t.trigger_rule.value),
            "deferrable": callable(getattr(t, "execute_complete", None)),
            "poll_interval_s": getattr(t, "poll_interval_s", None),
            "queued_timeout_s": getattr(t, "queued_timeout_s", None),
            "doc_md": t.doc_md,
            "retries": t.retries,
        }
        for t in dag.tasks
    }
    os.environ["FRAUD_AIRFLOW_TIMEZONE"] = "Mars/Olympus_Mons"
    bad = load()
    print(json.dumps({
        "import_errors": {str(k): v for k, v in bag.import_errors.items()},
        "dag_ids": sorted(bag.dag_ids),
        "expression": dag.timetable.expression,
        "timetable_timezone": str(dag.timetable.timezone),
        "summary": scheduled.timetable.summary,
        "description": scheduled.timetable.description,
        "start_date": dag.start_date and dag.start_date.isoformat(),
        "first_run": scheduled.timetable.next_dagrun_info(
            last_automated_data_interval=None,
            restriction=TimeRestriction(earliest=None, latest=None, catchup=False),
        ).run_after.isoformat(),
        "catchup": dag.catchup,
        "max_active_runs": dag.max_active_runs,
        "doc_md": dag.doc_md,
        "tags": sorted(dag.tags),
        "order": [t.task_id for t in dag.topological_sort()],
        "tasks": tasks,
        "bad_tz_errors": [str(v) for v in bad.import_errors.values()],
        "bad_tz_dags": sorted(bad.dag_ids),
    }))
    """
)


def test_dag_parses_and_keeps_the_contract(tmp_path: Path) -> None:
    env = airflow_env(
        tmp_path / "airflow",
        FRAUD_AIRFLOW_TIMEZONE="Europe/Amsterdam",
        FRAUD_AIRFLOW_POLL_INTERVAL_S="3",
        FRAUD_AIRFLOW_QUEUED_TIMEOUT_S="45",
        PYTHONPATH=str(REPO),
    )
    proc = subprocess.run(
        [sys.executable, "-c", _INSPECT, str(DAGS_FOLDER)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    dag = json.loads(proc.stdout.strip().splitlines()[-1])

    assert dag["import_errors"] == {}
    assert dag["dag_ids"] == ["weekly_retrain"]
    # Sunday 02:00 in the configured zone.
    assert dag["expression"] == "0 2 * * 0"
    assert dag["timetable_timezone"] == "Europe/Amsterdam"
    assert dag["description"] == "At 02:00, only on Sunday"
    # No start date: switched on mid-week, it waits for the next Sunday 02:00 instead of
    # retraining at once for the Sunday that has passed.
    assert dag["start_date"] is None
    first = datetime.fromisoformat(dag["first_run"])
    now = pendulum.now("Europe/Amsterdam")
    assert now < first <= now.add(days=7)
    local = pendulum.instance(first).in_timezone("Europe/Amsterdam")
    assert (local.day_of_week, local.hour, local.minute) == (pendulum.SUNDAY, 2, 0)
    assert dag["catchup"] is False
    assert dag["max_active_runs"] == 1
    assert "# weekly_retrain" in dag["doc_md"] and "triggerer" in dag["doc_md"]
    assert dag["tags"] == ["dagster", "fraud", "retrain"]

    # The original stages, in order, one chain, notify last whatever happened.
    assert dag["order"] == TASKS
    tasks = dag["tasks"]
    for before, after in itertools.pairwise(TASKS):
        assert tasks[before]["downstream"] == [after]
        assert tasks[after]["upstream"] == [before]
    for stage in STAGES:
        # Deferrable: the wait is the triggerer's, polling as the environment says.
        assert tasks[stage]["type"] == "DagsterStageOperator", stage
        assert tasks[stage]["deferrable"] is True
        assert tasks[stage]["poll_interval_s"] == 3.0
        assert tasks[stage]["queued_timeout_s"] == 45.0
        assert tasks[stage]["doc_md"], stage
        assert tasks[stage]["trigger_rule"] == "all_success"
    assert tasks["notify"]["trigger_rule"] == "all_done"
    assert tasks["notify"]["retries"] == 0

    # A bad time zone is an import error that names the variable, not a DAG in the wrong zone.
    assert dag["bad_tz_dags"] == []
    assert any("FRAUD_AIRFLOW_TIMEZONE" in e for e in dag["bad_tz_errors"]), dag["bad_tz_errors"]


# --- dag.test(): every task runs, against a scripted Dagster -------------------------------------


@pytest.fixture(scope="module")
def airflow_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated metadata database, copied into each test's AIRFLOW_HOME."""
    home = tmp_path_factory.mktemp("airflow_template")
    migrate(home)
    return home


def _smtp_env(box: Mailbox) -> dict[str, str]:
    return {
        "FRAUD_SMTP_HOST": box.host,
        "FRAUD_SMTP_PORT": str(box.port),
        "FRAUD_SMTP_TO": "fraud-team@example.com",
    }


@pytest.fixture(scope="module")
def dag_runs(
    airflow_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """Four runs of weekly_retrain in one `dag.test()` process: promoted, blocked, kept, and
    promoted on the card contract's code location (partitioned by week and by day)."""
    root = tmp_path_factory.mktemp("dag_test")
    home = migrated_home(airflow_template, root / "airflow")
    with (
        webhook_receiver() as slack,
        webhook_receiver(status=500) as broken_slack,
        smtp_receiver() as mailbox,
        smtp_receiver(refuse=True) as refusing,
    ):
        scenarios = {
            "promoted": {
                "env": {"FRAUD_SLACK_WEBHOOK_URL": slack.url, **_smtp_env(mailbox)},
            },
            "blocked": {
                "script": {"validate_data": "blocked"},
                "env": {"FRAUD_SLACK_WEBHOOK_URL": broken_slack.url, **_smtp_env(refusing)},
            },
            "kept": {"decision": "kept production", "env": {}},
            "cards": {"cards": True, "env": {"FRAUD_TRAINING_WINDOW_DAYS": "35"}},
        }
        (root / "scenarios.json").write_text(json.dumps(list(scenarios.values())))
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "tests.airflow_bridge._dag_test_runner",
                str(root / "scenarios.json"),
                str(root / "results.json"),
            ],
            env=airflow_env(home, PYTHONPATH=str(REPO)),
            cwd=root,
            capture_output=True,
            text=True,
            timeout=480,
        )
        output = proc.stdout + proc.stderr
        assert proc.returncode == 0, output[-6000:]
        results = json.loads((root / "results.json").read_text())
        yield {
            "output": output,
            **dict(zip(scenarios, results, strict=True)),
            "slack": slack,
            "broken_slack": broken_slack,
            "mailbox": mailbox,
            "refusing": refusing,
        }


def _slack_text(receiver: Receiver) -> str:
    assert len(receiver.bodies) == 1, receiver.bodies
    return str(receiver.bodies[0]["text"])


@pytest.mark.slow
def test_promoted_run_launches_each_stage_once_and_notifies(dag_runs: dict[str, Any]) -> None:
    run = dag_runs["promoted"]
    assert run["state"] == "success"
    assert run["task_states"] == dict.fromkeys(TASKS, "success")

    # One Dagster run per stage, with that stage's assets and the try-independent key, although
    # each trigger polled at least twice (the first poll saw the run queued) and the task ran
    # twice (launch and defer, then resume).
    launches = run["launches"]
    assert [launch["assets"] for launch in launches] == [
        ["labelled_transactions", "raw_transactions", "transaction_splits"],
        ["anomaly_scores", "fraud_model"],
        ["evaluation_report"],
        ["promoted_model"],
    ]
    assert [launch["key"] for launch in launches] == [
        f"airflow:weekly_retrain:{run['run_id']}:{stage}" for stage in STAGES
    ]
    assert all(launch["job"] == "weekly_retrain_job" for launch in launches)
    assert launches[0]["tags"]["airflow/run_id"] == run["run_id"]
    assert all(polls >= 2 for polls in run["polls"].values()), run["polls"]
    # Every stage of the four runs deferred to its trigger (one stage of the blocked run; the
    # card run's validate_data twice, for its days and for its own run).
    assert dag_runs["output"].count("[DAG TEST] running trigger in line") == 4 + 1 + 4 + 5

    deploy = run["xcoms"]["deploy_if_better.return_value"]
    assert deploy["decision"] == "promoted"
    # The embedded plots stay out of XCom; the metrics are there.
    evaluation = run["xcoms"]["evaluate_and_compare.return_value"]["metadata"]
    assert "plot_pr_curve" not in evaluation["evaluation_report"]
    assert evaluation["evaluation_report"]["average_precision"] == 0.82

    text = _slack_text(dag_runs["slack"])
    assert "PROMOTED" in text
    assert "average precision: 0.8200 (was 0.7900, +0.0300)" in text
    assert "http://dagster.test:3000/runs/" in text and "MLflow run: http" in text
    assert f"/dags/weekly_retrain/runs/{run['run_id'][:10]}" in text
    [email] = dag_runs["mailbox"].messages
    assert "succeeded: promoted" in email["Subject"]
    assert "AP gain over production on the same rows: +0.0300" in email.get_content()
    assert run["xcoms"]["notify.return_value"]["channels"] == {"slack": "sent", "email": "sent"}


@pytest.mark.slow
def test_failed_check_fails_the_stage_and_the_run_even_when_notifiers_fail(
    dag_runs: dict[str, Any],
) -> None:
    run = dag_runs["blocked"]
    assert run["state"] == "failed"
    assert run["task_states"] == {
        "validate_data": "failed",
        "train": "upstream_failed",
        "evaluate_and_compare": "upstream_failed",
        "deploy_if_better": "upstream_failed",
        "notify": "failed",
    }
    outcome = run["xcoms"]["validate_data.return_value"]
    assert outcome["state"] == "blocked"
    assert outcome["blocked_by"]["check"] == "check_raw_transactions_schema"
    assert (
        "validate_data blocked by check_raw_transactions_schema: missing columns: V7, Amount"
        in (dag_runs["output"])
    )
    # Only the stage that ran was launched.
    assert [launch["key"].rsplit(":", 1)[-1] for launch in run["launches"]] == ["validate_data"]

    # Slack answered 500 and the SMTP server refused: both were tried, the failure is logged,
    # and the run still fails for the pipeline's own reason, with the message it meant to send.
    summary = run["xcoms"]["notify.return_value"]
    assert summary["channels"] == {"slack": "failed", "email": "failed"}
    assert summary["decision"] == "blocked by check_raw_transactions_schema"
    assert "train: not run (upstream_failed)" in summary["text"]
    assert len(dag_runs["broken_slack"].bodies) == 1
    assert "blocked by check_raw_transactions_schema" in dag_runs["broken_slack"].bodies[0]["text"]
    assert (
        "Slack: the notification was not sent: the webhook answered HTTP 500"
        in (dag_runs["output"])
    )
    assert "554" in dag_runs["output"]
    assert (
        "weekly_retrain blocked by check_raw_transactions_schema (the team was notified)"
        in (dag_runs["output"])
    )


@pytest.mark.slow
def test_kept_production_is_a_success_with_the_decision_recorded(
    dag_runs: dict[str, Any],
) -> None:
    run = dag_runs["kept"]
    assert run["state"] == "success"
    assert run["task_states"]["deploy_if_better"] == "success"
    assert run["xcoms"]["deploy_if_better.return_value"]["decision"] == "kept production"
    summary = run["xcoms"]["notify.return_value"]
    assert summary["decision"] == "kept production"
    assert "KEPT PRODUCTION" in summary["text"]
    # No channel configured: both skipped, each with a log line.
    assert summary["channels"] == {"slack": "skipped", "email": "skipped"}
    assert "Slack: not configured" in dag_runs["output"]
    assert "E-mail: not configured" in dag_runs["output"]


# --- `airflow dags test`: the CLI, the real DAG file, the real client ----------------------------


@pytest.fixture
def refusing_dagster() -> Iterator[str]:
    """An HTTP endpoint that answers every GraphQL request with an error, as Dagster would when
    the code location does not hold the job."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            body = json.dumps(
                {"errors": [{"message": "Could not find location fraud_assets"}]}
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.slow
def test_airflow_dags_test_runs_the_tasks_and_notify_reports_the_failure(
    airflow_template: Path, tmp_path: Path, refusing_dagster: str
) -> None:
    home = migrated_home(airflow_template, tmp_path / "airflow")
    with webhook_receiver() as slack:
        env = airflow_env(
            home, DAGSTER_WEBSERVER_URL=refusing_dagster, FRAUD_SLACK_WEBHOOK_URL=slack.url
        )
        proc = subprocess.run(
            [str(VENV_BIN / "airflow"), "dags", "test", "weekly_retrain"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
        output = proc.stdout + proc.stderr
        # The tasks ran (no execution-API error): validate_data reached the "Dagster" server and
        # failed with its answer; notify ran after it and reported the stage.
        assert "Could not find location fraud_assets" in output, output[-6000:]
        assert "PydanticUserError" not in output and "svcs_registry" not in output
        assert "task_id=notify" in output
        assert "state=failed" in output
        text = _slack_text(slack)
    assert "FAILED AT VALIDATE_DATA" in text.upper()
    assert "validate_data: failed: DagsterError: GraphQL error from" in text


@pytest.mark.slow
def test_card_data_brings_in_the_weeks_days_then_runs_each_stage_as_that_week(
    dag_runs: dict[str, Any],
) -> None:
    run = dag_runs["cards"]
    assert run["state"] == "success", (run["task_states"], run["xcoms"], run["launches"])
    assert run["task_states"] == dict.fromkeys(TASKS, "success")
    launches = run["launches"]
    key = f"airflow:weekly_retrain:{run['run_id']}"
    # validate_data's first run: the days of the window (35 days to the week's Saturday).
    days = launches[0]
    assert days["job"] == "daily_cards_job" and days["key"] == f"{key}:validate_data:days"
    start = date.fromisoformat(days["tags"]["dagster/asset_partition_range_start"])
    end = date.fromisoformat(days["tags"]["dagster/asset_partition_range_end"])
    assert (end - start).days == 34 and end.weekday() == 5  # a Saturday, 35 days
    # The week: the newest Sunday-to-Saturday one that had ended when the run started.
    week = (end - timedelta(days=6)).isoformat()
    assert end < datetime.now(UTC).date() <= end + timedelta(days=7)
    assert [launch["assets"] for launch in launches[1:]] == [
        ["transaction_splits"],
        ["anomaly_scores", "fraud_model"],
        ["evaluation_report"],
        ["promoted_model"],
    ]
    assert [launch["key"] for launch in launches[1:]] == [f"{key}:{stage}" for stage in STAGES]
    assert all(launch["job"] == "weekly_retrain_job" for launch in launches[1:])
    assert all(launch["tags"]["dagster/partition"] == week for launch in launches[1:])
    assert run["xcoms"]["deploy_if_better.return_value"]["decision"] == "promoted"
