"""The card contract by day: a backfill in one run, a new day added alone, features exact.

The data folder holds the Handbook simulator's transactions as a CSV (a smaller set than the
pipeline tests': 120 customers, 240 terminals, 50 days). Every day's features are compared with
`compute_features` on the whole history at once: equal to the bit, on a folder, on an S3 bucket
and on a real Dask cluster (a scheduler and two worker processes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from fraud_assets.defs.assets.daily import (
    DAILY,
    by_day,
    card_features,
    card_transactions,
    day_keys,
)
from fraud_assets.defs.assets.labels import labelled_transactions
from fraud_assets.defs.io_managers import ParquetIOManager
from fraud_assets.defs.resources import ComputeEngine
from fraud_core import stored
from fraud_core.cards import schema as card_schema
from fraud_core.cards.definition import DEFAULT, TRANSACTION_ID, TX_US
from fraud_core.cards.features import compute_features
from fraud_core.cards.synthetic import generate
from tests.conftest import make_resources
from tests.dask_cluster import start_cluster
from tests.s3_server import s3_server

ASSETS = [labelled_transactions, card_transactions, card_features]
NAMES = list(DEFAULT.feature_names)


@pytest.fixture(scope="module")
def transactions() -> pd.DataFrame:
    return generate(n_customers=120, n_terminals=240, n_days=50, seed=3)


def _write(folder: Path, frame: pd.DataFrame, name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    out = frame.copy()
    out["tx_datetime"] = pd.to_datetime(out["tx_datetime"]).dt.strftime("%Y-%m-%d %H:%M:%S")
    out.to_csv(folder / name, index=False)


def _days(frame: pd.DataFrame) -> list[str]:
    canonical = card_schema.conform(frame)
    return sorted(set(day_keys(canonical[TX_US].to_numpy())))


def _run(resources: dict[str, Any], first: str, last: str) -> dg.ExecuteInProcessResult:
    tags = {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last}
    return dg.materialize(ASSETS, resources=resources, tags=tags, raise_on_error=False)


def _resources(tmp_path: Path, root: str | None = None, **options: Any) -> dict[str, Any]:
    resources = make_resources(tmp_path, contract="cards")
    if root is not None:
        resources["io_manager"] = ParquetIOManager(root=root)
    resources.update(options)
    return resources


def _stored_features(io: ParquetIOManager, days: list[str]) -> pd.DataFrame:
    fs, _ = stored.open_root(io.root)
    parts = [stored.read_value(fs, io._path(dg.AssetKey("card_features"), day), {}) for day in days]
    return pd.concat(parts, ignore_index=True)


def _expected(everything: pd.DataFrame) -> pd.DataFrame:
    canonical = card_schema.conform(everything)
    return pd.concat([canonical, compute_features(canonical, DEFAULT)], axis=1)


def _assert_exact(features: pd.DataFrame, everything: pd.DataFrame) -> None:
    """The days' features equal `compute_features` on the whole history, to the bit."""
    expected = _expected(everything)
    got = features.set_index(TRANSACTION_ID).loc[expected[TRANSACTION_ID]]
    assert len(got) == len(expected)
    assert np.array_equal(got[NAMES].to_numpy(), expected[NAMES].to_numpy())


def _assert_same_up_to_rounding(features: pd.DataFrame, everything: pd.DataFrame) -> None:
    """Counts and risks exactly; mean amounts to rounding.

    A day computed alone starts its per-key prefix sums of amounts at the first day its windows
    reach, not at the first day there is: the same sums, added from another start.
    """
    expected = _expected(everything)
    got = features.set_index(TRANSACTION_ID).loc[expected[TRANSACTION_ID]]
    amounts = [n for n in NAMES if "_AVG_AMOUNT_" in n]
    others = [n for n in NAMES if n not in amounts]
    assert np.array_equal(got[others].to_numpy(), expected[others].to_numpy())
    np.testing.assert_allclose(
        got[amounts].to_numpy(), expected[amounts].to_numpy(), rtol=1e-12, atol=0
    )


def test_a_backfill_of_every_day_is_one_run_with_exact_features(
    tmp_path: Path, transactions: pd.DataFrame
) -> None:
    _write(tmp_path / "raw", transactions, "cards.csv")
    days = _days(transactions)
    resources = _resources(tmp_path)
    result = _run(resources, days[0], days[-1])
    assert result.success
    io: ParquetIOManager = resources["io_manager"]
    assert io.partitions_written(dg.AssetKey("card_transactions")) == days
    assert io.partitions_written(dg.AssetKey("card_features")) == days
    # One step per asset for all the days (single_run), each materializing every day.
    steps = {e.step_key for e in result.all_events if e.is_step_success}
    assert steps == {"labelled_transactions", "card_transactions", "card_features"}
    keys = {
        e.partition
        for e in result.get_asset_materialization_events()
        if e.asset_key == dg.AssetKey("card_features")
    }
    assert keys == set(days)
    _assert_exact(_stored_features(io, days), transactions)


def test_a_new_day_is_one_new_partition_and_the_old_ones_stay(
    tmp_path: Path, transactions: pd.DataFrame
) -> None:
    days = _days(transactions)
    canonical = card_schema.conform(transactions)
    on = day_keys(canonical[TX_US].to_numpy())
    last = days[-1]
    _write(tmp_path / "raw", canonical[on != last], "until-yesterday.csv")
    resources = _resources(tmp_path)
    assert _run(resources, days[0], days[-2]).success
    io: ParquetIOManager = resources["io_manager"]
    before = (Path(io.root) / "card_features" / days[-2] / stored.DESCRIPTION).stat().st_mtime_ns
    # The next day's file arrives beside the first.
    _write(tmp_path / "raw", canonical[on == last], "today.csv")
    result = dg.materialize(ASSETS, resources=resources, partition_key=last, raise_on_error=False)
    assert result.success
    assert io.partitions_written(dg.AssetKey("card_features")) == days
    after = (Path(io.root) / "card_features" / days[-2] / stored.DESCRIPTION).stat().st_mtime_ns
    assert after == before  # yesterday's partition was not rewritten
    materialized = {e.partition for e in result.get_asset_materialization_events()}
    assert materialized == {None, last}  # labelled_transactions (unpartitioned) and the new day
    new_day = _stored_features(io, [last])
    assert len(new_day) == int((on == last).sum()) > 0
    # Its features see the previous days (windows reach back into them), as if computed at once.
    _assert_same_up_to_rounding(_stored_features(io, days), transactions)


def test_the_daily_partitions_on_an_s3_bucket(
    tmp_path: Path, transactions: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    canonical = card_schema.conform(transactions)
    days = _days(transactions)[:12]
    few = canonical[np.isin(day_keys(canonical[TX_US].to_numpy()), days)]
    _write(tmp_path / "raw", few, "cards.csv")
    with s3_server(monkeypatch) as bucket:
        resources = _resources(tmp_path, root=f"{bucket}/assets")
        assert _run(resources, days[0], days[-1]).success
        io: ParquetIOManager = resources["io_manager"]
        assert io.partitions_written(dg.AssetKey("card_features")) == days
        assert not (tmp_path / "storage").exists()
        _assert_exact(_stored_features(io, days), few)


def test_features_on_a_dask_cluster_equal_the_single_machine_ones(
    tmp_path: Path, transactions: pd.DataFrame
) -> None:
    _write(tmp_path / "raw", transactions, "cards.csv")
    days = _days(transactions)
    with start_cluster(workers=2) as address:
        resources = _resources(tmp_path, compute=ComputeEngine(dask_address=address))
        result = _run(resources, days[0], days[-1])
    assert result.success
    materialization = next(
        e.step_materialization_data.materialization
        for e in result.get_asset_materialization_events()
        if e.asset_key == dg.AssetKey("card_features")
    )
    assert materialization.metadata["engine"].value == f"dask {address}"
    _assert_exact(_stored_features(resources["io_manager"], days), transactions)


def test_no_scheduler_at_the_address_fails_naming_it(
    tmp_path: Path, transactions: pd.DataFrame
) -> None:
    _write(tmp_path / "raw", transactions.head(2000), "cards.csv")
    days = _days(transactions.head(2000))
    address = "tcp://127.0.0.1:9"  # the discard port: nothing listens
    resources = _resources(tmp_path, compute=ComputeEngine(dask_address=address))
    result = _run(resources, days[0], days[-1])
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert failure.step_key == "card_features" and address in str(failure.event_specific_data)


def test_a_bad_file_fails_the_day_naming_the_column(
    tmp_path: Path, transactions: pd.DataFrame
) -> None:
    bad = transactions.head(3000).copy()
    bad["amount"] = bad["amount"].astype(object)
    bad.loc[bad.index[5], "amount"] = "twelve"
    _write(tmp_path / "raw", bad, "cards.csv")
    days = _days(transactions.head(3000))
    result = _run(_resources(tmp_path), days[0], days[-1])
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert failure.step_key == "card_transactions"
    assert "amount" in str(failure.event_specific_data)
    assert not (tmp_path / "storage" / "card_transactions").exists()  # nothing half-written


def test_the_partitions_are_days_from_the_configured_start() -> None:
    assert DAILY.get_first_partition_key() == "2018-01-01"
    assert "2018-04-01" in DAILY.get_partition_keys()


def test_the_first_day_alone_gets_its_window_as_days(tmp_path: Path) -> None:
    # The window of the first partition holds one day only: still read by day, not as a frame.
    first = generate(n_customers=50, n_terminals=100, n_days=3, start_date="2018-01-01", seed=1)
    _write(tmp_path / "raw", first, "cards.csv")
    resources = _resources(tmp_path)
    result = dg.materialize(
        ASSETS, resources=resources, partition_key="2018-01-01", raise_on_error=False
    )
    assert result.success
    on_first = day_keys(card_schema.conform(first)[TX_US].to_numpy()) == "2018-01-01"
    assert len(_stored_features(resources["io_manager"], ["2018-01-01"])) == int(on_first.sum())


def test_a_day_whose_windows_reach_unstored_data_is_refused(
    tmp_path: Path, transactions: pd.DataFrame
) -> None:
    # The folder holds every day, but only the last two were ever ingested: their windows
    # reach 37 days of the data no run stored, and their features would count too few.
    _write(tmp_path / "raw", transactions, "cards.csv")
    days = _days(transactions)
    resources = _resources(tmp_path)
    result = _run(resources, days[-2], days[-1])
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert failure.step_key == "card_features"
    message = failure.step_failure_data.user_failure_data.description
    first_reached = str(np.datetime64(days[-2]) - 37)
    assert f"that card_transactions has not stored: {first_reached}, " in message
    assert "make materialize" in message
    io: ParquetIOManager = resources["io_manager"]
    assert io.partitions_written(dg.AssetKey("card_features")) == []


def test_by_day_cuts_a_frame_in_time_order_into_shared_slices(transactions: pd.DataFrame) -> None:
    canonical = card_schema.conform(transactions)
    keys = [*_days(transactions)[:5], "2018-12-31"]
    days = by_day(canonical, keys)
    assert [len(days[k]) for k in keys[:5]] == [
        int((day_keys(canonical[TX_US].to_numpy()) == k).sum()) for k in keys[:5]
    ]
    assert days["2018-12-31"].empty and list(days["2018-12-31"].columns) == list(canonical.columns)
    first = days[keys[0]]
    assert first.index.equals(pd.RangeIndex(len(first)))
    # No copy of the whole: the day is a view of the canonical frame's memory.
    assert np.shares_memory(first["amount"].to_numpy(), canonical["amount"].to_numpy())
    # Out of time order, the same days (sorted first, each day's rows in their order).
    shuffled = canonical.sample(frac=1.0, random_state=0).reset_index(drop=True)
    again = by_day(shuffled, keys)
    for key in keys[:5]:
        expected = shuffled[day_keys(shuffled[TX_US].to_numpy()) == key].reset_index(drop=True)
        pd.testing.assert_frame_equal(again[key], expected)
