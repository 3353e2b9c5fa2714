"""servicectl.health: waiting with the log's tail, HTTP probes, Dagster's and Airflow's checks."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from airflow_bridge.dagster_client import STALE_HEARTBEAT_S
from servicectl.health import (
    airflow_component_healthy,
    dagster_daemons_healthy,
    http_ok,
    wait_until,
)
from servicectl.process import ServiceError, free_port, running


def test_wait_until_times_out_with_the_log_tail_in_the_message(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text("".join(f"line {i}\n" for i in range(1, 51)))
    with pytest.raises(ServiceError) as raised:
        wait_until("the server", lambda: (False, "still warming up"), 0.3, logs=[log])
    message = str(raised.value)
    assert message.startswith("the server not healthy after 0 s (still warming up):")
    assert f"--- {log}" in message
    assert "line 50" in message and "line 21\n" in message
    assert "line 20\n" not in message  # the last 30 lines only


def test_wait_until_stops_at_once_when_the_process_exits(tmp_path: Path) -> None:
    log = tmp_path / "boom.log"
    code = "print('cannot bind', flush=True); raise SystemExit(4)"
    with running([sys.executable, "-c", code], cwd=tmp_path, env={}, log=log) as proc:
        started = time.monotonic()
        with pytest.raises(ServiceError) as raised:
            wait_until("boom", lambda: False, 600, logs=[log], process=proc)
    assert "boom exited with code 4" in str(raised.value)
    assert "cannot bind" in str(raised.value)
    assert time.monotonic() - started < 60  # not the 600 s timeout


def test_wait_until_returns_once_the_probe_says_ok_and_takes_refusals_for_not_yet() -> None:
    answers: list[Any] = [httpx.ConnectError("refused"), False, (False, "warming"), True]

    def probe() -> bool | tuple[bool, str]:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[no-any-return]

    wait_until("it", probe, 60, interval_s=0.01)
    assert answers == []


@pytest.fixture
def http_stub() -> Iterator[tuple[str, dict[str, tuple[int, Any]]]]:
    """A local HTTP server answering each path (GET or POST) from a table of (status, body)."""
    routes: dict[str, tuple[int, Any]] = {}

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            status, body = routes.get(self.path, (404, {"detail": "no route"}))
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = _answer

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self._answer()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", routes
    finally:
        server.shutdown()
        server.server_close()


def test_http_ok_says_why_not(http_stub: tuple[str, dict[str, tuple[int, Any]]]) -> None:
    url, routes = http_stub
    routes["/ready"] = (200, {"status": "ready"})
    routes["/busy"] = (503, {"status": "not ready"})
    assert http_ok(f"{url}/ready") == (True, "ok")
    assert http_ok(f"{url}/busy") == (False, "HTTP 503")
    assert http_ok(f"http://127.0.0.1:{free_port()}/") == (False, "not answering")


def test_a_daemon_heartbeat_older_than_the_clients_limit_is_unhealthy(
    http_stub: tuple[str, dict[str, tuple[int, Any]]],
) -> None:
    url, routes = http_stub

    def daemons(*beats: tuple[str, float]) -> None:
        statuses = [
            {"daemonType": kind, "healthy": True, "required": True, "lastHeartbeatTime": at}
            for kind, at in beats
        ]
        body = {"data": {"instance": {"daemonHealth": {"allDaemonStatuses": statuses}}}}
        routes["/graphql"] = (200, body)

    now = time.time()
    daemons(("SCHEDULER", now - 5), ("QUEUED_RUN_COORDINATOR", now - 5))
    assert dagster_daemons_healthy(url) == (True, "ok")
    # Dagster itself still says healthy (it allows 30 minutes); the shared limit does not.
    daemons(("SCHEDULER", now - 5), ("QUEUED_RUN_COORDINATOR", now - STALE_HEARTBEAT_S - 5))
    assert dagster_daemons_healthy(url) == (False, "no heartbeat from QUEUED_RUN_COORDINATOR")


def test_airflow_components_come_from_monitor_health(
    http_stub: tuple[str, dict[str, tuple[int, Any]]],
) -> None:
    url, routes = http_stub
    routes["/api/v2/monitor/health"] = (
        200,
        {
            "metadatabase": {"status": "healthy"},
            "scheduler": {"status": "healthy"},
            "triggerer": {"status": "unhealthy", "latest_triggerer_heartbeat": None},
            "dag_processor": {"status": "healthy"},
        },
    )
    assert airflow_component_healthy(url, "scheduler") == (True, "scheduler healthy")
    assert airflow_component_healthy(url, "triggerer") == (False, "triggerer unhealthy")
    assert airflow_component_healthy(url) == (True, "ok")
    assert airflow_component_healthy(f"http://127.0.0.1:{free_port()}", "triggerer")[0] is False
