"""A real dask.distributed cluster for tests: a `dask scheduler` and `dask worker` processes.

    with start_cluster(workers=2) as address:   # "tcp://127.0.0.1:PORT"
        client = connect(address)

The scheduler and each worker are processes of the venv's `dask` command line, on free ports of
127.0.0.1, each the leader of a process group of its own (servicectl.process), so stopping them
also stops the worker processes their nannies fork. Each worker has one process, one thread and
1 GB: on a small machine, two of them are a cluster where data really moves between processes.
Use it from any test module (a module- or session-scoped fixture around `start_cluster`).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from distributed import Client

from servicectl.process import ServiceError, free_port, running, tail

REPO = Path(__file__).resolve().parents[1]
#: The venv's `dask` command (beside the interpreter running the tests).
DASK = Path(sys.executable).with_name("dask")
#: How long the scheduler and the workers get to come up (a cold import of distributed is slow).
START_TIMEOUT_S = 90.0


@contextmanager
def start_cluster(
    workers: int = 2, *, memory_limit: str = "1GB", threads: int = 1
) -> Iterator[str]:
    """Start a scheduler and `workers` workers; yield the scheduler's address; stop them all.

    Returns once every worker has joined. Raises `ServiceError` with the ends of their logs
    when they do not come up in time.
    """
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {
        **os.environ,
        # Small test data never needs spilling to disk; the logs say only what went wrong.
        "DASK_DISTRIBUTED__WORKER__MEMORY__SPILL": "false",
        "DASK_LOGGING__DISTRIBUTED": "warning",
    }
    with tempfile.TemporaryDirectory(prefix="dask-cluster-") as tmp, ExitStack() as stack:
        logs = Path(tmp)
        scheduler = [str(DASK), "scheduler", "--host", "127.0.0.1", "--port", str(port)]
        scheduler += ["--no-dashboard"]
        stack.enter_context(running(scheduler, cwd=REPO, env=env, log=logs / "scheduler.log"))
        for i in range(workers):
            command = [str(DASK), "worker", address, "--host", "127.0.0.1"]
            command += ["--nworkers", "1", "--nthreads", str(threads)]
            command += ["--memory-limit", memory_limit, "--no-dashboard"]
            command += ["--local-directory", str(logs / f"worker-{i}")]
            stack.enter_context(running(command, cwd=REPO, env=env, log=logs / f"worker-{i}.log"))
        _wait_for_workers(address, workers, logs)
        yield address


def _wait_for_workers(address: str, workers: int, logs: Path) -> None:
    """Block until the scheduler answers and `workers` workers have joined it."""
    deadline = time.monotonic() + START_TIMEOUT_S
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            with Client(address, timeout=5, set_as_default=False) as client:
                client.wait_for_workers(workers, timeout=max(1.0, deadline - time.monotonic()))
                return
        except (OSError, TimeoutError) as exc:  # the scheduler is not listening yet
            last = exc
            time.sleep(0.5)
    ends = "\n".join(f"--- {log.name}\n{tail(log, 20)}" for log in sorted(logs.glob("*.log")))
    raise ServiceError(
        f"the Dask cluster at {address} did not get {workers} workers in "
        f"{START_TIMEOUT_S:g}s ({last}):\n{ends}"
    )
