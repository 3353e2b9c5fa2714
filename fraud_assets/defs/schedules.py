"""Schedules: Sundays at 02:00, stopped by default because Airflow's `weekly_retrain` owns it."""

import dagster as dg

from fraud_assets.defs import constants
from fraud_assets.defs.jobs import weekly_retrain_job

weekly_retrain_schedule = dg.ScheduleDefinition(
    name="weekly_retrain_schedule",
    job=weekly_retrain_job,
    cron_schedule=constants.WEEKLY_CRON,
    execution_timezone=constants.SCHEDULE_TIMEZONE,
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Start this only where Airflow does not trigger the retrain.",
)
