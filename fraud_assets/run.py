"""The manual training run (`python scripts/run_pipeline.py`, `make materialize`), stage by stage.

The original system's `scripts/run_pipeline.py` loaded and preprocessed the data, scored anomalies
with an IsolationForest, resampled with SMOTE, trained XGBoost, evaluated, logged to MLflow and
exported the models. Here the same stages are the Dagster assets of `weekly_retrain_job`; this
module only runs that job in process, on the instance under DAGSTER_HOME (so the run shows in the
Dagster UI), and prints one line per step start and end, per check result and per log message of
the assets, then the promotion decision. A blocking check that fails ends it with exit status 1
and the check's message.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import uuid
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, TextIO

import dagster as dg

from fraud_core.contracts import CARDS, KAGGLE

if TYPE_CHECKING:
    from dagster_shared.error import SerializableErrorInfo

#: Dagster's own console log (its structured DEBUG lines) is off unless asked for: the stage lines
#: say what runs, and every failure is printed with its message.
DAGSTER_LOG_LEVELS = ("off", "debug", "info", "warning", "error")
#: Metadata shown on a "done" line: the first few short figures of the asset.
SHOWN_METADATA = 4
_FIGURES = (dg.IntMetadataValue, dg.FloatMetadataValue, dg.BoolMetadataValue, dg.TextMetadataValue)


#: The check's own error log (fraud_assets/defs/checks.py), for Dagster's console: the [check]
#: line already says it.
_REPEATED_CHECK_FAILURE = re.compile(r"^check_\w+ failed: ")
#: Dagster's message for a step whose inputs were not produced (a failed step or blocking check).
_NOT_EXECUTED = re.compile(r"^Dependencies for step \S+ (failed|were not executed)")


def _figures(metadata: Mapping[str, Any]) -> str:
    shown = []
    for key, value in metadata.items():
        if key.startswith("dagster/") or not isinstance(value, _FIGURES):
            continue
        text = (
            f"{value.value:.4g}" if isinstance(value, dg.FloatMetadataValue) else str(value.value)
        )
        if len(text) <= 40:
            shown.append(f"{key}={text}")
        if len(shown) == SHOWN_METADATA:
            break
    return ", ".join(shown)


def _error(error: SerializableErrorInfo | None, event: dg.DagsterEvent) -> str:
    """An error's message on one line, without the exception's module path."""
    if error is None:
        return event.message or "failed"
    text = error.message.strip()
    text = re.sub(r"^[\w.]*" + re.escape(error.cls_name or "-") + r": ", "", text)
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def describe(entry: dg.EventLogEntry) -> str | None:
    """The line a user sees for one event of the run, or None for the events that say nothing."""
    if entry.dagster_event is not None:
        return describe_event(entry.dagster_event)
    # A context.log message of an asset or check, or one of Dagster's own.
    message = entry.user_message
    level = entry.level if isinstance(entry.level, int) else logging.getLevelName(entry.level)
    if level < logging.INFO or not message or _REPEATED_CHECK_FAILURE.match(message):
        return None
    if _NOT_EXECUTED.match(message):
        return f"[skip ] {entry.step_key}: not run, a step or blocking check before it failed"
    prefix = "" if level < logging.WARNING else f"{logging.getLevelName(level)}: "
    return f"        {entry.step_key or 'run'}: {prefix}{message}"


def describe_event(event: dg.DagsterEvent) -> str | None:
    """The line of one Dagster event: a step's start, end, failure or skip, a check's result."""
    kind, step = event.event_type, event.step_key
    if kind == dg.DagsterEventType.STEP_START:
        return f"[start] {step}"
    if kind == dg.DagsterEventType.STEP_SUCCESS:
        return f"[done ] {step} in {event.step_success_data.duration_ms / 1000:.1f} s"
    if kind == dg.DagsterEventType.ASSET_MATERIALIZATION:
        materialization = event.step_materialization_data.materialization
        figures = _figures(materialization.metadata)
        name = materialization.asset_key.to_user_string()
        return f"        {name} materialized" + (f": {figures}" if figures else "")
    if kind == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
        check = event.asset_check_evaluation_data
        verdict = "passed" if check.passed else "FAILED"
        return f"[check] {check.check_name} {verdict}: {check.description or ''}".rstrip(": ")
    if kind == dg.DagsterEventType.STEP_FAILURE:
        return f"[FAIL ] {step}: {_error(event.step_failure_data.error, event)}"
    if kind == dg.DagsterEventType.STEP_SKIPPED:
        return f"[skip ] {step}: not run, an optional output before it was not produced"
    if kind == dg.DagsterEventType.RESOURCE_INIT_FAILURE:
        return f"[FAIL ] resources: {_error(event.engine_event_data.error, event)}"
    return None


class StagePrinter:
    """An event listener of the instance that writes `describe`'s line for each event.

    A step materializing many partitions (a backfill of days) gets one line for all of them,
    when it ends, instead of one per partition.
    """

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.partitions: dict[str, list[tuple[str, str]]] = {}

    def __call__(self, entry: dg.EventLogEntry) -> None:
        event = entry.dagster_event
        line = describe(entry)
        if event is not None and event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION:
            materialization = event.step_materialization_data.materialization
            if materialization.partition is not None and line is not None:
                name = materialization.asset_key.to_user_string()
                self.partitions.setdefault(name, []).append((materialization.partition, line))
                return
        if event is not None and event.event_type == dg.DagsterEventType.STEP_SUCCESS:
            for name, done in self.partitions.items():
                if len(done) == 1:
                    key, shown = done[0]
                    shown = shown.replace(f"{name} materialized", f"{name} [{key}] materialized", 1)
                else:
                    shown = f"        {name} materialized: {len(done)} partitions, "
                    shown += f"{done[0][0]} … {done[-1][0]}"
                print(shown, file=self.out, flush=True)
            self.partitions.clear()
        if line is not None:
            print(line, file=self.out, flush=True)


def failures(result: dg.ExecuteInProcessResult) -> list[str]:
    """Why the run failed: the failed blocking checks, else the failed steps and resources."""
    checks = [
        f"blocked by {e.check_name}: {e.description}"
        for e in result.get_asset_check_evaluations()
        if not e.passed and e.severity == dg.AssetCheckSeverity.ERROR
    ]
    if checks:
        return checks
    failed = (dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.RESOURCE_INIT_FAILURE)
    found = [
        (describe_event(event) or "").removeprefix("[FAIL ] ")
        for event in result.all_events
        if event.event_type in failed
    ]
    return found or ["the run failed (see the Dagster UI for its events)"]


def decision(result: dg.ExecuteInProcessResult) -> str:
    """`promoted_model`'s decision: promoted or kept, the versions and the reason."""
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        if materialization.asset_key == dg.AssetKey("promoted_model"):
            meta = {k: getattr(v, "value", v) for k, v in materialization.metadata.items()}
            return (
                f"Decision: {meta['decision']} (challenger {meta['challenger_version']}, "
                f"production now {meta['production_version']} at {meta['production_path']})\n"
                f"Reason: {meta['reason']}"
            )
    return "Decision: none (promoted_model was not materialized)"


def training_job(contract: str | None = None) -> dg.JobDefinition:
    """`weekly_retrain_job` as the code location has it for `contract` (None: the data's).

    The Parquet IO manager under the instance's storage, as `dagster asset materialize` uses:
    an asset can be re-materialized alone from the UI afterwards (in-process runs would keep the
    outputs in memory only).
    """
    from fraud_assets.definitions import build_defs

    return build_defs(contract).resolve_job_def("weekly_retrain_job")


def execute(
    job: dg.JobDefinition,
    instance: dg.DagsterInstance,
    out: TextIO,
    dagster_log_level: str = "off",
    tags: Mapping[str, str] | None = None,
    partition_key: str | None = None,
) -> dg.ExecuteInProcessResult:
    """Run `job` in process on `instance`, printing its stages to `out` as they happen."""
    run_id = str(uuid.uuid4())  # known before the run starts, to listen to its events
    instance.add_event_listener(run_id, StagePrinter(out))
    level = "CRITICAL" if dagster_log_level == "off" else dagster_log_level.upper()
    return job.execute_in_process(
        instance=instance,
        run_id=run_id,
        raise_on_error=False,
        run_config={"loggers": {"console": {"config": {"log_level": level}}}},
        tags=dict(tags or {}),
        partition_key=partition_key,
    )


def report(result: dg.ExecuteInProcessResult, out: TextIO) -> int:
    """Print the outcome; 0 when the run succeeded (promoted or kept), 1 when it failed."""
    print(file=out)
    if result.success:
        print(decision(result), file=out, flush=True)
        return 0
    for line in failures(result):
        print(f"Run failed, production unchanged: {line}", file=out, flush=True)
    return 1


def _instance() -> dg.DagsterInstance:
    """The instance under DAGSTER_HOME (default .dagster_home), its dagster.yaml written as
    `make dagster-home` writes it (PostgreSQL storage when DAGSTER_POSTGRES_URL is set)."""
    from fraud_assets import instance

    os.environ.setdefault("DAGSTER_HOME", str(instance.dagster_home()))
    instance.write(postgres_url=os.environ.get("DAGSTER_POSTGRES_URL") or None)
    return dg.DagsterInstance.get()


def main(argv: Iterable[str] | None = None, out: TextIO = sys.stdout) -> int:
    parser = argparse.ArgumentParser(
        prog="run_pipeline.py",
        description="Train, evaluate and promote (if better) once: weekly_retrain_job in process.",
    )
    parser.add_argument(
        "--dagster-log",
        choices=DAGSTER_LOG_LEVELS,
        default="off",
        help="also print Dagster's own structured log at this level (default: off)",
    )
    args = parser.parse_args(list(argv) if argv is not None else None)
    from fraud_assets.defs.resources import default_resources
    from fraud_core.data import DataError

    try:
        contract = default_resources()["data_source"].current_contract()
    except DataError:  # an unreadable file: the run reports it (raw_transactions names it)
        contract = KAGGLE
    with _instance() as instance:
        if contract == CARDS:
            from fraud_assets.run_cards import run_cards  # it uses execute and report, above

            where = instance.root_directory
            print(f"The card contract on the Dagster instance at {where}", file=out)
            return run_cards(instance, out, args.dagster_log)
        print(f"weekly_retrain_job on the Dagster instance at {instance.root_directory}", file=out)
        result = execute(training_job(contract), instance, out, args.dagster_log)
        print(f"Dagster run {result.run_id}", file=out)
        return report(result, out)
