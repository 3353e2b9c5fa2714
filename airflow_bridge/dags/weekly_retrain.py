"""
# weekly_retrain

The original system's weekly orchestration contract, every **Sunday at 02:00** (in
`FRAUD_AIRFLOW_TIMEZONE`, default UTC). Airflow keeps the schedule and the stages; **Dagster does
the work**: each stage launches its asset selection of the Dagster job `weekly_retrain_job`
through the Dagster webserver's GraphQL API and follows it. Airflow never imports Dagster.

| task | Dagster assets (their checks run with them) |
| --- | --- |
| `validate_data` | `raw_transactions`, `transaction_splits`: schema, labels, frauds per split |
| `train` | `anomaly_scores`, `fraud_model` (logged to MLflow) |
| `evaluate_and_compare` | `evaluation_report`: test-split metrics, quality-floor check |
| `deploy_if_better` | `promoted_model`: beats production on the same rows? then published |
| `notify` | always runs: Slack and e-mail say what ran, the decision, the metrics and the links |

**What the states mean.** A failed blocking check fails its stage with
`blocked by check_...: <reason>`; the later stages are `upstream_failed`. "Kept production" is a
*success*: the decision is in the `deploy_if_better` XCom and in the message. `notify` fails the
run (after sending) whenever a stage did not succeed, so the run's state is the pipeline's.

**Waiting without holding a worker.** Each stage is a sensor in *reschedule* mode: one poke
launches the Dagster run (or finds it again), follows it for `FRAUD_AIRFLOW_POKE_WAIT_S` seconds
and, if it is still running, gives its worker slot back for `FRAUD_AIRFLOW_POKE_INTERVAL_S`.
A stage fails after `FRAUD_AIRFLOW_STAGE_TIMEOUT_S`, or after `FRAUD_AIRFLOW_QUEUED_TIMEOUT_S`
if its run never leaves Dagster's queue (no Dagster daemon running). Why a sensor and not a
deferrable operator: it frees the slot just as well for a stage that takes minutes to hours, works
with the plain HTTP client, and needs no triggerer process running beside the scheduler.

**Idempotent.** The Dagster run of a stage carries the key `airflow:<dag_id>:<run_id>:<task_id>`
(no try number): every poke, and a retry after an error reaching Dagster, follows the run already
launched instead of starting a second one. A stage whose Dagster run failed (or was blocked by a
check) fails at once, without automatic retries; clearing the task in the UI launches a new
Dagster run, since a failed run is never reused.

**Configuration** (environment of the dag-processor and workers, see `.env.example`): the Dagster
webserver from the Airflow connection `dagster_default` if it exists
(`AIRFLOW_CONN_DAGSTER_DEFAULT='http://127.0.0.1:3000?location=fraud_assets'`), else
`DAGSTER_WEBSERVER_URL` and `DAGSTER_CODE_LOCATION`; Slack from `FRAUD_SLACK_WEBHOOK_URL` or the
connection `slack_webhook_default`; e-mail from `FRAUD_SMTP_*` or the connection `smtp_default`
(recipients `FRAUD_SMTP_TO`). An unconfigured channel is skipped with a log line.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import (
    Connection,
    CronTriggerTimetable,
    PokeReturnValue,
    TriggerRule,
    dag,
    get_current_context,
    task,
)
from airflow.sdk.configuration import conf
from airflow.sdk.exceptions import AirflowFailException, AirflowNotFoundException

import fraud_notify as notify
from airflow_bridge import config, connections, message, pipeline
from airflow_bridge.dagster_client import DagsterClient, DagsterError

SETTINGS = config.BridgeSettings()


def _connection(conn_id: str) -> Connection | None:
    try:
        return Connection.get(conn_id)
    except AirflowNotFoundException:
        return None


def _dagster_client() -> DagsterClient:
    """The connection `dagster_default` when there is one, else the environment."""
    conn = _connection("dagster_default")
    if conn is None:
        return DagsterClient.from_env()
    url, location = config.dagster_from_connection(
        conn_type=conn.conn_type,
        host=conn.host,
        port=conn.port,
        schema=conn.schema,
        extra=conn.extra_dejson,
    )
    return DagsterClient(url, location=location)


def _stage_task(stage: pipeline.Stage) -> Any:
    """A reschedule-mode sensor that runs one stage in Dagster and keeps its outcome in XCom."""

    @task.sensor(
        task_id=stage.task_id,
        doc_md=stage.summary,
        mode="reschedule",
        poke_interval=SETTINGS.poke_interval_s,
        # A backstop: `follow` fails the stage with its own message at stage_timeout_s.
        timeout=SETTINGS.stage_timeout_s + SETTINGS.poke_interval_s + SETTINGS.poke_wait_s,
    )
    def run_stage() -> PokeReturnValue:
        context = get_current_context()
        ti = context["ti"]
        # Reschedules are counted per try: 0 means the first poke of this try.
        first_poke = context.get("task_reschedule_count", 0) == 0
        started = None if first_poke else ti.get_first_reschedule_date(context)
        elapsed_s = (datetime.now(UTC) - started).total_seconds() if started else 0.0
        try:
            with _dagster_client() as client:
                outcome = pipeline.follow(
                    client,
                    stage,
                    dag_id=ti.dag_id,
                    run_id=ti.run_id,
                    first_poke=first_poke,
                    elapsed_s=elapsed_s,
                    wait_s=SETTINGS.poke_wait_s,
                    queued_timeout_s=SETTINGS.queued_timeout_s,
                    stage_timeout_s=SETTINGS.stage_timeout_s,
                )
        except pipeline.StageFailed as exc:
            ti.xcom_push("return_value", exc.outcome.as_xcom())
            raise AirflowFailException(str(exc)) from exc
        except DagsterError as exc:
            # Retried (Dagster may be back); the next try clears this and follows the same run.
            ti.xcom_push("return_value", pipeline.failure_outcome(stage, exc).as_xcom())
            raise
        if outcome is None:
            return PokeReturnValue(is_done=False)
        return PokeReturnValue(is_done=True, xcom_value=outcome.as_xcom())

    return run_stage


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
    conn = _connection("slack_webhook_default")
    if conn is None:
        return None
    return connections.slack_from_connection(
        host=conn.host, password=conn.password, timeout_s=settings.notify_timeout_s
    )


def _smtp() -> notify.SmtpConfig | None:
    settings = notify.NotifySettings()
    if settings.smtp_host:
        return notify.smtp_from_settings(settings)
    conn = _connection("smtp_default")
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
    validate_data = _stage_task(pipeline.VALIDATE)()
    train = _stage_task(pipeline.TRAIN)()
    evaluate_and_compare = _stage_task(pipeline.EVALUATE)()
    deploy_if_better = _stage_task(pipeline.DEPLOY)()
    validate_data >> train >> evaluate_and_compare >> deploy_if_better >> notify_team()


weekly_retrain_dag = weekly_retrain()
