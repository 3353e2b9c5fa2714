"""The card contract's weeks: which partition an Airflow run trains, and bringing in its days.

Plain Python, no airflow import. The card contract's `weekly_retrain_job` is partitioned by week
and reads `daily_cards_job`'s days; an Airflow run's data interval says which week it trains,
and its validate stage first materializes that week's window of days in one run. Dagster says
what the partitions are (`DagsterClient.job_shape`): nothing here restates its calendar.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from airflow_bridge.dagster_client import DagsterClient
from airflow_bridge.dagster_results import DagsterError, JobShape
from airflow_bridge.pipeline import JOB_NAME, Stage, idempotency_key, run_tags

DAILY_JOB = "daily_cards_job"
#: Dagster's run tags of a range of partitions in one run.
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def week_of(shape: JobShape, interval_end: datetime) -> str | None:
    """The partition an Airflow run trains: the newest week that has ended by the end of the
    run's data interval (Sunday 02:00 UTC trains the week that ended at midnight; a run in
    another time zone or mid-week, the last whole week). None: an unpartitioned job.

    A week ends where the next partition starts, so the week under way (the last key) is never
    chosen: its days are not all there yet.
    """
    if not shape.partition_keys:
        return None
    moment = interval_end.astimezone(UTC).date().isoformat()
    keys = shape.partition_keys
    ended = [keys[i] for i in range(len(keys) - 1) if keys[i + 1] <= moment]
    if not ended:
        raise DagsterError(f"{JOB_NAME} has no week that ended by {moment} (its first {keys[0]})")
    return ended[-1]


def window_days_of(week: str, daily: JobShape, window_days: int) -> tuple[str, str]:
    """The days `launch_days` brings in for `week`: its window (the `window_days` up to the
    week's last day, at least the week), those `daily_cards_job` has partitions for."""
    last = date.fromisoformat(week) + timedelta(days=6)
    days = {(last - timedelta(days=n)).isoformat() for n in range(max(window_days, 7))}
    present = sorted(days & set(daily.partition_keys))
    if not present:
        raise DagsterError(f"{DAILY_JOB} has no partition for a day of the week {week}")
    return present[0], present[-1]


def launch_days(
    client: DagsterClient,
    stage: Stage,
    week: str,
    *,
    dag_id: str,
    run_id: str,
    window_days: int,
) -> str:
    """The days of `week`'s window, one `daily_cards_job` run: the labels sent back since they
    were last brought in go into their transactions' days, and the week's own days arrive.

    The days that their features' windows reach before that are earlier runs' (or the first
    backfill's, `make materialize`); `card_features` names any that is missing.
    """
    first, last = window_days_of(week, client.job_shape(DAILY_JOB), window_days)
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
