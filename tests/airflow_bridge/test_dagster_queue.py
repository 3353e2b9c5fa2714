"""The Dagster client against a real webserver with no daemon: runs stay QUEUED.

Launching costs nothing more here, so the cases that need runs but not their execution live here.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from airflow_bridge import dagster_poller
from airflow_bridge.dagster_client import (
    IDEMPOTENCY_TAG,
    DagsterClient,
    DagsterError,
    RunNotFound,
    RunQueuedTooLong,
)
from tests.airflow_bridge.conftest import JOB, DagsterServer, client_for

pytestmark = pytest.mark.slow


def test_run_stuck_in_the_queue_blames_the_daemon(dagster_without_daemon: DagsterServer) -> None:
    client = client_for(dagster_without_daemon)
    run_id = client.launch_run(JOB, asset_selection=["raw_transactions"])
    started = time.monotonic()

    with pytest.raises(RunQueuedTooLong) as raised:
        client.wait(run_id, poll_s=0.5, queued_timeout_s=5)

    assert time.monotonic() - started >= 5
    assert client.daemon_healthy() is False
    message = str(raised.value)
    assert "QUEUED" in message and "daemon is probably not running" in message
    assert run_id in message

    # The triggerer's async poller reads the same answers and gives up with the same words.
    async def watch() -> dagster_poller.RunEvent:
        async with dagster_poller.DagsterPoller(client.url, retries=2, backoff_s=0.5) as poller:
            return await dagster_poller.watch_run(
                poller, run_id, started_at=time.time(), poll_s=0.5, timeout_s=60, queued_timeout_s=2
            )

    event = asyncio.run(watch())
    assert event["event"] == "queued_too_long" and event["status"] == "QUEUED"
    assert event["message"] is not None and "daemon is probably not running" in event["message"]
    assert f"Run: {client.run_url(run_id)}" in event["message"]
    assert client.status(run_id).status == "QUEUED"
    assert client.terminate(run_id).status == "CANCELED"
    report = client.report(run_id)
    assert report.status == "CANCELED" and report.failure and report.materializations == {}


def test_launch_or_find_matches_the_selection_and_skips_dead_runs(
    dagster_without_daemon: DagsterServer,
) -> None:
    """Runs stay queued here, so each case costs a launch and no execution."""
    client = client_for(dagster_without_daemon)
    key = "selection-and-retries"
    raw = client.launch_or_find(JOB, idempotency_key=key, asset_selection=["raw_transactions"])
    whole = client.launch_or_find(JOB, idempotency_key=key)
    assert whole != raw
    assert client.launch_or_find(JOB, idempotency_key=key) == whole
    assert (
        client.launch_or_find(JOB, idempotency_key=key, asset_selection=["raw_transactions"]) == raw
    )
    # A canceled run never succeeds: a retried task launches a new one.
    client.terminate(raw)
    retried = client.launch_or_find(JOB, idempotency_key=key, asset_selection=["raw_transactions"])
    assert retried not in (raw, whole)
    runs = client.find_runs({IDEMPOTENCY_TAG: key})
    assert [run.run_id for run in runs] == [retried, whole, raw]  # newest first
    assert [run.status for run in runs] == ["QUEUED", "QUEUED", "CANCELED"]
    for run_id in (retried, whole):
        client.terminate(run_id)


def test_dagster_refusals_are_reported(dagster_without_daemon: DagsterServer) -> None:
    client = client_for(dagster_without_daemon)
    with pytest.raises(DagsterError, match=r"InvalidSubsetError.*no_such_asset"):
        client.launch_run(JOB, asset_selection=["no_such_asset"])
    with pytest.raises(DagsterError, match="PipelineNotFoundError"):
        client.launch_run("no_such_job")
    wrong_location = DagsterClient(dagster_without_daemon.url, "no_such_location", retries=0)
    with pytest.raises(DagsterError, match=r"PipelineNotFoundError.*no_such_location"):
        wrong_location.launch_run(JOB)
    with pytest.raises(DagsterError, match=r"RunConfigValidationInvalid.*no_such_op"):
        client.launch_run(JOB, run_config={"ops": {"no_such_op": {}}})
    with pytest.raises(RunNotFound, match="no-such-run"):
        client.status("no-such-run")
    with pytest.raises(RunNotFound):
        client.report("no-such-run")
