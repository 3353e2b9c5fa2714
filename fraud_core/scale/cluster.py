"""Connecting to the dask.distributed cluster that runs the heavy steps, and describing it.

The Dagster layer calls `connect(FRAUD_DASK_ADDRESS)` once per run when the variable is set;
unset, nothing here is imported. A scheduler that does not answer (or has no workers to run
anything on) is a `ClusterUnavailable` naming the address, not a hang or a bare socket error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from distributed import Client


class ClusterUnavailable(RuntimeError):
    """No usable Dask cluster at the configured address; the message says which and why."""


@dataclass(frozen=True)
class ClusterSize:
    """How many workers and threads a cluster has: for an asset's metadata."""

    address: str
    workers: int
    threads: int
    memory_bytes: int

    def as_metadata(self) -> dict[str, Any]:
        return {
            "dask_scheduler": self.address,
            "dask_workers": self.workers,
            "dask_threads": self.threads,
            "dask_memory_gib": round(self.memory_bytes / 2**30, 2),
        }


def connect(address: str, *, timeout_s: float = 30, min_workers: int = 1) -> Client:
    """A client of the scheduler at `address` (e.g. "tcp://host:8786") with `min_workers` up.

    Waits at most `timeout_s` for the scheduler, then as long again for the workers (a freshly
    started cluster's workers join after its scheduler); raises `ClusterUnavailable` naming the
    address otherwise. The client does not become dask's default scheduler: the functions of
    `fraud_core.scale` take it explicitly, and nothing else in the process changes behaviour.
    """
    try:
        client = Client(address, timeout=timeout_s, set_as_default=False)
    except (OSError, TimeoutError) as exc:  # distributed raises OSError on a connect timeout
        raise ClusterUnavailable(
            f"no Dask scheduler answers at {address} (waited {timeout_s:g}s): {exc}"
        ) from exc
    except ValueError as exc:  # an address distributed cannot parse
        raise ClusterUnavailable(f"{address!r} is not a Dask scheduler address: {exc}") from exc
    if min_workers > 0:
        try:
            client.wait_for_workers(min_workers, timeout=timeout_s)
        except TimeoutError as exc:
            workers = len(client.nthreads())
            client.close()
            raise ClusterUnavailable(
                f"the Dask scheduler at {address} has {workers} worker(s) after "
                f"{timeout_s:g}s; at least {min_workers} needed"
            ) from exc
    return client


def cluster_size(client: Client) -> ClusterSize:
    """The workers, threads and memory of the cluster `client` is connected to, now."""
    # `scheduler_info()` lists only the first few workers unless asked for all.
    info = client.scheduler_info(n_workers=-1)
    workers = info.get("workers", {})
    return ClusterSize(
        address=str(info.get("address", "")),
        workers=len(workers),
        threads=sum(int(w.get("nthreads", 0)) for w in workers.values()),
        memory_bytes=sum(int(w.get("memory_limit", 0) or 0) for w in workers.values()),
    )


def total_threads(client: Client) -> int:
    """The cluster's worker threads (at least 1): the default number of partitions."""
    return max(1, sum(client.nthreads().values()))
