"""The Dask features are the single-process features exactly: every value, every row, the index."""

from __future__ import annotations

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from distributed import Client

from fraud_core.cards.definition import (
    CUSTOMER_ID,
    DEFAULT,
    HISTORY_COLUMNS,
    TERMINAL_ID,
    TX_US,
    FeatureDefinition,
)
from fraud_core.cards.features import Kind, compute_features, key_features, kind_columns
from fraud_core.scale.features import compute_features_dask

#: Other windows than the default, so nothing depends on the default's shape.
OTHER = FeatureDefinition(
    customer_windows_days=(2, 14), terminal_windows_days=(3, 10, 21), delay_days=5
)


def assert_identical(got: pd.DataFrame, want: pd.DataFrame) -> None:
    assert list(got.columns) == list(want.columns)
    assert got.index.equals(want.index)
    assert (got.dtypes == np.float64).all()
    # Bit for bit, not approximately: the same code on the same rows in the same order.
    assert np.array_equal(got.to_numpy(), want.to_numpy())


def shuffled(frame: pd.DataFrame, seed: int) -> pd.DataFrame:
    """The rows in a random order, under a non-default index (labels the rows keep)."""
    out = frame.sample(frac=1.0, random_state=seed)
    out.index = pd.Index(out.index.to_numpy() * 7 + 3, name="row")
    return out


def test_the_in_process_cluster_gives_exactly_the_single_process_features(
    local_cluster: Client, cards: pd.DataFrame
) -> None:
    got = compute_features_dask(cards, DEFAULT, local_cluster, npartitions=4)
    assert_identical(got, compute_features(cards, DEFAULT))


def test_the_real_cluster_gives_them_for_rows_in_any_order(
    cluster: Client, cards: pd.DataFrame
) -> None:
    frame = shuffled(cards, seed=1)
    got = compute_features_dask(frame, DEFAULT, cluster, npartitions=6)
    assert_identical(got, compute_features(frame, DEFAULT))


def test_a_dask_frame_gives_a_pandas_frame_of_its_rows_in_its_order(
    cluster: Client, cards: pd.DataFrame
) -> None:
    frame = shuffled(cards, seed=2)
    parted = dd.from_pandas(frame, npartitions=5, sort=False)
    got = compute_features_dask(parted, OTHER, cluster, npartitions=4)
    assert isinstance(got, pd.DataFrame)
    assert_identical(got, compute_features(frame, OTHER))


def test_the_task_based_shuffle_gives_the_same(local_cluster: Client, cards: pd.DataFrame) -> None:
    frame = shuffled(cards, seed=3)
    got = compute_features_dask(frame, OTHER, local_cluster, npartitions=5, shuffle_method="tasks")
    assert_identical(got, compute_features(frame, OTHER))


def test_rows_tied_in_time_keep_the_single_process_order(
    local_cluster: Client, cards: pd.DataFrame
) -> None:
    """Times cut to the hour: most rows share their time with others of their customer."""
    frame = cards.copy()
    frame[TX_US] = frame[TX_US] // 3_600_000_000 * 3_600_000_000
    frame = shuffled(frame, seed=4)
    assert frame[TX_US].duplicated().mean() > 0.5
    got = compute_features_dask(frame, DEFAULT, local_cluster, npartitions=4)
    assert_identical(got, compute_features(frame, DEFAULT))


def test_every_partition_computes_keys_of_its_own(cards: pd.DataFrame) -> None:
    """What the Dask path rests on: a frame holding all rows of some keys gives them exactly."""
    want = compute_features(cards, DEFAULT)
    kinds: list[tuple[Kind, str]] = [("customer", CUSTOMER_ID), ("terminal", TERMINAL_ID)]
    for kind, key in kinds:
        columns = list(kind_columns(DEFAULT, kind))
        codes = pd.util.hash_pandas_object(cards[key], index=False).to_numpy() % 4
        for part in range(4):
            rows = cards[codes == part]
            assert 0 < len(rows) < len(cards)
            got = key_features(rows, DEFAULT, kind)
            assert list(got.columns) == columns
            assert np.array_equal(got.to_numpy(), want.loc[rows.index, columns].to_numpy())


def test_only_the_columns_the_features_read_are_needed(
    local_cluster: Client, cards: pd.DataFrame
) -> None:
    frame = cards[list(HISTORY_COLUMNS)].assign(note="ignored")
    got = compute_features_dask(frame, DEFAULT, local_cluster, npartitions=3)
    assert_identical(got, compute_features(cards, DEFAULT))
    with pytest.raises(ValueError, match=r"missing: \['terminal_id'\]"):
        compute_features_dask(
            cards.drop(columns=[TERMINAL_ID]), DEFAULT, local_cluster, npartitions=3
        )


def test_a_partition_error_names_the_row_it_came_from(
    local_cluster: Client, cards: pd.DataFrame
) -> None:
    frame = cards.head(2_000).copy()
    frame.loc[frame.index[17], "is_fraud"] = 3
    with pytest.raises(ValueError, match=rf"0/1 labels: 1 rows do not, e.g. \[{frame.index[17]}\]"):
        compute_features_dask(frame, DEFAULT, local_cluster, npartitions=3)


def test_an_empty_frame_gives_empty_features(local_cluster: Client, cards: pd.DataFrame) -> None:
    got = compute_features_dask(cards.iloc[:0], DEFAULT, local_cluster)
    assert got.shape == (0, len(DEFAULT.feature_names))
    assert list(got.columns) == list(DEFAULT.feature_names)
