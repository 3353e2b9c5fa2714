"""Platform settings from the environment (and `.env`), with embedded defaults.

Every variable is listed in `.env.example` and the README. Defaults need no server: data under
`data/raw`, bundles under `models/`, MLflow in `mlflow.db`, all in the project directory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parents[1]
#: Where the API logs its predictions and the labels sent back (`fraud_core.prediction_log`).
DEFAULT_PREDICTION_LOG_URL = f"sqlite:///{PROJECT_ROOT / 'predictions.db'}"


class PlatformSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    data_dir: Path = Field(PROJECT_ROOT / "data" / "raw", validation_alias="FRAUD_DATA_DIR")
    models_dir: Path = Field(PROJECT_ROOT / "models", validation_alias="FRAUD_MODELS_DIR")
    mlflow_tracking_uri: str = Field(
        f"sqlite:///{PROJECT_ROOT / 'mlflow.db'}", validation_alias="MLFLOW_TRACKING_URI"
    )
    #: Where runs store artifacts when tracking is local (a server decides for itself).
    mlflow_artifact_root: Path = Field(
        PROJECT_ROOT / "mlartifacts", validation_alias="FRAUD_MLFLOW_ARTIFACT_ROOT"
    )
    mlflow_experiment: str = Field("fraud-detection", validation_alias="FRAUD_MLFLOW_EXPERIMENT")
    registered_model: str = Field("fraud-detector", validation_alias="FRAUD_REGISTERED_MODEL")
    #: The MLflow UI that links in Dagster metadata point to.
    mlflow_ui_url: str = Field(
        "http://127.0.0.1:5000",
        validation_alias=AliasChoices("FRAUD_MLFLOW_UI_URL", "MLFLOW_UI_URL"),
    )
    #: The prediction log the API writes and training reads labels from; `off` (or empty): none.
    prediction_log_url: str = Field(
        DEFAULT_PREDICTION_LOG_URL, validation_alias="FRAUD_PREDICTION_LOG_URL"
    )
    #: Optuna storage of the tuning studies (`sqlite:///...` or a PostgreSQL URL); unset, the
    #: training asset keeps them in `<models_dir>/tuning/optuna.db`.
    optuna_storage: str | None = Field(None, validation_alias="FRAUD_OPTUNA_STORAGE")
    #: Where the assets' Parquet and JSON go: a folder or `s3://bucket/prefix` (the endpoint and
    #: credentials from AWS_*); unset, `$DAGSTER_HOME/storage`.
    storage_root: str | None = Field(None, validation_alias="FRAUD_STORAGE_ROOT")
    #: The Dask scheduler of the heavy steps (`tcp://host:8786`); unset, one machine.
    dask_address: str | None = Field(None, validation_alias="FRAUD_DASK_ADDRESS")
    #: Card contract: the days of features each week's model is cut from (train, the label
    #: delay, validation, the delay again, test), ending with the newest day of its week.
    training_window_days: int = Field(
        28, ge=1, le=3660, validation_alias="FRAUD_TRAINING_WINDOW_DAYS"
    )
    synthetic_seed: int = Field(42, validation_alias="FRAUD_SYNTHETIC_SEED")
    synthetic_rows: int = Field(284_807, validation_alias="FRAUD_SYNTHETIC_ROWS")
    synthetic_fraud_rate: float = Field(
        492 / 284_807, validation_alias="FRAUD_SYNTHETIC_FRAUD_RATE"
    )
    #: Which data contract: "auto" (by the files' columns; no file: the Kaggle synthetic set),
    #: "kaggle" or "cards" (`fraud_core.data.load_transactions`).
    data_contract: Literal["auto", "kaggle", "cards"] = Field(
        "auto", validation_alias="FRAUD_DATA_CONTRACT"
    )
    #: The synthetic card transactions (the Handbook's simulator; its full size by default).
    cards_customers: int = Field(5000, ge=3, validation_alias="FRAUD_CARDS_CUSTOMERS")
    cards_terminals: int = Field(10_000, ge=2, validation_alias="FRAUD_CARDS_TERMINALS")
    cards_days: int = Field(183, ge=1, validation_alias="FRAUD_CARDS_DAYS")
    cards_seed: int = Field(42, validation_alias="FRAUD_CARDS_SEED")

    def storage(self) -> str:
        """The assets' storage root: FRAUD_STORAGE_ROOT, else `$DAGSTER_HOME/storage`."""
        if self.storage_root:
            return self.storage_root
        home = os.environ.get("DAGSTER_HOME") or PROJECT_ROOT / ".dagster_home"
        return str(Path(home) / "storage")

    @field_validator("data_contract", mode="before")
    @classmethod
    def _contract_name(cls, value: object) -> object:
        # " Cards " in a .env file means cards; anything else is refused with the three choices.
        return value.strip().lower() if isinstance(value, str) else value
