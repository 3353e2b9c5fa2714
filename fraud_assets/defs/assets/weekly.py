"""The card contract's weekly model: each week's splits cut from the last N days of features.

`transaction_splits` of week W reads `card_features` of the N days that end with W's newest
day (`FRAUD_TRAINING_WINDOW_DAYS`, default 28) and `card_transactions` of the retention before
it (the served state's history), both through `TimeWindowPartitionMapping`s: a weekly model
never loads more than its window, however many days the store holds. The model, its evaluation
and the promotion are partitioned by the same weeks, one of each per week. The current week is a
partition too (`end_offset=1`): a retrain mid-week (a drift alert) trains up to yesterday.
"""

import json
import math
from datetime import UTC, datetime, timedelta

import dagster as dg
import numpy as np
import pandas as pd

from fraud_assets.defs import constants
from fraud_assets.defs.assets.daily import DAILY, day_range
from fraud_assets.defs.assets.data import SplitConfig, card_splits_output
from fraud_assets.defs.assets.model import anomaly_scores, evaluation_report, fraud_model
from fraud_assets.defs.assets.promotion import promoted_model
from fraud_core.cards import definition as card_def
from fraud_core.cards.splits import split_cards

#: Sunday to Saturday; the first week is the one holding the first daily partition.
WEEKLY = dg.WeeklyPartitionsDefinition(
    start_date=constants.WEEKS_START, timezone="UTC", end_offset=1
)
#: Days behind a week's newest transaction that the served state's history holds.
RETENTION_DAYS = math.ceil(constants.FEATURES.retention_us / card_def.US_PER_DAY)


def _weeks_back(days: int) -> int:
    # Weeks before W's own that N days ending on any day of W can reach.
    return math.ceil(days / 7)


def _day(key: str) -> np.datetime64:
    return np.datetime64(key, "D")


def _concat(days: dict[str, pd.DataFrame], keys: list[str]) -> pd.DataFrame:
    parts = [days[k] for k in keys if k in days and len(days[k])]
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    if parts:
        frame.attrs = dict(parts[-1].attrs)
    return frame


def _definition_problem(
    definition: card_def.FeatureDefinition,
    days: dict[str, pd.DataFrame],
    keys: list[str],
    frame: pd.DataFrame,
) -> str | None:
    """Why the window's features are not this run's definition's (None: they are)."""
    expected = json.loads(json.dumps(definition.as_dict()))
    for key in keys:
        recorded = days[key].attrs.get("feature_definition") if key in days else None
        if recorded is None:
            continue
        differ = sorted(k for k in expected if recorded.get(k) != expected[k])
        if differ:
            shown = "; ".join(f"{k} {recorded.get(k)} there, {expected[k]} here" for k in differ)
            return f"card_features of {key} were computed with other settings ({shown})"
    absent = [n for n in definition.feature_names if n not in frame.columns]
    if absent:
        return f"card_features of the window lack the columns {', '.join(absent)}"
    return None


def window_splits(
    context: dg.AssetExecutionContext,
    config: SplitConfig,
    window_days: int,
    card_features: dict[str, pd.DataFrame],
    card_transactions: dict[str, pd.DataFrame],
) -> dg.Output:
    """The splits of one week: its window of features, the delays left out, its history."""
    week = context.partition_key
    window = context.partition_time_window
    start, end = (_day(t.date().isoformat()) for t in (window.start, window.end))
    week_days = day_range(start, end - 1)
    # Every day of the week up to yesterday must be stored, empty or not (`daily_cards_job`
    # writes a partition for each day of its range): a week without its Saturday, say, would
    # otherwise train on a window that ends a day early.
    yesterday = DAILY.get_last_partition_key() or week_days[-1]
    unstored = [k for k in week_days if k <= yesterday and k not in card_features]
    if unstored:
        raise dg.Failure(
            description=f"card_features lacks {len(unstored)} day(s) of the week {week}: "
            f"{', '.join(unstored)}. Materialize daily_cards_job for them first (its daily "
            "schedule does, or `make materialize`)",
            metadata={"missing_days": dg.MetadataValue.json(unstored)},
        )
    present = [k for k in week_days if len(card_features.get(k, ()))]
    if not present:
        raise dg.Failure(
            description=f"no card_features for the week {week} ({week_days[0]} … "
            f"{week_days[-1]}): materialize daily_cards_job for its days first (its daily "
            "schedule does, or `make materialize`)"
        )
    newest = _day(present[-1])
    keys = day_range(newest - (window_days - 1), newest)
    written = sorted(card_features)
    holes = [k for k in keys if k not in card_features and k > written[0]]
    if holes:
        shown = ", ".join(holes[:5]) + (f" and {len(holes) - 5} more" if len(holes) > 5 else "")
        raise dg.Failure(
            description=f"card_features lacks {len(holes)} day(s) of the {window_days}-day "
            f"window {keys[0]} … {keys[-1]} of week {week}: {shown}. Materialize "
            "daily_cards_job for them first",
            metadata={"missing_days": dg.MetadataValue.json(holes)},
        )
    definition = config.definition()
    frame = _concat(card_features, keys)
    problem = _definition_problem(definition, card_features, keys, frame)
    if problem:
        raise dg.Failure(
            description=f"{problem}: re-materialize card_features for the window with this "
            "run's feature config"
        )
    history = _concat(card_transactions, day_range(newest - RETENTION_DAYS, newest))
    try:
        splits, plan = split_cards(
            frame,
            frame,
            definition,
            config.validation_fraction,
            config.test_fraction,
            source=str(frame.attrs.get("data_source", "unknown")),
            history_from=history if len(history) else None,
        )
    except ValueError as exc:
        raise dg.Failure(
            description=f"week {week}, window {keys[0]} … {keys[-1]}: {exc} "
            "(FRAUD_TRAINING_WINDOW_DAYS sets the window)"
        ) from exc
    before = [k for k in keys if k < written[0]]
    context.log.info(
        f"week {week}: the {window_days} days {keys[0]} … {keys[-1]}, {len(frame):,} "
        f"transactions" + (f" ({len(before)} day(s) before the first day stored)" if before else "")
    )
    return card_splits_output(
        context,
        splits,
        plan,
        definition,
        {
            "week": week,
            "window_days": window_days,
            "window": f"{keys[0]}..{keys[-1]}",
            "days_before_data": len(before),
            "window_rows": len(frame),
        },
    )


def weekly_card_assets(window_days: int) -> list[dg.AssetsDefinition]:
    """The weekly chain of the card contract, its splits cut from `window_days` of features."""

    def reach(days: int) -> dg.TimeWindowPartitionMapping:
        return dg.TimeWindowPartitionMapping(
            start_offset=-_weeks_back(days), allow_nonexistent_upstream_partitions=True
        )

    @dg.asset(
        name="transaction_splits",
        partitions_def=WEEKLY,
        ins={
            "card_features": dg.AssetIn(
                partition_mapping=reach(window_days), metadata={"partitions_as_dict": True}
            ),
            "card_transactions": dg.AssetIn(
                partition_mapping=reach(RETENTION_DAYS), metadata={"partitions_as_dict": True}
            ),
        },
        group_name="ingestion",
        kinds={"pandas", "parquet"},
        owners=[constants.OWNER],
        tags={"stage": "validate"},
    )
    def transaction_splits(
        context: dg.AssetExecutionContext,
        config: SplitConfig,
        card_features: dict[str, pd.DataFrame],
        card_transactions: dict[str, pd.DataFrame],
    ) -> dg.Output:
        """Train / validation / test of one week, in time order, from its last N days.

        The label delay is left out before validation and before test (`fraud_core.cards
        .splits`); the features were computed per day on everything their windows reach.
        """
        return window_splits(context, config, window_days, card_features, card_transactions)

    weekly = [
        a.map_asset_specs(lambda spec: spec.replace_attributes(partitions_def=WEEKLY))
        for a in (anomaly_scores, fraud_model, evaluation_report, promoted_model)
    ]
    return [transaction_splits, *weekly]


def week_ended_before(moment: datetime) -> str:
    """The key of the last week that ended before `moment` (the week a Sunday run trains)."""
    return WEEKLY.get_partition_key_for_timestamp((moment - timedelta(days=1)).timestamp())


def current_week() -> str:
    """The newest weekly partition: the week of yesterday (UTC)."""
    return week_ended_before(datetime.now(UTC))


#: The card contract's weekly retrain: the chain above, one week per run.
WEEKLY_CHAIN = ("transaction_splits", "anomaly_scores", "fraud_model", "evaluation_report")
weekly_card_job = dg.define_asset_job(
    name="weekly_retrain_job",
    selection=dg.AssetSelection.assets(*WEEKLY_CHAIN, "promoted_model"),
    partitions_def=WEEKLY,
    description="One week: split its last N days of features, score anomalies, train, evaluate "
    "and promote (if better). Its days come from daily_cards_job.",
    tags={"team": "fraud-ml"},
)


@dg.schedule(
    name="weekly_retrain_schedule",
    cron_schedule=constants.WEEKLY_CRON,
    job=weekly_card_job,
    execution_timezone=constants.SCHEDULE_TIMEZONE,
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="The week that has just ended (start this only where Airflow does not "
    "trigger the retrain); daily_cards_job_schedule brings its days in first.",
)
def weekly_card_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    """Sunday's run trains the week that ended at midnight."""
    moment = context.scheduled_execution_time or datetime.now(UTC)
    week = week_ended_before(moment)
    return dg.RunRequest(run_key=f"week-{week}", partition_key=week)
