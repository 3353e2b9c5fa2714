"""The weekly retrain's stages and what they report; plain Python, no airflow import.

Each stage of the original contract (validate, train, evaluate and compare, deploy if better) is
an asset selection of Dagster's `weekly_retrain_job`. `follow` launches a stage's run once per
Airflow task (the idempotency key leaves out the try number, so a retry finds the run already
going) and turns the finished run into a `StageOutcome` that the task keeps in XCom for `notify`
(`airflow_bridge.message` words it).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from airflow_bridge.dagster_client import (
    IDEMPOTENCY_TAG,
    DagsterClient,
    RunQueuedTooLong,
    RunReport,
    RunTimedOut,
)

JOB_NAME = "weekly_retrain_job"


@dataclass(frozen=True)
class Stage:
    """One stage of the weekly retrain: an Airflow task and the Dagster assets it materializes."""

    task_id: str
    assets: tuple[str, ...]
    summary: str


VALIDATE = Stage(
    "validate_data",
    ("labelled_transactions", "raw_transactions", "transaction_splits"),
    "Load the new transactions and split them; the schema, null, label, range and "
    "minimum-fraud checks run with them and block the rest on failure.",
)
TRAIN = Stage(
    "train",
    ("anomaly_scores", "fraud_model"),
    "Fit the anomaly feature and the challenger model (logged to MLflow).",
)
EVALUATE = Stage(
    "evaluate_and_compare",
    ("evaluation_report",),
    "Score the challenger on the held-out test split; the quality-floor check runs with it.",
)
DEPLOY = Stage(
    "deploy_if_better",
    ("promoted_model",),
    "Compare with production on the same rows; publish and move the MLflow alias only if better.",
)
STAGES: tuple[Stage, ...] = (VALIDATE, TRAIN, EVALUATE, DEPLOY)

OutcomeState = Literal["success", "blocked", "failed"]

#: Metadata worth carrying in XCom and the message: numbers, flags and short text (links, the
#: comparison table), not the embedded plots.
_MAX_TEXT = 2_000


@dataclass
class StageOutcome:
    """How one stage ended; what the stage task stores in XCom and `notify` reads back."""

    stage: str
    state: OutcomeState
    dagster_run_id: str | None = None
    dagster_run_url: str | None = None
    dagster_status: str | None = None
    decision: str | None = None
    #: The first failed check: {"check", "asset", "description"}.
    blocked_by: dict[str, str] | None = None
    error: str | None = None
    #: Small metadata of each materialized asset: {asset: {label: value}}.
    metadata: dict[str, dict[str, Any]] = field(default_factory=dict)

    def as_xcom(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_xcom(cls, value: Mapping[str, Any]) -> StageOutcome:
        fields: dict[str, Any] = {k: value[k] for k in cls.__dataclass_fields__ if k in value}
        return cls(**fields)

    def headline(self) -> str:
        """One line: what happened to this stage."""
        if self.state == "blocked" and self.blocked_by:
            return f"blocked by {self.blocked_by['check']}: {self.blocked_by['description']}"
        if self.state == "failed":
            return f"failed: {self.error or 'no reason given'}"
        return f"success ({self.decision})" if self.decision else "success"


class StageFailed(Exception):
    """A stage's Dagster run ended without success (a failed check, an error, a stuck queue).

    The task fails without automatic retries: they would only repeat the same failing work (the
    client never reuses a failed run). Clearing the task in the UI launches a fresh run. The
    message is the outcome's headline ("validate_data blocked by check_...: <description>").
    """

    def __init__(self, outcome: StageOutcome) -> None:
        super().__init__(f"{outcome.stage} {outcome.headline()}")
        self.outcome = outcome


def idempotency_key(dag_id: str, run_id: str, task_id: str) -> str:
    """The key of a stage's Dagster run: the same for every try and poke of one Airflow task."""
    return f"airflow:{dag_id}:{run_id}:{task_id}"


def run_tags(dag_id: str, run_id: str, task_id: str) -> dict[str, str]:
    """Tags on the Dagster run, so the Dagster UI shows which Airflow run asked for it."""
    return {"airflow/dag_id": dag_id, "airflow/run_id": run_id, "airflow/task_id": task_id}


def follow(
    client: DagsterClient,
    stage: Stage,
    *,
    dag_id: str,
    run_id: str,
    first_poke: bool,
    elapsed_s: float,
    wait_s: float,
    queued_timeout_s: float,
    stage_timeout_s: float,
) -> StageOutcome | None:
    """One poke: launch the stage's run or find it again, follow it up to `wait_s` seconds.

    The first poke of a try calls `launch_or_find`: it reuses a run with the key that is queued,
    running or done (a retry follows its earlier run) and launches one otherwise (also when the
    earlier one failed). Later pokes follow the newest run with the key, whatever its state, so a
    run that fails between two pokes is reported, not launched again. `elapsed_s` is the time
    since the try's first poke, which the time-outs count from.

    Returns the outcome once the run succeeded, None while it runs; raises `StageFailed` when it
    failed, was blocked by a check, stayed queued too long or ran past `stage_timeout_s`.
    """
    key = idempotency_key(dag_id, run_id, stage.task_id)
    earlier = [] if first_poke else client.find_runs({IDEMPOTENCY_TAG: key})
    if earlier:
        dagster_run_id = earlier[0].run_id
    else:
        dagster_run_id = client.launch_or_find(
            JOB_NAME,
            idempotency_key=key,
            asset_selection=list(stage.assets),
            tags=run_tags(dag_id, run_id, stage.task_id),
        )
    try:
        state = client.wait(
            dagster_run_id,
            poll_s=min(5.0, max(wait_s, 0.5)),
            timeout_s=wait_s,
            queued_timeout_s=max(queued_timeout_s - elapsed_s, 0.0),
        )
    except RunQueuedTooLong as exc:
        raise StageFailed(
            StageOutcome(stage.task_id, "failed", dagster_run_id, error=str(exc))
        ) from exc
    except RunTimedOut as exc:
        if elapsed_s + wait_s < stage_timeout_s:
            return None
        raise StageFailed(
            StageOutcome(
                stage.task_id,
                "failed",
                dagster_run_id,
                error=f"{exc} (FRAUD_AIRFLOW_STAGE_TIMEOUT_S={stage_timeout_s:g} s reached)",
            )
        ) from exc
    if not state.finished:  # `wait` returns finished states only; this guards the contract
        return None
    outcome = outcome_from_report(stage, client.report(dagster_run_id))
    if outcome.state != "success":
        raise StageFailed(outcome)
    return outcome


def outcome_from_report(stage: Stage, report: RunReport) -> StageOutcome:
    """A finished run's outcome: blocked by its first failed check, failed, or success."""
    outcome = StageOutcome(
        stage=stage.task_id,
        state="success",
        dagster_run_id=report.run_id,
        dagster_run_url=report.url,
        dagster_status=report.status,
        decision=report.decision,
        metadata={asset: _small(meta) for asset, meta in report.materializations.items()},
    )
    if report.failed_checks:
        first = report.failed_checks[0]
        outcome.state = "blocked"
        outcome.blocked_by = {k: str(first.get(k, "")) for k in ("check", "asset", "description")}
    elif report.status != "SUCCESS":
        outcome.state = "failed"
        outcome.error = report.failure or f"Dagster run ended {report.status}"
    return outcome


def failure_outcome(stage: Stage, error: BaseException) -> StageOutcome:
    """The outcome of a stage that could not follow its run (Dagster unreachable, a time-out)."""
    return StageOutcome(stage.task_id, "failed", error=f"{type(error).__name__}: {error}")


def _small(metadata: Mapping[str, Any]) -> dict[str, Any]:
    kept: dict[str, Any] = {}
    for label, value in metadata.items():
        if label.startswith("plot_"):
            continue
        if value is None or isinstance(value, bool | int | float):
            kept[label] = value
        elif isinstance(value, str):
            if len(value) <= _MAX_TEXT and "data:image" not in value:
                kept[label] = value
        elif len(json.dumps(value, default=str)) <= _MAX_TEXT:
            kept[label] = value
    return kept


def task_states(raw: Mapping[str, Any], run_id: str) -> dict[str, str | None]:
    """Airflow's `get_task_states` answer ({run_id: {task_id: state}}) as {task_id: state}."""
    states = raw.get(run_id, raw)
    return {str(k): (str(v) if v is not None else None) for k, v in dict(states).items()}


def outcomes_from_xcom(values: Sequence[Any]) -> dict[str, StageOutcome | None]:
    """The stage outcomes pulled from XCom, in `STAGES` order (None where a stage stored none)."""
    result: dict[str, StageOutcome | None] = {}
    for stage, value in zip(STAGES, values, strict=True):
        result[stage.task_id] = (
            StageOutcome.from_xcom(value) if isinstance(value, Mapping) else None
        )
    return result
