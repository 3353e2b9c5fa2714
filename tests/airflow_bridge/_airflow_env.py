"""Helpers for the Airflow tests: a throw-away AIRFLOW_HOME, a scripted Dagster, receivers.

`FakeDagster` stands in for `DagsterClient` where a test is about Airflow's side (the DAG's
wiring, the messages), not about Dagster: it answers like the client (RunState, RunReport, the
client's exceptions) from a script of how each stage's run ends.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from airflow_bridge import config, dagster_poller, message, pipeline
from airflow_bridge.dagster_client import JobShape, RunReport, RunState
from airflow_bridge.pipeline import StageFailed, StageOutcome

# Not tests.conftest's: the dag.test() subprocess imports this module, and that one pulls in the
# whole ML stack. servicectl.process imports only the standard library.
from servicectl.process import free_port

REPO = Path(__file__).resolve().parents[2]
DAGS_FOLDER = REPO / "airflow_bridge" / "dags"
VENV_BIN = Path(sys.executable).parent
DAGSTER_URL = "http://dagster.test:3000"

COMPARISON = (
    "| model | average_precision | roc_auc | recall_at_precision_90 | threshold |\n"
    "|---|---|---|---|---|\n"
    "| challenger | 0.8200 | 0.9750 | 0.7100 | 0.4200 |\n"
    "| production v20240107 | 0.7900 | 0.9700 | 0.6500 | 0.4500 |"
)
MLFLOW_RUN = "http://127.0.0.1:5000/#/experiments/1/runs/abc123"


def airflow_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of an Airflow process on a throw-away home with a SQLite database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "FRAUD_"))}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGS_FOLDER=str(DAGS_FOLDER),
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home / 'airflow.db'}",
        AIRFLOW__CORE__UNIT_TEST_MODE="False",
        # Fast polls in the trigger; no retries, so a failure shows at once.
        FRAUD_AIRFLOW_POLL_INTERVAL_S="0.2",
        FRAUD_AIRFLOW_RETRIES="0",
        PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    env.update(extra)
    return env


def migrated_home(template: Path, home: Path) -> Path:
    """A fresh AIRFLOW_HOME holding a copy of the template's migrated database."""
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(template / "airflow.db", home / "airflow.db")
    return home


def migrate(home: Path) -> None:
    """`airflow db migrate` on a new home: the metadata database every Airflow command needs."""
    home.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [str(VENV_BIN / "airflow"), "db", "migrate"],
        env=airflow_env(home),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


# --- A scripted Dagster ------------------------------------------------------------------------


def stage_report(stage: str, run_id: str, end: str, decision: str = "promoted") -> RunReport:
    """What the client would report for one stage's run: `end` is success, blocked or failure."""
    url = f"{DAGSTER_URL}/runs/{run_id}"
    if end == "blocked":
        check = {
            "validate_data": ("check_raw_transactions_schema", "raw_transactions"),
            "evaluate_and_compare": ("check_evaluation_report_quality_floor", "evaluation_report"),
        }.get(stage, ("check_transaction_splits_min_frauds", "transaction_splits"))
        description = "missing columns: V7, Amount"
        return RunReport(
            run_id,
            "FAILURE",
            url,
            failed_checks=[{"check": check[0], "asset": check[1], "description": description}],
            failure=f"step {check[1]} failed: blocking check {check[0]} failed",
        )
    if end == "failure":
        return RunReport(run_id, "FAILURE", url, failure="step fraud_model failed: MemoryError")
    materializations: dict[str, dict[str, Any]] = {
        "validate_data": {
            "raw_transactions": {"rows": 40000, "frauds": 400, "source": "synthetic"},
            "transaction_splits": {"train_frauds": 240, "test_frauds": 80},
        },
        "train": {
            "anomaly_scores": {"validation_ap_alone": 0.31},
            "fraud_model": {"model_version": "v20240114", "mlflow_run": MLFLOW_RUN},
        },
        "evaluate_and_compare": {
            "evaluation_report": {
                "average_precision": 0.82,
                "roc_auc": 0.975,
                "recall_at_precision_90": 0.71,
                "precision": 0.9,
                "recall": 0.7,
                "threshold": 0.42,
                "mlflow_run": MLFLOW_RUN,
                "plot_pr_curve": "**PR**\n\n![PR](data:image/png;base64,iVBORw0KGgo=)",
            }
        },
        "deploy_if_better": {
            "promoted_model": {
                "decision": decision,
                "promoted": decision == "promoted",
                "reason": "AP 0.8200 beats 0.7900 by 0.0300 (bootstrap confidence 0.98)"
                if decision == "promoted"
                else "AP gain 0.0010 below the margin 0.0050",
                "challenger_version": "v20240114",
                "production_version": "v20240114" if decision == "promoted" else "v20240107",
                "comparison": COMPARISON,
                "ap_gain": 0.03 if decision == "promoted" else 0.001,
                "bootstrap_confidence": 0.98,
                "mlflow_run": MLFLOW_RUN,
            }
        },
    }
    if stage == "days":  # the card contract's days, before validate_data's own run
        return RunReport(run_id, "SUCCESS", url, materializations={"card_features": {"days": 28}})
    return RunReport(run_id, "SUCCESS", url, materializations=materializations[stage])


@dataclass
class _Run:
    run_id: str
    stage: str
    key: str
    assets: list[str] | None
    tags: dict[str, str]
    statuses: list[str]
    end: str
    polls: int = 0

    @property
    def status(self) -> str:
        return self.statuses[min(self.polls, len(self.statuses) - 1)]


@dataclass
class FakeDagster:
    """`DagsterClient` as the DAG uses it, answering from `script`: {task_id: how it ends}.

    Each run is QUEUED for one poll, STARTED for `polls_to_finish - 1`, then SUCCESS or FAILURE;
    an end of "queued" stays QUEUED for ever. `decision` is the promoted_model decision. The
    queued-run daemon is "absent" (never beat), "alive" (beats at every look) or "stopped"
    (its last heartbeat was at time 0).
    """

    script: Mapping[str, str] = field(default_factory=dict)
    decision: str = "promoted"
    polls_to_finish: int = 1
    daemon: str = "absent"
    runs: list[_Run] = field(default_factory=list)
    launches: list[dict[str, Any]] = field(default_factory=list)
    url: str = DAGSTER_URL
    #: The card contract's code location: the weekly job by week, its days by day.
    cards: bool = False

    def job_shape(self, job_name: str) -> JobShape:
        if not self.cards:
            return JobShape(frozenset(a for stage in pipeline.STAGES for a in stage.assets))
        today = datetime.now(UTC).date()
        if job_name == "daily_cards_job":
            days = (today - date(2018, 1, 1)).days  # up to yesterday, as Dagster's
            keys = [(date(2018, 1, 1) + timedelta(days=n)).isoformat() for n in range(days)]
            assets = {"labelled_transactions", "card_transactions", "card_features"}
            return JobShape(frozenset(assets), tuple(keys))
        weeks = (today - date(2017, 12, 31)).days // 7 + 1  # the week under way included
        keys = [(date(2017, 12, 31) + timedelta(weeks=n)).isoformat() for n in range(weeks)]
        chain = {"transaction_splits", "anomaly_scores", "fraud_model", "evaluation_report"}
        return JobShape(frozenset({*chain, "promoted_model"}), tuple(keys))

    def __enter__(self) -> FakeDagster:
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass

    def close(self) -> None:
        pass

    def launch_or_find(
        self,
        job_name: str,
        *,
        idempotency_key: str,
        asset_selection: list[str] | None = None,
        tags: dict[str, str] | None = None,
    ) -> str:
        for run in reversed(self.runs):
            if run.key == idempotency_key and run.status not in ("FAILURE", "CANCELED"):
                return run.run_id
        stage = idempotency_key.rsplit(":", 1)[-1]
        end = self.script.get(stage, "success")
        final = "QUEUED" if end == "queued" else ("SUCCESS" if end == "success" else "FAILURE")
        statuses = ["QUEUED"] + ["STARTED"] * (self.polls_to_finish - 1) + [final]
        run = _Run(
            f"run-{len(self.runs) + 1}",
            stage,
            idempotency_key,
            asset_selection,
            dict(tags or {}),
            statuses,
            end,
        )
        self.runs.append(run)
        self.launches.append(
            {"job": job_name, "key": idempotency_key, "assets": asset_selection, "tags": tags}
        )
        return run.run_id

    def find_runs(self, tags: dict[str, str]) -> list[RunState]:
        key = tags.get("airflow/idempotency_key")
        found = [r for r in self.runs if r.key == key]
        return [RunState(r.run_id, r.status) for r in reversed(found)]

    def _run(self, run_id: str) -> _Run:
        return next(r for r in self.runs if r.run_id == run_id)

    def status(self, run_id: str) -> RunState:
        run = self._run(run_id)
        state = RunState(run_id, run.status)
        run.polls += 1
        return state

    def report(self, run_id: str) -> RunReport:
        run = self._run(run_id)
        return stage_report(run.stage, run_id, run.end, self.decision)

    def poller(self, clock: Callable[[], float] = time.time) -> FakePoller:
        """The same runs as the trigger's async `DagsterPoller` sees them."""
        return FakePoller(self, clock)


@dataclass
class FakePoller:
    """`dagster_poller.DagsterPoller` over a `FakeDagster`: each status read is one poll."""

    dagster: FakeDagster
    clock: Callable[[], float]

    @property
    def url(self) -> str:
        return self.dagster.url

    async def __aenter__(self) -> FakePoller:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        pass

    async def status(self, run_id: str) -> RunState:
        return self.dagster.status(run_id)

    async def daemon_heartbeat(self) -> tuple[bool, float | None]:
        if self.dagster.daemon == "alive":
            return True, self.clock()
        if self.dagster.daemon == "stopped":
            return True, 0.0
        return False, None


@dataclass
class Clock:
    """Virtual time for `watch_run`: sleeping moves it on at once."""

    now: float = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


# --- Receivers -----------------------------------------------------------------------------------


@dataclass
class Receiver:
    """A Slack-like webhook on localhost: keeps each JSON body, answers `status`."""

    url: str
    bodies: list[Any]
    status: list[int]


@contextmanager
def webhook_receiver(status: int = 200) -> Iterator[Receiver]:
    bodies: list[Any] = []
    answer = [status]

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            bodies.append(json.loads(self.rfile.read(length) or b"null"))
            reply = b"ok" if answer[0] < 400 else b"internal_error"
            self.send_response(answer[0])
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Receiver(f"http://127.0.0.1:{server.server_port}/services/T0/B0/X0", bodies, answer)
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Mailbox:
    """A local SMTP server (aiosmtpd): the messages it accepted, or a refusal for each."""

    host: str
    port: int
    messages: list[EmailMessage]


@contextmanager
def smtp_receiver(refuse: bool = False) -> Iterator[Mailbox]:
    from aiosmtpd.controller import Controller

    messages: list[EmailMessage] = []

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            if refuse:
                return "554 5.7.1 Message refused by policy"
            parsed = BytesParser(policy=policy.default).parsebytes(envelope.original_content)
            messages.append(parsed)  # type: ignore[arg-type]
            return "250 Message accepted for delivery"

    port = free_port()
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield Mailbox("127.0.0.1", port, messages)
    finally:
        controller.stop()


# --- Driving the stages as the DAG does ----------------------------------------------------------

RUN_ID = "scheduled__2024-01-14T02:00:00+00:00"


def follow(
    fake: FakeDagster,
    stage: pipeline.Stage,
    *,
    clock: Clock | None = None,
    poll_s: float = 15.0,
    timeout_s: float = 3600.0,
    queued_timeout_s: float = 600.0,
) -> StageOutcome:
    """One try of a stage as the DAG runs it: launch, the trigger's watch, the resumed task.

    Raises `StageFailed` as the task does; the clock is virtual, so hours pass at once.
    """
    clock = clock or Clock()
    run_id = pipeline.launch(fake, stage, dag_id="weekly_retrain", run_id=RUN_ID)  # type: ignore[arg-type]
    event = asyncio.run(
        dagster_poller.watch_run(
            fake.poller(clock),
            run_id,
            started_at=clock.now,
            poll_s=poll_s,
            timeout_s=timeout_s,
            queued_timeout_s=queued_timeout_s,
            clock=clock,
            sleep=clock.sleep,
        )
    )
    return pipeline.resolve(fake, stage, event, stage_timeout_s=timeout_s)  # type: ignore[arg-type]


def outcomes_for(fake: FakeDagster) -> dict[str, StageOutcome | None]:
    """Run every stage to its end as the DAG would; a failed stage stops the later ones."""
    outcomes: dict[str, StageOutcome | None] = dict.fromkeys(
        (s.task_id for s in pipeline.STAGES), None
    )
    for stage in pipeline.STAGES:
        try:
            outcomes[stage.task_id] = follow(fake, stage)
        except StageFailed as exc:
            outcomes[stage.task_id] = exc.outcome
            break
    return outcomes


def states_for(outcomes: dict[str, StageOutcome | None]) -> dict[str, str | None]:
    states: dict[str, str | None] = {}
    for task_id, outcome in outcomes.items():
        states[task_id] = (
            "upstream_failed"
            if outcome is None
            else ("success" if outcome.state == "success" else "failed")
        )
    return states


def build(outcomes: dict[str, StageOutcome | None], **states: str | None) -> message.Message:
    return message.build_message(
        outcomes,
        {**states_for(outcomes), **states},
        dag_id="weekly_retrain",
        run_id=RUN_ID,
        airflow_run_url=config.airflow_run_url("http://airflow:8080/", "weekly_retrain", RUN_ID),
    )
