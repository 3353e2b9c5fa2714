"""The compose files: valid Compose, and the same services, ports and settings as `make stack`."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import jsonschema
import pytest
import yaml

from fraud_core.settings import PlatformSettings
from scripts import stack
from tests.deploy._files import (
    BARE_VARIABLE,
    COMPOSE_FILES,
    INTERPOLATION,
    REPO,
    compose_schema,
    compose_text,
    depends_on,
    env_example_names,
    env_example_values,
    environment,
    healthcheck_test,
    is_one_shot,
    load_compose,
    named_volume_mounts,
    parse_dockerfile,
)

#: DESIGN.md's "Services and ports" (the original system's contract), as host ports. The tests read
#: nothing outside the repository, so the table is copied here; the README's table is checked too.
DESIGN_PORTS = {
    "mlflow": 5000,
    "airflow-apiserver": 8080,
    "api": 8000,
    "postgres": 5432,
    "airflow-db": 5433,
    "dagster-webserver": 3000,
    "redis": 6379,
}
#: Monitoring, beside the original contract: Prometheus's own port; Grafana moved off Dagster's.
MONITORING_PORTS = {"prometheus": 9090, "grafana": 3001}
#: "Fraud API 8000 (container listens on 8080)".
API_CONTAINER_PORT = 8080
#: The services compose runs on top of servicectl/stack/services.py's SERVICES.
COMPOSE_ONLY = {"postgres", "airflow-db", "dagster-code", "airflow-init", "grafana", "redis"}
#: Published ports of the compose-only servers: (port variable, container port).
DB_PORTS = {
    "postgres": ("POSTGRES_PORT", 5432),
    "airflow-db": ("AIRFLOW_DB_PORT", 5432),
    "redis": ("REDIS_PORT", 6379),
}
#: Secrets without a default: compose refuses to start until .env sets them.
REQUIRED_SECRETS = (
    "POSTGRES_PASSWORD",
    "AIRFLOW_DB_PASSWORD",
    "AIRFLOW_JWT_SECRET",
    "AIRFLOW_API_SECRET_KEY",
)
#: Variables whose .env value is a path or a loopback URL for `make demo`: a container that reads
#: one must get its own value from `environment:` (which wins over `env_file:`).
LOCAL_ONLY = (
    "MLFLOW_TRACKING_URI",
    "FRAUD_MODELS_DIR",
    "FRAUD_DATA_DIR",
    "DAGSTER_HOME",
    "DAGSTER_WEBSERVER_URL",
    "FRAUD_PREDICTION_LOG_URL",
)
#: What the containers that stack.py does not know read, on top of SERVICES' `env`.
EXTRA_READS = {
    "dagster-code": (*stack.TRAINING_ENV, "FRAUD_PREDICTION_LOG_URL"),
    "api": ("FRAUD_MODELS_DIR", "FRAUD_PREDICTION_LOG_URL", "MLFLOW_TRACKING_URI"),
}
SECRET_NAME = re.compile(r"(PASSWORD|SECRET|TOKEN|_KEY)($|_)")
#: Names that match SECRET_NAME but hold a switch, not a secret.
NOT_SECRETS = frozenset({"FRAUD_API_REQUIRE_SCORE_KEY"})
URL_PASSWORD = re.compile(r"://[^/@\s:]+:([^@\s]+)@")


def strings_of(data: Any) -> Iterator[str]:
    """Every string in parsed YAML, keys included."""
    if isinstance(data, str):
        yield data
    elif isinstance(data, dict):
        for key, value in data.items():
            yield from strings_of(key)
            yield from strings_of(value)
    elif isinstance(data, list):
        for item in data:
            yield from strings_of(item)


def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(compose["services"])


def top() -> dict[str, Any]:
    return load_compose("docker-compose.yml")


def expected_ports(name: str) -> list[str]:
    if name in stack.BY_NAME and stack.BY_NAME[name].port_env:
        s = stack.BY_NAME[name]
        return [f"${{{s.port_env}:-{s.default_port}}}:{s.container_port}"]
    if name in DB_PORTS:
        env, container = DB_PORTS[name]
        return [f"${{{env}:-{DESIGN_PORTS[name]}}}:{container}"]
    if name == "grafana":
        return [f"${{GRAFANA_PORT:-{MONITORING_PORTS['grafana']}}}:3000"]
    return []


# --- checks that return what is wrong (the mutation test runs them on a broken copy) --------------


def schema_problems(compose: dict[str, Any]) -> list[str]:
    # The schema says draft-07 in a form jsonschema does not recognise (https, no "#"), so
    # validator_for() would fall back to 2020-12: name the draft.
    validator = jsonschema.Draft7Validator(compose_schema())
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in validator.iter_errors(compose)
    ]


def port_problems(compose: dict[str, Any]) -> list[str]:
    problems = []
    for name, service in services(compose).items():
        ports = [str(p) for p in service.get("ports", [])]
        if ports != expected_ports(name):
            problems.append(f"{name}: ports {ports}, expected {expected_ports(name)}")
    return problems


def healthcheck_problems(compose: dict[str, Any]) -> list[str]:
    problems = []
    for name, service in services(compose).items():
        if is_one_shot(service):
            continue
        test = healthcheck_test(service)
        if not test:
            problems.append(f"{name}: no healthcheck")
            continue
        s = stack.BY_NAME.get(name)
        probe = f"127.0.0.1:{s.container_port}{s.health_path}" if s and s.health_path else ""
        if probe and not re.search(re.escape(probe) + r"""(['"\s]|$)""", test):
            problems.append(f"{name}: healthcheck {test!r} does not ask {s.health_path}")
    return problems


def depends_on_problems(compose: dict[str, Any]) -> list[str]:
    problems = []
    all_services = services(compose)
    for name, service in all_services.items():
        for target, spec in depends_on(service).items():
            condition = spec.get("condition")
            if target not in all_services:
                problems.append(f"{name}: depends on unknown {target}")
            elif is_one_shot(all_services[target]):
                if condition != "service_completed_successfully":
                    problems.append(f"{name} -> {target}: {condition}, not completed_successfully")
            elif condition != "service_healthy":
                problems.append(f"{name} -> {target}: {condition}, not service_healthy")
            elif not healthcheck_test(all_services[target]):
                problems.append(f"{name} -> {target}: waits for health that is never reported")
    return problems


def secret_problems(compose: dict[str, Any]) -> list[str]:
    problems = []
    for name, service in services(compose).items():
        for key, value in environment(service).items():
            if (
                SECRET_NAME.search(key)
                and key not in NOT_SECRETS
                and not re.fullmatch(r"\$\{[^}]+\}", value)
            ):
                problems.append(f"{name}: {key} is a literal, not ${{...}}")
            for password in URL_PASSWORD.findall(value):
                if not password.startswith("${"):
                    problems.append(f"{name}: {key} holds a literal password")
    return problems


# --- the schema -----------------------------------------------------------------------------------


def test_the_vendored_schema_is_the_compose_specification() -> None:
    schema = compose_schema()
    assert schema["$schema"] == "https://json-schema.org/draft-07/schema"
    assert schema["$id"] == "compose_spec.json"
    assert schema["title"] == "Compose Specification"
    jsonschema.Draft7Validator.check_schema(schema)
    assert {"service", "healthcheck", "volume"} <= set(schema["definitions"])


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_compose_file_matches_the_compose_specification(name: str) -> None:
    assert schema_problems(load_compose(name)) == []


def test_the_schema_rejects_what_compose_would() -> None:
    compose = top()
    compose["services"]["api"]["healthchek"] = {"test": ["CMD", "true"]}
    compose["services"]["mlflow"]["depends_on"]["postgres"]["condition"] = "service_ready"
    problems = schema_problems(compose)
    assert any("healthchek" in p for p in problems), problems
    assert any("service_ready" in p for p in problems), problems


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_every_interpolated_variable_is_in_env_example(name: str) -> None:
    # What compose interpolates: the strings of the file (comments are not).
    strings = list(strings_of(load_compose(name)))
    used = {var for text in strings for var in INTERPOLATION.findall(text)}
    assert used, f"{name} reads nothing from .env"
    assert used - env_example_names() == set()
    bare = [text for text in strings if BARE_VARIABLE.search(text)]
    assert bare == [], "write ${NAME}, or $$ for a literal dollar"


def test_required_secrets_have_no_default_and_are_left_empty() -> None:
    values = env_example_values()
    for secret in REQUIRED_SECRETS:
        assert values.get(secret) == "", f".env.example must leave {secret} for the user to set"
        for name in COMPOSE_FILES:
            for match in re.finditer(r"\$\{" + secret + r"(?P<op>:?[-?])?", compose_text(name)):
                assert match.group("op") == ":?", f"{name}: {secret} must be required (:?)"


# --- the same services as servicectl.stack ------------------------------------------------------


def test_services_are_stacks_plus_the_compose_only_ones() -> None:
    assert set(services(top())) == {s.name for s in stack.SERVICES} | COMPOSE_ONLY


def test_stack_ports_are_designs() -> None:
    for s in stack.SERVICES:
        if s.port_env:
            assert s.default_port == {**DESIGN_PORTS, **MONITORING_PORTS}[s.name], s.name
    assert stack.BY_NAME["api"].container_port == API_CONTAINER_PORT


def test_readme_ports_table_is_designs() -> None:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Production stack", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2 or not cells[0].startswith("`"):
            continue
        port = re.match(r"(\d+)(?: \(`([A-Z_]+)`)?", cells[1])
        if port:
            rows[cells[0].split("`")[1]] = (int(port.group(1)), port.group(2))
    assert {name: port for name, (port, _) in rows.items()} == DESIGN_PORTS
    for name, (_, env) in rows.items():
        assert env == (stack.BY_NAME[name].port_env if name in stack.BY_NAME else DB_PORTS[name][0])


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_published_ports_are_designs(name: str) -> None:
    assert port_problems(load_compose(name)) == []


def test_databases_are_published_on_5432_and_5433() -> None:
    compose = top()
    assert compose["services"]["postgres"]["ports"] == ["${POSTGRES_PORT:-5432}:5432"]
    assert compose["services"]["airflow-db"]["ports"] == ["${AIRFLOW_DB_PORT:-5433}:5432"]


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_every_long_running_service_has_a_healthcheck(name: str) -> None:
    assert healthcheck_problems(load_compose(name)) == []


#: Every Airflow role: its command and what its healthcheck asks.
AIRFLOW_ROLES = {
    "airflow-apiserver": ("api-server", "/api/v2/monitor/health"),
    "airflow-scheduler": ("scheduler", "--job-type SchedulerJob --local"),
    "airflow-dag-processor": ("dag-processor", "--job-type DagProcessorJob --local"),
    "airflow-triggerer": ("triggerer", "--job-type TriggererJob --local"),
}


@pytest.mark.parametrize("name", ["docker-compose.yml", "airflow_bridge/docker-compose.yml"])
def test_every_airflow_role_runs_from_one_image_with_its_own_check(name: str) -> None:
    compose = services(load_compose(name))
    scheduler = compose["airflow-scheduler"]
    for role, (command, check) in AIRFLOW_ROLES.items():
        service = compose[role]
        assert service["command"][0] == command, role
        assert check in healthcheck_test(service), role
        # The same image and settings as the scheduler (the triggerer imports airflow_bridge's
        # trigger from that image, with the scheduler's database and secrets).
        assert service["image"] == scheduler["image"] == "fraud-platform-airflow", role
        assert service["build"] == scheduler["build"], role
        env = environment(service)
        assert {key: env.get(key) for key in environment(scheduler)} == environment(scheduler)
        assert depends_on(service)["airflow-init"] == {
            "condition": "service_completed_successfully"
        }, role


def test_workers_have_their_own_checks() -> None:
    compose = services(top())
    assert healthcheck_test(compose["dagster-daemon"]) == "dagster-daemon liveness-check"
    assert "--job-type SchedulerJob --local" in healthcheck_test(compose["airflow-scheduler"])
    assert "--job-type DagProcessorJob --local" in healthcheck_test(
        compose["airflow-dag-processor"]
    )
    assert "grpc-health-check -p 4000" in healthcheck_test(compose["dagster-code"])


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_depends_on_waits_for_health_or_completion(name: str) -> None:
    assert depends_on_problems(load_compose(name)) == []


def test_start_order_is_stacks() -> None:
    compose = services(top())
    for later, first in stack.STARTS_AFTER.items():
        assert depends_on(compose[later])[first]["condition"] == "service_healthy"
    for name in compose:
        if name.startswith("airflow-") and name not in ("airflow-init", "airflow-db"):
            deps = depends_on(compose[name])
            assert deps["airflow-init"]["condition"] == "service_completed_successfully"
    assert compose["airflow-init"]["command"] == ["db", "migrate"]


def test_a_broken_copy_is_caught(tmp_path: Path) -> None:
    """Each check finds its fault in a mutated copy of docker-compose.yml."""
    text = compose_text("docker-compose.yml")
    broken = text.replace('"${DAGSTER_PORT:-3000}:3000"', '"3001:3000"')
    broken = broken.replace('      test: ["CMD", "dagster-daemon", "liveness-check"]\n', "")
    broken = broken.replace(
        "condition: service_completed_successfully", "condition: service_healthy"
    )
    assert broken != text
    copy = tmp_path / "docker-compose.yml"
    copy.write_text(broken)
    compose = yaml.safe_load(copy.read_text())

    assert port_problems(compose) == [
        "dagster-webserver: ports ['3001:3000'], expected ['${DAGSTER_PORT:-3000}:3000']"
    ]
    assert "dagster-daemon: no healthcheck" in healthcheck_problems(compose)
    assert any("airflow-init" in p for p in depends_on_problems(compose))
    del compose["services"]["api"]["healthcheck"]
    compose["services"]["api"]["environment"]["FRAUD_API_RELOAD_TOKEN"] = "hunter2"
    assert "api: no healthcheck" in healthcheck_problems(compose)
    assert secret_problems(compose) == ["api: FRAUD_API_RELOAD_TOKEN is a literal, not ${...}"]


# --- settings -------------------------------------------------------------------------------------


def test_each_service_gets_the_variables_stack_gives_it() -> None:
    compose = services(top())
    for s in stack.SERVICES:
        missing = set(s.env) - set(environment(compose[s.name]))
        assert not missing, f"{s.name} lacks {sorted(missing)}"


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_interpolation_defaults_are_the_code_defaults(name: str) -> None:
    """`${FRAUD_X:-default}` falls back to what the platform itself would use."""
    fields = PlatformSettings.model_fields
    defaults = {
        str(f.validation_alias): f.default
        for f in fields.values()
        if isinstance(f.validation_alias, str)
    }
    checked = 0
    for text in strings_of(load_compose(name)):
        for var, default in re.findall(r"\$\{(FRAUD_[A-Z0-9_]+):-([^}$]*)\}", text):
            if var in defaults:
                assert default == str(defaults[var]), f"{name}: {var}"
                checked += 1
    assert checked or name != "docker-compose.yml"


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_no_secret_literals(name: str) -> None:
    assert secret_problems(load_compose(name)) == []


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_containers_override_the_local_paths_of_env(name: str) -> None:
    """`env_file: .env` brings `make demo`'s paths and loopback URLs; `environment:` must win."""
    for service_name, service in services(load_compose(name)).items():
        if not service.get("env_file"):
            continue
        reads = set(EXTRA_READS.get(service_name, ()))
        if service_name in stack.BY_NAME:
            reads |= set(stack.BY_NAME[service_name].env)
        missing = (reads & set(LOCAL_ONLY)) - set(environment(service))
        assert not missing, f"{name}: {service_name} would take {sorted(missing)} from .env"
        for key, value in environment(service).items():
            if key in LOCAL_ONLY:
                assert "127.0.0.1" not in value, f"{service_name}: {key}={value}"
                assert not value.startswith(("sqlite:///mlflow", "models", "data/")), key


def _stack() -> stack.Stack:
    return stack.Stack(
        root=Path("/nowhere"),
        postgres_url="postgresql://postgres@db:5432",
        db_prefix="fraud_",
        ports={s.name: s.default_port for s in stack.SERVICES if s.default_port},
        secrets={"jwt": "j", "api_secret": "a", "airflow_password": "p"},
    )


def test_platform_addresses_match_stack_env() -> None:
    """Every variable Stack.env() sets for the platform is set for Dagster, pointing at compose."""
    with mock.patch.dict("os.environ", {}, clear=True):
        env = _stack().env()
    # The feature state is the API's alone (test_each_service_gets_the_variables_stack_gives_it
    # checks the api service has it); Dagster never reads it.
    api_only = {"FRAUD_FEATURE_STATE", "FRAUD_FEATURE_STATE_PREFIX", "FRAUD_API_REQUIRE_SCORE_KEY"}
    platform = set(env) - set(_stack().airflow_env()) - {"PATH"} - api_only
    compose = services(top())
    assert environment(compose["api"])["FRAUD_FEATURE_STATE"] == "redis://redis:6379/0"
    assert environment(compose["api"])["FRAUD_API_REQUIRE_SCORE_KEY"] == "true"
    for name in ("dagster-code", "dagster-webserver", "dagster-daemon"):
        assert platform <= set(environment(compose[name])), name
    dagster = environment(compose["dagster-code"])
    assert dagster["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert dagster["DAGSTER_WEBSERVER_URL"] == "http://dagster-webserver:3000"
    assert (
        dagster["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"]
    )
    assert environment(compose["mlflow"])["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    assert (
        environment(compose["api"])["FRAUD_PREDICTION_LOG_URL"]
        == dagster["FRAUD_PREDICTION_LOG_URL"]
    )


#: Airflow settings of Stack.airflow_env() that the image or the command sets instead.
AIRFLOW_SET_ELSEWHERE = {
    "AIRFLOW_HOME": "the image (ENV AIRFLOW_HOME=/opt/airflow)",
    "AIRFLOW__CORE__DAGS_FOLDER": "the image (the DAG folder is baked in)",
    "AIRFLOW__LOGGING__BASE_LOG_FOLDER": "Airflow's default, $AIRFLOW_HOME/logs: the volume",
    "AIRFLOW__API__HOST": "the api-server command (--host 0.0.0.0)",
    "AIRFLOW__API__PORT": "the api-server command (--port 8080)",
}
#: Airflow settings whose value is the same in every shape (not an address, not a secret).
AIRFLOW_SAME_VALUE = (
    "AIRFLOW__CORE__EXECUTOR",
    "AIRFLOW__CORE__LOAD_EXAMPLES",
    "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION",
    "AIRFLOW__API__WORKERS",
    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS",
    "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK",
    "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT",
)


@pytest.mark.parametrize("name", ["docker-compose.yml", "airflow_bridge/docker-compose.yml"])
def test_airflow_env_matches_stack_airflow_env(name: str) -> None:
    expected = _stack().airflow_env()
    api_port = stack.BY_NAME["airflow-apiserver"].container_port
    airflow = {k: v for k, v in services(load_compose(name)).items() if k.startswith("airflow-")}
    airflow.pop("airflow-db", None)
    assert set(airflow) == {
        "airflow-init",
        *(s.name for s in stack.SERVICES if "airflow" in s.name),
    }
    envs = {n: environment(s) for n, s in airflow.items()}
    for service_name, env in envs.items():
        missing = set(expected) - set(AIRFLOW_SET_ELSEWHERE) - set(env)
        assert not missing, f"{service_name} lacks {sorted(missing)}"
        for key in AIRFLOW_SAME_VALUE:
            assert env[key] == expected[key], f"{service_name}: {key}"
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == (
            f"http://airflow-apiserver:{api_port}/execution/"
        )
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
        assert "@airflow-db:5432/airflow" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    # Tasks report with JWTs the scheduler signs and the API server checks: one secret.
    assert len({env["AIRFLOW__API_AUTH__JWT_SECRET"] for env in envs.values()}) == 1
    assert expected["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] == f"{stack.AIRFLOW_USER}:admin"
    assert envs["airflow-apiserver"]["AIRFLOW_PASSWORD"] == "${AIRFLOW_PASSWORD:-airflow}"
    assert airflow["airflow-apiserver"]["command"][-4:] == ["--host", "0.0.0.0", "--port", "8080"]


def test_airflow_drives_the_dagster_webserver_service() -> None:
    compose = services(top())
    port = stack.BY_NAME["dagster-webserver"].container_port
    for name in AIRFLOW_ROLES:
        assert environment(compose[name])["DAGSTER_WEBSERVER_URL"] == (
            f"http://dagster-webserver:{port}"
        )


def test_each_service_uses_its_database() -> None:
    """SERVICES' `database` is the one in the service's URL, and the database is created."""
    compose = services(top())
    url_of = {
        "mlflow": "MLFLOW_BACKEND_STORE_URI",
        "dagster-webserver": "DAGSTER_POSTGRES_URL",
        "dagster-daemon": "DAGSTER_POSTGRES_URL",
        "airflow-apiserver": "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
        "airflow-scheduler": "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
        "airflow-dag-processor": "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
        "airflow-triggerer": "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
        "api": "FRAUD_PREDICTION_LOG_URL",
    }
    assert set(url_of) == {s.name for s in stack.SERVICES if s.database}
    init_sql = (REPO / "mlflow_server/initdb/10-create-databases.sql").read_text()
    created = {
        "postgres": set(re.findall(r"CREATE DATABASE (\w+);", init_sql))
        | {environment(compose["postgres"])["POSTGRES_DB"]},
        "airflow-db": {environment(compose["airflow-db"])["POSTGRES_DB"]},
    }
    assert created["postgres"] == {"mlflow", "dagster", "predictions"}
    for name, key in url_of.items():
        url = environment(compose[name])[key]
        match = re.search(r"@([\w-]+):5432/(\w+)$", url)
        assert match, f"{name}: {key} is not a PostgreSQL URL on port 5432"
        server, database = match.groups()
        assert database == stack.BY_NAME[name].database, name
        assert database in created[server], f"{name}: {database} is not created on {server}"
    postgres_mounts = [str(v) for v in compose["postgres"]["volumes"]]
    assert "./mlflow_server/initdb:/docker-entrypoint-initdb.d:ro" in postgres_mounts


def test_named_volumes_hold_the_state() -> None:
    compose = top()
    declared = set(compose["volumes"])
    mounts = {name: named_volume_mounts(s) for name, s in services(compose).items()}
    used = {volume for m in mounts.values() for volume in m.values()}
    assert used == declared, "every volume declared is used, and every one used is declared"
    assert mounts["postgres"]["/var/lib/postgresql/data"] == "postgres-data"
    assert mounts["airflow-db"]["/var/lib/postgresql/data"] == "airflow-db-data"
    assert mounts["mlflow"]["/mlartifacts"] == "mlflow-artifacts"
    # The code server writes the bundles the API reads: the same volume, where each looks for it.
    code, api = services(compose)["dagster-code"], services(compose)["api"]
    assert mounts["dagster-code"][environment(code)["FRAUD_MODELS_DIR"]] == "models"
    assert mounts["api"][environment(api)["FRAUD_MODELS_DIR"]] == "models"
    assert "models:/models:ro" in api["volumes"]
    storage = environment(code)["DAGSTER_HOME"] + "/storage"
    for name in ("dagster-code", "dagster-webserver", "dagster-daemon"):
        assert mounts[name][storage] == "dagster-storage", name


def test_dagster_webserver_and_daemon_load_the_code_server() -> None:
    compose = services(top())
    workspace = yaml.safe_load((REPO / "fraud_assets/deploy/workspace.yaml").read_text())
    (entry,) = workspace["load_from"]
    grpc = entry["grpc_server"]
    code_command = compose["dagster-code"]["command"]
    assert grpc["host"] == "dagster-code"
    assert str(grpc["port"]) == code_command[code_command.index("-p") + 1]
    assert grpc["location_name"] == code_command[code_command.index("--location-name") + 1]
    pyproject = (REPO / "pyproject.toml").read_text()
    assert f'code_location_name = "{grpc["location_name"]}"' in pyproject
    for name in ("dagster-webserver", "dagster-daemon"):
        command = compose[name]["command"]
        assert command[command.index("-w") + 1] == "/opt/dagster/workspace.yaml"
    # The local workspace stays the in-process one.
    local = yaml.safe_load((REPO / "workspace.yaml").read_text())
    assert "python_module" in local["load_from"][0]


def test_mlflow_accepts_the_host_names_it_is_called_by() -> None:
    env = environment(services(top())["mlflow"])
    hosts = env["MLFLOW_SERVER_ALLOWED_HOSTS"].split(":-", 1)[1].rstrip("}").split(",")
    assert {"mlflow:*", "localhost:*", "127.0.0.1:*"} <= set(hosts)
    dagster = environment(services(top())["dagster-code"])
    assert dagster["MLFLOW_TRACKING_URI"].split("//")[1].split(":")[0] == "mlflow"


# --- docker compose itself, where it is installed -------------------------------------------------


def _compose_plugin() -> str | None:
    docker = shutil.which("docker")
    if docker is None:
        return None
    probe = subprocess.run(
        [docker, "compose", "version"], capture_output=True, text=True, timeout=30, check=False
    )
    return docker if probe.returncode == 0 else None


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_docker_compose_config_accepts_the_file(name: str, tmp_path: Path) -> None:
    docker = _compose_plugin()
    if docker is None:
        pytest.skip("the docker compose plugin is not installed here (`docker compose version`)")
    env_file = tmp_path / "throwaway.env"
    env_file.write_text("".join(f"{secret}=test-{secret.lower()}\n" for secret in REQUIRED_SECRETS))
    result = subprocess.run(
        [docker, "compose", "-f", name, "--env-file", str(env_file), "config", "-q"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


# --- the original system's commands ---------------------------------------------------------------

#: `docker exec airflow_webserver airflow dags trigger weekly_retrain` (and `dags list`): the
#: container names of the original system's README, on the services that now do that work.
ORIGINAL_CONTAINERS = {
    "docker-compose.yml": {"airflow_webserver": "airflow-apiserver", "mlflow_server": "mlflow"},
    "airflow_bridge/docker-compose.yml": {"airflow_webserver": "airflow-apiserver"},
    "mlflow_server/docker-compose.yml": {"mlflow_server": "mlflow"},
}


def _dockerfile_env(path: str) -> dict[str, str]:
    dockerfile = parse_dockerfile(path)
    env: dict[str, str] = {}
    for instruction in dockerfile.of("ENV", dockerfile.final_stage):
        for item in instruction.args.split():
            name, _, value = item.partition("=")
            env[name] = value
    return env


def original_name_problems(name: str, compose: dict[str, Any]) -> list[str]:
    """What keeps the original README's `docker exec <container> airflow ...` from working."""
    problems = []
    named = {s.get("container_name"): n for n, s in services(compose).items()}
    for container, service_name in ORIGINAL_CONTAINERS[name].items():
        if named.get(container) != service_name:
            problems.append(f"{container} is {named.get(container)}, not {service_name}")
            continue
        if container != "airflow_webserver":
            continue
        service = services(compose)[service_name]
        # `docker exec` skips the entrypoint: the image's PATH and ENV, plus `environment:`.
        if service.get("build", {}).get("dockerfile") != "airflow_bridge/Dockerfile":
            problems.append(f"{container} is not the Airflow image")
            continue
        image_env = _dockerfile_env("airflow_bridge/Dockerfile")
        if not image_env.get("PATH", "").startswith("/opt/venv/bin:"):
            problems.append(f"{container}: `airflow` is not on the image's PATH")
        dags = image_env.get("AIRFLOW__CORE__DAGS_FOLDER", "")
        if not dags.startswith("/app/") or not (REPO / dags[5:] / "weekly_retrain.py").exists():
            problems.append(f"{container}: the DAGs folder {dags!r} does not hold weekly_retrain")
        env = environment(service)
        if "@airflow-db:5432/airflow" not in env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", ""):
            problems.append(f"{container}: the CLI cannot reach the metadata DB")
        if named_volume_mounts(service).get("/opt/airflow/logs") != "airflow-logs":
            problems.append(f"{container}: the task logs are not in /opt/airflow/logs")
    return problems


@pytest.mark.parametrize("name", sorted(ORIGINAL_CONTAINERS))
def test_the_original_container_names_resolve(name: str) -> None:
    assert original_name_problems(name, load_compose(name)) == []
    dag = (REPO / "airflow_bridge/dags/weekly_retrain.py").read_text()
    assert 'dag_id="weekly_retrain"' in dag


def test_a_container_name_on_the_wrong_service_is_caught() -> None:
    compose = top()
    del compose["services"]["airflow-apiserver"]["container_name"]
    compose["services"]["airflow-scheduler"]["container_name"] = "airflow_webserver"
    compose["services"]["airflow-apiserver"]["environment"].pop(
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"
    )
    assert original_name_problems("docker-compose.yml", compose) == [
        "airflow_webserver is airflow-scheduler, not airflow-apiserver"
    ]
    compose["services"]["airflow-scheduler"].pop("container_name")
    compose["services"]["airflow-apiserver"]["container_name"] = "airflow_webserver"
    assert original_name_problems("docker-compose.yml", compose) == [
        "airflow_webserver: the CLI cannot reach the metadata DB"
    ]


@pytest.mark.slow
def test_the_airflow_cli_has_the_original_commands(tmp_path: Path) -> None:
    """`airflow dags trigger` and `dags list` exist in the Airflow the image installs (its locked
    version, this venv's); `tasks logs`, which the original README named, is not in Airflow 3.2."""
    airflow = Path(sys.executable).parent / "airflow"
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    out = subprocess.run(
        [str(airflow), "dags", "--help"], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    commands = set(re.findall(r"^    ([a-z-]+)\s", out.stdout, re.MULTILINE))
    assert {"trigger", "list", "list-runs", "state"} <= commands, out.stdout
