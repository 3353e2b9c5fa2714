"""Dagster's GraphQL answers read into the client's values, for the sync and async clients alike.

Each function takes the `data` of one query of `dagster_queries` and returns a `RunState`, a
`RunReport`, a run id, or raises the error the answer stands for.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from airflow_bridge import dagster_queries as q
from airflow_bridge.dagster_results import (
    STALE_HEARTBEAT_S,
    DagsterError,
    JobShape,
    RunNotFound,
    RunReport,
    RunState,
)


def run_error(result: Mapping[str, Any], run_id: str) -> DagsterError:
    if result["__typename"] == "RunNotFoundError":
        return RunNotFound(f"no Dagster run {run_id}: {result.get('message')}")
    return DagsterError(f"Dagster failed on run {run_id}: {result.get('message')}")


def run_state(data: Mapping[str, Any], run_id: str) -> RunState:
    """The answer to `STATUS`."""
    result = data["runOrError"]
    if result["__typename"] != "Run":
        raise run_error(result, run_id)
    return RunState(result["runId"], result["status"])


def launched_run_id(data: Mapping[str, Any], job_name: str, url: str, location: str) -> str:
    """The answer to `LAUNCH`: the new run's id, or the refusal as a `DagsterError`."""
    result = data["launchRun"]
    kind = result["__typename"]
    if kind == "LaunchRunSuccess":
        return str(result["run"]["runId"])
    if kind == "RunConfigValidationInvalid":
        detail = "; ".join(e["message"] for e in result["errors"])
    elif kind == "InvalidStepError":
        detail = f"no step {result['invalidStepKey']}"
    elif kind == "InvalidOutputError":
        detail = f"step {result['stepKey']} has no output {result['invalidOutputName']}"
    else:
        detail = str(result.get("message", "")).strip()
    raise DagsterError(
        f"Dagster at {url} did not launch {job_name} (location {location}): {kind}: {detail}"
    )


def job_shape(data: Mapping[str, Any], job_name: str, location: str) -> JobShape:
    """The answer to `JOB_SHAPE`, or the `DagsterError` of a job the location does not hold."""
    result = data["pipelineOrError"]
    if result["__typename"] != "Pipeline":
        raise DagsterError(
            f"no job {job_name} in the Dagster code location {location}: {result.get('message')}"
        )
    keys = result["partitionKeysOrError"]["partitionKeys"]
    assets = frozenset(q.asset_key(node["assetKey"]) for node in data["assetNodes"])
    return JobShape(assets, tuple(keys))


def daemon_heartbeat(data: Mapping[str, Any]) -> tuple[bool, float | None]:
    """The answer to `QUEUE_DAEMON`: Dagster's `healthy` and the last heartbeat (epoch s)."""
    status = data["instance"]["daemonHealth"]["daemonStatus"]
    last = status.get("lastHeartbeatTime")
    return bool(status["healthy"]), None if last is None else float(last)


def daemon_fresh(data: Mapping[str, Any], now: float) -> bool:
    """Whether the queued-run daemon has sent a heartbeat lately.

    Not Dagster's own `healthy` alone: it tolerates a heartbeat 30 minutes old, so a daemon
    stopped a minute ago still reads healthy. The daemon beats every 30 s; older than
    `STALE_HEARTBEAT_S` means it is gone.
    """
    healthy, last = daemon_heartbeat(data)
    return healthy and last is not None and now - last < STALE_HEARTBEAT_S


def daemon_running(
    first: float | None, healthy: bool, last: float | None, now: float
) -> bool | None:
    """Whether the daemon runs, judged while watching a queued run; None while it cannot tell.

    True once it has beaten since `first` (its last heartbeat when the watch began), False once
    it has been silent for `STALE_HEARTBEAT_S` (or never beat). In between, a heartbeat a few
    seconds old says nothing: a live daemon beats only every 30 s.
    """
    if not healthy or last is None or now - last >= STALE_HEARTBEAT_S:
        return False
    if first is None or last > first:
        return True
    return None


def queued_message(url: str, run_id: str, seconds: float, daemon_healthy: bool) -> str:
    """Why a run stayed queued, and where to look: the text of `RunQueuedTooLong`."""
    reason = (
        "the Dagster daemon reports healthy, so run queue limits (max_concurrent_runs, "
        "tag_concurrency_limits in dagster.yaml) are probably holding it"
        if daemon_healthy
        else "the Dagster daemon is probably not running: it is what takes queued runs off "
        "the queue and launches them. Start `dagster-daemon run` on the same DAGSTER_HOME "
        f"and check it under Deployment > Daemons in the UI ({url}/deployment/daemons)"
    )
    run = f"{url}/runs/{run_id}"
    return f"Dagster run {run_id} stayed QUEUED for {seconds:.0f} s: {reason}. Run: {run}"


def runs_list(data: Mapping[str, Any], tags: Mapping[str, str]) -> list[dict[str, Any]]:
    """The answer to `RUNS`, newest first."""
    result = data["runsOrError"]
    if result["__typename"] != "Runs":
        raise DagsterError(f"Dagster did not list runs tagged {tags}: {result.get('message')}")
    runs: list[dict[str, Any]] = result["results"]
    return sorted(runs, key=lambda run: run["creationTime"], reverse=True)


def report(state: RunState, url: str, events: Iterable[Mapping[str, Any]]) -> RunReport:
    """Materializations, check evaluations and failures of a run, from its `EVENTS` pages."""
    result = RunReport(run_id=state.run_id, status=state.status, url=url)
    step_failures: list[str] = []
    run_failures: list[str] = []
    for event in events:
        kind = event["__typename"]
        if kind == "MaterializationEvent":
            metadata = {e["label"]: q.metadata_value(e) for e in event["metadataEntries"]}
            result.materializations.setdefault(q.asset_key(event["assetKey"]), {}).update(metadata)
        elif kind == "AssetCheckEvaluationEvent":
            evaluation = event["evaluation"]
            check = {
                "check": evaluation["checkName"],
                "asset": q.asset_key(evaluation["assetKey"]),
                "passed": bool(evaluation["success"]),
                "severity": evaluation["severity"],
                "description": evaluation["description"] or "",
            }
            result.checks.append(check)
            if not check["passed"] and check["severity"] == "ERROR":
                keys = ("check", "asset", "description")
                result.failed_checks.append({k: str(check[k]) for k in keys})
        elif kind == "ExecutionStepFailureEvent":
            error = q.error_text(event["error"]) or event["message"]
            step_failures.append(f"step {event['stepKey']} failed: {error}")
        elif kind in ("ResourceInitFailureEvent", "RunFailureEvent", "RunCanceledEvent"):
            # A resource that cannot start (the MLflow server is down) fails the run before
            # any step: its own event carries the reason.
            error = event.get("error")
            run_failures.append(event["message"] + (f": {q.error_text(error)}" if error else ""))
    if state.status in ("FAILURE", "CANCELED"):
        # The blocking check's step error names the check; its description says why.
        reasons = [
            f"{c['check']} on {c['asset']}: {c['description']}" for c in result.failed_checks
        ]
        result.failure = "\n".join([*(step_failures or run_failures), *reasons]) or (
            f"run {state.status.lower()} with no error recorded; see {url}"
        )
    return result
