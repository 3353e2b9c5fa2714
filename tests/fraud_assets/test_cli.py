"""What a user runs from the shell: `dagster asset materialize`, then `fraud-models`."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import dagster as dg
import pytest
from mlflow.tracking import MlflowClient

from fraud_core.synthetic import generate
from tests.fraud_assets.conftest import PROJECT_ROOT, VENV_BIN

pytestmark = pytest.mark.slow

MATERIALIZE = [
    str(VENV_BIN / "dagster"),
    "asset",
    "materialize",
    "-m",
    "fraud_assets.definitions",
    "--select",
    "*",
]


def _run(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run a command from the project root in the test's (isolated) environment."""
    env = dict(os.environ)
    env.pop("DAGSTER_POSTGRES_URL", None)  # the embedded default: SQLite under DAGSTER_HOME
    # In-process MLflow calls of earlier tests export this (mlflow.set_registry_uri writes
    # os.environ); a user's shell has the registry follow MLFLOW_TRACKING_URI.
    env.pop("MLFLOW_REGISTRY_URI", None)
    return subprocess.run(
        args, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def _describe(proc: subprocess.CompletedProcess[str]) -> str:
    return (
        f"exit {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}"
        f"\n--- stderr\n{proc.stderr[-4000:]}"
    )


@pytest.fixture
def dagster_home(tmp_path: Path) -> Path:
    home = Path(os.environ["DAGSTER_HOME"])
    assert home.is_relative_to(tmp_path)
    proc = _run([str(VENV_BIN / "python"), "-m", "fraud_assets.instance"])
    assert proc.returncode == 0, _describe(proc)
    assert (home / "dagster.yaml").is_file()
    return home


def test_materialize_then_fraud_models_status(tmp_path: Path, dagster_home: Path) -> None:
    proc = _run(MATERIALIZE)
    assert proc.returncode == 0, _describe(proc)

    production = tmp_path / "models" / "production"
    manifest = json.loads((production / "manifest.json").read_text())
    assert manifest["model_version"]
    assert 0.5 <= manifest["metrics"]["average_precision"] <= 1.0
    assert 0.0 < manifest["threshold"] < 1.0
    assert manifest["data_source"] == "synthetic"

    status = _run([str(VENV_BIN / "fraud-models"), "status"])
    assert status.returncode == 0, _describe(status)
    reported = json.loads(status.stdout)
    assert reported["model_version"] == manifest["model_version"]
    assert reported["verified"] is True
    assert Path(reported["path"]) == production.resolve()

    # The first model has nothing before it: no backup to list, none to roll back to.
    history = _run([str(VENV_BIN / "python"), "-m", "fraud_core.cli", "history"])
    assert history.returncode == 0, _describe(history)
    assert history.stdout.strip() == ""
    assert "Traceback" not in history.stderr
    rollback = _run([str(VENV_BIN / "fraud-models"), "rollback", "--no-registry"])
    assert rollback.returncode == 1, _describe(rollback)
    assert rollback.stderr.startswith("error: no backup older than")
    assert production.resolve() == Path(reported["path"])  # production left as it was

    # The run went to the instance in DAGSTER_HOME, the model to the MLflow store in the env.
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        runs = instance.get_runs()
        assert [r.status for r in runs] == [dg.DagsterRunStatus.SUCCESS]
    tracking_uri = os.environ["MLFLOW_TRACKING_URI"]
    registry = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    champion = registry.get_model_version_by_alias("fraud-detector", "champion")
    assert str(champion.version) == manifest["registered_model"]["version"]


def test_text_in_amount_fails_the_schema_check(tmp_path: Path, dagster_home: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    frame = generate(n_rows=2_000, fraud_rate=0.05, seed=7)
    frame["Amount"] = frame["Amount"].astype(object)
    frame.loc[5, "Amount"] = "twelve"
    frame.to_csv(raw / "creditcard.csv", index=False)

    proc = _run(MATERIALIZE)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, _describe(proc)
    assert "check_raw_transactions_schema" in output
    # Row 5 is line 7 of the file: one for the header, one because lines count from 1.
    assert "column Amount has 1 non-numeric value(s), e.g. 'twelve'" in output
    assert f"{raw / 'creditcard.csv'}:7" in output
    assert "Materialization failed" in output
    # The reason is on an ERROR line of its own, not only inside the DEBUG event.
    errors = [line for line in output.splitlines() if " - ERROR - " in line]
    assert any("check_raw_transactions_schema failed" in e and "Amount" in e for e in errors)

    production = tmp_path / "models" / "production"
    assert not production.exists() and not production.is_symlink()
    status = _run([str(VENV_BIN / "fraud-models"), "status"])
    assert status.returncode == 1
    assert "no production model" in status.stderr
