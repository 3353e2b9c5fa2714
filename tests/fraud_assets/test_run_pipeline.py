"""`python scripts/run_pipeline.py`: the original system's manual run, stage by stage.

The lines come from the run's real Dagster events (a small graph in process for the formatting,
the platform's own job end to end); a blocking check ends the run with exit status 1 and its
message, and production is left as it was.
"""

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from fraud_assets import run
from fraud_core.store import ModelStore
from tests.fraud_assets.conftest import PROJECT_ROOT
from tests.fraud_assets.test_bad_inputs import _with_negative_amount, write_csv

SCRIPT = PROJECT_ROOT / "scripts" / "run_pipeline.py"
#: The training graph, in order: each shows a start and a done line.
STAGES = (
    "labelled_transactions",
    "raw_transactions",
    "transaction_splits",
    "anomaly_scores",
    "fraud_model",
    "evaluation_report",
    "promoted_model",
)
CHECKS = (
    "check_raw_transactions_schema",
    "check_raw_transactions_nulls",
    "check_raw_transactions_labels",
    "check_raw_transactions_ranges",
    "check_raw_transactions_unique_ids",
    "check_transaction_splits_min_frauds",
    "check_evaluation_report_quality_floor",
)


# --- the lines, on a small graph ------------------------------------------------------------------


@dg.asset
def amounts(context: dg.AssetExecutionContext) -> list[float]:
    context.log.info("read 3 amounts")
    return [1.0, -2.0, 3.0]


@dg.asset_check(asset=amounts, blocking=True)
def check_amounts_non_negative(amounts: list[float]) -> dg.AssetCheckResult:
    bad = [a for a in amounts if a < 0]
    return dg.AssetCheckResult(passed=not bad, description=f"{len(bad)} negative: {bad}")


@dg.asset
def promoted_model(amounts: list[float]) -> dg.Output[float]:
    return dg.Output(
        sum(amounts),
        metadata={
            "decision": "kept production",
            "reason": "no gain",
            "challenger_version": "v2",
            "production_version": "v1",
            "production_path": "/m/production",
        },
    )


def small_run(check: dg.AssetChecksDefinition | None) -> tuple[int, str]:
    job = dg.Definitions(
        assets=[amounts, promoted_model],
        asset_checks=[check] if check else [],
        jobs=[dg.define_asset_job("small")],
    ).resolve_job_def("small")
    out = io.StringIO()
    with dg.DagsterInstance.ephemeral() as instance:
        result = run.execute(job, instance, out)
    return run.report(result, out), out.getvalue()


def test_a_blocking_check_stops_the_run_with_its_message() -> None:
    code, text = small_run(check_amounts_non_negative)
    assert code == 1
    lines = text.splitlines()
    assert lines[:3] == [
        "[start] amounts",
        "        amounts: read 3 amounts",
        "        amounts materialized",
    ]
    assert re.search(r"^\[done \] amounts in \d+\.\d s$", text, re.MULTILINE)
    assert "[check] check_amounts_non_negative FAILED: 1 negative: [-2.0]" in lines
    assert "[skip ] promoted_model: not run, a step or blocking check before it failed" in lines
    assert "[start] promoted_model" not in lines
    assert lines[-1] == (
        "Run failed, production unchanged: blocked by check_amounts_non_negative: "
        "1 negative: [-2.0]"
    )


def test_a_successful_run_ends_with_the_decision() -> None:
    code, text = small_run(None)
    assert code == 0
    assert text.index("[start] amounts") < text.index("[start] promoted_model")
    assert text.splitlines()[-2:] == [
        "Decision: kept production (challenger v2, production now v1 at /m/production)",
        "Reason: no gain",
    ]
    assert "promoted_model materialized: decision=kept production, reason=no gain" in text


# --- the platform's job ---------------------------------------------------------------------------


def _script(timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """`python scripts/run_pipeline.py` from the repository root, as the README says."""
    env = dict(os.environ)  # the test's isolated settings (tests/conftest.py)
    env.pop("DAGSTER_POSTGRES_URL", None)
    env.pop("MLFLOW_REGISTRY_URI", None)
    return subprocess.run(
        [sys.executable, "scripts/run_pipeline.py"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_the_script_is_thin() -> None:
    text = SCRIPT.read_text()
    assert len(text.splitlines()) <= 80
    code = [line for line in text.splitlines() if line and not line.startswith((" ", '"'))]
    assert "from fraud_assets.run import main" in code
    assert "sys.path" not in text.split('"""')[-1], "the project is installed (editable)"


def test_a_missing_column_blocks_the_run(tmp_path: Path) -> None:
    write_csv(tmp_path, lambda df: df.drop(columns=["V5"]))
    out = io.StringIO()
    assert run.main([], out=out) == 1
    text = out.getvalue()
    assert "[check] check_raw_transactions_schema FAILED: " in text
    last = text.splitlines()[-1]
    assert last.startswith("Run failed, production unchanged: blocked by ")
    assert "check_raw_transactions_schema" in last and "V5" in last and "missing" in last
    assert "[start] fraud_model" not in text
    assert not (tmp_path / "models" / "production").exists()


@pytest.mark.slow
def test_the_script_exits_non_zero_on_a_negative_amount(tmp_path: Path) -> None:
    path = write_csv(tmp_path, _with_negative_amount)
    proc = _script()
    assert proc.returncode == 1, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    failed = [line for line in lines if line.startswith("[check] check_raw_transactions_ranges")]
    assert failed and "FAILED" in failed[0] and f"{path}:44" in failed[0]
    assert "Amount" in lines[-1] and "out of range" in lines[-1]
    assert lines[-1].startswith("Run failed, production unchanged: blocked by ")
    assert "[skip ] promoted_model: not run, a step or blocking check before it failed" in lines
    assert not (tmp_path / "models" / "production").exists()


def test_the_module_imports_from_any_directory(tmp_path: Path) -> None:
    """`uv sync` installs the project editable: the script's folder on sys.path is enough."""
    proc = subprocess.run(
        [sys.executable, "-c", "import fraud_assets.run, fraud_core; print(fraud_core.__file__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()).is_relative_to(PROJECT_ROOT)


@pytest.mark.slow
def test_the_script_trains_evaluates_and_promotes(tmp_path: Path) -> None:
    proc = _script()
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    text = proc.stdout
    lines = text.splitlines()
    starts = [line.removeprefix("[start] ") for line in lines if line.startswith("[start] ")]
    assert [s for s in starts if s in STAGES] == list(STAGES)
    for stage in STAGES:
        assert any(re.fullmatch(rf"\[done \] {stage} in \d+\.\d s", line) for line in lines)
    for check in CHECKS:
        assert any(line.startswith(f"[check] {check} passed") for line in lines), check
    production = ModelStore(tmp_path / "models").load_production(verify=True)
    assert production is not None
    assert f"Decision: promoted (challenger {production.version}, " in text
    assert lines[-1].startswith("Reason: first model")
    # The run is on the instance under DAGSTER_HOME, as the Dagster UI lists it.
    (run_id,) = re.findall(r"^Dagster run (\S+)$", text, re.MULTILINE)
    with dg.DagsterInstance.from_config(os.environ["DAGSTER_HOME"]) as instance:
        record = instance.get_run_by_id(run_id)
        assert record is not None and record.job_name == "weekly_retrain_job"
        assert record.status == dg.DagsterRunStatus.SUCCESS
    # Its outputs are stored, as `dagster asset materialize` stores them: one asset can be
    # re-materialized alone from the UI.
    # Parquet and JSON, as the code location's IO manager writes them: no pickle.
    stored = Path(os.environ["DAGSTER_HOME"]) / "storage" / "transaction_splits"
    assert (stored / "value.json").is_file()
    files = [p for p in (Path(os.environ["DAGSTER_HOME"]) / "storage").rglob("*") if p.is_file()]
    assert any(p.suffix == ".parquet" for p in files)
    assert not [p for p in files if p.read_bytes()[:1] == b"\x80"], "a pickle was written"
