"""Health of services: wait for a probe, HTTP probes, and Dagster's and Airflow's own checks.

A probe answers `(ok, why not)` (or a plain bool); `wait_until` polls it, fails fast when the
service's process exits, and raises `ServiceError` with the end of the logs when time runs out.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import httpx

# Dagster calls a daemon healthy for 30 minutes after its last heartbeat; the Dagster client
# takes a silent daemon for stopped much sooner. One limit for both.
from airflow_bridge.dagster_client import STALE_HEARTBEAT_S
from servicectl.process import Process, ServiceError, leader_running, tail

Probe = Callable[[], bool | tuple[bool, str]]

_LOCATION = """{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus
  locationOrLoadError { __typename ... on PythonError { message } } } } } }"""
_DAEMONS = """{ instance { daemonHealth { allDaemonStatuses {
  daemonType healthy required lastHeartbeatTime } } } }"""


def wait_until(
    what: str,
    probe: Probe,
    timeout_s: float,
    *,
    logs: Iterable[Path] = (),
    process: Process | None = None,
    interval_s: float = 0.5,
    lines: int = 30,
) -> None:
    """Poll `probe` until it says ok; raise `ServiceError` with the logs' tails if it never does.

    With `process`, its exit ends the wait at once. A probe that cannot connect
    (`httpx.TransportError`) counts as not ok.
    """
    logs = list(logs)
    deadline = time.monotonic() + timeout_s
    reason = "not checked"
    while True:
        if process is not None and not leader_running(process):
            code = f" with code {process.returncode}" if not isinstance(process, int) else ""
            raise ServiceError(f"{what} exited{code}:\n{log_tails(logs, lines)}")
        try:
            answer = probe()
        except httpx.TransportError as exc:
            answer = (False, f"not answering ({exc.__class__.__name__})")
        ok, reason = answer if isinstance(answer, tuple) else (answer, "not ready")
        if ok:
            return
        if time.monotonic() >= deadline:
            break
        time.sleep(interval_s)
    raise ServiceError(
        f"{what} not healthy after {timeout_s:.0f} s ({reason}):\n{log_tails(logs, lines)}"
    )


def log_tails(logs: Iterable[Path], lines: int = 30) -> str:
    """`--- <log>` and its last lines, for each log."""
    return "\n".join(f"--- {log}\n{tail(log, lines)}" for log in logs)


def http_get(url: str, *, timeout_s: float = 5.0, **kwargs: Any) -> httpx.Response | None:
    """GET `url`; None when nothing answers."""
    try:
        return httpx.get(url, timeout=timeout_s, **kwargs)
    except httpx.TransportError:
        return None


def http_ok(url: str, *, timeout_s: float = 5.0) -> tuple[bool, str]:
    """Whether `url` answers 200, and a word on why not."""
    response = http_get(url, timeout_s=timeout_s)
    if response is None:
        return False, "not answering"
    if response.status_code != 200:
        return False, f"HTTP {response.status_code}"
    return True, "ok"


def http_probe(url: str, *, timeout_s: float = 5.0) -> Probe:
    """A probe of `url` answering 200."""
    return lambda: http_ok(url, timeout_s=timeout_s)


# --- Dagster ------------------------------------------------------------------------------------


def graphql(url: str, query: str, timeout_s: float = 10.0) -> dict[str, Any] | None:
    """The `data` of a GraphQL query to the Dagster webserver at `url`; None if no answer."""
    try:
        response = httpx.post(f"{url}/graphql", json={"query": query}, timeout=timeout_s)
        return dict(response.json()["data"])
    except (httpx.TransportError, ValueError, KeyError, TypeError):
        return None


def dagster_location_loaded(url: str) -> tuple[bool, str]:
    """Whether the webserver at `url` loaded every code location; `ServiceError` if one failed."""
    data = graphql(url, _LOCATION)
    if not data:
        return False, "GraphQL not answering"
    for entry in data["workspaceOrError"].get("locationEntries", []):
        loaded = entry["locationOrLoadError"]
        if loaded and loaded["__typename"] == "PythonError":
            raise ServiceError(f"code location {entry['name']} failed to load: {loaded['message']}")
        if entry["loadStatus"] != "LOADED" or not loaded:
            return False, f"loading code location {entry['name']}"
    return True, "ok"


def dagster_webserver_ready(url: str) -> tuple[bool, str]:
    """The webserver serves (`/server_info`) and has loaded its code locations."""
    ok, why = http_ok(f"{url}/server_info")
    return dagster_location_loaded(url) if ok else (ok, why)


def dagster_daemons_healthy(url: str) -> tuple[bool, str]:
    """Whether every required daemon beat within `STALE_HEARTBEAT_S` (asked of the webserver)."""
    data = graphql(url, _DAEMONS)
    if not data:
        return False, "webserver not answering"
    statuses = data["instance"]["daemonHealth"]["allDaemonStatuses"]
    now = time.time()
    sick = [
        s["daemonType"]
        for s in statuses
        if s["required"]
        and not (
            s["healthy"]
            and s["lastHeartbeatTime"] is not None
            and now - float(s["lastHeartbeatTime"]) < STALE_HEARTBEAT_S
        )
    ]
    return (not sick, "ok" if not sick else "no heartbeat from " + ", ".join(sick))


# --- Airflow ------------------------------------------------------------------------------------


def airflow_component_healthy(url: str, component: str | None = None) -> tuple[bool, str]:
    """Whether the API server at `url` serves, and `component` (as `/api/v2/monitor/health` names
    it: scheduler, dag_processor, triggerer) reports healthy."""
    response = http_get(f"{url}/api/v2/monitor/health")
    if response is None or response.status_code != 200:
        return False, "API server not answering"
    if component is None:
        return True, "ok"
    status = (response.json().get(component) or {}).get("status")
    return status == "healthy", f"{component} {status}"
