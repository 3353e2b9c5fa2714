"""Follow a Dagster run's status asynchronously, as the triggerer does while a stage waits.

`DagsterPoller` sends the sync client's `STATUS` and `QUEUE_DAEMON` queries through an
`httpx.AsyncClient`, with the same retries and the same reading of the answers
(`dagster_http`, `dagster_answers`). `watch_run` polls until the run ends or a limit is
passed and returns a `RunEvent`: a plain JSON dict, the payload of the trigger's event. No airflow
import: the stages' logic is tested without Airflow.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal, Protocol, TypedDict

import httpx
import tenacity

from airflow_bridge import dagster_answers as answers
from airflow_bridge import dagster_http as http
from airflow_bridge import dagster_queries as q
from airflow_bridge.dagster_results import DagsterError, RunState, RunWatch

log = logging.getLogger(__name__)


class RunEvent(TypedDict):
    """How following a run ended: the trigger's event payload, read back by the task."""

    event: Literal["finished", "queued_too_long", "timed_out", "error"]
    run_id: str
    #: The run's last status seen (None when none was read).
    status: str | None
    #: What went wrong, worded for the user (None when the run finished).
    message: str | None
    #: The `DagsterError` class of an "error" event (`dagster_results.ERRORS`).
    error: str | None


class StatusSource(Protocol):
    """What `watch_run` needs: `DagsterPoller`, or a scripted one in tests."""

    url: str

    async def status(self, run_id: str) -> RunState: ...

    async def daemon_heartbeat(self) -> tuple[bool, float | None]: ...


class DagsterPoller:
    """A Dagster webserver's run status and daemon health, over an `httpx.AsyncClient`."""

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 30.0,
        retries: int = 5,
        backoff_s: float = 1.0,
        headers: Mapping[str, str] | None = None,
    ):
        self.url = http.base_url(url)
        self.graphql_url = f"{self.url}/graphql"
        self.retries = max(0, retries)
        self.backoff_s = backoff_s
        self._http = httpx.AsyncClient(timeout=timeout_s, headers=dict(headers or {}))

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> DagsterPoller:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def status(self, run_id: str) -> RunState:
        return answers.run_state(await self._execute(q.STATUS, {"runId": run_id}), run_id)

    async def daemon_heartbeat(self) -> tuple[bool, float | None]:
        """Dagster's `healthy` for the queued-run daemon, and its last heartbeat (epoch s)."""
        return answers.daemon_heartbeat(await self._execute(q.QUEUE_DAEMON, {}))

    async def _execute(self, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        payload = {"query": query, "variables": variables}
        policy = http.retry_policy(
            self.graphql_url, retries=self.retries, backoff_s=self.backoff_s, repeatable=True
        )
        retrying = tenacity.AsyncRetrying(**policy)
        try:
            async for attempt in retrying:
                with attempt:
                    response = http.checked(await self._http.post(self.graphql_url, json=payload))
        except (httpx.TransportError, http.ServerError) as exc:
            tries = retrying.statistics.get("attempt_number", 1)
            raise http.transport_error(exc, self.graphql_url, tries, True) from exc
        return http.graphql_data(response, self.graphql_url)


async def watch_run(
    source: StatusSource,
    run_id: str,
    *,
    started_at: float,
    poll_s: float,
    timeout_s: float,
    queued_timeout_s: float,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> RunEvent:
    """Poll the run every `poll_s` seconds until it finishes or a limit passes.

    Both limits count from `started_at` (wall-clock seconds, so a triggerer that restarts and
    rebuilds the trigger keeps the budget): the stage fails `timeout_s` after it started, or
    once it has been queued for `queued_timeout_s` and the daemon's state is known, so that the
    message can say whether the daemon is down or queue limits hold the run (a stopped daemon
    is known `STALE_HEARTBEAT_S` after its last heartbeat). An error talking to Dagster (after
    the poller's retries) ends the watch as an "error" event.
    """
    url = f"{source.url}/runs/{run_id}"
    watch = RunWatch(run_id, url, started_at, timeout_s, queued_timeout_s, queued_since=started_at)
    previous: str | None = None
    first_beat: tuple[bool, float | None] | None = None
    try:
        while True:
            state = await source.status(run_id)
            now = clock()
            if state.status != previous:
                log.info("Dagster run %s is %s: %s", run_id, state.status, url)
                previous = state.status
            if state.finished:
                return _event("finished", run_id, state.status)
            if state.status == "QUEUED" and first_beat is None:
                first_beat = await _heartbeat(source)
            if (queued := watch.queued_for(state, now)) is not None:
                healthy, last = await _heartbeat(source)
                first = first_beat[1] if first_beat else None
                running = answers.daemon_running(first, healthy, last, clock())
                if running is not None:
                    message = answers.queued_message(source.url, run_id, queued, running)
                    return _event("queued_too_long", run_id, state.status, message)
            if (timed_out := watch.timed_out(state, now)) is not None:
                return _event("timed_out", run_id, state.status, str(timed_out))
            await sleep(watch.next_sleep(poll_s, now))
    except DagsterError as exc:
        return _event("error", run_id, previous, str(exc), type(exc).__name__)


async def _heartbeat(source: StatusSource) -> tuple[bool, float | None]:
    try:
        return await source.daemon_heartbeat()
    except DagsterError:  # the message is still worth sending without it: "not running"
        return False, None


def _event(
    kind: Literal["finished", "queued_too_long", "timed_out", "error"],
    run_id: str,
    status: str | None,
    message: str | None = None,
    error: str | None = None,
) -> RunEvent:
    return {"event": kind, "run_id": run_id, "status": status, "message": message, "error": error}
