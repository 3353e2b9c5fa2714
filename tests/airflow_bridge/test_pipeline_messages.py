"""The stages' logic and the notification text, from scripted Dagster runs; no Airflow needed."""

from __future__ import annotations

import asyncio

import pytest

from airflow_bridge import config, dagster_poller, message, pipeline
from airflow_bridge.dagster_client import (
    STALE_HEARTBEAT_S,
    DagsterUnreachable,
    RunReport,
    RunState,
)
from airflow_bridge.pipeline import StageFailed, StageOutcome
from tests.airflow_bridge._airflow_env import (
    COMPARISON,
    MLFLOW_RUN,
    RUN_ID,
    Clock,
    FakeDagster,
    build,
    follow,
    outcomes_for,
    stage_report,
)

# --- Following a stage's Dagster run -------------------------------------------------------------


def test_a_stage_launches_once_and_the_trigger_follows_its_run_to_the_end() -> None:
    fake = FakeDagster(polls_to_finish=3)
    clock = Clock()
    outcome = follow(fake, pipeline.TRAIN, clock=clock, poll_s=15)
    assert outcome.state == "success"
    assert outcome.dagster_run_url == f"http://dagster.test:3000/runs/{outcome.dagster_run_id}"
    assert outcome.metadata["fraud_model"]["mlflow_run"] == MLFLOW_RUN
    # QUEUED, STARTED, STARTED, SUCCESS: one poll each, 15 s apart, and done at the last one.
    assert [run.polls for run in fake.runs] == [4]
    assert clock.now == 45
    [launch] = fake.launches
    assert launch["job"] == "weekly_retrain_job"
    assert launch["assets"] == ["anomaly_scores", "fraud_model"]
    assert launch["key"] == f"airflow:weekly_retrain:{RUN_ID}:train"
    assert launch["tags"] == {
        "airflow/dag_id": "weekly_retrain",
        "airflow/run_id": RUN_ID,
        "airflow/task_id": "train",
    }


def test_a_retry_follows_the_run_its_first_try_launched() -> None:
    fake = FakeDagster(polls_to_finish=3)
    first = pipeline.launch(fake, pipeline.EVALUATE, dag_id="weekly_retrain", run_id=RUN_ID)  # type: ignore[arg-type]
    # The worker died; the retry finds the run going instead of launching another.
    again = pipeline.launch(fake, pipeline.EVALUATE, dag_id="weekly_retrain", run_id=RUN_ID)  # type: ignore[arg-type]
    assert again == first
    assert len(fake.launches) == 1


def test_the_key_is_the_same_for_every_try() -> None:
    key = pipeline.idempotency_key("weekly_retrain", RUN_ID, "train")
    assert key == f"airflow:weekly_retrain:{RUN_ID}:train"
    assert "try" not in key


def test_a_failed_check_fails_the_stage_with_the_check_named() -> None:
    fake = FakeDagster(script={"validate_data": "blocked"})
    with pytest.raises(StageFailed) as failed:
        follow(fake, pipeline.VALIDATE)
    assert str(failed.value) == (
        "validate_data blocked by check_raw_transactions_schema: missing columns: V7, Amount"
    )
    assert failed.value.outcome.state == "blocked"
    assert failed.value.outcome.blocked_by == {
        "check": "check_raw_transactions_schema",
        "asset": "raw_transactions",
        "description": "missing columns: V7, Amount",
    }


def test_a_failed_run_is_reported_from_the_run_the_trigger_followed() -> None:
    fake = FakeDagster(script={"train": "failure"})
    with pytest.raises(StageFailed, match="train failed: step fraud_model failed: MemoryError"):
        follow(fake, pipeline.TRAIN)
    # The report is read from the followed run, not from a second launch.
    assert len(fake.launches) == 1


@pytest.mark.parametrize(
    ("daemon", "fails_at", "reason"),
    [
        # Never beat: known at once.
        ("absent", 600, "the Dagster daemon is probably not running"),
        # Beats while the run waits: queue limits hold it, known at once.
        ("alive", 600, "run queue limits (max_concurrent_runs"),
        # Stopped at time 0: its last heartbeat is fresh until STALE_HEARTBEAT_S has passed.
        ("stopped", 600, "the Dagster daemon is probably not running"),
    ],
)
def test_a_run_stuck_in_the_queue_fails_once_the_queued_budget_is_spent(
    daemon: str, fails_at: float, reason: str
) -> None:
    fake = FakeDagster(script={"train": "queued"}, daemon=daemon)
    clock = Clock()
    with pytest.raises(StageFailed, match=f"stayed QUEUED for {fails_at:.0f} s") as failed:
        follow(fake, pipeline.TRAIN, clock=clock, poll_s=15, queued_timeout_s=600)
    # Polled every 15 s until the budget, counted from the launch, was spent; not longer.
    assert clock.now == fails_at
    assert fake.runs[0].polls == fails_at / 15 + 1
    assert failed.value.outcome.dagster_run_id == "run-1"
    assert reason in str(failed.value)
    assert "http://dagster.test:3000/runs/run-1" in str(failed.value)


def test_a_short_queued_budget_waits_until_a_stopped_daemon_is_known_to_be_gone() -> None:
    """A heartbeat 20 s old proves nothing (the daemon beats every 30 s): the stage fails once
    the silence is conclusive, and blames the daemon, not queue limits."""
    fake = FakeDagster(script={"validate_data": "queued"}, daemon="stopped")
    clock = Clock()
    with pytest.raises(StageFailed, match="stayed QUEUED for 75 s") as failed:
        follow(fake, pipeline.VALIDATE, clock=clock, poll_s=1, queued_timeout_s=20)
    assert clock.now == STALE_HEARTBEAT_S == 75
    assert "the Dagster daemon is probably not running" in str(failed.value)


def test_a_short_queued_budget_blames_queue_limits_once_the_daemon_beats() -> None:
    fake = FakeDagster(script={"validate_data": "queued"}, daemon="alive")
    clock = Clock()
    with pytest.raises(StageFailed, match="stayed QUEUED for 20 s") as failed:
        follow(fake, pipeline.VALIDATE, clock=clock, poll_s=1, queued_timeout_s=20)
    assert clock.now == 20
    assert "run queue limits" in str(failed.value)


def test_a_stage_that_runs_too_long_fails_naming_the_setting() -> None:
    # Out of the queue after one poll: the short queued budget no longer applies.
    fake = FakeDagster(polls_to_finish=10_000)
    clock = Clock()
    with pytest.raises(StageFailed, match="FRAUD_AIRFLOW_STAGE_TIMEOUT_S=3600 s reached") as failed:
        follow(fake, pipeline.TRAIN, clock=clock, queued_timeout_s=30, timeout_s=3600)
    assert "is still STARTED after 3600 s" in str(failed.value)
    assert clock.now == 3600


def test_dagster_unreachable_while_waiting_is_raised_for_the_task_to_retry() -> None:
    class Unreachable:
        url = "http://dagster.test:3000"

        async def status(self, run_id: str) -> RunState:
            raise DagsterUnreachable("cannot reach the Dagster webserver at http://dagster.test")

        async def daemon_heartbeat(self) -> tuple[bool, float | None]:
            raise AssertionError("not asked")

    event = asyncio.run(
        dagster_poller.watch_run(
            Unreachable(), "run-7", started_at=0, poll_s=1, timeout_s=60, queued_timeout_s=30
        )
    )
    assert event["event"] == "error" and event["error"] == "DagsterUnreachable"
    with pytest.raises(DagsterUnreachable, match="cannot reach the Dagster webserver") as raised:
        pipeline.resolve(FakeDagster(), pipeline.TRAIN, event, stage_timeout_s=60)  # type: ignore[arg-type]
    outcome = pipeline.failure_outcome(pipeline.TRAIN, raised.value)
    assert outcome.error == (
        "DagsterUnreachable: cannot reach the Dagster webserver at http://dagster.test"
    )


def test_outcomes_keep_numbers_and_links_but_not_plots() -> None:
    outcome = pipeline.outcome_from_report(
        pipeline.EVALUATE, stage_report("evaluate_and_compare", "r1", "success")
    )
    kept = outcome.metadata["evaluation_report"]
    assert kept["average_precision"] == 0.82
    assert kept["mlflow_run"] == MLFLOW_RUN
    assert "plot_pr_curve" not in kept
    assert StageOutcome.from_xcom(outcome.as_xcom()) == outcome


def test_a_canceled_run_without_an_error_still_says_how_it_ended() -> None:
    report = RunReport("r9", "CANCELED", "http://dagster.test:3000/runs/r9")
    outcome = pipeline.outcome_from_report(pipeline.TRAIN, report)
    assert outcome.state == "failed"
    assert outcome.headline() == "failed: Dagster run ended CANCELED"


# --- The message, for each way a run can end -----------------------------------------------------


def test_promoted_message_has_the_decision_metrics_and_links() -> None:
    msg = build(outcomes_for(FakeDagster()))
    assert msg.succeeded and msg.decision == "promoted"
    assert msg.subject == f"[fraud] weekly_retrain succeeded: promoted ({RUN_ID})"
    text = msg.text
    assert text.startswith(f"weekly_retrain {RUN_ID}: PROMOTED\n")
    assert "Decision: promoted (AP 0.8200 beats 0.7900" in text
    assert "challenger vs production v20240107:" in text
    assert "average precision: 0.8200 (was 0.7900, +0.0300)" in text
    assert "ROC AUC: 0.9750 (was 0.9700, +0.0050)" in text
    assert "precision at threshold: 0.9000\n" in text
    assert "AP gain over production on the same rows: +0.0300 (bootstrap confidence 0.98)" in text
    assert "in production after this run: v20240114" in text
    assert "  deploy_if_better: success (promoted)" in text
    assert msg.links["MLflow run"] == MLFLOW_RUN
    assert msg.links["Airflow run"] == (
        "http://airflow:8080/dags/weekly_retrain/runs/scheduled__2024-01-14T02%3A00%3A00%2B00%3A00"
    )
    assert [name for name in msg.links if name.startswith("Dagster run")] == [
        f"Dagster run ({s.task_id})" for s in pipeline.STAGES
    ]


def test_kept_production_is_a_success_that_says_so() -> None:
    msg = build(outcomes_for(FakeDagster(decision="kept production")))
    assert msg.succeeded
    assert msg.decision == "kept production"
    assert "KEPT PRODUCTION" in msg.text
    assert "Decision: kept production (AP gain 0.0010 below the margin 0.0050)" in msg.text
    assert "in production after this run: v20240107" in msg.text


def test_blocked_message_names_the_check_and_the_stages_not_run() -> None:
    outcomes = outcomes_for(FakeDagster(script={"evaluate_and_compare": "blocked"}))
    msg = build(outcomes)
    assert not msg.succeeded
    assert msg.decision == "blocked by check_evaluation_report_quality_floor"
    assert msg.subject.startswith("[fraud] weekly_retrain FAILED: blocked by check_evaluation")
    assert (
        "  evaluate_and_compare: blocked by check_evaluation_report_quality_floor: "
        "missing columns: V7, Amount" in msg.text
    )
    assert "  deploy_if_better: not run (upstream_failed)" in msg.text
    # The stages that did run keep their links.
    assert "Dagster run (train)" in msg.links and "MLflow run" in msg.links
    assert "Metrics: none (the run stopped before the evaluation)" in msg.text


def test_failed_message_names_the_stage_and_the_error() -> None:
    msg = build(outcomes_for(FakeDagster(script={"train": "failure"})))
    assert msg.decision == "failed at train"
    assert "  train: failed: step fraud_model failed: MemoryError" in msg.text
    assert "Dagster run (train)" in msg.links


def test_a_task_that_died_before_reporting_is_a_failure_at_that_stage() -> None:
    outcomes = outcomes_for(FakeDagster())
    outcomes["deploy_if_better"] = None
    msg = build(outcomes, deploy_if_better="failed")
    assert not msg.succeeded
    assert msg.decision == "failed at deploy_if_better"
    assert "deploy_if_better: failed before it reported (see the task's Airflow log)" in msg.text
    # The evaluation ran: its metrics are still reported, without a production comparison.
    assert "average precision: 0.8200\n" in msg.text


def test_dagster_unreachable_is_a_failure_at_the_first_stage() -> None:
    outcomes: dict[str, StageOutcome | None] = dict.fromkeys(
        (s.task_id for s in pipeline.STAGES), None
    )
    outcomes["validate_data"] = pipeline.failure_outcome(
        pipeline.VALIDATE, ConnectionError("cannot reach the Dagster webserver")
    )
    msg = build(outcomes)
    assert msg.decision == "failed at validate_data"
    assert "validate_data: failed: ConnectionError: cannot reach the Dagster webserver" in msg.text
    assert list(msg.links) == ["Airflow run"]


def test_first_model_has_no_production_to_compare_with() -> None:
    outcomes = outcomes_for(FakeDagster())
    deploy = outcomes["deploy_if_better"]
    assert deploy is not None
    meta = deploy.metadata["promoted_model"]
    meta["comparison"] = COMPARISON.rsplit("\n", 1)[0]  # the challenger row only
    del meta["ap_gain"]
    msg = build(outcomes)
    assert "Metrics on the test split, challenger:" in msg.text
    assert "average precision: 0.8200\n" in msg.text
    assert "AP gain" not in msg.text


def test_production_figures_reads_the_comparison_table() -> None:
    name, figures = message.production_figures(COMPARISON)
    assert name == "production v20240107"
    assert figures == {
        "average_precision": 0.79,
        "roc_auc": 0.97,
        "recall_at_precision_90": 0.65,
        "threshold": 0.45,
    }
    assert message.production_figures(None) == (None, {})
    assert message.production_figures("no table") == (None, {})


def test_task_states_and_outcomes_from_what_airflow_returns() -> None:
    raw = {RUN_ID: {"validate_data": "success", "train": "failed", "notify": None}}
    assert pipeline.task_states(raw, RUN_ID) == {
        "validate_data": "success",
        "train": "failed",
        "notify": None,
    }
    outcome = StageOutcome("validate_data", "success").as_xcom()
    # xcom_pull answers [] or None for a task that pushed nothing.
    pulled = pipeline.outcomes_from_xcom([outcome, [], None, None])
    assert pulled["validate_data"] == StageOutcome("validate_data", "success")
    assert pulled["train"] is None


# --- Configuration --------------------------------------------------------------------------------


def test_bridge_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRAUD_AIRFLOW_TIMEZONE", "America/New_York")
    monkeypatch.setenv("FRAUD_AIRFLOW_POLL_INTERVAL_S", "2")
    monkeypatch.setenv("FRAUD_AIRFLOW_QUEUED_TIMEOUT_S", "20")
    settings = config.BridgeSettings()
    assert settings.tz().name == "America/New_York"
    assert settings.poll_interval_s == 2
    assert settings.queued_timeout_s == 20
    monkeypatch.setenv("FRAUD_AIRFLOW_TIMEZONE", "Nowhere/Special")
    with pytest.raises(ValueError, match="FRAUD_AIRFLOW_TIMEZONE: unknown time zone"):
        config.BridgeSettings()


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (
            {"conn_type": "http", "host": "dagster", "port": 3000, "schema": None, "extra": {}},
            ("http://dagster:3000", "fraud_assets"),
        ),
        (
            {
                "conn_type": "https",
                "host": "dagster.example.com",
                "port": None,
                "schema": "prefix",
                "extra": {"location": "fraud"},
            },
            ("https://dagster.example.com/prefix", "fraud"),
        ),
        (
            {
                "conn_type": "generic",
                "host": "http://d:3000/",
                "port": None,
                "schema": None,
                "extra": {},
            },
            ("http://d:3000", "fraud_assets"),
        ),
    ],
)
def test_dagster_from_an_airflow_connection(
    fields: dict[str, object], expected: tuple[str, str]
) -> None:
    assert config.dagster_from_connection(**fields) == expected  # type: ignore[arg-type]


def test_a_dagster_connection_without_host_is_an_error() -> None:
    with pytest.raises(ValueError, match="dagster_default has no host"):
        config.dagster_from_connection(conn_type="http", host="", port=None, schema=None, extra={})
