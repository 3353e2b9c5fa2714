"""API settings from the environment (and `.env`)."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from fraud_core.settings import DEFAULT_PREDICTION_LOG_URL, PROJECT_ROOT

MAX_BATCH = 1_000


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    #: The model store whose `production` bundle is served.
    models_dir: Path = Field(PROJECT_ROOT / "models", validation_alias="FRAUD_MODELS_DIR")
    #: A second place the store may be mounted (the image: /models, beside /app/models): used
    #: instead of `models_dir` when only it holds a production bundle, or only it is a mount point.
    models_dir_fallback: Path | None = Field(None, validation_alias="FRAUD_MODELS_DIR_FALLBACK")
    #: Serve an MLflow model instead, e.g. `models:/fraud-detector@champion` (needs MLflow access).
    model_uri: str | None = Field(None, validation_alias="FRAUD_MODEL_URI")
    mlflow_tracking_uri: str | None = Field(None, validation_alias="MLFLOW_TRACKING_URI")
    #: Seconds between checks for a newly promoted model; 0 turns the watcher off.
    reload_interval_s: float = Field(2.0, ge=0, validation_alias="FRAUD_API_RELOAD_INTERVAL_S")
    #: A bearer token `POST /admin/reload` takes besides an API key with the `admin` scope (the
    #: one credential that route had before keys); unset: only keys.
    reload_token: str | None = Field(None, validation_alias="FRAUD_API_RELOAD_TOKEN")

    # -- API keys and rate limits (fraud_core.api_keys, api.auth, api.rate_limits) --------------
    #: How often each worker reads the key table again: a revoked key is refused within it.
    api_keys_refresh_s: float = Field(
        2.0, gt=0, le=300, validation_alias="FRAUD_API_KEYS_REFRESH_S"
    )
    #: The scoring routes need a key with the `score` scope (else they are open, as /predict was).
    require_score_key: bool = Field(False, validation_alias="FRAUD_API_REQUIRE_SCORE_KEY")
    #: Requests per key (per client address without one) to the scoring routes together, as
    #: `limits` writes it ("60000/minute", "100/second;5000/hour"); `off`: none.
    rate_limit_score: str = Field("60000/minute", validation_alias="FRAUD_API_RATE_LIMIT_SCORE")
    #: Requests per key to POST /feedback; `off`: none.
    rate_limit_feedback: str = Field(
        "6000/minute", validation_alias="FRAUD_API_RATE_LIMIT_FEEDBACK"
    )
    #: Where the counts live: `memory://` (each worker its own), `redis://host:port/db` (shared by
    #: workers and replicas). Default: the Redis of FRAUD_FEATURE_STATE when it is one, else memory.
    rate_limit_storage: str | None = Field(None, validation_alias="FRAUD_API_RATE_LIMIT_STORAGE")
    max_batch: int = Field(MAX_BATCH, ge=1, validation_alias="FRAUD_API_MAX_BATCH")
    #: Request bodies above this size are refused with 413 before they are parsed.
    max_body_bytes: int = Field(2_000_000, ge=1_000, validation_alias="FRAUD_API_MAX_BODY_BYTES")
    explain_top: int = Field(5, ge=1, le=30, validation_alias="FRAUD_API_EXPLAIN_TOP")

    # -- the prediction log (fraud_core.prediction_log) ----------------------------------------
    #: SQLAlchemy URL (`sqlite:///…`, `postgresql://…`); `off` or empty: predictions not logged.
    prediction_log_url: str = Field(
        DEFAULT_PREDICTION_LOG_URL, validation_alias="FRAUD_PREDICTION_LOG_URL"
    )
    #: Rows waiting to be written; beyond it new rows are dropped (and counted), never waited on.
    prediction_log_queue_size: int = Field(
        20_000, ge=1, validation_alias="FRAUD_PREDICTION_LOG_QUEUE_SIZE"
    )
    prediction_log_batch_size: int = Field(
        500, ge=1, validation_alias="FRAUD_PREDICTION_LOG_BATCH_SIZE"
    )
    #: How often the log's writer wakes (sooner when a batch is full): the longest a row waits.
    prediction_log_flush_interval_s: float = Field(
        0.2, gt=0, validation_alias="FRAUD_PREDICTION_LOG_FLUSH_INTERVAL_S"
    )
    #: On shutdown, how long to keep trying to write what is queued (the database being down).
    prediction_log_shutdown_timeout_s: float = Field(
        10.0, ge=0, validation_alias="FRAUD_PREDICTION_LOG_SHUTDOWN_TIMEOUT_S"
    )

    # -- the online feature state of the card contract (fraud_core.cards.state) ---------------
    #: Unset or `memory`: in this process; `redis://host:port/db`: shared by workers and replicas.
    feature_state_url: str | None = Field(None, validation_alias="FRAUD_FEATURE_STATE")
    #: Every Redis key of the state starts with this (several deployments can share a server).
    feature_state_prefix: str = Field(
        "fraud", min_length=1, max_length=100, validation_alias="FRAUD_FEATURE_STATE_PREFIX"
    )
    #: The in-process state's snapshot, written at shutdown and read at start-up (then the
    #: prediction log's newer card predictions are replayed); `off`: none. Default:
    #: `<models dir>/feature_state/snapshot.parquet`, beside the bundles it was built from.
    feature_state_snapshot: str | None = Field(
        None, validation_alias="FRAUD_FEATURE_STATE_SNAPSHOT"
    )

    @model_validator(mode="after")
    def _follow_the_mount(self) -> Settings:
        self.models_dir = resolve_models_dir(self.models_dir, self.models_dir_fallback)
        return self

    @property
    def snapshot_path(self) -> Path | None:
        """Where the in-process feature state is snapshotted; None when snapshots are off."""
        value = (self.feature_state_snapshot or "").strip()
        if value.lower() == "off":
            return None
        return Path(value) if value else self.models_dir / "feature_state" / "snapshot.parquet"


def resolve_models_dir(primary: Path, fallback: Path | None) -> Path:
    """Where the store is: `primary`, unless only `fallback` has a production bundle or, with
    neither holding one yet, only `fallback` is a mount point (what the user mounted, empty so far).

    Decided once, at start: the image's default is /app/models (the original system's
    `-v ./models:/app/models`) and /models (this platform's compose files) keeps working.
    """
    if fallback is None or fallback == primary:
        return primary
    if (primary / "production").exists():
        return primary
    if (fallback / "production").exists():
        return fallback
    if os.path.ismount(fallback) and not os.path.ismount(primary):
        return fallback
    return primary
