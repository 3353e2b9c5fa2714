"""The whole graph against a real MLflow tracking server (PostgreSQL backend, proxied artifacts)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from fraud_assets.definitions import ASSETS, CHECKS
from fraud_core.bundle import load_bundle
from fraud_core.data import Splits
from fraud_core.features import MODEL_FEATURES
from fraud_core.schema import FEATURE_COLUMNS
from fraud_core.train import VARIANTS
from tests.conftest import SMALL_FRAUD_RATE, SMALL_ROWS, make_resources
from tests.fraud_assets.conftest import MlflowServer

pytestmark = pytest.mark.slow

EXPERIMENT = "fraud-detection"
REGISTERED = "fraud-detector"
PLOTS = {"pr_curve.png", "roc_curve.png", "score_distribution.png", "feature_importance.png"}


@dataclass(frozen=True)
class Materialized:
    result: dg.ExecuteInProcessResult
    state: Path  # the client side: data, models and the (unused) local artifact root

    def metadata(self, asset: str) -> dict[str, object]:
        (event,) = self.result.asset_materializations_for_node(asset)
        return {k: v.value for k, v in event.metadata.items()}

    @property
    def failures(self) -> str:
        """Each failed step and its error, for an assertion message."""
        lines = []
        for event in self.result.get_step_failure_events():
            error = event.step_failure_data.error
            lines.append(f"{event.step_key}: {error.message if error else 'failed'}")
        return "\n".join(lines)

    @property
    def training_run_id(self) -> str:
        return str(self.metadata("fraud_model")["mlflow_run_id"])


@contextmanager
def _mlflow_uris(url: str) -> Iterator[None]:
    """Point MLflow's process-wide tracking and registry URIs at `url`, and undo it after.

    `mlflow.set_tracking_uri` and `set_registry_uri` (the resource calls both) also write
    MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI into `os.environ`, where later tests, and the
    subprocesses they start, would find a server that has been stopped.
    """
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", url)
        mp.setenv("MLFLOW_REGISTRY_URI", url)
        try:
            yield
        finally:
            mlflow.set_tracking_uri(None)  # type: ignore[arg-type]
            mlflow.set_registry_uri(None)  # type: ignore[arg-type]


def _materialize(state: Path, server: MlflowServer) -> Materialized:
    # Module-scoped, so the per-test environment isolation does not apply yet: give this run its
    # own, and point every default at `state` so nothing can fall back to the project's files.
    with _mlflow_uris(server.url), pytest.MonkeyPatch.context() as mp:
        mp.setenv("FRAUD_MODELS_DIR", str(state / "models"))
        mp.setenv("FRAUD_DATA_DIR", str(state / "raw"))
        mp.setenv("FRAUD_MLFLOW_ARTIFACT_ROOT", str(state / "mlartifacts"))
        mp.setenv("DAGSTER_HOME", str(state))
        mp.setenv("FRAUD_SYNTHETIC_ROWS", str(SMALL_ROWS))
        mp.setenv("FRAUD_SYNTHETIC_FRAUD_RATE", str(SMALL_FRAUD_RATE))
        result = dg.materialize(
            [*ASSETS, *CHECKS],
            resources=make_resources(state, tracking_uri=server.url),
            raise_on_error=False,
        )
    return Materialized(result, state)


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("client_state")


@pytest.fixture(scope="module")
def first(mlflow_server: MlflowServer, state: Path) -> Materialized:
    return _materialize(state, mlflow_server)


@pytest.fixture(scope="module")
def second(mlflow_server: MlflowServer, first: Materialized) -> Materialized:
    """The same data and seed again, with the first model in production."""
    return _materialize(first.state, mlflow_server)


@pytest.fixture
def client(mlflow_server: MlflowServer) -> Iterator[MlflowClient]:
    with _mlflow_uris(mlflow_server.url):  # `models:/` URIs resolve through the server
        yield MlflowClient(tracking_uri=mlflow_server.url, registry_uri=mlflow_server.url)


def test_first_materialization_succeeds_and_promotes(first: Materialized) -> None:
    assert first.result.success, first.failures
    evaluations = first.result.get_asset_check_evaluations()
    assert len(evaluations) == 7
    assert all(e.passed for e in evaluations), [e.check_name for e in evaluations if not e.passed]
    promoted = first.metadata("promoted_model")
    assert promoted["decision"] == "promoted"
    assert promoted["registered_model_version"] == "1"


def test_training_run_is_tracked_on_the_server(
    client: MlflowClient, first: Materialized, mlflow_server: MlflowServer
) -> None:
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None
    run = client.get_run(first.training_run_id)
    assert run.info.experiment_id == experiment.experiment_id
    assert run.info.status == "FINISHED"
    assert int(run.data.params["n_estimators"]) > 0
    assert run.data.params["features"] == ",".join(MODEL_FEATURES)
    assert 0.5 <= run.data.metrics["test_average_precision"] <= 1.0
    assert run.data.metrics["test_roc_auc"] >= 0.9
    assert run.data.tags["promotion_decision"] == "promoted"
    assert run.data.tags["registered_model_version"] == "1"
    assert run.data.tags["dagster_run_id"] == first.result.run_id
    assert {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "plots")} == PLOTS

    variants = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}'",
    )
    assert sorted(v.data.tags["variant"] for v in variants) == sorted(VARIANTS)
    assert len(variants) == 3
    for variant in variants:
        assert 0.0 < variant.data.metrics["validation_average_precision"] <= 1.0
        assert run.data.metrics[f"validation_ap_{variant.data.tags['variant']}"] == pytest.approx(
            variant.data.metrics["validation_average_precision"]
        )


def test_artifacts_are_stored_by_the_server(
    client: MlflowClient, first: Materialized, mlflow_server: MlflowServer, tmp_path: Path
) -> None:
    """The client only talks HTTP: artifacts land under the server's --artifacts-destination."""
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None
    assert experiment.artifact_location.startswith("mlflow-artifacts:")
    run_id = first.training_run_id
    on_server = (
        mlflow_server.artifacts_dir / experiment.experiment_id / run_id / "artifacts" / "plots"
    )
    assert {p.name for p in on_server.iterdir()} == PLOTS
    # The logged pyfunc model (with the bundle inside) is on the server's disk too.
    assert list(mlflow_server.artifacts_dir.rglob("MLmodel"))
    assert list(mlflow_server.artifacts_dir.rglob("manifest.json"))
    # Nothing was written to the client's own artifact root.
    assert not (first.state / "mlartifacts").exists()
    # And a client with no view of that disk reads the same bytes back over HTTP.
    fetched = client.download_artifacts(run_id, "plots/pr_curve.png", str(tmp_path))
    assert Path(fetched).read_bytes() == (on_server / "pr_curve.png").read_bytes()
    assert Path(fetched).read_bytes().startswith(b"\x89PNG")


def test_champion_alias_serves_the_production_bundle(
    client: MlflowClient, first: Materialized
) -> None:
    champion = client.get_model_version_by_alias(REGISTERED, "champion")
    assert champion.version == "1"
    assert champion.run_id == first.training_run_id
    production = first.state / "models" / "production"
    manifest = json.loads((production / "manifest.json").read_text())
    assert manifest["registered_model"] == {"name": REGISTERED, "version": "1"}
    assert manifest["mlflow_run_id"] == first.training_run_id
    assert champion.tags["model_version"] == manifest["model_version"]

    splits: Splits = first.result.asset_value("transaction_splits")
    rows = splits.test[list(FEATURE_COLUMNS)]
    assert rows.shape[1] == 30
    served = np.asarray(mlflow.pyfunc.load_model(f"models:/{REGISTERED}@champion").predict(rows))
    expected = load_bundle(production).predict_proba(rows.to_numpy(dtype=np.float64))
    assert served.shape == (len(rows),)
    assert np.all((served >= 0) & (served <= 1))
    assert served.std() > 0  # a constant answer would match a constant model by accident
    np.testing.assert_allclose(served, expected, rtol=0, atol=1e-6)


def test_second_materialization_keeps_the_champion(
    client: MlflowClient, first: Materialized, second: Materialized
) -> None:
    """Same data, same seed: no real gain, so production and the alias stay where they were."""
    assert second.result.success, second.failures
    assert second.training_run_id != first.training_run_id
    promoted = second.metadata("promoted_model")
    assert promoted["decision"] == "kept production"
    assert promoted["promoted"] is False
    first_version = first.metadata("fraud_model")["model_version"]
    assert promoted["production_version"] == first_version
    assert "registered_model_version" not in promoted

    run = client.get_run(second.training_run_id)
    assert run.data.tags["promotion_decision"] == "kept_production"
    assert "registered_model_version" not in run.data.tags
    versions = client.search_model_versions(f"name = '{REGISTERED}'")
    assert [v.version for v in versions] == ["1"]
    assert client.get_model_version_by_alias(REGISTERED, "champion").version == "1"
    manifest = json.loads((second.state / "models" / "production" / "manifest.json").read_text())
    assert manifest["model_version"] == first_version
