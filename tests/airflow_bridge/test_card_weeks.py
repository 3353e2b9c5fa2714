"""Airflow on card data: the week a run trains, its days brought in, each stage of that week.

Unit tier for the calendar (`airflow_bridge.weeks` reads Dagster's partition keys, restating
none); then a real webserver and daemon over the card contract's code location (the Handbook
simulator's small set: 250 customers, 500 terminals, 60 days from 2018-04-01): every day in one
run as `make materialize` does, then what the DAG's tasks launch for the week that ended on
Sunday 2018-06-03 — its days, and the four stages as runs of that week.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from airflow_bridge import pipeline, weeks
from airflow_bridge.dagster_results import DagsterError, JobShape
from tests.airflow_bridge.conftest import DagsterServer, client_for, dagster_server
from tests.airflow_bridge.test_dagster_runs import finish
from tests.conftest import SMALL_CARDS

WEEKS = JobShape(frozenset({"transaction_splits"}), ("2018-05-20", "2018-05-27", "2018-06-03"))
SUNDAY = datetime(2018, 6, 3, 2, 0, tzinfo=UTC)


def test_a_sunday_run_trains_the_week_that_ended_at_midnight() -> None:
    assert weeks.week_of(WEEKS, SUNDAY) == "2018-05-27"
    # A manual run on a Wednesday, or a run in a zone east of UTC: the last whole week, never
    # the one under way (the last partition), whose days are not all there.
    assert weeks.week_of(WEEKS, datetime(2018, 6, 6, 9, tzinfo=UTC)) == "2018-05-27"
    tokyo = datetime(2018, 6, 3, 2, 0, tzinfo=ZoneInfo("Asia/Tokyo"))  # Saturday 17:00 UTC
    assert weeks.week_of(WEEKS, tokyo) == "2018-05-20"
    assert weeks.week_of(JobShape(frozenset({"raw_transactions"})), SUNDAY) is None
    with pytest.raises(DagsterError, match="no week that ended by 2018-05-20"):
        weeks.week_of(WEEKS, datetime(2018, 5, 20, 2, tzinfo=UTC))


def test_the_days_brought_in_are_the_window_the_daily_job_has() -> None:
    daily = JobShape(frozenset(), tuple(f"2018-06-0{d}" for d in range(1, 6)))
    assert weeks.window_days_of("2018-05-27", daily, 7) == ("2018-06-01", "2018-06-02")
    assert weeks.window_days_of("2018-06-03", daily, 28) == ("2018-06-01", "2018-06-05")
    many = JobShape(frozenset(), tuple(f"2018-05-{d:02}" for d in range(1, 32)))
    # 28 days to the week's Saturday (06-02): from 05-06 on.
    assert weeks.window_days_of("2018-05-27", many, 28) == ("2018-05-06", "2018-05-31")
    with pytest.raises(DagsterError, match="no partition for a day of the week 2018-06-10"):
        weeks.window_days_of("2018-06-10", daily, 7)


@pytest.fixture(scope="module")
def cards_dagster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DagsterServer]:
    customers, terminals, days = SMALL_CARDS
    env = {
        "FRAUD_DATA_CONTRACT": "cards",
        "FRAUD_CARDS_CUSTOMERS": str(customers),
        "FRAUD_CARDS_TERMINALS": str(terminals),
        "FRAUD_CARDS_DAYS": str(days),
    }
    root = tmp_path_factory.mktemp("dagster_cards")
    with dagster_server(root, daemon=True, extra_env=env) as server:
        yield server


@pytest.mark.slow
def test_the_dag_runs_the_week_that_ended_on_card_data(cards_dagster: DagsterServer) -> None:
    client = client_for(cards_dagster)
    shape = client.job_shape(pipeline.JOB_NAME)
    assert shape.assets == {
        "transaction_splits",
        "anomaly_scores",
        "fraud_model",
        "evaluation_report",
        "promoted_model",
    }
    daily = client.job_shape(weeks.DAILY_JOB)
    assert daily.assets == {"labelled_transactions", "card_transactions", "card_features"}
    # Every day of the data first, in one run (`make materialize` does the same).
    tags = {weeks.RANGE_START_TAG: "2018-04-01", weeks.RANGE_END_TAG: "2018-06-02"}
    backfill = client.launch_run(weeks.DAILY_JOB, tags=tags)
    assert finish(client, cards_dagster, backfill).status == "SUCCESS"

    dag_run = "scheduled__2018-06-03T02:00:00+00:00"
    week = weeks.week_of(shape, SUNDAY)
    assert week == "2018-05-27"
    days = weeks.launch_days(
        client, pipeline.VALIDATE, week, dag_id="weekly_retrain", run_id=dag_run, window_days=28
    )
    assert finish(client, cards_dagster, days).status == "SUCCESS"
    report = client.report(days)
    assert set(report.materializations) == {
        "labelled_transactions",
        "card_transactions",
        "card_features",
    }
    outcomes = {}
    for stage in pipeline.STAGES:
        run_id = pipeline.launch(
            client, stage, dag_id="weekly_retrain", run_id=dag_run, shape=shape, partition_key=week
        )
        assert finish(client, cards_dagster, run_id).status == "SUCCESS", stage.task_id
        outcome = pipeline.outcome_from_report(stage, client.report(run_id))
        assert outcome.state == "success", outcome.headline()
        outcomes[stage.task_id] = outcome
    splits = outcomes["validate_data"].metadata["transaction_splits"]
    assert splits["week"] == week and splits["window"] == "2018-05-03..2018-05-30"
    assert outcomes["deploy_if_better"].decision == "promoted"
    # A retry of the validate task follows the same runs instead of launching others.
    again = weeks.launch_days(
        client, pipeline.VALIDATE, week, dag_id="weekly_retrain", run_id=dag_run, window_days=28
    )
    assert again == days
