"""API replicas behind one address for the tests: started on one shared port, told apart by socket.

`serving(...)` starts `replicas` processes of `uvicorn api.main:app --workers N`. Each holds a
listening socket of its own bound with SO_REUSEPORT on the same port, and the kernel spreads new
connections over them, as a Kubernetes Service spreads them over pods. uvicorn cannot set
SO_REUSEPORT itself (0.54 binds with SO_REUSEADDR only), but serves a socket it is given with
`--fd`, its workers included: this file, run as a script, binds the socket and execs uvicorn on it

    python tests/api/replica_fleet.py HOST PORT -- python -m uvicorn api.main:app --workers 2

(`exec` keeps the pid, so the process group that servicectl stops is uvicorn's).

Which worker answered a request is read from the operating system, not asked of the API: the
worker process that holds the server end of the response's connection (psutil).
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import psutil

from servicectl.health import wait_until
from servicectl.process import free_port, running

HOST = "127.0.0.1"
STARTED = "Application startup complete"
#: How long every worker may take to answer as wanted (ready; a new model after a publish).
EVERY_WORKER_TIMEOUT_S = 60.0
#: Fresh connections tried to reach one replica (each lands on one of them by the kernel's hash).
ATTEMPTS = 40


@dataclass(frozen=True)
class Worker:
    replica: int
    pid: int


@dataclass(frozen=True)
class Fleet:
    url: str
    port: int
    logs: tuple[Path, ...]
    workers: tuple[Worker, ...]
    #: Sent with every request of `client_on` (an API key).
    headers: Mapping[str, str] = field(default_factory=dict)

    def worker_of(self, response: httpx.Response) -> Worker:
        """The worker holding the server end of the (still open) connection `response` came on."""
        client = int(response.extensions["network_stream"].get_extra_info("client_addr")[1])
        for worker in self.workers:
            for c in psutil.Process(worker.pid).net_connections(kind="tcp"):
                if c.raddr and c.raddr.port == client and c.laddr.port == self.port:
                    return worker
        raise AssertionError(f"no worker of {self.workers} holds the connection from :{client}")

    def until_every_worker(
        self, path: str, ok: Callable[[httpx.Response], bool], what: str
    ) -> None:
        """GET `path` over fresh connections until each worker has answered `ok` once."""
        done: set[Worker] = set()
        deadline = time.monotonic() + EVERY_WORKER_TIMEOUT_S
        while len(done) < len(self.workers):
            assert time.monotonic() < deadline, f"{what}: only {sorted(done, key=str)} so far"
            with httpx.Client(base_url=self.url, timeout=30) as client:
                response = client.get(path)
                if ok(response):
                    done.add(self.worker_of(response))
            time.sleep(0.02)

    @contextmanager
    def client_on(self, replica: int) -> Iterator[httpx.Client]:
        """A keep-alive client whose connection (through the one address) landed on `replica`."""
        for _ in range(ATTEMPTS):
            client = httpx.Client(base_url=self.url, timeout=30, headers=dict(self.headers))
            if self.worker_of(client.get("/health")).replica == replica:
                try:
                    yield client
                finally:
                    client.close()
                return
            client.close()
        raise AssertionError(f"{ATTEMPTS} fresh connections, none on replica {replica}")

    def post_on(self, replica: int, path: str, body: dict[str, Any]) -> httpx.Response:
        """POST `body` to `path` over a fresh connection that lands on `replica` (checked)."""
        with self.client_on(replica) as client:
            response = client.post(path, json=body)
            assert self.worker_of(response).replica == replica
            return response


@contextmanager
def serving(
    root: Path,
    env: Mapping[str, str],
    *,
    replicas: int = 2,
    workers: int = 2,
    start_timeout_s: float = 180.0,
    headers: Mapping[str, str] | None = None,
) -> Iterator[Fleet]:
    """`replicas` uvicorn processes of `workers` each on one free port, every worker started."""
    port = free_port(HOST)
    with ExitStack() as stack:
        procs, logs = [], []
        for i in range(replicas):
            # Each in a folder of its own: the project's `.env` must not apply.
            cwd = root / f"replica-{i}"
            cwd.mkdir(parents=True)
            command = [sys.executable, __file__, HOST, str(port), "--", sys.executable, "-m"]
            command += ["uvicorn", "api.main:app", "--workers", str(workers)]  # access log on
            logs.append(cwd / "uvicorn.log")
            procs.append(stack.enter_context(running(command, cwd=cwd, env=env, log=logs[-1])))
        for proc, log in zip(procs, logs, strict=True):
            started = partial(_started, log, workers)
            wait_until(f"{workers} workers of {log.parent.name}", started, start_timeout_s,
                       logs=[log], process=proc)  # fmt: skip
        found = [Worker(i, pid) for i, p in enumerate(procs) for pid in _listening(p.pid, port)]
        assert len(found) == replicas * workers, found
        yield Fleet(f"http://{HOST}:{port}", port, tuple(logs), tuple(found), headers or {})


def _started(log: Path, workers: int) -> bool:
    return log.read_text(errors="replace").count(STARTED) >= workers


def _listening(pid: int, port: int) -> list[int]:
    """The pids of `pid`'s descendants listening on `port`: uvicorn's workers, not helpers."""
    found = []
    for child in psutil.Process(pid).children(recursive=True):
        connections = child.net_connections(kind="tcp")
        if any(c.laddr.port == port and c.status == psutil.CONN_LISTEN for c in connections):
            found.append(child.pid)
    return sorted(found)


def bound_socket(host: str, port: int) -> socket.socket:
    """A TCP socket on host:port that other processes may bind too (SO_REUSEPORT), inheritable."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def main(argv: list[str]) -> None:
    """Bind HOST PORT, then exec the command after `--` with `--fd N` appended."""
    if len(argv) < 4 or argv[2] != "--":
        sys.exit("usage: replica_fleet.py HOST PORT -- COMMAND [ARGS...]")
    host, port, command = argv[0], int(argv[1]), argv[3:]
    sock = bound_socket(host, port)
    # Not listening yet: uvicorn's workers call listen() on it when they are ready to serve,
    # so a replica still starting takes no connection from the others.
    os.execv(command[0], [*command, "--fd", str(sock.fileno())])


if __name__ == "__main__":
    main(sys.argv[1:])
