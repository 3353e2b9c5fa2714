"""Settings of the Airflow side, from the environment (and `.env`); no airflow import.

The DAG reads them when the dag-processor parses the file (schedule timezone, poll interval,
timeouts, retries) and again in each task. Every variable is listed in `.env.example`.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlunsplit

import pendulum
from pendulum.tz.exceptions import InvalidTimezone
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: The Dagster code location that holds `weekly_retrain_job` (see `pyproject.toml`).
DEFAULT_CODE_LOCATION = "fraud_assets"


class BridgeSettings(BaseSettings):
    """How the DAG schedules, polls and gives up; each field is `FRAUD_AIRFLOW_<NAME>`."""

    model_config = SettingsConfigDict(env_prefix="FRAUD_AIRFLOW_", env_file=".env", extra="ignore")

    #: IANA name of the zone that "Sunday 02:00" is read in.
    timezone: str = "UTC"
    #: Seconds between two status polls of a stage's Dagster run, in the triggerer: a stage
    #: ends within about this long of its run.
    poll_interval_s: float = Field(5.0, gt=0)
    #: A stage that has not finished after this many seconds fails (training included).
    stage_timeout_s: float = Field(6 * 3600.0, gt=0)
    #: A run still queued after this many seconds fails: no Dagster daemon is dequeuing runs.
    queued_timeout_s: float = Field(600.0, gt=0)
    #: Retries of a stage after an error talking to Dagster (a failed run is never retried).
    retries: int = Field(2, ge=0)
    retry_delay_s: float = Field(300.0, ge=0)
    #: Card data: the days the validate stage brings in again each week (labels sent back since
    #: go into them). The code location's FRAUD_TRAINING_WINDOW_DAYS, read under the same name.
    training_window_days: int = Field(28, ge=1, validation_alias="FRAUD_TRAINING_WINDOW_DAYS")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            pendulum.timezone(value)
        except InvalidTimezone as exc:
            raise ValueError(f"FRAUD_AIRFLOW_TIMEZONE: unknown time zone {value!r}") from exc
        return value

    def tz(self) -> pendulum.Timezone | pendulum.FixedTimezone:
        return pendulum.timezone(self.timezone)


def dagster_from_connection(
    *,
    conn_type: str | None,
    host: str | None,
    port: int | None,
    schema: str | None,
    extra: dict[str, Any],
) -> tuple[str, str]:
    """The webserver URL and code location held by an Airflow connection `dagster_default`.

    `AIRFLOW_CONN_DAGSTER_DEFAULT='http://dagster:3000?location=fraud_assets'` gives
    ("http://dagster:3000", "fraud_assets"); a host that is already a URL is used as it is.
    """
    if not host:
        raise ValueError("Airflow connection dagster_default has no host")
    if "://" in host:
        url = host.rstrip("/")
    else:
        scheme = conn_type if conn_type in ("http", "https") else "http"
        netloc = f"{host}:{port}" if port else host
        url = urlunsplit((scheme, netloc, (schema or "").strip("/"), "", "")).rstrip("/")
    return url, str(extra.get("location") or DEFAULT_CODE_LOCATION)


def airflow_run_url(base_url: str, dag_id: str, run_id: str) -> str:
    """The Airflow UI page of one DAG run (Airflow 3's layout)."""
    return f"{base_url.rstrip('/')}/dags/{dag_id}/runs/{quote(run_id, safe='')}"
