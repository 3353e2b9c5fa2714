"""The graph on Dagster's PostgreSQL storage, as `python -m fraud_assets.instance` configures it."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import psycopg2
import pytest
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage

from fraud_assets import instance as dagster_instance
from fraud_assets.definitions import ASSETS, CHECKS
from tests.conftest import make_resources

pytestmark = pytest.mark.slow

ASSET_NAMES = [
    "raw_transactions",
    "transaction_splits",
    "anomaly_scores",
    "fraud_model",
    "evaluation_report",
    "promoted_model",
]


def _table_rows(url: str, table: str) -> int:
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT count(*) FROM {table}")
        row = cur.fetchone()
    conn.close()
    assert row is not None
    return int(row[0])


def test_materialization_is_recorded_in_postgres(
    tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "dagster_home"
    monkeypatch.setenv("DAGSTER_POSTGRES_URL", postgres_url)
    yaml = dagster_instance.write(home, postgres_url=postgres_url).read_text()
    assert "env: DAGSTER_POSTGRES_URL" in yaml
    assert postgres_url not in yaml  # the URL (and any password in it) stays in the environment

    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        result = dg.materialize(
            [*ASSETS, *CHECKS],
            instance=instance,
            resources=make_resources(tmp_path),
            raise_on_error=False,
        )
    assert result.success
    check_keys = [e.asset_check_key for e in result.get_asset_check_evaluations()]
    assert len(check_keys) == 7

    # A new instance on the same database sees everything the run recorded.
    with dg.DagsterInstance.from_config(str(home)) as reread:
        assert isinstance(reread.event_log_storage, PostgresEventLogStorage)
        run = reread.get_run_by_id(result.run_id)
        assert run is not None
        assert run.status == dg.DagsterRunStatus.SUCCESS
        for name in ASSET_NAMES:
            event = reread.get_latest_materialization_event(dg.AssetKey(name))
            assert event is not None, name
            assert event.run_id == result.run_id
        promoted = reread.get_latest_materialization_event(dg.AssetKey("promoted_model"))
        assert promoted is not None and promoted.asset_materialization is not None
        metadata = promoted.asset_materialization.metadata
        assert metadata["decision"].value == "promoted"
        assert metadata["promoted"].value is True
        executions = reread.event_log_storage.get_latest_asset_check_execution_by_key(check_keys)
        assert set(executions) == set(check_keys)
        for key, execution in executions.items():
            assert execution.run_id == result.run_id, key
            assert execution.status.value == "SUCCEEDED", key

    # The rows are really in PostgreSQL, not in a SQLite file under DAGSTER_HOME.
    assert _table_rows(postgres_url, "runs") == 1
    assert _table_rows(postgres_url, "event_logs") > 20
    assert _table_rows(postgres_url, "asset_check_executions") >= len(check_keys)
    assert not list(home.rglob("*.db"))
