"""A revoked key is refused by every worker of a real `uvicorn --workers 2`, with no restart.

The server runs on a free port with its prediction log (and so its key table) on a fresh
PostgreSQL database. Keep-alive connections are spread over both workers (checked: each worker
holds some of them, by its sockets); after `fraud-keys revoke` every connection is refused within
a deadline (polled: a refresh, not a timing, is asserted). The server's own output, access log on,
never holds a key.

Slow: two workers import the app (numpy, xgboost, FastAPI) on a shared machine.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest

from fraud_core.api_keys import FEEDBACK, parse
from fraud_core.api_keys_cli import main as fraud_keys
from servicectl.health import http_probe, wait_until
from servicectl.process import running
from tests.api.conftest import bearer, new_key
from tests.conftest import free_port, fresh_database

pytestmark = pytest.mark.slow

START_TIMEOUT_S = 120.0
REFRESH_S = 0.5
#: How long every worker may take to refuse a revoked key: many refreshes, on a busy machine.
REFUSED_WITHIN_S = 30.0
CONNECTIONS = 12
#: A label the API refuses once the key is accepted (422): the answer to an accepted key comes
#: before any database work, so each of the kept-alive connections is answered at once.
BODY = {"request_id": "never-predicted", "label": "maybe"}
ACCEPTED = 422


@dataclass(frozen=True)
class Server:
    url: str
    port: int
    pid: int
    log: Path
    database: str


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("auth_workers")
    port = free_port()
    with fresh_database() as database:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FRAUD_", "MLFLOW_"))}
        env.update(
            FRAUD_MODELS_DIR=str(root / "models"),  # no model: labels need none
            FRAUD_API_RELOAD_INTERVAL_S="0",
            FRAUD_PREDICTION_LOG_URL=database,
            FRAUD_API_KEYS_REFRESH_S=str(REFRESH_S),
        )
        log = root / "uvicorn.log"
        command = [sys.executable, "-m", "uvicorn", "api.main:app", "--workers", "2"]
        command += ["--host", "127.0.0.1", "--port", str(port)]  # access log on: checked below
        with running(command, cwd=root, env=env, log=log) as proc:
            url = f"http://127.0.0.1:{port}"
            wait_until("uvicorn /health", http_probe(f"{url}/health"), START_TIMEOUT_S, logs=[log])
            yield Server(url, port, proc.pid, log, database)


def worker_of_each(server: Server, ports: list[int]) -> dict[int, set[int]]:
    """The client ports (of `ports`) whose other end each worker process holds, by its pid."""
    held: dict[int, set[int]] = {}
    for worker in psutil.Process(server.pid).children(recursive=True):
        try:
            connections = worker.net_connections(kind="tcp")
        except psutil.Error:  # a helper process that ended meanwhile
            continue
        mine = {c.raddr.port for c in connections if c.raddr and c.laddr.port == server.port}
        if mine & set(ports):
            held[worker.pid] = mine & set(ports)
    return held


def client_port(response: httpx.Response) -> int:
    stream = response.extensions["network_stream"]
    return int(stream.get_extra_info("client_addr")[1])


def status(client: httpx.Client, key: str) -> int:
    return client.post("/feedback", json=BODY, headers=bearer(key)).status_code


def test_a_revoked_key_is_refused_by_every_worker_without_a_restart(server: Server) -> None:
    revoked = new_key(server.database, FEEDBACK, name="leaked")
    kept = new_key(server.database, FEEDBACK, name="kept")
    clients: list[httpx.Client] = []
    try:
        ports: list[int] = []
        held: dict[int, set[int]] = {}
        deadline = time.monotonic() + REFUSED_WITHIN_S
        # Keep-alive connections until both workers hold some (each is one worker's for good).
        while len(held) < 2:
            assert time.monotonic() < deadline, f"the connections all went to one worker: {held}"
            for _ in range(CONNECTIONS):
                client = httpx.Client(base_url=server.url, timeout=30)
                clients.append(client)
                response = client.post("/feedback", json=BODY, headers=bearer(kept))
                ports.append(client_port(response))
            held = worker_of_each(server, ports)
        # Keys made after the start: every worker accepts both after its next refresh.
        for client in clients:
            while status(client, kept) != ACCEPTED or status(client, revoked) != ACCEPTED:
                assert time.monotonic() < deadline, "a new key is never accepted"
                time.sleep(REFRESH_S / 2)

        key_id = parse(revoked)
        assert key_id is not None
        assert fraud_keys(["--database", server.database, "revoke", key_id[0]]) == 0

        deadline = time.monotonic() + REFUSED_WITHIN_S
        pending = list(clients)
        while pending:
            assert time.monotonic() < deadline, f"{len(pending)} connections still accept the key"
            pending = [c for c in pending if status(c, revoked) != 401]
            if pending:
                time.sleep(REFRESH_S / 2)
        # Still on the same connections (no restart, no new worker), the other key still works.
        assert worker_of_each(server, ports) == held
        assert all(status(client, kept) == ACCEPTED for client in clients)
    finally:
        for client in clients:
            client.close()
    output = server.log.read_text(errors="replace")
    assert '"POST /feedback HTTP/1.1" 401' in output and '"POST /feedback HTTP/1.1" 422' in output
    for key in (revoked, kept):
        assert key not in output and key.rsplit("_", 1)[1] not in output
