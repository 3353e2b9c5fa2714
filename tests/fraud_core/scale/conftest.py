"""Fixtures of the Dask path's tests: a real two-worker cluster, an in-process one, card data."""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd
import pytest
from distributed import Client, LocalCluster

from fraud_core.cards import synthetic
from fraud_core.scale.cluster import connect
from tests.conftest import SMALL_CARDS
from tests.dask_cluster import start_cluster


@pytest.fixture(scope="session")
def cluster_address() -> Iterator[str]:
    """A scheduler and two one-thread worker processes (`dask` CLI), for the whole session."""
    with start_cluster(workers=2) as address:
        yield address


@pytest.fixture(scope="session")
def cluster(cluster_address: str) -> Iterator[Client]:
    """A client of the real cluster, connected as the Dagster layer connects."""
    client = connect(cluster_address, timeout_s=30)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="session")
def local_cluster() -> Iterator[Client]:
    """Two one-thread workers in this process (LocalCluster(processes=False))."""
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0"
        ) as local,
        Client(local, set_as_default=False) as client,
    ):
        yield client


@pytest.fixture(scope="session")
def cards() -> pd.DataFrame:
    """The small synthetic card set of the suite (~28,000 transactions over 60 days)."""
    customers, terminals, days = SMALL_CARDS
    return synthetic.generate(customers, terminals, days, seed=3)
