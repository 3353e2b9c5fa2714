"""The code location: `workspace.yaml` and `dagster asset materialize -m` both load this."""

from typing import Any

import dagster as dg

from fraud_assets.defs.assets.daily import (
    card_features,
    card_transactions,
    daily_cards_job,
    daily_cards_schedule,
)
from fraud_assets.defs.assets.data import raw_transactions, transaction_splits
from fraud_assets.defs.assets.labels import labelled_transactions
from fraud_assets.defs.assets.model import anomaly_scores, evaluation_report, fraud_model
from fraud_assets.defs.assets.monitoring import check_prediction_drift, prediction_drift
from fraud_assets.defs.assets.promotion import promoted_model
from fraud_assets.defs.assets.weekly import (
    WEEKLY,
    current_week,
    weekly_card_assets,
    weekly_card_job,
    weekly_card_schedule,
)
from fraud_assets.defs.checks import (
    check_evaluation_report_quality_floor,
    check_transaction_splits_min_frauds,
    raw_transactions_checks,
    training_checks,
)
from fraud_assets.defs.jobs import drift_job, weekly_retrain_job
from fraud_assets.defs.resources import default_resources
from fraud_assets.defs.schedules import drift_schedule, weekly_retrain_schedule
from fraud_assets.defs.sensors import build_drift_retrain_sensor, drift_retrain_sensor
from fraud_core.contracts import CARDS, KAGGLE
from fraud_core.data import DataError

#: The training graph (weekly_retrain_job), from the labels sent back to the promoted model.
ASSETS = [
    labelled_transactions,
    raw_transactions,
    transaction_splits,
    anomaly_scores,
    fraud_model,
    evaluation_report,
    promoted_model,
]
CHECKS = [
    raw_transactions_checks,
    check_transaction_splits_min_frauds,
    check_evaluation_report_quality_floor,
]
#: The card contract by day, on Parquet (daily_cards_job); its weekly chain: weekly.py.
DAILY_ASSETS = [card_transactions, card_features]
#: Watching the served model (drift_job).
MONITORING_ASSETS = [prediction_drift]
MONITORING_CHECKS = [check_prediction_drift]


def build_defs(contract: str | None = None) -> dg.Definitions:
    """The code location for a data contract (None: the one the data folder holds).

    The card contract is by day and by week: `card_transactions` and `card_features` are daily
    partitions (`daily_cards_job`, with the labels sent back), and the training chain from
    `transaction_splits` to `promoted_model` is weekly, each week's model cut from the last
    `FRAUD_TRAINING_WINDOW_DAYS` of features (`weekly_retrain_job` of one week). Kaggle data has
    no dates to partition by: its graph is the unpartitioned one, which keeps `dagster asset
    materialize --select '*'` working as typed there. Dropping card files into an empty folder:
    reload the code location (the UI's Reload button) to see them.
    """
    from fraud_core.settings import PlatformSettings

    resources = default_resources()
    if contract is None:
        try:
            contract = resources["data_source"].current_contract()
        except DataError:  # raw_transactions names the unreadable files when it runs
            contract = KAGGLE
    common: dict[str, Any] = {
        "resources": resources,
        # Steps run one after another in the run's process: no per-step interpreter start-up,
        # and the training steps never fight over the cores (OMP_WAIT_POLICY, fraud_assets/).
        "executor": dg.in_process_executor,
    }
    if contract != CARDS:
        return dg.Definitions(
            assets=[*ASSETS, *MONITORING_ASSETS],
            asset_checks=[*CHECKS, *MONITORING_CHECKS],
            jobs=[weekly_retrain_job, drift_job],
            schedules=[weekly_retrain_schedule, drift_schedule],
            sensors=[drift_retrain_sensor],
            **common,
        )
    window_days = PlatformSettings().training_window_days
    return dg.Definitions(
        assets=[
            labelled_transactions,
            *DAILY_ASSETS,
            *weekly_card_assets(window_days),
            *MONITORING_ASSETS,
        ],
        asset_checks=[*training_checks(WEEKLY), *MONITORING_CHECKS],
        jobs=[daily_cards_job, weekly_card_job, drift_job],
        schedules=[daily_cards_schedule, weekly_card_schedule, drift_schedule],
        sensors=[build_drift_retrain_sensor(weekly_card_job, current_week)],
        **common,
    )


defs = build_defs()
