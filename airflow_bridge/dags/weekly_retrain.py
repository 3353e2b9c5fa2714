"""
# weekly_retrain

The original system's weekly orchestration contract, every **Sunday at 02:00** (in
`FRAUD_AIRFLOW_TIMEZONE`, default UTC). Airflow keeps the schedule and the stages; **Dagster does
the work**: each stage launches its asset selection of the Dagster job `weekly_retrain_job`
through the Dagster webserver's GraphQL API and follows it. Airflow never imports Dagster.

| task | Dagster assets (their checks run with them) |
| --- | --- |
| `validate_data` | `labelled_transactions`, `raw_transactions`, `transaction_splits` |
| `train` | `anomaly_scores`, `fraud_model` (logged to MLflow) |
| `evaluate_and_compare` | `evaluation_report`: test-split metrics, quality-floor check |
| `deploy_if_better` | `promoted_model`: beats production on the same rows? then published |
| `notify` | always runs: Slack and e-mail say what ran, the decision, the metrics and the links |

**Card data.** There `weekly_retrain_job` is partitioned by week: every stage runs as the
partition of the newest week that had ended when the run's data interval did (Sunday 02:00 UTC
trains the Sunday-to-Saturday week just over), and `validate_data` first materializes that
week's window of days (`FRAUD_TRAINING_WINDOW_DAYS`, one `daily_cards_job` run: the labels sent
back, `card_transactions`, `card_features`) so its features are complete and late labels count;
its own run is then the week's `transaction_splits`.

**What the states mean.** A failed blocking check fails its stage with
`blocked by check_...: <reason>`; the later stages are `upstream_failed`. "Kept production" is a
*success*: the decision is in the `deploy_if_better` XCom and in the message. `notify` fails the
run (after sending) whenever a stage did not succeed, so the run's state is the pipeline's.

**Waiting without holding a worker.** Each stage is deferrable: its task launches the Dagster
run (or finds it again) and hands it to Airflow's **triggerer**, which polls the run's status
every `FRAUD_AIRFLOW_POLL_INTERVAL_S` seconds (default 5) with no worker slot held; the task
resumes within a poll of the run's end and reports it, so a stage's duration is its run's. A
stage fails after `FRAUD_AIRFLOW_STAGE_TIMEOUT_S`, or after `FRAUD_AIRFLOW_QUEUED_TIMEOUT_S` if
its run never leaves Dagster's queue (no Dagster daemon running). The triggerer must run beside
the scheduler (`airflow triggerer`; `make stack` and the compose files start it).

**Idempotent.** The Dagster run of a stage carries the key `airflow:<dag_id>:<run_id>:<task_id>`
(no try number): a retry after an error reaching Dagster follows the run already
launched instead of starting a second one. A stage whose Dagster run failed (or was blocked by a
check) fails at once, without automatic retries; clearing the task in the UI launches a new
Dagster run, since a failed run is never reused.

**Configuration** (environment of the dag-processor and workers, see `.env.example`; the
triggerer needs only airflow_bridge on its path): the Dagster
webserver from the Airflow connection `dagster_default` if it exists
(`AIRFLOW_CONN_DAGSTER_DEFAULT='http://127.0.0.1:3000?location=fraud_assets'`), else
`DAGSTER_WEBSERVER_URL` and `DAGSTER_CODE_LOCATION`; Slack from `FRAUD_SLACK_WEBHOOK_URL` or the
connection `slack_webhook_default`; e-mail from `FRAUD_SMTP_*` or the connection `smtp_default`
(recipients `FRAUD_SMTP_TO`). An unconfigured channel is skipped with a log line.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import CronTriggerTimetable, TriggerRule, dag, get_current_context, task
from airflow.sdk.configuration import conf
from airflow.sdk.exceptions import AirflowFailException

import fraud_notify as notify
from airflow_bridge import config, connections, message, pipeline
from airflow_bridge.stage_operator import DagsterStageOperator, connection

SETTINGS = config.BridgeSettings()


def _stage_task(stage: pipeline.Stage) -> DagsterStageOperator:
    """A deferrable task that runs one stage in Dagster and keeps its outcome in XCom."""
    return DagsterStageOperator(
        stage=stage,
        poll_interval_s=SETTINGS.poll_interval_s,
        stage_timeout_s=SETTINGS.stage_timeout_s,
        queued_timeout_s=SETTINGS.queued_timeout_s,
    )


@task(task_id="notify", trigger_rule=TriggerRule.ALL_DONE, retries=0, multiple_outputs=False)
def notify_team() -> dict[str, Any]:
    """Tell the team what ran and what was decided; fails the run if a stage did not succeed."""
    context = get_current_context()
    ti = context["ti"]
    stage_ids = [stage.task_id for stage in pipeline.STAGES]
    outcomes = pipeline.outcomes_from_xcom([ti.xcom_pull(task_ids=sid) for sid in stage_ids])
    states = pipeline.task_states(
        ti.get_task_states(dag_id=ti.dag_id, task_ids=stage_ids, run_ids=[ti.run_id]), ti.run_id
    )
    msg = message.build_message(
        outcomes,
        states,
        dag_id=ti.dag_id,
        run_id=ti.run_id,
        airflow_run_url=config.airflow_run_url(
            conf.get("api", "base_url", fallback="http://localhost:8080/"), ti.dag_id, ti.run_id
        ),
    )
    results = notify.deliver(msg, _slack(), _smtp())
    summary = {
        "decision": msg.decision,
        "succeeded": msg.succeeded,
        "subject": msg.subject,
        "text": msg.text,
        "channels": {r.channel: r.status for r in results},
    }
    if not msg.succeeded:
        ti.xcom_push("return_value", summary)
        raise AirflowFailException(f"weekly_retrain {msg.decision} (the team was notified)")
    return summary


def _slack() -> notify.SlackConfig | None:
    settings = notify.NotifySettings()
    if settings.slack_webhook_url:
        return notify.slack_from_settings(settings)
    conn = connection("slack_webhook_default")
    if conn is None:
        return None
    return connections.slack_from_connection(
        host=conn.host, password=conn.password, timeout_s=settings.notify_timeout_s
    )


def _smtp() -> notify.SmtpConfig | None:
    settings = notify.NotifySettings()
    if settings.smtp_host:
        return notify.smtp_from_settings(settings)
    conn = connection("smtp_default")
    if conn is None:
        return None
    return connections.smtp_from_connection(
        host=conn.host,
        port=conn.port,
        login=conn.login,
        password=conn.password,
        extra=conn.extra_dejson,
        settings=settings,
    )


@dag(
    dag_id="weekly_retrain",
    # No start_date: switched on mid-week, the DAG waits for the next Sunday 02:00; with a past
    # start date Airflow would retrain at once for the Sunday that has passed.
    schedule=CronTriggerTimetable("0 2 * * 0", timezone=SETTINGS.tz()),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["fraud", "retrain", "dagster"],
    default_args={
        "owner": "fraud-ml",
        "retries": SETTINGS.retries,
        "retry_delay": timedelta(seconds=SETTINGS.retry_delay_s),
    },
)
def weekly_retrain() -> None:
    validate_data = _stage_task(pipeline.VALIDATE)
    train = _stage_task(pipeline.TRAIN)
    evaluate_and_compare = _stage_task(pipeline.EVALUATE)
    deploy_if_better = _stage_task(pipeline.DEPLOY)
    validate_data >> train >> evaluate_and_compare >> deploy_if_better >> notify_team()


weekly_retrain_dag = weekly_retrain()
