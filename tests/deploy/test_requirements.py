"""requirements.txt and api/requirements.txt: pip's view of uv.lock, regenerated, never drifting.

Each file says in its header the `uv export` command that wrote it (`make requirements`); the test
runs that command on the lock and compares. What each holds is checked against the lock too: the
platform without the dev tools, and the API exactly as its image installs it.
"""

from __future__ import annotations

import re
import shlex
import subprocess

import pytest

from tests.deploy._files import REPO, groups_closure, parse_dockerfile, uv

FILES = ("requirements.txt", "api/requirements.txt")
EXPORT = re.compile(r"^#   uv export (?P<args>.+)$", re.MULTILINE)
PINNED = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==", re.MULTILINE)


def split(name: str) -> tuple[list[str], str]:
    """The export options a file's header names, and the file without its header comments."""
    text = (REPO / name).read_text()
    match = EXPORT.search(text)
    assert match, f"{name}: no `#   uv export ...` line in the header"
    lines = text.splitlines(keepends=True)
    header = 0
    while lines[header].startswith("#"):
        header += 1
    return shlex.split(match.group("args")), "".join(lines[header:])


def pinned(body: str) -> set[str]:
    return {name.lower() for name in PINNED.findall(body)}


@pytest.mark.parametrize("name", FILES)
def test_is_what_uv_export_writes_from_the_lock(name: str) -> None:
    args, body = split(name)
    assert "--locked" in args, "a lock that is out of date must fail, not be exported"
    result = subprocess.run(
        [uv(), "export", "--quiet", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert body == result.stdout, f"{name} has drifted from uv.lock: run `make requirements`"


@pytest.mark.parametrize("name", FILES)
def test_says_it_is_generated_and_by_what(name: str) -> None:
    text = (REPO / name).read_text()
    assert text.startswith("# Generated from uv.lock by `make requirements`: do not edit")
    args, _ = split(name)
    makefile = (REPO / "Makefile").read_text()
    # The Makefile writes the header from the options it exports with: they cannot disagree.
    variable = "REQUIREMENTS_ALL" if name == "requirements.txt" else "REQUIREMENTS_API"
    options = re.search(rf"^{variable} = (.+)$", makefile, re.MULTILINE)
    assert options and args == ["--locked", "--no-header", *options.group(1).split()]
    assert f"export-requirements,{name},$({variable})," in makefile


def test_the_platform_file_is_every_group_but_dev_with_the_project() -> None:
    args, body = split("requirements.txt")
    assert body.startswith("-e .\n"), "the project itself, editable: its commands and imports"
    assert "--no-hashes" in args, "pip refuses an editable requirement in hash-checking mode"
    groups = ["dagster", "api", "mlflow-server", "airflow"]
    assert pinned(body) == groups_closure(groups)
    dev_only = groups_closure(["dev"]) - groups_closure(groups)
    assert {"pytest", "ruff", "mypy"} <= dev_only
    assert not dev_only & pinned(body)


def test_the_api_file_is_what_the_api_image_installs() -> None:
    args, body = split("api/requirements.txt")
    assert "--no-emit-project" in args and "-e ." not in body
    (sync,) = [i for i in parse_dockerfile("api/Dockerfile").of("RUN") if "uv sync" in i.args]
    assert "--no-default-groups --group api " in sync.args + " "
    assert pinned(body) == groups_closure(["api"])
    for name in ("dagster", "optuna", "matplotlib", "apache-airflow", "mlflow", "pytest"):
        assert name not in pinned(body), name
    # Hashes: every pinned package carries them (pip then checks every download).
    entries = re.split(r"\n(?=[A-Za-z0-9])", body.strip())
    assert entries and all("--hash=sha256:" in entry for entry in entries)
    # xgboost requires NCCL on Linux: left out, pip would refuse the file (hashes) or fetch it
    # unpinned. The image leaves it out with `--no-install-package`, which pip has no form of.
    assert "nvidia-nccl-cu12" in pinned(body)
