"""Whether each service of the stack serves, in its own terms (HTTP, Dagster, Airflow)."""

from __future__ import annotations

import httpx

from servicectl import health as probes
from servicectl.process import alive, reap, tail
from servicectl.stack.errors import StackError
from servicectl.stack.services import AIRFLOW_COMPONENTS, AIRFLOW_USER, BY_NAME, DAG_ID
from servicectl.stack.state import Stack


def health(stack: Stack, name: str) -> tuple[bool, str]:
    """Whether `name` serves, and a word on why not."""
    service = BY_NAME[name]
    if service.health_path:
        ok, why = probes.http_ok(stack.url(name) + service.health_path)
        if not ok:
            return ok, why
    if name == "dagster-webserver":
        return probes.dagster_location_loaded(stack.url(name))
    if name == "dagster-daemon":
        return probes.dagster_daemons_healthy(stack.url("dagster-webserver"))
    if name.startswith("airflow-"):
        api = stack.url("airflow-apiserver")
        return probes.airflow_component_healthy(api, AIRFLOW_COMPONENTS.get(name))
    return True, "ok"


def health_or_exit(stack: Stack, name: str) -> tuple[bool, str]:
    """`health`, but a service whose process is gone is an error at once."""
    pid = stack.pids.get(name)
    if pid is not None:
        reap(pid)
    if not alive(pid):
        raise StackError(f"{name} exited:\n{tail(stack.log(name), 30)}")
    return health(stack, name)


def airflow_token(stack: Stack, client: httpx.Client | None = None) -> str:
    """A JWT for Airflow's REST API, from the stack's login."""
    body = {"username": AIRFLOW_USER, "password": stack.secrets["airflow_password"]}
    post = client.post if client else httpx.post
    response = post(f"{stack.url('airflow-apiserver')}/auth/token", json=body, timeout=10)
    response.raise_for_status()
    return str(response.json()["access_token"])


def dag_parsed(stack: Stack) -> tuple[bool, str]:
    """Whether Airflow knows the DAG (the DAG processor has parsed it)."""
    try:
        token = airflow_token(stack)
    except (httpx.HTTPError, KeyError, ValueError) as exc:
        return False, f"no Airflow token: {exc}"
    response = probes.http_get(
        f"{stack.url('airflow-apiserver')}/api/v2/dags/{DAG_ID}",
        headers={"Authorization": f"Bearer {token}"},
    )
    if response is None or response.status_code != 200:
        return False, f"DAG {DAG_ID} not parsed yet"
    return True, "ok"
