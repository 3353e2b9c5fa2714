"""The champion as a plain MLflow user scores it: `read_csv`, `pyfunc.load_model`, `models serve`.

The real Kaggle file writes `Time` as integers (`0`, `1`, `406`…), so `pd.read_csv` gives an
int64 column; the champion must score it as it scores floats, and refuse text, gaps and missing
columns with a message that names the column.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
import httpx
import mlflow
import numpy as np
import pandas as pd
import pytest

from fraud_assets.definitions import ASSETS, CHECKS
from fraud_core.bundle import load_bundle
from fraud_core.schema import COLUMNS, FEATURE_COLUMNS, LABEL, TIME
from fraud_core.synthetic import generate
from servicectl.health import http_probe, wait_until
from servicectl.process import running
from tests.conftest import free_port, make_resources

CHAMPION = "models:/fraud-detector@champion"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """One promoted model (bundle and MLflow registry) for every test of this file to read."""
    root = tmp_path_factory.mktemp("champion")
    resources = make_resources(root)
    result = dg.materialize([*ASSETS, *CHECKS], resources=resources, raise_on_error=False)
    assert result.success
    yield root, resources["mlflow_tracking"].tracking_uri


@pytest.fixture(scope="module")
def real_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A file written as the real one is: quoted header, integer `Time`, quoted `Class`."""
    frame = generate(n_rows=300, fraud_rate=0.05, seed=11)
    frame[TIME] = frame[TIME].round().astype(np.int64)
    lines = [",".join(f'"{c}"' for c in COLUMNS)]
    for row in frame.itertuples(index=False):
        time, *values, label = row
        lines.append(f"{int(time)}," + ",".join(repr(float(v)) for v in values) + f',"{label}"')
    path = tmp_path_factory.mktemp("real") / "creditcard.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def champion(trained: tuple[Path, str]) -> mlflow.pyfunc.PyFuncModel:
    _, tracking_uri = trained
    mlflow.set_tracking_uri(tracking_uri)
    return mlflow.pyfunc.load_model(CHAMPION)


def test_scores_a_file_read_with_read_csv_with_integer_time(
    trained: tuple[Path, str], real_file: Path, champion: mlflow.pyfunc.PyFuncModel
) -> None:
    rows = pd.read_csv(real_file)
    assert rows[TIME].dtype == np.int64  # as the real file reads
    got = np.asarray(champion.predict(rows.drop(columns=LABEL)))
    expected = load_bundle(trained[0] / "models/production").predict_proba(
        rows[list(FEATURE_COLUMNS)].to_numpy(dtype=np.float64)
    )
    assert got.shape == (len(rows),)
    assert got == pytest.approx(expected, abs=1e-12)


def test_scores_every_column_as_integers_or_floats(
    real_file: Path, champion: mlflow.pyfunc.PyFuncModel
) -> None:
    rows = pd.read_csv(real_file).drop(columns=LABEL)
    as_floats = rows.astype(np.float64)
    as_ints = rows.round().astype(np.int64)
    assert np.asarray(champion.predict(as_floats)) == pytest.approx(
        np.asarray(champion.predict(rows)), abs=1e-12
    )
    scores = np.asarray(champion.predict(as_ints))
    assert scores.shape == (len(rows),) and ((scores >= 0) & (scores <= 1)).all()


@pytest.mark.parametrize(
    ("change", "column", "words"),
    [
        (
            lambda f: f.assign(V3=f["V3"].astype(object).where(f.index != 4, "abc")),
            "V3",
            "non-numeric",
        ),
        (lambda f: f.assign(Amount=f["Amount"].where(f.index != 2, np.nan)), "Amount", "missing"),
        (
            lambda f: f.assign(Amount=f["Amount"].where(f.index != 1, -5.0)),
            "Amount",
            "value(s) out of range",
        ),
    ],
    ids=["text", "nan", "negative"],
)
def test_bad_values_are_refused_naming_the_column(
    real_file: Path,
    champion: mlflow.pyfunc.PyFuncModel,
    change: Callable[[pd.DataFrame], pd.DataFrame],
    column: str,
    words: str,
) -> None:
    rows = change(pd.read_csv(real_file).drop(columns=LABEL))
    with pytest.raises(Exception, match=rf"column {column} has 1 {re.escape(words)}") as info:
        champion.predict(rows)
    assert "xgboost" not in str(info.value).lower()


def test_a_missing_column_is_refused_by_name(
    real_file: Path, champion: mlflow.pyfunc.PyFuncModel
) -> None:
    rows = pd.read_csv(real_file).drop(columns=[LABEL, "V17"])
    with pytest.raises(mlflow.exceptions.MlflowException, match=r"missing inputs \['V17'\]"):
        champion.predict(rows)


@pytest.mark.slow
def test_mlflow_models_serve_scores_integer_time(
    trained: tuple[Path, str], real_file: Path, tmp_path: Path
) -> None:
    """`mlflow models serve -m models:/…@champion` takes the JSON a client builds from the file."""
    root, tracking_uri = trained
    rows = pd.read_csv(real_file).drop(columns=LABEL).head(20)
    port = free_port()
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri}
    env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", "")])
    command = [
        *(f"{bin_dir}/mlflow", "models", "serve", "-m", CHAMPION),
        *("--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)),
    ]
    log = tmp_path / "serve.log"
    with running(command, cwd=root, env=env, log=log) as proc:
        url = f"http://127.0.0.1:{port}"
        wait_until("mlflow models serve", http_probe(f"{url}/ping"), 120, logs=[log], process=proc)
        payload = {"dataframe_split": rows.to_dict(orient="split", index=False)}
        assert isinstance(payload["dataframe_split"]["data"][0][0], int)  # Time goes as integers
        response = httpx.post(f"{url}/invocations", json=payload, timeout=30)
        assert response.status_code == 200, response.text
        got = np.asarray(response.json()["predictions"], dtype=float)
        expected = load_bundle(root / "models/production").predict_proba(
            rows.to_numpy(dtype=np.float64)
        )
        assert got == pytest.approx(expected, abs=1e-9)
        bad = rows.astype(object)
        bad.loc[0, "V5"] = "oops"
        refused = httpx.post(
            f"{url}/invocations",
            json={"dataframe_split": bad.to_dict(orient="split", index=False)},
            timeout=30,
        )
        assert refused.status_code == 400 and "column V5" in refused.text
