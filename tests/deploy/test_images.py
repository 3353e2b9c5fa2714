"""Each image imports only what it copies and installs (DESIGN.md, "one room per deployable part").

The tests share one environment with every package in it, so an import of a package an image does
not install would pass here and fail in the container (a drift alert that imported airflow_bridge
from the Dagster image did). For each Dockerfile this test copies the folders it copies into a
fresh `/app`, asks `uv export` what its `uv sync` installs, and runs Python in a subprocess where
every other package is unimportable: every import in the copied code must resolve (lazy ones
included), and the image's entry modules must import for real.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.deploy._files import REPO, copy_sources, parse_dockerfile, uv

RUNNER = Path(__file__).with_name("_image_python.py")
#: The modules each image starts from (its CMD / entrypoint), and what they need in the environment.
IMAGES: dict[str, list[str]] = {
    "fraud_assets/Dockerfile": ["fraud_assets.definitions", "fraud_assets.instance"],
    "api/Dockerfile": ["api.main"],
    "airflow_bridge/Dockerfile": ["airflow_bridge.dags.weekly_retrain"],
    "mlflow_server/Dockerfile": ["mlflow.server"],
}
#: Packages each image must not install (issue 11: the API's image stays small).
NEVER: dict[str, set[str]] = {
    "api/Dockerfile": {"dagster", "optuna", "matplotlib", "apache-airflow", "mlflow"},
    "fraud_assets/Dockerfile": {"apache-airflow", "fastapi-offline"},
    "airflow_bridge/Dockerfile": {"dagster", "mlflow", "mlflow-skinny", "xgboost", "pandas"},
    "mlflow_server/Dockerfile": {"xgboost", "dagster", "apache-airflow"},
}


def sync_flags(dockerfile: str) -> list[str]:
    """The `uv sync` group and package flags of a Dockerfile, as `uv export` takes them."""
    (sync,) = [i for i in parse_dockerfile(dockerfile).of("RUN") if "uv sync" in i.args]
    flags = re.findall(
        r"--(?:no-default-groups|(?:only-)?group [\w-]+|no-install-package [\w.-]+)", sync.args
    )
    return [
        part
        for flag in flags
        for part in flag.replace("--no-install-package", "--no-emit-package").split()
    ]


def installed(dockerfile: str) -> list[str]:
    """The distributions the image's `uv sync` installs, as uv resolves them from uv.lock."""
    out = subprocess.run(
        [
            uv(),
            "export",
            "--locked",
            "--no-hashes",
            "--no-emit-project",
            "--no-header",
            "--no-annotate",
            *sync_flags(dockerfile),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    return [
        line.split("==")[0].split("[")[0]
        for line in out.splitlines()
        if line and not line.startswith((" ", "#", "-"))
    ]


def copied_folders(dockerfile: str) -> list[str]:
    """The project folders the final stage copies to /app (its PYTHONPATH)."""
    parsed = parse_dockerfile(dockerfile)
    folders = []
    for instruction in parsed.of("COPY", parsed.final_stage):
        for source in copy_sources(instruction):
            if source.endswith("/") and (REPO / source).is_dir():
                folders.append(source.rstrip("/"))
    return folders


def run_as_image(
    tmp_path: Path,
    dockerfile: str,
    entry: list[str],
    folders: list[str] | None = None,
    extra_files: dict[str, str] | None = None,
) -> dict[str, Any]:
    app = tmp_path / "app"
    for folder in folders if folders is not None else copied_folders(dockerfile):
        shutil.copytree(REPO / folder, app / folder, ignore=shutil.ignore_patterns("__pycache__"))
    app.mkdir(exist_ok=True)
    for name, text in (extra_files or {}).items():
        (app / name).write_text(text)
    state = tmp_path / "state"
    state.mkdir()
    spec = {
        "app_dir": str(app),
        "repo": str(REPO),
        "distributions": installed(dockerfile),
        "entry": entry,
        "env": {
            "DAGSTER_HOME": str(state),
            "AIRFLOW_HOME": str(state),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{state / 'airflow.db'}",
            "FRAUD_MODELS_DIR": str(state / "models"),
            "FRAUD_DATA_DIR": str(state / "raw"),
            "FRAUD_PREDICTION_LOG_URL": f"sqlite:///{state / 'predictions.db'}",
            "MLFLOW_TRACKING_URI": f"sqlite:///{state / 'mlflow.db'}",
        },
    }
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    proc = subprocess.run(
        [sys.executable, str(RUNNER), str(tmp_path / "spec.json")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("IMAGE-RESULT ")]
    assert lines, (
        f"the image's Python did not report (exit {proc.returncode}):\n{proc.stderr[-3000:]}"
    )
    return dict(json.loads(lines[-1].removeprefix("IMAGE-RESULT ")))


@pytest.mark.parametrize("dockerfile", sorted(IMAGES))
def test_the_image_imports_only_what_it_copies_and_installs(
    tmp_path: Path, dockerfile: str
) -> None:
    result = run_as_image(tmp_path, dockerfile, IMAGES[dockerfile])
    assert result["static"] == [], "imports the image cannot satisfy:\n" + "\n".join(
        result["static"]
    )
    failed = {m: e for m, e in result["imports"].items() if e is not None}
    assert failed == {}, failed


@pytest.mark.parametrize("dockerfile", sorted(NEVER))
def test_the_image_does_not_install_other_rooms_libraries(dockerfile: str) -> None:
    names = {n.lower() for n in installed(dockerfile)}
    assert names, dockerfile
    assert names & NEVER[dockerfile] == set()


def test_the_api_image_has_no_dagster_optuna_matplotlib_or_airflow() -> None:
    names = {n.lower() for n in installed("api/Dockerfile")}
    assert {"fastapi", "xgboost", "mlflow-skinny", "sqlalchemy"} <= names
    assert not any(
        n.startswith(("dagster", "optuna", "matplotlib", "apache-airflow")) for n in names
    )


def test_a_lazy_import_of_another_room_is_caught(tmp_path: Path) -> None:
    """The drift alert's old import, put back: in a method, so only following imports finds it."""
    resources = (REPO / "fraud_assets/defs/resources.py").read_text()
    method = re.search(r"\n    def drift_alert\(.*?\) -> None:\n", resources)
    assert method, "Notifier.drift_alert moved: point this test at the drift alert"
    old = resources.replace(
        method.group(0), method.group(0) + "        from airflow_bridge import notify  # noqa\n", 1
    )
    result = run_as_image(
        tmp_path,
        "fraud_assets/Dockerfile",
        ["fraud_assets.definitions"],
        extra_files={"fraud_assets/defs/resources.py": old},
    )
    line = old[: old.index("from airflow_bridge")].count("\n") + 1
    expected = f"fraud_assets/defs/resources.py:{line}: airflow_bridge"
    assert any(p.startswith(expected) for p in result["static"]), result["static"]
    # The module itself imports (the import is lazy): importing alone would not have caught it.
    assert result["imports"] == {"fraud_assets.definitions": None}


def test_an_import_of_a_package_the_image_does_not_install_fails(tmp_path: Path) -> None:
    probe = "import optuna  # only the dagster group installs it\n"
    result = run_as_image(
        tmp_path, "api/Dockerfile", ["api._probe"], extra_files={"api/_probe.py": probe}
    )
    assert any("api/_probe.py:1: optuna" in p for p in result["static"]), result["static"]
    assert "No module named 'optuna' in this image" in str(result["imports"]["api._probe"])


def test_the_repository_itself_is_not_on_the_image_path(tmp_path: Path) -> None:
    """Only the copied folders are: the Airflow image has no fraud_core."""
    result = run_as_image(tmp_path, "airflow_bridge/Dockerfile", ["fraud_core.schema"])
    assert "No module named 'fraud_core'" in str(result["imports"]["fraud_core.schema"])
