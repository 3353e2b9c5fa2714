"""Launch, watch and report Dagster runs over the webserver's GraphQL API (POST {url}/graphql).

Airflow drives Dagster through this module alone: it imports neither `dagster` nor `airflow`, only
`httpx` and `tenacity`. Requests are retried with exponential backoff on connection errors, timeouts
and HTTP 5xx, never on a GraphQL error, which is an answer: it is raised at once as `DagsterError`.

A launch is not repeated blindly: if the webserver may have received it (a read timeout, an HTTP
500) a second launch could start a second run, so `launch_run` raises `LaunchOutcomeUnknown`, and
`launch_or_find`, which can look for its own tag, looks before it launches again.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import tenacity

from airflow_bridge import dagster_queries as q

log = logging.getLogger(__name__)

DEFAULT_URL = "http://127.0.0.1:3000"
DEFAULT_LOCATION = "fraud_assets"
DEFAULT_REPOSITORY = "__repository__"
IDEMPOTENCY_TAG = "airflow/idempotency_key"
PROMOTION_ASSET = "promoted_model"
FINISHED_STATUSES = frozenset({"SUCCESS", "FAILURE", "CANCELED"})
#: A run with the same idempotency key in one of these is not reused: it will never succeed.
_NOT_REUSABLE = frozenset({"FAILURE", "CANCELED", "CANCELING"})
#: HTTP statuses that say the request was not processed, so even a launch may be sent again.
_NOT_PROCESSED = frozenset({503})
_EVENTS_PAGE = 1000
_MAX_BACKOFF_S = 30.0


class DagsterError(RuntimeError):
    """Dagster refused or failed something; the message says what and why."""


class DagsterUnreachable(DagsterError):
    """The webserver did not answer (or answered 5xx) on any of the tries."""


class LaunchOutcomeUnknown(DagsterUnreachable):
    """A launch request may have reached Dagster: a run may exist although no id came back."""


class RunNotFound(DagsterError):
    """No run with that id on this Dagster instance."""


class RunQueuedTooLong(DagsterError):
    """The run never left the queue: usually no Dagster daemon is running to dequeue it."""


class RunTimedOut(DagsterError):
    """The run did not finish within the time `wait` was given."""


@dataclass(frozen=True)
class RunState:
    run_id: str
    status: str  # QUEUED, NOT_STARTED, STARTING, STARTED, SUCCESS, FAILURE, CANCELING, CANCELED…

    @property
    def finished(self) -> bool:
        return self.status in FINISHED_STATUSES


@dataclass
class RunReport:
    """What a finished run did: materializations with metadata, check failures, the error."""

    run_id: str
    status: str
    url: str
    #: asset key "a/b" -> metadata label -> plain value (float, int, str, bool, parsed JSON, None).
    materializations: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: ERROR-severity checks that failed: {"check", "asset", "description"}.
    failed_checks: list[dict[str, str]] = field(default_factory=list)
    #: The failed step(s) and their error messages; None unless the run failed or was canceled.
    failure: str | None = None
    #: Every check evaluation: {"check", "asset", "passed", "severity", "description"}.
    checks: list[dict[str, Any]] = field(default_factory=list)

    @property
    def decision(self) -> str | None:
        value = self.materializations.get(PROMOTION_ASSET, {}).get("decision")
        return None if value is None else str(value)

    @property
    def succeeded(self) -> bool:
        return self.status == "SUCCESS"


class _ServerError(Exception):
    def __init__(self, response: httpx.Response):
        super().__init__(f"HTTP {response.status_code}: {response.text[:300]}")
        self.status_code = response.status_code


def _retryable(exc: BaseException, repeatable: bool) -> bool:
    if isinstance(exc, _ServerError):
        return repeatable or exc.status_code in _NOT_PROCESSED
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        return True  # the request never left this machine
    return repeatable and isinstance(exc, httpx.TransportError)


#: A queued-run daemon whose last heartbeat is older than this is taken for stopped (it beats
#: every 30 s).
STALE_HEARTBEAT_S = 75.0


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
        self.url = url.rstrip("/").removesuffix("/graphql")
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
        result = data["launchRun"]
        kind = result["__typename"]
        if kind == "LaunchRunSuccess":
            run_id = str(result["run"]["runId"])
            log.info("launched %s as run %s: %s", job_name, run_id, self.run_url(run_id))
            return run_id
        if kind == "RunConfigValidationInvalid":
            detail = "; ".join(e["message"] for e in result["errors"])
        elif kind == "InvalidStepError":
            detail = f"no step {result['invalidStepKey']}"
        elif kind == "InvalidOutputError":
            detail = f"step {result['stepKey']} has no output {result['invalidOutputName']}"
        else:
            detail = str(result.get("message", "")).strip()
        raise DagsterError(
            f"Dagster at {self.url} did not launch {job_name} "
            f"(location {self.location}): {kind}: {detail}"
        )

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
                time.sleep(min(self.backoff_s * 2**attempt, _MAX_BACKOFF_S))
        raise AssertionError("unreachable")  # the loop returns or raises

    def status(self, run_id: str) -> RunState:
        result = self._execute(q.STATUS, {"runId": run_id})["runOrError"]
        if result["__typename"] != "Run":
            raise _run_error(result, run_id)
        return RunState(result["runId"], result["status"])

    def terminate(self, run_id: str) -> RunState:
        """Ask Dagster to stop a run (a queued one is canceled at once); its state after."""
        result = self._execute(q.TERMINATE, {"runId": run_id})["terminateRun"]
        kind = result["__typename"]
        if kind == "TerminateRunSuccess":
            # The run in the answer is read before the cancellation: read it again.
            return self.status(run_id)
        if kind == "TerminateRunFailure":
            raise DagsterError(f"Dagster did not terminate run {run_id}: {result['message']}")
        raise _run_error(result, run_id)

    def daemon_healthy(self) -> bool:
        """Whether the daemon that launches queued runs has sent a heartbeat lately.

        Not Dagster's own `healthy` alone: it tolerates a heartbeat 30 minutes old, so a daemon
        stopped a minute ago still reads healthy. The daemon beats every 30 s; older than
        `STALE_HEARTBEAT_S` means it is gone.
        """
        status = self._execute(q.QUEUE_DAEMON, {})["instance"]["daemonHealth"]["daemonStatus"]
        last = status.get("lastHeartbeatTime")
        if not status["healthy"] or last is None:
            return False
        return time.time() - float(last) < STALE_HEARTBEAT_S

    def wait(
        self,
        run_id: str,
        *,
        poll_s: float = 5.0,
        timeout_s: float = 7200.0,
        queued_timeout_s: float = 300.0,
    ) -> RunState:
        """Poll until the run finishes; its final state, whatever it is."""
        start = time.monotonic()
        queued_since: float | None = None
        previous = ""
        while True:
            state = self.status(run_id)
            now = time.monotonic()
            if state.status != previous:
                log.info("run %s is %s", run_id, state.status)
                previous = state.status
            if state.finished:
                return state
            if state.status != "QUEUED":
                queued_since = None
            elif queued_since is None:
                queued_since = now
            if queued_since is not None and now - queued_since >= queued_timeout_s:
                raise RunQueuedTooLong(self._queued_message(run_id, now - queued_since))
            if now - start >= timeout_s:
                raise RunTimedOut(
                    f"Dagster run {run_id} is still {state.status} after {now - start:.0f} s "
                    f"(limit {timeout_s:.0f} s); it goes on in Dagster: {self.run_url(run_id)}"
                )
            time.sleep(max(0.0, min(poll_s, timeout_s - (now - start))))

    def report(self, run_id: str) -> RunReport:
        """Materializations, check evaluations and failures of a run, from its event log."""
        state = self.status(run_id)
        report = RunReport(run_id=run_id, status=state.status, url=self.run_url(run_id))
        step_failures: list[str] = []
        run_failures: list[str] = []
        for event in self._events(run_id):
            kind = event["__typename"]
            if kind == "MaterializationEvent":
                metadata = {e["label"]: q.metadata_value(e) for e in event["metadataEntries"]}
                report.materializations.setdefault(q.asset_key(event["assetKey"]), {}).update(
                    metadata
                )
            elif kind == "AssetCheckEvaluationEvent":
                evaluation = event["evaluation"]
                check = {
                    "check": evaluation["checkName"],
                    "asset": q.asset_key(evaluation["assetKey"]),
                    "passed": bool(evaluation["success"]),
                    "severity": evaluation["severity"],
                    "description": evaluation["description"] or "",
                }
                report.checks.append(check)
                if not check["passed"] and check["severity"] == "ERROR":
                    keys = ("check", "asset", "description")
                    report.failed_checks.append({k: str(check[k]) for k in keys})
            elif kind == "ExecutionStepFailureEvent":
                error = q.error_text(event["error"]) or event["message"]
                step_failures.append(f"step {event['stepKey']} failed: {error}")
            elif kind in ("ResourceInitFailureEvent", "RunFailureEvent", "RunCanceledEvent"):
                # A resource that cannot start (the MLflow server is down) fails the run before
                # any step: its own event carries the reason.
                error = event.get("error")
                run_failures.append(
                    event["message"] + (f": {q.error_text(error)}" if error else "")
                )
        if state.status in ("FAILURE", "CANCELED"):
            # The blocking check's step error names the check; its description says why.
            reasons = [
                f"{c['check']} on {c['asset']}: {c['description']}" for c in report.failed_checks
            ]
            report.failure = "\n".join([*(step_failures or run_failures), *reasons]) or (
                f"run {state.status.lower()} with no error recorded; see {report.url}"
            )
        return report

    # --- plumbing ---------------------------------------------------------------------------

    def _runs(self, tags: dict[str, str]) -> list[dict[str, Any]]:
        filter_ = {"tags": [{"key": k, "value": str(v)} for k, v in tags.items()]}
        result = self._execute(q.RUNS, {"filter": filter_})["runsOrError"]
        if result["__typename"] != "Runs":
            raise DagsterError(f"Dagster did not list runs tagged {tags}: {result.get('message')}")
        runs: list[dict[str, Any]] = result["results"]
        return sorted(runs, key=lambda run: run["creationTime"], reverse=True)

    def _events(self, run_id: str) -> Iterator[dict[str, Any]]:
        cursor: str | None = None
        while True:
            variables = {"runId": run_id, "after": cursor, "limit": _EVENTS_PAGE}
            page = self._execute(q.EVENTS, variables)["logsForRun"]
            if page["__typename"] != "EventConnection":
                raise _run_error(page, run_id)
            yield from page["events"]
            if not page["hasMore"] or not page["events"]:
                return
            cursor = page["cursor"]

    def _queued_message(self, run_id: str, seconds: float) -> str:
        try:
            healthy = self.daemon_healthy()
        except DagsterError:  # the message is still worth raising without the health check
            healthy = False
        reason = (
            "the Dagster daemon reports healthy, so run queue limits (max_concurrent_runs, "
            "tag_concurrency_limits in dagster.yaml) are probably holding it"
            if healthy
            else "the Dagster daemon is probably not running: it is what takes queued runs off "
            "the queue and launches them. Start `dagster-daemon run` on the same DAGSTER_HOME "
            f"and check it under Deployment > Daemons in the UI ({self.url}/deployment/daemons)"
        )
        return (
            f"Dagster run {run_id} stayed QUEUED for {seconds:.0f} s: {reason}. "
            f"Run: {self.run_url(run_id)}"
        )

    def _execute(
        self, query: str, variables: dict[str, Any], *, repeatable: bool = True
    ) -> dict[str, Any]:
        response = self._post({"query": query, "variables": variables}, repeatable)
        try:
            body = response.json()
        except ValueError as exc:
            raise DagsterError(
                f"{self.graphql_url} answered HTTP {response.status_code} with something that is "
                f"not JSON ({response.text[:200]!r}): is this a Dagster webserver?"
            ) from exc
        errors = body.get("errors") if isinstance(body, dict) else None
        if errors:
            messages = "; ".join(str(e.get("message", e)) for e in errors)
            raise DagsterError(f"GraphQL error from {self.graphql_url}: {messages}")
        if response.is_error or not isinstance(body, dict) or body.get("data") is None:
            raise DagsterError(
                f"{self.graphql_url} answered HTTP {response.status_code}: {response.text[:300]}"
            )
        data: dict[str, Any] = body["data"]
        return data

    def _post(self, payload: dict[str, Any], repeatable: bool) -> httpx.Response:
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.retries + 1),
            wait=tenacity.wait_exponential(multiplier=self.backoff_s, max=_MAX_BACKOFF_S),
            retry=tenacity.retry_if_exception(lambda exc: _retryable(exc, repeatable)),
            before_sleep=lambda state: log.warning(
                "Dagster at %s: %s; try %d of %d",
                self.graphql_url,
                state.outcome.exception() if state.outcome else None,
                state.attempt_number + 1,
                self.retries + 1,
            ),
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    response = self._http.post(self.graphql_url, json=payload)
                    if response.status_code >= 500:
                        raise _ServerError(response)
                    return response
        except (httpx.TransportError, _ServerError) as exc:
            tries = retrying.statistics.get("attempt_number", 1)
            if not _retryable(exc, repeatable):
                raise LaunchOutcomeUnknown(
                    f"no answer from the Dagster webserver at {self.graphql_url} ({exc!r}) after "
                    "it may have received the request, which is not repeated blindly: look for "
                    "the run in the Dagster UI before launching again (launch_or_find does)"
                ) from exc
            raise DagsterUnreachable(
                f"cannot reach the Dagster webserver at {self.graphql_url} after {tries} "
                f"tr{'y' if tries == 1 else 'ies'} ({exc!r}): check that dagster-webserver is "
                "running there and that the URL (DAGSTER_WEBSERVER_URL) is right"
            ) from exc
        raise AssertionError("unreachable")  # tenacity returns or raises


def _selection(keys: list[str] | None) -> frozenset[str] | None:
    """None (the whole job) or the selected keys; an empty selection is the whole job too."""
    return frozenset(keys) if keys else None


def _run_error(result: Mapping[str, Any], run_id: str) -> DagsterError:
    if result["__typename"] == "RunNotFoundError":
        return RunNotFound(f"no Dagster run {run_id}: {result.get('message')}")
    return DagsterError(f"Dagster failed on run {run_id}: {result.get('message')}")
