"""Reading the deployment files: compose files, Dockerfiles, .env.example, uv.lock.

There is no Docker engine on the test machines, so the files are checked as data: against the
Compose Specification's JSON schema (vendored, see README.md here) and against what
`servicectl/stack/` says each service needs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
SCHEMA = HERE / "compose-spec.json"

#: Every compose file of the project, relative to the repository root.
COMPOSE_FILES = (
    "docker-compose.yml",
    "mlflow_server/docker-compose.yml",
    "airflow_bridge/docker-compose.yml",
    "api/docker-compose.yml",
)
DOCKERFILES = (
    "mlflow_server/Dockerfile",
    "fraud_assets/Dockerfile",
    "airflow_bridge/Dockerfile",
    "api/Dockerfile",
)

#: `${NAME}`, `${NAME:-default}`, `${NAME:?message}`…: the variable's name.
INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")
#: A `$NAME` without braces (`$$` escapes a dollar): the project always writes `${NAME}`.
BARE_VARIABLE = re.compile(r"(?<!\$)\$(?=[A-Za-z_])")


@cache
def compose_text(name: str) -> str:
    return (REPO / name).read_text()


def load_compose(name: str) -> dict[str, Any]:
    """A compose file as YAML data (anchors and `<<` merges resolved); a fresh copy each call."""
    data = yaml.safe_load(compose_text(name))
    assert isinstance(data, dict), f"{name} is not a mapping"
    return data


@cache
def compose_schema() -> dict[str, Any]:
    return dict(json.loads(SCHEMA.read_text()))


def env_example_names() -> set[str]:
    """Every variable `.env.example` lists, set or commented out (`# NAME=value`)."""
    names = set()
    for line in (REPO / ".env.example").read_text().splitlines():
        match = re.match(r"^#?\s*([A-Z][A-Z0-9_]*)=", line)
        if match:
            names.add(match.group(1))
    return names


def env_example_values() -> dict[str, str]:
    """The variables `.env.example` sets (uncommented lines) and their values."""
    values = {}
    for line in (REPO / ".env.example").read_text().splitlines():
        match = re.match(r"^([A-Z][A-Z0-9_]*)=(.*)$", line)
        if match:
            values[match.group(1)] = match.group(2)
    return values


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's `environment:` as a mapping (list form `NAME=value` too)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def depends_on(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):  # the short form: only "started", which the checks refuse
        return {name: {"condition": "service_started"} for name in deps}
    return {str(k): dict(v) for k, v in deps.items()}


def healthcheck_test(service: dict[str, Any]) -> str:
    """The healthcheck command as one string ("" when there is none or it is disabled)."""
    check = service.get("healthcheck") or {}
    if check.get("disable"):
        return ""
    test = check.get("test", "")
    if isinstance(test, list):
        if not test or test[0] == "NONE":
            return ""
        test = " ".join(test[1:])
    return str(test)


def is_one_shot(service: dict[str, Any]) -> bool:
    return str(service.get("restart", "")) == "no"


def named_volume_mounts(service: dict[str, Any]) -> dict[str, str]:
    """{target path: volume name} of the named volumes a service mounts (not bind mounts)."""
    mounts = {}
    for item in service.get("volumes") or []:
        if isinstance(item, str):
            source, _, rest = item.partition(":")
            target = rest.split(":")[0]
            if source and not source.startswith((".", "/", "~", "$")):
                mounts[target] = source
        elif item.get("type") == "volume" and item.get("source"):
            mounts[item["target"]] = item["source"]
    return mounts


# --- Dockerfiles ----------------------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str
    args: str
    stage: int


@dataclass
class Dockerfile:
    path: str
    instructions: list[Instruction] = field(default_factory=list)
    #: ARG defaults declared before the first FROM (usable in FROM lines).
    global_args: dict[str, str] = field(default_factory=dict)

    def of(self, keyword: str, stage: int | None = None) -> list[Instruction]:
        return [
            i
            for i in self.instructions
            if i.keyword == keyword and (stage is None or i.stage == stage)
        ]

    @property
    def final_stage(self) -> int:
        return max(i.stage for i in self.instructions)

    def base_image(self, stage: int) -> str:
        (line,) = [i for i in self.of("FROM") if i.stage == stage]
        image = line.args.split()[0]
        return re.sub(
            r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: self.global_args[m.group(1)], image
        )


def parse_dockerfile(path: str, text: str | None = None) -> Dockerfile:
    """Instructions with continuation lines joined and comments dropped, numbered by stage."""
    text = (REPO / path).read_text() if text is None else text
    logical: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # comments may also sit between continuation lines
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    if current:
        logical.append(current)
    parsed = Dockerfile(path)
    stage = -1
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        if keyword == "ARG" and stage == -1:
            name, _, default = args.strip().partition("=")
            parsed.global_args[name] = default
        parsed.instructions.append(Instruction(keyword, " ".join(args.split()), stage))
    return parsed


def copy_sources(instruction: Instruction) -> list[str]:
    """The build-context paths a COPY reads (none for `COPY --from=stage`)."""
    words = instruction.args.split()
    if any(w.startswith("--from=") for w in words):
        return []
    paths = [w for w in words if not w.startswith("--")]
    return paths[:-1]


# --- uv.lock --------------------------------------------------------------------------------------


@cache
def lock_packages() -> dict[str, dict[str, Any]]:
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    return {p["name"]: p for p in lock["package"]}


#: A locked requirement: the package's name and the extras asked for (`uvicorn[standard]`).
Root = tuple[str, tuple[str, ...]]


def _root(requirement: dict[str, Any]) -> Root:
    return requirement["name"], tuple(sorted(requirement.get("extra", [])))


def lock_closure(roots: list[Root]) -> set[str]:
    """Every package the locked `roots` need, extras followed (markers ignored: a superset)."""
    packages = lock_packages()
    seen: set[Root] = set()
    todo = list(roots)
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        package = packages[name]
        deps = list(package.get("dependencies", []))
        for extra in extras:
            deps += package.get("optional-dependencies", {}).get(extra, [])
        todo += [_root(d) for d in deps]
    return {name for name, _ in seen}


def _project() -> dict[str, Any]:
    (project,) = [p for p in lock_packages().values() if p.get("source", {}).get("editable")]
    return project


def project_group(group: str) -> list[Root]:
    """The top-level requirements of a dependency group of pyproject.toml, as the lock has them."""
    return [_root(d) for d in _project()["dev-dependencies"][group]]


def project_dependencies() -> list[Root]:
    """The project's own requirements (the ML core's), as the lock has them."""
    return [_root(d) for d in _project().get("dependencies", [])]


def groups_closure(groups: list[str]) -> set[str]:
    """What `uv sync --no-default-groups --group G...` installs: the project's own dependencies
    and those groups, with everything they need."""
    return lock_closure(project_dependencies() + [r for g in groups for r in project_group(g)])


def image_roots(sync_args: str) -> list[Root]:
    """The top-level requirements a Dockerfile's `uv sync` installs, from its group flags."""
    only = re.findall(r"--only-group ([\w-]+)", sync_args)
    if only:
        return [root for group in only for root in project_group(group)]
    groups = re.findall(r"--group ([\w-]+)", sync_args)
    return project_dependencies() + [root for group in groups for root in project_group(group)]


def uv() -> str:
    """The uv that runs the tests (`uv run` exports UV), else the one on PATH."""
    found = os.environ.get("UV") or shutil.which("uv")
    assert found, "uv is needed to read the lock as uv does (`make uv` installs it)"
    return found
