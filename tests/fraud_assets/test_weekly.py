"""The card contract's weekly model: each week cut from its last 28 days of daily features.

`make materialize` (`fraud_assets.run`) on card data runs every day of the folder in one run,
then the newest week's chain; the week reads only the days its partition mappings reach. The
data is the Handbook simulator's small set of the pipeline tests (250 customers, 500 terminals,
60 days from 2018-04-01).
"""

from __future__ import annotations

import io
import os
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from fraud_assets import run
from fraud_assets.definitions import build_defs
from fraud_assets.defs.assets.daily import DAILY
from fraud_assets.defs.assets.weekly import WEEKLY, weekly_card_schedule
from fraud_assets.defs.io_managers import ParquetIOManager
from fraud_core import stored
from fraud_core.cards.definition import DEFAULT, US_PER_DAY
from fraud_core.data import Splits
from fraud_core.store import ModelStore
from tests.conftest import make_resources

#: The synthetic set's days (SMALL_CARDS: 60 days from 2018-04-01); its last day is a Wednesday,
#: and the days brought in run to the end of its week (the Saturday, stored empty).
FIRST, LAST, SATURDAY = "2018-04-01", "2018-05-30", "2018-06-02"
WEEK = "2018-05-27"


def _day(tx_us: pd.Series) -> np.ndarray:
    return (tx_us.to_numpy(np.int64) // US_PER_DAY).astype("datetime64[D]")


def _splits(storage: Path, week: str) -> Splits:
    fs, _ = stored.open_root(str(storage))
    path = f"{storage}/transaction_splits/{week}"
    return stored.read_value(fs, path, stored.type_names(Splits))


def test_make_materialize_runs_every_day_then_the_newest_week(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FRAUD_DATA_CONTRACT", "cards")
    out = io.StringIO()
    assert run.main([], out=out) == 0, out.getvalue()[-3000:]
    text = out.getvalue()
    assert f"daily_cards_job for the days {FIRST} … {SATURDAY}: one run" in text
    assert f"weekly_retrain_job for the week {WEEK} (to {SATURDAY})" in text
    assert "Decision: promoted (challenger " in text
    for check in ("check_transaction_splits_min_frauds", "check_evaluation_report_quality_floor"):
        assert f"[check] {check} passed" in text
    daily_run, weekly_run = re.findall(r"^Dagster run (\S+)$", text, re.MULTILINE)

    storage = Path(os.environ["DAGSTER_HOME"]) / "storage"
    io_manager = ParquetIOManager(root=str(storage))
    days = [str(d) for d in np.arange(np.datetime64(FIRST), np.datetime64(SATURDAY) + 1)]
    # Every day of the folder is a partition, from one run; the weekly chain is one week.
    assert io_manager.partitions_written(dg.AssetKey("card_features")) == days
    for name in ("transaction_splits", "fraud_model", "evaluation_report", "promoted_model"):
        assert io_manager.partitions_written(dg.AssetKey(name)) == [WEEK], name
    with dg.DagsterInstance.from_config(os.environ["DAGSTER_HOME"]) as instance:
        daily = instance.get_run_by_id(daily_run)
        weekly = instance.get_run_by_id(weekly_run)
        assert daily is not None and weekly is not None
        assert daily.tags["dagster/asset_partition_range_start"] == FIRST
        assert daily.tags["dagster/asset_partition_range_end"] == SATURDAY
        assert weekly.tags["dagster/partition"] == WEEK
    # The 28 days ending on the newest day (2018-05-03 … 05-30), cut as 8 / 7 / 3 / 7 / 3 days.
    splits = _splits(storage, WEEK)
    assert str(_day(splits.train["tx_us"]).min()) == "2018-05-03"
    assert str(_day(splits.train["tx_us"]).max()) == "2018-05-10"
    assert set(map(str, _day(splits.validation["tx_us"]))) == {
        "2018-05-18",
        "2018-05-19",
        "2018-05-20",
    }
    assert set(map(str, _day(splits.test["tx_us"]))) == {"2018-05-28", "2018-05-29", "2018-05-30"}
    # The served state's history reaches back past the window (the retention: 67 days).
    assert splits.history is not None
    assert str(_day(splits.history["tx_us"]).min()) == FIRST
    assert splits.history["tx_us"].max() == splits.test["tx_us"].max()
    # The features are the days' own (computed on everything their windows reach).
    features = stored.read_value(*_at(storage, "card_features", "2018-05-29"), {})
    test_day = splits.test[_day(splits.test["tx_us"]).astype(str) == "2018-05-29"]
    names = list(DEFAULT.feature_names)
    expected = features.set_index("transaction_id").loc[test_day["transaction_id"], names]
    assert np.array_equal(test_day[names].to_numpy(), expected.to_numpy())

    store = ModelStore(Path(os.environ["FRAUD_MODELS_DIR"]))
    production = store.load_production(verify=True)
    assert production is not None and production.contract == "cards"
    # Trained on train + validation: through the last validation day, 2018-05-20.
    through = np.datetime64(production.manifest["trained_through_us"], "us")
    assert str(through.astype("datetime64[D]")) == "2018-05-20"

    # A backtest of an older week (test days 05-03 … 05-05) is evaluated, never published:
    # the champion learnt from its test rows.
    job = build_defs("cards").resolve_job_def("weekly_retrain_job")
    with dg.DagsterInstance.from_config(os.environ["DAGSTER_HOME"]) as instance:
        older = job.execute_in_process(instance=instance, partition_key="2018-04-29")
    assert older.success
    (event,) = [
        e
        for e in older.get_asset_materialization_events()
        if e.asset_key.path == ["promoted_model"]
    ]
    meta = event.materialization.metadata
    assert meta["decision"].value == "kept production"
    assert "was trained on transactions up to 2018-05-20, inside this test period" in str(
        meta["reason"].value
    )
    assert store.current_version() == production.version


def _at(storage: Path, asset: str, partition: str) -> tuple[object, str]:
    fs, _ = stored.open_root(str(storage))
    return fs, f"{storage}/{asset}/{partition}"


def _daily_backfill(tmp_path: Path, last: str = SATURDAY) -> dict[str, object]:
    resources = make_resources(tmp_path, contract="cards")
    defs = build_defs("cards")
    daily = dg.Definitions(
        assets=defs.assets, asset_checks=defs.asset_checks, jobs=defs.jobs, resources=resources
    )
    tags = {"dagster/asset_partition_range_start": FIRST, "dagster/asset_partition_range_end": last}
    result = daily.resolve_job_def("daily_cards_job").execute_in_process(tags=tags)
    assert result.success
    return {"defs": daily, "resources": resources}


def test_a_day_missing_from_the_window_fails_the_week_naming_it(tmp_path: Path) -> None:
    backfill = _daily_backfill(tmp_path)
    storage = tmp_path / "storage"
    shutil.rmtree(storage / "card_features" / "2018-05-12")
    job = backfill["defs"].resolve_job_def("weekly_retrain_job")  # type: ignore[attr-defined]
    result = job.execute_in_process(partition_key=WEEK, raise_on_error=False)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert failure.step_key == "transaction_splits"
    message = failure.step_failure_data.user_failure_data.description
    assert "2018-05-12" in message and "daily_cards_job" in message
    assert "window 2018-05-03 … 2018-05-30 of week 2018-05-27" in message
    assert not (storage / "promoted_model").exists()
    assert ModelStore(tmp_path / "models").load_production() is None


def test_a_week_whose_days_were_not_all_brought_in_fails_naming_them(tmp_path: Path) -> None:
    # Brought in up to Friday 2018-06-08 only: the next week's Saturday 06-09 is missing.
    backfill = _daily_backfill(tmp_path, last="2018-06-08")
    job = backfill["defs"].resolve_job_def("weekly_retrain_job")  # type: ignore[attr-defined]
    result = job.execute_in_process(partition_key="2018-06-03", raise_on_error=False)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    message = failure.step_failure_data.user_failure_data.description
    assert "card_features lacks 1 day(s) of the week 2018-06-03: 2018-06-09." in message
    # Every day stored, none with a transaction (the data ends 05-30): a week without data.
    tags = {
        "dagster/asset_partition_range_start": "2018-06-09",
        "dagster/asset_partition_range_end": "2018-06-09",
    }
    daily = backfill["defs"].resolve_job_def("daily_cards_job")  # type: ignore[attr-defined]
    assert daily.execute_in_process(tags=tags).success
    result = job.execute_in_process(partition_key="2018-06-03", raise_on_error=False)
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    message = failure.step_failure_data.user_failure_data.description
    assert "no card_features for the week 2018-06-03 (2018-06-03 … 2018-06-09)" in message


def test_a_week_reads_only_the_days_its_window_and_history_reach() -> None:
    graph = build_defs("cards").resolve_asset_graph()
    splits = dg.AssetKey("transaction_splits")
    node = graph.get(splits)
    assert node.partitions_def == WEEKLY
    for upstream, weeks_back in (
        (dg.AssetKey("card_features"), 4),
        (dg.AssetKey("card_transactions"), 10),
    ):
        mapping = graph.get_partition_mapping(splits, upstream)
        subset = WEEKLY.empty_subset().with_partition_keys([WEEK])
        days = mapping.get_upstream_mapped_partitions_result_for_partitions(
            subset, WEEKLY, DAILY
        ).partitions_subset.get_partition_keys()
        # The week and `weeks_back` weeks before it: every day 28 (67) days before any of its days.
        assert days[0] == str(np.datetime64(WEEK) - 7 * weeks_back) and days[-1] == "2018-06-02"
    for name in ("anomaly_scores", "fraud_model", "evaluation_report", "promoted_model"):
        assert graph.get(dg.AssetKey(name)).partitions_def == WEEKLY
    # The unpartitioned graph of the Kaggle contract is untouched.
    kaggle = build_defs("kaggle").resolve_asset_graph()
    assert kaggle.get(splits).partitions_def is None


def test_sunday_trains_the_week_that_ended() -> None:
    context = dg.build_schedule_context(
        scheduled_execution_time=datetime(2018, 6, 3, 2, 0, tzinfo=UTC)
    )
    request = weekly_card_schedule(context)
    assert isinstance(request, dg.RunRequest)
    assert request.partition_key == WEEK
    assert weekly_card_schedule.cron_schedule == "0 2 * * 0"
    assert weekly_card_schedule.default_status == dg.DefaultScheduleStatus.STOPPED
