"""Launch, watch and report Dagster runs over the webserver's GraphQL API (POST {url}/graphql).

Airflow drives Dagster through this client (and, while a stage waits in the triggerer, through
the async `dagster_poller`): it imports neither `dagster` nor `airflow`, only `httpx` and
`tenacity`. The retry rules are `dagster_http`'s, the answers are read by `dagster_answers`.

A launch is not repeated blindly: if the webserver may have received it (a read timeout, an HTTP
500) a second launch could start a second run, so `launch_run` raises `LaunchOutcomeUnknown`, and
`launch_or_find`, which can look for its own tag, looks before it launches again.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Mapping
from typing import Any

import httpx
import tenacity

from airflow_bridge import dagster_answers as answers
from airflow_bridge import dagster_http as http
from airflow_bridge import dagster_queries as q
from airflow_bridge.dagster_results import (
    FINISHED_STATUSES,
    IDEMPOTENCY_TAG,
    PROMOTION_ASSET,
    STALE_HEARTBEAT_S,
    DagsterError,
    DagsterUnreachable,
    JobShape,
    LaunchOutcomeUnknown,
    RunNotFound,
    RunQueuedTooLong,
    RunReport,
    RunState,
    RunTimedOut,
    RunWatch,
)

__all__ = [
    "DEFAULT_LOCATION",
    "DEFAULT_REPOSITORY",
    "DEFAULT_URL",
    "FINISHED_STATUSES",
    "IDEMPOTENCY_TAG",
    "PROMOTION_ASSET",
    "STALE_HEARTBEAT_S",
    "DagsterClient",
    "DagsterError",
    "DagsterUnreachable",
    "JobShape",
    "LaunchOutcomeUnknown",
    "RunNotFound",
    "RunQueuedTooLong",
    "RunReport",
    "RunState",
    "RunTimedOut",
]

log = logging.getLogger(__name__)

DEFAULT_URL = "http://127.0.0.1:3000"
DEFAULT_LOCATION = "fraud_assets"
DEFAULT_REPOSITORY = "__repository__"
#: A run with the same idempotency key in one of these is not reused: it will never succeed.
_NOT_REUSABLE = frozenset({"FAILURE", "CANCELED", "CANCELING"})
_EVENTS_PAGE = 1000


class DagsterClient:
    """A Dagster webserver's GraphQL API, for one code location's jobs."""

    def __init__(
        self,
        url: str,
        location: str = DEFAULT_LOCATION,
        repository: str = DEFAULT_REPOSITORY,
        *,
        timeout_s: float = 30.0,
        retries: int = 5,
        backoff_s: float = 1.0,
        headers: Mapping[str, str] | None = None,
    ):
        self.url = http.base_url(url)
        self.graphql_url = f"{self.url}/graphql"
        self.location = location
        self.repository = repository
        self.retries = max(0, retries)
        self.backoff_s = backoff_s
        self._http = httpx.Client(timeout=timeout_s, headers=dict(headers or {}))

    @classmethod
    def from_env(cls, **kwargs: Any) -> DagsterClient:
        """DAGSTER_WEBSERVER_URL (default http://127.0.0.1:3000), DAGSTER_CODE_LOCATION."""
        return cls(
            os.environ.get("DAGSTER_WEBSERVER_URL") or DEFAULT_URL,
            os.environ.get("DAGSTER_CODE_LOCATION") or DEFAULT_LOCATION,
            **kwargs,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> DagsterClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def run_url(self, run_id: str) -> str:
        return f"{self.url}/runs/{run_id}"

    # --- runs -------------------------------------------------------------------------------

    def launch_run(
        self,
        job_name: str,
        *,
        asset_selection: list[str] | None = None,
        tags: dict[str, str] | None = None,
        run_config: dict[str, Any] | None = None,
    ) -> str:
        """Launch (enqueue) a run of `job_name`, optionally of only some assets; its run id.

        The checks of the selected assets run with them: no `assetCheckSelection` is sent, and
        Dagster then selects every check of every selected asset.
        """
        selector: dict[str, Any] = {
            "repositoryLocationName": self.location,
            "repositoryName": self.repository,
            "jobName": job_name,
        }
        if asset_selection:
            selector["assetSelection"] = [{"path": key.split("/")} for key in asset_selection]
        params: dict[str, Any] = {
            "selector": selector,
            "executionMetadata": {
                "tags": [{"key": k, "value": str(v)} for k, v in (tags or {}).items()]
            },
        }
        if run_config:
            params["runConfigData"] = run_config
        data = self._execute(q.LAUNCH, {"executionParams": params}, repeatable=False)
        run_id = answers.launched_run_id(data, job_name, self.url, self.location)
        log.info("launched %s as run %s: %s", job_name, run_id, self.run_url(run_id))
        return run_id

    def job_shape(self, job_name: str) -> JobShape:
        """The assets `job_name` holds and its partition keys (a day's since 2018: 3,000 or so)."""
        selector = {
            "repositoryLocationName": self.location,
            "repositoryName": self.repository,
            "pipelineName": job_name,
        }
        data = self._execute(q.JOB_SHAPE, {"selector": selector})
        return answers.job_shape(data, job_name, self.location)

    def find_runs(self, tags: dict[str, str]) -> list[RunState]:
        """Runs carrying all of `tags`, newest first."""
        return [RunState(run["runId"], run["status"]) for run in self._runs(tags)]

    def launch_or_find(
        self,
        job_name: str,
        *,
        idempotency_key: str,
        asset_selection: list[str] | None = None,
        tags: dict[str, str] | None = None,
        run_config: dict[str, Any] | None = None,
    ) -> str:
        """The run of this job, key and asset selection if one exists, else a new one so tagged.

        A run with the key that failed or was canceled is not reused: a retried Airflow task
        launches again rather than reporting the same failure forever.
        """
        wanted = _selection(asset_selection)
        all_tags = {**(tags or {}), IDEMPOTENCY_TAG: idempotency_key}
        for attempt in range(self.retries + 1):
            for run in self._runs({IDEMPOTENCY_TAG: idempotency_key}):
                if (
                    run["jobName"] == job_name
                    and run["status"] not in _NOT_REUSABLE
                    and _selection(q.asset_keys(run["assetSelection"])) == wanted
                ):
                    log.info("found run %s for key %s", run["runId"], idempotency_key)
                    return str(run["runId"])
            try:
                return self.launch_run(
                    job_name, asset_selection=asset_selection, tags=all_tags, run_config=run_config
                )
            except LaunchOutcomeUnknown:
                if attempt == self.retries:
                    raise
                log.warning("launch of %s may have failed; looking for it again", job_name)
                time.sleep(min(self.backoff_s * 2**attempt, http.MAX_BACKOFF_S))
        raise AssertionError("unreachable")  # the loop returns or raises

    def status(self, run_id: str) -> RunState:
        return answers.run_state(self._execute(q.STATUS, {"runId": run_id}), run_id)

    def terminate(self, run_id: str) -> RunState:
        """Ask Dagster to stop a run (a queued one is canceled at once); its state after."""
        result = self._execute(q.TERMINATE, {"runId": run_id})["terminateRun"]
        kind = result["__typename"]
        if kind == "TerminateRunSuccess":
            # The run in the answer is read before the cancellation: read it again.
            return self.status(run_id)
        if kind == "TerminateRunFailure":
            raise DagsterError(f"Dagster did not terminate run {run_id}: {result['message']}")
        raise answers.run_error(result, run_id)

    def daemon_healthy(self) -> bool:
        """Whether the daemon that launches queued runs has sent a heartbeat lately."""
        return answers.daemon_fresh(self._execute(q.QUEUE_DAEMON, {}), time.time())

    def wait(
        self,
        run_id: str,
        *,
        poll_s: float = 5.0,
        timeout_s: float = 7200.0,
        queued_timeout_s: float = 300.0,
    ) -> RunState:
        """Poll until the run finishes; its final state, whatever it is."""
        watch = RunWatch(
            run_id, self.run_url(run_id), time.monotonic(), timeout_s, queued_timeout_s
        )
        previous = ""
        while True:
            state = self.status(run_id)
            now = time.monotonic()
            if state.status != previous:
                log.info("run %s is %s", run_id, state.status)
                previous = state.status
            if state.finished:
                return state
            if (queued := watch.queued_for(state, now)) is not None:
                raise RunQueuedTooLong(self._queued_message(run_id, queued))
            if (timed_out := watch.timed_out(state, now)) is not None:
                raise timed_out
            time.sleep(watch.next_sleep(poll_s, now))

    def report(self, run_id: str) -> RunReport:
        """Materializations, check evaluations and failures of a run, from its event log."""
        return answers.report(self.status(run_id), self.run_url(run_id), self._events(run_id))

    # --- plumbing ---------------------------------------------------------------------------

    def _runs(self, tags: dict[str, str]) -> list[dict[str, Any]]:
        filter_ = {"tags": [{"key": k, "value": str(v)} for k, v in tags.items()]}
        return answers.runs_list(self._execute(q.RUNS, {"filter": filter_}), tags)

    def _events(self, run_id: str) -> Iterator[dict[str, Any]]:
        cursor: str | None = None
        while True:
            variables = {"runId": run_id, "after": cursor, "limit": _EVENTS_PAGE}
            page = self._execute(q.EVENTS, variables)["logsForRun"]
            if page["__typename"] != "EventConnection":
                raise answers.run_error(page, run_id)
            yield from page["events"]
            if not page["hasMore"] or not page["events"]:
                return
            cursor = page["cursor"]

    def _queued_message(self, run_id: str, seconds: float) -> str:
        try:
            healthy = self.daemon_healthy()
        except DagsterError:  # the message is still worth raising without the health check
            healthy = False
        return answers.queued_message(self.url, run_id, seconds, healthy)

    def _execute(
        self, query: str, variables: dict[str, Any], *, repeatable: bool = True
    ) -> dict[str, Any]:
        payload = {"query": query, "variables": variables}
        policy = http.retry_policy(
            self.graphql_url, retries=self.retries, backoff_s=self.backoff_s, repeatable=repeatable
        )
        retrying = tenacity.Retrying(**policy)
        try:
            response = retrying(
                lambda: http.checked(self._http.post(self.graphql_url, json=payload))
            )
        except (httpx.TransportError, http.ServerError) as exc:
            tries = retrying.statistics.get("attempt_number", 1)
            raise http.transport_error(exc, self.graphql_url, tries, repeatable) from exc
        return http.graphql_data(response, self.graphql_url)


def _selection(keys: list[str] | None) -> frozenset[str] | None:
    """None (the whole job) or the selected keys; an empty selection is the whole job too."""
    return frozenset(keys) if keys else None
