"""The API image finds its models where the original system mounted them and where compose does.

`docker run -v ./models:/app/models fraud-api` (the original README) and `-v ./models:/models`
(compose, the earlier README) must both serve. There is no Docker engine here: the image's ENV is
read from api/Dockerfile and its two paths are laid out under a temporary root, then the real
uvicorn process of the image (`api.main:app`) is started on each layout.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import httpx
import pytest

from api.config import Settings, resolve_models_dir
from fraud_core.store import ModelStore
from servicectl.health import http_get, wait_until
from servicectl.process import running
from tests.api.conftest import MakeModel, publish
from tests.conftest import free_port
from tests.deploy._files import REPO, environment, load_compose, parse_dockerfile

#: The original system's mount point, and the one this platform's compose files use.
ORIGINAL, COMPOSE = "/app/models", "/models"
START_TIMEOUT_S = 120.0


def image_env() -> dict[str, str]:
    """The ENV of the API image's final stage, as NAME -> value."""
    dockerfile = parse_dockerfile("api/Dockerfile")
    env: dict[str, str] = {}
    for instruction in dockerfile.of("ENV", dockerfile.final_stage):
        for item in instruction.args.split():
            name, _, value = item.partition("=")
            env[name] = value
    return env


def under(root: Path, path: str) -> Path:
    """An absolute path of the image, laid out under `root`."""
    return root / path.lstrip("/")


def test_the_compose_files_name_the_store_they_mount() -> None:
    """Compose sets FRAUD_MODELS_DIR to its own mount: no guess is made there."""
    for name in ("docker-compose.yml", "api/docker-compose.yml"):
        api = load_compose(name)["services"]["api"]
        target = environment(api)["FRAUD_MODELS_DIR"]
        assert any(str(v).split(":")[1] == target for v in api["volumes"]), name


def test_the_store_with_a_production_bundle_wins(
    tmp_path: Path, make_fraud_model: MakeModel
) -> None:
    primary, fallback = tmp_path / "app/models", tmp_path / "models"
    primary.mkdir(parents=True)
    publish(ModelStore(fallback), make_fraud_model(seed=1), "compose-1")
    assert resolve_models_dir(primary, fallback) == fallback
    publish(ModelStore(primary), make_fraud_model(seed=2), "original-1")
    assert resolve_models_dir(primary, fallback) == primary  # both: the default
    assert resolve_models_dir(primary, None) == primary


def test_with_no_bundle_yet_the_mounted_store_wins(tmp_path: Path) -> None:
    shm = Path("/dev/shm")
    if not os.path.ismount(shm):
        pytest.skip("/dev/shm is not a mount point here: no real mount to test with")
    # Neither holds a model: the mount point is what the user gave the container.
    assert resolve_models_dir(tmp_path / "app/models", shm) == shm
    assert resolve_models_dir(tmp_path / "app/models", tmp_path / "models") == (
        tmp_path / "app/models"
    )


def test_settings_read_the_fallback_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_fraud_model: MakeModel
) -> None:
    primary, fallback = tmp_path / "app/models", tmp_path / "models"
    publish(ModelStore(fallback), make_fraud_model(seed=1), "compose-1")
    monkeypatch.setenv("FRAUD_MODELS_DIR", str(primary))
    monkeypatch.setenv("FRAUD_MODELS_DIR_FALLBACK", str(fallback))
    assert Settings().models_dir == fallback
    monkeypatch.setenv("FRAUD_MODELS_DIR", str(fallback))
    assert Settings().models_dir == fallback


@pytest.mark.slow
@pytest.mark.parametrize("mount", [ORIGINAL, COMPOSE])
def test_the_image_s_api_serves_from_either_mount(
    tmp_path: Path, make_fraud_model: MakeModel, mount: str
) -> None:
    """uvicorn with the image's environment, the store published where `-v` would mount it."""
    root = tmp_path / "image"
    env_of_image = image_env()
    for path in (ORIGINAL, COMPOSE):
        under(root, path).mkdir(parents=True)
    version = f"mounted-at{mount.replace('/', '-')}"
    publish(ModelStore(under(root, mount)), make_fraud_model(seed=3), version)

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FRAUD_", "MLFLOW_"))}
    env.update(
        PYTHONPATH=str(REPO),
        FRAUD_MODELS_DIR=str(under(root, env_of_image["FRAUD_MODELS_DIR"])),
        FRAUD_MODELS_DIR_FALLBACK=str(under(root, env_of_image["FRAUD_MODELS_DIR_FALLBACK"])),
        FRAUD_PREDICTION_LOG_URL="off",
    )
    log = tmp_path / "uvicorn.log"
    command = [sys.executable, "-m", "uvicorn", "api.main:app", "--port", str(port)]
    url = f"http://127.0.0.1:{port}/ready"
    with running([*command, "--host", "127.0.0.1"], cwd=root, env=env, log=log) as proc:
        # Any answer will do (a 503 says which folder it watched): the assertions below judge it.
        wait_until(
            "uvicorn",
            lambda: http_get(url) is not None,
            START_TIMEOUT_S,
            logs=[log],
            process=proc,
            interval_s=0.3,
        )
        ready = httpx.get(url, timeout=2)
    assert ready.status_code == 200, ready.text
    assert ready.json()["model_version"] == version
