"""The notification of one weekly retrain: what ran, the decision, the metrics, the links.

Plain Python, no airflow import: built from the stages' `StageOutcome`s (their Dagster run
reports, kept in XCom) and the Airflow states of the tasks that left none.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from airflow_bridge.pipeline import DEPLOY, EVALUATE, STAGES, StageOutcome

#: Test-split metrics the message shows, in order, with the label used for them.
HEADLINE_METRICS = (
    ("average_precision", "average precision"),
    ("roc_auc", "ROC AUC"),
    ("recall_at_precision_90", "recall at 90% precision"),
    ("precision", "precision at threshold"),
    ("recall", "recall at threshold"),
    ("threshold", "threshold"),
)


@dataclass(frozen=True)
class Message:
    """The notification: a subject, a plain-text body, and whether the pipeline succeeded."""

    subject: str
    text: str
    decision: str
    succeeded: bool
    links: dict[str, str]


def decide(outcomes: Mapping[str, StageOutcome | None]) -> str:
    """The run's decision in a few words: promoted, kept production, blocked by, failed at."""
    for stage in STAGES:
        outcome = outcomes.get(stage.task_id)
        if outcome is not None and outcome.state == "blocked" and outcome.blocked_by:
            return f"blocked by {outcome.blocked_by['check']}"
        if outcome is None or outcome.state == "failed":
            return f"failed at {stage.task_id}"
    deploy = outcomes[DEPLOY.task_id]
    return deploy.decision if deploy and deploy.decision else "finished without a decision"


def build_message(
    outcomes: Mapping[str, StageOutcome | None],
    states: Mapping[str, str | None],
    *,
    dag_id: str,
    run_id: str,
    airflow_run_url: str | None,
) -> Message:
    """The message for one run of the DAG, from each stage's outcome and Airflow task state.

    A stage with no outcome did not report: its Airflow state says why (upstream_failed: an
    earlier stage stopped the run; failed: the task died before it reached Dagster's answer).
    """
    decision = decide(outcomes)
    succeeded = all(
        (o := outcomes.get(s.task_id)) is not None and o.state == "success" for s in STAGES
    )
    lines = [f"{dag_id} {run_id}: {decision.upper()}", ""]

    deploy = outcomes.get(DEPLOY.task_id)
    reason = deploy.metadata.get(DEPLOY.assets[0], {}).get("reason") if deploy else None
    lines.append(f"Decision: {decision}" + (f" ({reason})" if reason else ""))
    lines += ["", "Stages:"]
    for stage in STAGES:
        outcome = outcomes.get(stage.task_id)
        if outcome is not None:
            lines.append(f"  {stage.task_id}: {outcome.headline()}")
        else:
            lines.append(f"  {stage.task_id}: {_missing(states.get(stage.task_id))}")

    lines += ["", *_metric_lines(outcomes)]
    links = _links(outcomes, airflow_run_url)
    lines += ["", "Links:", *(f"  {name}: {url}" for name, url in links.items())]
    status = "succeeded" if succeeded else "FAILED"
    subject = f"[fraud] {dag_id} {status}: {decision} ({run_id})"
    return Message(subject, "\n".join(lines).rstrip() + "\n", decision, succeeded, links)


def _missing(state: str | None) -> str:
    if state in (None, "upstream_failed", "skipped", "removed"):
        return f"not run ({state or 'no state'})"
    if state == "failed":
        return "failed before it reported (see the task's Airflow log)"
    return f"did not report (Airflow state {state})"


def _metric_lines(outcomes: Mapping[str, StageOutcome | None]) -> list[str]:
    evaluation = outcomes.get(EVALUATE.task_id)
    after = evaluation.metadata.get(EVALUATE.assets[0], {}) if evaluation else {}
    deploy = outcomes.get(DEPLOY.task_id)
    promoted = deploy.metadata.get(DEPLOY.assets[0], {}) if deploy else {}
    champion, before = production_figures(promoted.get("comparison"))
    if not after and not promoted:
        return ["Metrics: none (the run stopped before the evaluation)"]
    lines = [f"Metrics on the test split, challenger{f' vs {champion}' if champion else ''}:"]
    for key, label in HEADLINE_METRICS:
        if not _is_number(after.get(key)):
            continue
        line = f"  {label}: {after[key]:.4f}"
        if _is_number(before.get(key)):
            line += f" (was {before[key]:.4f}, {after[key] - before[key]:+.4f})"
        lines.append(line)
    if _is_number(promoted.get("ap_gain")):
        gain = f"  AP gain over production on the same rows: {promoted['ap_gain']:+.4f}"
        if _is_number(promoted.get("bootstrap_confidence")):
            gain += f" (bootstrap confidence {promoted['bootstrap_confidence']:.2f})"
        lines.append(gain)
    if promoted.get("challenger_version"):
        lines.append(f"  challenger version: {promoted['challenger_version']}")
    if promoted.get("production_version"):
        lines.append(f"  in production after this run: {promoted['production_version']}")
    return lines


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def production_figures(comparison: object) -> tuple[str | None, dict[str, float]]:
    """The production row of `promoted_model`'s comparison table (markdown): its name, figures.

    The table has a "challenger" row and, when a model was in production, a "production <version>"
    row; (None, {}) when there is none.
    """
    if not isinstance(comparison, str):
        return None, {}
    rows = [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in comparison.splitlines()
        if line.strip().startswith("|") and not re.fullmatch(r"[|\-\s:]+", line.strip())
    ]
    if len(rows) < 2:
        return None, {}
    header, *body = rows
    for row in body:
        if row and row[0].startswith("production"):
            figures: dict[str, float] = {}
            for name, cell in zip(header[1:], row[1:], strict=False):
                try:
                    figures[name] = float(cell)
                except ValueError:
                    continue
            return row[0], figures
    return None, {}


def _links(
    outcomes: Mapping[str, StageOutcome | None], airflow_run_url: str | None
) -> dict[str, str]:
    links: dict[str, str] = {}
    if airflow_run_url:
        links["Airflow run"] = airflow_run_url
    mlflow: str | None = None
    for stage in STAGES:
        outcome = outcomes.get(stage.task_id)
        if outcome is None:
            continue
        if outcome.dagster_run_url:
            links[f"Dagster run ({stage.task_id})"] = outcome.dagster_run_url
        for meta in outcome.metadata.values():
            if isinstance(meta.get("mlflow_run"), str):
                mlflow = meta["mlflow_run"]
    if mlflow:
        links["MLflow run"] = mlflow
    return links
