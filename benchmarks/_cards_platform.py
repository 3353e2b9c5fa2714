"""The card contract's platform side of `_platform_run.py` and `growth.py`: make materialize's path.

`fraud_assets.run_cards.run_cards` as a benchmark runs it: the days to ingest (`card_days`, the same
function: from the data's first day to its newest, or to the end of the newest day's week where
`card_days` says so), every day in one `daily_cards_job` run (`labelled_transactions`,
`card_transactions`, `card_features`; a range of days is one run, BackfillPolicy.single_run), then
`weekly_retrain_job` for the newest day's week (`transaction_splits` cut from the last
`window_days` of `card_features`, then `anomaly_scores`, `fraud_model`, `evaluation_report`,
`promoted_model` and their checks), both on the same instance with the caller's resources.
Dagster and the platform are imported inside the function.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import date
from typing import Any


@dataclass
class CardRuns:
    """The two runs of the card path and what a report says of them."""

    daily: Any  # dg.ExecuteInProcessResult
    weekly: Any
    #: {"daily": run_id, "weekly": run_id, "week": key, "window_days": n}
    runs: dict[str, Any]
    #: Finding the data's days and building the code location (before the runs).
    prepare_seconds: float
    #: Both runs, one after the other.
    run_seconds: float


def span_days(first: str, last: str) -> int:
    """Days from `first` to `last` (ISO dates), both counted."""
    return (date.fromisoformat(last) - date.fromisoformat(first)).days + 1


def run_cards(instance: Any, resources: dict[str, Any], window_days: int | None) -> CardRuns:
    """Every day of `resources["data_source"]` in one daily run, then the newest day's week.

    `window_days` None: every day of the daily run (the week's model is cut from all the data).
    Sets FRAUD_TRAINING_WINDOW_DAYS before `build_defs("cards")` reads it.
    """
    import dagster as dg

    from fraud_assets.definitions import build_defs
    from fraud_assets.run_cards import card_days
    from fraud_core.contracts import CARDS

    start = time.perf_counter()
    span = card_days(resources["data_source"])
    days = window_days or span_days(span.first, span.last)
    os.environ["FRAUD_TRAINING_WINDOW_DAYS"] = str(days)
    location = build_defs(CARDS)
    defs = dg.Definitions(
        assets=location.assets,
        asset_checks=location.asset_checks,
        jobs=location.jobs,
        resources=resources,
    )
    prepare = time.perf_counter() - start

    start = time.perf_counter()
    daily = defs.resolve_job_def("daily_cards_job").execute_in_process(
        instance=instance, tags=span.range_tags()
    )
    weekly = defs.resolve_job_def("weekly_retrain_job").execute_in_process(
        instance=instance, partition_key=span.week
    )
    seconds = time.perf_counter() - start
    runs = {"daily": daily.run_id, "weekly": weekly.run_id, "week": span.week, "window_days": days}
    runs["days"] = f"{span.first}..{span.last}"
    return CardRuns(daily, weekly, runs, prepare, seconds)
