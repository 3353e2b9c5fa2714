"""`make materialize` on card data: every day of the data folder in one run, then its newest week.

The card contract is by day (`daily_cards_job`) and its model by week (`weekly_retrain_job`):
`run_cards` runs the first over the days the folder holds, to the end of the newest day's week,
then the second for that week, printing both as `fraud_assets.run` prints a run.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

import dagster as dg

from fraud_assets.run import execute, report
from fraud_core.contracts import CARDS


@dataclass(frozen=True)
class CardDays:
    """What `make materialize` runs on card data: the days (ISO dates) and the newest week."""

    first: str
    last: str
    week: str

    def range_tags(self) -> dict[str, str]:
        """The daily run's tags: every day from `first` to `last` in one run."""
        return {
            "dagster/asset_partition_range_start": self.first,
            "dagster/asset_partition_range_end": self.last,
        }


def card_days(data_source: Any) -> CardDays:
    """The days `make materialize` ingests: from the data's first day (UTC) to the end of its
    newest day's week, within the daily partitions (a day without rows is stored empty, and the
    weekly model then knows the week's days were all brought in), and that week.

    Raises ValueError naming the folder when the data cannot be read or validated (the same
    problems `card_transactions` would name, by column and line).
    """
    from fraud_assets.defs.assets.daily import DAILY, day_keys
    from fraud_assets.defs.assets.weekly import WEEKLY
    from fraud_core.cards import definition as card_def
    from fraud_core.cards import schema as card_schema
    from fraud_core.data import DataError

    try:
        canonical = card_schema.conform(data_source.load().frame)
    except (DataError, ValueError) as exc:
        raise ValueError(f"{data_source.data_dir}: {exc}") from exc
    if not len(canonical):
        raise ValueError(f"{data_source.data_dir}: no card transactions")
    tx_us = canonical[card_def.TX_US].to_numpy()
    first, newest = (str(d) for d in day_keys(tx_us[[0, -1]]))
    week = WEEKLY.get_partition_key_for_timestamp(
        datetime.fromisoformat(newest).replace(tzinfo=UTC).timestamp()
    )
    week_end = WEEKLY.time_window_for_partition_key(week).end.date() - timedelta(days=1)
    start = max(first, DAILY.get_first_partition_key() or first)
    end = min(week_end.isoformat(), DAILY.get_last_partition_key() or newest)
    if start > end:
        raise ValueError(
            f"{data_source.data_dir}: the transactions ({first} … {newest}) fall on no "
            f"daily partition ({DAILY.get_first_partition_key()} … yesterday)"
        )
    return CardDays(start, end, week)


def run_cards(instance: dg.DagsterInstance, out: TextIO, dagster_log_level: str) -> int:
    """The card contract: every day of the data folder in one run, then the newest week's model."""
    from fraud_assets.definitions import build_defs
    from fraud_assets.defs.resources import default_resources

    defs = build_defs(CARDS)
    try:
        days = card_days(default_resources()["data_source"])
    except ValueError as exc:
        print(f"\nRun failed, production unchanged: {exc}", file=out, flush=True)
        return 1
    print(f"daily_cards_job for the days {days.first} … {days.last}: one run", file=out, flush=True)
    job = defs.resolve_job_def("daily_cards_job")
    daily = execute(job, instance, out, dagster_log_level, days.range_tags())
    print(f"Dagster run {daily.run_id}", file=out)
    if not daily.success:
        return report(daily, out)
    print(f"\nweekly_retrain_job for the week {days.week} (to {days.last})", file=out)
    weekly = execute(
        defs.resolve_job_def("weekly_retrain_job"),
        instance,
        out,
        dagster_log_level,
        partition_key=days.week,
    )
    print(f"Dagster run {weekly.run_id}", file=out)
    return report(weekly, out)
