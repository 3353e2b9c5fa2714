"""Run `weekly_retrain` with `dag.test()` against a `FakeDagster`; write what happened as JSON.

Run in a subprocess on a throw-away AIRFLOW_HOME (Airflow sets up logging and its database when
imported, which must not leak into the pytest process):

    python -m tests.airflow_bridge._dag_test_runner scenarios.json results.json

`scenarios.json` is a list of {"script": {task_id: end}, "decision": ..., "env": {...}}; each
becomes one DAG run. `dag.test()` runs every task for real, through Airflow's execution API (the
FastAPI app that breaks with fastapi > 0.156.0 or svcs 26), and runs each stage's trigger in line
as the triggerer would, then resumes the task; only Dagster (the client and the trigger's
poller) is the scripted one.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any


def run_scenario(scenario: dict[str, Any]) -> dict[str, Any]:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from airflow_bridge import stage_operator, triggers
    from airflow_bridge.dags import weekly_retrain as module
    from tests.airflow_bridge._airflow_env import FakeDagster

    os.environ.update(scenario.get("env", {}))
    fake = FakeDagster(
        script=scenario.get("script", {}),
        decision=scenario.get("decision", "promoted"),
        cards=scenario.get("cards", False),
    )
    # The task's client and the trigger's poller (dag.test runs the trigger in this process).
    stage_operator.dagster_client = lambda: fake  # type: ignore[assignment,return-value]
    triggers.poller_for = lambda url: fake.poller()  # type: ignore[assignment,return-value]
    try:
        run = module.weekly_retrain_dag.test()
    finally:
        for name in scenario.get("env", {}):
            os.environ.pop(name, None)
    with create_session() as session:
        states = {ti.task_id: ti.state for ti in run.get_task_instances(session=session)}
        rows = session.scalars(
            select(XComModel).where(XComModel.dag_id == run.dag_id, XComModel.run_id == run.run_id)
        ).all()
        xcoms = {f"{r.task_id}.{r.key}": XComModel.deserialize_value(r) for r in rows}
    return {
        "run_id": run.run_id,
        "state": str(run.state),
        "task_states": {k: (str(v) if v is not None else None) for k, v in states.items()},
        "xcoms": xcoms,
        "launches": fake.launches,
        "polls": {r.run_id: r.polls for r in fake.runs},
    }


def main(scenarios_path: str, results_path: str) -> None:
    scenarios = json.loads(Path(scenarios_path).read_text())
    results = [run_scenario(scenario) for scenario in scenarios]
    Path(results_path).write_text(json.dumps(results, default=str, indent=2))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
