"""The operator of one weekly-retrain stage: launch its Dagster run, wait in the triggerer, report.

`execute` launches the stage's run (or finds the one this task launched before) and defers to a
`DagsterRunTrigger`: the worker slot is free while Dagster works, and the task resumes within a
poll interval of the run's end, in `execute_complete`, which stores the `StageOutcome` in XCom
(its return value) or fails with the outcome's headline. Airflow keeps the task's start date
across the deferral, so its duration is the stage's. On card data (a job partitioned by week)
the validate stage first brings in its week's days (`weeks.launch_days`) and defers for that
run; `days_complete` then launches the stage's own run, of that week.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import BaseOperator, Connection
from airflow.sdk.exceptions import AirflowFailException, AirflowNotFoundException

from airflow_bridge import config, pipeline, weeks
from airflow_bridge.dagster_client import DagsterClient
from airflow_bridge.dagster_results import DagsterError, JobShape
from airflow_bridge.triggers import DagsterRunTrigger

#: Airflow's own backstop past the stage limit, should the trigger never fire (triggerer down).
_DEFER_MARGIN_S = 300.0


def connection(conn_id: str) -> Connection | None:
    try:
        conn: Connection = Connection.get(conn_id)
    except AirflowNotFoundException:
        return None
    return conn


def dagster_client() -> DagsterClient:
    """The connection `dagster_default` when there is one, else the environment."""
    conn = connection("dagster_default")
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


def _interval_end(context: Any) -> datetime:
    """The end of the run's data interval; a run without one (a manual trigger), its run_after:
    the same on every try of the task."""
    end = context.get("data_interval_end")
    if end is None:
        end = getattr(context.get("dag_run"), "run_after", None)
    return end if end is not None else datetime.now(UTC)


class DagsterStageOperator(BaseOperator):
    """Runs one `pipeline.Stage` as a Dagster run and keeps its outcome in XCom (deferrable)."""

    ui_color = "#e8f0fe"

    def __init__(
        self,
        *,
        stage: pipeline.Stage,
        poll_interval_s: float,
        stage_timeout_s: float,
        queued_timeout_s: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(task_id=stage.task_id, doc_md=stage.summary, **kwargs)
        self.stage = stage
        self.poll_interval_s = poll_interval_s
        self.stage_timeout_s = stage_timeout_s
        self.queued_timeout_s = queued_timeout_s

    def execute(self, context: Any) -> None:
        ti = context["ti"]
        started_at = time.time()
        try:
            with dagster_client() as client:
                shape = client.job_shape(pipeline.JOB_NAME)
                # From the run's data interval (or run_after): the same on every try and in
                # days_complete, whatever the clock says by then.
                week = weeks.week_of(shape, _interval_end(context))
                if week is not None and self.stage.brings_days:
                    run_id = weeks.launch_days(
                        client,
                        self.stage,
                        week,
                        dag_id=ti.dag_id,
                        run_id=ti.run_id,
                        # The worker's FRAUD_TRAINING_WINDOW_DAYS, as the code location reads it.
                        window_days=config.BridgeSettings().training_window_days,
                    )
                    method = "days_complete"
                else:
                    run_id = self._launch(client, ti, shape, week)
                    method = "execute_complete"
                url = client.url
        except DagsterError as exc:
            self._keep_failure(ti, exc)
            raise  # retried: Dagster may be back, and the retry finds the run if it was launched
        self._follow(run_id, url, started_at, method)

    def days_complete(self, context: Any, event: dict[str, Any]) -> None:
        """The week's days are in (the card contract): now the stage's own run, of that week."""
        ti = context["ti"]
        with self._reported(ti), dagster_client() as client:
            days = pipeline.resolve(client, self.stage, event, stage_timeout_s=self.stage_timeout_s)
            shape = client.job_shape(pipeline.JOB_NAME)
            week = weeks.week_of(shape, _interval_end(context))
            self.log.info("the days of week %s are in: run %s", week, days.dagster_run_id)
            run_id = self._launch(client, ti, shape, week)
            url = client.url
        self._follow(run_id, url, time.time(), "execute_complete")

    def _launch(self, client: DagsterClient, ti: Any, shape: JobShape, week: str | None) -> str:
        """The stage's own run: its assets the job holds, of `week` where the job has weeks."""
        return pipeline.launch(
            client, self.stage, dag_id=ti.dag_id, run_id=ti.run_id, shape=shape, partition_key=week
        )

    def _follow(self, run_id: str, url: str, started_at: float, method: str) -> None:
        self.log.info("following Dagster run %s in the triggerer: %s/runs/%s", run_id, url, run_id)
        self.defer(
            trigger=DagsterRunTrigger(
                url=url,
                run_id=run_id,
                started_at=started_at,
                poll_s=self.poll_interval_s,
                timeout_s=self.stage_timeout_s,
                queued_timeout_s=self.queued_timeout_s,
            ),
            method_name=method,
            timeout=timedelta(seconds=self.stage_timeout_s + _DEFER_MARGIN_S),
        )

    def execute_complete(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        """The task again, on a worker, once the trigger fired: the outcome, or the failure."""
        with self._reported(context["ti"]), dagster_client() as client:
            outcome = pipeline.resolve(
                client, self.stage, event, stage_timeout_s=self.stage_timeout_s
            )
        return outcome.as_xcom()

    @contextmanager
    def _reported(self, ti: Any) -> Iterator[None]:
        """A resumed task's failures: a finished run that failed is the stage's outcome (in XCom,
        no retry); Dagster out of reach is kept and raised again for the task's retries."""
        try:
            yield
        except pipeline.StageFailed as exc:
            ti.xcom_push("return_value", exc.outcome.as_xcom())
            raise AirflowFailException(str(exc)) from exc
        except DagsterError as exc:
            self._keep_failure(ti, exc)
            raise

    def _keep_failure(self, ti: Any, exc: DagsterError) -> None:
        # The next try clears this and follows the same run.
        ti.xcom_push("return_value", pipeline.failure_outcome(self.stage, exc).as_xcom())
