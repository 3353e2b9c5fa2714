"""The client's HTTP side: retries against a scripted HTTP server, a port with nobody on it.

A real webserver cannot be made to answer 5xx or time out on cue; this server can. What Dagster
itself answers is tested in `test_dagster_runs.py` and `test_dagster_queue.py`.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from airflow_bridge.dagster_client import (
    DagsterClient,
    DagsterError,
    DagsterUnreachable,
    LaunchOutcomeUnknown,
    RunState,
)
from tests.conftest import free_port

#: (HTTP status, JSON body, seconds to wait before answering)
Reply = tuple[int, dict[str, Any], float]
Script = Callable[[str, dict[str, Any]], Reply]


class ScriptedServer:
    """Answers each POST /graphql with `script(operation name, variables)`; keeps a log."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.operations: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                match = re.search(r"(?:query|mutation)\s+(\w+)", payload["query"])
                operation = match.group(1) if match else "?"
                outer.operations.append(operation)
                status, body, delay = outer.script(operation, payload.get("variables") or {})
                time.sleep(delay)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def client(self, **kwargs: Any) -> DagsterClient:
        return DagsterClient(self.url, **{"retries": 3, "backoff_s": 0.01, **kwargs})


@pytest.fixture
def serve() -> Iterator[Callable[[Script], ScriptedServer]]:
    servers: list[ScriptedServer] = []

    def start(script: Script) -> ScriptedServer:
        server = ScriptedServer(script)
        threading.Thread(target=server.httpd.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.httpd.shutdown()
        server.httpd.server_close()


def in_turn(*replies: Reply) -> Script:
    queue = list(replies)
    return lambda operation, variables: queue.pop(0) if len(queue) > 1 else queue[0]


def run(run_id: str, status: str) -> dict[str, Any]:
    return {"data": {"runOrError": {"__typename": "Run", "runId": run_id, "status": status}}}


def test_5xx_and_timeouts_are_retried(serve: Callable[[Script], ScriptedServer]) -> None:
    server = serve(
        in_turn((503, {}, 0), (502, {}, 0), (200, {}, 1.0), (200, run("r", "STARTED"), 0))
    )
    assert server.client(timeout_s=0.3).status("r") == RunState("r", "STARTED")
    assert server.operations == ["RunStatus"] * 4


def test_5xx_to_the_last_try_is_unreachable(serve: Callable[[Script], ScriptedServer]) -> None:
    server = serve(in_turn((500, {"detail": "boom"}, 0)))
    with pytest.raises(DagsterUnreachable, match=r"after 4 tries.*HTTP 500"):
        server.client().status("r")
    assert len(server.operations) == 4


@pytest.mark.parametrize("http_status", [200, 400])
def test_graphql_errors_are_not_retried(
    serve: Callable[[Script], ScriptedServer], http_status: int
) -> None:
    error = {"data": None, "errors": [{"message": "Cannot query field 'bogus' on type 'Run'."}]}
    server = serve(in_turn((http_status, error, 0)))
    with pytest.raises(DagsterError, match="Cannot query field 'bogus'") as raised:
        server.client().status("r")
    assert not isinstance(raised.value, DagsterUnreachable)
    assert server.operations == ["RunStatus"]


def test_a_launch_that_may_have_landed_is_not_repeated(
    serve: Callable[[Script], ScriptedServer],
) -> None:
    server = serve(in_turn((500, {}, 0)))
    with pytest.raises(LaunchOutcomeUnknown, match="launch_or_find"):
        server.client().launch_run("weekly_retrain_job")
    assert server.operations == ["LaunchRun"]


def test_a_launch_refused_before_processing_is_repeated(
    serve: Callable[[Script], ScriptedServer],
) -> None:
    launched = {"data": {"launchRun": {"__typename": "LaunchRunSuccess", "run": {"runId": "r"}}}}
    server = serve(in_turn((503, {}, 0), (200, launched, 0)))
    assert server.client().launch_run("weekly_retrain_job") == "r"
    assert server.operations == ["LaunchRun", "LaunchRun"]


def test_launch_or_find_looks_again_before_relaunching(
    serve: Callable[[Script], ScriptedServer],
) -> None:
    """The first launch lands but its answer is lost: the second attempt finds that run."""
    runs: list[dict[str, Any]] = []

    def dagster(operation: str, variables: dict[str, Any]) -> Reply:
        if operation == "FindRuns":
            return 200, {"data": {"runsOrError": {"__typename": "Runs", "results": runs}}}, 0
        assert operation == "LaunchRun" and not runs
        tags = variables["executionParams"]["executionMetadata"]["tags"]
        assert {"key": "airflow/idempotency_key", "value": "k"} in tags
        runs.append(
            {
                "runId": "landed",
                "status": "QUEUED",
                "jobName": "weekly_retrain_job",
                "creationTime": 1.0,
                "assetSelection": [{"path": ["fraud_model"]}],
            }
        )
        return 500, {}, 0

    server = serve(dagster)
    client = server.client()
    found = client.launch_or_find(
        "weekly_retrain_job", idempotency_key="k", asset_selection=["fraud_model"]
    )
    assert found == "landed"
    assert server.operations == ["FindRuns", "LaunchRun", "FindRuns"]


def test_unreachable_webserver_is_named() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    client = DagsterClient(url, retries=2, backoff_s=0.1)
    started = time.monotonic()

    with pytest.raises(DagsterUnreachable) as raised:
        client.status("some-run")

    assert time.monotonic() - started >= 0.1 + 0.2  # two backoffs: three tries
    message = str(raised.value)
    assert url in message and "after 3 tries" in message
    assert "dagster-webserver is running" in message


def test_from_env_reads_url_and_location(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DAGSTER_WEBSERVER_URL", "http://dagster.internal:3000/")
    monkeypatch.setenv("DAGSTER_CODE_LOCATION", "fraud_assets_prod")
    client = DagsterClient.from_env(retries=1)
    assert client.url == "http://dagster.internal:3000"
    assert client.graphql_url == "http://dagster.internal:3000/graphql"
    assert client.location == "fraud_assets_prod" and client.retries == 1
    assert client.run_url("abc") == "http://dagster.internal:3000/runs/abc"
    monkeypatch.delenv("DAGSTER_WEBSERVER_URL")
    monkeypatch.delenv("DAGSTER_CODE_LOCATION")
    default = DagsterClient.from_env()
    assert (default.url, default.location) == ("http://127.0.0.1:3000", "fraud_assets")
