"""The trigger that follows a stage's Dagster run in Airflow's triggerer, holding no worker slot.

A stage task launches its run, then defers with a `DagsterRunTrigger`; the triggerer (which
imports this module by its class path: airflow_bridge is on its path as it is on the workers')
polls the run's status every few seconds through the async `DagsterPoller` and fires one event
when the run ends or a time limit passes. The task resumes on a worker and reports it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_bridge.dagster_poller import DagsterPoller, watch_run


def poller_for(url: str) -> DagsterPoller:
    """The status poller of the webserver at `url` (the DAG tests put a scripted one here)."""
    return DagsterPoller(url)


class DagsterRunTrigger(BaseTrigger):
    """Fires once the Dagster run `run_id` has ended, stayed queued or run past its limit.

    The event's payload is a `dagster_poller.RunEvent`. Every argument is plain JSON: the
    trigger is stored in Airflow's database and rebuilt by the triggerer from `serialize()`,
    so `started_at` is wall-clock time and the limits survive a triggerer restart.
    """

    def __init__(
        self,
        *,
        url: str,
        run_id: str,
        started_at: float,
        poll_s: float,
        timeout_s: float,
        queued_timeout_s: float,
    ) -> None:
        super().__init__()
        self.url = url
        self.run_id = run_id
        self.started_at = started_at
        self.poll_s = poll_s
        self.timeout_s = timeout_s
        self.queued_timeout_s = queued_timeout_s

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "url": self.url,
                "run_id": self.run_id,
                "started_at": self.started_at,
                "poll_s": self.poll_s,
                "timeout_s": self.timeout_s,
                "queued_timeout_s": self.queued_timeout_s,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        async with poller_for(self.url) as source:
            event = await watch_run(
                source,
                self.run_id,
                started_at=self.started_at,
                poll_s=self.poll_s,
                timeout_s=self.timeout_s,
                queued_timeout_s=self.queued_timeout_s,
            )
        yield TriggerEvent(dict(event))
