"""Nothing calls out: MLflow 3's usage reports are off in every process and image of the platform.

MLflow reports usage to its makers' servers (a config fetched from config.mlflow-telemetry.io,
events posted) unless `MLFLOW_DISABLE_TELEMETRY` or `DO_NOT_TRACK` is set, or it believes it runs
in CI or under pytest. Bank networks are offline and nothing may reach the internet: the
platform's packages turn it off on import, the Makefile for what it starts, the images in ENV.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.deploy._files import REPO, parse_dockerfile

#: The variables that turn the reports off; the test's processes start without them.
_QUIET = ("MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK")


def _telemetry_off_after(*imports: str) -> list[bool]:
    """For each import, in a fresh process without CI's markers: are MLflow's reports off?"""
    from mlflow.telemetry import utils

    consts = utils._is_ci_env_or_testing.__code__.co_consts
    names = [c for c in consts if isinstance(c, str)]
    names += [n for c in consts if isinstance(c, frozenset | tuple) for n in c]
    ci_markers = {*names, "PYTEST_CURRENT_TEST", "CI", "GITHUB_ACTIONS"}
    env = {k: v for k, v in os.environ.items() if k not in ci_markers and k not in _QUIET}
    probe = "from mlflow.telemetry import utils; print(utils.is_telemetry_disabled())"
    # Side by side: each pays the imports of MLflow once.
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", f"{line}\n{probe}"],
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for line in imports
    ]
    answers = []
    for process in processes:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
        answers.append(out.strip().splitlines()[-1] == "True")
    return answers


def test_importing_the_platform_turns_mlflow_usage_reports_off() -> None:
    entry_points = ["fraud_core", "fraud_assets.definitions", "api.main", "servicectl"]
    control, *platform = _telemetry_off_after(
        "import mlflow", *(f"import {e}" for e in entry_points)
    )
    # Without the platform, a user's process would call out: the check can fail.
    assert control is False
    assert dict(zip(entry_points, platform, strict=True)) == dict.fromkeys(entry_points, True)


@pytest.mark.parametrize(
    "path", ["mlflow_server/Dockerfile", "api/Dockerfile", "fraud_assets/Dockerfile"]
)
def test_the_python_images_turn_usage_reports_off(path: str) -> None:
    dockerfile = parse_dockerfile(path)
    env = dict(
        item.partition("=")[::2]
        for i in dockerfile.of("ENV", dockerfile.final_stage)
        for item in i.args.split()
    )
    assert env.get("MLFLOW_DISABLE_TELEMETRY") == "true"
    assert env.get("DO_NOT_TRACK") == "true"


def test_the_makefile_exports_it_for_what_make_starts() -> None:
    text = (REPO / "Makefile").read_text()
    assert "export MLFLOW_DISABLE_TELEMETRY ?= true" in text
    assert "export DO_NOT_TRACK ?= true" in text
