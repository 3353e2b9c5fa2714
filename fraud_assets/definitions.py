"""The code location: `workspace.yaml` and `dagster asset materialize -m` both load this."""

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
from fraud_assets.defs.checks import (
    check_evaluation_report_quality_floor,
    check_transaction_splits_min_frauds,
    raw_transactions_checks,
)
from fraud_assets.defs.jobs import drift_job, weekly_retrain_job
from fraud_assets.defs.resources import default_resources
from fraud_assets.defs.schedules import drift_schedule, weekly_retrain_schedule
from fraud_assets.defs.sensors import drift_retrain_sensor
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
#: The card contract by day, on Parquet (daily_cards_job).
DAILY_ASSETS = [card_transactions, card_features]
#: Watching the served model (drift_job).
MONITORING_ASSETS = [prediction_drift]
MONITORING_CHECKS = [check_prediction_drift]


def build_defs(contract: str | None = None) -> dg.Definitions:
    """The code location for a data contract (None: the one the data folder holds).

    The card contract adds its daily partitions (`card_transactions`, `card_features`, their
    job and schedule). Kaggle data has no dates to partition by, and leaving them out keeps
    `dagster asset materialize --select '*'` working as typed there (Dagster asks a partition of
    any partitioned asset selected). Dropping card files into an empty folder: reload the code
    location (the UI's Reload button) to see them.
    """
    resources = default_resources()
    if contract is None:
        try:
            contract = resources["data_source"].current_contract()
        except DataError:  # raw_transactions names the unreadable files when it runs
            contract = KAGGLE
    daily = contract == CARDS
    return dg.Definitions(
        assets=[*ASSETS, *(DAILY_ASSETS if daily else []), *MONITORING_ASSETS],
        asset_checks=[*CHECKS, *MONITORING_CHECKS],
        jobs=[weekly_retrain_job, drift_job, *([daily_cards_job] if daily else [])],
        schedules=[
            weekly_retrain_schedule,
            drift_schedule,
            *([daily_cards_schedule] if daily else []),
        ],
        sensors=[drift_retrain_sensor],
        resources=resources,
        # Steps run one after another in the run's process: no per-step interpreter start-up,
        # and the training steps never fight over the cores (OMP_WAIT_POLICY, fraud_assets/).
        executor=dg.in_process_executor,
    )


defs = build_defs()
