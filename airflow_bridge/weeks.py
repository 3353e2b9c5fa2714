"""The card contract's weeks: which partition an Airflow run trains, and bringing in its days.

Plain Python, no airflow import. The card contract's `weekly_retrain_job` is partitioned by week
and reads `daily_cards_job`'s days; an Airflow run's data interval says which week it trains,
and its validate stage first materializes that week's days in one run. Dagster says what the
partitions are (`DagsterClient.job_shape`): nothing here restates its calendar.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

from airflow_bridge.dagster_client import DagsterClient
from airflow_bridge.dagster_results import DagsterError, JobShape
from airflow_bridge.pipeline import JOB_NAME, Stage, idempotency_key, run_tags

DAILY_JOB = "daily_cards_job"
#: Dagster's run tags of a range of partitions in one run.
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def week_of(shape: JobShape, interval_end: datetime) -> str | None:
    """The partition an Airflow run trains: the newest that starts before its data interval's
    last day (Sunday 02:00 trains the week that ended at midnight). None: an unpartitioned job.
    """
    if not shape.partition_keys:
        return None
    last_day = (interval_end - timedelta(days=1)).date().isoformat()
    started = [key for key in shape.partition_keys if key <= last_day]
    if not started:
        raise DagsterError(
            f"{JOB_NAME} has no partition starting by {last_day} (its first is "
            f"{shape.partition_keys[0]})"
        )
    return started[-1]


def week_days(week: str, daily: JobShape) -> tuple[str, str]:
    """The days of `week` that `daily_cards_job` has partitions for: (first, last)."""
    first = date.fromisoformat(week)
    days = {(first + timedelta(days=n)).isoformat() for n in range(7)}
    present = sorted(days & set(daily.partition_keys))
    if not present:
        raise DagsterError(f"{DAILY_JOB} has no partition for a day of the week {week}")
    return present[0], present[-1]


def launch_days(client: DagsterClient, stage: Stage, week: str, *, dag_id: str, run_id: str) -> str:
    """The card contract's days of `week`, one `daily_cards_job` run (with the labels sent back).

    The days before the week are earlier weeks' (or the first backfill's, `make materialize`);
    the weekly splits name any day of their window that is missing.
    """
    first, last = week_days(week, client.job_shape(DAILY_JOB))
    tags = {
        **run_tags(dag_id, run_id, stage.task_id),
        RANGE_START_TAG: first,
        RANGE_END_TAG: last,
    }
    return client.launch_or_find(
        DAILY_JOB,
        idempotency_key=idempotency_key(dag_id, run_id, stage.task_id) + ":days",
        tags=tags,
    )
