"""The weekly retrain's stages and what they report; plain Python, no airflow import.

Each stage of the original contract (validate, train, evaluate and compare, deploy if better) is
an asset selection of Dagster's `weekly_retrain_job`. `launch` starts a stage's run once per
Airflow task (the idempotency key leaves out the try number, so a retry finds the run already
going); the triggerer follows it (`dagster_poller.watch_run`), and `resolve` turns how it ended
into a `StageOutcome` that the task keeps in XCom for `notify` (`airflow_bridge.message` words
it). `stage_problems` ties the stages to the Dagster job's asset selection.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from airflow_bridge.dagster_client import DagsterClient
from airflow_bridge.dagster_results import ERRORS, DagsterError, JobShape, RunReport

JOB_NAME = "weekly_retrain_job"


@dataclass(frozen=True)
class Stage:
    """One stage of the weekly retrain: an Airflow task and the Dagster assets it materializes.

    `assets` names them in either contract's job; a stage selects those its job holds (the card
    contract's weekly job has no `raw_transactions`: its days are `daily_cards_job`'s).
    """

    task_id: str
    assets: tuple[str, ...]
    summary: str
    #: The card contract: this stage first brings in its week's days (`weeks.launch_days`).
    brings_days: bool = False

    def selection(self, shape: JobShape) -> list[str]:
        return [asset for asset in self.assets if asset in shape.assets]


VALIDATE = Stage(
    "validate_data",
    ("labelled_transactions", "raw_transactions", "transaction_splits"),
    "Load the new transactions and split them; the schema, null, label, range and "
    "minimum-fraud checks run with them and block the rest on failure. Card data: the week's "
    "days first (one daily_cards_job run), then the week's splits of its last N days.",
    brings_days=True,
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
#: Dagster's run tag of a partition.
PARTITION_TAG = "dagster/partition"


def stage_problems(
    stages: Sequence[Stage], job_assets: Mapping[str, Collection[str]], job: str = JOB_NAME
) -> list[str]:
    """What keeps `stages` from being the job's assets split in order; empty when nothing does.

    `job_assets` maps each asset key of the job's selection to the keys it depends on. Every
    asset must be in exactly one stage, every stage must select one at least, and no stage may
    depend on an asset of a later stage (that stage would run before its input is
    materialized). A stage's asset the job does not hold is the other contract's.
    """
    problems: list[str] = []
    stage_of: dict[str, int] = {}
    for index, stage in enumerate(stages):
        held = [asset for asset in stage.assets if asset in job_assets]
        if not held:
            problems.append(f"{stage.task_id} selects nothing {job} holds")
        for asset in held:
            if asset in stage_of:
                first = stages[stage_of[asset]].task_id
                problems.append(f"{asset} is in two stages: {first} and {stage.task_id}")
                continue
            stage_of[asset] = index
    for asset in sorted(set(job_assets) - set(stage_of)):
        problems.append(f"{job} holds {asset}, which no stage selects")
    for asset, index in stage_of.items():
        for upstream in sorted(job_assets.get(asset, ())):
            if stage_of.get(upstream, -1) > index:
                problems.append(
                    f"{asset} ({stages[index].task_id}) depends on {upstream}, which the later "
                    f"stage {stages[stage_of[upstream]].task_id} materializes"
                )
    return problems


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
    """The key of a stage's Dagster run: the same for every try of one Airflow task."""
    return f"airflow:{dag_id}:{run_id}:{task_id}"


def run_tags(dag_id: str, run_id: str, task_id: str) -> dict[str, str]:
    """Tags on the Dagster run, so the Dagster UI shows which Airflow run asked for it."""
    return {"airflow/dag_id": dag_id, "airflow/run_id": run_id, "airflow/task_id": task_id}


def launch(
    client: DagsterClient,
    stage: Stage,
    *,
    dag_id: str,
    run_id: str,
    shape: JobShape | None = None,
    partition_key: str | None = None,
) -> str:
    """The stage's Dagster run: the one this Airflow task launched before, else a new one.

    `launch_or_find` reuses a run with the key that is queued, running or done (a retry follows
    its earlier run) and launches one otherwise (also when the earlier one failed). It selects
    the stage's assets that `shape` (the job, as Dagster has it) holds, all of them without one;
    a partitioned job's run is of `partition_key` (`weeks.week_of`).
    """
    tags = run_tags(dag_id, run_id, stage.task_id)
    if partition_key is not None:
        tags[PARTITION_TAG] = partition_key
    return client.launch_or_find(
        JOB_NAME,
        idempotency_key=idempotency_key(dag_id, run_id, stage.task_id),
        asset_selection=stage.selection(shape) if shape is not None else list(stage.assets),
        tags=tags,
    )


def resolve(
    client: DagsterClient, stage: Stage, event: Mapping[str, Any], *, stage_timeout_s: float
) -> StageOutcome:
    """The outcome of a stage from how following its run ended (`dagster_poller.RunEvent`).

    Returns the outcome once the run succeeded; raises `StageFailed` when it failed, was blocked
    by a check, stayed queued too long or ran past `stage_timeout_s`, and the `DagsterError`
    named by the event when Dagster could not be asked (the task's retries are for that).
    """
    dagster_run_id = str(event["run_id"])
    kind = event["event"]
    if kind == "queued_too_long":
        raise StageFailed(
            StageOutcome(stage.task_id, "failed", dagster_run_id, error=str(event["message"]))
        )
    if kind == "timed_out":
        error = f"{event['message']} (FRAUD_AIRFLOW_STAGE_TIMEOUT_S={stage_timeout_s:g} s reached)"
        raise StageFailed(StageOutcome(stage.task_id, "failed", dagster_run_id, error=error))
    if kind != "finished":
        raise ERRORS.get(str(event.get("error")), DagsterError)(str(event["message"]))
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
