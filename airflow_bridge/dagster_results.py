"""What the Dagster client answers and raises: run states, run reports, the errors.

Shared by the sync client (`dagster_client`), the async status poller (`dagster_poller`) and
the DAG's tasks; plain Python, no HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

IDEMPOTENCY_TAG = "airflow/idempotency_key"
PROMOTION_ASSET = "promoted_model"
FINISHED_STATUSES = frozenset({"SUCCESS", "FAILURE", "CANCELED"})
#: A queued-run daemon whose last heartbeat is older than this is taken for stopped (it beats
#: every 30 s).
STALE_HEARTBEAT_S = 75.0


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


#: The errors a trigger event may name, so the task that resumes raises the same class.
ERRORS: dict[str, type[DagsterError]] = {
    cls.__name__: cls
    for cls in (
        DagsterError,
        DagsterUnreachable,
        LaunchOutcomeUnknown,
        RunNotFound,
        RunQueuedTooLong,
        RunTimedOut,
    )
}


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


@dataclass
class RunWatch:
    """The clock of one followed run: says when it stayed queued or ran too long.

    The sync client's `wait` and the async poller's `watch_run` both give up through it, with
    the same rules: queued time counts while the run is QUEUED (from `queued_since`, the launch
    when known), the stage time from `started`.
    """

    run_id: str
    run_url: str
    started: float
    timeout_s: float
    queued_timeout_s: float
    queued_since: float | None = None

    def queued_for(self, state: RunState, now: float) -> float | None:
        """Seconds the run has been queued, once that exceeds the limit; else None."""
        if state.status != "QUEUED":
            self.queued_since = None
            return None
        if self.queued_since is None:
            self.queued_since = now
        waited = now - self.queued_since
        return waited if waited >= self.queued_timeout_s else None

    def timed_out(self, state: RunState, now: float) -> RunTimedOut | None:
        """The error to raise once the run has been followed for `timeout_s`; else None."""
        elapsed = now - self.started
        if elapsed < self.timeout_s:
            return None
        return RunTimedOut(
            f"Dagster run {self.run_id} is still {state.status} after {elapsed:.0f} s "
            f"(limit {self.timeout_s:.0f} s); it goes on in Dagster: {self.run_url}"
        )

    def next_sleep(self, poll_s: float, now: float) -> float:
        return max(0.0, min(poll_s, self.timeout_s - (now - self.started)))


@dataclass(frozen=True)
class JobShape:
    """What a Dagster job holds: its asset keys, and its newest partition keys in order."""

    assets: frozenset[str]
    #: Empty for an unpartitioned job.
    partition_keys: tuple[str, ...] = ()
