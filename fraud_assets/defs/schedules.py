"""Schedules (stopped by default): the weekly retrain, which Airflow owns, and the daily drift."""

import dagster as dg

from fraud_assets.defs import constants
from fraud_assets.defs.jobs import drift_job, weekly_retrain_job

weekly_retrain_schedule = dg.ScheduleDefinition(
    name="weekly_retrain_schedule",
    job=weekly_retrain_job,
    cron_schedule=constants.WEEKLY_CRON,
    execution_timezone=constants.SCHEDULE_TIMEZONE,
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Start this only where Airflow does not trigger the retrain.",
)

drift_schedule = dg.ScheduleDefinition(
    name="drift_schedule",
    job=drift_job,
    cron_schedule=constants.DRIFT_CRON,
    execution_timezone=constants.SCHEDULE_TIMEZONE,
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Daily drift of the served inputs; start it once the API takes traffic.",
)
