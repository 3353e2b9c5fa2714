"""Bad data never reaches `promoted_model`: each case stops at a check or a clear error.

Every case starts with a production model in place and asserts it is untouched afterwards.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from fraud_assets.definitions import ASSETS, CHECKS
from fraud_core.store import ModelStore
from fraud_core.synthetic import generate
from tests.conftest import free_port, make_resources
from tests.fraud_assets.trained import Trained


@pytest.fixture
def production(tmp_path: Path, trained: Trained) -> dict[str, str]:
    """A production model (the session's shared first run) copied into this test's models dir.

    Returns the sha256 of every file under models/, to compare after the bad run.
    """
    assert trained.result.success
    shutil.copytree(trained.root / "models", tmp_path / "models", symlinks=True)
    return snapshot(tmp_path / "models")


def snapshot(models: Path) -> dict[str, str]:
    from fraud_core.bundle import sha256_file

    out = {}
    for path in sorted(models.rglob("*")):
        if path.is_symlink():
            out[str(path.relative_to(models))] = "-> " + str(path.readlink())
        elif path.is_file() and path.name != ".lock":
            out[str(path.relative_to(models))] = sha256_file(path)
    return out


def write_csv(tmp_path: Path, corrupt: Callable[[pd.DataFrame], pd.DataFrame], rows: int = 6000):
    raw = tmp_path / "raw"
    raw.mkdir(exist_ok=True)
    frame = corrupt(generate(n_rows=rows, fraud_rate=0.02, seed=5))
    path = raw / "creditcard.csv"
    frame.to_csv(path, index=False)
    return path


def run(tmp_path: Path) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [*ASSETS, *CHECKS], resources=make_resources(tmp_path), raise_on_error=False
    )


def failed_checks(result: dg.ExecuteInProcessResult) -> dict[str, str]:
    return {
        e.check_name: e.description or ""
        for e in result.get_asset_check_evaluations()
        if not e.passed
    }


def assert_blocked(result: dg.ExecuteInProcessResult, tmp_path: Path, before: dict[str, str]):
    assert not result.success
    materialized = {e.asset_key.path[0] for e in result.get_asset_materialization_events()}
    assert "promoted_model" not in materialized
    assert "fraud_model" not in materialized
    assert snapshot(tmp_path / "models") == before
    assert ModelStore(tmp_path / "models").load_production(verify=True) is not None


def _with_text_amount(df: pd.DataFrame) -> pd.DataFrame:
    df = df.astype({"Amount": object})
    df.loc[17, "Amount"] = "12,50 EUR"
    return df


def _with_nans(df: pd.DataFrame) -> pd.DataFrame:
    df.loc[[3, 99], "V7"] = np.nan
    return df


def _with_bad_labels(df: pd.DataFrame) -> pd.DataFrame:
    df.loc[[10, 11], "Class"] = 2
    return df


def _with_negative_amount(df: pd.DataFrame) -> pd.DataFrame:
    df.loc[42, "Amount"] = -5.0
    return df


@pytest.mark.parametrize(
    ("corrupt", "check", "words"),
    [
        (lambda df: df.drop(columns=["V5"]), "check_raw_transactions_schema", ["V5", "missing"]),
        (
            _with_text_amount,
            "check_raw_transactions_schema",
            ["Amount", "non-numeric", "12,50 EUR"],
        ),
        (_with_nans, "check_raw_transactions_nulls", ["V7", "2 missing"]),
        (_with_bad_labels, "check_raw_transactions_labels", ["Class", "other than 0/1"]),
        (_with_negative_amount, "check_raw_transactions_ranges", ["Amount", "-5", "out of range"]),
    ],
    ids=["missing-column", "text-amount", "nans", "bad-labels", "negative-amount"],
)
def test_bad_data_is_blocked_by_a_check(
    tmp_path: Path,
    production: dict[str, str],
    corrupt: Callable[[pd.DataFrame], pd.DataFrame],
    check: str,
    words: list[str],
) -> None:
    path = write_csv(tmp_path, corrupt)
    result = run(tmp_path)
    failed = failed_checks(result)
    assert check in failed, failed
    for word in words:
        assert word in failed[check]
    assert str(path) in failed[check]  # the message names the file
    assert_blocked(result, tmp_path, production)


def test_row_numbers_point_at_the_file_line(tmp_path: Path, production: dict[str, str]) -> None:
    path = write_csv(tmp_path, _with_negative_amount)
    failed = failed_checks(run(tmp_path))
    # Row 42 of the frame is line 44 of the file (header on line 1).
    assert f"{path}:44" in failed["check_raw_transactions_ranges"]
    assert path.read_text().splitlines()[43].split(",")[-2] == "-5.0"


def test_empty_file_fails_naming_the_file(tmp_path: Path, production: dict[str, str]) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "creditcard.csv").write_text("")
    result = run(tmp_path)
    failures = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert failures, "the run should fail at raw_transactions"
    message = failures[0].step_failure_data.error.message  # type: ignore[union-attr]
    assert "creditcard.csv" in message and "empty" in message
    assert_blocked(result, tmp_path, production)


def test_header_only_file_fails_the_schema_check(
    tmp_path: Path, production: dict[str, str]
) -> None:
    write_csv(tmp_path, lambda df: df.iloc[:0])
    result = run(tmp_path)
    assert "no rows" in failed_checks(result)["check_raw_transactions_schema"]
    assert_blocked(result, tmp_path, production)


def test_too_few_frauds_fails_the_split_check(tmp_path: Path, production: dict[str, str]) -> None:
    def few_frauds(df: pd.DataFrame) -> pd.DataFrame:
        frauds = df.index[df["Class"] == 1]
        df.loc[frauds[15:], "Class"] = 0  # 15 frauds in all: fewer than 20 in every split
        return df

    write_csv(tmp_path, few_frauds)
    result = run(tmp_path)
    description = failed_checks(result)["check_transaction_splits_min_frauds"]
    assert "Class" in description and "minimum 20" in description
    assert_blocked(result, tmp_path, production)


def test_stopped_tracking_server_fails_the_run_fast_and_names_it(
    tmp_path: Path, production: dict[str, str]
) -> None:
    # A port nobody listens on: the server is down.
    url = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    result = dg.materialize(
        [*ASSETS, *CHECKS],
        resources=make_resources(tmp_path, tracking_uri=url),
        raise_on_error=False,
    )
    elapsed = time.monotonic() - started

    assert not result.success
    # The tracking resource refuses to start, naming the server: the run fails before any step
    # loads data or trains.
    (init_failure,) = [
        e for e in result.all_events if e.event_type_value == "RESOURCE_INIT_FAILURE"
    ]
    error = init_failure.event_specific_data.error  # type: ignore[union-attr]
    assert f"MLflow tracking server {url} is unreachable" in error.message
    assert "MLFLOW_TRACKING_URI" in error.message
    assert result.get_asset_materialization_events() == []
    assert snapshot(tmp_path / "models") == production
    # Not MLflow's minutes of retries: seconds after the data steps.
    assert elapsed < 120, elapsed
