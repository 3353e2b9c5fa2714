"""The Dockerfiles and entrypoints: locked uv installs, small non-root images, no secrets."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port, pg_address
from tests.deploy._files import (
    COMPOSE_FILES,
    DOCKERFILES,
    REPO,
    copy_sources,
    healthcheck_test,
    image_roots,
    load_compose,
    lock_closure,
    parse_dockerfile,
)

SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|CREDENTIAL|(^|_)KEY($|_)", re.IGNORECASE)
#: NCCL is loaded by XGBoost with dlopen, for multi-GPU training only: every image may leave it out.
ALWAYS_OPTIONAL = {"nvidia-nccl-cu12"}
ENTRYPOINTS = (
    "mlflow_server/entrypoint.sh",
    "fraud_assets/deploy/entrypoint.sh",
    "airflow_bridge/deploy/entrypoint.sh",
)


def built_by(dockerfile: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(compose file, service, service) of every service built from `dockerfile`."""
    found = []
    for name in COMPOSE_FILES:
        compose_dir = (REPO / name).parent
        for service_name, service in load_compose(name)["services"].items():
            build = service.get("build")
            if not isinstance(build, dict):
                continue
            context = (compose_dir / build.get("context", ".")).resolve()
            if (context / build.get("dockerfile", "Dockerfile")).resolve() == REPO / dockerfile:
                assert context == REPO, f"{name}: {service_name} must build from the repo root"
                found.append((name, service_name, service))
    return found


def dockerignore() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def ignored(path: str) -> bool:
    """Whether .dockerignore keeps `path` out of the build context (no `!` rules are used)."""
    parts = Path(path.rstrip("/")).parts
    for pattern in dockerignore():
        pattern = pattern.rstrip("/")
        for i in range(1, len(parts) + 1):
            prefix = "/".join(parts[:i])
            if fnmatch.fnmatch(prefix, pattern) or (
                pattern.startswith("**/") and fnmatch.fnmatch(parts[i - 1], pattern[3:])
            ):
                return True
    return False


@pytest.mark.parametrize("path", DOCKERFILES)
def test_installs_the_lock_with_uv(path: str) -> None:
    dockerfile = parse_dockerfile(path)
    syncs = [i for i in dockerfile.of("RUN") if "uv sync" in i.args]
    assert len(syncs) == 1, "one locked install"
    (sync,) = syncs
    for flag in ("--locked", "--no-install-project", "--mount=type=cache"):
        assert flag in sync.args, flag
    # One room per image: its own group only, never the developer's default set (dev tools and
    # every other service's libraries).
    assert "--no-default-groups --group " in sync.args or "--only-group " in sync.args
    copied = [src for i in dockerfile.of("COPY", sync.stage) for src in copy_sources(i)]
    assert {"pyproject.toml", "uv.lock"} <= set(copied)
    uv_images = [i.args for i in dockerfile.of("FROM") if "astral-sh/uv" in i.args]
    assert uv_images and re.search(r"astral-sh/uv:\d+\.\d+\.\d+ ", uv_images[0] + " "), (
        "uv pinned to a version"
    )


@pytest.mark.parametrize("path", DOCKERFILES)
def test_is_multi_stage_on_slim_python_and_leaves_uv_behind(path: str) -> None:
    dockerfile = parse_dockerfile(path)
    final = dockerfile.final_stage
    assert final >= 1, "a builder stage and a runtime stage"
    assert dockerfile.base_image(final) == "python:3.11-slim"
    (sync,) = [i for i in dockerfile.of("RUN") if "uv sync" in i.args]
    # /opt/venv points at the builder's interpreter: the runtime must have the same one.
    assert dockerfile.base_image(sync.stage) == dockerfile.base_image(final)
    final_copies = [i.args for i in dockerfile.of("COPY", final)]
    assert not any("--from=uv" in c or "/uv " in c for c in final_copies), "no uv at run time"
    assert any(c.startswith("--from=builder /opt/venv") for c in final_copies)
    for run in dockerfile.of("RUN", final):
        assert not re.search(r"apt-get install|gcc|build-essential|pip install", run.args), run.args


@pytest.mark.parametrize("path", DOCKERFILES)
def test_runs_as_a_user_that_is_not_root(path: str) -> None:
    dockerfile = parse_dockerfile(path)
    users = dockerfile.of("USER", dockerfile.final_stage)
    assert users, "no USER: the container would run as root"
    assert users[-1].args not in ("root", "0", "0:0")
    last = max(i for i, ins in enumerate(dockerfile.instructions) if ins.keyword == "USER")
    after = {i.keyword for i in dockerfile.instructions[last + 1 :]}
    assert "RUN" not in after and "USER" not in after


@pytest.mark.parametrize("path", DOCKERFILES)
def test_has_a_healthcheck_or_its_services_do(path: str) -> None:
    services = built_by(path)
    assert services, f"no compose service builds {path}"
    if parse_dockerfile(path).of("HEALTHCHECK"):
        return
    for compose, name, service in services:
        if str(service.get("restart")) != "no":
            assert healthcheck_test(service), f"{compose}: {name} has no healthcheck"


@pytest.mark.parametrize("path", DOCKERFILES)
def test_its_services_run_under_an_init(path: str) -> None:
    """PID 1 of a container ignores SIGTERM it has no handler for, and must reap orphans: the
    code server's runs and Airflow's tasks are child processes. `init: true` puts tini there."""
    for compose, name, service in built_by(path):
        assert service.get("init") is True, f"{compose}: {name}"


@pytest.mark.parametrize("path", DOCKERFILES)
def test_bakes_no_secret(path: str) -> None:
    for ins in parse_dockerfile(path).instructions:
        if ins.keyword not in ("ARG", "ENV"):
            continue
        for name in re.findall(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_]*)=", " " + ins.args) or [
            ins.args.split("=")[0].split()[0]
        ]:
            assert not SECRET_NAME.search(name), f"{path}: {ins.keyword} {name}"
        assert not re.search(r"://[^/@\s:]+:[^@\s]+@", ins.args), f"{path}: a URL with a password"


def test_the_secret_check_would_catch_one() -> None:
    text = (REPO / "api/Dockerfile").read_text() + "\nENV FRAUD_API_RELOAD_TOKEN=hunter2\n"
    dockerfile = parse_dockerfile("api/Dockerfile", text)
    (env,) = [i for i in dockerfile.of("ENV") if "TOKEN" in i.args]
    assert SECRET_NAME.search(env.args.split("=")[0])


@pytest.mark.parametrize("path", DOCKERFILES)
def test_copies_only_what_exists_and_is_in_the_build_context(path: str) -> None:
    sources = [src for i in parse_dockerfile(path).of("COPY") for src in copy_sources(i)]
    assert sources
    for source in sources:
        assert (REPO / source).exists(), f"{path}: COPY {source}: no such path"
        assert not ignored(source), f"{path}: COPY {source}, but .dockerignore leaves it out"


def test_dockerignore_keeps_local_state_and_secrets_out() -> None:
    for path in (
        ".venv",
        ".git",
        ".env",
        "data/raw/creditcard.csv",
        "models/production",
        "mlruns",
        "mlartifacts",
        "mlflow.db",
        "predictions.db",
        "predictions.db-wal",
        ".dagster_home",
        ".airflow_home",
        ".stack/stack.json",
        ".pytest_cache",
        "fraud_assets/__pycache__/x.pyc",
    ):
        assert ignored(path), f"{path} would be sent to the builder"
    for path in ("pyproject.toml", "uv.lock", "fraud_core/bundle.py", "api/main.py"):
        assert not ignored(path), path


@pytest.mark.parametrize("path", DOCKERFILES)
def test_packages_left_out_are_not_needed(path: str) -> None:
    """`--no-install-package` trims only NCCL, and only from an image whose group brings it."""
    (sync,) = [i for i in parse_dockerfile(path).of("RUN") if "uv sync" in i.args]
    left_out = set(re.findall(r"--no-install-package ([\w.-]+)", sync.args))
    assert left_out <= ALWAYS_OPTIONAL, "trim an image by its dependency group, not by hand"
    if "nvidia-nccl-cu12" in lock_closure(image_roots(sync.args)):
        assert left_out == ALWAYS_OPTIONAL, "470 MB of GPU collectives on a CPU-only image"


def test_the_airflow_image_bakes_the_dag_folder() -> None:
    dockerfile = parse_dockerfile("airflow_bridge/Dockerfile")
    env = " ".join(i.args for i in dockerfile.of("ENV", dockerfile.final_stage))
    assert "AIRFLOW__CORE__DAGS_FOLDER=/app/airflow_bridge/dags" in env
    assert "AIRFLOW_HOME=/opt/airflow" in env
    workdirs = [i.args for i in dockerfile.instructions if i.keyword in ("WORKDIR", "COPY")]
    assert workdirs.index("/app") < workdirs.index("airflow_bridge/ airflow_bridge/")
    assert (REPO / "airflow_bridge/dags/weekly_retrain.py").exists()


@pytest.mark.parametrize("path", ENTRYPOINTS)
def test_entrypoints_are_strict_shell_scripts(path: str) -> None:
    script = REPO / path
    text = script.read_text()
    assert text.startswith("#!/bin/sh\n")
    assert "\nset -eu\n" in text
    assert re.search(r"^exec ", text, re.MULTILINE), "exec: the server gets the signals"
    subprocess.run(["sh", "-n", str(script)], check=True)
    copies = [i.args for d in DOCKERFILES for i in parse_dockerfile(d).of("COPY") if path in i.args]
    assert copies and all("--chmod=0755" in c for c in copies), "executable in the image"


def _fake(bin_dir: Path, name: str) -> None:
    """A stand-in for `name` that prints its arguments as JSON."""
    bin_dir.mkdir(exist_ok=True)
    tool = bin_dir / name
    tool.write_text(f"#!{sys.executable}\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)


def _run(script: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    path = [env.pop("BIN"), str(Path(sys.executable).parent), "/usr/bin", "/bin"]
    base = {"PATH": os.pathsep.join(path)}
    return subprocess.run(
        ["sh", str(REPO / script), *args],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPO,
    )


def test_airflow_entrypoint_writes_the_password_file(tmp_path: Path) -> None:
    _fake(tmp_path / "bin", "airflow")
    passwords = tmp_path / "home" / "passwords.json"
    result = _run(
        "airflow_bridge/deploy/entrypoint.sh",
        {
            "BIN": str(tmp_path / "bin"),
            "AIRFLOW_PASSWORD": 'p"w\\1',
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "airflow:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        },
        "api-server",
        "--port",
        "8080",
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == ["api-server", "--port", "8080"]
    assert json.loads(passwords.read_text()) == {"airflow": 'p"w\\1'}
    assert stat.S_IMODE(passwords.stat().st_mode) == 0o600


def test_airflow_entrypoint_writes_nothing_without_a_password(tmp_path: Path) -> None:
    _fake(tmp_path / "bin", "airflow")
    passwords = tmp_path / "passwords.json"
    result = _run(
        "airflow_bridge/deploy/entrypoint.sh",
        {
            "BIN": str(tmp_path / "bin"),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        },
        "scheduler",
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == ["scheduler"]
    assert not passwords.exists()


def test_mlflow_entrypoint_waits_for_the_database_then_serves(tmp_path: Path) -> None:
    _fake(tmp_path / "bin", "mlflow")
    url = pg_address().url("postgres")
    result = _run(
        "mlflow_server/entrypoint.sh",
        {"BIN": str(tmp_path / "bin"), "MLFLOW_BACKEND_STORE_URI": url},
    )
    assert result.returncode == 0, result.stderr
    argv = json.loads(result.stdout)
    assert argv[:3] == ["server", "--backend-store-uri", url]
    for flag, value in (
        ("--artifacts-destination", "/mlartifacts"),
        ("--host", "0.0.0.0"),
        ("--port", "5000"),
        ("--workers", "1"),
    ):
        assert argv[argv.index(flag) + 1] == value
    assert "is up" in result.stderr


def test_mlflow_entrypoint_gives_up_on_a_missing_database_without_leaking_it(
    tmp_path: Path,
) -> None:
    _fake(tmp_path / "bin", "mlflow")
    url = f"postgresql://mlflow:s3cret-pw@127.0.0.1:{free_port()}/mlflow"
    result = _run(
        "mlflow_server/entrypoint.sh",
        {"BIN": str(tmp_path / "bin"), "MLFLOW_BACKEND_STORE_URI": url, "MLFLOW_DB_WAIT_S": "1"},
    )
    assert result.returncode != 0
    assert result.stdout == "", "mlflow must not start"
    assert "did not answer within 1 s" in result.stderr
    assert "s3cret-pw" not in result.stderr


def test_mlflow_entrypoint_needs_the_backend_uri(tmp_path: Path) -> None:
    _fake(tmp_path / "bin", "mlflow")
    result = _run("mlflow_server/entrypoint.sh", {"BIN": str(tmp_path / "bin")})
    assert result.returncode != 0
    assert "MLFLOW_BACKEND_STORE_URI" in result.stderr


def test_dagster_entrypoint_writes_postgres_storage(tmp_path: Path) -> None:
    _fake(tmp_path / "bin", "dagster-webserver")
    home = tmp_path / "dagster_home"
    result = _run(
        "fraud_assets/deploy/entrypoint.sh",
        {
            "BIN": str(tmp_path / "bin"),
            "PYTHONPATH": str(REPO),
            "DAGSTER_HOME": str(home),
            "DAGSTER_POSTGRES_URL": "postgresql://postgres:pw@postgres:5432/dagster",
        },
        "dagster-webserver",
        "-p",
        "3000",
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == ["-p", "3000"]
    written = (home / "dagster.yaml").read_text()
    assert "env: DAGSTER_POSTGRES_URL" in written
    assert "pw@" not in written, "the URL stays in the environment"


def test_the_api_image_takes_the_original_models_mount_and_keeps_compose_s() -> None:
    """`-v ./models:/app/models` (the original README) is the default, `/models` (compose) the
    fallback; tests/deploy/test_api_models_dir.py serves from each with the real API."""
    dockerfile = parse_dockerfile("api/Dockerfile")
    final = dockerfile.final_stage
    env = dict(
        item.partition("=")[::2] for i in dockerfile.of("ENV", final) for item in i.args.split()
    )
    assert env["FRAUD_MODELS_DIR"] == "/app/models"
    assert env["FRAUD_MODELS_DIR_FALLBACK"] == "/models"
    runs = " ".join(i.args for i in dockerfile.of("RUN", final))
    # Both exist in the image and belong to the non-root user (uid 1000) the API runs as.
    assert "useradd --uid 1000 --gid app" in runs
    assert "mkdir -p /app/models /models" in runs
    assert "chown app:app /app/models /models" in runs
    header = (REPO / "api/Dockerfile").read_text().split("\nARG ", 1)[0]
    assert "-v ./models:/app/models " in header
    assert ':/models:ro" ' in header
    assert "FRAUD_MODELS_DIR_FALLBACK" in header
