"""`make stack` end to end: the production shape as real processes on the local PostgreSQL.

`scripts/stack.py up` starts the MLflow server (PostgreSQL backend, served artifacts), Dagster's
webserver and daemon (PostgreSQL storage), Airflow's API server, scheduler and DAG processor
(PostgreSQL metadata, LocalExecutor) and the scoring API, on free ports, each service on a
database of its own created for this module and dropped after. The retrain is triggered the way
a user does it: through Airflow's REST API, logged in as airflow/airflow.

Then the faults: the MLflow server stopped (a training run fails in seconds naming the server,
the API keeps serving), the Dagster daemon stopped (the Airflow task reports the queued run).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import psycopg2
import pytest
from mlflow.tracking import MlflowClient

from airflow_bridge.dagster_client import IDEMPOTENCY_TAG, DagsterClient
from servicectl import stack as stack_cli
from servicectl.process import tail
from tests.airflow_bridge._airflow_env import Mailbox, Receiver, smtp_receiver, webhook_receiver
from tests.conftest import SMALL_FRAUD_RATE, SMALL_ROWS, free_port

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
DAG_ID = "weekly_retrain"
STAGES = {
    "validate_data": {"labelled_transactions", "raw_transactions", "transaction_splits"},
    "train": {"anomaly_scores", "fraud_model"},
    "evaluate_and_compare": {"evaluation_report"},
    "deploy_if_better": {"promoted_model"},
}
TASKS = [*STAGES, "notify"]
#: A queued Dagster run fails its Airflow stage after this long (the daemon-stopped fault), once
#: the trigger also knows the daemon is gone: 75 s (STALE_HEARTBEAT_S) after its last heartbeat.
QUEUED_TIMEOUT_S = 20
#: Four Dagster runs (each a run worker importing the code location), small data.
RETRAIN_TIMEOUT_S = 480


@dataclass
class Running:
    root: Path
    state: stack_cli.Stack
    slack: Receiver
    mailbox: Mailbox
    env: dict[str, str]

    def url(self, name: str) -> str:
        return self.state.url(name)

    def cli(self, *args: str, timeout: float = 400) -> subprocess.CompletedProcess[str]:
        """`python scripts/stack.py --root <root> <args>`, as `make stack` runs it."""
        return subprocess.run(
            [sys.executable, str(REPO / "scripts" / "stack.py"), "--root", str(self.root), *args],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def logs(self, *names: str) -> str:
        return "\n".join(f"--- {n}\n{tail(self.root / 'logs' / f'{n}.log')}" for n in names)

    def pg(self, suffix: str, query: str) -> list[tuple[Any, ...]]:
        conn = psycopg2.connect(self.state.database_url(suffix))
        try:
            with conn.cursor() as cur:
                cur.execute(query)
                return list(cur.fetchall())
        finally:
            conn.close()


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    root = tmp_path_factory.mktemp("stack")
    with webhook_receiver() as slack, smtp_receiver() as mailbox:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FRAUD_", "MLFLOW_"))}
        env.update(
            STACK_DB_PREFIX=f"fraud_test_{uuid.uuid4().hex[:8]}_",
            MLFLOW_PORT=str(free_port()),
            DAGSTER_PORT=str(free_port()),
            AIRFLOW_PORT=str(free_port()),
            FRAUD_API_PORT=str(free_port()),
            PROMETHEUS_PORT=str(free_port()),
            FRAUD_DATA_DIR=str(root / "raw"),
            FRAUD_SYNTHETIC_ROWS=str(SMALL_ROWS),
            FRAUD_SYNTHETIC_FRAUD_RATE=str(SMALL_FRAUD_RATE),
            FRAUD_API_RELOAD_INTERVAL_S="1",
            # The triggerer polls each stage's Dagster run every second: a stage ends within a
            # second or two of its run.
            FRAUD_AIRFLOW_POLL_INTERVAL_S="1",
            FRAUD_AIRFLOW_QUEUED_TIMEOUT_S=str(QUEUED_TIMEOUT_S),
            FRAUD_AIRFLOW_RETRIES="0",
            FRAUD_SLACK_WEBHOOK_URL=slack.url,
            FRAUD_SMTP_HOST=mailbox.host,
            FRAUD_SMTP_PORT=str(mailbox.port),
            FRAUD_SMTP_TO="fraud-team@example.com",
        )
        handle = Running(root, stack_cli.Stack(root, "", "", {}), slack, mailbox, env)
        try:
            up = handle.cli("up", timeout=600)
            assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-6000:]
            handle.state = stack_cli.Stack.load_or_new(root)
            handle.up_output = up.stdout  # type: ignore[attr-defined]
            yield handle
        finally:
            down = handle.cli("down", "--drop-databases", timeout=180)
            assert down.returncode == 0, down.stdout + down.stderr


# --- Airflow's REST API, as a user (or a script of theirs) calls it -----------------------------


def airflow(running: Running) -> httpx.Client:
    token = stack_cli.airflow_token(running.state)
    return httpx.Client(
        base_url=f"{running.url('airflow-apiserver')}/api/v2",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )


def trigger(running: Running) -> str:
    with airflow(running) as api:
        api.patch(f"/dags/{DAG_ID}", json={"is_paused": False}).raise_for_status()
        response = api.post(f"/dags/{DAG_ID}/dagRuns", json={"logical_date": None})
        assert response.status_code == 200, response.text
        return str(response.json()["dag_run_id"])


def wait_for_dag_run(running: Running, run_id: str, timeout_s: float) -> dict[str, str]:
    """Wait until the DAG run ends; the state of every task."""
    path = f"/dags/{DAG_ID}/dagRuns/{quote(run_id, safe='')}"
    deadline = time.monotonic() + timeout_s
    with airflow(running) as api:
        while time.monotonic() < deadline:
            state = api.get(path).json()["state"]
            if state in ("success", "failed"):
                break
            time.sleep(1)
        else:
            pytest.fail(
                f"DAG run {run_id} still {state} after {timeout_s:.0f} s\n"
                + running.logs("airflow-scheduler", "dagster-daemon", "dagster-webserver")
            )
        tasks = api.get(f"{path}/taskInstances").json()["task_instances"]
    return {t["task_id"]: t["state"] for t in tasks}


def api_model(running: Running) -> dict[str, Any]:
    response = httpx.get(f"{running.url('api')}/model", timeout=10)
    assert response.status_code == 200, response.text
    return dict(response.json())


_SCORE_KEYS: dict[str, str] = {}


def score_key(running: Running) -> str:
    """A key with the `score` scope: the stack's API (production shape) asks one for scoring."""
    if "key" not in _SCORE_KEYS:
        from fraud_core.api_keys import SCORE, create_key
        from fraud_core.prediction_log.tables import make_engine

        engine = make_engine(running.state.database_url("predictions"))
        try:
            _SCORE_KEYS["key"] = create_key(engine, "stack-test", [SCORE])[1]
        finally:
            engine.dispose()
    return _SCORE_KEYS["key"]


def predict(running: Running) -> dict[str, Any]:
    from api.schemas import EXAMPLE

    url = f"{running.url('api')}/predict"
    assert httpx.post(url, json=EXAMPLE, timeout=10).status_code == 401
    headers = {"Authorization": f"Bearer {score_key(running)}"}
    # Each worker reads new keys within FRAUD_API_KEYS_REFRESH_S (2 s).
    deadline = time.monotonic() + 30
    response = httpx.post(url, json=EXAMPLE, headers=headers, timeout=10)
    while response.status_code == 401 and time.monotonic() < deadline:
        time.sleep(0.5)
        response = httpx.post(url, json=EXAMPLE, headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    return dict(response.json())


# --- the tests, in order: they share one stack -----------------------------------------------


def test_stack_up_prints_every_url_and_each_service_is_healthy(running: Running) -> None:
    printed = running.up_output  # type: ignore[attr-defined]
    for name in ("mlflow", "dagster-webserver", "airflow-apiserver", "api"):
        assert running.url(name) in printed, (name, printed)
    assert "login airflow/airflow" in printed
    # Prometheus where it is installed; where it is not, `make stack` says so.
    if stack_cli.prometheus_binary():
        assert running.url("prometheus") in printed
    else:
        assert "not started prometheus" in printed

    status = running.cli("status")
    assert status.returncode == 0, status.stdout + status.stderr
    for service in stack_cli.SERVICES:
        assert f"{service.name}" in status.stdout
    assert "DOWN" not in status.stdout, status.stdout

    # One PostgreSQL, a database per service, each holding its service's tables.
    prefix = running.state.db_prefix
    databases = {row[0] for row in running.pg("mlflow", "SELECT datname FROM pg_database")}
    assert {f"{prefix}mlflow", f"{prefix}dagster", f"{prefix}airflow"} <= databases
    assert running.pg("mlflow", "SELECT count(*) FROM experiments")[0][0] >= 1
    assert running.pg("airflow", f"SELECT count(*) FROM dag WHERE dag_id = '{DAG_ID}'") == [(1,)]
    # Nothing promoted yet: the API is up and says why it is not ready.
    ready = httpx.get(f"{running.url('api')}/ready", timeout=10)
    assert ready.status_code == 503, ready.text


def test_weekly_retrain_through_airflow_promotes_and_the_api_serves_it(running: Running) -> None:
    api_pid = running.state.pids["api"]
    run_id = trigger(running)
    states = wait_for_dag_run(running, run_id, RETRAIN_TIMEOUT_S)
    assert states == dict.fromkeys(TASKS, "success"), (
        states,
        running.logs("airflow-scheduler", "dagster-daemon"),
    )

    # Dagster (on PostgreSQL): one successful run per stage, found by the DAG run's key.
    dagster = DagsterClient(running.url("dagster-webserver"), retries=2, backoff_s=0.5)
    reports = {}
    for stage, assets in STAGES.items():
        runs = dagster.find_runs({IDEMPOTENCY_TAG: f"airflow:{DAG_ID}:{run_id}:{stage}"})
        assert [r.status for r in runs] == ["SUCCESS"], (stage, runs)
        report = dagster.report(runs[0].run_id)
        assert set(report.materializations) == assets, (stage, report.materializations)
        reports[stage] = report
    assert reports["deploy_if_better"].decision == "promoted"
    stored = running.pg("dagster", "SELECT count(*) FROM runs WHERE status = 'SUCCESS'")
    assert stored[0][0] >= len(STAGES)
    # Deferred, each stage's task in Airflow spans its Dagster run and ends seconds after it.
    for stage, report in reports.items():
        ((run_start, run_end),) = running.pg(
            "dagster", f"SELECT start_time, end_time FROM runs WHERE run_id = '{report.run_id}'"
        )
        ((task_start, task_end),) = running.pg(
            "airflow",
            "SELECT extract(epoch FROM start_date), extract(epoch FROM end_date) FROM "
            f"task_instance WHERE dag_id = '{DAG_ID}' AND run_id = '{run_id}' "
            f"AND task_id = '{stage}'",
        )
        timings = (stage, run_start, run_end, task_start, task_end)
        assert float(task_start) <= run_start and run_end <= float(task_end), timings
        assert float(task_end) - run_end < 30, timings

    # MLflow server (on PostgreSQL): the training run, version 1 of the model, alias champion.
    mlflow_run_id = str(reports["train"].materializations["fraud_model"]["mlflow_run_id"])
    client = MlflowClient(running.url("mlflow"), registry_uri=running.url("mlflow"))
    run = client.get_run(mlflow_run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["dagster_run_id"] == reports["train"].run_id
    champion = client.get_model_version_by_alias("fraud-detector", "champion")
    assert champion.version == "1" and champion.run_id == mlflow_run_id
    (row,) = running.pg("mlflow", f"SELECT status FROM runs WHERE run_uuid = '{mlflow_run_id}'")
    assert row == ("FINISHED",)
    assert running.pg("mlflow", "SELECT name, version FROM model_versions") == [
        ("fraud-detector", 1)
    ]
    # Artifacts went through the server into its artifact store, not onto the client's disk.
    assert list((running.root / "mlartifacts").rglob("manifest.json")), "no served artifact"

    # The API picked the promoted model up without a restart, and serves it.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if httpx.get(f"{running.url('api')}/ready", timeout=10).status_code == 200:
            break
        time.sleep(0.5)
    served = api_model(running)
    promoted = reports["deploy_if_better"].materializations["promoted_model"]
    assert served["model_version"] == promoted["challenger_version"]
    assert served["mlflow_run_id"] == mlflow_run_id
    answer = predict(running)
    assert 0.0 <= answer["fraud_probability"] <= 1.0
    assert answer["model_version"] == served["model_version"]
    assert running.state.pids["api"] == api_pid and stack_cli.alive(api_pid)

    # Prometheus (where installed) scrapes the API it was pointed at.
    if "prometheus" in running.state.pids:
        query = f"{running.url('prometheus')}/api/v1/query"
        deadline = time.monotonic() + 60
        result: list[Any] = []
        while time.monotonic() < deadline and not result:
            answer = httpx.get(query, params={"query": "fraud_api_predictions_total"}, timeout=10)
            result = answer.json()["data"]["result"]
            time.sleep(2)
        assert result, running.logs("prometheus")
        assert result[0]["metric"]["job"] == "fraud-api"

    # Slack and e-mail: one message each, with the decision, the AP and every stage's run.
    assert len(running.slack.bodies) == 1, running.slack.bodies
    text = str(running.slack.bodies[0]["text"])
    (email,) = running.mailbox.messages
    subject = f"[fraud] {DAG_ID} succeeded: promoted ({run_id})"
    assert email["Subject"] == subject and text.splitlines()[0] == f"*{subject}*"
    assert email["To"] == "fraud-team@example.com"
    ap = reports["evaluate_and_compare"].materializations["evaluation_report"]["average_precision"]
    for sent in (text, email.get_content()):
        assert "Decision: promoted" in sent, sent
        assert f"average precision: {ap:.4f}" in sent, sent
        for stage, report in reports.items():
            link = f"Dagster run ({stage}): {running.url('dagster-webserver')}/runs/"
            assert link + report.run_id in sent, (stage, sent)


def test_mlflow_server_down_fails_training_fast_and_the_api_keeps_serving(
    running: Running,
) -> None:
    before = api_model(running)
    stopped = running.cli("stop", "mlflow")
    assert stopped.returncode == 0, stopped.stderr
    # The server stays down: the last test needs no MLflow, and the teardown stops everything.
    dagster = DagsterClient(running.url("dagster-webserver"), retries=2, backoff_s=0.5)
    started = time.monotonic()
    run_id = dagster.launch_run(
        "weekly_retrain_job", asset_selection=["anomaly_scores", "fraud_model"]
    )
    state = dagster.wait(run_id, poll_s=1, timeout_s=240, queued_timeout_s=60)
    elapsed = time.monotonic() - started
    assert state.status == "FAILURE", state
    report = dagster.report(run_id)
    assert report.failure is not None
    assert f"MLflow tracking server {running.url('mlflow')} is unreachable" in report.failure
    assert "fraud_model" not in report.materializations
    # A run worker starting up, then a refused connection: not MLflow's minutes of retries.
    assert elapsed < 180, elapsed

    # The API never depended on the server: same model, still answering.
    assert api_model(running)["model_version"] == before["model_version"]
    assert predict(running)["model_version"] == before["model_version"]
    assert httpx.get(f"{running.url('api')}/ready", timeout=10).status_code == 200


def test_dagster_daemon_down_the_airflow_task_reports_the_queued_run(running: Running) -> None:
    stopped = running.cli("stop", "dagster-daemon")
    assert stopped.returncode == 0, stopped.stderr
    messages_before = len(running.slack.bodies)
    run_id = trigger(running)
    states = wait_for_dag_run(running, run_id, QUEUED_TIMEOUT_S + 180)
    assert states["validate_data"] == "failed", states
    assert states["train"] == "upstream_failed", states
    # notify ran, told the team, then failed the DAG run on purpose: the retrain did not happen.
    assert states["notify"] == "failed", states

    # The queued Dagster run is named, with the reason, in the message the team receives.
    dagster = DagsterClient(running.url("dagster-webserver"), retries=2, backoff_s=0.5)
    (queued,) = dagster.find_runs({IDEMPOTENCY_TAG: f"airflow:{DAG_ID}:{run_id}:validate_data"})
    assert queued.status == "QUEUED"
    (text,) = [str(b["text"]) for b in running.slack.bodies[messages_before:]]
    assert f"Dagster run {queued.run_id} stayed QUEUED" in text, text
    assert "Dagster daemon is probably not running" in text, text
    dagster.terminate(queued.run_id)
    status = running.cli("status")
    assert status.returncode == 1
    assert "dagster-daemon" in status.stdout and "not running" in status.stdout
