"""MLflow tracking and registry helpers (no Dagster): runs, the pyfunc model, alias `champion`.

The model is logged as an MLflow pyfunc that wraps the same bundle the API serves, so
`mlflow models serve` and `models:/<name>@champion` give the same probabilities. MLflow 3's default
skops serialisation cannot save an imbalanced-learn pipeline holding XGBoost; the bundle does not
need it: SMOTE is training-time only, XGBoost keeps its own format.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import httpx
import mlflow
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature, infer_signature
from mlflow.tracking import MlflowClient
from mlflow.types.schema import AnyType, ColSpec, Schema

from fraud_core.bundle import FraudModel, load_bundle, save_bundle
from fraud_core.contracts import KAGGLE
from fraud_core.schema import FEATURE_COLUMNS, scoring_matrix

CHAMPION = "champion"
#: Seconds to wait for a tracking server's /health before a training run gives up on it.
SERVER_CHECK_TIMEOUT_S = 5.0


class TrackingServerUnavailable(RuntimeError):
    """The MLflow tracking server does not answer; the message names it."""


def check_server(tracking_uri: str, timeout_s: float = SERVER_CHECK_TIMEOUT_S) -> None:
    """Fail at once, naming the server, when an HTTP tracking server does not answer `/health`.

    Without this a training run against a stopped server would only fail after MLflow's own
    retries (7, with exponential backoff: minutes), and after the model had been trained.
    """
    if is_local(tracking_uri) or tracking_uri.startswith("databricks"):
        return
    url = f"{tracking_uri.rstrip('/')}/health"
    hint = "start it (`make stack`, or `mlflow server`) or point MLFLOW_TRACKING_URI elsewhere"
    try:
        response = httpx.get(url, timeout=timeout_s)
    except httpx.HTTPError as exc:
        raise TrackingServerUnavailable(
            f"MLflow tracking server {tracking_uri} is unreachable "
            f"({type(exc).__name__}: {exc}): {hint}"
        ) from exc
    if response.status_code != 200:
        raise TrackingServerUnavailable(
            f"MLflow tracking server {tracking_uri} answered {response.status_code} on /health: "
            f"{hint}"
        )


def is_local(tracking_uri: str) -> bool:
    return not tracking_uri.startswith(("http://", "https://", "databricks"))


def client(tracking_uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def ensure_experiment(
    mlflow_client: MlflowClient, name: str, artifact_root: Path | None = None
) -> str:
    """The experiment's id, creating it (with local artifacts under `artifact_root`) if needed."""
    experiment = mlflow_client.get_experiment_by_name(name)
    if experiment is not None:
        return str(experiment.experiment_id)
    location = artifact_root.resolve().as_uri() + f"/{name}" if artifact_root else None
    return str(mlflow_client.create_experiment(name, artifact_location=location))


def run_url(ui_url: str, experiment_id: str, run_id: str) -> str:
    return f"{ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


class FraudPyfunc(mlflow.pyfunc.PythonModel):  # type: ignore[name-defined]
    """MLflow pyfunc over a bundle: a frame of the model's input fields in, probabilities out.

    The input fields are the 30 raw fields (Kaggle), or the behavioural features (cards), which a
    caller computes with `fraud_core.cards.features` (the API computes them from its state).
    """

    def load_context(self, context: Any) -> None:
        self.model = load_bundle(context.artifacts["bundle"], verify=True)

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> np.ndarray:
        # The signature lets any column type through (see `signature`): the schema's own checks
        # name the column and the rows of a text, missing or out-of-range value here.
        if self.model.contract == KAGGLE:
            return self.model.predict_proba(scoring_matrix(model_input))
        return self.model.predict_proba(feature_rows(model_input, self.model.input_fields))


def feature_rows(frame: pd.DataFrame, fields: tuple[str, ...]) -> np.ndarray:
    """The behavioural feature columns as a float matrix; ValueError naming what is wrong."""
    missing = [name for name in fields if name not in frame.columns]
    if missing:
        raise ValueError(f"missing feature column(s) {', '.join(missing)}")
    values = frame[list(fields)].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        rows, cols = np.nonzero(bad)
        named = sorted({fields[c] for c in cols})
        raise ValueError(
            f"column(s) {', '.join(named)} hold {int(bad.sum())} missing, non-numeric or "
            f"infinite value(s), e.g. at row(s) {', '.join(map(str, rows[:3]))}"
        )
    return values


def signature(
    example: pd.DataFrame, output: np.ndarray, fields: tuple[str, ...] = FEATURE_COLUMNS
) -> ModelSignature:
    """The input fields by name, each of any numeric type, and the probability out.

    A typed `double` column would refuse integers: MLflow does not convert int64 to float64
    (`Can not safely convert int64 to float64`), and `pd.read_csv` of the real file gives `Time`
    as int64. `AnyType` keeps every field required by name, so a missing column is still
    refused by MLflow itself; the model converts and validates the values.
    """
    inputs = Schema([ColSpec(AnyType(), name) for name in fields])
    return ModelSignature(inputs=inputs, outputs=infer_signature(example, output).outputs)


def log_model(
    model: FraudModel, manifest: dict[str, Any], example: pd.DataFrame, pip_requirements: list[str]
) -> str:
    """Log the bundle as the active run's pyfunc model; return its model URI."""
    with tempfile.TemporaryDirectory() as tmp:
        bundle_dir = save_bundle(model, Path(tmp) / "bundle", manifest)
        fields = model.input_fields
        example = example[list(fields)]
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=FraudPyfunc(),
            artifacts={"bundle": str(bundle_dir)},
            signature=signature(example, model.predict_proba(example.to_numpy()), fields),
            input_example=example.head(2),
            # Given explicitly: inferring them loads the model in a subprocess (seconds).
            pip_requirements=pip_requirements,
            code_paths=[str(Path(__file__).resolve().parent)],
        )
    return str(info.model_uri)


def register(
    tracking_uri: str, name: str, model_uri: str, run_id: str, tags: dict[str, str]
) -> str:
    """Create a new registered model version from a logged model; return the version number."""
    mlflow_client = client(tracking_uri)
    try:
        mlflow_client.get_registered_model(name)
    except mlflow.exceptions.MlflowException:
        mlflow_client.create_registered_model(
            name, description="Credit-card fraud classifier (IsolationForest feature + XGBoost)"
        )
    # A tracking server accepts a `models:/<model_id>` source only with that model_id beside it
    # (it checks the source against the run otherwise, and rejects it); local stores do not check.
    model_id = model_uri.removeprefix("models:/") if model_uri.startswith("models:/m-") else None
    version = mlflow_client.create_model_version(
        name, model_uri, run_id=run_id, tags=tags, model_id=model_id
    )
    return str(version.version)


def set_champion(tracking_uri: str, name: str, version: str) -> None:
    client(tracking_uri).set_registered_model_alias(name, CHAMPION, version)
