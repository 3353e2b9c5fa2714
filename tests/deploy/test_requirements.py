"""requirements.txt and api/requirements.txt: pip's view of uv.lock, regenerated, never drifting.

Each file says in its header the `uv export` command that wrote it (`make requirements`); the test
runs that command on the lock and compares. What each holds is checked against the lock too: the
platform without the dev tools, and the API exactly as its image installs it.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess

import pytest

from tests.deploy._files import REPO, lock_packages, parse_dockerfile

FILES = ("requirements.txt", "api/requirements.txt")
EXPORT = re.compile(r"^#   uv export (?P<args>.+)$", re.MULTILINE)
PINNED = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==", re.MULTILINE)


def uv() -> list[str]:
    """The uv that runs the tests (`uv run` exports UV), else the one on PATH."""
    found = os.environ.get("UV") or shutil.which("uv")
    assert found, "uv is needed to check the lock (`make uv` installs it)"
    return [found]


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


def closure(groups: list[str]) -> set[str]:
    """The locked packages that the project's own dependencies and `groups` need, their extras
    (uvicorn[standard]) followed; markers ignored, as `uv export` keeps them as markers too."""
    packages = lock_packages()
    (project,) = [p for p in packages.values() if p.get("source", {}).get("editable")]
    roots = list(project.get("dependencies", []))
    roots += [d for group in groups for d in project["dev-dependencies"][group]]
    seen: set[tuple[str, tuple[str, ...]]] = set()
    todo = [(d["name"], tuple(sorted(d.get("extra", [])))) for d in roots]
    while todo:
        name, extras = todo.pop()
        if (name, extras) not in seen:
            seen.add((name, extras))
            deps = list(packages[name].get("dependencies", []))
            for extra in extras:
                deps += packages[name].get("optional-dependencies", {}).get(extra, [])
            todo += [(d["name"], tuple(sorted(d.get("extra", [])))) for d in deps]
    return {name for name, _ in seen}


@pytest.mark.parametrize("name", FILES)
def test_is_what_uv_export_writes_from_the_lock(name: str) -> None:
    args, body = split(name)
    assert "--locked" in args, "a lock that is out of date must fail, not be exported"
    result = subprocess.run(
        [*uv(), "export", "--quiet", *args],
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
    assert pinned(body) == closure(groups)
    dev_only = closure(["dev"]) - closure(groups)
    assert {"pytest", "ruff", "mypy"} <= dev_only
    assert not dev_only & pinned(body)


def test_the_api_file_is_what_the_api_image_installs() -> None:
    args, body = split("api/requirements.txt")
    assert "--no-emit-project" in args and "-e ." not in body
    (sync,) = [i for i in parse_dockerfile("api/Dockerfile").of("RUN") if "uv sync" in i.args]
    assert "--no-default-groups --group api " in sync.args + " "
    assert pinned(body) == closure(["api"])
    for name in ("dagster", "optuna", "matplotlib", "apache-airflow", "mlflow", "pytest"):
        assert name not in pinned(body), name
    # Hashes: every pinned package carries them (pip then checks every download).
    entries = re.split(r"\n(?=[A-Za-z0-9])", body.strip())
    assert entries and all("--hash=sha256:" in entry for entry in entries)
    # xgboost requires NCCL on Linux: left out, pip would refuse the file (hashes) or fetch it
    # unpinned. The image leaves it out with `--no-install-package`, which pip has no form of.
    assert "nvidia-nccl-cu12" in pinned(body)
